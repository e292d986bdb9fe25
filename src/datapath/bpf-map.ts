/**
 * BPF maps from TypeScript: raw Buffer keys and values (BpfMap), and typed
 * accessors for the Bastion maps built on the codecs of layout.ts.
 *
 * Every map is described by the kernel itself (bpf_obj_get_info_by_fd), so a
 * key or value of the wrong size is caught here, with the map's name, rather
 * than turning into EINVAL or a silent partial read.
 */
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import {
  BPF_ANY,
  BPF_MAP_TYPE_PERCPU_ARRAY,
  BPF_MAP_TYPE_RINGBUF,
  PERCPU_MAP_TYPES,
  LibbpfError,
  check,
  lib,
  libbpfError,
  mapInfo,
  numPossibleCpus,
} from './libbpf.js';
import {
  FLOW_SUM_KEY_SIZE,
  FLOW_SUM_SIZE,
  FLOW_SUM_SEEN_SIZE,
  decodeFlowSum,
  decodeFlowSumKey,
  decodeFlowSumSeen,
  encodeFlowSum,
  encodeFlowSumKey,
  encodeFlowSumSeen,
  type FlowSum,
  type FlowSumKey,
  type FlowSumSeen,
  EVENT_RL_KEY_SIZE,
  EVENT_RL_SIZE,
  decodeEventRl,
  decodeEventRlKey,
  encodeEventRl,
  encodeEventRlKey,
  type EventRl,
  type EventRlKey,
  CT_USE_SIZE,
  FRAG_KEY_SIZE,
  FRAG_VAL_SIZE,
  decodeCtUse,
  decodeFragKey,
  decodeFragVal,
  encodeCtUse,
  encodeFragKey,
  encodeFragVal,
  type FragKey,
  type FragVal,
} from './layout.js';
import {
  COUNTER_SIZE,
  CONFIG_SIZE,
  CT_ENTRY_SIZE,
  CT_KEY_SIZE,
  DEFAULT_PIN_PATH,
  ENDPOINT_INFO_SIZE,
  EP_STATS_SIZE,
  IPCACHE_KEY_SIZE,
  IPCACHE_VAL_SIZE,
  MAP_NAMES,
  NEIGH_KEY_SIZE,
  NR_COUNTERS,
  POLICY_KEY_SIZE,
  POLICY_VAL_SIZE,
  STATE_SIZE,
  REMOTE_ENDPOINT_SIZE,
  TUNNEL_INFO_SIZE,
  decodeRemoteEndpoint,
  decodeTunnelInfo,
  encodeRemoteEndpoint,
  encodeTunnelInfo,
  type RemoteEndpointInfo,
  type TunnelInfo,
  decodeConfig,
  decodeCounter,
  decodeCtEntry,
  decodeCtKey,
  decodeEndpointInfo,
  decodeEpStats,
  decodeIpKey,
  decodeIpcacheKey,
  decodeIpcacheVal,
  decodeNeighKey,
  decodePolicyKey,
  decodePolicyVal,
  decodeState,
  decodeU32,
  encodeConfig,
  encodeCtEntry,
  encodeCtKey,
  encodeEndpointInfo,
  encodeIpKey,
  encodeIpcacheKey,
  encodeIpcacheVal,
  encodeNeighKey,
  encodePolicyKey,
  encodePolicyVal,
  encodeState,
  encodeU32,
  type ControlState,
  type Counter,
  type CtEntry,
  type CtKey,
  type DatapathConfig,
  type EndpointInfo,
  type EpStats,
  type IpcacheKey,
  type IpcacheVal,
  type NeighKey,
  type PolicyKey,
  type PolicyVal,
} from './layout.js';

export { BPF_ANY, BPF_EXIST, BPF_NOEXIST, BPF_F_LOCK } from './libbpf.js';

const ENOENT = 2;
const EINVAL = 22;
const EOPNOTSUPP = 95;
/** the kernel's internal "not supported" (include/linux/errno.h), which bpf() can return */
const ENOTSUPP = 524;

export interface BpfMapOptions {
  /** close the fd in close() (true for fds we opened; false for fds a bpf_object owns) */
  ownsFd?: boolean;
  /** where it came from, for error messages (defaults to the map's kernel name) */
  label?: string;
}

