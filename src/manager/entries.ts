/**
 * The datapath state as the manager wants it: encoded map entries, keyed by
 * map and by the hex of the key. Diffing two of these gives the exact map
 * writes to go from one to the other, in an order that never opens a gap.
 */
import type { MapName } from '../datapath/layout.js';
import { MAP_NAMES } from '../datapath/layout.js';

export interface MapEntry {
  map: MapName;
  key: Buffer;
  value: Buffer;
}

export type MapOp =
  | { op: 'upsert'; map: MapName; key: Buffer; value: Buffer }
  | { op: 'delete'; map: MapName; key: Buffer };

/** map name -> hex(key) -> entry */
export type EntrySet = Map<MapName, Map<string, MapEntry>>;

export function emptyEntrySet(): EntrySet {
  return new Map();
}

export function addEntry(set: EntrySet, e: MapEntry): void {
  let m = set.get(e.map);
  if (!m) set.set(e.map, (m = new Map()));
  m.set(e.key.toString('hex'), e);
}

/*
 * Order of writes. Everything an endpoint needs (its address in the ipcache,
 * its policy, its neighbours) is written before the endpoint entries that
 * switch its stack from drop-all to enforcing; removals go the other way
 * round, endpoint entries first. Additions come before deletions, so a policy
 * change never has a moment where neither the old nor the new rule is in
 * place: established connections and new allowed ones keep flowing. Another
 * node's endpoint (bastion_remote) goes in with the addresses, before the
 * policy that names its identity, and out with the endpoint entries.
 */
const UPSERT_ORDER: MapName[] = [
  MAP_NAMES.ipcache,
  MAP_NAMES.remote,
  MAP_NAMES.policy,
  MAP_NAMES.neigh,
  MAP_NAMES.epStats,
  MAP_NAMES.endpointsByIp,
  MAP_NAMES.endpoints,
  MAP_NAMES.config,
];
const DELETE_ORDER: MapName[] = [
  MAP_NAMES.endpoints,
  MAP_NAMES.endpointsByIp,
  MAP_NAMES.remote,
  MAP_NAMES.neigh,
  MAP_NAMES.policy,
  MAP_NAMES.ipcache,
  MAP_NAMES.epStats,
];

/**
 * The desired state as the union of slices: one per endpoint (its endpoint
 * entries, its ipcache address, its policy, its neighbours) and a global one
 * (host addresses, CIDR prefixes, config). Entries are reference-counted
 * because two slices can want the same entry (a neighbour pair is wanted by
 * both ends). Replacing one slice costs in proportion to that slice, never
 * to the whole state: that is what keeps a policy change flat in the number
 * of containers.
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
  /** per shared map (by STORE_MAPS index): key → its value and the number of slices holding it (see held()) */
  private readonly shared: Array<Map<string, string>> = STORE_MAPS.map(() => new Map());
  /** the few distinct held() strings of small entries, so equal ones are one string */
  private readonly smallHeld = new Map<string, string>();
  /** entries of the owned (policy) map, over all slices */
  private ownedCount = 0;

  /** Replace a slice; returns the ordered writes that bring the maps in line. */
  replace(sliceId: string, next: EntrySet): MapOp[] {
    const prev = this.slices.get(sliceId) ?? [];
    const packed: Array<string | undefined> = [];
    const upserts: MapOp[][] = [];
    const deletes: MapOp[][] = [];
    const seen = new Set<number>();
    for (const [map, entries] of next) {
      const m = mapIndex(map);
      seen.add(m);
      const before = unpack(prev[m]);
      const parts: string[] = [];
      const ups: MapOp[] = (upserts[m] = []);
      const owned = m === OWNED;
      const shared = this.shared[m]!;
      const byDatapath = map === MAP_NAMES.epStats;
      for (const e of entries.values()) {
        const key = e.key.toString('latin1');
        const value = e.value.toString('latin1');
        parts.push(record(key, value));
        const old = before.get(key);
        before.delete(key);
        if (owned) {
          if (old === undefined) this.ownedCount++;
          if (old !== value) ups.push({ op: 'upsert', map, key: e.key, value: e.value });
          continue;
        }
        const cur = shared.get(key);
        if (cur === undefined) {
          shared.set(key, this.held(value, 1));
          ups.push({ op: 'upsert', map, key: e.key, value: e.value });
          continue;
        }
        // held by another slice too, or by this one before
        const holders = holdersOf(cur) + (old === undefined ? 1 : 0);
        const changed = valueOf(cur) !== value && !byDatapath;
        shared.set(key, this.held(changed ? value : valueOf(cur), holders));
        if (changed) ups.push({ op: 'upsert', map, key: e.key, value: e.value });
      }
      packed[m] = parts.length ? parts.join('') : undefined;
      this.release(m, before.keys(), deletes);
    }
    prev.forEach((p, m) => {
      if (p !== undefined && !seen.has(m)) this.release(m, unpack(p).keys(), deletes);
    });
    if (packed.some((p) => p !== undefined)) this.slices.set(sliceId, packed);
    else this.slices.delete(sliceId);

    const ops: MapOp[] = [];
    for (const map of UPSERT_ORDER) for (const op of upserts[mapIndex(map)] ?? []) ops.push(op);
    for (const map of DELETE_ORDER) for (const op of deletes[mapIndex(map)] ?? []) ops.push(op);
    return ops;
  }

  /** A slice lets go of these keys of map m: delete what no slice holds any more. */
  private release(m: number, keys: Iterable<string>, deletes: MapOp[][]): void {
    const map = STORE_MAPS[m]!;
    const shared = this.shared[m]!;
    for (const key of keys) {
      if (m === OWNED) this.ownedCount--;
      else {
        const cur = shared.get(key)!;
        const holders = holdersOf(cur) - 1;
        if (holders > 0) {
          shared.set(key, this.held(valueOf(cur), holders));
          continue;
        }
        shared.delete(key);
      }
      (deletes[m] ??= []).push({ op: 'delete', map, key: Buffer.from(key, 'latin1') });
    }
  }

  remove(sliceId: string): MapOp[] {
    return this.replace(sliceId, emptyEntrySet());
  }

  has(sliceId: string): boolean {
    return this.slices.has(sliceId);
  }

  /** Does some slice hold this key of a shared map? */
  holds(map: MapName, key: Buffer): boolean {
    const m = mapIndex(map);
    return m !== OWNED && this.shared[m]!.has(key.toString('latin1'));
  }

  /** Everything the maps should hold, for a full resync against the kernel. */
  all(): EntrySet {
    const set = emptyEntrySet();
    const add = (m: number, key: string, value: string) =>
      addEntry(set, { map: STORE_MAPS[m]!, key: Buffer.from(key, 'latin1'), value: Buffer.from(value, 'latin1') });
    this.shared.forEach((entries, m) => {
      for (const [key, h] of entries) add(m, key, valueOf(h));
    });
    for (const packed of this.slices.values()) {
      for (const [key, value] of unpack(packed[OWNED])) add(OWNED, key, value);
    }
    return set;
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

function valueOf(held: string): string {
  return held.slice(0, -1);
}
function holdersOf(held: string): number {
  return held.charCodeAt(held.length - 1);
}

/** The maps slices write to (every map of UPSERT_ORDER); a slice names them by index. */
const STORE_MAPS: readonly MapName[] = UPSERT_ORDER;
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
