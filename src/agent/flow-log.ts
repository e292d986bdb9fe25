/**
 * Flow events from the datapath, turned into records a person can read:
 * container names instead of identities, rule names instead of numbers,
 * wall-clock time instead of the kernel's monotonic clock.
 */
import { EventEmitter } from 'node:events';
import { REASON_NAMES, TRACE_NAMES, VERDICT_NAMES, type FlowEvent } from '../datapath/layout.js';

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
  return rec;
}

/** One line, Hubble-style: "web:43512 -> api:8080 tcp DROPPED (policy-denied)". */
export function formatFlowLine(r: FlowRecord): string {
  const end = (p: FlowPeer) => `${p.name ?? p.ip}${p.name ? `(${p.ip})` : ''}${p.port !== undefined ? `:${p.port}` : ''}`;
  const rule = r.rule ? ` rule=${r.rule}` : '';
  return `${r.time} ${end(r.src)} -> ${end(r.dst)} ${r.protocol} ${r.verdict} (${r.reason})${rule}`;
}

/**
 * The most recent flows, for the API and the UI; emits 'flow' for followers.
 * A fixed ring: a push is O(1) whatever the flow rate (at tens of thousands
 * of new connections per second the daemon shares the CPU with them).
 */
export class FlowStore extends EventEmitter {
  private readonly ring: (FlowRecord | undefined)[];
  private next = 0;
  private total = 0;

  constructor(private readonly capacity = 10000) {
    super();
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`flow store capacity must be a positive integer, got ${capacity}`);
    this.ring = new Array<FlowRecord | undefined>(capacity);
    this.setMaxListeners(100);
  }

  push(r: FlowRecord): void {
    this.ring[this.next] = r;
    this.next = (this.next + 1) % this.capacity;
    this.total++;
    if (this.listenerCount('flow') > 0) this.emit('flow', r);
  }

  /** The last `limit` records (after filtering), oldest first. */
  recent(limit = 100, filter?: (r: FlowRecord) => boolean): FlowRecord[] {
    const out: FlowRecord[] = [];
    const held = Math.min(this.total, this.capacity);
    for (let i = 1; i <= held && out.length < limit; i++) {
      const r = this.ring[(this.next - i + this.capacity) % this.capacity]!;
      if (!filter || filter(r)) out.push(r);
    }
    return out.reverse();
  }

  get count(): number {
    return this.total;
  }
}
