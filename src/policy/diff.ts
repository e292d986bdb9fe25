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
 * policy entries of those identities. An identity is "live" in a state when
 * some key maps to it there (the value of an ipcache, endpoint-address or
 * endpoint entry; ID_WORLD and ID_ANY always are). It is "rekeyed" when it
 * is live in both states but the set of keys that map to it differs: the
 * host when its addresses change, or an endpoint whose address changes while
 * it keeps its identity (a platform should rather give it a new identity).
 * A CIDR identity has one key, its prefix, for as long as it exists.
 *
 * The guarantees, at every step, for each of a packet's checks (the
 * source's egress when it is managed, the destination's ingress when it is
 * managed) on its own:
 *     allowed(now) ⇒ allowed(old) ∨ allowed(new)   (no transient allowance)
 *     allowed(old) ∧ allowed(new) ⇒ allowed(now)   (no transient denial)
 * the second between addresses that resolve to stable identities (a
 * container that comes or goes has no connections to keep). A packet with
 * one check (to or from the host or an outside address) therefore never
 * gets a verdict that neither state gives. A packet between two managed
 * endpoints may, for the duration of the update, be judged by one end's old
 * rules and the other end's new ones (say the egress rule moves from one end
 * to the other's ingress): two maps cannot change in one step, and keeping
 * "added allowances first" for each check is what keeps established and new
 * allowed connections flowing. test/unit/policy-diff.test.ts checks all of
 * this after every single operation, on random policy, endpoint and
 * host-address changes.
 *
 * Each identity of a policy or neighbour entry is arriving (live only in
 * the desired state), departing (live only now), rekeyed, or stable.
 *  0. Deletes of entries with an arriving identity: stale and inert now;
 *     they must not come back to life when step 3 makes it resolvable.
 *  1. Upserts of entries with an arriving identity (and otherwise stable
 *     ones): inert until step 3, and complete when it comes. (A new
 *     endpoint's policy and every rule naming it; a new prefix's policy.)
 *     Also every new entry with the wildcard peer (ID_ANY) of a stable
 *     endpoint: it allows, in the new state, whatever the peer resolves to,
 *     so it may come first; mirrored, an old wildcard entry goes last
 *     (step 10). (Otherwise an address whose prefix comes or goes would
 *     lose a wildcard allowance of both states while it moves.)
 *  2. Deletes of entries with a rekeyed identity: before its keys change, a
 *     rekeyed identity keeps only the entries valid in both states.
 *  3. Resolution: ipcache prefix upserts from the longest prefix to the
 *     shortest, then the endpoints' keys (the endpoint-address entry, an
 *     exact match that takes precedence over the ipcache and decides that
 *     the destination's ingress is checked; then its /32 in the ipcache). A
 *     prefix address now resolves either to the most specific old key
 *     containing it, whose identity has only old entries (new entries of
 *     stable identities come in step 4), or to the most specific new key
 *     containing it, whose identity's entries step 1 completed. Longest
 *     first is what makes "the most specific new key": a less specific new
 *     prefix never captures an address whose new prefix is not written yet.
 *     Endpoints come last so that a new endpoint's rules, complete since
 *     step 1, never apply while the prefixes its peers resolve to are not
 *     final (a new except not written yet would widen its egress). Before
 *     its keys, a new endpoint's address is judged as an address of the
 *     prefixes around it, and a cidr rule allows such an address only if it
 *     allows the endpoint too (compile.ts, peers case a; a prefix that names
 *     exactly the endpoint's address keeps its /32 in the ipcache, so it is
 *     written with the prefixes). (An endpoint's /32
 *     in the ipcache before its address entry would, for a moment, make it a
 *     known identity that is not managed: its peers' egress would apply
 *     without its ingress.)
 *  4. Upserts between stable identities. The keys are now old ∪ new, and an
 *     address that resolves to a stable identity resolves to it in both
 *     states.
 *  5. Endpoint upserts (the entry that switches a new endpoint's stack from
 *     drop-all to enforcing comes after everything it needs), then config.
 *  6. Endpoint deletes (a removed endpoint's stack drops everything from now).
 *  7. Deletes between stable identities: the new entries are all there, and
 *     the keys are still old ∪ new.
 *  8. Resolution, the mirror of step 3: the endpoints' keys (the /32, then
 *     the endpoint-address entry), then ipcache prefix deletes from the
 *     shortest prefix to the longest (an address resolves to its new key,
 *     or to its old most specific one, never to an old less specific one).
 *  9. Upserts of entries with a rekeyed or departing identity, now that
 *     every key is final (until now, such an entry would have applied to
 *     addresses that are that identity only in the old state).
 * 10. Deletes of entries with a departing identity (inert now), and of old
 *     wildcard-peer entries.
 * Upserts before deletes for everything that is not rekeyed means a rule
 * replaced by another never leaves a moment with neither (established and
 * new allowed connections keep flowing), and a loosened policy applies
 * before any tightening.
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
  for (const id of keysByIdentity(s).keys()) live.add(id);
  return live;
}

/** identity → the keys (of the ipcache and the endpoint maps) that map to it */
function keysByIdentity(s: EntrySets): Map<number, Set<string>> {
  const out = new Map<number, Set<string>>();
  const add = (id: number, k: string) => {
    let set = out.get(id);
    if (!set) out.set(id, (set = new Set()));
    set.add(k);
  };
  for (const [k, e] of s.ipcache ?? []) add(e.val.identity, `ipcache|${k}`);
  for (const [k, e] of s.endpointsByIp ?? []) add(e.val.identity, `ep_ip|${k}`);
  for (const [k, e] of s.endpoints ?? []) add(e.val.identity, `ep|${k}`);
  return out;
}

