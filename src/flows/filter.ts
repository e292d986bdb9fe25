/**
 * Flow filters: the same for `bastion flows` (its flags, also on a saved
 * file with --input), GET /v1/flows (its query parameters) and the web
 * console. Pure: parsing takes the time "now" as an argument.
 *
 * Semantics (Hubble's): each filter narrows (AND); a filter given several
 * times accepts any of its values (OR), except the label filters, whose
 * labels all must be on that end (`fromLabel=app=web&fromLabel=tier=front`
 * is `app=web,tier=front`); `port` matches either end's port; `container`
 * either end (or the container whose stack decided).
 */
import type { FlowRecord } from './record.js';

export interface FlowFilter {
  /** epoch milliseconds, inclusive */
  since?: number;
  /** epoch milliseconds, inclusive */
  until?: number;
  from?: string[];
  to?: string[];
  container?: string[];
  fromLabel?: Array<Record<string, string>>;
  toLabel?: Array<Record<string, string>>;
  port?: number[];
  protocol?: string[];
  verdict?: string[];
  reason?: string[];
}

/** What a user gives, as strings (flags or query parameters); each may be repeated. */
export interface FlowFilterInput {
  since?: string;
  until?: string;
  from?: string[];
  to?: string[];
  container?: string[];
  fromLabel?: string[];
  toLabel?: string[];
  port?: string[];
  protocol?: string[];
  verdict?: string[];
  reason?: string[];
}

export const VERDICTS = ['ALLOWED', 'DROPPED', 'AUDIT', 'ARP_REPLY', 'REPAIRED'] as const;
export const PROTOCOLS = ['tcp', 'udp', 'icmp', 'sctp', 'arp'] as const;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "10m", "24h", "2d", "1h30m" → milliseconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d|w))+$/.test(t)) return undefined;
  let ms = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

/**
 * A point in time as a user writes it: a duration back from now ("24h",
 * "10m"), or an ISO time or date ("2024-05-01T12:00:00Z", "2024-05-01").
 * Throws with a message naming `what` otherwise.
 */
export function parseTimePoint(text: string, what: string, now: number): number {
  const d = parseDuration(text);
  if (d !== undefined) return now - d;
  if (/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    const t = Date.parse(text.trim());
    if (!Number.isNaN(t)) return t;
  }
  throw new FlowFilterError(`${what} "${text}": expected a duration back from now (90s, 10m, 24h, 2d) or an ISO time (2024-05-01T12:00:00Z)`);
}

export class FlowFilterError extends Error {}

/** "app=web,tier=front" → { app: 'web', tier: 'front' } */
export function parseLabelFilter(text: string, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) throw new FlowFilterError(`${what} "${text}": expected labels such as app=web or app=web,tier=front`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function each<T>(values: string[] | undefined, f: (v: string) => T): T[] | undefined {
  if (!values) return undefined;
  const out = values.flatMap((v) => v.split(/[\s]+/)).filter((v) => v !== '').map(f);
  return out.length ? out : undefined;
}

/** Checks and converts what a user gave; throws FlowFilterError naming the filter that is wrong. */
export function parseFlowFilter(input: FlowFilterInput, now: number): FlowFilter {
  const f: FlowFilter = {};
  if (input.since !== undefined) f.since = parseTimePoint(input.since, 'since', now);
  if (input.until !== undefined) f.until = parseTimePoint(input.until, 'until', now);
  if (f.since !== undefined && f.until !== undefined && f.since > f.until) {
    throw new FlowFilterError(`since (${new Date(f.since).toISOString()}) is after until (${new Date(f.until).toISOString()})`);
  }
  const names = (vs?: string[]) => each(vs, (v) => v);
  const from = names(input.from);
  const to = names(input.to);
  const container = names(input.container);
  if (from) f.from = from;
  if (to) f.to = to;
  if (container) f.container = container;
  // repeated label filters add up: every label given must be on that end (k=v,k2=v2 is the same as giving both)
  const labels = (vs: string[] | undefined, what: string) => (vs?.length ? [Object.assign({}, ...vs.map((v) => parseLabelFilter(v, what))) as Record<string, string>] : undefined);
  const fromLabel = labels(input.fromLabel, 'from-label');
  const toLabel = labels(input.toLabel, 'to-label');
  if (fromLabel) f.fromLabel = fromLabel;
  if (toLabel) f.toLabel = toLabel;
  const port = each(input.port?.flatMap((p) => p.split(',')), (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n > 65535) throw new FlowFilterError(`port "${v}": expected a port number 0-65535`);
    return n;
  });
  if (port) f.port = port;
  const protocol = each(input.protocol?.flatMap((p) => p.split(',')), (v) => {
    const p = v.toLowerCase();
    if (!(PROTOCOLS as readonly string[]).includes(p)) throw new FlowFilterError(`protocol "${v}": expected one of ${PROTOCOLS.join(', ')}`);
    return p;
  });
  if (protocol) f.protocol = protocol;
  const verdict = each(input.verdict?.flatMap((p) => p.split(',')), (v) => {
    const x = v.toUpperCase();
    if (!(VERDICTS as readonly string[]).includes(x)) throw new FlowFilterError(`verdict "${v}": expected one of ${VERDICTS.join(', ')}`);
    return x;
  });
  if (verdict) f.verdict = verdict;
  const reason = each(input.reason?.flatMap((p) => p.split(',')), (v) => v.toLowerCase());
  if (reason) f.reason = reason;
  return f;
}

