/**
 * Compilation of the internal policy model (model.ts) into the datapath's
 * map entries (layout.ts / bpf/lib/maps.h): the policy LPM map, the
 * neighbour (ARP) map and the ipcache. Pure: no I/O, no clock, no
 * randomness; the same input always gives the same entries.
 *
 * Policy entries. For each endpoint E and each rule whose subject selects E,
 * for each identity the rule's peers resolve to, for each port prefix:
 *   { epId: E, peerId, direction, proto, dport, prefixlen } → { ruleId }
 * Peer resolution:
 *   endpoints S      → identities of the managed endpoints S matches
 *   host             → ID_HOST
 *   any              → ID_ANY (the wildcard peer: one entry, never expanded)
 *   cidr X except Es → (a) identities of managed endpoints whose IP is in X
 *                      and in none of Es, and (b) the identities of every
 *                      registered prefix P with P ⊆ X and P ⊄ E for every E.
 * Registered prefixes are every cidr and except prefix any rule names, plus
 * 0.0.0.0/0 (ID_WORLD). They all go into the ipcache.
 *
 * Why (b) is exact. The datapath resolves an address a that is neither a
 * managed endpoint nor a host address through the LPM ipcache, i.e. to m(a),
 * the most specific registered prefix that contains a (0.0.0.0/0 always
 * does, so m(a) exists). Two prefixes that share an address are nested. Let
 * S = { P registered : P ⊆ X, P ⊄ E for all E }. Then m(a) ∈ S ⟺ a ∈ X \ ∪E:
 *   (⇐) a ∈ X and X is registered, so m(a), the most specific registered
 *       prefix containing a, is nested in X: m(a) ⊆ X. If m(a) ⊆ E for some
 *       E, then a ∈ E: impossible. So m(a) ∈ S.
 *   (⇒) m(a) ⊆ X, so a ∈ X. If a ∈ E for some E: E is registered and
 *       contains a, so m(a) ⊆ E, contradicting m(a) ∈ S. So a ∉ ∪E.
 * Managed endpoints are resolved by exact address first (bastion_ep_ip), so
 * (a) covers them; host addresses resolve to ID_HOST, which is in no S: the
 * host is never a CIDR peer, as the model says. The property test in
 * test/unit/policy-evaluate.test.ts checks this against the reference
 * evaluator on random rules, prefixes and addresses.
 *
 * Requirements on the caller: cidrIdentity is stable, injective, and never
 * returns an identity used by an endpoint or a reserved one (it is never
 * called for 0.0.0.0/0, which is ID_WORLD); ruleNumber is stable, and
 * should be ≥ 1 (the datapath reports rule 0 as 1).
 *
 * Ports: no ports → prefixlen 72 (proto PROTO_ANY, every protocol); protocol
 * 'any' → 72; icmp → proto 1 at 80; tcp/udp/sctp 0-65535 → 80; another
 * range → its minimal prefixes (80 + bits, ports.ts). A named port resolves
 * on the destination: for an ingress rule E itself; for an egress rule each
 * peer endpoint separately (so the entry is per peer identity; a peer that is
 * not a managed endpoint — host, prefix, world — never declares one, and
 * 'any' then means every managed endpoint that declares it). A name no
 * destination declares (with that protocol) gives no entry. Identical keys
 * keep the lowest rule number.
 *
 * Neighbour entries. For every policy entry (E, peer): (E, peer) and
 * (peer, E) when the peer is a managed endpoint (either may need the other's
 * MAC: the one that opens and the one that answers); (E, ID_HOST) when the
 * peer is the host, a prefix, the world or ID_ANY (the container needs the
 * gateway's MAC); and (E, ID_ANY) as well for ID_ANY (the datapath reads it
 * as "may resolve anyone", see neigh_allowed in bpf/lib/policy.h).
 *
 * Ipcache entries: every managed endpoint /32 → its identity; every host
 * address /32 → ID_HOST with IPC_F_HOST; every registered prefix → its
 * identity; 0.0.0.0/0 → ID_WORLD. When the same /32 is two of these, the
 * host wins over a prefix, and both over the endpoint: the datapath finds a
 * local endpoint by its exact address (bastion_ep_ip) before it looks at the
 * ipcache, so an endpoint's /32 is only a fallback there, while a prefix
 * that names exactly the endpoint's address (an except, typically) must
 * stay in force for the moments the endpoint is not there (before it is
 * provisioned, after it is removed; see diff.ts).
 *
 * Incremental use. A CompileContext holds the endpoints and rules with the
 * caches that make one endpoint's slice cheap: selector → matching endpoints
 * (through a label index), cidr peer → identities, subject → rules. Its
 * mutators (setRules, upsertEndpoint, removeEndpoint) update the caches and
 * return the keys of the endpoints whose slices may have changed; the
 * manager recompiles only those with compileEndpointSlice.
 */
import type { LabelSelector, Peer, PortRange, Rule } from './model.js';
import {
  DIR_EGRESS,
  DIR_INGRESS,
  ID_ANY,
  ID_HOST,
  ID_WORLD,
  IPC_F_HOST,
  IPPROTO,
  POLICY_PREFIX_ANY_PORT,
  POLICY_PREFIX_ANY_PROTO,
  POLICY_PREFIX_FULL,
  PROTO_ANY,
  type IpcacheKey,
  type IpcacheVal,
  type NeighKey,
  type PolicyKey,
  type PolicyVal,
} from '../datapath/layout.js';
import { LabelIndex, SelectorIndex, canonicalSelector, matches } from './selector.js';
import { MAX_PORT, portPrefixes } from './ports.js';
import { type Cidr4, cidr4Covers, formatCidr4, formatIpv4, ipInCidr4, isIpv6Text, parseCidr4, parseIpv4 } from '../net/ip.js';

