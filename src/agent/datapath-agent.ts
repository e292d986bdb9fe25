/**
 * The node's datapath, driven through libbpf: loads the two program objects
 * (sharing maps pinned by name under the pin path), attaches stacks, writes
 * map deltas, reads flow events from the ring buffer. No shelling out.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { loadObject, type BpfObject } from '../datapath/bpf-object.js';
import { openBastionMaps, type BastionMaps, type BpfMap } from '../datapath/bpf-map.js';
import { BPF_EXIST, BPF_NOEXIST } from '../datapath/libbpf.js';
import { ensurePinRoot } from '../datapath/bpffs.js';
import { RingBufReader } from '../datapath/ringbuf.js';
import { testRun, testRunAsync } from '../datapath/prog-test-run.js';
import {
  MAP_NAMES,
  NR_COUNTERS,
  CT_DEFAULT_PER_ENDPOINT,
  REASON,
  VERDICT,
  FLOW_SUM_F_AUDIT,
  EVENTS_DEFAULT_PER_SEC,
  decodeCtKey,
  decodeCtEntry,
  encodeCtEntry,
  decodeFlowEvent,
  decodeFlowSum,
  decodeFlowSumKey,
  decodeFlowSumSeen,
  type Counter,
  type EndpointInfo,
  type EpStats,
  type FlowEvent,
  type FlowSumSeen,
  type IpcacheKey,
  type IpcacheVal,
  type TunnelInfo,
} from '../datapath/layout.js';
import type { ConntrackUsage, DatapathPort, MapChunk, StackState } from '../manager/ports.js';
import type { MapOp } from '../manager/entries.js';
import { Ownership, attachStack, detachStack, stackState } from './stack.js';
import { bindOwner, openOwnerMap } from './owner.js';
import { progInfo } from '../datapath/libbpf.js';
import { attachTunnelProgram, attachUnderlayProgram, tunnelProgramId, type UnderlayAttach } from './tunnel.js';

/** how often the tail of event bursts is looked for (summarizeHeldBack) */
const SUMMARY_INTERVAL_MS = 2000;
/** how often the allowed flows the kernel counted are read (summarizeFlows) */
export const FLOW_SUMMARY_INTERVAL_MS = 5000;

const BPF_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bpf');

/** Keys of the allowed-flow summary read per batch (each may become a flow record and a write to bastion_flow_seen: 15-20 us a key). */
const FLOW_SUMMARY_BATCH = 64;

/** Entries read from the kernel per batch by readMap (about 1.5 ms of an LPM trie walk). */
const READ_BATCH = 1024;

export class DatapathAgent implements DatapathPort {
  private readonly listeners: Array<(ev: FlowEvent) => void> = [];
  private reader?: RingBufReader;
  /** whose a stack is: this instance's programs (as loaded now) and maps */
  readonly ownership: Ownership;

  constructor(
    readonly pinPath: string,
    private readonly objects: BpfObject[],
    private readonly fds: { fromContainer: number; toContainer: number; ctGc: number; fromOverlay: number; fromUnderlay: number },
    readonly maps: BastionMaps,
    private readonly owner?: BpfMap,
  ) {
    const ids = new Set([fds.fromContainer, fds.toContainer, fds.fromOverlay, fds.fromUnderlay].map((fd) => progInfo(fd).id));
    this.ownership = new Ownership([maps.endpoints.raw.id, maps.endpointsByIp.raw.id], ids);
  }

  /** conntrack entries reclaimed by ct_gc since start */
  ctCollected = 0;
  private gcTimer?: NodeJS.Timeout;

  /**
   * Reclaim expired conntrack entries every `intervalMs` (the table is a
   * plain hash: nothing else deletes an entry nobody looks up again). One
   * run walks the table in the kernel: 1.8 ms empty, about 7 ms full
   * (262,144 entries), measured with BPF_PROG_TEST_RUN's duration. It runs
   * on a libuv worker thread: on the event loop, a policy change that came
   * in meanwhile waited for it (the benchmark's update p99 at 5,000
   * containers). One run at a time.
   */
  startConntrackCollector(intervalMs = 5000, onError?: (err: Error) => void): void {
    if (this.gcTimer) return;
    let running = false;
    this.gcTimer = setInterval(() => {
      if (running) return;
      running = true;
      testRunAsync(this.fds.ctGc, Buffer.alloc(64)).then(
        (n) => {
          running = false;
          this.ctCollected += n;
        },
        (err: unknown) => {
          running = false;
          onError?.(err as Error);
        },
      );
    }, intervalMs);
    this.gcTimer.unref();
  }

