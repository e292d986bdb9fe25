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

export function countEntries(set: EntrySet, map?: MapName): number {
  if (map) return set.get(map)?.size ?? 0;
  let n = 0;
  for (const m of set.values()) n += m.size;
  return n;
}

/*
 * Order of writes. Everything an endpoint needs (its address in the ipcache,
 * its policy, its neighbours) is written before the endpoint entries that
 * switch its stack from drop-all to enforcing; removals go the other way
 * round, endpoint entries first. Additions come before deletions, so a policy
 * change never has a moment where neither the old nor the new rule is in
 * place: established connections and new allowed ones keep flowing.
 */
const UPSERT_ORDER: MapName[] = [
  MAP_NAMES.ipcache,
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
  MAP_NAMES.neigh,
  MAP_NAMES.policy,
  MAP_NAMES.ipcache,
  MAP_NAMES.epStats,
];

/** The ordered writes that turn `current` into `desired`. Pure. */
export function diffEntries(current: EntrySet, desired: EntrySet, opts: { keepStats?: boolean } = {}): MapOp[] {
  const ops: MapOp[] = [];
  for (const map of UPSERT_ORDER) {
    const cur = current.get(map);
    for (const [hex, e] of desired.get(map) ?? []) {
      const old = cur?.get(hex);
      // Stats entries are created once and then owned by the datapath.
      if (old && (map === MAP_NAMES.epStats || old.value.equals(e.value))) continue;
      ops.push({ op: 'upsert', map, key: e.key, value: e.value });
    }
  }
  for (const map of DELETE_ORDER) {
    if (opts.keepStats && map === MAP_NAMES.epStats) continue;
    const want = desired.get(map);
    for (const [hex, e] of current.get(map) ?? []) {
      if (!want?.has(hex)) ops.push({ op: 'delete', map, key: e.key });
    }
  }
  return ops;
}

/** Apply ops to an EntrySet in memory (what the maps now hold). */
export function applyOpsToSet(set: EntrySet, ops: MapOp[]): void {
  for (const o of ops) {
    if (o.op === 'upsert') addEntry(set, { map: o.map, key: o.key, value: o.value });
    else set.get(o.map)?.delete(o.key.toString('hex'));
  }
}

/**
 * The desired state as the union of slices: one per endpoint (its endpoint
 * entries, its ipcache address, its policy, its neighbours) and a global one
 * (host addresses, CIDR prefixes, config). Entries are reference-counted
 * because two slices can want the same entry (a neighbour pair is wanted by
 * both ends). Replacing one slice costs in proportion to that slice, never
 * to the whole state: that is what keeps a policy change flat in the number
 * of containers.
 */
export class SliceStore {
  private readonly slices = new Map<string, EntrySet>();
  private readonly refs = new Map<MapName, Map<string, { entry: MapEntry; count: number }>>();

  /** Replace a slice; returns the ordered writes that bring the maps in line. */
  replace(sliceId: string, next: EntrySet): MapOp[] {
    const prev = this.slices.get(sliceId) ?? emptyEntrySet();
    if (countEntries(next) === 0) this.slices.delete(sliceId);
    else this.slices.set(sliceId, next);

    const upserts = new Map<MapName, MapOp[]>();
    const deletes = new Map<MapName, MapOp[]>();
    const push = (m: Map<MapName, MapOp[]>, op: MapOp) => {
      let l = m.get(op.map);
      if (!l) m.set(op.map, (l = []));
      l.push(op);
    };

    for (const [map, entries] of next) {
      const before = prev.get(map);
      let refs = this.refs.get(map);
      if (!refs) this.refs.set(map, (refs = new Map()));
      for (const [hex, e] of entries) {
        const old = before?.get(hex);
        const r = refs.get(hex);
        if (old) {
          if (!old.value.equals(e.value) && map !== MAP_NAMES.epStats) {
            if (r) r.entry = e;
            push(upserts, { op: 'upsert', map, key: e.key, value: e.value });
          }
          continue;
        }
        if (r) {
          r.count++;
          if (!r.entry.value.equals(e.value) && map !== MAP_NAMES.epStats) {
            r.entry = e;
            push(upserts, { op: 'upsert', map, key: e.key, value: e.value });
          }
        } else {
          refs.set(hex, { entry: e, count: 1 });
          push(upserts, { op: 'upsert', map, key: e.key, value: e.value });
        }
      }
    }
    for (const [map, entries] of prev) {
      const after = next.get(map);
      const refs = this.refs.get(map);
      for (const [hex, e] of entries) {
        if (after?.has(hex)) continue;
        const r = refs?.get(hex);
        if (!r) continue;
        if (--r.count === 0) {
          refs!.delete(hex);
          push(deletes, { op: 'delete', map, key: e.key });
        }
      }
    }
    const ops: MapOp[] = [];
    for (const map of UPSERT_ORDER) ops.push(...(upserts.get(map) ?? []));
    for (const map of DELETE_ORDER) ops.push(...(deletes.get(map) ?? []));
    return ops;
  }

  remove(sliceId: string): MapOp[] {
    return this.replace(sliceId, emptyEntrySet());
  }

  has(sliceId: string): boolean {
    return this.slices.has(sliceId);
  }

  /** Everything the maps should hold, for a full resync against the kernel. */
  all(): EntrySet {
    const set = emptyEntrySet();
    for (const [, refs] of this.refs) for (const [, r] of refs) addEntry(set, r.entry);
    return set;
  }

  count(map?: MapName): number {
    if (map) return this.refs.get(map)?.size ?? 0;
    let n = 0;
    for (const m of this.refs.values()) n += m.size;
    return n;
  }
}