// ==================================================================== CIDR peers

/**
 * A cidr peer as the compiler and the evaluators read it, or null when it
 * matches no IPv4 address at all: an IPv6 cidr, an unparseable cidr, or an
 * unparseable except (fail closed: a typo in an except must not widen the
 * peer). IPv6 excepts are dropped (they exclude no IPv4 address).
 */
export function readCidrPeer(peer: { cidr: string; except?: string[] }): { cidr: Cidr4; except: Cidr4[] } | null {
  const cidr = parseCidr4(peer.cidr);
  if (!cidr) return null;
  const except: Cidr4[] = [];
  for (const e of peer.except ?? []) {
    if (isIpv6Text(e)) continue;
    const c = parseCidr4(e);
    if (!c) return null;
    except.push(c);
  }
  return { cidr, except };
}

export const WORLD_CIDR = '0.0.0.0/0';

// ================================================================== entries

export interface PolicyEntry {
  key: PolicyKey;
  val: PolicyVal;
}
export interface IpcacheEntry {
  key: IpcacheKey;
  val: IpcacheVal;
}

/** Canonical key strings: equal keys ⟺ equal strings (for diffing and maps). */
export function policyKeyString(k: PolicyKey): string {
  return `${k.epId}:${k.peerId}:${k.direction}:${k.proto}:${k.dport}/${k.prefixlen}`;
}
export function neighKeyString(k: NeighKey): string {
  return `${k.epId}:${k.peerId}`;
}
export function ipcacheKeyString(k: IpcacheKey): string {
  return `${k.addr}/${k.prefixlen}`;
}

/** An endpoint as the compiler sees it. */
export interface CompileEndpoint {
  key: string;
  identity: number;
  ipv4: string;
  labels: Readonly<Record<string, string>>;
  namedPorts?: Readonly<Record<string, { port: number; protocol: 'tcp' | 'udp' | 'sctp' }>>;
}

export interface CompileInput {
  endpoints: readonly CompileEndpoint[];
  rules: readonly Rule[];
  /** every address of the host (gateways included) */
  hostAddrs: readonly string[];
  /** stable identity of a registered prefix (canonical text, never 0.0.0.0/0) */
  cidrIdentity(cidr: string): number;
  /**
   * stable number of a rule id (≥ 1), reported in flow events; dense (the
   * numbers handed out count up from 1, as RuleNumbers does): the compiler
   * files rules in an array by number
   */
  ruleNumber(ruleId: string): number;
}

/** One endpoint's own entries: those keyed by its identity, and the neighbour pairs its rules create. */
export interface EndpointSlice {
  policy: PolicyEntry[];
  neigh: NeighKey[];
}

export interface CompiledState {
  policy: Map<string, PolicyEntry>;
  neigh: Map<string, NeighKey>;
  ipcache: Map<string, IpcacheEntry>;
}

// ================================================================ the context

interface PortKey {
  proto: number;
  dport: number;
  prefixlen: number;
  /** ":proto:dport/prefixlen", the end of the key string */
  tail: string;
}

function portKey(proto: number, dport: number, prefixlen: number): PortKey {
  return { proto, dport, prefixlen, tail: `:${proto}:${dport}/${prefixlen}` };
}

type PeerRef =
  | { kind: 'sel'; sel: SelState }
  | { kind: 'cidr'; peer: CidrPeerState }
  | { kind: 'host' }
  | { kind: 'any' }
  | { kind: 'none' };

/**
 * A rule as the compiler holds it. There are 100,000 of them at 5,000
 * containers, so every field costs 0.8 MB: the direction rides in the low
 * bit of `numDir` (rule number × 2 + direction) and the port keys are the
 * port list's shared, cached compilation, not two fields of their own. The
 * rule itself is not kept: its parts are (the config's own, shared objects),
 * and `ruleOf` puts them together again for the few callers that list
 * rules, where a Rule object of its own cost 64 bytes a rule, 6.4 MB.
 */
interface RuleInfo {
  /** the rule's id (the string RuleNumbers keys by, not a copy) */
  id: string;
  /** place in rule order (flow events and explain report rules in this order) */
  seq: number;
  /** the rule's number (flow events name rules by it) × 2, plus DIR_EGRESS or DIR_INGRESS */
  numDir: number;
  subject: SelState;
  /** the rule's subject as it came (equal, by canonical form, to subject.selector; not always the same object) */
  subjectSource: LabelSelector;
  peers: PeerRef[];
  /** the rule's peer list as it came */
  peerSource: Peer[];
  ports: CompiledPorts;
}

/** The rule a RuleInfo holds, put together from its parts. */
function ruleOf(info: RuleInfo): Rule {
  return {
    id: info.id,
    subject: info.subjectSource,
    direction: (info.numDir & 1) === DIR_INGRESS ? 'ingress' : 'egress',
    peers: info.peerSource,
    ports: info.ports.source,
  };
}

/** A port list compiled: policy-key tails, and the named ports that resolve per destination. */
interface CompiledPorts {
  keys: PortKey[];
  named: PortRange[];
  /** the list compiled (rules are given back with it) */
  source: PortRange[];
}

interface SelState {
  canon: string;
  /** this selector as a rule's peer, and as a rule's whole peer list (shared by every such rule) */
  ref: PeerRef;
  refList: PeerRef[];
  selector: LabelSelector;
  members: Set<string>;
  /** identities of the members, sorted; rebuilt lazily */
  ids: number[] | undefined;
  asSubject: InfoSet;
  asPeer: InfoSet;
}

