/**
 * Learning: recorded flows → a `policies:` document that allows exactly what
 * was observed, and nothing else. Pure: records go in one at a time (so a
 * history of days streams through in memory that grows with the number of
 * distinct dependencies, not of flows), the document comes out.
 *
 * Rules:
 * - Only flows that went through count: ALLOWED, and AUDIT for a policy
 *   reason (policy-denied, host-denied: passed in audit mode although the
 *   policy in force would drop it). Drops, ARP, replies, and audited
 *   spoofing or malformed packets teach nothing a policy could allow.
 * - Each end is a workload, selected by stable labels only (labels.ts):
 *   replicas of one service are one workload; container ids, replica
 *   numbers and hashes are never used. The host is `host`; anything else
 *   outside (the world, a CIDR) is a CIDR rule for the address observed
 *   (/32), never wider.
 * - One policy per (source, destination, protocol, port); with mergePorts,
 *   one per (source, destination) listing its ports.
 * - DNS: a workload seen resolving names through a resolver (port 53) gets
 *   both 53/udp and 53/tcp to it: answers too large for UDP are retried
 *   over TCP, and a policy learned on a quiet day must not break the day a
 *   large answer comes (the one widening learning does; said in the
 *   evidence).
 * - Each policy carries its evidence: how many flows, the first and the
 *   last seen, and the containers seen at each end.
 */
import { Document, isMap, isSeq, type YAMLMap, type YAMLSeq } from 'yaml';
import { BUILTIN_LABELS } from '../policy/model.js';
import { POLICY_REASONS, flowCount, wentThrough, type FlowRecord } from '../flows/record.js';
import { selectorKey, workloadSelector, type WorkloadSelector } from './labels.js';

export interface LearnOptions {
  /** learn only for workloads with all of these labels (at either end of a flow) */
  select?: Record<string, string>;
  /** learn only for these containers (at either end) */
  containers?: string[];
  /** one policy per (source, destination) with all its ports, instead of one per port */
  mergePorts?: boolean;
  /** prefix of every policy name (default "learned-"), so that learned policies do not take the names of the config file's */
  namePrefix?: string;
}

/** The evidence of one learned policy. */
export interface Evidence {
  flows: number;
  firstSeen: string;
  lastSeen: string;
}

/** A policy end in the document form (what the config parser reads). */
export type DocEnd = 'host' | Record<string, string> | { matchLabels: Record<string, string> } | { cidr: string };

export interface LearnedPolicy {
  name: string;
  from: DocEnd;
  to: DocEnd;
  ports: string[];
  evidence: Evidence;
}

export interface LearnResult {
  /** the policies document (with the evidence field on each policy, which the policy parser accepts and ignores) */
  document: { policies: LearnedPolicy[] };
  /** the same as YAML, evidence in comments: valid input for `bastion policy add -f` as it is */
  yaml: string;
  /** flow records the policies were learned from */
  flows: number;
  /** records left out, by why */
  skipped: Record<string, number>;
  warnings: string[];
}

const L4 = new Set(['tcp', 'udp', 'sctp', 'icmp']);
const DNS_PORT = 53;

type End =
  | { kind: 'workload'; sel: WorkloadSelector; key: string }
  | { kind: 'host'; key: 'host' }
  | { kind: 'cidr'; cidr: string; key: string };

interface Edge {
  from: End;
  to: End;
  protocol: string;
  /** undefined for icmp */
  port?: number;
  flows: number;
  firstMs: number;
  lastMs: number;
  fromNames: Set<string>;
  toNames: Set<string>;
}

/** Is this end a managed container? (It carries its labels; the host, the world and CIDRs carry none.) Learning and replay. */
export function isContainer(e: FlowRecord['src']): boolean {
  return e.identity >= 256 && (Object.keys(e.labels ?? {}).length > 0 || (e.name !== undefined && !/^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(e.name)));
}

