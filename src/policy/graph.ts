/**
 * The dependency graph that policy describes: which container may open
 * connections to which, on which ports, and through which rules. It is what
 * the console draws (GET /v1/graph) before any traffic is seen.
 *
 * Semantics are the model's (src/policy/model.ts), as the reference
 * evaluator (evaluate.ts) applies them: an edge between two managed
 * endpoints A → B carries the ports that A's egress AND B's ingress both
 * allow; an edge to something unmanaged (the host, a CIDR peer, the world)
 * carries what A's egress allows; one from something unmanaged, what B's
 * ingress allows. The property test (test/unit/policy-graph.test.ts) checks
 * that every connection the reference evaluator allows is on an edge
 * covering its port, and that no edge covers one it refuses.
 *
 * The cost follows the pairs the rules name, not the square of the number
 * of endpoints: each distinct selector is matched once, and only the pairs
 * a rule selects are visited. Rules that select everything on both sides
 * (a `{}` selector, an `any` peer) do make every pair an edge; past
 * `maxPairs` the graph stops and says it is truncated.
 */
import type { Peer, PortRange, Rule } from './model.js';
import { canonicalSelector, matches } from './selector.js';
import { canonicalPeer } from './compile.js';
import { peerMatches, type ModelEndpoint, type Party } from './evaluate.js';
import { ALL_PORTS, ICMP_ONLY, NO_PORTS, intersect, isEmpty, portRange, union, type PortSet } from './port-set.js';

/** An end of an edge that is not a managed endpoint. */
export type ExternalEnd =
  /** the host: gateway and host addresses */
  | { kind: 'host' }
  /** a CIDR peer of a rule (managed endpoints inside it are edges of their own) */
  | { kind: 'cidr'; peer: Extract<Peer, { kind: 'cidr' }> }
  /** anything outside: an `any` peer */
  | { kind: 'world' };

export type GraphEnd = { kind: 'endpoint'; key: string } | ExternalEnd;

export interface GraphEdge {
  /** endpoint key, or the id of an external end: "host", "world", "cidr:10.0.0.0/8|except,..." */
  from: string;
  to: string;
  fromEnd: GraphEnd;
  toEnd: GraphEnd;
  ports: PortSet;
  /** ids of the rules that allow it (egress of `from`, ingress of `to`), in rule order, each once */
  rules: string[];
}

export interface DependencyGraphResult {
  edges: GraphEdge[];
  /** per endpoint key: indexes into `rules` of the rules that apply to it, by direction */
  rulesOf: Map<string, { egress: number[]; ingress: number[] }>;
  /** more pairs than maxPairs: the edge list is incomplete */
  truncated: boolean;
}

export interface GraphOptions {
  /** stop after this many (source, destination) pairs on either side (default 500,000) */
  maxPairs?: number;
}

export function externalEndId(end: ExternalEnd): string {
  return end.kind === 'cidr' ? `cidr:${canonicalPeer(end.peer).slice('cidr:'.length)}` : end.kind;
}

/** What a rule's port list allows towards `dst` (named ports resolve on a managed destination only). */
export function rulePorts(ports: readonly PortRange[], dst?: ModelEndpoint): PortSet {
  if (ports.length === 0) return ALL_PORTS;
  let out = NO_PORTS;
  for (const p of ports) {
    if (p.name !== undefined) {
      const np = dst?.namedPorts && Object.hasOwn(dst.namedPorts, p.name) ? dst.namedPorts[p.name] : undefined;
      if (np && (p.protocol === 'any' || p.protocol === np.protocol)) out = union(out, portRange(np.protocol, np.port, np.port));
      continue;
    }
    if (p.protocol === 'any') return ALL_PORTS;
    out = union(out, p.protocol === 'icmp' ? ICMP_ONLY : portRange(p.protocol, p.from, p.to));
  }
  return out;
}

interface Side {
  ports: PortSet;
  rules: string[];
}

function addTo(map: Map<number | string, Side>, key: number | string, ports: PortSet, rule: string): void {
  const s = map.get(key);
  if (!s) map.set(key, { ports, rules: [rule] });
  else {
    s.ports = union(s.ports, ports);
    if (s.rules[s.rules.length - 1] !== rule) s.rules.push(rule);
  }
}

class TooManyPairs extends Error {}

