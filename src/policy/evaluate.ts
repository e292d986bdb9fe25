/**
 * Two evaluators of one connection attempt:
 *
 * - evaluate(): the reference. It reads the internal model (model.ts)
 *   directly, with no identities, prefixes or maps: a managed → managed
 *   connection needs the source's egress AND the destination's ingress; to
 *   something unmanaged (the host, an outside address) only the source's
 *   egress; from something unmanaged only the destination's ingress. A host
 *   address is the host (peer kind 'host'), never a CIDR peer. Connections
 *   between two unmanaged ends are not Bastion's to judge (allowed,
 *   reason 'unmanaged').
 *
 * - CompiledEvaluator: what the datapath does with the compiled map entries
 *   (bpf/lib/policy.h): the peer's identity from the exact endpoint-address
 *   map, else the LPM ipcache (most specific prefix), else ID_WORLD; then,
 *   for each managed end, an LPM lookup in the policy map with the peer's
 *   identity, then with ID_ANY. The LPM lookups run on the keys as the
 *   layout.ts codecs encode them, bit by bit, as the kernel's LPM trie
 *   compares them (byte order included).
 *
 * The property test in test/unit/policy-evaluate.test.ts checks that the two
 * always agree; that is the proof that compile.ts is right.
 *
 * Both answer the policy question only: audit mode (allow, but record) is
 * applied by the datapath on top of the verdict.
 */
import type { Peer, PolicySet, PortRange, Rule } from './model.js';
import { matches } from './selector.js';
import {
  DIR_EGRESS,
  DIR_INGRESS,
  ID_ANY,
  ID_WORLD,
  IPC_F_HOST,
  IPPROTO,
  POLICY_PREFIX_FULL,
  encodeIpcacheKey,
  encodePolicyKey,
  type PolicyVal,
  type IpcacheVal,
  type NeighKey,
} from '../datapath/layout.js';
import { type CompileEndpoint, type CompiledState, type IpcacheEntry, type PolicyEntry, compileAll } from './compile.js';
import { ipInCidr4, isIpv6Text, parseCidr4, parseIpv4 } from '../net/ip.js';

export type L4Protocol = 'tcp' | 'udp' | 'sctp' | 'icmp';

/** One end of a connection: a managed endpoint by key, or an address. */
export type Address = { endpoint: string } | { ip: string };

export interface FlowQuery {
  src: Address;
  dst: Address;
  protocol: L4Protocol;
  /** destination port (ignored for icmp) */
  port: number;
}

/** An endpoint as the reference evaluator needs it. */
export interface ModelEndpoint {
  key: string;
  ipv4: string;
  labels: Readonly<Record<string, string>>;
  namedPorts?: Readonly<Record<string, { port: number; protocol: 'tcp' | 'udp' | 'sctp' }>>;
}

export type Party =
  | { kind: 'endpoint'; endpoint: ModelEndpoint; ip: string }
  | { kind: 'host'; ip: string }
  | { kind: 'external'; ip: string };

export interface Verdict {
  allowed: boolean;
  reason: 'allowed' | 'egress-denied' | 'ingress-denied' | 'denied-both' | 'unmanaged';
  src: Party;
  dst: Party;
  /** whether the source's egress is checked (it is managed), and the rules that allow */
  egressChecked: boolean;
  ingressChecked: boolean;
  /** first allowing rule, in policy order */
  egressRule?: string;
  ingressRule?: string;
  /** every allowing rule, in policy order */
  egressRules: string[];
  ingressRules: string[];
}

export class UnknownEndpointError extends Error {
  constructor(readonly key: string) {
    super(`unknown endpoint "${key}"`);
    this.name = 'UnknownEndpointError';
  }
}

function checkQuery(q: FlowQuery): void {
  if (!['tcp', 'udp', 'sctp', 'icmp'].includes(q.protocol)) throw new Error(`unknown protocol ${String(q.protocol)}`);
  if (q.protocol !== 'icmp' && (!Number.isInteger(q.port) || q.port < 0 || q.port > 65535)) {
    throw new Error(`port ${q.port} is out of range 0-65535`);
  }
}