interface CidrPeerState {
  canon: string;
  cidr: Cidr4;
  except: Cidr4[];
  /** managed endpoints inside (case a) */
  members: Set<string>;
  /** sorted identities of the registered prefixes inside (case b) */
  prefixIds: number[];
  /** members' identities then prefixIds; rebuilt lazily */
  ids: number[] | undefined;
  /** created by the current setRules: prefixIds not computed yet */
  fresh: boolean;
  asPeer: InfoSet;
}

interface Registered {
  cidr: Cidr4;
  id: number;
  refs: number;
}

const HOST_REF: PeerRef = { kind: 'host' };
const ANY_REF: PeerRef = { kind: 'any' };
const NONE_REF: PeerRef = { kind: 'none' };
const NO_NAMED: PortRange[] = [];

/** Port lists are immutable and shared by many rules (a config's are interned): their keys are made once per list. */
const portKeysCache = new WeakMap<readonly PortRange[], CompiledPorts>();
function portKeysOf(ports: PortRange[]): CompiledPorts {
  let r = portKeysCache.get(ports);
  if (!r) portKeysCache.set(ports, (r = makePortKeys(ports)));
  return r;
}

function makePortKeys(ports: PortRange[]): CompiledPorts {
  if (ports.length === 0) return { keys: [portKey(PROTO_ANY, 0, POLICY_PREFIX_ANY_PROTO)], named: NO_NAMED, source: ports };
  const keys: PortKey[] = [];
  const named: PortRange[] = [];
  for (const p of ports) {
    if (p.name !== undefined) {
      named.push(p);
      continue;
    }
    switch (p.protocol) {
      case 'any':
        keys.push(portKey(PROTO_ANY, 0, POLICY_PREFIX_ANY_PROTO));
        break;
      case 'icmp':
        keys.push(portKey(IPPROTO.icmp, 0, POLICY_PREFIX_ANY_PORT));
        break;
      case 'tcp':
      case 'udp':
      case 'sctp': {
        const proto = IPPROTO[p.protocol];
        if (p.from <= 0 && p.to >= MAX_PORT) keys.push(portKey(proto, 0, POLICY_PREFIX_ANY_PORT));
        else for (const x of portPrefixes(p.from, p.to)) keys.push(portKey(proto, x.port, POLICY_PREFIX_ANY_PORT + x.bits));
        break;
      }
      default:
        break; // unknown protocol: allows nothing
    }
  }
  return { keys, named: named.length ? named : NO_NAMED, source: ports };
}

/** A named port resolved on a destination: [proto, port] or undefined. */
export function resolveNamedPort(
  p: PortRange,
  namedPorts: CompileEndpoint['namedPorts'],
): { proto: number; port: number } | undefined {
  if (p.name === undefined || !namedPorts || !Object.hasOwn(namedPorts, p.name)) return undefined;
  const np = namedPorts[p.name]!;
  if (p.protocol !== 'any' && p.protocol !== np.protocol) return undefined;
  if (np.protocol !== 'tcp' && np.protocol !== 'udp' && np.protocol !== 'sctp') return undefined;
  if (!Number.isInteger(np.port) || np.port < 0 || np.port > MAX_PORT) return undefined;
  return { proto: IPPROTO[np.protocol], port: np.port };
}

/** Rules and their selectors are treated as immutable: canonical forms are cached by object. */
const canonCache = new WeakMap<LabelSelector, string>();
function canonSel(s: LabelSelector): string {
  let c = canonCache.get(s);
  if (c === undefined) canonCache.set(s, (c = canonicalSelector(s)));
  return c;
}

/** Canonical text of a peer list (a JSON string: no peer's text can run into the next). */
function canonicalPeers(peers: readonly Peer[]): string {
  return JSON.stringify(peers.map((p) => canonicalPeer(p)));
}

function canonicalPorts(ports: readonly PortRange[]): string {
  return ports.map((p) => `${p.protocol}/${p.from}/${p.to}/${p.name === undefined ? '' : JSON.stringify(p.name)}`).join(' ');
}

/** Canonical text of a peer (equal peers ⟺ equal texts). */
export function canonicalPeer(p: Peer): string {
  switch (p.kind) {
    case 'endpoints':
      return `sel:${canonSel(p.selector)}`;
    case 'cidr':
      return `cidr:${p.cidr}|${(p.except ?? []).join(',')}`;
    default:
      return p.kind;
  }
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  if (a === b) return true;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!Object.hasOwn(b, k) || a[k] !== b[k]) return false;
  return true;
}

/**
 * Endpoints and rules with the caches of compilation. Create it with
 * createCompileContext; change it with setRules / upsertEndpoint /
 * removeEndpoint / setHostAddrs, which return the endpoints whose slices
 * must be recompiled.
 */
export class CompileContext {
  private readonly eps = new Map<string, CompileEndpoint>();
  private readonly byId = new Map<number, CompileEndpoint>();
  private readonly index = new LabelIndex<string>();
  /** named port → endpoints that declare it */
  private readonly byPortName = new Map<string, Set<string>>();
  private readonly sels = new Map<string, SelState>();
  /** the selector states, by a positive constraint (which may match a label set) */
  private readonly selIndex = new SelectorIndex<SelState>();
  /** every rule (a multiset: equal rules may repeat), by id and direction */
  private readonly bag = new RuleBag((r) => this.numDir(r));
  /** ids of rules removed since takeGoneRuleIds() last ran */
  private readonly leftIds = new Set<string>();
  private lastSeq = 0;
  /** endpoint → selector states it is a member of */
  private readonly memberOf = new Map<string, Set<SelState>>();
  private readonly cidrPeers = new Map<string, CidrPeerState>();
  private readonly registered = new Map<string, Registered>();
  /** egress rules with a named port and an 'any' peer: they resolve on every endpoint */
  private readonly anyNamed = new Set<RuleInfo>();
  /** bumped whenever the set of registered prefixes changes */
  private registryVersion = 0;
  private hosts: string[] = [];
  private readonly world: Registered = { cidr: { base: 0, prefixLen: 0, addr: '0.0.0.0' }, id: ID_WORLD, refs: 1 };