/** Entries of a map as the kernel copied them out: `count` keys and values, back to back. */
export interface MapBatch {
  count: number;
  keys: Buffer;
  values: Buffer;
}

/** A BPF map behind a file descriptor. */
export class BpfMap {
  readonly fd: number;
  readonly id: number;
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  /** size of one value, as declared (one CPU's value for per-CPU maps) */
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  /** true for per-CPU maps: the kernel reads and writes one value per possible CPU */
  readonly perCpu: boolean;
  /** bytes of a lookup/update buffer: valueSize, or roundup(valueSize, 8) × possible CPUs */
  readonly rawValueSize: number;
  private readonly label: string;
  private ownsFd: boolean;
  private closed = false;

  constructor(fd: number, opts: BpfMapOptions = {}) {
    const info = mapInfo(fd);
    this.fd = fd;
    this.id = info.id;
    this.name = info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.perCpu = PERCPU_MAP_TYPES.has(info.type);
    this.rawValueSize = this.perCpu ? roundUp8(info.valueSize) * numPossibleCpus() : info.valueSize;
    this.label = opts.label ?? info.name;
    this.ownsFd = opts.ownsFd ?? true;
  }

  /**
   * Opens a pinned map (bpf_obj_get). When sizes are given they are checked
   * against the kernel's: a mismatch means the TypeScript layout and the C
   * struct disagree, which must never be written through.
   */
  static openPinned(path: string, keySize?: number, valueSize?: number): BpfMap {
    const fd = lib().bpf_obj_get(path);
    if (fd < 0) throw libbpfError('bpf_obj_get', fd, path);
    let map: BpfMap;
    try {
      map = new BpfMap(fd, { ownsFd: true, label: path });
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    if ((keySize !== undefined && map.keySize !== keySize) || (valueSize !== undefined && map.valueSize !== valueSize)) {
      map.close();
      throw new Error(
        `${path}: map has key ${map.keySize} / value ${map.valueSize} bytes, expected key ${keySize ?? map.keySize} / value ${valueSize ?? map.valueSize} (layout.ts and bpf/lib/maps.h disagree, or a stale pin from another version)`,
      );
    }
    return map;
  }

  /** Opens a map by its kernel id (e.g. one a program uses). */
  static fromId(id: number): BpfMap {
    const fd = lib().bpf_map_get_fd_by_id(id);
    if (fd < 0) throw libbpfError('bpf_map_get_fd_by_id', fd, `id ${id}`);
    return new BpfMap(fd, { ownsFd: true });
  }

  /** Creates or replaces (flags BPF_ANY), only creates (BPF_NOEXIST) or only replaces (BPF_EXIST). */
  update(key: Buffer, value: Buffer, flags: number = BPF_ANY): void {
    this.checkKey(key);
    this.checkValue(value, this.rawValueSize);
    const ret = lib().bpf_map_update_elem(this.fd, key, value, flags);
    if (ret < 0) throw libbpfError('bpf_map_update_elem', ret, this.label);
  }

  /** The value for `key`, or undefined. For per-CPU maps, the raw per-CPU buffer (see lookupPerCpu). */
  lookup(key: Buffer): Buffer | undefined {
    this.checkKey(key);
    const value = Buffer.alloc(this.rawValueSize);
    const ret = lib().bpf_map_lookup_elem(this.fd, key, value);
    if (ret === -ENOENT) return undefined;
    if (ret < 0) throw libbpfError('bpf_map_lookup_elem', ret, this.label);
    return value;
  }

  /** Per-CPU maps: one value per possible CPU, in CPU order. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    this.requirePerCpu('lookupPerCpu');
    const raw = this.lookup(key);
    return raw && this.splitPerCpu(raw);
  }

  /**
   * Per-CPU maps: sets every CPU's value. `values` is one Buffer for all
   * CPUs, or exactly one per possible CPU.
   */
  updatePerCpu(key: Buffer, values: Buffer | Buffer[], flags: number = BPF_ANY): void {
    this.requirePerCpu('updatePerCpu');
    const n = numPossibleCpus();
    const list = Array.isArray(values) ? values : Array.from({ length: n }, () => values);
    if (list.length !== n) throw new Error(`${this.label}: ${list.length} per-CPU values given, ${n} possible CPUs`);
    const stride = roundUp8(this.valueSize);
    const raw = Buffer.alloc(this.rawValueSize);
    list.forEach((v, cpu) => {
      this.checkValue(v, this.valueSize);
      v.copy(raw, cpu * stride);
    });
    this.update(key, raw, flags);
  }

  /** Deletes `key`; false when it was not there. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    const ret = lib().bpf_map_delete_elem(this.fd, key);
    if (ret === -ENOENT) return false;
    if (ret < 0) throw libbpfError('bpf_map_delete_elem', ret, this.label);
    return true;
  }

  /** Atomically reads and removes an entry (hash maps need kernel 5.14+). */
  lookupAndDelete(key: Buffer): Buffer | undefined {
    this.checkKey(key);
    const value = Buffer.alloc(this.rawValueSize);
    const ret = lib().bpf_map_lookup_and_delete_elem(this.fd, key, value);
    if (ret === -ENOENT) return undefined;
    if (ret < 0) throw libbpfError('bpf_map_lookup_and_delete_elem', ret, this.label);
    return value;
  }

  /**
   * Every key, through bpf_map_get_next_key. Like any walk of a live hash
   * map, entries added or removed meanwhile may be missed or seen twice;
   * deleting the key just yielded can restart the walk: collect first
   * (`[...map.keys()]`) when deleting.
   */
  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.keySize);
      const ret = lib().bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -ENOENT) return;
      if (ret < 0) throw libbpfError('bpf_map_get_next_key', ret, this.label);
      yield next;
      prev = next;
    }
  }

  /**
   * Every [key, value] (raw per-CPU buffers for per-CPU maps), read a batch
   * at a time (batchesNow: a key-by-key walk with a lookup per key cost
   * 4.7 us an entry, 24 ms at 5,000). Each is a view into its batch's own
   * buffers, never reused. Entries deleted mid-walk are skipped.
   */
  *entries(): Generator<[Buffer, Buffer]> {
    for (const b of this.batchesNow()) {
      for (let i = 0; i < b.count; i++) {
        yield [b.keys.subarray(i * this.keySize, (i + 1) * this.keySize), b.values.subarray(i * this.rawValueSize, (i + 1) * this.rawValueSize)];
      }
    }
  }

  /**
   * Every entry, `size` at a time, as two Buffers (keys, values: raw per-CPU
   * buffers for per-CPU maps) per batch, yielding to the event loop between
   * batches so that a long read does not hold up anything else. Uses
   * BPF_MAP_LOOKUP_BATCH (one system call per batch: an LPM trie of 120,000
   * entries reads in about 190 ms, where a lookup per key takes 570 ms), and
   * a key-by-key walk where the kernel has no batch operation for the map.
   * Like any walk of a live map, entries changed meanwhile may be missed or
   * seen twice.
   *
   * `reuse`: the same two buffers serve every batch, so a batch is good only
   * until the next one is asked for (a reader that hashes or decodes each
   * batch as it comes: a drift check at 5,000 containers otherwise leaves
   * 5 MB of spent buffers a check for the collector and malloc).
   */
  async *batches(size = 1024, o: { reuse?: boolean } = {}): AsyncGenerator<MapBatch> {
    for (const b of this.batchesNow(size, o)) {
      yield b;
      await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * batches() without the turns of the event loop, for a read that must be
   * whole at once: a batch is one system call (a hash map of 5,000 entries
   * reads in about 1 ms this way, against 24 ms for a get_next_key walk).
   */
  *batchesNow(size = 1024, o: { reuse?: boolean } = {}): Generator<MapBatch> {
    this.checkKey(Buffer.alloc(this.keySize));
    const l = lib();
    // the batch token is a bucket number for hash maps and a key for the others
    let inBatch: Buffer | null = null;
    let outBatch: Buffer = Buffer.alloc(Math.max(this.keySize, 8));
    let total = 0;
    const shared = o.reuse ? { keys: Buffer.alloc(this.keySize * size), values: Buffer.alloc(this.rawValueSize * size) } : undefined;
    for (;;) {
      const keys = shared?.keys ?? Buffer.alloc(this.keySize * size);
      const values = shared?.values ?? Buffer.alloc(this.rawValueSize * size);
      const count = [size];
      const ret = l.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, count, null);
      if (ret < 0 && ret !== -ENOENT) {
        if (total === 0 && (ret === -EINVAL || ret === -ENOTSUPP || ret === -EOPNOTSUPP)) {
          yield* this.walkBatches(size);
          return;
        }
        throw libbpfError('bpf_map_lookup_batch', ret, this.label);
      }
      const n = count[0]!;
      total += n;
      if (n) yield { count: n, keys: keys.subarray(0, n * this.keySize), values: values.subarray(0, n * this.rawValueSize) };
      // a walk that restarts (its cursor deleted meanwhile) must still end
      if (ret === -ENOENT || total > 2 * this.maxEntries) return;
      [inBatch, outBatch] = [outBatch, inBatch ?? Buffer.alloc(outBatch.length)];
    }
  }

  /** batchesNow() for maps without a batch operation: bpf_map_get_next_key and a lookup per key. */
  private *walkBatches(size: number): Generator<MapBatch> {
    const l = lib();
    let prev: Buffer | null = null;
    let total = 0;
    for (;;) {
      const keys = Buffer.alloc(this.keySize * size);
      const values = Buffer.alloc(this.rawValueSize * size);
      let n = 0;
      let end = false;
      while (n < size) {
        const next: Buffer = keys.subarray(n * this.keySize, (n + 1) * this.keySize);
        const ret = l.bpf_map_get_next_key(this.fd, prev, next);
        if (ret === -ENOENT) {
          end = true;
          break;
        }
        if (ret < 0) throw libbpfError('bpf_map_get_next_key', ret, this.label);
        prev = next;
        const got = l.bpf_map_lookup_elem(this.fd, next, values.subarray(n * this.rawValueSize, (n + 1) * this.rawValueSize));
        if (got === -ENOENT) continue; // deleted since: leave it out
        if (got < 0) throw libbpfError('bpf_map_lookup_elem', got, this.label);
        n++;
      }
      total += n;
      // `prev` points into this batch's keys, which stay referenced
      if (n) yield { count: n, keys: keys.subarray(0, n * this.keySize), values: values.subarray(0, n * this.rawValueSize) };
      if (end || total > 2 * this.maxEntries) return;
    }
  }

  /** Deletes every entry; returns how many were deleted. Not for array maps. */
  clear(): number {
    let n = 0;
    for (const key of [...this.keys()]) if (this.delete(key)) n++;
    return n;
  }

  /** Pins the map at `path` on bpffs. */
  pin(path: string): void {
    check('bpf_obj_pin', lib().bpf_obj_pin(this.fd, path), `${this.label} at ${path}`);
  }

  /** Closes the fd if this object owns it. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsFd) closeSync(this.fd);
  }

  /** Splits a raw per-CPU buffer into one Buffer per CPU. */
  splitPerCpu(raw: Buffer): Buffer[] {
    const stride = roundUp8(this.valueSize);
    const out: Buffer[] = [];
    for (let off = 0; off + this.valueSize <= raw.length; off += stride) out.push(raw.subarray(off, off + this.valueSize));
    return out;
  }

  private requirePerCpu(op: string): void {
    if (!this.perCpu) throw new Error(`${this.label}: ${op} on a map that is not per-CPU (type ${this.type})`);
  }

  private checkKey(key: Buffer): void {
    if (this.closed) throw new Error(`${this.label}: map is closed`);
    if (key.length !== this.keySize) throw new Error(`${this.label}: key is ${key.length} bytes, the map's are ${this.keySize}`);
  }

  private checkValue(value: Buffer, size: number): void {
    if (value.length !== size) throw new Error(`${this.label}: value is ${value.length} bytes, the map expects ${size}`);
  }
}

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