// ================================================================ reference

function party(a: Address, endpoints: readonly ModelEndpoint[], hostAddrs: readonly string[]): Party {
  if ('endpoint' in a) {
    const ep = endpoints.find((e) => e.key === a.endpoint);
    if (!ep) throw new UnknownEndpointError(a.endpoint);
    return { kind: 'endpoint', endpoint: ep, ip: ep.ipv4 };
  }
  const ep = endpoints.find((e) => e.ipv4 === a.ip);
  if (ep) return { kind: 'endpoint', endpoint: ep, ip: a.ip };
  if (hostAddrs.includes(a.ip)) return { kind: 'host', ip: a.ip };
  return { kind: 'external', ip: a.ip };
}

function inCidrPeer(p: { cidr: string; except?: string[] }, ip: string): boolean {
  const a = parseIpv4(ip);
  const c = parseCidr4(p.cidr);
  if (a === undefined || !c) return false;
  if (!ipInCidr4(c, a)) return false;
  for (const e of p.except ?? []) {
    if (isIpv6Text(e)) continue;
    const x = parseCidr4(e);
    if (!x) return false; // an unreadable except: fail closed
    if (ipInCidr4(x, a)) return false;
  }
  return true;
}

/** Does the peer describe this party? */
export function peerMatches(p: Peer, other: Party): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'host':
      return other.kind === 'host';
    case 'endpoints':
      return other.kind === 'endpoint' && matches(p.selector, other.endpoint.labels);
    case 'cidr':
      return other.kind !== 'host' && inCidrPeer(p, other.ip);
    default:
      return false;
  }
}

/** Do the ports allow (protocol, port) to the destination? Named ports resolve on `dst` when it is managed. */
export function portsMatch(ports: readonly PortRange[], dst: Party, protocol: L4Protocol, port: number): boolean {
  if (ports.length === 0) return true;
  return ports.some((p) => {
    if (p.name !== undefined) {
      if (dst.kind !== 'endpoint') return false;
      const np = dst.endpoint.namedPorts;
      if (!np || !Object.hasOwn(np, p.name)) return false;
      const d = np[p.name]!;
      if (p.protocol !== 'any' && p.protocol !== d.protocol) return false;
      return d.protocol === protocol && d.port === port;
    }
    switch (p.protocol) {
      case 'any':
        return true;
      case 'icmp':
        return protocol === 'icmp';
      default:
        return p.protocol === protocol && p.from <= port && port <= p.to;
    }
  });
}

/** The rules of `direction` on `subject` that allow traffic with `peer` to `dst`. */
export function allowingRules(
  rules: readonly Rule[],
  direction: 'egress' | 'ingress',
  subject: ModelEndpoint,
  peer: Party,
  dst: Party,
  protocol: L4Protocol,
  port: number,
): Rule[] {
  return rules.filter(
    (r) =>
      r.direction === direction &&
      matches(r.subject, subject.labels) &&
      r.peers.some((p) => peerMatches(p, peer)) &&
      portsMatch(r.ports, dst, protocol, port),
  );
}