  constructor(
    private readonly cidrIdentityFn: (cidr: string) => number,
    private readonly ruleNumberFn: (ruleId: string) => number,
  ) {}

  // ------------------------------------------------------------ queries

  endpoint(key: string): CompileEndpoint | undefined {
    return this.eps.get(key);
  }
  endpointByIdentity(id: number): CompileEndpoint | undefined {
    return this.byId.get(id);
  }
  endpoints(): IterableIterator<CompileEndpoint> {
    return this.eps.values();
  }
  rules(): Rule[] {
    return this.bag.all().map(ruleOf);
  }
  hostAddrs(): readonly string[] {
    return this.hosts;
  }
  ruleNumberOf(rule: Rule): number {
    return this.ruleNumberFn(rule.id);
  }

  /** Changes whenever the set of registered prefixes changes (what the global slice holds of the rules). */
  prefixVersion(): number {
    return this.registryVersion;
  }

  /** Registered prefixes (canonical text → identity), 0.0.0.0/0 included. */
  registeredPrefixes(): Map<string, number> {
    const out = new Map<string, number>([[WORLD_CIDR, ID_WORLD]]);
    for (const [k, r] of this.registered) out.set(k, r.id);
    return out;
  }

  /** The rules whose subject selects this endpoint, in rule order. */
  rulesFor(ep: CompileEndpoint): Rule[] {
    const set = new Set(this.infosFor(ep));
    return this.bag.all().filter((i) => set.has(i)).map(ruleOf);
  }

  /** Keys of the managed endpoints a selector matches. */
  select(selector: LabelSelector): string[] {
    return this.index.select(selector);
  }

  /** The global ipcache entries (see the header for the precedence on collisions). */
  ipcacheEntries(): Map<string, IpcacheEntry> {
    const out = new Map<string, IpcacheEntry>();
    const put = (addr: string, prefixlen: number, identity: number, flags: number) => {
      const key = { prefixlen, addr };
      out.set(ipcacheKeyString(key), { key, val: { identity, flags } });
    };
    // lowest precedence first: a later put replaces
    for (const e of this.eps.values()) {
      const a = parseIpv4(e.ipv4);
      if (a !== undefined) put(formatIpv4(a), 32, e.identity, 0);
    }
    put('0.0.0.0', 0, ID_WORLD, 0);
    for (const r of this.registered.values()) put(r.cidr.addr, r.cidr.prefixLen, r.id, 0);
    for (const h of this.hosts) {
      const a = parseIpv4(h);
      if (a !== undefined) put(formatIpv4(a), 32, ID_HOST, IPC_F_HOST);
    }
    return out;
  }

  // ------------------------------------------------------------ mutators

  setHostAddrs(addrs: readonly string[]): void {
    this.hosts = [...addrs];
  }

  /**
   * Replaces the rule list. Returns the endpoints whose slices may change:
   * the subjects of added and removed rules, and, when the registered
   * prefixes change, the subjects of rules whose cidr peers now expand
   * differently. Rules that are the same objects (or equal) as before cost
   * nothing.
   */
  setRules(rules: readonly Rule[]): Set<string> {
    // what is in force now, to take equal rules from (and what is left over goes)
    const pool = this.bag.copy();
    const next: RuleInfo[] = [];
    const added: Rule[] = [];
    const addedAt: number[] = [];
    for (const r of rules) {
      const reused = pool.take(r);
      if (reused) {
        next.push(reused);
      } else {
        addedAt.push(next.length);
        next.push(undefined as unknown as RuleInfo);
        added.push(r);
      }
    }
    const affected = this.change(added, pool.all(), (infos) => {
      addedAt.forEach((at, i) => (next[at] = infos[i]!));
      next.forEach((info, i) => (info.seq = i));
      this.lastSeq = next.length;
    });
    if (added.length >= COMPACT_AFTER_RULES) this.compactInfoLists();
    return affected;
  }

  /**
   * The selectors' small rule lists, copied to their exact length: grown a
   * push at a time, an array keeps V8's growth slack (a list of 20 rules
   * holds room for 41), 3.6 MB of 10,000 lists at 5,000 containers.
   */
  private compactInfoLists(): void {
    for (const s of this.sels.values()) {
      if (Array.isArray(s.asSubject)) s.asSubject = s.asSubject.slice();
      if (Array.isArray(s.asPeer)) s.asPeer = s.asPeer.slice();
    }
    for (const cp of this.cidrPeers.values()) if (Array.isArray(cp.asPeer)) cp.asPeer = cp.asPeer.slice();
  }

  /**
   * Ids of which no rule is in force any more, since the last call (a rule
   * removed and one of the same id added back is not among them): their
   * rule numbers may be released.
   */
  takeGoneRuleIds(): string[] {
    const out: string[] = [];
    for (const id of this.leftIds) if (!this.bag.holdsNumber(this.ruleNumberFn(id))) out.push(id);
    this.leftIds.clear();
    return out;
  }

  /** Appends rules (cost in proportion to them, not to the rule list). */
  addRules(rules: readonly Rule[]): Set<string> {
    return this.change([...rules], []);
  }

  /** Removes rules equal to these (one occurrence each; cost in proportion to them). */
  removeRules(rules: readonly Rule[]): Set<string> {
    const removed: RuleInfo[] = [];
    for (const r of rules) {
      // each match leaves the bag at once, so two equal rules remove two
      const info = this.bag.take(r);
      if (info) removed.push(info);
      // not in force: looking it up may have numbered its id, which then goes back
      else this.leftIds.add(r.id);
    }
    return this.change([], removed);
  }

