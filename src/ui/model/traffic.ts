/**
 * Observed traffic, folded per (source, destination) for the console's map:
 * how many connections were allowed, dropped and audited between two ends,
 * on which ports, for which reasons, and when last. And per map node: the
 * drops it received (attacked) and sent (attacker).
 *
 * Pure and incremental: add() takes one flow record and says which edge and
 * nodes changed, so the map touches only those (thousands of flows per second
 * must not redraw a map of a thousand containers).
 */
import type { FlowPeer, FlowRecord } from '../../api/types.js';

export type TrafficKind = 'allowed' | 'dropped' | 'audit';

export interface EdgeTraffic {
  /** map node ids */
  from: string;
  to: string;
  kind: TrafficKind;
  count: number;
  /** "5432/tcp", "icmp", "arp" */
  ports: Set<string>;
  reasons: Set<string>;
  last: string;
}

export interface NodeTraffic {
  /** dropped frames nobody can be named as the sender of (IPv6, other ethertypes from the bridge): counted, not drawn, not an attack */
  unattributedIn: number;
  dropsIn: number;
  dropsOut: number;
  auditIn: number;
  auditOut: number;
  allowedIn: number;
  allowedOut: number;
}

/** How the map names the end of a flow: an endpoint by name, host, world, a CIDR, or an address nobody names. */
export function peerNodeId(p: FlowPeer, endpointNames: ReadonlySet<string>, cidrIds: ReadonlyMap<string, string>): string {
  const name = p.name;
  if (name !== undefined) {
    if (endpointNames.has(name)) return endpointNodeId(name);
    if (name === 'host' || name === 'world') return `x:${name}`;
    const cidr = cidrIds.get(name);
    if (cidr) return `x:${cidr}`;
    if (name.includes('/')) return `x:cidr:${name}`;
    return endpointNodeId(name);
  }
  return 'x:unknown';
}

export const endpointNodeId = (name: string): string => `e:${name}`;

/** "8080/tcp" for a port, the protocol alone otherwise (icmp, arp). */
export function flowPort(r: FlowRecord): string {
  return r.dst.port !== undefined ? `${r.dst.port}/${r.protocol}` : r.protocol;
}

export function trafficKind(verdict: string): TrafficKind | undefined {
  switch (verdict) {
    case 'ALLOWED':
      return 'allowed';
    case 'DROPPED':
      return 'dropped';
    case 'AUDIT':
      return 'audit';
    default:
      return undefined; // ARP answers and the like: not a connection
  }
}

const EDGE_PREFIX: Record<TrafficKind, string> = { allowed: 'ok', dropped: 'drop', audit: 'audit' };
export const trafficEdgeId = (kind: TrafficKind, from: string, to: string): string => `${EDGE_PREFIX[kind]}:${from}>${to}`;

export interface TrafficChange {
  edge?: EdgeTraffic;
  nodes: string[];
}

/** A sender the map can draw: a name, or an IPv4 address (non-IPv4 frames carry 0.0.0.0). */
export function attributable(p: FlowPeer): boolean {
  return p.name !== undefined || (p.ip !== '' && p.ip !== '0.0.0.0');
}

export class TrafficAggregate {
  readonly edges = new Map<string, EdgeTraffic>();
  readonly nodes = new Map<string, NodeTraffic>();
  flows = 0;

  constructor(
    private endpointNames: ReadonlySet<string> = new Set(),
    private cidrIds: ReadonlyMap<string, string> = new Map(),
  ) {}

  /** New names (the status or the graph changed); flows already folded keep their ids. */
  setNames(endpointNames: ReadonlySet<string>, cidrIds: ReadonlyMap<string, string>): void {
    this.endpointNames = endpointNames;
    this.cidrIds = cidrIds;
  }

  private node(id: string): NodeTraffic {
    let n = this.nodes.get(id);
    if (!n) this.nodes.set(id, (n = { unattributedIn: 0, dropsIn: 0, dropsOut: 0, auditIn: 0, auditOut: 0, allowedIn: 0, allowedOut: 0 }));
    return n;
  }

  add(r: FlowRecord): TrafficChange | undefined {
    const kind = trafficKind(r.verdict);
    if (!kind) return undefined;
    this.flows++;
    // an aggregated record stands for `count` flows; one after a burst the rate limit held back, for `suppressed` more
    const agg = r as { count?: number; suppressed?: number };
    const n = (agg.count ?? 1) + (agg.suppressed ?? 0);
    const to = peerNodeId(r.dst, this.endpointNames, this.cidrIds);
    if (!attributable(r.src)) {
      if (kind !== 'dropped') return undefined;
      this.node(to).unattributedIn += n;
      return { nodes: [to] };
    }
    const from = peerNodeId(r.src, this.endpointNames, this.cidrIds);
    const id = trafficEdgeId(kind, from, to);
    let e = this.edges.get(id);
    if (!e) this.edges.set(id, (e = { from, to, kind, count: 0, ports: new Set(), reasons: new Set(), last: r.time }));
    e.count += n;
    e.ports.add(flowPort(r));
    e.reasons.add(r.reason);
    if (r.time > e.last) e.last = r.time;
    const s = this.node(from);
    const d = this.node(to);
    if (kind === 'dropped') {
      s.dropsOut += n;
      d.dropsIn += n;
    } else if (kind === 'audit') {
      s.auditOut += n;
      d.auditIn += n;
    } else {
      s.allowedOut += n;
      d.allowedIn += n;
    }
    return { edge: e, nodes: [from, to] };
  }
}
