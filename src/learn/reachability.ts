/**
 * Reachability of a policy set, and the difference between two: which
 * containers may open connections to which (containers, the host, outside
 * prefixes) on which ports. Judged, like the replay, by the real compiler
 * and the datapath's evaluator, for every pair of ends and every port range
 * on which the two sets could differ.
 *
 * Ports: the boundaries of every range either set names split each
 * protocol's ports into intervals on which both sets give one verdict; each
 * interval is judged once and adjacent intervals with the same answer are
 * shown merged ("9000-9010/tcp"). Outside ends: the host (its addresses),
 * one address in each prefix either set names (the most specific prefix
 * containing it names it), and one address in none of them ("world").
 */
import type { Peer, Rule } from '../policy/model.js';
import type { CompileEndpoint } from '../policy/compile.js';
import { type Cidr4, formatCidr4, formatIpv4, ipInCidr4, parseCidr4, parseIpv4 } from '../net/ip.js';
import { evaluatorFor, type L4Protocol } from '../policy/evaluate.js';

export interface ReachContainer {
  name: string;
  ipv4: string;
  labels: Readonly<Record<string, string>>;
}

export interface ReachPair {
  from: string;
  to: string;
  /** "8080/tcp", "9000-9010/udp", "icmp", "*\/tcp" */
  ports: string[];
}

export interface ReachDiff {
  /** allowed by B, not by A */
  added: ReachPair[];
  /** allowed by A, not by B */
  removed: ReachPair[];
  /** how many (from, to, port interval) questions were asked */
  checked: number;
}

interface End {
  name: string;
  ip: string;
  container: boolean;
}

const PORT_PROTOCOLS: L4Protocol[] = ['tcp', 'udp', 'sctp'];
/** an address for "the host" when the caller knows none of the host's */
const HOST_PLACEHOLDER = '192.0.2.1';

function peersOf(rules: readonly Rule[]): Peer[] {
  return rules.flatMap((r) => r.peers);
}

/** Port intervals per protocol on which no rule of either set changes its answer. */
function portIntervals(rules: readonly Rule[]): Array<{ protocol: L4Protocol; from: number; to: number }> {
  const cuts = new Map<L4Protocol, Set<number>>(PORT_PROTOCOLS.map((p) => [p, new Set([0, 65536])]));
  for (const r of rules) {
    for (const p of r.ports) {
      if (p.protocol === 'any' || p.protocol === 'icmp' || p.name !== undefined) continue;
      const c = cuts.get(p.protocol as L4Protocol)!;
      c.add(p.from);
      c.add(p.to + 1);
    }
  }
  const out: Array<{ protocol: L4Protocol; from: number; to: number }> = [];
  for (const [protocol, set] of cuts) {
    const xs = [...set].sort((a, b) => a - b);
    for (let i = 0; i + 1 < xs.length; i++) out.push({ protocol, from: xs[i]!, to: xs[i + 1]! - 1 });
  }
  out.push({ protocol: 'icmp', from: 0, to: 0 });
  return out;
}

