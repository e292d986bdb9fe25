/**
 * What the manager needs from the node it runs on. The real implementations
 * drive libbpf (src/agent/datapath-agent.ts) and iproute2 discovery
 * (src/agent/netns.ts); keeping them behind these interfaces keeps the
 * manager's logic testable on its own.
 */
import type { Counter, EndpointInfo, EpStats, FlowEvent, IpcacheKey, IpcacheVal, MapName } from '../datapath/layout.js';
import type { MapOp } from './entries.js';
import type { EndpointSpec } from './endpoint.js';

/**
 * Whose programs an interface's hooks carry, as this instance sees it:
 *   self     this instance's, as loaded now
 *   earlier  this instance's from a previous run (they use its pinned maps)
 *   foreign  another Bastion instance's (they use other maps): never touched
 *   other    something else in Bastion's tc slot
 *   none     nothing
 */
export type StackOwner = 'self' | 'earlier' | 'foreign' | 'other' | 'none';

export interface StackState {
  /** program ids attached on the host-side veth, undefined when missing */
  ingress?: number;
  egress?: number;
  /** both hooks carry this instance's programs, as loaded now */
  ok: boolean;
  /** whose stack it is (the less trusted of the two hooks') */
  owner?: StackOwner;
  /** the other instance's pin path, when its stack is foreign and says so */
  ownerPinPath?: string;
  /** the interface does not exist (any more) */
  gone?: boolean;
}

/** An interface carries another Bastion instance's stack: this one never guards, replaces or detaches it. */
export class ForeignStackError extends Error {
  constructor(
    readonly hostIfindex: number,
    readonly ownerPinPath?: string,
  ) {
    super(`interface ${hostIfindex} carries the stack of another Bastion instance${ownerPinPath ? ` (pin path ${ownerPinPath})` : ''}; not taking it over`);
    this.name = 'ForeignStackError';
  }
}

/**
 * A batch of a map's entries as the kernel holds them: `count` keys and
 * `count` values, each packed (per-CPU maps: keys only, valueSize 0). Good
 * only until the next batch is asked for: the reader's buffers are reused.
 */
export interface MapChunk {
  keySize: number;
  valueSize: number;
  count: number;
  keys: Buffer;
  values: Buffer;
}

export interface DatapathPort {
  /**
   * Attach both programs on a host-side veth (atomic replace of this
   * instance's own, never duplicated). Throws ForeignStackError when the
   * interface carries another instance's stack.
   */
  attach(hostIfindex: number): void;
  /** Detach this instance's stack (never another instance's). */
  detach(hostIfindex: number): void;
  stackState(hostIfindex: number): StackState;
  /** Write map entries, in the given order. */
  apply(ops: MapOp[]): void;
  /** Read a map back, in batches (yielding to the event loop between them). */
  readMap(map: MapName): AsyncIterable<MapChunk>;
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
  /** Report now the allowed flows the kernel counted since the last report (also done every few seconds once onEvent has a listener). */
  summarizeFlows?(): Promise<number>;
  /** keys of the allowed-flow summary and summaries delivered since start */
  readonly flowSummaryStats?: { keys: number; summaries: number; reads: number };
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
