/**
 * Proof by replay: recorded flows against a candidate policy set, judged by
 * the real compiler (compile.ts: the map entries the daemon would write) and
 * the evaluator that does what the datapath does with them (evaluate.ts:
 * CompiledEvaluator, the LPM lookups of bpf/lib/policy.h). No second
 * implementation of the policy semantics: a verdict here is the verdict the
 * kernel would give with the candidate in force.
 *
 * What is replayed: each new connection the recording saw (replies, ARP and
 * packets that no policy could allow or refuse, such as spoofed ones, are
 * left out and counted). A flow that went through (ALLOWED, or AUDIT for a
 * policy reason: passed in audit mode although the policy in force would
 * drop it) and that the candidate would drop fails the replay; a flow that
 * was dropped for a policy reason and that the candidate would allow is
 * reported as newly allowed (it does not fail the replay: it is for the
 * reader to judge).
 *
 * The recording names each end as the datapath saw it: a container by its
 * identity, address and labels, the host, or an outside address. The replay
 * gives the compiler those containers with those labels and addresses, so
 * selectors, CIDR peers and `host` resolve as they would have. Over a long
 * recording an address may change hands (a container recreated); flows are
 * then judged in separate "worlds", each with a consistent address plan.
 */
import type { Rule } from '../policy/model.js';
import type { CompileEndpoint } from '../policy/compile.js';
import { evaluatorFor, type L4Protocol } from '../policy/evaluate.js';
import { POLICY_REASONS, flowCount, wentThrough, type FlowEnd, type FlowRecord } from '../flows/record.js';
import { RecentConnections, isContainer, matchesSelect } from './learn.js';

export interface ReplayOptions {
  /** replay only flows with a container of these labels at either end */
  select?: Record<string, string>;
  /** replay only flows with one of these containers at either end */
  containers?: string[];
}

/** A recorded flow the candidate judges differently: the first record of its kind, with how many there were. */
export type ReplayedFlow = FlowRecord & {
  /** which check of the candidate refuses it (wouldDrop only) */
  deniedBy?: 'egress' | 'ingress' | 'egress and ingress';
};

export interface ReplayResult {
  /** every flow that went through is allowed by the candidate */
  ok: boolean;
  /** flow records replayed (new connections, counting what summaries stand for) */
  replayed: number;
  /** went through, and the candidate would drop them */
  wouldDrop: ReplayedFlow[];
  /** were dropped for a policy reason, and the candidate would allow them */
  newlyAllowed: ReplayedFlow[];
  /** records not replayed, by why */
  skipped: Record<string, number>;
}

const L4 = new Set(['tcp', 'udp', 'sctp', 'icmp']);

type Claim = string; // "ep:<identity>", "host", "outside"

interface Key {
  rec: FlowRecord;
  through: boolean;
  count: number;
  firstMs: number;
  lastMs: number;
  src: { ip: string; claim: Claim };
  dst: { ip: string; claim: Claim };
  protocol: L4Protocol;
  port: number;
}

function claimOf(e: FlowEnd): Claim {
  if (e.identity === 1) return 'host';
  return isContainer(e) ? `ep:${e.identity}` : 'outside';
}

/** One consistent address plan: who each address was, the containers, the host's addresses. */
class World {
  readonly claims = new Map<string, Claim>();
  readonly endpoints = new Map<number, CompileEndpoint>();
  readonly hostAddrs = new Set<string>();
  readonly keys: Key[] = [];

  fits(k: Key): boolean {
    for (const end of [k.src, k.dst]) {
      const c = this.claims.get(end.ip);
      if (c !== undefined && c !== end.claim) return false;
    }
    // a container keeps one address in a world
    for (const [end, rec] of [
      [k.src, k.rec.src],
      [k.dst, k.rec.dst],
    ] as const) {
      if (end.claim.startsWith('ep:')) {
        const ep = this.endpoints.get(rec.identity);
        if (ep && ep.ipv4 !== end.ip) return false;
      }
    }
    return true;
  }

  take(k: Key): void {
    for (const [end, rec] of [
      [k.src, k.rec.src],
      [k.dst, k.rec.dst],
    ] as const) {
      this.claims.set(end.ip, end.claim);
      if (end.claim === 'host') this.hostAddrs.add(end.ip);
      else if (end.claim.startsWith('ep:') && !this.endpoints.has(rec.identity)) {
        this.endpoints.set(rec.identity, { key: `${rec.name ?? 'container'}#${rec.identity}`, identity: rec.identity, ipv4: end.ip, labels: rec.labels ?? {} });
      }
    }
    this.keys.push(k);
  }
}

/** Accumulates recorded flows; judge() replays them against a candidate. */
export class Replayer {
  private readonly keys = new Map<string, Key>();
  private readonly skipped: Record<string, number> = {};
  private total = 0;
  private readonly audited = new RecentConnections();

