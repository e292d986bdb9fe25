/**
 * The flow table's filters, as `bastion flows` takes them, to the query of
 * GET /v1/flows (the daemon filters: the console shows what the CLI would).
 */
export interface FlowFilters {
  last?: number;
  since?: string;
  until?: string;
  from?: string;
  to?: string;
  container?: string;
  /** "k=v", several separated by commas */
  fromLabel?: string;
  toLabel?: string;
  port?: string;
  protocol?: string;
  verdict?: string;
  reason?: string;
}

export const FILTER_FIELDS: ReadonlyArray<{ key: Exclude<keyof FlowFilters, 'last'>; label: string; placeholder: string }> = [
  { key: 'container', label: 'container', placeholder: 'either end' },
  { key: 'from', label: 'from', placeholder: 'source' },
  { key: 'to', label: 'to', placeholder: 'destination' },
  { key: 'fromLabel', label: 'from label', placeholder: 'k=v,k2=v2' },
  { key: 'toLabel', label: 'to label', placeholder: 'k=v' },
  { key: 'port', label: 'port', placeholder: '5432' },
  { key: 'protocol', label: 'protocol', placeholder: 'tcp|udp|icmp|sctp' },
  { key: 'verdict', label: 'verdict', placeholder: 'DROPPED|ALLOWED|AUDIT' },
  { key: 'reason', label: 'reason', placeholder: 'policy-denied' },
  { key: 'since', label: 'since', placeholder: '10m or ISO time' },
  { key: 'until', label: 'until', placeholder: 'ISO time' },
];

export function flowQuery(f: FlowFilters, follow: boolean): URLSearchParams {
  const q = new URLSearchParams();
  const last = String(f.last ?? 200);
  q.set('last', last);
  q.set('limit', last); // the name before the learning work's `last`
  for (const { key } of FILTER_FIELDS) {
    const v = f[key]?.trim();
    if (!v) continue;
    if (key === 'fromLabel' || key === 'toLabel') for (const kv of v.split(',').map((s) => s.trim()).filter(Boolean)) q.append(key, kv);
    else q.set(key, key === 'verdict' ? v.toUpperCase() : v);
  }
  if (follow) q.set('follow', '1');
  return q;
}