function labelsMatch(want: Array<Record<string, string>>, have: Record<string, string> | undefined): boolean {
  return want.some((w) => Object.entries(w).every(([k, v]) => have?.[k] === v));
}

/** Does the record pass the filter? */
export function matchesFlow(f: FlowFilter, r: FlowRecord): boolean {
  if (f.since !== undefined || f.until !== undefined) {
    const t = Date.parse(r.time);
    if (f.since !== undefined && t < f.since) return false;
    if (f.until !== undefined && t > f.until) return false;
  }
  if (f.verdict && !f.verdict.includes(r.verdict)) return false;
  if (f.protocol && !f.protocol.includes(r.protocol)) return false;
  if (f.reason && !f.reason.includes(r.reason)) return false;
  if (f.from && !(r.src.name !== undefined && f.from.includes(r.src.name))) return false;
  if (f.to && !(r.dst.name !== undefined && f.to.includes(r.dst.name))) return false;
  if (f.container && !f.container.some((c) => r.src.name === c || r.dst.name === c || r.endpoint === c)) return false;
  if (f.port && !f.port.some((p) => r.src.port === p || r.dst.port === p)) return false;
  if (f.fromLabel && !labelsMatch(f.fromLabel, r.src.labels)) return false;
  if (f.toLabel && !labelsMatch(f.toLabel, r.dst.labels)) return false;
  return true;
}

/** The filter as a predicate. */
export function flowPredicate(f: FlowFilter): (r: FlowRecord) => boolean {
  return (r) => matchesFlow(f, r);
}

/** Does the filter say anything about time? (then the history on disk is read, not only the recent flows in memory) */
export function hasTimeBounds(f: FlowFilter): boolean {
  return f.since !== undefined || f.until !== undefined;
}

/** The filter as query parameters of GET /v1/flows (what the CLI sends). */
export function filterQuery(input: FlowFilterInput): URLSearchParams {
  const q = new URLSearchParams();
  if (input.since !== undefined) q.set('since', input.since);
  if (input.until !== undefined) q.set('until', input.until);
  const many: Array<[keyof FlowFilterInput, string]> = [
    ['from', 'from'],
    ['to', 'to'],
    ['container', 'container'],
    ['fromLabel', 'fromLabel'],
    ['toLabel', 'toLabel'],
    ['port', 'port'],
    ['protocol', 'protocol'],
    ['verdict', 'verdict'],
    ['reason', 'reason'],
  ];
  for (const [k, name] of many) for (const v of (input[k] as string[] | undefined) ?? []) q.append(name, v);
  return q;
}

/** The query parameters of GET /v1/flows as filter input (repeatable ones with getAll). */
export function filterInputFromQuery(get: (k: string) => string | undefined, getAll: (k: string) => string[] | undefined): FlowFilterInput {
  const all = (k: string) => {
    const v = getAll(k);
    return v && v.length ? v : undefined;
  };
  const input: FlowFilterInput = {};
  const since = get('since');
  const until = get('until');
  if (since) input.since = since;
  if (until) input.until = until;
  const set = (k: keyof FlowFilterInput, ...names: string[]) => {
    const vs = names.flatMap((n) => all(n) ?? []);
    if (vs.length) (input as Record<string, string[]>)[k] = vs;
  };
  set('from', 'from');
  set('to', 'to');
  set('container', 'container');
  set('fromLabel', 'fromLabel', 'from-label');
  set('toLabel', 'toLabel', 'to-label');
  set('port', 'port');
  set('protocol', 'protocol');
  set('verdict', 'verdict');
  set('reason', 'reason');
  return input;
}