/** The reference verdict of the model on one connection attempt. */
export function evaluate(
  policySet: PolicySet,
  endpoints: readonly ModelEndpoint[],
  hostAddrs: readonly string[],
  query: FlowQuery,
): Verdict {
  checkQuery(query);
  const src = party(query.src, endpoints, hostAddrs);
  const dst = party(query.dst, endpoints, hostAddrs);
  const port = query.protocol === 'icmp' ? 0 : query.port;
  const egressChecked = src.kind === 'endpoint';
  const ingressChecked = dst.kind === 'endpoint';
  const egressRules =
    src.kind === 'endpoint' ? allowingRules(policySet.rules, 'egress', src.endpoint, dst, dst, query.protocol, port).map((r) => r.id) : [];
  const ingressRules =
    dst.kind === 'endpoint' ? allowingRules(policySet.rules, 'ingress', dst.endpoint, src, dst, query.protocol, port).map((r) => r.id) : [];
  const eOk = !egressChecked || egressRules.length > 0;
  const iOk = !ingressChecked || ingressRules.length > 0;
  const reason: Verdict['reason'] =
    !egressChecked && !ingressChecked
      ? 'unmanaged'
      : eOk && iOk
        ? 'allowed'
        : !eOk && !iOk
          ? 'denied-both'
          : !eOk
            ? 'egress-denied'
            : 'ingress-denied';
  return {
    allowed: eOk && iOk,
    reason,
    src,
    dst,
    egressChecked,
    ingressChecked,
    ...(egressRules.length ? { egressRule: egressRules[0] } : {}),
    ...(ingressRules.length ? { ingressRule: ingressRules[0] } : {}),
    egressRules,
    ingressRules,
  };
}

// ================================================================ compiled

/** What the datapath holds: the policy map, the ipcache, and the endpoint-address map. */
export interface DatapathView {
  policy: Iterable<PolicyEntry>;
  ipcache: Iterable<IpcacheEntry>;
  /** bastion_ep_ip: managed endpoint address → identity */
  endpointsByIp: ReadonlyMap<string, number>;
  neigh?: Iterable<NeighKey>;
  /** bastion_remote (cluster mode): another node's endpoint address → identity (its ingress is its node's) */
  remoteByIp?: ReadonlyMap<string, number>;
}

/** The view of a compiled state with these endpoints attached. */
export function datapathView(
  state: CompiledState,
  endpoints: readonly { ipv4: string; identity: number }[],
): DatapathView {
  return {
    policy: state.policy.values(),
    ipcache: state.ipcache.values(),
    endpointsByIp: new Map(endpoints.map((e) => [e.ipv4, e.identity])),
    neigh: state.neigh.values(),
  };
}

/**
 * A longest-prefix-match table with the kernel's semantics
 * (BPF_MAP_TYPE_LPM_TRIE): the key is a prefix length and data bytes
 * compared from the most significant bit of the first byte; an update with
 * a (prefixlen, prefix) already present replaces it (bits past the prefix
 * are not part of the key); a lookup returns the entry with the longest
 * prefix that matches the lookup data.
 */
export class LpmTable<V> {
  /** prefixlen → hex of the masked data → value */
  private readonly byLen = new Map<number, Map<string, V>>();
  /** prefix lengths present, longest first */
  private lens: number[] = [];

  constructor(private readonly dataBytes: number) {}

  /** The first `prefixlen` bits of `data`, the others cleared, as hex. */
  private static masked(data: Buffer, prefixlen: number): string {
    const out = Buffer.alloc(data.length);
    for (let i = 0; i < data.length; i++) {
      const bits = Math.max(0, Math.min(8, prefixlen - i * 8));
      out[i] = data[i]! & ((0xff << (8 - bits)) & 0xff);
    }
    return out.toString('hex');
  }

  private split(key: Buffer): [number, Buffer] {
    if (key.length !== 4 + this.dataBytes) throw new Error(`key of ${key.length} bytes, expected ${4 + this.dataBytes}`);
    const prefixlen = key.readUInt32LE(0);
    if (prefixlen > this.dataBytes * 8) throw new Error(`prefixlen ${prefixlen} too long`);
    return [prefixlen, key.subarray(4)];
  }

  /** `key` is the encoded map key: a u32 prefixlen (little-endian) followed by the data. */
  set(key: Buffer, val: V): void {
    const [prefixlen, data] = this.split(key);
    let m = this.byLen.get(prefixlen);
    if (!m) {
      this.byLen.set(prefixlen, (m = new Map()));
      this.lens = [...this.byLen.keys()].sort((a, b) => b - a);
    }
    m.set(LpmTable.masked(data, prefixlen), val);
  }

