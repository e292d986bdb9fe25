/**
 * The datapath state as the manager wants it: encoded map entries, per
 * slice. Replacing slices and committing gives the exact map writes that go
 * from what was written to what is wanted, in the one order of
 * src/policy/diff.ts (writeOrder), the order whose every intermediate state
 * is proven safe.
 */
import type { MapName } from '../datapath/layout.js';
import { MAP_NAMES } from '../datapath/layout.js';
import { writeOrder, type IdentityCounts, type Write, type WriteMap } from '../policy/diff.js';
import { MapDigest } from './digest.js';
import { PairKeyMap } from './pair-key-map.js';

export interface MapEntry {
  map: MapName;
  key: Buffer;
  value: Buffer;
}

export type MapOp =
  | { op: 'upsert'; map: MapName; key: Buffer; value: Buffer }
  | { op: 'delete'; map: MapName; key: Buffer };

/**
 * A slice's entries: map name -> key -> value, both as latin1 strings (one
 * character per byte), the form the store packs and compares them in. A
 * slice is rebuilt on every change that touches its endpoint, so its
 * entries are made as strings directly (src/datapath/layout.ts, the
 * `...Latin1` encoders): no Buffer per key and value.
 */
export type EntrySet = Map<MapName, Map<string, string>>;

export function emptyEntrySet(): EntrySet {
  return new Map();
}

/** Add an entry given as latin1 key and value (a later one of the same key replaces it). */
export function addPacked(set: EntrySet, map: MapName, key: string, value: string): void {
  let m = set.get(map);
  if (!m) set.set(map, (m = new Map()));
  m.set(key, value);
}

/** Add an entry given as Buffers. */
export function addEntry(set: EntrySet, e: MapEntry): void {
  addPacked(set, e.map, e.key.toString('latin1'), e.value.toString('latin1'));
}

/** The maps slices write to; a slice names them by index in this list (the order of writes is writeOrder's, not this). */
export const STORE_MAPS: readonly MapName[] = [
  MAP_NAMES.ipcache,
  MAP_NAMES.policy,
  MAP_NAMES.neigh,
  MAP_NAMES.epStats,
  MAP_NAMES.endpointsByIp,
  MAP_NAMES.endpoints,
  MAP_NAMES.config,
  // cluster mode: other nodes' endpoints that local ones depend on, and this node's tunnel
  MAP_NAMES.remote,
  MAP_NAMES.tunnel,
];

/** How writeOrder() calls each map. */
const KIND: Record<string, WriteMap> = {
  [MAP_NAMES.ipcache]: 'ipcache',
  [MAP_NAMES.policy]: 'policy',
  [MAP_NAMES.neigh]: 'neigh',
  [MAP_NAMES.epStats]: 'epStats',
  [MAP_NAMES.endpointsByIp]: 'endpointsByIp',
  [MAP_NAMES.endpoints]: 'endpoints',
  [MAP_NAMES.config]: 'config',
  [MAP_NAMES.remote]: 'remote',
  // one array slot, written like the config: with the endpoints, after what they need
  [MAP_NAMES.tunnel]: 'config',
};

/** What the store asks of its index of one shared map (a Map, or a PairKeyMap for 8-byte keys). */
interface SharedIndex extends Iterable<[string, string]> {
  get(key: string): string | undefined;
  set(key: string, held: string): unknown;
  delete(key: string): boolean;
  readonly size: number;
}

/** One entry's change: its value before (undefined: absent) and after (undefined: deleted), as latin1 strings. */
export interface EntryChange {
  map: MapName;
  key: string;
  before: string | undefined;
  after: string | undefined;
}

/**
 * The desired state as the union of slices: one per endpoint (its endpoint
 * entries, its ipcache address, its policy, its neighbours) and a global one
 * (host addresses, CIDR prefixes, config). Entries are reference-counted
 * because two slices can want the same entry (a neighbour pair is wanted by
 * both ends). Replacing one slice costs in proportion to that slice, never
 * to the whole state: that is what keeps a policy change flat in the number
 * of containers.
 *
 * A commit takes what the replaced slices changed since the last commit, as
 * net changes per entry (an entry one slice lets go of and another takes up
 * in the same commit is not written at all), and orders them with
 * writeOrder(). What that needs of the state before the commit is kept up
 * to date here, at the cost of each change: how many resolution keys map to
 * each identity. So is a digest of each map (digest.ts), for drift checks.
 *
 * Kept compact, because at 5,000 containers it holds a quarter of a million
 * entries (it was 200 MB as Buffers in nested Maps):
 * - a slice is one string per map, its entries' keys and values packed as
 *   one-byte characters (latin1), decoded only while the slice is replaced;
 * - policy entries belong to exactly one slice (their key starts with the
 *   endpoint's identity), so they are nowhere else;
 * - entries of the other maps may be held by several slices: `shared` has
 *   each one's current value and how many slices hold it, in one string
 *   (neighbour entries, most of them, all share a handful of such strings).
 * Buffers exist only for the writes of one change.
 *
 * Slices that hold the same entry want the same value (a neighbour pair is
 * always 1). Were two ever to disagree, the last one written wins.
 */