  private map(name: string): BpfMap {
    const m = this.maps.all[name];
    if (!m) throw new Error(`map ${name} not open`);
    return m;
  }

  attach(hostIfindex: number): void {
    // The stats entry doubles as the record of where we attached (see
    // cleanup.ts); it goes in before the programs do.
    const stats = this.map(MAP_NAMES.epStats);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(hostIfindex);
    const fresh = !stats.lookupPerCpu(key);
    if (fresh) stats.updatePerCpu(key, Buffer.alloc(stats.valueSize), BPF_NOEXIST);
    try {
      attachStack(hostIfindex, this.fds, this.ownership);
    } catch (err) {
      // nothing attached: no record of an attachment either
      if (fresh) stats.delete(key);
      throw err;
    }
  }

  detach(hostIfindex: number): void {
    detachStack(hostIfindex, this.ownership);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(hostIfindex);
    this.map(MAP_NAMES.epStats).delete(key);
  }

  stackState(hostIfindex: number): StackState {
    return stackState(hostIfindex, this.ownership);
  }

  async *readMap(map: string): AsyncGenerator<MapChunk> {
    const m = this.map(map);
    // per-CPU values are the datapath's counters: only their keys are compared
    const valueSize = m.perCpu ? 0 : m.valueSize;
    // the batch buffers as the kernel filled them: no copy, and the same two for every batch
    // (MapChunk: valid until the next one is asked for)
    for await (const b of m.batches(READ_BATCH, { reuse: true })) yield { keySize: m.keySize, valueSize, count: b.count, keys: b.keys, values: m.perCpu ? Buffer.alloc(0) : b.values };
  }

  /**
   * from_overlay on the VXLAN device's ingress (replace: never two; never
   * over another instance's, ForeignStackError). The tunnel entry the
   * senders read (bastion_tunnel) is the manager's to write (Manager.setTunnel),
   * so drift checks cover it.
   */
  attachTunnel(ifindex: number): void {
    attachTunnelProgram(ifindex, this.fds.fromOverlay, this.ownership);
  }

  /** Is this instance's from_overlay (the one loaded now) on the device's ingress? */
  tunnelAttached(ifindex: number): boolean {
    return tunnelProgramId(ifindex, this.ownership) !== undefined;
  }

  /**
   * from_underlay on the underlay interface's ingress, unless another tool's
   * or instance's filter holds Bastion's slot there (tunnel.ts).
   */
  attachUnderlay(ifindex: number): UnderlayAttach {
    return attachUnderlayProgram(ifindex, this.fds.fromUnderlay, this.ownership);
  }

  /** Is this instance's from_underlay (the one loaded now) on the underlay's ingress? */
  underlayAttached(ifindex: number): boolean {
    return tunnelProgramId(ifindex, this.ownership) !== undefined;
  }

  tunnel(): { info: TunnelInfo; programId?: number } {
    const info = this.maps.tunnel.get();
    const programId = info.ifindex ? tunnelProgramId(info.ifindex, this.ownership) : undefined;
    return { info, ...(programId !== undefined ? { programId } : {}) };
  }

  apply(ops: MapOp[]): void {
    for (const op of ops) {
      const m = this.map(op.map);
      if (op.op === 'delete') {
        m.delete(op.key);
      } else if (m.perCpu) {
        // Per-CPU stats: create once, never overwrite live counters.
        if (!m.lookupPerCpu(op.key)) m.updatePerCpu(op.key, op.value);
      } else {
        m.update(op.key, op.value);
      }
    }
  }

