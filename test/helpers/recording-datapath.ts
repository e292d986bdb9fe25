/**
 * The manager's ports without a kernel, for tests of the manager and the
 * daemon's services on their real code path: a datapath that records what
 * the manager asks of it (map writes in order, attachments), and a node
 * whose containers are a table of made-up interfaces.
 */
import pino from 'pino';
import type { DatapathPort, Discovered, NodePort, StackState } from '../../src/manager/ports.js';
import type { MapOp } from '../../src/manager/entries.js';
import type { EndpointSpec } from '../../src/manager/endpoint.js';
import type { FlowEvent } from '../../src/datapath/layout.js';
import { Manager } from '../../src/manager/manager.js';

export class RecordingDatapath implements DatapathPort {
  /** every map write, in the order the manager asked for them */
  readonly ops: MapOp[] = [];
  readonly attached = new Set<number>();
  private listener?: (ev: FlowEvent) => void;

  attach(hostIfindex: number): void {
    this.attached.add(hostIfindex);
  }
  detach(hostIfindex: number): void {
    this.attached.delete(hostIfindex);
  }
  stackState(hostIfindex: number): StackState {
    const ok = this.attached.has(hostIfindex);
    return ok ? { ingress: 1, egress: 2, ok } : { ok };
  }
  apply(ops: MapOp[]): void {
    this.ops.push(...ops);
  }
  prune(): number {
    return 0;
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
    return [...this.attached];
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

/** A manager on a recording datapath and a table node, logging nothing. */
export function recordingManager(): { manager: Manager; datapath: RecordingDatapath; node: TableNode } {
  const datapath = new RecordingDatapath();
  const node = new TableNode();
  const manager = new Manager({ datapath, node, log: pino({ level: 'silent' }) });
  return { manager, datapath, node };
}