export class SliceStore {
  /** slice id → packed entries, by STORE_MAPS index */
  private readonly slices = new Map<string, Array<string | undefined>>();
  /**
   * per shared map (by STORE_MAPS index): key → its value and the number of
   * slices holding it (see held()); the neighbour pairs, most of the shared
   * entries, in typed arrays (pair-key-map.ts)
   */
  private readonly shared: SharedIndex[] = STORE_MAPS.map((m) => (m === MAP_NAMES.neigh ? new PairKeyMap() : new Map()));
  /** the few distinct held() strings of small entries, so equal ones are one string */
  private readonly smallHeld = new Map<string, string>();
  /** entries of the owned (policy) map, over all slices */
  private ownedCount = 0;
  /** the slice that holds an identity's policy entries (their key starts with it), to find one entry's value */
  private readonly ownerOf = new Map<number, string>();
  /** changes since the last commit of policy entries (one slice owns each) */
  private pendingOwned: EntryChange[] = [];
  /** slices replaced since the last commit: one replaced twice may have changed a policy entry twice */
  private replacedSlices = new Set<string>();
  private replacedTwice = false;
  /** changes since the last commit of shared entries, by map index character + key (several slices may touch one) */
  private pendingShared = new Map<string, EntryChange>();
  /** resolution keys (ipcache, endpoint-address and endpoint entries) by the identity they map to, as committed */
  private readonly idKeys = new Map<number, number>();
  /** of those, the endpoint maps' keys */
  private readonly idEndpointKeys = new Map<number, number>();
  /** per map (by STORE_MAPS index), the digest of its committed entries (bastion_ep_stat: keys only) */
  private readonly digests: MapDigest[] = STORE_MAPS.map(() => new MapDigest());

  /** The committed state's resolution keys by identity (what writeOrder needs of the state the writes start from). */
  readonly identities: IdentityCounts = {
    keys: (id) => this.idKeys.get(id) ?? 0,
    endpointKeys: (id) => this.idEndpointKeys.get(id) ?? 0,
  };

  /** Replace a slice (nothing is written until commit()). */
  replace(sliceId: string, next: EntrySet): void {
    if (this.replacedSlices.has(sliceId)) this.replacedTwice = true;
    this.replacedSlices.add(sliceId);
    const prev = this.slices.get(sliceId) ?? [];
    const packed: Array<string | undefined> = [];
    const seen = new Set<number>();
    for (const [map, entries] of next) {
      const m = mapIndex(map);
      seen.add(m);
      const parts: string[] = [];
      for (const [key, value] of entries) parts.push(record(key, value));
      const now = parts.length ? parts.join('') : undefined;
      // The same entries in the same order: this slice changes nothing in
      // this map (most of a policy change's slices: its neighbours, address
      // and endpoint entries), so there is nothing to diff or recount.
      if (now === prev[m]) {
        packed[m] = prev[m];
        continue;
      }
      const before = unpack(prev[m]);
      const owned = m === OWNED;
      const shared = this.shared[m]!;
      const byDatapath = map === MAP_NAMES.epStats;
      for (const [key, value] of entries) {
        const old = before.get(key);
        before.delete(key);
        if (owned) {
          if (old === undefined) this.ownedCount++;
          const epId = u32At(key, 4);
          if (this.ownerOf.get(epId) !== sliceId) this.ownerOf.set(epId, sliceId);
          if (old !== value) this.pendingOwned.push({ map, key, before: old, after: value });
          continue;
        }
        const cur = shared.get(key);
        if (cur === undefined) {
          shared.set(key, this.held(value, 1));
          this.noteShared(m, key, undefined, value);
          continue;
        }
        // held by another slice too, or by this one before
        const holders = holdersOf(cur) + (old === undefined ? 1 : 0);
        // counters belong to the datapath once created: never rewritten
        const changed = valueOf(cur) !== value && !byDatapath;
        shared.set(key, this.held(changed ? value : valueOf(cur), holders));
        if (changed) this.noteShared(m, key, valueOf(cur), value);
      }
      packed[m] = now;
      this.release(m, before);
    }
    prev.forEach((p, m) => {
      if (p !== undefined && !seen.has(m)) this.release(m, unpack(p));
    });
    if (packed.some((p) => p !== undefined)) this.slices.set(sliceId, packed);
    else this.slices.delete(sliceId);
    // a slice's policy entries all start with its endpoint's identity (the packed record's key from offset 1)
    const epBefore = prev[OWNED] === undefined ? undefined : u32At(prev[OWNED], 5);
    const epAfter = packed[OWNED] === undefined ? undefined : u32At(packed[OWNED], 5);
    if (epBefore !== undefined && epBefore !== epAfter && this.ownerOf.get(epBefore) === sliceId) this.ownerOf.delete(epBefore);
  }

