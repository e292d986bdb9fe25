/**
 * Codecs for every key and value of the datapath maps.
 *
 * This file mirrors bpf/lib/maps.h field by field: same order, same sizes,
 * same byte order (addresses and ports big-endian as on the wire; identities,
 * ifindexes and flags little-endian, the host order of every machine we run
 * on). test/unit/layout.test.ts round-trips every codec, and the datapath
 * tests check the C side reads what these write.
 */
import { formatIpv4, parseIpv4 } from '../net/ip.js';

export const MAP_NAMES = {
  endpoints: 'bastion_ep',
  endpointsByIp: 'bastion_ep_ip',
  ipcache: 'bastion_ipcache',
  policy: 'bastion_policy',
  neigh: 'bastion_neigh',
  ct: 'bastion_ct',
  ctUse: 'bastion_ct_use',
  frags: 'bastion_frags',
  events: 'bastion_events',
  eventLimits: 'bastion_event_rl',
  flowSum: 'bastion_flow_sum',
  flowSeen: 'bastion_flow_seen',
  counters: 'bastion_counter',
  epStats: 'bastion_ep_stat',
  config: 'bastion_config',
  state: 'bastion_state',
  remote: 'bastion_remote',
  tunnel: 'bastion_tunnel',
} as const;
export type MapName = (typeof MAP_NAMES)[keyof typeof MAP_NAMES];

export const DEFAULT_PIN_PATH = '/sys/fs/bpf/bastion';

/*
 * Constants. Each one below is a #define of the C headers under the same
 * name in UPPER_SNAKE case (the reasons: REASON_ + the key in UPPER_SNAKE);
 * test/unit/layout.test.ts compiles the headers and checks every value, and
 * that the headers define no reason, flag or verdict this file lacks. Prefix
 * lengths are derived from the key sizes, as the C side derives them.
 */

// ------------------------------------------------------------ identities
export const ID_ANY = 0;
export const ID_HOST = 1;
export const ID_WORLD = 2;
/** another node's underlay address: never world, reachable by no rule */
export const ID_REMOTE_NODE = 3;
export const ID_FIRST_DYNAMIC = 256;

// -------------------------------------------------------------- flags
export const EP_F_AUDIT = 1;
export const IPC_F_HOST = 1;
export const DIR_EGRESS = 0;
export const DIR_INGRESS = 1;
export const PROTO_ANY = 0;
export const IPPROTO = { icmp: 1, tcp: 6, udp: 17, sctp: 132 } as const;
export const CT_F_AUDIT = 1;
export const CT_F_SEEN_REPLY = 2;
export const CT_F_CLOSING = 4;
/** the connection's opener is the ct key's daddr/dport end (keys put the lower end first) */
export const CT_F_KEY_SWAPPED = 8;
export const MODE_ENFORCE = 0;
export const MODE_AUDIT = 1;
export const CFG_F_TRACE_ALLOWED = 1;
export const FRAG_VERDICT_DROPPED = 0;
export const FRAG_VERDICT_ALLOWED = 1;
/** how long a first fragment's verdict serves its later fragments */
export const FRAG_LIFETIME_S = 30;

// ---------------------------------------------------------------- sizes
export const BASTION_MAX_CT = 262144;
/** other nodes' endpoints this node can hold (peers of its own) */
export const BASTION_MAX_REMOTE = 65536;
/** conntrack entries one endpoint may hold unless bastion_config says otherwise */
export const CT_DEFAULT_PER_ENDPOINT = BASTION_MAX_CT / 4;
/** events per (endpoint, verdict, reason) and second unless bastion_config says otherwise */
export const EVENTS_DEFAULT_PER_SEC = 100;

export const VERDICT = { allowed: 1, dropped: 2, audit: 3, arpReply: 4 } as const;
export const VERDICT_NAMES: Record<number, string> = {
  1: 'ALLOWED',
  2: 'DROPPED',
  3: 'AUDIT',
  4: 'ARP_REPLY',
};
/** flow_event.flags */
export const FLOW_F_REPLY = 1;
/** decided by the receiver's ingress policy (from_container, a local receiver) */
export const FLOW_F_INGRESS = 2;
/** flow_sum_key.flags: passed in audit mode although a policy would drop it */
export const FLOW_SUM_F_AUDIT = 1;
/** keys of allowed flows the kernel summarises */
export const BASTION_MAX_FLOW_SUM = 65536;
export const TRACE_FROM_CONTAINER = 0;
export const TRACE_TO_CONTAINER = 1;
export const TRACE_FROM_OVERLAY = 2;
export const TRACE_NAMES: Record<number, string> = { [TRACE_FROM_CONTAINER]: 'from-container', [TRACE_TO_CONTAINER]: 'to-container', [TRACE_FROM_OVERLAY]: 'from-overlay' };