// ------------------------------------------------------------ typed maps

export interface Codec<T> {
  size: number;
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

/** A BpfMap seen through key and value codecs. */
export class TypedMap<K, V> {
  constructor(
    readonly raw: BpfMap,
    private readonly key: Codec<K>,
    private readonly value: Codec<V>,
  ) {}

  get(k: K): V | undefined {
    const v = this.raw.lookup(this.key.encode(k));
    return v && this.value.decode(v);
  }
  set(k: K, v: V, flags: number = BPF_ANY): void {
    this.raw.update(this.key.encode(k), this.value.encode(v), flags);
  }
  delete(k: K): boolean {
    return this.raw.delete(this.key.encode(k));
  }
  *keys(): Generator<K> {
    for (const k of this.raw.keys()) yield this.key.decode(k);
  }
  *entries(): Generator<[K, V]> {
    for (const [k, v] of this.raw.entries()) yield [this.key.decode(k), this.value.decode(v)];
  }
  clear(): number {
    return this.raw.clear();
  }
}

/** A per-CPU map whose per-CPU values are summed on read (counters, statistics). */
export class PerCpuSumMap<K, V> {
  constructor(
    readonly raw: BpfMap,
    private readonly key: Codec<K>,
    private readonly decode: (b: Buffer) => V,
    private readonly add: (a: V, b: V) => V,
  ) {}