  delete(key: Buffer): boolean {
    const [prefixlen, data] = this.split(key);
    const m = this.byLen.get(prefixlen);
    if (!m) return false;
    const ok = m.delete(LpmTable.masked(data, prefixlen));
    if (m.size === 0) {
      this.byLen.delete(prefixlen);
      this.lens = [...this.byLen.keys()].sort((a, b) => b - a);
    }
    return ok;
  }

  get size(): number {
    let n = 0;
    for (const m of this.byLen.values()) n += m.size;
    return n;
  }

  /** The value of the longest prefix matching the key's data (the key's own prefixlen is ignored, as by the kernel for lookups with the full length). */
  lookup(key: Buffer): V | undefined {
    const [, data] = this.split(key);
    for (const len of this.lens) {
      const v = this.byLen.get(len)!.get(LpmTable.masked(data, len));
      if (v !== undefined) return v;
    }
    return undefined;
  }
}

export interface CompiledVerdict {
  allowed: boolean;
  srcIdentity: number;
  dstIdentity: number;
  srcIsHost: boolean;
  dstIsHost: boolean;
  egressChecked: boolean;
  ingressChecked: boolean;
  /** rule numbers the lookups returned (0: no entry) */
  egressRuleId: number;
  ingressRuleId: number;
}

interface Resolved {
  identity: number;
  managed: boolean;
  host: boolean;
}

/** Evaluates connection attempts exactly as the datapath does, over compiled entries. */
export class CompiledEvaluator {
  private readonly policy = new LpmTable<PolicyVal>(12);
  private readonly ipcache = new LpmTable<IpcacheVal>(4);
  private readonly epByIp: Map<string, number>;
  private readonly remoteByIp: Map<string, number>;
  private readonly neigh = new Set<string>();

  constructor(view: DatapathView) {
    for (const e of view.policy) this.setPolicy(e);
    for (const e of view.ipcache) this.setIpcache(e);
    for (const n of view.neigh ?? []) this.setNeigh(n);
    this.epByIp = new Map(view.endpointsByIp);
    this.remoteByIp = new Map(view.remoteByIp ?? []);
  }

  // A simulated datapath: the maps can be written one entry at a time.
  setPolicy(e: PolicyEntry): void {
    this.policy.set(encodePolicyKey(e.key), e.val);
  }
  deletePolicy(e: PolicyEntry): void {
    this.policy.delete(encodePolicyKey(e.key));
  }
  setIpcache(e: IpcacheEntry): void {
    this.ipcache.set(encodeIpcacheKey(e.key), e.val);
  }
  deleteIpcache(e: IpcacheEntry): void {
    this.ipcache.delete(encodeIpcacheKey(e.key));
  }
  setNeigh(n: NeighKey): void {
    this.neigh.add(`${n.epId}:${n.peerId}`);
  }
  deleteNeigh(n: NeighKey): void {
    this.neigh.delete(`${n.epId}:${n.peerId}`);
  }
  setEndpointAddr(ip: string, identity: number): void {
    this.epByIp.set(ip, identity);
  }
  deleteEndpointAddr(ip: string): void {
    this.epByIp.delete(ip);
  }
  setRemoteAddr(ip: string, identity: number): void {
    this.remoteByIp.set(ip, identity);
  }
  deleteRemoteAddr(ip: string): void {
    this.remoteByIp.delete(ip);
  }

  /** resolve_peer(): exact endpoint address, then another node's endpoint, then the ipcache (/32 lookup), else the world. */
  resolve(ip: string): Resolved {
    const ep = this.epByIp.get(ip);
    if (ep !== undefined) return { identity: ep, managed: true, host: false };
    const remote = this.remoteByIp.get(ip);
    if (remote !== undefined) return { identity: remote, managed: false, host: false };
    const v = this.ipcache.lookup(encodeIpcacheKey({ prefixlen: 32, addr: ip }));
    if (v) return { identity: v.identity, managed: false, host: (v.flags & IPC_F_HOST) !== 0 };
    return { identity: ID_WORLD, managed: false, host: false };
  }

