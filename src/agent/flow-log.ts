/**
 * Flow events from the datapath, turned into records a person can read:
 * container names and labels instead of identities, policy names instead of
 * numbers, wall-clock time instead of the kernel's monotonic clock. The
 * record's shape is src/flows/record.ts.
 */
import { EventEmitter } from 'node:events';
import { FLOW_F_INGRESS, FLOW_F_REPLY, REASON_NAMES, TRACE_FROM_CONTAINER, TRACE_FROM_OVERLAY, VERDICT_NAMES, type FlowEvent } from '../datapath/layout.js';
import { formatIpv4, parseIpv4 } from '../net/ip.js';
import type { FlowEnd, FlowRecord, FlowTunnel } from '../flows/record.js';

export type { FlowEnd, FlowRecord } from '../flows/record.js';
export { formatFlowLine } from '../flows/record.js';

export interface FlowNames {
  identityName(identity: number): string | undefined;
  /** a container's labels (undefined for anything else) */
  identityLabels?(identity: number): Record<string, string> | undefined;
  /** the node a container runs on, where known */
  identityNode?(identity: number): string | undefined;
  ruleName(ruleNumber: number): string | undefined;
  endpointName(ifindex: number): string | undefined;
  /** the host-side interface's name (or the tunnel device's) */
  interfaceName?(ifindex: number): string | undefined;
  /** the node whose underlay address this is (cluster mode) */
  nodeByUnderlay?(address: string): string | undefined;
}

const PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };
const ETH_P_ARP = 0x0806;
/** the labels of an end that is not a container: one shared object */
const NO_LABELS: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** CLOCK_MONOTONIC (bpf_ktime_get_ns) to wall-clock milliseconds. */
export function monotonicToWallMs(tsNs: bigint): number {
  const nowMono = process.hrtime.bigint();
  return Date.now() - Number(nowMono - tsNs) / 1e6;
}

function end(names: FlowNames, identity: number, ip: string, port: number | undefined): FlowEnd {
  const name = names.identityName(identity);
  const node = names.identityNode?.(identity);
  return {
    identity,
    ...(name !== undefined ? { name } : {}),
    labels: names.identityLabels?.(identity) ?? NO_LABELS,
    ip,
    ...(port !== undefined ? { port } : {}),
    ...(node !== undefined ? { node } : {}),
  };
}

/** TCP flags as tcpdump names them, in header order: "SYN", "SYN,ACK", "FIN,ACK", "RST". */
export function tcpFlagsText(f: number): string {
  const names: Array<[number, string]> = [
    [0x01, 'FIN'],
    [0x02, 'SYN'],
    [0x04, 'RST'],
    [0x08, 'PSH'],
    [0x10, 'ACK'],
    [0x20, 'URG'],
    [0x40, 'ECE'],
    [0x80, 'CWR'],
  ];
  return names
    .filter(([bit]) => f & bit)
    .map(([, n]) => n)
    .join(',');
}

