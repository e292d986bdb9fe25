/**
 * From the entries the maps hold (current) to the entries compilation wants
 * (desired): per map, what to upsert and what to delete, and the one order
 * in which the agent must write them. Pure.
 *
 * The order is writeOrder(), and it is the daemon's: the manager's
 * reconciler (src/manager/reconciler.ts) hands it the net writes of every
 * commit, of every resync and of every drift repair. diffEntries() is the
 * same order over two whole states (decoded entries), for tests and tools.
 * writeOrder() never looks at the whole state: it classifies identities
 * from the writes themselves and from how many resolution keys map to each
 * identity now (IdentityCounts, kept up to date by the slice store), so a
 * change costs in proportion to its writes, not to the 220,000 entries of
 * 5,000 containers.
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
 *
 * Another node's endpoint (bastion_remote, cluster mode) is a resolution key
 * like an endpoint address: an exact match, looked up after bastion_ep_ip and
 * before the ipcache, mapping its address to its identity. It comes in and
 * goes with the endpoint addresses (steps 3 and 8), so the local endpoints'
 * entries naming a remote identity are complete before its address resolves
 * to it (step 1) and go only once it no longer does (step 10). Its ingress is
 * its own node's: it is not an endpoint's identity here.
 *
 * Maps outside the proof: bastion_ep_stat (the datapath's counters, and the
 * record of where a stack is attached) is created with the endpoint entries
 * (step 5) and deleted last; it decides no verdict.
 *
 * Classifying from the writes alone. With n(id) the number of resolution
 * keys (ipcache, endpoint-address and endpoint entries) that map to id now,
 * and d(id) what the writes add and take away (a write whose key maps to a
 * before and b after counts -1 for a and +1 for b when a ≠ b):
 *   live now     n(id) > 0            (ID_ANY and ID_WORLD always)
 *   live after   n(id) + d(id) > 0    (likewise)
 *   rekeyed      n(id) > 0, n(id) + d(id) > 0, and some write moves a key
 *                to or from id (its key set differs exactly then)
 *   an endpoint's identity: an endpoint key maps to it now, or a write
 *                gives one to it.
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

// ================================================================ the order

/**
 * The maps whose writes are ordered: those of the proof, the datapath's
 * per-endpoint counters, and (cluster mode) bastion_remote, another node's
 * endpoint: an exact key like an endpoint address (looked up after
 * bastion_ep_ip, before the ipcache) whose identity's ingress is checked on
 * its own node, so it resolves and unresolves with the endpoint addresses
 * but is not an endpoint's identity here.
 */
export type WriteMap = MapKind | 'epStats' | 'remote';

/** What the order needs to know of one write (the map entry itself stays with the caller). */
export interface Write {
  map: WriteMap;
  op: 'upsert' | 'delete';
  /** policy and neigh: the entry's endpoint identity and peer identity */
  epId?: number;
  peerId?: number;
  /** ipcache: the key's prefix length */
  prefixlen?: number;
  /** ipcache, endpointsByIp, endpoints, remote: the identity the key maps to before the write and after it (undefined: no entry) */
  before?: number;
  after?: number;
}

/** The resolution keys of the state the writes start from, counted by the identity they map to. */
export interface IdentityCounts {
  /** keys of bastion_ipcache, bastion_ep_ip, bastion_ep and bastion_remote that map to `id` */
  keys(id: number): number;
  /** of those, the keys of bastion_ep_ip and bastion_ep (an endpoint's) */
  endpointKeys(id: number): number;
}

const isResolution = (m: WriteMap): boolean => m === 'ipcache' || m === 'endpointsByIp' || m === 'endpoints' || m === 'remote';

/* Phases of the header, numbered as there; 3 and 8 are split by kind of key. */
const P_DELETE_ARRIVING = 0;
const P_UPSERT_EARLY = 1;
const P_DELETE_REKEYED = 2;
const P_RESOLVE_PREFIXES = 3;
const P_RESOLVE_EP_ADDRS = 4;
const P_RESOLVE_EP_PREFIXES = 5;
const P_UPSERT_STABLE = 6;
const P_UPSERT_ENDPOINTS = 7;
const P_DELETE_ENDPOINTS = 8;
const P_DELETE_STABLE = 9;
const P_UNRESOLVE_EP_PREFIXES = 10;
const P_UNRESOLVE_EP_ADDRS = 11;
const P_UNRESOLVE_PREFIXES = 12;
const P_UPSERT_LATE = 13;
const P_DELETE_LATE = 14;
const P_DELETE_STATS = 15;
const PHASES = 16;

