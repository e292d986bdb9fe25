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
import { BPF_NOEXIST } from '../datapath/libbpf.js';
import { ensurePinRoot } from '../datapath/bpffs.js';
import { RingBufReader } from '../datapath/ringbuf.js';
import {
  MAP_NAMES,
  NR_COUNTERS,
  decodeCtKey,
  decodeFlowEvent,
  type Counter,
  type EndpointInfo,
  type EpStats,
  type FlowEvent,
  type IpcacheKey,
  type IpcacheVal,
} from '../datapath/layout.js';
import type { DatapathPort, MapChunk, StackState } from '../manager/ports.js';
import type { MapOp } from '../manager/entries.js';
import { Ownership, attachStack, detachStack, stackState } from './stack.js';
import { bindOwner, openOwnerMap } from './owner.js';
import { progInfo } from '../datapath/libbpf.js';

const BPF_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bpf');

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
    private readonly fds: { fromContainer: number; toContainer: number },
    readonly maps: BastionMaps,
    private readonly owner?: BpfMap,
  ) {
    const ids = new Set([fds.fromContainer, fds.toContainer].map((fd) => progInfo(fd).id));
    this.ownership = new Ownership(maps.endpoints.raw.id, ids);
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
    for await (const b of m.batches(READ_BATCH)) {
      if (!m.perCpu) {
        const data = Buffer.alloc(b.count * (m.keySize + valueSize));
        for (let i = 0; i < b.count; i++) {
          const off = i * (m.keySize + valueSize);
          b.keys.copy(data, off, i * m.keySize, (i + 1) * m.keySize);
          b.values.copy(data, off + m.keySize, i * valueSize, (i + 1) * valueSize);
        }
        yield { keySize: m.keySize, valueSize, count: b.count, data };
      } else {
        yield { keySize: m.keySize, valueSize: 0, count: b.count, data: b.keys };
      }
    }
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

  flushConntrack(ips: string[]): number {
    const want = new Set(ips);
    const ct = this.map(MAP_NAMES.ct);
    const doomed = [...ct.keys()].filter((k) => {
      const t = decodeCtKey(k);
      return want.has(t.saddr) || want.has(t.daddr);
    });
    for (const k of doomed) ct.delete(k);
    return doomed.length;
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
      this.reader = new RingBufReader(this.maps.events.fd, (buf: Buffer) => {
        const ev = decodeFlowEvent(buf);
        for (const l of this.listeners) l(ev);
      });
      this.reader.start();
    }
  }

  close(): void {
    this.reader?.stop();
    this.maps.close();
    this.owner?.close();
    for (const o of this.objects) o.close();
  }
}

/** Load (or reuse the pinned maps of) the datapath under pinPath. */
export async function openDatapath(pinPath: string, log?: Logger): Promise<DatapathAgent> {
  const root = ensurePinRoot(pinPath);
  const from = loadObject(join(BPF_DIR, 'from_container.o'), { pinRoot: root });
  const to = loadObject(join(BPF_DIR, 'to_container.o'), { pinRoot: root });
  const maps = openBastionMaps(root);
  const fds = { fromContainer: from.program('from_container'), toContainer: to.program('to_container') };
  // this instance's name on its programs (owner.ts), so another instance can say whose they are
  const owner = openOwnerMap(root);
  for (const fd of [fds.fromContainer, fds.toContainer]) bindOwner(fd, owner);
  log?.debug({ pinPath: root }, 'datapath loaded');
  return new DatapathAgent(root, [from, to], fds, maps, owner);
}