export function describeFlow(ev: FlowEvent, names: FlowNames, wallMs = monotonicToWallMs(ev.tsNs)): FlowRecord {
  const isArp = ev.ethertype === ETH_P_ARP;
  const protocol = isArp ? 'arp' : (PROTOCOLS[ev.proto] ?? (ev.proto ? `ip-proto-${ev.proto}` : `ethertype-0x${ev.ethertype.toString(16).padStart(4, '0')}`));
  const hasPorts = ev.proto === 6 || ev.proto === 17 || ev.proto === 132;
  // to_container, and from_overlay (another node's packet for a local receiver), see it on the way in
  const fromContainer = ev.trace === TRACE_FROM_CONTAINER;
  // the receiver's ingress decided (checked by the sender's stack for a local receiver), or seen on the way in
  const direction = !fromContainer || ev.flags & FLOW_F_INGRESS ? 'ingress' : 'egress';
  const rule = (n: number) => (n ? (names.ruleName(n) ?? `#${n}`) : undefined);
  const policies: FlowRecord['policies'] = {};
  const egressRule = fromContainer ? rule(ev.ruleId) : undefined;
  const ingressRule = fromContainer ? rule(ev.ingressRuleId) : rule(ev.ruleId);
  if (egressRule !== undefined) policies.egress = egressRule;
  if (ingressRule !== undefined) policies.ingress = ingressRule;
  const endpoint = names.endpointName(ev.ifindex);
  const rec: FlowRecord = {
    time: new Date(wallMs).toISOString(),
    verdict: VERDICT_NAMES[ev.verdict] ?? String(ev.verdict),
    reason: REASON_NAMES[ev.reason] ?? String(ev.reason),
    direction,
    protocol,
    src: end(names, ev.srcId, ev.saddr, hasPorts ? ev.sport : undefined),
    dst: end(names, ev.dstId, ev.daddr, hasPorts ? ev.dport : undefined),
    policies,
    interface: names.interfaceName?.(ev.ifindex) ?? `if${ev.ifindex}`,
    isReply: (ev.flags & FLOW_F_REPLY) !== 0,
    ...(endpoint !== undefined ? { endpoint } : {}),
  };
  if (ev.proto === 6 && ev.tcpFlags) rec.tcpFlags = tcpFlagsText(ev.tcpFlags);
  if (ev.trace === TRACE_FROM_OVERLAY && ev.tunnelSaddr && ev.tunnelSaddr !== '0.0.0.0') {
    const node = names.nodeByUnderlay?.(ev.tunnelSaddr);
    rec.tunnel = { protocol: 'vxlan', source: ev.tunnelSaddr, ...(node !== undefined ? { node } : {}) };
  }
  if (ev.flowSummary) {
    rec.summary = true;
    rec.count = ev.flowSummary.count;
    rec.firstSeen = new Date(wallMs - Number(ev.tsNs - ev.flowSummary.firstNs) / 1e6).toISOString();
    rec.lastSeen = rec.time;
    return rec;
  }
  rec.bytes = ev.pktLen;
  if (ev.suppressed) rec.suppressed = ev.suppressed;
  if (ev.summary) rec.summary = true;
  return rec;
}

/** presence of a record's optional parts, one bit each */
const HAS_SRC_NAME = 1 << 0;
const HAS_DST_NAME = 1 << 1;
const HAS_SRC_PORT = 1 << 2;
const HAS_DST_PORT = 1 << 3;
const HAS_ENDPOINT = 1 << 4;
const HAS_BYTES = 1 << 5;
const HAS_COUNT = 1 << 6;
const IS_SUMMARY = 1 << 7;
const IS_REPLY = 1 << 8;
const HAS_SRC_NODE = 1 << 9;
const HAS_DST_NODE = 1 << 10;
const HAS_TCP_FLAGS = 1 << 11;
const HAS_POLICY_EGRESS = 1 << 12;
const HAS_POLICY_INGRESS = 1 << 13;
const HAS_FIRST_SEEN = 1 << 14;
const HAS_LAST_SEEN = 1 << 15;
const HAS_SUPPRESSED = 1 << 16;
const HAS_TUNNEL = 1 << 17;
const HAS_TUNNEL_NODE = 1 << 18;

/** text columns, per record */
const T_VERDICT = 0;
const T_REASON = 1;
const T_DIRECTION = 2;
const T_PROTOCOL = 3;
const T_SRC_NAME = 4; // + 1 for dst
const T_SRC_NODE = 6; // + 1 for dst
const T_ENDPOINT = 8;
const T_POLICY_EGRESS = 9;
const T_POLICY_INGRESS = 10;
const T_INTERFACE = 11;
const T_TCP_FLAGS = 12;
const T_FIRST_SEEN = 13;
const T_LAST_SEEN = 14;
const T_TUNNEL_NODE = 15;
const TEXTS = 16;

/**
 * The most recent flows, for the API and the UI; emits 'flow' for followers.
 * A fixed ring: a push is O(1) whatever the flow rate (at tens of thousands
 * of new connections per second the daemon shares the CPU with them).
 *
 * The ring holds no record objects: each record's numbers go into typed
 * columns and its strings and label maps (names, verdicts, a container's
 * labels: objects the daemon holds anyway) into reference columns, and
 * records are rebuilt when read. At 15,000 new connections per second a
 * record lives less than a second in a ring of 10,000, long enough for V8 to
 * move it to the old generation and short enough to die there: stored as
 * objects, that was 5 MB/s of old-generation garbage, a heap that grew by
 * 40 MB during a load test, and major collections on the event path.
 */
