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
  type TunnelInfo,
} from '../datapath/layout.js';
import type { DatapathPort, StackState } from '../manager/ports.js';
import type { EntrySet, MapOp } from '../manager/entries.js';
import { attachStack, detachStack, stackState } from './stack.js';
import { attachTunnelProgram, tunnelProgramId } from './tunnel.js';

const BPF_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bpf');

/** Maps the manager owns entirely (pruned to what it wants after a restart). */
const MANAGED_MAPS = [MAP_NAMES.endpoints, MAP_NAMES.endpointsByIp, MAP_NAMES.ipcache, MAP_NAMES.policy, MAP_NAMES.neigh, MAP_NAMES.remote, MAP_NAMES.epStats];

export class DatapathAgent implements DatapathPort {
  private readonly listeners: Array<(ev: FlowEvent) => void> = [];
  private reader?: RingBufReader;

  constructor(
    readonly pinPath: string,
    private readonly objects: BpfObject[],
    private readonly fds: { fromContainer: number; toContainer: number; fromOverlay: number },
    readonly maps: BastionMaps,
  ) {}

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
    if (!stats.lookupPerCpu(key)) stats.updatePerCpu(key, Buffer.alloc(stats.valueSize), BPF_NOEXIST);
    attachStack(hostIfindex, this.fds);
  }

  detach(hostIfindex: number): void {
    detachStack(hostIfindex);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(hostIfindex);
    this.map(MAP_NAMES.epStats).delete(key);
  }

  stackState(hostIfindex: number): StackState {
    return stackState(hostIfindex);
  }

  /** from_overlay on the VXLAN device's ingress (replace: never two) and the tunnel entry the senders read. */
  attachTunnel(info: TunnelInfo): void {
    attachTunnelProgram(info.ifindex, this.fds.fromOverlay);
    this.maps.tunnel.set(info);
  }

  tunnel(): { info: TunnelInfo; programId?: number } {
    const info = this.maps.tunnel.get();
    return { info, ...(info.ifindex ? { programId: tunnelProgramId(info.ifindex) } : {}) };
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

  prune(desired: EntrySet): number {
    let n = 0;
    for (const name of MANAGED_MAPS) {
      if (name === MAP_NAMES.epStats) continue; // stacks are pruned by the manager, stats with them
      const m = this.map(name);
      const want = desired.get(name);
      const extra = [...m.keys()].filter((k) => !want?.has(k.toString('hex')));
      for (const k of extra) m.delete(k);
      n += extra.length;
    }
    return n;
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
    for (const o of this.objects) o.close();
  }
}

/** Load (or reuse the pinned maps of) the datapath under pinPath. */
export async function openDatapath(pinPath: string, log?: Logger): Promise<DatapathAgent> {
  const root = ensurePinRoot(pinPath);
  const from = loadObject(join(BPF_DIR, 'from_container.o'), { pinRoot: root });
  const to = loadObject(join(BPF_DIR, 'to_container.o'), { pinRoot: root });
  const overlay = loadObject(join(BPF_DIR, 'from_overlay.o'), { pinRoot: root });
  const maps = openBastionMaps(root);
  log?.debug({ pinPath: root }, 'datapath loaded');
  return new DatapathAgent(
    root,
    [from, to, overlay],
    { fromContainer: from.program('from_container'), toContainer: to.program('to_container'), fromOverlay: overlay.program('from_overlay') },
    maps,
  );
}