/**
 * Index into bastion_counter: the one table of reasons. Below 8 packets that
 * passed; 8 and 9 count flow events, not packets; 16 and above drops. The C
 * name is REASON_ + the key in UPPER_SNAKE case, the name in events, logs
 * and metrics the key in kebab case (reasonName).
 */
export const REASON = {
  allowedNew: 1,
  established: 2,
  redirected: 3,
  arpReplied: 4,
  arpHost: 5,
  audited: 6,
  eventsLost: 8,
  eventsSuppressed: 9,
  encapsulated: 12,
  decapsulated: 13,
  noEndpoint: 16,
  spoofedMac: 17,
  spoofedIp: 18,
  spoofedArp: 19,
  spoofedIfindex: 20,
  arpDenied: 21,
  arpUnsolicited: 22,
  policyDenied: 23,
  hostDenied: 24,
  ipv6: 25,
  malformed: 26,
  fragment: 27,
  unsupportedL3: 28,
  unsupportedL4: 29,
  ctInvalid: 30,
  broadcast: 31,
  notForEndpoint: 32,
  icmpUnrelated: 33,
  ctLimit: 34,
  ctFull: 35,
  tunnelUnknownSource: 40,
  tunnelSpoofed: 41,
  noTunnel: 42,
} as const;
export type ReasonKey = keyof typeof REASON;

/** allowedNew -> ALLOWED_NEW, unsupportedL3 -> UNSUPPORTED_L3 */
export function upperSnake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}
/** allowedNew -> allowed-new */
function kebab(key: string): string {
  return upperSnake(key).toLowerCase().replace(/_/g, '-');
}
export const REASON_NAMES: Record<number, string> = Object.fromEntries(Object.entries(REASON).map(([k, v]) => [v, kebab(k)]));
export const NR_COUNTERS = 64;
export const FIRST_DROP_REASON = 16;
/** bastion_counter slots that count flow events rather than packets */
export const EVENT_COUNTER_REASONS: readonly number[] = [REASON.eventsLost, REASON.eventsSuppressed];

// ------------------------------------------------------- address helpers

/** '10.0.0.1' -> 4 bytes in network order. Throws on anything else. */
export function ipv4ToBytes(ip: string): Buffer {
  return writeIpv4(Buffer.alloc(4), ip, 0);
}

/** Writes '10.0.0.1' into b at off, in network order (no temporary buffer). Throws on anything else. */
export function writeIpv4(b: Buffer, ip: string, off: number): Buffer {
  const n = parseIpv4(ip);
  if (n === undefined) throw new Error(`not an IPv4 address: ${ip}`);
  b.writeUInt32BE(n, off);
  return b;
}

export function bytesToIpv4(b: Buffer, off = 0): string {
  return formatIpv4(b.readUInt32BE(off));
}