  constructor(private readonly o: ReplayOptions = {}) {}

  private skip(why: string, n = 1): void {
    this.skipped[why] = (this.skipped[why] ?? 0) + n;
  }

  add(r: FlowRecord): void {
    const n = flowCount(r);
    if (!L4.has(r.protocol)) return this.skip(`protocol ${r.protocol}`, n);
    if (r.isReply) return this.skip('reply', n);
    if (r.summary && r.count === undefined) return this.skip('rate-limit summary', r.suppressed ?? 1);
    const through = wentThrough(r);
    if (!POLICY_REASONS.has(r.reason) && !(r.verdict === 'ALLOWED')) return this.skip(`${r.verdict.toLowerCase()} ${r.reason}`, n);
    if (r.protocol !== 'icmp' && r.dst.port === undefined) return this.skip('no destination port', n);
    if ((this.o.select || this.o.containers) && !matchesSelect(r.src, this.o) && !matchesSelect(r.dst, this.o)) return this.skip('not selected', n);
    if (!isContainer(r.src) && !isContainer(r.dst)) return this.skip('no container at either end', n);
    // one connection audited on both of its checks is one flow
    if (r.verdict === 'AUDIT' && !r.summary && this.audited.seen(r)) return this.skip('same connection audited twice', n);
    const port = r.protocol === 'icmp' ? 0 : r.dst.port!;
    const src = { ip: r.src.ip, claim: claimOf(r.src) };
    const dst = { ip: r.dst.ip, claim: claimOf(r.dst) };
    // the labels are part of the key: a container relabelled is judged with each of its label sets
    const k = `${through ? 'T' : 'D'}|${src.claim}|${src.ip}|${dst.claim}|${dst.ip}|${r.protocol}|${port}|${JSON.stringify(r.src.labels ?? {})}|${JSON.stringify(r.dst.labels ?? {})}`;
    const first = Date.parse(r.firstSeen ?? r.time);
    const last = Date.parse(r.lastSeen ?? r.time);
    const e = this.keys.get(k);
    if (e) {
      e.count += n;
      e.firstMs = Math.min(e.firstMs, first);
      e.lastMs = Math.max(e.lastMs, last);
    } else {
      this.keys.set(k, { rec: r, through, count: n, firstMs: first, lastMs: last, src, dst, protocol: r.protocol as L4Protocol, port });
    }
    this.total += n;
  }

  /** Replay everything against the candidate's rules. */
  judge(rules: readonly Rule[]): ReplayResult {
    // worlds: consistent address plans, most flows in the first
    const worlds: World[] = [];
    for (const k of [...this.keys.values()].sort((a, b) => a.firstMs - b.firstMs)) {
      let w = worlds.find((x) => x.fits(k));
      if (!w) worlds.push((w = new World()));
      w.take(k);
    }
    const wouldDrop: ReplayedFlow[] = [];
    const newlyAllowed: ReplayedFlow[] = [];
    for (const w of worlds) {
      const endpoints = [...w.endpoints.values()];
      const ev = evaluatorFor(rules, endpoints, [...w.hostAddrs]);
      for (const k of w.keys) {
        const v = ev.evaluate({ srcIp: k.src.ip, dstIp: k.dst.ip, protocol: k.protocol, port: k.port });
        const shown = (): ReplayedFlow => ({
          ...k.rec,
          count: k.count,
          ...(k.count > 1 || k.rec.summary ? { firstSeen: new Date(k.firstMs).toISOString(), lastSeen: new Date(k.lastMs).toISOString() } : {}),
        });
        if (k.through && !v.allowed) {
          const egress = v.egressChecked && v.egressRuleId === 0;
          const ingress = v.ingressChecked && v.ingressRuleId === 0;
          wouldDrop.push({ ...shown(), deniedBy: egress && ingress ? 'egress and ingress' : egress ? 'egress' : 'ingress' });
        } else if (!k.through && v.allowed) newlyAllowed.push(shown());
      }
    }
    const byTime = (a: FlowRecord, b: FlowRecord) => a.time.localeCompare(b.time);
    wouldDrop.sort(byTime);
    newlyAllowed.sort(byTime);
    return { ok: wouldDrop.length === 0, replayed: this.total, wouldDrop, newlyAllowed, skipped: { ...this.skipped } };
  }
}

/** Replay every record of an iterable against a candidate. */
export async function replay(records: AsyncIterable<FlowRecord> | Iterable<FlowRecord>, rules: readonly Rule[], o: ReplayOptions = {}): Promise<ReplayResult> {
  const r = new Replayer(o);
  for await (const x of records) r.add(x);
  return r.judge(rules);
}