  /**
   * Links added rules, unlinks removed ones, and lets setRules put the new
   * rules in its order (`install`); returns the affected endpoints.
   */
  private change(added: Rule[], removed: RuleInfo[], install?: (addedInfos: RuleInfo[]) => void): Set<string> {
    const affected = new Set<string>();
    const versionBefore = this.registryVersion;
    // every number checked before any rule is linked: a bad one changes nothing
    const numDirs = added.map((r) => this.numDir(r));
    const infos = added.map((r, i) => this.buildInfo(r, numDirs[i]!));
    for (const info of infos) {
      info.seq = ++this.lastSeq;
      this.bag.add(info);
      for (const m of info.subject.members) affected.add(m);
    }
    for (const info of removed) {
      this.bag.remove(info);
      this.leftIds.add(info.id);
      for (const m of info.subject.members) affected.add(m);
      this.unlink(info);
    }
    install?.(infos);
    const registryChanged = this.registryVersion !== versionBefore;
    for (const cp of this.cidrPeers.values()) {
      if (!registryChanged && !cp.fresh) continue;
      const before = cp.prefixIds;
      cp.prefixIds = this.expandPrefixes(cp);
      cp.ids = undefined;
      if (!cp.fresh && !sameNumbers(before, cp.prefixIds)) {
        for (const ri of cp.asPeer) for (const m of ri.subject.members) affected.add(m);
      }
      cp.fresh = false;
    }
    return affected;
  }

  /**
   * Adds an endpoint, or replaces the one with the same key. Returns the
   * endpoints whose slices may change: this one, and every endpoint with a
   * rule whose peers include it (before or after), or that resolves a named
   * port on it.
   */
  upsertEndpoint(ep: CompileEndpoint): Set<string> {
    const affected = this.detach(ep.key);
    affected.add(ep.key);
    this.eps.set(ep.key, ep);
    this.byId.set(ep.identity, ep);
    this.index.set(ep.key, ep.labels);
    for (const name of Object.keys(ep.namedPorts ?? {})) {
      let s = this.byPortName.get(name);
      if (!s) this.byPortName.set(name, (s = new Set()));
      s.add(ep.key);
    }
    const mine = new Set<SelState>();
    this.memberOf.set(ep.key, mine);
    for (const s of this.selIndex.candidates(ep.labels)) {
      if (matches(s.selector, ep.labels)) {
        s.members.add(ep.key);
        s.ids = undefined;
        mine.add(s);
        for (const ri of s.asPeer) for (const m of ri.subject.members) affected.add(m);
      }
    }
    const ip = parseIpv4(ep.ipv4);
    for (const cp of this.cidrPeers.values()) {
      if (ip !== undefined && inPeer(cp, ip)) {
        cp.members.add(ep.key);
        cp.ids = undefined;
        for (const ri of cp.asPeer) for (const m of ri.subject.members) affected.add(m);
      }
    }
    if (Object.keys(ep.namedPorts ?? {}).length > 0) this.addAnyNamedSubjects(affected);
    return affected;
  }

  /** Removes an endpoint. Returns the other endpoints whose slices may change (drop this one's slice yourself). */
  removeEndpoint(key: string): Set<string> {
    const affected = this.detach(key);
    affected.delete(key);
    return affected;
  }

  // ------------------------------------------------------------ compile

  /** The rules whose subject selects ep (from the membership index when the context knows ep as given). */
  private infosFor(ep: CompileEndpoint): RuleInfo[] {
    const known = this.eps.get(ep.key);
    let subjects: Iterable<SelState>;
    if (known && sameLabels(known.labels, ep.labels)) subjects = this.memberOf.get(ep.key) ?? [];
    else subjects = [...this.sels.values()].filter((s) => infoCount(s.asSubject) > 0 && matches(s.selector, ep.labels));
    const out: RuleInfo[] = [];
    for (const s of subjects) for (const ri of s.asSubject) out.push(ri);
    return out;
  }

  /** Identities a peer resolves to, and the managed endpoints among them (for named ports). */
  private peerIds(p: PeerRef): number[] {
    switch (p.kind) {
      case 'sel':
        return this.selIds(p.sel);
      case 'host':
        return [ID_HOST];
      case 'any':
        return [ID_ANY];
      case 'cidr': {
        const cp = p.peer;
        if (!cp.ids) {
          const ids: number[] = [];
          for (const k of cp.members) ids.push(this.eps.get(k)!.identity);
          ids.sort((a, b) => a - b).push(...cp.prefixIds);
          cp.ids = ids;
        }
        return cp.ids;
      }
      case 'none':
        return [];
    }
  }

  /** Managed endpoints of a peer, for an egress named port (which resolves on each of them). */
  private peerEndpointsFor(p: PeerRef, name: string): CompileEndpoint[] {
    const out: CompileEndpoint[] = [];
    const declares = this.byPortName.get(name);
    if (!declares) return out;
    switch (p.kind) {
      case 'sel':
        for (const k of p.sel.members) if (declares.has(k)) out.push(this.eps.get(k)!);
        break;
      case 'cidr':
        for (const k of p.peer.members) if (declares.has(k)) out.push(this.eps.get(k)!);
        break;
      case 'any':
        for (const k of declares) out.push(this.eps.get(k)!);
        break;
      default:
        break;
    }
    return out;
  }

  private selIds(s: SelState): number[] {
    if (!s.ids) {
      s.ids = [...s.members].map((k) => this.eps.get(k)!.identity).sort((a, b) => a - b);
    }
    return s.ids;
  }

