/**
 * From the entries the maps hold (current) to the entries compilation wants
 * (desired): per map, what to upsert and what to delete, and the one order
 * in which the agent must write them. Pure.
 *
 * Entry sets are maps from canonical key strings (compile.ts:
 * policyKeyString, neighKeyString, ipcacheKeyString; for the endpoint maps
 * any string that is equal exactly when the map keys are) to entries.
 *
 * The order, and why it is safe. Write "old" for the current state, "new"
 * for the desired one. A packet's verdict depends on the identities its
 * ends resolve to (bastion_ep_ip exactly, else the LPM ipcache) and on the
 * policy entries of those identities. The order guarantees that at every
 * step of the way, for every packet,
 *     allowed(old) ∧ allowed(new) ⇒ allowed(now)   (no transient denial)
 *     allowed(now) ⇒ allowed(old) ∨ allowed(new)   (no transient allowance)
 * (test/unit/policy-diff.test.ts checks both after every single operation on
 * random policy changes). An identity is "live" in a state when some
 * address can resolve to it there (it is the value of an ipcache,
 * endpoint-address or endpoint entry; ID_WORLD and ID_ANY always are).
 *
 *  0. Policy and neighbour deletes that involve an identity not live in the
 *     current state: they are inert already (and must not come back to life
 *     when step 2 makes that identity resolvable again).
 *  1. Policy and neighbour upserts that involve an identity not live in the
 *     current state. They are inert: no packet resolves to that identity
 *     yet. (A new endpoint's policy and every rule naming it; a new
 *     prefix's policy.)
 *  2. ipcache upserts, most specific prefix first; then endpoint-address
 *     upserts. An address now resolves either to the most specific old
 *     prefix containing it, with only old policy entries (the new entries of
 *     live identities come in step 3), or to the most specific new prefix
 *     containing it, whose policy step 1 has completed. Most specific first
 *     is what makes "the most specific new prefix": a less specific new
 *     prefix can never capture an address whose new prefix is not written
 *     yet.
 *  3. The other policy and neighbour upserts (live identities). The ipcache
 *     now holds old ∪ new, so an identity whose entries mix old and new is
 *     one the address resolves to in both states.
 *  4. Endpoint upserts (the entry that switches a new endpoint's stack from
 *     drop-all to enforcing comes after everything it needs), then config.
 *  5. Endpoint deletes (a removed endpoint's stack drops everything from now).
 *  6. Policy and neighbour deletes of identities that stay live in the
 *     desired state: the new entries are all there, and the ipcache still
 *     holds old ∪ new (the mirror of step 3).
 *  7. Endpoint-address deletes, then ipcache deletes, least specific prefix
 *     first (the mirror of step 2: an address resolves to the new prefix, or
 *     to its old most specific prefix, never to an old less specific one).
 *  8. Policy and neighbour deletes of identities no longer live: inert now.
 * Upserts before deletes everywhere means a rule replaced by another never
 * leaves a moment with neither (established and new allowed connections keep
 * flowing), and a loosened policy applies before any tightening.
 */
import type { DatapathConfig, EndpointInfo, NeighKey } from '../datapath/layout.js';
import { ID_ANY, ID_WORLD } from '../datapath/layout.js';
import type { IpcacheEntry, PolicyEntry } from './compile.js';

export interface EndpointAddrEntry {
  /** the endpoint's IPv4 address (bastion_ep_ip) */
  key: string;
  val: EndpointInfo;
}
export interface EndpointEntry {
  /** host-side ifindex (bastion_ep) */
  key: number;
  val: EndpointInfo;
}
export interface ConfigEntry {
  key: number;
  val: DatapathConfig;
}

export interface EntryOf {
  policy: PolicyEntry;
  neigh: NeighKey;
  ipcache: IpcacheEntry;
  endpointsByIp: EndpointAddrEntry;
  endpoints: EndpointEntry;
  config: ConfigEntry;
}
export type MapKind = keyof EntryOf;
export const MAP_KINDS: readonly MapKind[] = ['policy', 'neigh', 'ipcache', 'endpointsByIp', 'endpoints', 'config'];

/** Entries by map, each keyed by its canonical key string. Maps left out are not managed by the diff. */
export type EntrySets = { [M in MapKind]?: ReadonlyMap<string, EntryOf[M]> };

export type DiffOp = { [M in MapKind]: { op: 'upsert' | 'delete'; map: M; key: string; entry: EntryOf[M] } }[MapKind];

export type MapDiff = { [M in MapKind]: { upserts: EntryOf[M][]; deletes: EntryOf[M][] } };

export interface Diff {
  /** per map, in no particular order */
  maps: MapDiff;
  /** every operation, in the order the agent must apply them */
  ops: DiffOp[];
}

/** Structural equality of two values (plain objects, arrays, primitives). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b, k)) return false;
    if (!sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}

/** Identities some address can resolve to in this state. */
export function liveIdentities(s: EntrySets): Set<number> {
  const live = new Set<number>([ID_ANY, ID_WORLD]);
  for (const e of s.ipcache?.values() ?? []) live.add(e.val.identity);
  for (const e of s.endpointsByIp?.values() ?? []) live.add(e.val.identity);
  for (const e of s.endpoints?.values() ?? []) live.add(e.val.identity);
  return live;
}

function entryIds(map: 'policy' | 'neigh', e: PolicyEntry | NeighKey): [number, number] {
  if (map === 'policy') {
    const k = (e as PolicyEntry).key;
    return [k.epId, k.peerId];
  }
  const n = e as NeighKey;
  return [n.epId, n.peerId];
}

