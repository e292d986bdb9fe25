/**
 * Flow events from the datapath, turned into records a person can read:
 * container names instead of identities, rule names instead of numbers,
 * wall-clock time instead of the kernel's monotonic clock.
 */
import { EventEmitter } from 'node:events';
import { REASON_NAMES, TRACE_NAMES, VERDICT_NAMES, type FlowEvent } from '../datapath/layout.js';
import { formatIpv4, parseIpv4 } from '../net/ip.js';

export interface FlowPeer {
  identity: number;
  /** container name, "host", "world", a CIDR, or undefined when unknown */
  name?: string;
  ip: string;
  port?: number;
}

export interface FlowRecord {
  time: string;
  verdict: string;
  reason: string;
  /** from-container: seen leaving the container; to-container: entering it */
  trace: string;
  protocol: string;
  src: FlowPeer;
  dst: FlowPeer;
  /** the container whose stack decided */
  endpoint?: string;
  rule?: string;
  bytes: number;
  /** events of this kind (endpoint, verdict, reason) the datapath's rate limit held back just before this one */
  suppressed?: number;
  /** a summary of held-back events (the tail of a burst): `suppressed` of them, the last one's addresses shown */
  summary?: boolean;
}

export interface FlowNames {
  identityName(identity: number): string | undefined;
  ruleName(ruleNumber: number): string | undefined;
  endpointName(ifindex: number): string | undefined;
}

const PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };
const ETH_P_ARP = 0x0806;

/** CLOCK_MONOTONIC (bpf_ktime_get_ns) to wall-clock milliseconds. */
export function monotonicToWallMs(tsNs: bigint): number {
  const nowMono = process.hrtime.bigint();
  return Date.now() - Number(nowMono - tsNs) / 1e6;
}

export function describeFlow(ev: FlowEvent, names: FlowNames, wallMs = monotonicToWallMs(ev.tsNs)): FlowRecord {
  const isArp = ev.ethertype === ETH_P_ARP;
  const protocol = isArp ? 'arp' : (PROTOCOLS[ev.proto] ?? (ev.proto ? `ip-proto-${ev.proto}` : `ethertype-0x${ev.ethertype.toString(16).padStart(4, '0')}`));
  const hasPorts = ev.proto === 6 || ev.proto === 17 || ev.proto === 132;
  const rec: FlowRecord = {
    time: new Date(wallMs).toISOString(),
    verdict: VERDICT_NAMES[ev.verdict] ?? String(ev.verdict),
    reason: REASON_NAMES[ev.reason] ?? String(ev.reason),
    trace: TRACE_NAMES[ev.trace] ?? String(ev.trace),
    protocol,
    src: { identity: ev.srcId, name: names.identityName(ev.srcId), ip: ev.saddr, ...(hasPorts ? { port: ev.sport } : {}) },
    dst: { identity: ev.dstId, name: names.identityName(ev.dstId), ip: ev.daddr, ...(hasPorts ? { port: ev.dport } : {}) },
    endpoint: names.endpointName(ev.ifindex),
    bytes: ev.pktLen,
  };
  if (ev.ruleId) rec.rule = names.ruleName(ev.ruleId) ?? `#${ev.ruleId}`;
  if (ev.suppressed) rec.suppressed = ev.suppressed;
  if (ev.summary) rec.summary = true;
  return rec;
}

/** One line, Hubble-style: "web:43512 -> api:8080 tcp DROPPED (policy-denied)". */
export function formatFlowLine(r: FlowRecord): string {
  const end = (p: FlowPeer) => `${p.name ?? p.ip}${p.name ? `(${p.ip})` : ''}${p.port !== undefined ? `:${p.port}` : ''}`;
  const rule = r.rule ? ` rule=${r.rule}` : '';
  const held = r.summary
    ? ` (summary: ${r.suppressed} like it held back by the rate limit, the last one shown)`
    : r.suppressed
      ? ` (+${r.suppressed} like it before, not reported one by one)`
      : '';
  return `${r.time} ${end(r.src)} -> ${end(r.dst)} ${r.protocol} ${r.verdict} (${r.reason})${rule}${held}`;
}