  /**
   * Forget every tracked connection to or from these addresses. The entries
   * are marked expired here and deleted by ct_gc in the kernel, which gives
   * each one's charge back to its endpoint (a delete from here could not
   * update the per-endpoint counts atomically); then the counters of the
   * identities that are gone (`owners`) are removed.
   */
  flushConntrack(ips: string[], owners: number[] = []): number {
    const want = new Set(ips);
    const ct = this.map(MAP_NAMES.ct);
    // read whole, a batch per system call (the table holds up to 262,144 entries)
    const doomed: Array<[Buffer, Buffer]> = [];
    for (const [k, v] of ct.entries()) {
      const t = decodeCtKey(k);
      if (want.has(t.saddr) || want.has(t.daddr)) doomed.push([k, v]);
    }
    for (const [k, v] of doomed) {
      try {
        ct.update(k, encodeCtEntry({ ...decodeCtEntry(v), expires: 0n }), BPF_EXIST);
      } catch {
        // deleted meanwhile
      }
    }
    if (doomed.length) this.collectConntrack();
    for (const id of owners) this.maps.ctUse.delete(id);
    return doomed.length;
  }

  /** Run ct_gc once: expired conntrack entries are deleted and uncharged; returns how many. */
  collectConntrack(): number {
    const n = testRun(this.fds.ctGc, Buffer.alloc(64)).retval;
    this.ctCollected += n;
    return n;
  }

  conntrackUsage(): ConntrackUsage {
    const byIdentity = new Map<number, number>();
    let entries = 0;
    for (const [id, n] of this.maps.ctUse.entries()) {
      const v = Number(n);
      byIdentity.set(id, v);
      entries += v;
    }
    const cfg = this.maps.config.get();
    return {
      entries,
      capacity: this.maps.ct.raw.maxEntries,
      perEndpointLimit: cfg.ctPerEndpoint || CT_DEFAULT_PER_ENDPOINT,
      byIdentity,
      collected: this.ctCollected,
      eventsPerSec: cfg.eventsPerSec || EVENTS_DEFAULT_PER_SEC,
    };
  }

  counters(): Map<number, Counter> {
    const out = new Map<number, Counter>();
    this.maps.counters.all().forEach((c, i) => {
      if (i < NR_COUNTERS) out.set(i, c);
    });
    return out;
  }

  endpointStats(hostIfindex: number): EpStats | undefined {
    return this.maps.epStats.get(hostIfindex);
  }

  existingEndpoints(): EndpointInfo[] {
    return [...this.maps.endpoints.entries()].map(([, v]) => v);
  }

  existingIpcache(): Array<[IpcacheKey, IpcacheVal]> {
    return [...this.maps.ipcache.entries()];
  }

  attachedIfindexes(): number[] {
    return [...this.map(MAP_NAMES.epStats).keys()].map((k) => k.readUInt32LE(0));
  }

  loadNextIdentity(): number | undefined {
    const s = this.maps.state.get();
    return s.nextIdentity > 0n ? Number(s.nextIdentity) : undefined;
  }

  saveNextIdentity(next: number): void {
    const s = this.maps.state.get();
    this.maps.state.set({ nextIdentity: BigInt(next), generation: s.generation + 1n });
  }

  onEvent(listener: (ev: FlowEvent) => void): void {
    this.listeners.push(listener);
    if (!this.reader) {
      this.reader = new RingBufReader(this.maps.events.fd, (buf: Buffer) => this.deliver(decodeFlowEvent(buf)));
      this.reader.start();
      this.summaryTimer = setInterval(() => this.summarizeHeldBack(), SUMMARY_INTERVAL_MS);
      this.summaryTimer.unref();
      this.flowSummaryTimer = setInterval(() => {
        // a map read failing now is retried at the next tick
        this.summarizeFlows().catch(() => undefined);
      }, FLOW_SUMMARY_INTERVAL_MS);
      this.flowSummaryTimer.unref();
    }
  }

  private flowSummaryTimer?: NodeJS.Timeout;
  /** REASON_ALLOWED_NEW at the last read (-1: never read, so a predecessor's unreported counts are read at once) */
  private allowedSeen = -1n;
  /** keys of bastion_flow_sum and summaries delivered, since start */
  readonly flowSummaryStats = { keys: 0, summaries: 0, reads: 0 };