function endOf(e: FlowRecord['src']): End {
  if (e.identity === 1) return { kind: 'host', key: 'host' };
  if (isContainer(e)) {
    const sel = workloadSelector(e.labels ?? {}, e.name);
    return { kind: 'workload', sel, key: `sel:${selectorKey(sel.labels)}` };
  }
  const cidr = `${e.ip}/32`;
  return { kind: 'cidr', cidr, key: `cidr:${cidr}` };
}

/** Is this end a container that --select and --containers (when given) pick? Learning and replay. */
export function matchesSelect(e: FlowRecord['src'], o: Pick<LearnOptions, 'select' | 'containers'>): boolean {
  if (!isContainer(e)) return false;
  if (o.select && !Object.entries(o.select).every(([k, v]) => e.labels?.[k] === v)) return false;
  if (o.containers && !(e.name !== undefined && o.containers.includes(e.name))) return false;
  return true;
}

/** Accumulates flows; result() gives the learned document. */
export class Learner {
  private readonly edges = new Map<string, Edge>();
  private readonly skipped: Record<string, number> = {};
  private used = 0;
  /** AUDIT records of one connection may come twice (the sender's egress and the receiver's ingress, both audited) */
  private readonly audited = new RecentConnections();
  private readonly instanceNames = new Set<string>();

  constructor(private readonly o: LearnOptions = {}) {}

  private skip(why: string): void {
    this.skipped[why] = (this.skipped[why] ?? 0) + 1;
  }

  add(r: FlowRecord): void {
    if (!wentThrough(r)) return this.skip(`verdict ${r.verdict}`);
    // the tail of a burst the rate limit held back: only its last flow is shown, the others may be of any key
    if (r.summary && r.count === undefined) return this.skip('rate-limit summary');
    if (!L4.has(r.protocol)) return this.skip(`protocol ${r.protocol}`);
    if (r.isReply) return this.skip('reply');
    if (r.verdict === 'AUDIT' && !POLICY_REASONS.has(r.reason)) return this.skip(`audited ${r.reason}`);
    if (r.protocol !== 'icmp' && r.dst.port === undefined) return this.skip('no destination port');
    const selected = !this.o.select && !this.o.containers ? isContainer(r.src) || isContainer(r.dst) : matchesSelect(r.src, this.o) || matchesSelect(r.dst, this.o);
    if (!selected) return this.skip('not selected');
    if (r.verdict === 'AUDIT' && !r.summary && this.audited.seen(r)) return this.skip('same connection audited twice');
    const from = endOf(r.src);
    const to = endOf(r.dst);
    for (const [end, e] of [
      [from, r.src],
      [to, r.dst],
    ] as const) {
      if (end.kind === 'workload' && end.sel.basis === 'instance' && e.name) this.instanceNames.add(e.name);
    }
    const port = r.protocol === 'icmp' ? undefined : r.dst.port;
    const key = `${from.key}|${to.key}|${r.protocol}|${port ?? ''}`;
    const last = Date.parse(r.lastSeen ?? r.time);
    const first = Date.parse(r.firstSeen ?? r.time);
    let e = this.edges.get(key);
    if (!e) {
      e = { from, to, protocol: r.protocol, ...(port !== undefined ? { port } : {}), flows: 0, firstMs: first, lastMs: last, fromNames: new Set(), toNames: new Set() };
      this.edges.set(key, e);
    }
    e.flows += flowCount(r);
    if (first < e.firstMs) e.firstMs = first;
    if (last > e.lastMs) e.lastMs = last;
    if (r.src.name && e.fromNames.size < 8) e.fromNames.add(r.src.name);
    if (r.dst.name && e.toNames.size < 8) e.toNames.add(r.dst.name);
    this.used++;
  }

