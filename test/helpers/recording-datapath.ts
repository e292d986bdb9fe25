/**
 * The manager's ports without a kernel, for tests of the manager and the
 * daemon's services on their real code path: a datapath that records what
 * the manager asks of it (map writes in order, attachments) and holds the
 * maps those writes make (read back by drift checks as the kernel's would
 * be), and a node whose containers are a table of made-up interfaces.
 *
 * Faults to inject: a write that fails (the Nth from now, or every one
 * while `failing`), entries changed by hand (`maps`), interfaces that vanish
 * (`gone`) or carry another instance's stack (`foreign`), stacks removed by
 * hand (`attached`).
 */
import pino, { type Logger } from 'pino';
import { ForeignStackError, type DatapathPort, type Discovered, type MapChunk, type NodePort, type StackState } from '../../src/manager/ports.js';
import type { MapOp } from '../../src/manager/entries.js';
import type { EndpointSpec } from '../../src/manager/endpoint.js';
import { MAP_NAMES, type FlowEvent, type MapName } from '../../src/datapath/layout.js';
import { Manager, type ManagerOptions } from '../../src/manager/manager.js';

export class RecordingDatapath implements DatapathPort {
  /** every map write the manager asked for, in order (those that failed excluded) */
  readonly ops: MapOp[] = [];
  /** what the maps hold: map → latin1 key → latin1 value (bastion_ep_stat: keys, values empty) */
  readonly maps = new Map<MapName, Map<string, string>>();
  /** interfaces with this instance's stack */
  readonly attached = new Set<number>();
  /** interfaces that carry another instance's stack, with its pin path */
  readonly foreign = new Map<number, string>();
  /** interfaces that do not exist (any more) */
  readonly gone = new Set<number>();
  /** while true, every write fails */
  failing = false;
  private failIn?: number;
  private listener?: (ev: FlowEvent) => void;
  /** called after every write that was applied (a test looks at the maps between writes) */
  onWrite?: (op: MapOp, index: number) => void;

  /** The Nth write from now (1: the next one) fails; the writes after it in the same call are not made. */
  failOnWrite(n: number): void {
    this.failIn = n;
  }

  table(map: MapName): Map<string, string> {
    let t = this.maps.get(map);
    if (!t) this.maps.set(map, (t = new Map()));
    return t;
  }