  /**
   * The allowed (and audited) new connections the kernel counted per key
   * without an event (bpf/lib/summary.h): each key whose count moved since
   * it was last reported becomes one summary event (how many, since when,
   * the last connection's addresses). How far each key was reported is kept
   * in the pinned bastion_flow_seen, so a restarted daemon neither reports a
   * count twice nor loses what its predecessor had not reported. Returns the
   * summaries delivered.
   */
  summarizeFlows(): Promise<number> {
    // one read at a time: a tick (or the daemon's last read at stop) that comes during one shares it
    return (this.summarizing ??= this.readFlowSummaries().finally(() => (this.summarizing = undefined)));
  }

  private summarizing?: Promise<number>;

  /**
   * Both maps are read in batches (one system call per FLOW_SUMMARY_BATCH
   * keys, the event loop free between them): a key-by-key walk took 4.7 us
   * a key, 24 ms at 5,000 keys and 300 ms for a full map, every 5 s on a
   * host with new connections, holding up every API request meanwhile.
   * A key a batch read meets twice (a walk of a live map may) is reported
   * once: what was reported is updated here as it is written.
   */
  private async readFlowSummaries(): Promise<number> {
    // Nothing new was allowed since the last read (the counter the programs bump for every new
    // connection did not move): nothing to report, and a quiet datapath costs one counter read.
    const allowed = this.maps.counters.get(REASON.allowedNew).packets;
    if (allowed === this.allowedSeen) return 0;
    this.allowedSeen = allowed;
    const seenMap = this.maps.flowSeen.raw;
    const reportedOf = new Map<string, FlowSumSeen>();
    for await (const b of seenMap.batches(FLOW_SUMMARY_BATCH)) {
      for (let i = 0; i < b.count; i++) {
        reportedOf.set(b.keys.toString('latin1', i * seenMap.keySize, (i + 1) * seenMap.keySize), decodeFlowSumSeen(b.values.subarray(i * seenMap.valueSize, (i + 1) * seenMap.valueSize)));
      }
    }
    const sumMap = this.maps.flowSum.raw;
    const live = new Set<string>();
    let n = 0;
    let keys = 0;
    for await (const b of sumMap.batches(FLOW_SUMMARY_BATCH)) {
      for (let i = 0; i < b.count; i++) {
        const rawKey = b.keys.subarray(i * sumMap.keySize, (i + 1) * sumMap.keySize);
        const id = rawKey.toString('latin1');
        if (!live.has(id)) keys++;
        live.add(id);
        const k = decodeFlowSumKey(rawKey);
        const v = decodeFlowSum(b.values.subarray(i * sumMap.valueSize, (i + 1) * sumMap.valueSize));
        const seen = reportedOf.get(id);
        const same = seen !== undefined && seen.firstNs === v.firstNs;
        const reported = same ? seen.count : 0n;
        if (v.count <= reported) continue;
        const audit = (k.flags & FLOW_SUM_F_AUDIT) !== 0;
        this.deliver({
          tsNs: v.lastNs,
          srcId: k.srcId,
          dstId: k.dstId,
          saddr: v.saddr,
          daddr: v.daddr,
          sport: v.sport,
          dport: k.dport,
          proto: k.proto,
          verdict: audit ? VERDICT.audit : VERDICT.allowed,
          reason: audit ? v.reason : REASON.allowedNew,
          trace: v.trace,
          ifindex: v.ifindex,
          ruleId: v.ruleId,
          pktLen: 0,
          ethertype: 0x0800,
          suppressed: 0,
          ingressRuleId: v.ingressRuleId,
          tcpFlags: 0,
          flags: 0,
          tunnelSaddr: '0.0.0.0',
          flowSummary: { count: Number(v.count - reported), firstNs: same ? seen.lastNs : v.firstNs },
        });
        const now = { firstNs: v.firstNs, count: v.count, lastNs: v.lastNs };
        reportedOf.set(id, now);
        try {
          this.maps.flowSeen.set(k, now);
        } catch {
          // the seen map is full (it holds what bastion_flow_sum holds): the next read reports it again
        }
        n++;
      }
    }
    // keys the kernel evicted: their reports are done
    for (const id of reportedOf.keys()) if (!live.has(id)) seenMap.delete(Buffer.from(id, 'latin1'));
    this.flowSummaryStats.keys = keys;
    this.flowSummaryStats.summaries += n;
    this.flowSummaryStats.reads++;
    return n;
  }