  /** policy_allows(): the rule number (≥ 1) or 0. */
  policyAllows(epId: number, peerId: number, dir: number, proto: number, dport: number): number {
    const key = { prefixlen: POLICY_PREFIX_FULL, epId, peerId, direction: dir, proto, dport };
    let v = this.policy.lookup(encodePolicyKey(key));
    if (v) return v.ruleId || 1;
    v = this.policy.lookup(encodePolicyKey({ ...key, peerId: ID_ANY }));
    if (v) return v.ruleId || 1;
    return 0;
  }

  /** neigh_allowed(): may `epId` resolve `peerId`'s MAC? */
  neighAllowed(epId: number, peerId: number): boolean {
    return this.neigh.has(`${epId}:${peerId}`) || this.neigh.has(`${epId}:${ID_ANY}`);
  }

  /** A query whose ends are addresses (use addressOf() to turn endpoint keys into addresses). */
  evaluate(q: { srcIp: string; dstIp: string; protocol: L4Protocol; port: number }): CompiledVerdict {
    const src = this.resolve(q.srcIp);
    const dst = this.resolve(q.dstIp);
    const proto = IPPROTO[q.protocol];
    const dport = q.protocol === 'icmp' ? 0 : q.port;
    const egressRuleId = src.managed ? this.policyAllows(src.identity, dst.identity, DIR_EGRESS, proto, dport) : 0;
    const ingressRuleId = dst.managed ? this.policyAllows(dst.identity, src.identity, DIR_INGRESS, proto, dport) : 0;
    return {
      allowed: (!src.managed || egressRuleId !== 0) && (!dst.managed || ingressRuleId !== 0),
      srcIdentity: src.identity,
      dstIdentity: dst.identity,
      srcIsHost: src.host,
      dstIsHost: dst.host,
      egressChecked: src.managed,
      ingressChecked: dst.managed,
      egressRuleId,
      ingressRuleId,
    };
  }
}

/**
 * An evaluator of a rule set compiled on its own (a candidate, a learned
 * set): CIDR prefixes get identities from 0x4000_0000 up (above every
 * recorded one, stable within this compilation) and rules numbers from 1.
 */
export function evaluatorFor(rules: readonly Rule[], endpoints: CompileEndpoint[], hostAddrs: string[]): CompiledEvaluator {
  let next = 0x4000_0000;
  const cidrIds = new Map<string, number>();
  const numbers = new Map<string, number>();
  const state = compileAll({
    endpoints,
    rules,
    hostAddrs,
    cidrIdentity: (c) => cidrIds.get(c) ?? (cidrIds.set(c, next++), next - 1),
    ruleNumber: (id) => numbers.get(id) ?? (numbers.set(id, numbers.size + 1), numbers.size),
  });
  return new CompiledEvaluator(datapathView(state, endpoints));
}

/** The address of a query end: an endpoint's IPv4, or the address itself. */
export function addressOf(a: Address, endpoints: readonly { key: string; ipv4: string }[]): string {
  if ('ip' in a) return a.ip;
  const ep = endpoints.find((e) => e.key === a.endpoint);
  if (!ep) throw new UnknownEndpointError(a.endpoint);
  return ep.ipv4;
}

/** Convenience: evaluate a FlowQuery over compiled entries. */
export function evaluateCompiled(
  view: DatapathView | CompiledEvaluator,
  endpoints: readonly { key: string; ipv4: string }[],
  query: FlowQuery,
): CompiledVerdict {
  checkQuery(query);
  const ev = view instanceof CompiledEvaluator ? view : new CompiledEvaluator(view);
  return ev.evaluate({
    srcIp: addressOf(query.src, endpoints),
    dstIp: addressOf(query.dst, endpoints),
    protocol: query.protocol,
    port: query.port,
  });
}