  result(): LearnResult {
    const groups = new Map<string, { from: End; to: End; ports: Array<{ spec: string; protocol: string; port?: number }>; flows: number; firstMs: number; lastMs: number; fromNames: Set<string>; toNames: Set<string>; dns: boolean }>();
    const group = (e: Edge, portPart: string) => {
      const k = `${e.from.key}|${e.to.key}|${portPart}`;
      let g = groups.get(k);
      if (!g) groups.set(k, (g = { from: e.from, to: e.to, ports: [], flows: 0, firstMs: e.firstMs, lastMs: e.lastMs, fromNames: new Set(), toNames: new Set(), dns: false }));
      return g;
    };
    for (const e of this.edges.values()) {
      const dns = e.port === DNS_PORT && (e.protocol === 'udp' || e.protocol === 'tcp');
      const g = group(e, this.o.mergePorts ? '' : dns ? 'dns' : `${e.protocol}/${e.port ?? ''}`);
      const spec = e.protocol === 'icmp' ? 'icmp' : `${e.port}/${e.protocol}`;
      if (!g.ports.some((p) => p.spec === spec)) g.ports.push({ spec, protocol: e.protocol, ...(e.port !== undefined ? { port: e.port } : {}) });
      if (dns) {
        g.dns = true;
        for (const proto of ['udp', 'tcp']) if (!g.ports.some((p) => p.spec === `53/${proto}`)) g.ports.push({ spec: `53/${proto}`, protocol: proto, port: DNS_PORT });
      }
      g.flows += e.flows;
      g.firstMs = Math.min(g.firstMs, e.firstMs);
      g.lastMs = Math.max(g.lastMs, e.lastMs);
      for (const n of e.fromNames) if (g.fromNames.size < 8) g.fromNames.add(n);
      for (const n of e.toNames) if (g.toNames.size < 8) g.toNames.add(n);
    }

    const shortOf = (e: End) => (e.kind === 'host' ? 'host' : e.kind === 'cidr' ? e.cidr.replace(/\/32$/, '') : e.sel.short);
    const rows = [...groups.values()].map((g) => {
      g.ports.sort(comparePorts);
      return g;
    });
    rows.sort((a, b) => shortOf(a.from).localeCompare(shortOf(b.from)) || shortOf(a.to).localeCompare(shortOf(b.to)) || a.from.key.localeCompare(b.from.key) || a.to.key.localeCompare(b.to.key) || comparePorts(a.ports[0]!, b.ports[0]!));

    const prefix = this.o.namePrefix ?? 'learned-';
    const taken = new Set<string>();
    const policies: LearnedPolicy[] = [];
    const comments: string[] = [];
    for (const g of rows) {
      let base = `${prefix}${shortOf(g.from)}-to-${shortOf(g.to)}`;
      if (!this.o.mergePorts) base += g.dns ? '-dns' : `-${g.ports[0]!.port !== undefined ? `${g.ports[0]!.port}-` : ''}${g.ports[0]!.protocol}`;
      const name = uniqueName(sanitizeName(base), taken);
      const evidence: Evidence = { flows: g.flows, firstSeen: new Date(g.firstMs).toISOString(), lastSeen: new Date(g.lastMs).toISOString() };
      policies.push({ name, from: docEnd(g.from), to: docEnd(g.to), ports: g.ports.map((p) => p.spec), evidence });
      const who = (names: Set<string>, e: End) => (e.kind === 'workload' && names.size ? ` (${[...names].sort().join(', ')})` : '');
      comments.push(
        ` evidence: ${g.flows} flow${g.flows === 1 ? '' : 's'}, first ${evidence.firstSeen}, last ${evidence.lastSeen}; ${shortOf(g.from)}${who(g.fromNames, g.from)} -> ${shortOf(g.to)}${who(g.toNames, g.to)}` +
          (g.dns ? '\n DNS: 53/udp and 53/tcp both, so that answers too large for UDP still resolve' : ''),
      );
    }

    const warnings: string[] = [];
    for (const n of [...this.instanceNames].sort()) {
      warnings.push(`container ${n} has no stable label (no Compose service, no label of your own): its policies select it by its name (${BUILTIN_LABELS.name}=${n}), which a recreated or scaled container may not keep; give it a label such as app=...`);
    }
    return { document: { policies }, yaml: this.yaml(policies, comments), flows: this.used, skipped: { ...this.skipped }, warnings };
  }