  private deliver(ev: FlowEvent): void {
    for (const l of this.listeners) l(ev);
  }

  private summaryTimer?: NodeJS.Timeout;
  private suppressedSeen = 0n;

  /**
   * The tail of a burst: events the rate limit held back that no later event
   * of their kind reported (the burst ended). Each such slot of
   * bastion_event_rl whose window is over becomes one summary event (the
   * last held-back packet's addresses, `suppressed` = how many), and its
   * count goes back to zero. Looked at only when the kernel's suppressed
   * counter moved since the last look, so a quiet datapath costs one
   * counter read. Returns the summaries delivered.
   */
  summarizeHeldBack(nowNs = process.hrtime.bigint()): number {
    const total = this.maps.counters.get(REASON.eventsSuppressed).packets;
    if (total === this.suppressedSeen) return 0;
    this.suppressedSeen = total;
    let n = 0;
    for (const [k, v] of [...this.maps.eventLimits.entries()]) {
      if (!v.suppressed || nowNs - v.windowStart < 1_000_000_000n) continue;
      try {
        // Approximate by design: a count the kernel adds between this read and write is lost (the counter keeps it).
        this.maps.eventLimits.set(k, { ...v, suppressed: 0 }, BPF_EXIST);
      } catch {
        continue; // evicted meanwhile
      }
      this.deliver({
        tsNs: nowNs,
        srcId: v.srcId,
        dstId: v.dstId,
        saddr: v.saddr,
        daddr: v.daddr,
        sport: v.sport,
        dport: v.dport,
        proto: v.proto,
        verdict: k.verdict,
        reason: k.reason,
        trace: v.trace,
        ifindex: k.ifindex,
        ruleId: 0,
        pktLen: 0,
        ethertype: v.ethertype,
        suppressed: v.suppressed,
        summary: true,
        ingressRuleId: 0,
        tcpFlags: 0,
        flags: 0,
        tunnelSaddr: '0.0.0.0',
      });
      n++;
    }
    return n;
  }

  close(): void {
    clearInterval(this.gcTimer);
    clearInterval(this.summaryTimer);
    clearInterval(this.flowSummaryTimer);
    this.reader?.stop();
    this.maps.close();
    this.owner?.close();
    for (const o of this.objects) o.close();
  }
}

/** Load (or reuse the pinned maps of) the datapath under pinPath. */
export async function openDatapath(pinPath: string, log?: Logger): Promise<DatapathAgent> {
  const root = ensurePinRoot(pinPath);
  const load = (file: string): BpfObject => {
    try {
      return loadObject(join(BPF_DIR, file), { pinRoot: root });
    } catch (err) {
      // libbpf: "couldn't reuse pinned map at '...': parameter mismatch"
      if (/reuse pinned map/.test((err as Error).message)) {
        throw new Error(
          `the maps pinned under ${root} were made by a Bastion version with other map layouts (${(err as Error).message.split('\n')[0]}); ` +
            `run \`bastion down --pin-path ${pinPath}\` (enforcement stops until the new daemon is up), then start again`,
        );
      }
      throw err;
    }
  };
  const from = load('from_container.o');
  const to = load('to_container.o');
  const gc = load('ct_gc.o');
  const overlay = load('from_overlay.o');
  const underlay = load('from_underlay.o');
  const maps = openBastionMaps(root);
  const fds = {
    fromContainer: from.program('from_container'),
    toContainer: to.program('to_container'),
    ctGc: gc.program('ct_gc'),
    fromOverlay: overlay.program('from_overlay'),
    fromUnderlay: underlay.program('from_underlay'),
  };
  // this instance's name on its programs (owner.ts), so another instance can say whose they are
  const owner = openOwnerMap(root);
  for (const fd of [fds.fromContainer, fds.toContainer, fds.fromOverlay, fds.fromUnderlay]) bindOwner(fd, owner);
  log?.debug({ pinPath: root }, 'datapath loaded');
  return new DatapathAgent(root, [from, to, gc, overlay, underlay], fds, maps, owner);
}