  /** See compileEndpointSlice. */
  slice(ep: CompileEndpoint): EndpointSlice {
    const policy = new Map<string, PolicyEntry>();
    const neigh = new Map<string, NeighKey>();
    this.sliceInto(ep, policy, neigh);
    return { policy: [...policy.values()], neigh: [...neigh.values()] };
  }

  /**
   * Adds ep's slice to the maps (keyed by policyKeyString / neighKeyString).
   * Policy keys of one endpoint never collide with another's (they start
   * with its identity); an existing neighbour entry is kept.
   */
  sliceInto(ep: CompileEndpoint, policy: Map<string, PolicyEntry>, neigh: Map<string, NeighKey>): void {
    const peers = new Set<number>();
    const epId = ep.identity;
    const head = `${epId}:`;
    const put = (ks: string, peerId: number, dir: number, proto: number, dport: number, prefixlen: number, ruleId: number) => {
      const old = policy.get(ks);
      if (old !== undefined) {
        if (ruleId < old.val.ruleId) old.val.ruleId = ruleId;
        return;
      }
      policy.set(ks, { key: { prefixlen, epId, peerId, direction: dir, proto, dport }, val: { ruleId, flags: 0 } });
      peers.add(peerId);
    };
    for (const ri of this.infosFor(ep)) {
      const dir = ri.numDir & 1;
      const dirText = dir === DIR_EGRESS ? ':0' : ':1';
      const number = ri.numDir >>> 1;
      const { keys, named } = ri.ports;
      for (const p of ri.peers) {
        if (keys.length > 0) {
          for (const id of this.peerIds(p)) {
            const base = head + id + dirText;
            for (const k of keys) put(base + k.tail, id, dir, k.proto, k.dport, k.prefixlen, number);
          }
        }
        for (const np of named) {
          if (dir === DIR_INGRESS) {
            const r = resolveNamedPort(np, ep.namedPorts);
            if (!r) continue;
            const tail = `:${r.proto}:${r.port}/${POLICY_PREFIX_FULL}`;
            for (const id of this.peerIds(p)) put(head + id + dirText + tail, id, dir, r.proto, r.port, POLICY_PREFIX_FULL, number);
          } else {
            for (const dst of this.peerEndpointsFor(p, np.name!)) {
              const r = resolveNamedPort(np, dst.namedPorts);
              if (r) put(`${head}${dst.identity}${dirText}:${r.proto}:${r.port}/${POLICY_PREFIX_FULL}`, dst.identity, dir, r.proto, r.port, POLICY_PREFIX_FULL, number);
            }
          }
        }
      }
    }
    const hostKey = head + ID_HOST;
    for (const peer of peers) {
      if (peer !== ID_ANY && peer !== ID_HOST && this.byId.has(peer)) {
        const k1 = head + peer;
        if (!neigh.has(k1)) neigh.set(k1, { epId, peerId: peer });
        const k2 = `${peer}:${epId}`;
        if (!neigh.has(k2)) neigh.set(k2, { epId: peer, peerId: epId });
      } else {
        if (!neigh.has(hostKey)) neigh.set(hostKey, { epId, peerId: ID_HOST });
        if (peer === ID_ANY) {
          const k = head + ID_ANY;
          if (!neigh.has(k)) neigh.set(k, { epId, peerId: ID_ANY });
        }
      }
    }
  }

  // ------------------------------------------------------------ internals

  /** RuleInfo.numDir of a rule: its number × 2 + its direction. */
  private numDir(r: Rule): number {
    const n = this.ruleNumberFn(r.id);
    if (!Number.isInteger(n) || n < 1 || n * 2 >= MAX_RULE_SLOT) throw new Error(`rule ${r.id}: rule number ${n} is out of range (numbers count up from 1)`);
    return n * 2 + (r.direction === 'ingress' ? DIR_INGRESS : DIR_EGRESS);
  }

  private buildInfo(r: Rule, numDir: number): RuleInfo {
    const ports = portKeysOf(r.ports);
    const dir = numDir & 1;
    const info: RuleInfo = {
      id: r.id,
      seq: 0,
      numDir,
      subject: undefined as unknown as SelState,
      subjectSource: r.subject,
      peers: [],
      peerSource: r.peers,
      ports,
    };
    info.subject = this.selState(r.subject);
    info.subject.asSubject = infoAdd(info.subject.asSubject, info);
    const peers = r.peers.map((p) => this.peerRef(p, info));
    info.peers = peers.length === 1 && peers[0]!.kind === 'sel' ? peers[0]!.sel.refList : peers;
    if (dir === DIR_EGRESS && ports.named.length > 0 && info.peers.some((p) => p.kind === 'any')) this.anyNamed.add(info);
    return info;
  }

  private peerRef(p: Peer, info: RuleInfo): PeerRef {
    switch (p.kind) {
      case 'endpoints': {
        const sel = this.selState(p.selector);
        sel.asPeer = infoAdd(sel.asPeer, info);
        return sel.ref;
      }
      case 'host':
        return HOST_REF;
      case 'any':
        return ANY_REF;
      case 'cidr': {
        const parsed = readCidrPeer(p);
        if (!parsed) return NONE_REF;
        const canon = `${formatCidr4(parsed.cidr)}|${parsed.except.map(formatCidr4).sort().join(',')}`;
        let cp = this.cidrPeers.get(canon);
        if (!cp) {
          cp = { canon, cidr: parsed.cidr, except: parsed.except, members: new Set(), prefixIds: [], ids: undefined, fresh: true, asPeer: [] };
          for (const e of this.eps.values()) {
            const ip = parseIpv4(e.ipv4);
            if (ip !== undefined && inPeer(cp, ip)) cp.members.add(e.key);
          }
          this.cidrPeers.set(canon, cp);
        }
        this.register(parsed.cidr);
        for (const e of parsed.except) this.register(e);
        cp.asPeer = infoAdd(cp.asPeer, info);
        return { kind: 'cidr', peer: cp };
      }
      default:
        return NONE_REF;
    }
  }