/** 'aa:bb:cc:dd:ee:ff' -> 6 bytes. */
export function macToBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`not a MAC address: ${mac}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function bytesToMac(b: Buffer, off = 0): string {
  return [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

// ------------------------------------------------------------ endpoints

export interface EndpointInfo {
  identity: number;
  ifindex: number;
  ipv4: string;
  flags: number;
  mac: string;
  gwMac: string;
}
export const ENDPOINT_INFO_SIZE = 28;

export function encodeEndpointInfo(e: EndpointInfo): Buffer {
  const b = Buffer.alloc(ENDPOINT_INFO_SIZE);
  b.writeUInt32LE(e.identity, 0);
  b.writeUInt32LE(e.ifindex, 4);
  writeIpv4(b, e.ipv4, 8);
  b.writeUInt32LE(e.flags, 12);
  macToBytes(e.mac).copy(b, 16);
  macToBytes(e.gwMac).copy(b, 22);
  return b;
}

export function decodeEndpointInfo(b: Buffer): EndpointInfo {
  return {
    identity: b.readUInt32LE(0),
    ifindex: b.readUInt32LE(4),
    ipv4: bytesToIpv4(b, 8),
    flags: b.readUInt32LE(12),
    mac: bytesToMac(b, 16),
    gwMac: bytesToMac(b, 22),
  };
}

export function encodeU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}
export function decodeU32(b: Buffer): number {
  return b.readUInt32LE(0);
}

/** Key of bastion_ep_ip: the IPv4 address in network order. */
export function encodeIpKey(ip: string): Buffer {
  return ipv4ToBytes(ip);
}
export function decodeIpKey(b: Buffer): string {
  return bytesToIpv4(b, 0);
}

// -------------------------------------------------------------- ipcache

export interface IpcacheKey {
  prefixlen: number;
  addr: string;
}
export interface IpcacheVal {
  identity: number;
  flags: number;
}
export const IPCACHE_KEY_SIZE = 8;
export const IPCACHE_VAL_SIZE = 8;
/** a host route: every bit of the address after prefixlen */
export const IPCACHE_PREFIX_HOST = 8 * (IPCACHE_KEY_SIZE - 4);

export function encodeIpcacheKey(k: IpcacheKey): Buffer {
  const b = Buffer.alloc(IPCACHE_KEY_SIZE);
  b.writeUInt32LE(k.prefixlen, 0);
  writeIpv4(b, k.addr, 4);
  return b;
}
export function decodeIpcacheKey(b: Buffer): IpcacheKey {
  return { prefixlen: b.readUInt32LE(0), addr: bytesToIpv4(b, 4) };
}
export function encodeIpcacheVal(v: IpcacheVal): Buffer {
  const b = Buffer.alloc(IPCACHE_VAL_SIZE);
  b.writeUInt32LE(v.identity, 0);
  b.writeUInt32LE(v.flags, 4);
  return b;
}
export function decodeIpcacheVal(b: Buffer): IpcacheVal {
  return { identity: b.readUInt32LE(0), flags: b.readUInt32LE(4) };
}

// --------------------------------------------------------------- policy

export interface PolicyKey {
  prefixlen: number;
  epId: number;
  peerId: number;
  direction: number; // DIR_*
  proto: number; // IPPROTO or PROTO_ANY
  dport: number; // host number; encoded big-endian
}
export interface PolicyVal {
  ruleId: number;
  flags: number;
}
export const POLICY_KEY_SIZE = 16;
export const POLICY_VAL_SIZE = 8;
/** LPM data bits after prefixlen: ep_id(32) peer_id(32) direction(8) proto(8) dport(16) */
export const POLICY_PREFIX_FULL = 8 * (POLICY_KEY_SIZE - 4);
/** every port of one protocol: all but dport */
export const POLICY_PREFIX_ANY_PORT = POLICY_PREFIX_FULL - 16;
/** every protocol and port: all but proto and dport */
export const POLICY_PREFIX_ANY_PROTO = POLICY_PREFIX_ANY_PORT - 8;

export function encodePolicyKey(k: PolicyKey): Buffer {
  const b = Buffer.alloc(POLICY_KEY_SIZE);
  b.writeUInt32LE(k.prefixlen, 0);
  b.writeUInt32LE(k.epId, 4);
  b.writeUInt32LE(k.peerId, 8);
  b.writeUInt8(k.direction, 12);
  b.writeUInt8(k.proto, 13);
  b.writeUInt16BE(k.dport, 14);
  return b;
}
export function decodePolicyKey(b: Buffer): PolicyKey {
  return {
    prefixlen: b.readUInt32LE(0),
    epId: b.readUInt32LE(4),
    peerId: b.readUInt32LE(8),
    direction: b.readUInt8(12),
    proto: b.readUInt8(13),
    dport: b.readUInt16BE(14),
  };
}
export function encodePolicyVal(v: PolicyVal): Buffer {
  const b = Buffer.alloc(POLICY_VAL_SIZE);
  b.writeUInt32LE(v.ruleId, 0);
  b.writeUInt32LE(v.flags, 4);
  return b;
}
/**
 * The same encodings as latin1 strings (one character per byte), for the
 * manager's slices: a slice is rebuilt on every change that touches its
 * endpoint and its entries are compared as strings, so making them as
 * strings skips two Buffers and two conversions per entry. Byte for byte
 * what encodePolicyKey, encodePolicyVal, encodeNeighKey and encodeU32 write
 * (test/unit/layout.test.ts).
 */
export function u32Latin1(n: number): string {
  return String.fromCharCode(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
}
export function encodePolicyKeyLatin1(k: PolicyKey): string {
  return (
    u32Latin1(k.prefixlen) +
    u32Latin1(k.epId) +
    u32Latin1(k.peerId) +
    String.fromCharCode(k.direction & 0xff, k.proto & 0xff, (k.dport >>> 8) & 0xff, k.dport & 0xff)
  );
}
export function encodePolicyValLatin1(v: PolicyVal): string {
  return u32Latin1(v.ruleId) + u32Latin1(v.flags);
}
export function encodeNeighKeyLatin1(k: NeighKey): string {
  return u32Latin1(k.epId) + u32Latin1(k.peerId);
}
export function decodePolicyVal(b: Buffer): PolicyVal {
  return { ruleId: b.readUInt32LE(0), flags: b.readUInt32LE(4) };
}

// ----------------------------------------------------------- neighbours

export interface NeighKey {
  epId: number;
  peerId: number;
}
export const NEIGH_KEY_SIZE = 8;
export function encodeNeighKey(k: NeighKey): Buffer {
  const b = Buffer.alloc(NEIGH_KEY_SIZE);
  b.writeUInt32LE(k.epId, 0);
  b.writeUInt32LE(k.peerId, 4);
  return b;
}
export function decodeNeighKey(b: Buffer): NeighKey {
  return { epId: b.readUInt32LE(0), peerId: b.readUInt32LE(4) };
}

// ------------------------------------------------------------ conntrack

export interface CtKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}
export interface CtEntry {
  expires: bigint;
  srcId: number;
  dstId: number;
  ruleId: number;
  flags: number;
  /** the local endpoint (identity) the entry is charged to (bastion_ct_use) */
  ownerId: number;
  /** bastion_config.policyEpoch when the policy last allowed the connection */
  policyEpoch?: number;
}
export const CT_KEY_SIZE = 16;
export const CT_ENTRY_SIZE = 32;

export function encodeCtKey(k: CtKey): Buffer {
  const b = Buffer.alloc(CT_KEY_SIZE);
  writeIpv4(b, k.saddr, 0);
  writeIpv4(b, k.daddr, 4);
  b.writeUInt16BE(k.sport, 8);
  b.writeUInt16BE(k.dport, 10);
  b.writeUInt8(k.proto, 12);
  return b;
}
export function decodeCtKey(b: Buffer): CtKey {
  return {
    saddr: bytesToIpv4(b, 0),
    daddr: bytesToIpv4(b, 4),
    sport: b.readUInt16BE(8),
    dport: b.readUInt16BE(10),
    proto: b.readUInt8(12),
  };
}
export function encodeCtEntry(e: CtEntry): Buffer {
  const b = Buffer.alloc(CT_ENTRY_SIZE);
  b.writeBigUInt64LE(e.expires, 0);
  b.writeUInt32LE(e.srcId, 8);
  b.writeUInt32LE(e.dstId, 12);
  b.writeUInt32LE(e.ruleId, 16);
  b.writeUInt32LE(e.flags, 20);
  b.writeUInt32LE(e.ownerId, 24);
  b.writeUInt32LE(e.policyEpoch ?? 0, 28);
  return b;
}
export function decodeCtEntry(b: Buffer): CtEntry {
  return {
    expires: b.readBigUInt64LE(0),
    srcId: b.readUInt32LE(8),
    dstId: b.readUInt32LE(12),
    ruleId: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    ownerId: b.readUInt32LE(24),
    policyEpoch: b.readUInt32LE(28),
  };
}

/** struct ct_use: conntrack entries charged to one endpoint (signed: a count, never below 0 in practice) */
export const CT_USE_SIZE = 8;
export function encodeCtUse(entries: bigint): Buffer {
  const b = Buffer.alloc(CT_USE_SIZE);
  b.writeBigInt64LE(entries, 0);
  return b;
}
export function decodeCtUse(b: Buffer): bigint {
  return b.readBigInt64LE(0);
}

// ------------------------------------------------------------ fragments

export interface FragKey {
  saddr: string;
  daddr: string;
  /** IP id, host number; encoded big-endian */
  id: number;
  proto: number;
  /** TRACE_*: the hook that saw the first fragment */
  trace: number;
  ifindex: number;
}
export interface FragVal {
  expires: bigint;
  sport: number;
  dport: number;
  verdict: number;
}
export const FRAG_KEY_SIZE = 16;
export const FRAG_VAL_SIZE = 16;
export function encodeFragKey(k: FragKey): Buffer {
  const b = Buffer.alloc(FRAG_KEY_SIZE);
  writeIpv4(b, k.saddr, 0);
  writeIpv4(b, k.daddr, 4);
  b.writeUInt16BE(k.id, 8);
  b.writeUInt8(k.proto, 10);
  b.writeUInt8(k.trace, 11);
  b.writeUInt32LE(k.ifindex, 12);
  return b;
}
export function decodeFragKey(b: Buffer): FragKey {
  return { saddr: bytesToIpv4(b, 0), daddr: bytesToIpv4(b, 4), id: b.readUInt16BE(8), proto: b.readUInt8(10), trace: b.readUInt8(11), ifindex: b.readUInt32LE(12) };
}
export function encodeFragVal(v: FragVal): Buffer {
  const b = Buffer.alloc(FRAG_VAL_SIZE);
  b.writeBigUInt64LE(v.expires, 0);
  b.writeUInt16BE(v.sport, 8);
  b.writeUInt16BE(v.dport, 10);
  b.writeUInt32LE(v.verdict, 12);
  return b;
}
export function decodeFragVal(b: Buffer): FragVal {
  return { expires: b.readBigUInt64LE(0), sport: b.readUInt16BE(8), dport: b.readUInt16BE(10), verdict: b.readUInt32LE(12) };
}

// --------------------------------------------------------------- events

export interface FlowEvent {
  tsNs: bigint;
  srcId: number;
  dstId: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  verdict: number;
  reason: number;
  trace: number;
  ifindex: number;
  ruleId: number;
  pktLen: number;
  ethertype: number;
  /** events of this (endpoint, verdict, reason) the rate limit held back before this one */
  suppressed: number;
  /**
   * Not from the ring buffer: the agent's summary of a burst's tail (what the
   * rate limit held back and no later event reported), with the last
   * held-back packet's addresses; `suppressed` is how many, that one included.
   */
  summary?: boolean;
  /** from_container with a local receiver: the receiver's ingress rule */
  ingressRuleId: number;
  /** the packet's TCP flags */
  tcpFlags: number;
  /** FLOW_F_* */
  flags: number;
  /** from_overlay: the packet's outer source address (the sending node's underlay); '0.0.0.0' otherwise */
  tunnelSaddr: string;
  /**
   * Not from the ring buffer: the agent's report of a bastion_flow_sum key
   * (connections the kernel counted without an event).
   */
  flowSummary?: { count: number; firstNs: bigint };
}
export const FLOW_EVENT_SIZE = 64;

export function encodeFlowEvent(e: FlowEvent): Buffer {
  const b = Buffer.alloc(FLOW_EVENT_SIZE);
  b.writeBigUInt64LE(e.tsNs, 0);
  b.writeUInt32LE(e.srcId, 8);
  b.writeUInt32LE(e.dstId, 12);
  writeIpv4(b, e.saddr, 16);
  writeIpv4(b, e.daddr, 20);
  b.writeUInt16BE(e.sport, 24);
  b.writeUInt16BE(e.dport, 26);
  b.writeUInt8(e.proto, 28);
  b.writeUInt8(e.verdict, 29);
  b.writeUInt8(e.reason, 30);
  b.writeUInt8(e.trace, 31);
  b.writeUInt32LE(e.ifindex, 32);
  b.writeUInt32LE(e.ruleId, 36);
  b.writeUInt16LE(e.pktLen, 40);
  b.writeUInt16BE(e.ethertype, 42);
  b.writeUInt32LE(e.suppressed, 44);
  b.writeUInt32LE(e.ingressRuleId, 48);
  b.writeUInt8(e.tcpFlags, 52);
  b.writeUInt8(e.flags, 53);
  writeIpv4(b, e.tunnelSaddr, 56);
  return b;
}
export function decodeFlowEvent(b: Buffer): FlowEvent {
  return {
    tsNs: b.readBigUInt64LE(0),
    srcId: b.readUInt32LE(8),
    dstId: b.readUInt32LE(12),
    saddr: bytesToIpv4(b, 16),
    daddr: bytesToIpv4(b, 20),
    sport: b.readUInt16BE(24),
    dport: b.readUInt16BE(26),
    proto: b.readUInt8(28),
    verdict: b.readUInt8(29),
    reason: b.readUInt8(30),
    trace: b.readUInt8(31),
    ifindex: b.readUInt32LE(32),
    ruleId: b.readUInt32LE(36),
    pktLen: b.readUInt16LE(40),
    ethertype: b.readUInt16BE(42),
    suppressed: b.readUInt32LE(44),
    ingressRuleId: b.readUInt32LE(48),
    tcpFlags: b.readUInt8(52),
    flags: b.readUInt8(53),
    tunnelSaddr: bytesToIpv4(b, 56),
  };
}

// ------------------------------------------------- allowed-flow summaries

export interface FlowSumKey {
  srcId: number;
  dstId: number;
  dport: number;
  proto: number;
  flags: number;
}
export interface FlowSum {
  firstNs: bigint;
  lastNs: bigint;
  count: bigint;
  saddr: string;
  daddr: string;
  sport: number;
  reason: number;
  trace: number;
  ifindex: number;
  ruleId: number;
  ingressRuleId: number;
}
export interface FlowSumSeen {
  firstNs: bigint;
  count: bigint;
  lastNs: bigint;
}
export const FLOW_SUM_KEY_SIZE = 12;
export const FLOW_SUM_SIZE = 48;
export const FLOW_SUM_SEEN_SIZE = 24;

export function encodeFlowSumKey(k: FlowSumKey): Buffer {
  const b = Buffer.alloc(FLOW_SUM_KEY_SIZE);
  b.writeUInt32LE(k.srcId, 0);
  b.writeUInt32LE(k.dstId, 4);
  b.writeUInt16BE(k.dport, 8);
  b.writeUInt8(k.proto, 10);
  b.writeUInt8(k.flags, 11);
  return b;
}
export function decodeFlowSumKey(b: Buffer): FlowSumKey {
  return { srcId: b.readUInt32LE(0), dstId: b.readUInt32LE(4), dport: b.readUInt16BE(8), proto: b.readUInt8(10), flags: b.readUInt8(11) };
}
export function encodeFlowSum(v: FlowSum): Buffer {
  const b = Buffer.alloc(FLOW_SUM_SIZE);
  b.writeBigUInt64LE(v.firstNs, 0);
  b.writeBigUInt64LE(v.lastNs, 8);
  b.writeBigUInt64LE(v.count, 16);
  ipv4ToBytes(v.saddr).copy(b, 24);
  ipv4ToBytes(v.daddr).copy(b, 28);
  b.writeUInt16BE(v.sport, 32);
  b.writeUInt8(v.reason, 34);
  b.writeUInt8(v.trace, 35);
  b.writeUInt32LE(v.ifindex, 36);
  b.writeUInt32LE(v.ruleId, 40);
  b.writeUInt32LE(v.ingressRuleId, 44);
  return b;
}
export function decodeFlowSum(b: Buffer): FlowSum {
  return {
    firstNs: b.readBigUInt64LE(0),
    lastNs: b.readBigUInt64LE(8),
    count: b.readBigUInt64LE(16),
    saddr: bytesToIpv4(b, 24),
    daddr: bytesToIpv4(b, 28),
    sport: b.readUInt16BE(32),
    reason: b.readUInt8(34),
    trace: b.readUInt8(35),
    ifindex: b.readUInt32LE(36),
    ruleId: b.readUInt32LE(40),
    ingressRuleId: b.readUInt32LE(44),
  };
}
export function encodeFlowSumSeen(v: FlowSumSeen): Buffer {
  const b = Buffer.alloc(FLOW_SUM_SEEN_SIZE);
  b.writeBigUInt64LE(v.firstNs, 0);
  b.writeBigUInt64LE(v.count, 8);
  b.writeBigUInt64LE(v.lastNs, 16);
  return b;
}
export function decodeFlowSumSeen(b: Buffer): FlowSumSeen {
  return { firstNs: b.readBigUInt64LE(0), count: b.readBigUInt64LE(8), lastNs: b.readBigUInt64LE(16) };
}

// ----------------------------------------------------- event rate limit

export interface EventRlKey {
  ifindex: number;
  verdict: number;
  reason: number;
}
export interface EventRl {
  windowStart: bigint;
  emitted: number;
  suppressed: number;
  srcId: number;
  dstId: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  trace: number;
  ethertype: number;
}
export const EVENT_RL_KEY_SIZE = 8;
export const EVENT_RL_SIZE = 40;
export function encodeEventRlKey(k: EventRlKey): Buffer {
  const b = Buffer.alloc(EVENT_RL_KEY_SIZE);
  b.writeUInt32LE(k.ifindex, 0);
  b.writeUInt8(k.verdict, 4);
  b.writeUInt8(k.reason, 5);
  return b;
}
export function decodeEventRlKey(b: Buffer): EventRlKey {
  return { ifindex: b.readUInt32LE(0), verdict: b.readUInt8(4), reason: b.readUInt8(5) };
}
export function encodeEventRl(v: EventRl): Buffer {
  const b = Buffer.alloc(EVENT_RL_SIZE);
  b.writeBigUInt64LE(v.windowStart, 0);
  b.writeUInt32LE(v.emitted, 8);
  b.writeUInt32LE(v.suppressed, 12);
  b.writeUInt32LE(v.srcId, 16);
  b.writeUInt32LE(v.dstId, 20);
  writeIpv4(b, v.saddr, 24);
  writeIpv4(b, v.daddr, 28);
  b.writeUInt16BE(v.sport, 32);
  b.writeUInt16BE(v.dport, 34);
  b.writeUInt8(v.proto, 36);
  b.writeUInt8(v.trace, 37);
  b.writeUInt16BE(v.ethertype, 38);
  return b;
}
export function decodeEventRl(b: Buffer): EventRl {
  return {
    windowStart: b.readBigUInt64LE(0),
    emitted: b.readUInt32LE(8),
    suppressed: b.readUInt32LE(12),
    srcId: b.readUInt32LE(16),
    dstId: b.readUInt32LE(20),
    saddr: bytesToIpv4(b, 24),
    daddr: bytesToIpv4(b, 28),
    sport: b.readUInt16BE(32),
    dport: b.readUInt16BE(34),
    proto: b.readUInt8(36),
    trace: b.readUInt8(37),
    ethertype: b.readUInt16BE(38),
  };
}

// ------------------------------------------------------------- counters

export interface Counter {
  packets: bigint;
  bytes: bigint;
}
export const COUNTER_SIZE = 16;
export function decodeCounter(b: Buffer, off = 0): Counter {
  return { packets: b.readBigUInt64LE(off), bytes: b.readBigUInt64LE(off + 8) };
}

export interface EpStats {
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
  drops: bigint;
}
export const EP_STATS_SIZE = 40;
export function decodeEpStats(b: Buffer, off = 0): EpStats {
  return {
    txPackets: b.readBigUInt64LE(off),
    txBytes: b.readBigUInt64LE(off + 8),
    rxPackets: b.readBigUInt64LE(off + 16),
    rxBytes: b.readBigUInt64LE(off + 24),
    drops: b.readBigUInt64LE(off + 32),
  };
}
export function encodeEpStats(s: EpStats): Buffer {
  const b = Buffer.alloc(EP_STATS_SIZE);
  b.writeBigUInt64LE(s.txPackets, 0);
  b.writeBigUInt64LE(s.txBytes, 8);
  b.writeBigUInt64LE(s.rxPackets, 16);
  b.writeBigUInt64LE(s.rxBytes, 24);
  b.writeBigUInt64LE(s.drops, 32);
  return b;
}

// --------------------------------------------------------------- config

export interface DatapathConfig {
  mode: number;
  flags: number;
  ctTcpLifetimeS: number;
  ctOtherLifetimeS: number;
  /** conntrack entries one endpoint may hold (0: CT_DEFAULT_PER_ENDPOINT) */
  ctPerEndpoint?: number;
  /** events per (endpoint, verdict, reason) and second (0: EVENTS_DEFAULT_PER_SEC) */
  eventsPerSec?: number;
  /** bumped after every change the manager writes: established connections of an older epoch are judged again */
  policyEpoch?: number;
}
export const CONFIG_SIZE = 28;
export function encodeConfig(c: DatapathConfig): Buffer {
  const b = Buffer.alloc(CONFIG_SIZE);
  b.writeUInt32LE(c.mode, 0);
  b.writeUInt32LE(c.flags, 4);
  b.writeUInt32LE(c.ctTcpLifetimeS, 8);
  b.writeUInt32LE(c.ctOtherLifetimeS, 12);
  b.writeUInt32LE(c.ctPerEndpoint ?? 0, 16);
  b.writeUInt32LE(c.eventsPerSec ?? 0, 20);
  b.writeUInt32LE(c.policyEpoch ?? 0, 24);
  return b;
}
export function decodeConfig(b: Buffer): DatapathConfig {
  return {
    mode: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    ctTcpLifetimeS: b.readUInt32LE(8),
    ctOtherLifetimeS: b.readUInt32LE(12),
    ctPerEndpoint: b.readUInt32LE(16),
    eventsPerSec: b.readUInt32LE(20),
    policyEpoch: b.readUInt32LE(24),
  };
}

export interface ControlState {
  nextIdentity: bigint;
  generation: bigint;
}
export const STATE_SIZE = 16;
export function encodeState(s: ControlState): Buffer {
  const b = Buffer.alloc(STATE_SIZE);
  b.writeBigUInt64LE(s.nextIdentity, 0);
  b.writeBigUInt64LE(s.generation, 8);
  return b;
}
export function decodeState(b: Buffer): ControlState {
  return { nextIdentity: b.readBigUInt64LE(0), generation: b.readBigUInt64LE(8) };
}

// -------------------------------------------------------------- cluster

/** struct remote_endpoint: another node's endpoint, a peer of a local one (bastion_remote, by IPv4). */
export interface RemoteEndpointInfo {
  identity: number;
  nodeIpv4: string;
  mac: string;
  flags: number;
}
export const REMOTE_ENDPOINT_SIZE = 16;

export function encodeRemoteEndpoint(r: RemoteEndpointInfo): Buffer {
  const b = Buffer.alloc(REMOTE_ENDPOINT_SIZE);
  b.writeUInt32LE(r.identity, 0);
  ipv4ToBytes(r.nodeIpv4).copy(b, 4);
  macToBytes(r.mac).copy(b, 8);
  b.writeUInt16LE(r.flags, 14);
  return b;
}
export function decodeRemoteEndpoint(b: Buffer): RemoteEndpointInfo {
  return { identity: b.readUInt32LE(0), nodeIpv4: bytesToIpv4(b, 4), mac: bytesToMac(b, 8), flags: b.readUInt16LE(14) };
}

/**
 * struct tunnel_info: this node's VXLAN device (bastion_tunnel, one entry),
 * and the underlay interface the senders build VXLAN packets for (0: they
 * hand packets to the device instead).
 */
export interface TunnelInfo {
  ifindex: number;
  localIpv4: string;
  /** the underlay interface; 0 or absent: through the VXLAN device */
  underlayIfindex?: number;
  /** the VXLAN UDP port (the device's); 0 or absent: through the device */
  port?: number;
  flags: number;
}
export const TUNNEL_INFO_SIZE = 16;

export function encodeTunnelInfo(t: TunnelInfo): Buffer {
  const b = Buffer.alloc(TUNNEL_INFO_SIZE);
  b.writeUInt32LE(t.ifindex, 0);
  ipv4ToBytes(t.localIpv4).copy(b, 4);
  b.writeUInt32LE(t.underlayIfindex ?? 0, 8);
  b.writeUInt16BE(t.port ?? 0, 12);
  b.writeUInt16LE(t.flags, 14);
  return b;
}
export function decodeTunnelInfo(b: Buffer): TunnelInfo {
  return { ifindex: b.readUInt32LE(0), localIpv4: bytesToIpv4(b, 4), underlayIfindex: b.readUInt32LE(8), port: b.readUInt16BE(12), flags: b.readUInt16LE(14) };
}