/** Identities live in both states whose set of keys differs (see the header). */
export function rekeyedIdentities(current: EntrySets, desired: EntrySets): Set<number> {
  const a = keysByIdentity(current);
  const b = keysByIdentity(desired);
  const out = new Set<number>();
  for (const [id, x] of a) {
    const y = b.get(id);
    if (y && (x.size !== y.size || [...x].some((k) => !y.has(k)))) out.add(id);
  }
  return out;
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
  // an identity that comes or goes is handled as inert on the side where it is not live
  const rekeyed = rekeyedIdentities(current, desired);
  const ops: DiffOp[] = [];
  const push = (op: 'upsert' | 'delete', m: MapKind, i: number) => {
    const entry = (op === 'upsert' ? maps[m].upserts : maps[m].deletes)[i];
    const key = (op === 'upsert' ? upKeys[m] : delKeys[m])[i]!;
    ops.push({ op, map: m, key, entry } as DiffOp);
  };
  // Each identity of an entry is arriving (live only after), departing (live only now), rekeyed, or stable.
  type Cls = 'arriving' | 'departing' | 'rekeyed' | 'stable';
  const kinds = (m: 'policy' | 'neigh', e: unknown): Set<Cls> =>
    new Set(
      entryIds(m, e as PolicyEntry | NeighKey).map((id): Cls => {
        const now = liveNow.has(id);
        const after = liveAfter.has(id);
        if (!now) return 'arriving';
        if (!after) return 'departing';
        return rekeyed.has(id) ? 'rekeyed' : 'stable';
      }),
    );
  const wildcard = (m: 'policy' | 'neigh', e: unknown) => entryIds(m, e as PolicyEntry | NeighKey)[1] === ID_ANY;
  /** when an upsert may be written: while inert, or once every identity has its final keys */
  const upsertPhase = (m: 'policy' | 'neigh', e: unknown): 'early' | 'stable' | 'late' => {
    const k = kinds(m, e);
    if (k.has('departing') || k.has('rekeyed')) return 'late';
    // a wildcard-peer entry of the new state allows, in the new state, whatever the peer is
    if (k.has('arriving') || wildcard(m, e)) return 'early';
    return 'stable';
  };
  /** when a delete may be made: while inert, before the keys change (tightening), or once inert again */
  const deletePhase = (m: 'policy' | 'neigh', e: unknown): 'early' | 'rekeyed' | 'stable' | 'late' => {
    const k = kinds(m, e);
    if (k.has('arriving')) return 'early';
    if (k.has('rekeyed')) return 'rekeyed';
    // an old wildcard-peer entry allowed, in the old state, whatever the peer is
    if (k.has('departing') || wildcard(m, e)) return 'late';
    return 'stable';
  };
  const upserts = (phase: ReturnType<typeof upsertPhase>) => {
    for (const m of ['policy', 'neigh'] as const)
      maps[m].upserts.forEach((e, i) => {
        if (upsertPhase(m, e) === phase) push('upsert', m, i);
      });
  };
  const deletes = (phase: ReturnType<typeof deletePhase>) => {
    for (const m of ['policy', 'neigh'] as const)
      maps[m].deletes.forEach((e, i) => {
        if (deletePhase(m, e) === phase) push('delete', m, i);
      });
  };
  // ipcache entries of endpoints (their /32) move with the endpoint-address map, after (before) every prefix
  const endpointIds = new Set<number>();
  for (const st of [current, desired]) {
    for (const e of st.endpointsByIp?.values() ?? []) endpointIds.add(e.val.identity);
    for (const e of st.endpoints?.values() ?? []) endpointIds.add(e.val.identity);
  }
  const isEndpointKey = (e: IpcacheEntry) => endpointIds.has(e.val.identity);
  const byPrefix = (which: 'upserts' | 'deletes', dir: 1 | -1, endpoints: boolean) =>
    (maps.ipcache[which] as IpcacheEntry[])
      .map((e, i) => [e.key.prefixlen, i, isEndpointKey(e)] as const)
      .filter(([, , ep]) => ep === endpoints)
      .sort((x, y) => dir * (x[0] - y[0]) || x[1] - y[1])
      .map(([, i]) => i);

  // 0. deletes inert already; 1. upserts still inert
  deletes('early');
  upserts('early');
  // 2. rekeyed identities keep only entries of both states
  deletes('rekeyed');
  // 3. resolution: prefixes longest first, then endpoint addresses (exact, then their /32)
  for (const i of byPrefix('upserts', -1, false)) push('upsert', 'ipcache', i);
  maps.endpointsByIp.upserts.forEach((_, i) => push('upsert', 'endpointsByIp', i));
  for (const i of byPrefix('upserts', -1, true)) push('upsert', 'ipcache', i);
  // 4. upserts between stable identities
  upserts('stable');
  // 5. endpoints, config
  maps.endpoints.upserts.forEach((_, i) => push('upsert', 'endpoints', i));
  maps.config.upserts.forEach((_, i) => push('upsert', 'config', i));
  // 6. endpoints
  maps.endpoints.deletes.forEach((_, i) => push('delete', 'endpoints', i));
  maps.config.deletes.forEach((_, i) => push('delete', 'config', i));
  // 7. deletes between stable identities
  deletes('stable');
  // 8. resolution: endpoint addresses (their /32, then exact), then prefixes shortest first
  for (const i of byPrefix('deletes', 1, true)) push('delete', 'ipcache', i);
  maps.endpointsByIp.deletes.forEach((_, i) => push('delete', 'endpointsByIp', i));
  for (const i of byPrefix('deletes', 1, false)) push('delete', 'ipcache', i);
  // 9. upserts involving rekeyed or departed identities, now at their final keys
  upserts('late');
  // 10. deletes involving departed identities (inert now)
  deletes('late');

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