export function dependencyGraph(rules: readonly Rule[], endpoints: readonly ModelEndpoint[], opts: GraphOptions = {}): DependencyGraphResult {
  const maxPairs = opts.maxPairs ?? 500_000;
  const n = endpoints.length;
  const all = Array.from({ length: n }, (_, i) => i);
  const parties: Party[] = endpoints.map((endpoint) => ({ kind: 'endpoint', endpoint, ip: endpoint.ipv4 }));

  // each distinct selector (and CIDR peer) is matched against the endpoints once
  const bySelector = new Map<string, number[]>();
  const selected = (sel: Rule['subject']): number[] => {
    const k = canonicalSelector(sel);
    let m = bySelector.get(k);
    if (!m) bySelector.set(k, (m = all.filter((i) => matches(sel, endpoints[i]!.labels))));
    return m;
  };
  const byPeer = new Map<string, number[]>();
  const peerEndpoints = (p: Peer): number[] => {
    switch (p.kind) {
      case 'endpoints':
        return selected(p.selector);
      case 'any':
        return all;
      case 'host':
        return [];
      case 'cidr': {
        const k = canonicalPeer(p);
        let m = byPeer.get(k);
        if (!m) byPeer.set(k, (m = all.filter((i) => peerMatches(p, parties[i]!))));
        return m;
      }
    }
  };
  const externals = (p: Peer): ExternalEnd[] =>
    p.kind === 'host' ? [{ kind: 'host' }] : p.kind === 'cidr' ? [{ kind: 'cidr', peer: p }] : p.kind === 'any' ? [{ kind: 'host' }, { kind: 'world' }] : [];

  const rulesOf = new Map<string, { egress: number[]; ingress: number[] }>(endpoints.map((e) => [e.key, { egress: [], ingress: [] }]));
  const egress = new Map<number, Side>(); // src * n + dst
  const ingress = new Map<number, Side>();
  const outward = new Map<string, Side>(); // "src\0external id"
  const inward = new Map<string, Side>(); // "external id\0dst"
  const ends = new Map<string, ExternalEnd>();
  const portsTo = new Map<PortRange[] | readonly PortRange[], PortSet>();
  const portsFor = (r: Rule, dst: number): PortSet => {
    const d = endpoints[dst]!;
    if (d.namedPorts && r.ports.some((p) => p.name !== undefined)) return rulePorts(r.ports, d);
    let s = portsTo.get(r.ports);
    if (!s) portsTo.set(r.ports, (s = rulePorts(r.ports)));
    return s;
  };

  let truncated = false;
  try {
    rules.forEach((r, ri) => {
      const subjects = selected(r.subject);
      for (const s of subjects) rulesOf.get(endpoints[s]!.key)![r.direction].push(ri);
      if (subjects.length === 0) return;
      const pairs = r.direction === 'egress' ? egress : ingress;
      for (const p of r.peers) {
        const peers = peerEndpoints(p);
        for (const s of subjects) {
          for (const o of peers) {
            if (o === s) continue; // a container's traffic to itself never leaves it
            const [src, dst] = r.direction === 'egress' ? [s, o] : [o, s];
            addTo(pairs, src * n + dst, portsFor(r, dst), r.id);
          }
          if (pairs.size > maxPairs) throw new TooManyPairs();
          for (const ext of externals(p)) {
            const id = externalEndId(ext);
            ends.set(id, ext);
            const key = endpoints[s]!.key;
            if (r.direction === 'egress') addTo(outward, `${key}\0${id}`, rulePorts(r.ports), r.id);
            else addTo(inward, `${id}\0${key}`, portsFor(r, s), r.id);
          }
        }
      }
    });
  } catch (err) {
    if (!(err instanceof TooManyPairs)) throw err;
    truncated = true;
  }

  const edges: GraphEdge[] = [];
  for (const [k, e] of egress) {
    const i = ingress.get(k);
    if (!i) continue;
    const ports = intersect(e.ports, i.ports);
    if (isEmpty(ports)) continue;
    const from = endpoints[Math.floor(k / n)]!.key;
    const to = endpoints[k % n]!.key;
    edges.push({ from, to, fromEnd: { kind: 'endpoint', key: from }, toEnd: { kind: 'endpoint', key: to }, ports, rules: [...new Set([...e.rules, ...i.rules])] });
  }
  for (const [k, side] of outward) {
    if (isEmpty(side.ports)) continue;
    const [from, to] = k.split('\0') as [string, string];
    edges.push({ from, to, fromEnd: { kind: 'endpoint', key: from }, toEnd: ends.get(to)!, ports: side.ports, rules: side.rules });
  }
  for (const [k, side] of inward) {
    if (isEmpty(side.ports)) continue;
    const [from, to] = k.split('\0') as [string, string];
    edges.push({ from, to, fromEnd: ends.get(from)!, toEnd: { kind: 'endpoint', key: to }, ports: side.ports, rules: side.rules });
  }
  return { edges, rulesOf, truncated };
}