  /** A slice lets go of these entries of map m: what no slice holds any more goes. */
  private release(m: number, entries: Map<string, string>): void {
    const map = STORE_MAPS[m]!;
    const shared = this.shared[m]!;
    for (const [key, value] of entries) {
      if (m === OWNED) {
        this.ownedCount--;
        this.pendingOwned.push({ map, key, before: value, after: undefined });
        continue;
      }
      const cur = shared.get(key)!;
      const holders = holdersOf(cur) - 1;
      if (holders > 0) {
        shared.set(key, this.held(valueOf(cur), holders));
        continue;
      }
      shared.delete(key);
      this.noteShared(m, key, valueOf(cur), undefined);
    }
  }

  private noteShared(m: number, key: string, before: string | undefined, after: string | undefined): void {
    const id = String.fromCharCode(m) + key;
    const p = this.pendingShared.get(id);
    if (p) p.after = after;
    else this.pendingShared.set(id, { map: STORE_MAPS[m]!, key, before, after });
  }

  remove(sliceId: string): void {
    this.replace(sliceId, emptyEntrySet());
  }

  has(sliceId: string): boolean {
    return this.slices.has(sliceId);
  }

  /**
   * The writes that take the maps from the last commit to the slices as they
   * are now, in writeOrder(): net changes only, each entry at most once.
   */
  commit(): MapOp[] {
    let changes: EntryChange[] = this.pendingOwned;
    if (this.replacedTwice) changes = netChanges(changes);
    for (const c of this.pendingShared.values()) if (c.before !== c.after) changes.push(c);
    this.pendingOwned = [];
    this.replacedSlices = new Set();
    this.replacedTwice = false;
    this.pendingShared = new Map();
    const order = writeOrder(changes.map(writeFacts), this.identities);
    // the counts and digests describe the committed state from here on
    for (const c of changes) this.settle(c);
    return order.map((i) => toOp(changes[i]!));
  }

  /** Account for one committed change in the identity counts and the digest. */
  private settle(c: EntryChange): void {
    const m = mapIndex(c.map);
    const keysOnly = c.map === MAP_NAMES.epStats;
    if (c.before !== undefined) this.digests[m]!.addString(c.key, keysOnly ? '' : c.before, -1);
    if (c.after !== undefined) this.digests[m]!.addString(c.key, keysOnly ? '' : c.after, 1);
    const kind = KIND[c.map];
    if (kind !== 'ipcache' && kind !== 'endpointsByIp' && kind !== 'endpoints' && kind !== 'remote') return;
    // another node's endpoint resolves its address here, but its stack (and ingress) is on its node
    const ep = kind === 'endpointsByIp' || kind === 'endpoints';
    if (c.before !== undefined) {
      bump(this.idKeys, u32At(c.before, 0), -1);
      if (ep) bump(this.idEndpointKeys, u32At(c.before, 0), -1);
    }
    if (c.after !== undefined) {
      bump(this.idKeys, u32At(c.after, 0), 1);
      if (ep) bump(this.idEndpointKeys, u32At(c.after, 0), 1);
    }
  }

  /** Has a commit been left out? (Every replace must be followed by a commit before the state is read back.) */
  get uncommitted(): boolean {
    return this.pendingOwned.length > 0 || this.pendingShared.size > 0;
  }

  /** The digest of a map's committed entries (bastion_ep_stat: of its keys). */
  digest(map: MapName): MapDigest {
    return this.digests[mapIndex(map)]!;
  }

  /** Does the committed state hold this key of a map? */
  holds(map: MapName, key: Buffer): boolean {
    return this.value(map, key.toString('latin1')) !== undefined;
  }

  /** One committed entry's value (latin1), or undefined. */
  value(map: MapName, key: string): string | undefined {
    const m = mapIndex(map);
    if (m !== OWNED) {
      const h = this.shared[m]!.get(key);
      return h === undefined ? undefined : valueOf(h);
    }
    const slice = this.ownerOf.get(u32At(key, 4));
    return slice === undefined ? undefined : unpack(this.slices.get(slice)?.[OWNED]).get(key);
  }