  /** Sum over CPUs, or undefined when the key is absent. */
  get(k: K): V | undefined {
    const parts = this.raw.lookupPerCpu(this.key.encode(k));
    return parts && this.sum(parts);
  }
  *entries(): Generator<[K, V]> {
    for (const [k, raw] of this.raw.entries()) yield [this.key.decode(k), this.sum(this.raw.splitPerCpu(raw))];
  }
  delete(k: K): boolean {
    return this.raw.delete(this.key.encode(k));
  }
  private sum(parts: Buffer[]): V {
    return parts.map(this.decode).reduce(this.add);
  }
}

const u32: Codec<number> = { size: 4, encode: encodeU32, decode: decodeU32 };
const ipKey: Codec<string> = { size: 4, encode: encodeIpKey, decode: decodeIpKey };
const endpointInfo: Codec<EndpointInfo> = { size: ENDPOINT_INFO_SIZE, encode: encodeEndpointInfo, decode: decodeEndpointInfo };
const ipcacheKey: Codec<IpcacheKey> = { size: IPCACHE_KEY_SIZE, encode: encodeIpcacheKey, decode: decodeIpcacheKey };
const ipcacheVal: Codec<IpcacheVal> = { size: IPCACHE_VAL_SIZE, encode: encodeIpcacheVal, decode: decodeIpcacheVal };
const policyKey: Codec<PolicyKey> = { size: POLICY_KEY_SIZE, encode: encodePolicyKey, decode: decodePolicyKey };
const policyVal: Codec<PolicyVal> = { size: POLICY_VAL_SIZE, encode: encodePolicyVal, decode: decodePolicyVal };
const neighKey: Codec<NeighKey> = { size: NEIGH_KEY_SIZE, encode: encodeNeighKey, decode: decodeNeighKey };
const ctKey: Codec<CtKey> = { size: CT_KEY_SIZE, encode: encodeCtKey, decode: decodeCtKey };
const ctEntry: Codec<CtEntry> = { size: CT_ENTRY_SIZE, encode: encodeCtEntry, decode: decodeCtEntry };
const eventRlKey: Codec<EventRlKey> = { size: EVENT_RL_KEY_SIZE, encode: encodeEventRlKey, decode: decodeEventRlKey };
const eventRl: Codec<EventRl> = { size: EVENT_RL_SIZE, encode: encodeEventRl, decode: decodeEventRl };
const ctUse: Codec<bigint> = { size: CT_USE_SIZE, encode: encodeCtUse, decode: decodeCtUse };
const flowSumKey: Codec<FlowSumKey> = { size: FLOW_SUM_KEY_SIZE, encode: encodeFlowSumKey, decode: decodeFlowSumKey };
const flowSum: Codec<FlowSum> = { size: FLOW_SUM_SIZE, encode: encodeFlowSum, decode: decodeFlowSum };
const flowSumSeen: Codec<FlowSumSeen> = { size: FLOW_SUM_SEEN_SIZE, encode: encodeFlowSumSeen, decode: decodeFlowSumSeen };
const fragKey: Codec<FragKey> = { size: FRAG_KEY_SIZE, encode: encodeFragKey, decode: decodeFragKey };
const fragVal: Codec<FragVal> = { size: FRAG_VAL_SIZE, encode: encodeFragVal, decode: decodeFragVal };
const config: Codec<DatapathConfig> = { size: CONFIG_SIZE, encode: encodeConfig, decode: decodeConfig };
const state: Codec<ControlState> = { size: STATE_SIZE, encode: encodeState, decode: decodeState };
const remoteEndpoint: Codec<RemoteEndpointInfo> = { size: REMOTE_ENDPOINT_SIZE, encode: encodeRemoteEndpoint, decode: decodeRemoteEndpoint };
const tunnelInfo: Codec<TunnelInfo> = { size: TUNNEL_INFO_SIZE, encode: encodeTunnelInfo, decode: decodeTunnelInfo };

const addCounter = (a: Counter, b: Counter): Counter => ({ packets: a.packets + b.packets, bytes: a.bytes + b.bytes });
const addEpStats = (a: EpStats, b: EpStats): EpStats => ({
  txPackets: a.txPackets + b.txPackets,
  txBytes: a.txBytes + b.txBytes,
  rxPackets: a.rxPackets + b.rxPackets,
  rxBytes: a.rxBytes + b.rxBytes,
  drops: a.drops + b.drops,
});

/** A single-slot array map (bastion_config, bastion_state): key 0 only. */
export class SingletonMap<V> {
  private readonly typed: TypedMap<number, V>;
  constructor(readonly raw: BpfMap, codec: Codec<V>) {
    this.typed = new TypedMap(raw, u32, codec);
  }
  /** Array maps always have a value; an all-zero one until first written. */
  get(): V {
    return this.typed.get(0)!;
  }
  set(v: V): void {
    this.typed.set(0, v);
  }
}

/** Typed accessors for every pinned Bastion map. */
export interface BastionMaps {
  pinRoot: string;
  endpoints: TypedMap<number, EndpointInfo>;
  endpointsByIp: TypedMap<string, EndpointInfo>;
  ipcache: TypedMap<IpcacheKey, IpcacheVal>;
  policy: TypedMap<PolicyKey, PolicyVal>;
  neigh: TypedMap<NeighKey, number>;
  ct: TypedMap<CtKey, CtEntry>;
  /** conntrack entries charged to each endpoint, by identity (written by the datapath only) */
  ctUse: TypedMap<number, bigint>;
  frags: TypedMap<FragKey, FragVal>;
  /** the event rate limit's slots, by (endpoint, verdict, reason) */
  eventLimits: TypedMap<EventRlKey, EventRl>;
  /** allowed flows counted in the kernel, by (source, destination, protocol, port) (lib/summary.h) */
  flowSum: TypedMap<FlowSumKey, FlowSum>;
  /** how far the agent reported each of them (written by the agent only) */
  flowSeen: TypedMap<FlowSumKey, FlowSumSeen>;
  /** the ring buffer: read it with RingBufReader(maps.events.fd, ...) */
  events: BpfMap;
  counters: {
    raw: BpfMap;
    /** one counter (summed over CPUs) by REASON_* index */
    get(reason: number): Counter;
    /** all NR_COUNTERS counters, summed over CPUs, by index */
    all(): Counter[];
  };
  epStats: PerCpuSumMap<number, EpStats>;
  config: SingletonMap<DatapathConfig>;
  state: SingletonMap<ControlState>;
  /** other nodes' endpoints that local ones depend on, by IPv4 */
  remote: TypedMap<string, RemoteEndpointInfo>;
  /** this node's VXLAN device */
  tunnel: SingletonMap<TunnelInfo>;
  /** every underlying map, by pinned name */
  all: Record<string, BpfMap>;
  close(): void;
}

/**
 * Opens the Bastion maps pinned under `pinRoot` (by the datapath objects'
 * LIBBPF_PIN_BY_NAME maps) and checks each one's sizes against layout.ts.
 */
export function openBastionMaps(pinRoot: string = DEFAULT_PIN_PATH): BastionMaps {
  const opened: BpfMap[] = [];
  const open = (name: string, keySize?: number, valueSize?: number): BpfMap => {
    let m: BpfMap;
    try {
      m = BpfMap.openPinned(join(pinRoot, name), keySize, valueSize);
    } catch (e) {
      if (e instanceof LibbpfError && e.code === 'ENOENT') {
        throw new Error(`map ${name} is not pinned under ${pinRoot} (is the datapath loaded?)`);
      }
      throw e;
    }
    opened.push(m);
    return m;
  };
  try {
    const counters = open(MAP_NAMES.counters, 4, COUNTER_SIZE);
    if (counters.type !== BPF_MAP_TYPE_PERCPU_ARRAY) throw new Error(`${MAP_NAMES.counters} is not a per-CPU array`);
    const events = open(MAP_NAMES.events);
    if (events.type !== BPF_MAP_TYPE_RINGBUF) throw new Error(`${MAP_NAMES.events} is not a ring buffer`);
    const sumCounter = (raw: Buffer): Counter =>
      counters.splitPerCpu(raw).map((b) => decodeCounter(b)).reduce(addCounter);
    const maps: BastionMaps = {
      pinRoot,
      endpoints: new TypedMap(open(MAP_NAMES.endpoints, 4, ENDPOINT_INFO_SIZE), u32, endpointInfo),
      endpointsByIp: new TypedMap(open(MAP_NAMES.endpointsByIp, 4, ENDPOINT_INFO_SIZE), ipKey, endpointInfo),
      ipcache: new TypedMap(open(MAP_NAMES.ipcache, IPCACHE_KEY_SIZE, IPCACHE_VAL_SIZE), ipcacheKey, ipcacheVal),
      policy: new TypedMap(open(MAP_NAMES.policy, POLICY_KEY_SIZE, POLICY_VAL_SIZE), policyKey, policyVal),
      neigh: new TypedMap(open(MAP_NAMES.neigh, NEIGH_KEY_SIZE, 4), neighKey, u32),
      ct: new TypedMap(open(MAP_NAMES.ct, CT_KEY_SIZE, CT_ENTRY_SIZE), ctKey, ctEntry),
      ctUse: new TypedMap(open(MAP_NAMES.ctUse, 4, CT_USE_SIZE), u32, ctUse),
      frags: new TypedMap(open(MAP_NAMES.frags, FRAG_KEY_SIZE, FRAG_VAL_SIZE), fragKey, fragVal),
      eventLimits: new TypedMap(open(MAP_NAMES.eventLimits, EVENT_RL_KEY_SIZE, EVENT_RL_SIZE), eventRlKey, eventRl),
      flowSum: new TypedMap(open(MAP_NAMES.flowSum, FLOW_SUM_KEY_SIZE, FLOW_SUM_SIZE), flowSumKey, flowSum),
      flowSeen: new TypedMap(open(MAP_NAMES.flowSeen, FLOW_SUM_KEY_SIZE, FLOW_SUM_SEEN_SIZE), flowSumKey, flowSumSeen),
      events,
      counters: {
        raw: counters,
        get: (reason) => sumCounter(counters.lookup(encodeU32(reason))!),
        all: () => Array.from({ length: NR_COUNTERS }, (_, i) => sumCounter(counters.lookup(encodeU32(i))!)),
      },
      epStats: new PerCpuSumMap(open(MAP_NAMES.epStats, 4, EP_STATS_SIZE), u32, (b) => decodeEpStats(b), addEpStats),
      config: new SingletonMap(open(MAP_NAMES.config, 4, CONFIG_SIZE), config),
      state: new SingletonMap(open(MAP_NAMES.state, 4, STATE_SIZE), state),
      remote: new TypedMap(open(MAP_NAMES.remote, 4, REMOTE_ENDPOINT_SIZE), ipKey, remoteEndpoint),
      tunnel: new SingletonMap(open(MAP_NAMES.tunnel, 4, TUNNEL_INFO_SIZE), tunnelInfo),
      all: {},
      close: () => opened.forEach((m) => m.close()),
    };
    for (const m of opened) maps.all[m.name] = m;
    return maps;
  } catch (e) {
    opened.forEach((m) => m.close());
    throw e;
  }
}