  private yaml(policies: LearnedPolicy[], comments: string[]): string {
    const plain = policies.map(({ evidence: _evidence, ...p }) => p);
    const doc = new Document({ policies: plain });
    const times = policies.map((p) => p.evidence);
    const span = times.length
      ? `between ${times.map((t) => t.firstSeen).sort()[0]} and ${times.map((t) => t.lastSeen).sort().at(-1)}`
      : 'none';
    const sel = [
      this.o.select ? `--select ${Object.entries(this.o.select).map(([k, v]) => `${k}=${v}`).join(',')}` : '',
      this.o.containers ? `containers ${this.o.containers.join(', ')}` : '',
    ].filter(Boolean);
    doc.commentBefore =
      ` Learned by bastion learn from ${this.used} flow record${this.used === 1 ? '' : 's'} (ALLOWED, and AUDIT for policy reasons) ${span}` +
      (sel.length ? `\n Selection: ${sel.join('; ')}` : '') +
      `\n Each policy allows exactly what was observed; check it with: bastion policy verify FILE --flows RECORDING` +
      `\n Apply it with: bastion policy add -f FILE`;
    const seq = doc.get('policies', true) as YAMLSeq;
    seq.items.forEach((item, i) => {
      const m = item as YAMLMap;
      m.commentBefore = comments[i];
      for (const k of ['from', 'to', 'ports']) {
        const n = m.get(k, true);
        if (isMap(n) || isSeq(n)) n.flow = true;
      }
    });
    return policies.length ? doc.toString({ lineWidth: 0 }) : `#${doc.commentBefore.split('\n').join('\n#')}\n# No flow was observed that a policy could allow: nothing to learn.\npolicies: []\n`;
  }
}

/**
 * Connections seen lately, by their 5-tuple: the two AUDIT records of one
 * connection (its sender's egress and its receiver's ingress, both audited)
 * come within microseconds of each other and carry the same source port;
 * the last 4,096 connections are remembered.
 */
export class RecentConnections {
  private readonly keys = new Set<string>();
  private readonly order: string[] = [];

  /** true when this record's connection was seen already */
  seen(r: FlowRecord): boolean {
    const k = `${r.src.ip}:${r.src.port ?? ''}>${r.dst.ip}:${r.dst.port ?? ''}/${r.protocol}`;
    if (this.keys.has(k)) return true;
    this.keys.add(k);
    this.order.push(k);
    if (this.order.length > 4096) this.keys.delete(this.order.shift()!);
    return false;
  }
}

function comparePorts(a: { protocol: string; port?: number }, b: { protocol: string; port?: number }): number {
  return a.protocol.localeCompare(b.protocol) || (a.port ?? -1) - (b.port ?? -1);
}

/** A policy end in the document form; label keys the config reads as fields use the explicit matchLabels form. */
function docEnd(e: End): DocEnd {
  if (e.kind === 'host') return 'host';
  if (e.kind === 'cidr') return { cidr: e.cidr };
  const labels = e.sel.labels;
  if (['cidr', 'except', 'matchLabels', 'matchExpressions'].some((k) => k in labels)) return { matchLabels: labels };
  return { ...labels };
}

function sanitizeName(n: string): string {
  const s = n.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').replace(/[^A-Za-z0-9]+$/, '');
  return (s || 'learned').slice(0, 240);
}

function uniqueName(base: string, taken: Set<string>): string {
  let n = base;
  for (let i = 2; taken.has(n); i++) n = `${base}-${i}`;
  taken.add(n);
  return n;
}

/** Learn from every record of an iterable (a file, the history). */
export async function learnFrom(records: AsyncIterable<FlowRecord> | Iterable<FlowRecord>, o: LearnOptions = {}): Promise<LearnResult> {
  const l = new Learner(o);
  for await (const r of records) l.add(r);
  return l.result();
}