export class FlowStore extends EventEmitter {
  private next = 0;
  private total = 0;
  private readonly timeMs: Float64Array;
  private readonly ids: Uint32Array;
  private readonly addrs: Uint32Array;
  private readonly ports: Uint16Array;
  private readonly bytes: Float64Array;
  private readonly counts: Float64Array;
  private readonly suppressed: Uint32Array;
  private readonly flags: Uint32Array;
  /** a record from the tunnel: its outer source address */
  private readonly tunnelSources: Uint32Array;
  private readonly text: Array<string | undefined>;
  /** src and dst labels, by reference */
  private readonly labels: Array<Record<string, string> | undefined>;
  /** addresses that are not dotted IPv4 (never from the datapath), by slot */
  private readonly oddAddrs = new Map<number, [string, string]>();

  constructor(private readonly capacity = 10000) {
    super();
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`flow store capacity must be a positive integer, got ${capacity}`);
    this.timeMs = new Float64Array(capacity);
    this.ids = new Uint32Array(capacity * 2);
    this.addrs = new Uint32Array(capacity * 2);
    this.ports = new Uint16Array(capacity * 2);
    this.bytes = new Float64Array(capacity);
    this.counts = new Float64Array(capacity);
    this.suppressed = new Uint32Array(capacity);
    this.flags = new Uint32Array(capacity);
    this.tunnelSources = new Uint32Array(capacity);
    this.text = new Array<string | undefined>(capacity * TEXTS).fill(undefined);
    this.labels = new Array<Record<string, string> | undefined>(capacity * 2).fill(undefined);
    this.setMaxListeners(100);
  }

  /** Add a record; `json` is its JSON text when the caller made it already (followers send it as it is). */
  push(r: FlowRecord, json?: string): void {
    const i = this.next;
    this.timeMs[i] = Date.parse(r.time);
    this.ids[2 * i] = r.src.identity;
    this.ids[2 * i + 1] = r.dst.identity;
    const sa = parseIpv4(r.src.ip);
    const da = parseIpv4(r.dst.ip);
    this.oddAddrs.delete(i);
    if (sa === undefined || da === undefined) this.oddAddrs.set(i, [r.src.ip, r.dst.ip]);
    this.addrs[2 * i] = sa ?? 0;
    this.addrs[2 * i + 1] = da ?? 0;
    this.ports[2 * i] = r.src.port ?? 0;
    this.ports[2 * i + 1] = r.dst.port ?? 0;
    this.bytes[i] = r.bytes ?? 0;
    this.counts[i] = r.count ?? 0;
    this.suppressed[i] = r.suppressed ?? 0;
    this.labels[2 * i] = r.src.labels;
    this.labels[2 * i + 1] = r.dst.labels;
    this.flags[i] =
      ('name' in r.src ? HAS_SRC_NAME : 0) |
      ('name' in r.dst ? HAS_DST_NAME : 0) |
      (r.src.port !== undefined ? HAS_SRC_PORT : 0) |
      (r.dst.port !== undefined ? HAS_DST_PORT : 0) |
      ('node' in r.src ? HAS_SRC_NODE : 0) |
      ('node' in r.dst ? HAS_DST_NODE : 0) |
      ('endpoint' in r ? HAS_ENDPOINT : 0) |
      (r.bytes !== undefined ? HAS_BYTES : 0) |
      (r.count !== undefined ? HAS_COUNT : 0) |
      (r.summary ? IS_SUMMARY : 0) |
      (r.isReply ? IS_REPLY : 0) |
      (r.tcpFlags !== undefined ? HAS_TCP_FLAGS : 0) |
      ('egress' in r.policies ? HAS_POLICY_EGRESS : 0) |
      ('ingress' in r.policies ? HAS_POLICY_INGRESS : 0) |
      (r.firstSeen !== undefined ? HAS_FIRST_SEEN : 0) |
      (r.lastSeen !== undefined ? HAS_LAST_SEEN : 0) |
      (r.suppressed !== undefined ? HAS_SUPPRESSED : 0) |
      (r.tunnel ? HAS_TUNNEL : 0) |
      (r.tunnel?.node !== undefined ? HAS_TUNNEL_NODE : 0);
    this.tunnelSources[i] = r.tunnel ? (parseIpv4(r.tunnel.source) ?? 0) : 0;
    const t = TEXTS * i;
    this.text[t + T_VERDICT] = r.verdict;
    this.text[t + T_REASON] = r.reason;
    this.text[t + T_DIRECTION] = r.direction;
    this.text[t + T_PROTOCOL] = r.protocol;
    this.text[t + T_SRC_NAME] = r.src.name;
    this.text[t + T_SRC_NAME + 1] = r.dst.name;
    this.text[t + T_SRC_NODE] = r.src.node;
    this.text[t + T_SRC_NODE + 1] = r.dst.node;
    this.text[t + T_ENDPOINT] = r.endpoint;
    this.text[t + T_POLICY_EGRESS] = r.policies.egress;
    this.text[t + T_POLICY_INGRESS] = r.policies.ingress;
    this.text[t + T_INTERFACE] = r.interface;
    this.text[t + T_TCP_FLAGS] = r.tcpFlags;
    this.text[t + T_FIRST_SEEN] = r.firstSeen;
    this.text[t + T_LAST_SEEN] = r.lastSeen;
    this.text[t + T_TUNNEL_NODE] = r.tunnel?.node;
    this.next = (i + 1) % this.capacity;
    this.total++;
    if (this.listenerCount('flow') > 0) this.emit('flow', r, json);
  }

  private record(i: number): FlowRecord {
    const f = this.flags[i]!;
    const t = TEXTS * i;
    const odd = this.oddAddrs.get(i);
    const end = (k: 0 | 1, hasName: number, hasPort: number, hasNode: number): FlowEnd => ({
      identity: this.ids[2 * i + k]!,
      ...(f & hasName ? { name: this.text[t + T_SRC_NAME + k] } : {}),
      labels: this.labels[2 * i + k]!,
      ip: odd ? odd[k] : formatIpv4(this.addrs[2 * i + k]!),
      ...(f & hasPort ? { port: this.ports[2 * i + k] } : {}),
      ...(f & hasNode ? { node: this.text[t + T_SRC_NODE + k] } : {}),
    });
    const policies: FlowRecord['policies'] = {};
    if (f & HAS_POLICY_EGRESS) policies.egress = this.text[t + T_POLICY_EGRESS];
    if (f & HAS_POLICY_INGRESS) policies.ingress = this.text[t + T_POLICY_INGRESS];
    const r: FlowRecord = {
      time: new Date(this.timeMs[i]!).toISOString(),
      verdict: this.text[t + T_VERDICT]!,
      reason: this.text[t + T_REASON]!,
      direction: this.text[t + T_DIRECTION] as FlowRecord['direction'],
      protocol: this.text[t + T_PROTOCOL]!,
      src: end(0, HAS_SRC_NAME, HAS_SRC_PORT, HAS_SRC_NODE),
      dst: end(1, HAS_DST_NAME, HAS_DST_PORT, HAS_DST_NODE),
      policies,
      interface: this.text[t + T_INTERFACE]!,
      isReply: (f & IS_REPLY) !== 0,
    };
    if (f & HAS_TCP_FLAGS) r.tcpFlags = this.text[t + T_TCP_FLAGS];
    if (f & HAS_ENDPOINT) r.endpoint = this.text[t + T_ENDPOINT];
    if (f & HAS_BYTES) r.bytes = this.bytes[i]!;
    if (f & HAS_COUNT) r.count = this.counts[i]!;
    if (f & IS_SUMMARY) r.summary = true;
    if (f & HAS_FIRST_SEEN) r.firstSeen = this.text[t + T_FIRST_SEEN];
    if (f & HAS_LAST_SEEN) r.lastSeen = this.text[t + T_LAST_SEEN];
    if (f & HAS_SUPPRESSED) r.suppressed = this.suppressed[i]!;
    if (f & HAS_TUNNEL) {
      const tunnel: FlowTunnel = { protocol: 'vxlan', source: formatIpv4(this.tunnelSources[i]!) };
      if (f & HAS_TUNNEL_NODE) tunnel.node = this.text[t + T_TUNNEL_NODE];
      r.tunnel = tunnel;
    }
    return r;
  }

  /** The last `limit` records (after filtering), oldest first. */
  recent(limit = 100, filter?: (r: FlowRecord) => boolean): FlowRecord[] {
    const out: FlowRecord[] = [];
    const held = Math.min(this.total, this.capacity);
    for (let i = 1; i <= held && out.length < limit; i++) {
      const r = this.record((this.next - i + this.capacity) % this.capacity);
      if (!filter || filter(r)) out.push(r);
    }
    return out.reverse();
  }

  /** Time of the oldest record held (ms), when there is one. */
  get oldestMs(): number | undefined {
    const held = Math.min(this.total, this.capacity);
    if (held === 0) return undefined;
    return this.timeMs[(this.next - held + this.capacity) % this.capacity];
  }

  get count(): number {
    return this.total;
  }
}