  private register(c: Cidr4): void {
    if (c.prefixLen === 0) return; // the world, always there
    const k = formatCidr4(c);
    const r = this.registered.get(k);
    if (r) r.refs++;
    else {
      this.registered.set(k, { cidr: c, id: this.cidrIdentityFn(k), refs: 1 });
      this.registryVersion++;
    }
  }

  private unregister(c: Cidr4): void {
    if (c.prefixLen === 0) return;
    const k = formatCidr4(c);
    const r = this.registered.get(k)!;
    if (--r.refs === 0) {
      this.registered.delete(k);
      this.registryVersion++;
    }
  }

  private expandPrefixes(cp: CidrPeerState): number[] {
    const ids: number[] = [];
    const consider = (r: Registered) => {
      if (cidr4Covers(cp.cidr, r.cidr) && !cp.except.some((e) => cidr4Covers(e, r.cidr))) ids.push(r.id);
    };
    consider(this.world);
    for (const r of this.registered.values()) consider(r);
    return ids.sort((a, b) => a - b);
  }

  private selState(selector: LabelSelector): SelState {
    const canon = canonSel(selector);
    let s = this.sels.get(canon);
    if (!s) {
      const state: SelState = { canon, ref: NONE_REF, refList: [], selector, members: new Set(this.index.select(selector)), ids: undefined, asSubject: [], asPeer: [] };
      state.ref = { kind: 'sel', sel: state };
      state.refList = [state.ref];
      s = state;
      this.sels.set(canon, s);
      this.selIndex.add(selector, s);
      for (const m of s.members) this.memberOf.get(m)!.add(s);
    }
    return s;
  }

  private unlink(info: RuleInfo): void {
    this.anyNamed.delete(info);
    infoDelete(info.subject.asSubject, info);
    this.maybeDropSel(info.subject);
    for (const p of info.peers) {
      if (p.kind === 'sel') {
        infoDelete(p.sel.asPeer, info);
        this.maybeDropSel(p.sel);
      } else if (p.kind === 'cidr') {
        infoDelete(p.peer.asPeer, info);
        this.unregister(p.peer.cidr);
        for (const e of p.peer.except) this.unregister(e);
        if (infoCount(p.peer.asPeer) === 0) this.cidrPeers.delete(p.peer.canon);
      }
    }
  }

  private maybeDropSel(s: SelState): void {
    if (infoCount(s.asSubject) > 0 || infoCount(s.asPeer) > 0) return;
    this.sels.delete(s.canon);
    this.selIndex.delete(s.selector, s);
    for (const m of s.members) this.memberOf.get(m)?.delete(s);
  }

  /** Removes an endpoint from every index; returns the endpoints affected by its disappearance (itself included). */
  private detach(key: string): Set<string> {
    const affected = new Set<string>();
    const old = this.eps.get(key);
    if (!old) return affected;
    affected.add(key);
    this.eps.delete(key);
    if (this.byId.get(old.identity) === old) this.byId.delete(old.identity);
    this.index.delete(key);
    for (const name of Object.keys(old.namedPorts ?? {})) {
      const s = this.byPortName.get(name);
      s?.delete(key);
      if (s && s.size === 0) this.byPortName.delete(name);
    }
    for (const s of this.memberOf.get(key) ?? []) {
      s.members.delete(key);
      s.ids = undefined;
      for (const ri of s.asPeer) for (const m of ri.subject.members) affected.add(m);
    }
    this.memberOf.delete(key);
    for (const cp of this.cidrPeers.values()) {
      if (cp.members.delete(key)) {
        cp.ids = undefined;
        for (const ri of cp.asPeer) for (const m of ri.subject.members) affected.add(m);
      }
    }
    if (Object.keys(old.namedPorts ?? {}).length > 0) this.addAnyNamedSubjects(affected);
    return affected;
  }

  /** Subjects of egress rules with a named port and an 'any' peer (they resolve on every endpoint). */
  private addAnyNamedSubjects(affected: Set<string>): void {
    for (const ri of this.anyNamed) for (const m of ri.subject.members) affected.add(m);
  }

  /** Loads endpoints without computing affected sets (construction). */
  load(endpoints: readonly CompileEndpoint[], rules: readonly Rule[], hostAddrs: readonly string[]): void {
    this.hosts = [...hostAddrs];
    for (const ep of endpoints) {
      this.eps.set(ep.key, ep);
      this.byId.set(ep.identity, ep);
      this.index.set(ep.key, ep.labels);
      this.memberOf.set(ep.key, new Set());
      for (const name of Object.keys(ep.namedPorts ?? {})) {
        let s = this.byPortName.get(name);
        if (!s) this.byPortName.set(name, (s = new Set()));
        s.add(ep.key);
      }
    }
    this.setRules(rules);
  }
}

/**
 * The rules a selector is the subject or a peer of. A selector usually has
 * a few (about 20 at 5,000 containers with 10 dependencies each): a plain
 * list then, a third of the memory of a Set; past SMALL_INFOS a Set, so
 * removing many rules of one selector never costs the square of their number.
 */
type InfoSet = RuleInfo[] | Set<RuleInfo>;
const SMALL_INFOS = 32;
/** a rule list set at once of at least this many rules (start-up, a reload) is followed by compactInfoLists */
const COMPACT_AFTER_RULES = 1000;

function infoAdd(s: InfoSet, info: RuleInfo): InfoSet {
  if (!Array.isArray(s)) return s.add(info);
  if (s.includes(info)) return s;
  if (s.length < SMALL_INFOS) {
    s.push(info);
    return s;
  }
  return new Set(s).add(info);
}