  /** Every committed entry of a map, as latin1 key and value (a drift repair; costs the map's size). */
  *entries(map: MapName): Generator<[string, string]> {
    const m = mapIndex(map);
    if (m === OWNED) {
      for (const packed of this.slices.values()) yield* unpack(packed[OWNED]);
      return;
    }
    for (const [key, h] of this.shared[m]!) yield [key, valueOf(h)];
  }

  count(map?: MapName): number {
    if (map) return mapIndex(map) === OWNED ? this.ownedCount : this.shared[mapIndex(map)]!.size;
    let n = this.ownedCount;
    for (const v of this.shared) n += v.size;
    return n;
  }

  /** A shared entry's value and holder count as one string: the value, then the count as one character. */
  private held(value: string, holders: number): string {
    // an entry is held by its owner, or by the two ends of a neighbour pair
    if (holders > 0xffff) throw new Error(`map entry held by ${holders} slices`);
    const h = value + String.fromCharCode(holders);
    if (value.length > 4) return h;
    let s = this.smallHeld.get(h);
    if (s === undefined) this.smallHeld.set(h, (s = h));
    return s;
  }
}

/** Several changes of one key as one: the first one's before, the last one's after; none when they are equal. */
function netChanges(list: EntryChange[]): EntryChange[] {
  const byKey = new Map<string, EntryChange>();
  for (const c of list) {
    const p = byKey.get(c.key);
    if (p) p.after = c.after;
    else byKey.set(c.key, { ...c });
  }
  return [...byKey.values()].filter((c) => c.before !== c.after);
}

function bump(m: Map<number, number>, id: number, by: number): void {
  const n = (m.get(id) ?? 0) + by;
  if (n > 0) m.set(id, n);
  else m.delete(id);
}

/** A little-endian u32 at `off` of a latin1 string (one character per byte). */
export function u32At(s: string, off: number): number {
  return (s.charCodeAt(off) | (s.charCodeAt(off + 1) << 8) | (s.charCodeAt(off + 2) << 16) | (s.charCodeAt(off + 3) << 24)) >>> 0;
}

/**
 * What writeOrder needs of an encoded entry's change (layout.ts): a policy
 * key is prefixlen, endpoint identity, peer identity, ...; a neighbour key
 * endpoint identity, peer identity; an ipcache key starts with its prefix
 * length, and the values of the ipcache, the endpoint maps and the remote
 * endpoint map with the identity the key maps to.
 */
export function writeFacts(c: EntryChange): Write {
  const map = KIND[c.map];
  if (!map) throw new Error(`map ${c.map} is not written from slices`);
  const op = c.after === undefined ? 'delete' : 'upsert';
  switch (map) {
    case 'policy':
      return { map, op, epId: u32At(c.key, 4), peerId: u32At(c.key, 8) };
    case 'neigh':
      return { map, op, epId: u32At(c.key, 0), peerId: u32At(c.key, 4) };
    case 'ipcache':
    case 'endpointsByIp':
    case 'endpoints':
    case 'remote':
      return {
        map,
        op,
        prefixlen: map === 'ipcache' ? u32At(c.key, 0) : undefined,
        before: c.before === undefined ? undefined : u32At(c.before, 0),
        after: c.after === undefined ? undefined : u32At(c.after, 0),
      };
    default:
      return { map, op };
  }
}

export function toOp(c: EntryChange): MapOp {
  const key = Buffer.from(c.key, 'latin1');
  return c.after === undefined ? { op: 'delete', map: c.map, key } : { op: 'upsert', map: c.map, key, value: Buffer.from(c.after, 'latin1') };
}

function valueOf(held: string): string {
  return held.slice(0, -1);
}
function holdersOf(held: string): number {
  return held.charCodeAt(held.length - 1);
}

/** the map whose entries belong to one slice only */
const OWNED = STORE_MAPS.indexOf(MAP_NAMES.policy);

function mapIndex(map: MapName): number {
  const i = STORE_MAPS.indexOf(map);
  if (i < 0) throw new Error(`map ${map} is not written from slices`);
  return i;
}

/** One entry, packed: key length, key, value length, value (one character per byte). */
function record(key: string, value: string): string {
  return String.fromCharCode(key.length) + key + String.fromCharCode(value.length) + value;
}

function unpack(packed: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (packed === undefined) return out;
  let i = 0;
  while (i < packed.length) {
    const kl = packed.charCodeAt(i);
    const key = packed.slice(i + 1, i + 1 + kl);
    i += 1 + kl;
    const vl = packed.charCodeAt(i);
    out.set(key, packed.slice(i + 1, i + 1 + vl));
    i += 1 + vl;
  }
  return out;
}