/** The outside ends: one address per named prefix (named by the most specific one that holds it) and one for the world. */
function outsideEnds(rules: readonly Rule[], taken: Set<string>): End[] {
  const prefixes = new Map<string, Cidr4>();
  for (const p of peersOf(rules)) {
    if (p.kind !== 'cidr') continue;
    for (const text of [p.cidr, ...(p.except ?? [])]) {
      const c = parseCidr4(text);
      // 0.0.0.0/0 is the world itself
      if (c && c.prefixLen > 0) prefixes.set(formatCidr4(c), c);
    }
  }
  const list = [...prefixes.entries()];
  const nameOf = (ip: number): string => {
    let best: [string, number] | undefined;
    for (const [name, c] of list) {
      if (ipInCidr4(c, ip) && (!best || c.prefixLen > best[1])) best = [name, c.prefixLen];
    }
    return best?.[0] ?? 'world';
  };
  const out: End[] = [];
  const seen = new Set<string>();
  for (const [name, c] of list) {
    // an address inside the prefix that is not a container's or the host's, and belongs to it (not to a more specific prefix)
    const size = c.prefixLen === 32 ? 1 : Math.min(2 ** (32 - c.prefixLen), 1 << 16);
    for (let i = c.prefixLen >= 31 ? 0 : 1; i < size; i++) {
      const ip = (c.base + i) >>> 0;
      const text = formatIpv4(ip);
      if (taken.has(text) || nameOf(ip) !== name) continue;
      if (!seen.has(name)) out.push({ name, ip: text, container: false });
      seen.add(name);
      break;
    }
  }
  for (const candidate of ['203.0.113.77', '198.51.100.77', '8.8.8.8', '1.1.1.1', '100.64.0.77', '172.31.255.77', '10.255.255.77']) {
    if (nameOf(parseIpv4(candidate)!) === 'world' && !taken.has(candidate)) {
      out.push({ name: 'world', ip: candidate, container: false });
      break;
    }
  }
  return out;
}

function portText(protocol: L4Protocol, from: number, to: number): string {
  if (protocol === 'icmp') return 'icmp';
  if (from === 0 && to === 65535) return `*/${protocol}`;
  return `${from === to ? from : `${from}-${to}`}/${protocol}`;
}

/** Which ends each set lets reach which, and where they differ. */
export function diffReachability(a: readonly Rule[], b: readonly Rule[], containers: readonly ReachContainer[], hostAddrs: readonly string[]): ReachDiff {
  const endpoints: CompileEndpoint[] = containers.map((c, i) => ({ key: `${c.name}#${i}`, identity: 256 + i, ipv4: c.ipv4, labels: c.labels }));
  const hosts = hostAddrs.length ? [...hostAddrs] : [HOST_PLACEHOLDER];
  const taken = new Set([...containers.map((c) => c.ipv4), ...hosts]);
  const ends: End[] = [
    ...containers.map((c) => ({ name: c.name, ip: c.ipv4, container: true })),
    { name: 'host', ip: hosts[0]!, container: false },
    ...outsideEnds([...a, ...b], taken),
  ];
  const evA = evaluatorFor(a, endpoints, hosts);
  const evB = evaluatorFor(b, endpoints, hosts);
  const intervals = portIntervals([...a, ...b]);
  const added = new Map<string, string[]>();
  const removed = new Map<string, string[]>();
  let checked = 0;
  for (const src of ends) {
    for (const dst of ends) {
      if (!src.container && !dst.container) continue;
      // runs of intervals with the same difference, per protocol, merged
      let run: { kind: 'added' | 'removed'; protocol: L4Protocol; from: number; to: number } | undefined;
      const close = () => {
        if (!run) return;
        const m = run.kind === 'added' ? added : removed;
        const k = `${src.name}\0${dst.name}`;
        m.set(k, [...(m.get(k) ?? []), portText(run.protocol, run.from, run.to)]);
        run = undefined;
      };
      for (const iv of intervals) {
        checked++;
        const q = { srcIp: src.ip, dstIp: dst.ip, protocol: iv.protocol, port: iv.from };
        const inA = evA.evaluate(q).allowed;
        const inB = evB.evaluate(q).allowed;
        const kind = inA === inB ? undefined : inB ? 'added' : 'removed';
        if (run && (kind !== run.kind || iv.protocol !== run.protocol || iv.from !== run.to + 1)) close();
        if (!kind) continue;
        if (run) run.to = iv.to;
        else run = { kind, protocol: iv.protocol, from: iv.from, to: iv.to };
      }
      close();
    }
  }
  const pairs = (m: Map<string, string[]>): ReachPair[] =>
    [...m.entries()]
      .map(([k, ports]) => {
        const [from, to] = k.split('\0') as [string, string];
        return { from, to, ports };
      })
      .sort((x, y) => x.from.localeCompare(y.from) || x.to.localeCompare(y.to));
  return { added: pairs(added), removed: pairs(removed), checked };
}