/**
 * The one order of map writes (see the header): the indexes of `writes` in
 * the order they must be applied. `now` counts the resolution keys of the
 * state the writes start from. Costs in proportion to the writes.
 */
export function writeOrder(writes: readonly Write[], now: IdentityCounts): number[] {
  // What the writes do to the resolution keys of each identity.
  const delta = new Map<number, number>();
  const moved = new Set<number>();
  const endpointAfter = new Set<number>();
  for (const w of writes) {
    if (!isResolution(w.map)) continue;
    if ((w.map === 'endpointsByIp' || w.map === 'endpoints') && w.after !== undefined) endpointAfter.add(w.after);
    if (w.before === w.after) continue;
    if (w.before !== undefined) {
      delta.set(w.before, (delta.get(w.before) ?? 0) - 1);
      moved.add(w.before);
    }
    if (w.after !== undefined) {
      delta.set(w.after, (delta.get(w.after) ?? 0) + 1);
      moved.add(w.after);
    }
  }
  const ARRIVING = 1;
  const DEPARTING = 2;
  const REKEYED = 4;
  /** an identity's class as a bit (0: stable) */
  const cls = (id: number): number => {
    const n = now.keys(id);
    const after = n + (delta.get(id) ?? 0);
    const always = id === ID_ANY || id === ID_WORLD;
    if (!always && n <= 0) return ARRIVING;
    if (!always && after <= 0) return DEPARTING;
    return n > 0 && after > 0 && moved.has(id) ? REKEYED : 0;
  };
  const isEndpointId = (id: number | undefined): boolean => id !== undefined && (now.endpointKeys(id) > 0 || endpointAfter.has(id));

  const phase = (w: Write): number => {
    switch (w.map) {
      case 'policy':
      case 'neigh': {
        const k = cls(w.epId!) | cls(w.peerId!);
        const wildcard = w.peerId === ID_ANY;
        if (w.op === 'upsert') {
          if (k & (DEPARTING | REKEYED)) return P_UPSERT_LATE;
          // a wildcard-peer entry of the new state allows, in the new state, whatever the peer is
          return k & ARRIVING || wildcard ? P_UPSERT_EARLY : P_UPSERT_STABLE;
        }
        if (k & ARRIVING) return P_DELETE_ARRIVING;
        if (k & REKEYED) return P_DELETE_REKEYED;
        // an old wildcard-peer entry allowed, in the old state, whatever the peer is
        return k & DEPARTING || wildcard ? P_DELETE_LATE : P_DELETE_STABLE;
      }
      case 'ipcache': {
        const ep = isEndpointId(w.op === 'upsert' ? w.after : w.before);
        if (w.op === 'upsert') return ep ? P_RESOLVE_EP_PREFIXES : P_RESOLVE_PREFIXES;
        return ep ? P_UNRESOLVE_EP_PREFIXES : P_UNRESOLVE_PREFIXES;
      }
      case 'endpointsByIp':
      case 'remote':
        return w.op === 'upsert' ? P_RESOLVE_EP_ADDRS : P_UNRESOLVE_EP_ADDRS;
      case 'endpoints':
      case 'config':
        return w.op === 'upsert' ? P_UPSERT_ENDPOINTS : P_DELETE_ENDPOINTS;
      case 'epStats':
        return w.op === 'upsert' ? P_UPSERT_ENDPOINTS : P_DELETE_STATS;
    }
  };
  /** within a phase: policy before neigh, counters before endpoints before config (as the header lists them) */
  const RANK: Record<WriteMap, number> = { policy: 0, neigh: 1, ipcache: 0, endpointsByIp: 0, remote: 0, epStats: 0, endpoints: 1, config: 2 };

  const buckets: number[][] = Array.from({ length: PHASES * 3 }, () => []);
  writes.forEach((w, i) => buckets[phase(w) * 3 + RANK[w.map]]!.push(i));
  const out: number[] = [];
  for (let p = 0; p < PHASES; p++) {
    for (let r = 0; r < 3; r++) {
      const b = buckets[p * 3 + r]!;
      if (!b.length) continue;
      // prefixes: longest first while they come, shortest first while they go
      if (p === P_RESOLVE_PREFIXES || p === P_RESOLVE_EP_PREFIXES) b.sort((x, y) => writes[y]!.prefixlen! - writes[x]!.prefixlen! || x - y);
      if (p === P_UNRESOLVE_PREFIXES || p === P_UNRESOLVE_EP_PREFIXES) b.sort((x, y) => writes[x]!.prefixlen! - writes[y]!.prefixlen! || x - y);
      for (const i of b) out.push(i);
    }
  }
  return out;
}

