/**
 * What the manager needs from the node it runs on. The real implementations
 * drive libbpf (src/agent/datapath-agent.ts) and iproute2 discovery
 * (src/agent/netns.ts); keeping them behind these interfaces keeps the
 * manager's logic testable on its own.
 */
import type { Counter, EndpointInfo, EpStats, FlowEvent, IpcacheKey, IpcacheVal } from '../datapath/layout.js';
import type { MapOp } from './entries.js';
import type { EndpointSpec } from './endpoint.js';

export interface StackState {
  /** program ids attached on the host-side veth, undefined when missing */
  ingress?: number;
  egress?: number;
  /** both hooks carry Bastion's programs */
  ok: boolean;
}

export interface DatapathPort {
  /** Attach both programs on a host-side veth (atomic replace, never duplicated). */
  attach(hostIfindex: number): void;
  detach(hostIfindex: number): void;
  stackState(hostIfindex: number): StackState;
  /** Write map entries, in the given order. */
  apply(ops: MapOp[]): void;
  /** Delete every entry of the managed maps that `desired` does not hold; returns how many. */
  prune(desired: import('./entries.js').EntrySet): number;
  /** Forget every tracked connection to or from these addresses, and the conntrack counts of these (gone) identities. */
  flushConntrack(ips: string[], owners?: number[]): number;
  /** Conntrack table pressure: entries in use against capacity, per endpoint identity too. */
  conntrackUsage?(): ConntrackUsage;
  /** Reclaim expired conntrack entries now; returns how many. */
  collectConntrack?(): number;
  counters(): Map<number, Counter>;
  endpointStats(hostIfindex: number): EpStats | undefined;
  /** What a previous run left in the maps, to adopt after a restart. */
  existingEndpoints(): EndpointInfo[];
  existingIpcache(): Array<[IpcacheKey, IpcacheVal]>;
  /** Ifindexes with a stack attached by us (those with a stats entry). */
  attachedIfindexes(): number[];
  loadNextIdentity(): number | undefined;
  saveNextIdentity(next: number): void;
  onEvent(listener: (ev: FlowEvent) => void): void;
  close(): void;
}

export interface ConntrackUsage {
  /** entries charged to endpoints (every entry is charged to one) */
  entries: number;
  /** what the table holds at most */
  capacity: number;
  /** what one endpoint may hold */
  perEndpointLimit: number;
  /** entries by endpoint identity */
  byIdentity: Map<number, number>;
  /** entries reclaimed by the collector since the daemon started */
  collected: number;
  /** the event rate limit: events per (endpoint, verdict, reason) and second */
  eventsPerSec: number;
}

export interface Discovered {
  ipv4: string;
  prefixLen: number;
  mac: string;
  hostIfindex: number;
  hostIfname: string;
  bridge?: string;
  gwMac: string;
  gateway?: string;
}

export interface NodePort {
  discover(spec: EndpointSpec): Promise<Discovered>;
  hostAddresses(): Promise<string[]>;
}