function changed(map: MapKind, a: unknown, b: unknown): boolean {
  if (map === 'neigh') return false; // the key is everything
  return !sameValue((a as { val: unknown }).val, (b as { val: unknown }).val);
}

/** The ordered operations that turn `current` into `desired` (see the header for the order). */
export function diffEntries(current: EntrySets, desired: EntrySets): Diff {
  const maps = {} as Record<MapKind, { upserts: unknown[]; deletes: unknown[] }>;
  const upKeys = {} as Record<MapKind, string[]>;
  const delKeys = {} as Record<MapKind, string[]>;
  for (const m of MAP_KINDS) {
    const cur = current[m] as ReadonlyMap<string, unknown> | undefined;
    const want = desired[m] as ReadonlyMap<string, unknown> | undefined;
    const d = { upserts: [] as unknown[], deletes: [] as unknown[] };
    upKeys[m] = [];
    delKeys[m] = [];
    if (want) {
      for (const [k, e] of want) {
        const old = cur?.get(k);
        if (old === undefined || changed(m, old, e)) {
          d.upserts.push(e);
          upKeys[m].push(k);
        }
      }
    }
    if (cur && want) {
      // a map absent from `desired` is not managed here: nothing to delete
      for (const [k, e] of cur) {
        if (!want.has(k)) {
          d.deletes.push(e);
          delKeys[m].push(k);
        }
      }
    }
    maps[m] = d;
  }

  const liveNow = liveIdentities(current);
  const liveAfter = liveIdentities(desired);
  const ops: DiffOp[] = [];
  const push = (op: 'upsert' | 'delete', m: MapKind, i: number) => {
    const entry = (op === 'upsert' ? maps[m].upserts : maps[m].deletes)[i];
    const key = (op === 'upsert' ? upKeys[m] : delKeys[m])[i]!;
    ops.push({ op, map: m, key, entry } as DiffOp);
  };
  const allLive = (m: 'policy' | 'neigh', e: unknown, live: Set<number>) => {
    const [a, b] = entryIds(m, e as PolicyEntry | NeighKey);
    return live.has(a) && live.has(b);
  };
  const byPrefix = (m: 'ipcache', which: 'upserts' | 'deletes', dir: 1 | -1) =>
    (maps[m][which] as IpcacheEntry[])
      .map((e, i) => [e.key.prefixlen, i] as const)
      .sort((x, y) => dir * (x[0] - y[0]) || x[1] - y[1])
      .map(([, i]) => i);

  // 0. deletes that are inert already
  for (const m of ['policy', 'neigh'] as const)
    maps[m].deletes.forEach((e, i) => {
      if (!allLive(m, e, liveNow)) push('delete', m, i);
    });
  // 1. inert upserts
  for (const m of ['policy', 'neigh'] as const)
    maps[m].upserts.forEach((e, i) => {
      if (!allLive(m, e, liveNow)) push('upsert', m, i);
    });
  // 2. resolution: ipcache most specific first, then endpoint addresses
  for (const i of byPrefix('ipcache', 'upserts', -1)) push('upsert', 'ipcache', i);
  maps.endpointsByIp.upserts.forEach((_, i) => push('upsert', 'endpointsByIp', i));
  // 3. upserts of live identities
  for (const m of ['policy', 'neigh'] as const)
    maps[m].upserts.forEach((e, i) => {
      if (allLive(m, e, liveNow)) push('upsert', m, i);
    });
  // 4. endpoints, config
  maps.endpoints.upserts.forEach((_, i) => push('upsert', 'endpoints', i));
  maps.config.upserts.forEach((_, i) => push('upsert', 'config', i));
  // 5. endpoints
  maps.endpoints.deletes.forEach((_, i) => push('delete', 'endpoints', i));
  maps.config.deletes.forEach((_, i) => push('delete', 'config', i));
  // 6. deletes of identities that stay live
  for (const m of ['policy', 'neigh'] as const)
    maps[m].deletes.forEach((e, i) => {
      if (allLive(m, e, liveNow) && allLive(m, e, liveAfter)) push('delete', m, i);
    });
  // 7. resolution: endpoint addresses, then ipcache least specific first
  maps.endpointsByIp.deletes.forEach((_, i) => push('delete', 'endpointsByIp', i));
  for (const i of byPrefix('ipcache', 'deletes', 1)) push('delete', 'ipcache', i);
  // 8. inert deletes
  for (const m of ['policy', 'neigh'] as const)
    maps[m].deletes.forEach((e, i) => {
      if (allLive(m, e, liveNow) && !allLive(m, e, liveAfter)) push('delete', m, i);
    });

  return { maps: maps as unknown as MapDiff, ops };
}

/** Applies operations to a copy of `state` (what the maps hold afterwards). Pure. */
export function applyOps(state: EntrySets, ops: readonly DiffOp[]): EntrySets {
  const out: { [M in MapKind]?: Map<string, EntryOf[M]> } = {};
  for (const m of MAP_KINDS) {
    const s = state[m];
    if (s) (out as Record<MapKind, Map<string, unknown>>)[m] = new Map(s as ReadonlyMap<string, unknown>);
  }
  for (const o of ops) {
    const table = (out as Record<MapKind, Map<string, unknown> | undefined>)[o.map] ??
      ((out as Record<MapKind, Map<string, unknown>>)[o.map] = new Map());
    if (o.op === 'upsert') table.set(o.key, o.entry);
    else table.delete(o.key);
  }
  return out;
}