/** The resolution keys of a whole state, counted by identity (a full scan: for tests, tools and resyncs). */
export function countIdentities(s: EntrySets): IdentityCounts {
  const keys = new Map<number, number>();
  const eps = new Map<number, number>();
  const add = (m: Map<number, number>, id: number) => m.set(id, (m.get(id) ?? 0) + 1);
  for (const e of s.ipcache?.values() ?? []) add(keys, e.val.identity);
  for (const st of [s.endpointsByIp, s.endpoints]) {
    for (const e of st?.values() ?? []) {
      add(keys, e.val.identity);
      add(eps, e.val.identity);
    }
  }
  return { keys: (id) => keys.get(id) ?? 0, endpointKeys: (id) => eps.get(id) ?? 0 };
}

// ================================================================ whole states

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

/** Identities live in both states whose set of keys differs (see the header; a reference for tests). */
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

function changed(map: MapKind, a: unknown, b: unknown): boolean {
  if (map === 'neigh') return false; // the key is everything
  return !sameValue((a as { val: unknown }).val, (b as { val: unknown }).val);
}

/** What the order needs to know of a write of this decoded entry (`old`: the entry it replaces or deletes). */
function facts(map: MapKind, op: 'upsert' | 'delete', entry: unknown, old: unknown): Write {
  switch (map) {
    case 'policy': {
      const k = (entry as PolicyEntry).key;
      return { map, op, epId: k.epId, peerId: k.peerId };
    }
    case 'neigh': {
      const n = entry as NeighKey;
      return { map, op, epId: n.epId, peerId: n.peerId };
    }
    case 'ipcache':
    case 'endpointsByIp':
    case 'endpoints': {
      const id = (e: unknown) => (e === undefined ? undefined : (e as { val: { identity: number } }).val.identity);
      const prefixlen = map === 'ipcache' ? (entry as IpcacheEntry).key.prefixlen : undefined;
      return { map, op, prefixlen, before: id(old), after: op === 'upsert' ? id(entry) : undefined };
    }
    case 'config':
      return { map, op };
  }
}

/** The ordered operations that turn `current` into `desired` (see the header for the order). */
export function diffEntries(current: EntrySets, desired: EntrySets): Diff {
  const maps = {} as Record<MapKind, { upserts: unknown[]; deletes: unknown[] }>;
  const writes: Write[] = [];
  const ops: DiffOp[] = [];
  for (const m of MAP_KINDS) {
    const cur = current[m] as ReadonlyMap<string, unknown> | undefined;
    const want = desired[m] as ReadonlyMap<string, unknown> | undefined;
    const d = { upserts: [] as unknown[], deletes: [] as unknown[] };
    if (want) {
      for (const [k, e] of want) {
        const old = cur?.get(k);
        if (old === undefined || changed(m, old, e)) {
          d.upserts.push(e);
          writes.push(facts(m, 'upsert', e, old));
          ops.push({ op: 'upsert', map: m, key: k, entry: e } as DiffOp);
        }
      }
    }
    if (cur && want) {
      // a map absent from `desired` is not managed here: nothing to delete
      for (const [k, e] of cur) {
        if (!want.has(k)) {
          d.deletes.push(e);
          writes.push(facts(m, 'delete', e, e));
          ops.push({ op: 'delete', map: m, key: k, entry: e } as DiffOp);
        }
      }
    }
    maps[m] = d;
  }
  const order = writeOrder(writes, countIdentities(current));
  return { maps: maps as unknown as MapDiff, ops: order.map((i) => ops[i]!) };
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