function infoDelete(s: InfoSet, info: RuleInfo): void {
  if (!Array.isArray(s)) {
    s.delete(info);
    return;
  }
  const i = s.indexOf(info);
  if (i < 0) return;
  s[i] = s[s.length - 1]!;
  s.pop();
}

function infoCount(s: InfoSet): number {
  return Array.isArray(s) ? s.length : s.size;
}

/**
 * Rule infos by id and direction, a multiset (equal rules may repeat). Two
 * rules are the same when they are the same object or have the same
 * canonical form; the canonical form is computed only to compare rules of
 * the same id and direction (a reload), never kept: at 100,000 rules the
 * strings alone took 10 MB.
 */
/** 2^25 slots: 16 million rule ids holding a number at once (RuleNumbers hands released numbers out again) */
const MAX_RULE_SLOT = 1 << 25;

/**
 * Every rule in force, a multiset (equal rules may repeat), found by rule
 * number and direction: the slot of a rule is its RuleInfo.numDir. Rule
 * numbers are dense from 1 (RuleNumbers counts up, and hands the numbers of
 * ids no longer in force out again), so a plain array serves where two maps
 * by rule id took 3.5 MB at 5,000 containers (50,000 ids each, in V8 hash
 * tables of 65,536).
 */
class RuleBag {
  private readonly slots: Array<RuleInfo | RuleInfo[] | undefined>;

  constructor(
    /** a rule's slot: its number × 2 + its direction (what buildInfo puts in numDir) */
    private readonly slotOf: (r: Rule) => number,
    slots: Array<RuleInfo | RuleInfo[] | undefined> = [],
  ) {
    this.slots = slots;
  }

  add(info: RuleInfo): void {
    const i = info.numDir;
    // grown without gaps: an index far past the end would turn the array into a dictionary
    while (this.slots.length <= i) this.slots.push(undefined);
    const cur = this.slots[i];
    if (cur === undefined) this.slots[i] = info;
    else if (Array.isArray(cur)) cur.push(info);
    else this.slots[i] = [cur, info];
  }

  remove(info: RuleInfo): void {
    const i = info.numDir;
    const cur = this.slots[i];
    if (cur === info) this.slots[i] = undefined;
    else if (Array.isArray(cur)) {
      const at = cur.indexOf(info);
      if (at >= 0) cur.splice(at, 1);
      if (cur.length === 1) this.slots[i] = cur[0]!;
    }
  }

  /** Is a rule of this number in force, in either direction? */
  holdsNumber(n: number): boolean {
    return this.slots[n * 2] !== undefined || this.slots[n * 2 + 1] !== undefined;
  }

  /** Takes out (and returns) the last-added info of a rule equal to r, if any. */
  take(r: Rule): RuleInfo | undefined {
    const cur = this.slots[this.slotOf(r)];
    if (cur === undefined) return undefined;
    const list = Array.isArray(cur) ? cur : [cur];
    for (let i = list.length - 1; i >= 0; i--) {
      const info = list[i]!;
      if (holdsRule(info, r)) {
        this.remove(info);
        return info;
      }
    }
    return undefined;
  }

  copy(): RuleBag {
    return new RuleBag(
      this.slotOf,
      this.slots.map((v) => (Array.isArray(v) ? [...v] : v)),
    );
  }

  /** every info, in rule order */
  all(): RuleInfo[] {
    const out: RuleInfo[] = [];
    for (const v of this.slots) {
      if (v === undefined) continue;
      if (Array.isArray(v)) out.push(...v);
      else out.push(v);
    }
    return out.sort((a, b) => a.seq - b.seq);
  }
}

/**
 * Does the info hold a rule equal to r (its slot's: same number and direction
 * assumed)? Interned parts (one config's selectors, peer lists and ports)
 * compare by reference; others by canonical form.
 */
function holdsRule(info: RuleInfo, r: Rule): boolean {
  if (info.id !== r.id) return false;
  if (info.subjectSource !== r.subject && info.subject.canon !== canonSel(r.subject)) return false;
  if (info.peerSource !== r.peers && canonicalPeers(info.peerSource) !== canonicalPeers(r.peers)) return false;
  return info.ports.source === r.ports || canonicalPorts(info.ports.source) === canonicalPorts(r.ports);
}

function inPeer(cp: { cidr: Cidr4; except: Cidr4[] }, ip: number): boolean {
  return ipInCidr4(cp.cidr, ip) && !cp.except.some((e) => ipInCidr4(e, ip));
}

function sameNumbers(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ================================================================== the API

export function createCompileContext(input: CompileInput): CompileContext {
  const ctx = new CompileContext(input.cidrIdentity, input.ruleNumber);
  ctx.load(input.endpoints, input.rules, input.hostAddrs);
  return ctx;
}

/**
 * One endpoint's own entries: the policy entries keyed by its identity, and
 * the neighbour pairs its rules create. Uses only the rules whose subject
 * selects `ep`; peers resolve against the context's endpoints.
 */
export function compileEndpointSlice(ep: CompileEndpoint, ctx: CompileContext): EndpointSlice {
  return ctx.slice(ep);
}

/** Every entry of the whole state: the union of every endpoint's slice, and the ipcache. */
export function compileAll(input: CompileInput | CompileContext): CompiledState {
  const ctx = input instanceof CompileContext ? input : createCompileContext(input);
  const policy = new Map<string, PolicyEntry>();
  const neigh = new Map<string, NeighKey>();
  for (const ep of ctx.endpoints()) ctx.sliceInto(ep, policy, neigh);
  return { policy, neigh, ipcache: ctx.ipcacheEntries() };
}