/** presence of a record's optional parts, one bit each */
const HAS_SRC_NAME = 1;
const HAS_DST_NAME = 2;
const HAS_SRC_PORT = 4;
const HAS_DST_PORT = 8;
const HAS_ENDPOINT = 16;
const HAS_RULE = 32;
const IS_SUMMARY = 64;

/**
 * The most recent flows, for the API and the UI; emits 'flow' for followers.
 * A fixed ring: a push is O(1) whatever the flow rate (at tens of thousands
 * of new connections per second the daemon shares the CPU with them).
 *
 * The ring holds no record objects: each record's numbers go into typed
 * columns and its strings (names, verdicts: strings the daemon holds anyway)
 * into reference columns, and records are rebuilt when read. At 15,000 new
 * connections per second a record lives less than a second in a ring of
 * 10,000, long enough for V8 to move it to the old generation and short
 * enough to die there: stored as objects, that was 5 MB/s of old-generation
 * garbage, a heap that grew by 40 MB during a load test, and major
 * collections on the event path.
 */
export class FlowStore extends EventEmitter {
  private next = 0;
  private total = 0;
  private readonly timeMs: Float64Array;
  private readonly ids: Uint32Array;
  private readonly addrs: Uint32Array;
  private readonly ports: Uint16Array;
  private readonly bytes: Float64Array;
  private readonly suppressed: Uint32Array;
  private readonly flags: Uint8Array;
  /** verdict, reason, trace, protocol, src name, dst name, endpoint, rule: 8 per record */
  private readonly text: Array<string | undefined>;
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
    this.suppressed = new Uint32Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.text = new Array<string | undefined>(capacity * 8).fill(undefined);
    this.setMaxListeners(100);
  }

  push(r: FlowRecord): void {
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
    this.bytes[i] = r.bytes;
    this.suppressed[i] = r.suppressed ?? 0;
    this.flags[i] =
      (r.summary ? IS_SUMMARY : 0) |
      ('name' in r.src ? HAS_SRC_NAME : 0) |
      ('name' in r.dst ? HAS_DST_NAME : 0) |
      (r.src.port !== undefined ? HAS_SRC_PORT : 0) |
      (r.dst.port !== undefined ? HAS_DST_PORT : 0) |
      ('endpoint' in r ? HAS_ENDPOINT : 0) |
      (r.rule !== undefined ? HAS_RULE : 0);
    const t = 8 * i;
    this.text[t] = r.verdict;
    this.text[t + 1] = r.reason;
    this.text[t + 2] = r.trace;
    this.text[t + 3] = r.protocol;
    this.text[t + 4] = r.src.name;
    this.text[t + 5] = r.dst.name;
    this.text[t + 6] = r.endpoint;
    this.text[t + 7] = r.rule;
    this.next = (i + 1) % this.capacity;
    this.total++;
    if (this.listenerCount('flow') > 0) this.emit('flow', r);
  }

  private record(i: number): FlowRecord {
    const f = this.flags[i]!;
    const t = 8 * i;
    const odd = this.oddAddrs.get(i);
    const peer = (k: 0 | 1, hasName: number, hasPort: number): FlowPeer => ({
      identity: this.ids[2 * i + k]!,
      ...(f & hasName ? { name: this.text[t + 4 + k] } : {}),
      ip: odd ? odd[k] : formatIpv4(this.addrs[2 * i + k]!),
      ...(f & hasPort ? { port: this.ports[2 * i + k] } : {}),
    });
    const r: FlowRecord = {
      time: new Date(this.timeMs[i]!).toISOString(),
      verdict: this.text[t]!,
      reason: this.text[t + 1]!,
      trace: this.text[t + 2]!,
      protocol: this.text[t + 3]!,
      src: peer(0, HAS_SRC_NAME, HAS_SRC_PORT),
      dst: peer(1, HAS_DST_NAME, HAS_DST_PORT),
      ...(f & HAS_ENDPOINT ? { endpoint: this.text[t + 6] } : {}),
      bytes: this.bytes[i]!,
    };
    if (f & HAS_RULE) r.rule = this.text[t + 7];
    if (this.suppressed[i]) r.suppressed = this.suppressed[i];
    if (f & IS_SUMMARY) r.summary = true;
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

  get count(): number {
    return this.total;
  }
}