  attach(hostIfindex: number): void {
    if (this.gone.has(hostIfindex)) throw new Error(`ifindex ${hostIfindex}: No such device`);
    const owner = this.foreign.get(hostIfindex);
    if (owner !== undefined) throw new ForeignStackError(hostIfindex, owner);
    this.attached.add(hostIfindex);
    // as the agent does: the stats entry records where a stack is attached
    const key = Buffer.alloc(4);
    key.writeUInt32LE(hostIfindex);
    const stats = this.table(MAP_NAMES.epStats);
    if (!stats.has(key.toString('latin1'))) stats.set(key.toString('latin1'), '');
  }
  detach(hostIfindex: number): void {
    if (this.foreign.has(hostIfindex)) return;
    this.attached.delete(hostIfindex);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(hostIfindex);
    this.table(MAP_NAMES.epStats).delete(key.toString('latin1'));
  }
  stackState(hostIfindex: number): StackState {
    if (this.gone.has(hostIfindex)) return { ok: false, owner: 'none', gone: true };
    const owner = this.foreign.get(hostIfindex);
    if (owner !== undefined) return { ok: false, owner: 'foreign', ownerPinPath: owner };
    const ok = this.attached.has(hostIfindex);
    return ok ? { ingress: 1, egress: 2, ok, owner: 'self' } : { ok, owner: 'none' };
  }
  apply(ops: MapOp[]): void {
    for (const op of ops) {
      if (this.failing || (this.failIn !== undefined && --this.failIn === 0)) {
        this.failIn = undefined;
        throw new Error(`bpf_map_${op.op === 'delete' ? 'delete' : 'update'}_elem(${op.map}): injected failure`);
      }
      const t = this.table(op.map);
      const key = op.key.toString('latin1');
      if (op.op === 'delete') t.delete(key);
      // per-CPU counters: created once, never overwritten (as the agent does)
      else if (op.map === MAP_NAMES.epStats) {
        if (!t.has(key)) t.set(key, '');
      } else t.set(key, op.value.toString('latin1'));
      this.ops.push(op);
      this.onWrite?.(op, this.ops.length - 1);
    }
  }
  async *readMap(map: MapName): AsyncGenerator<MapChunk> {
    const t = this.table(map);
    if (!t.size) return;
    const entries = [...t];
    const keySize = entries[0]![0].length;
    const valueSize = map === MAP_NAMES.epStats ? 0 : entries[0]![1].length;
    // two batches, with a turn of the event loop between them, as the kernel's reader does
    const half = Math.ceil(entries.length / 2);
    for (const part of [entries.slice(0, half), entries.slice(half)]) {
      if (!part.length) continue;
      const keys = Buffer.from(part.map(([k]) => k).join(''), 'latin1');
      const values = Buffer.from(valueSize ? part.map(([, v]) => v).join('') : '', 'latin1');
      yield { keySize, valueSize, count: part.length, keys, values };
      await new Promise((r) => setImmediate(r));
    }
  }
  flushConntrack(): number {
    return 0;
  }
  counters() {
    return new Map();
  }
  endpointStats() {
    return undefined;
  }
  existingEndpoints() {
    return [];
  }
  existingIpcache() {
    return [];
  }
  attachedIfindexes(): number[] {
    return [...this.table(MAP_NAMES.epStats).keys()].map((k) => Buffer.from(k, 'latin1').readUInt32LE(0));
  }
  private nextIdentity?: number;
  loadNextIdentity(): number | undefined {
    return this.nextIdentity;
  }
  saveNextIdentity(next: number): void {
    this.nextIdentity = next;
  }
  onEvent(listener: (ev: FlowEvent) => void): void {
    this.listener = listener;
  }
  /** Hand the manager's listener a flow event, as the ring buffer reader would. */
  emit(ev: FlowEvent): void {
    this.listener?.(ev);
  }
  close(): void {}
}

/** Containers by name (the spec's netns name): what discovery would find. */
export class TableNode implements NodePort {
  readonly interfaces = new Map<string, Discovered>();

  /** Container `i` (up to 65,000): 10.77.0.2 on, a locally administered MAC, host ifindex 1000 + i. */
  static iface(i: number): Discovered {
    const hex = (i + 0x100).toString(16).padStart(6, '0');
    const n = i + 2;
    return {
      ipv4: `10.77.${(n >> 8) & 255}.${n & 255}`,
      prefixLen: 16,
      mac: `02:00:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4)}`,
      hostIfindex: 1000 + i,
      hostIfname: `v${i}`,
      gwMac: '02:00:00:00:00:01',
      bridge: 'br0',
    };
  }

  async discover(spec: EndpointSpec): Promise<Discovered> {
    const name = spec.netns.kind === 'name' ? spec.netns.name : spec.netns.path;
    const d = this.interfaces.get(name);
    if (!d) throw new Error(`no network namespace "${name}"`);
    return d;
  }

  async hostAddresses(): Promise<string[]> {
    return ['10.77.0.1'];
  }
}

export function endpointSpec(name: string, labels: Record<string, string> = { app: name }): EndpointSpec {
  return { key: `file:${name}`, name, netns: { kind: 'name', name }, interface: 'eth0', labels };
}

/** A manager on a recording datapath and a table node, logging nothing (or to `log`). */
export function recordingManager(o: Partial<Pick<ManagerOptions, 'onRepair' | 'resyncBackoff' | 'ruleNumbers'>> & { log?: Logger } = {}): {
  manager: Manager;
  datapath: RecordingDatapath;
  node: TableNode;
} {
  const datapath = new RecordingDatapath();
  const node = new TableNode();
  const manager = new Manager({ datapath, node, log: o.log ?? pino({ level: 'silent' }), onRepair: o.onRepair, resyncBackoff: o.resyncBackoff, ruleNumbers: o.ruleNumbers });
  return { manager, datapath, node };
}
