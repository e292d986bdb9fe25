/**
 * The manager: keeps the network map (endpoints and their identities) and
 * the policy, and keeps the datapath's maps and stacks equal to what they
 * imply.
 *
 * Every change is turned into the set of endpoint slices it can touch; only
 * those are recompiled, and the reconciler (reconciler.ts) writes only their
 * differences, in the one proven order (src/policy/diff.ts): a container
 * never runs unprotected (stack attached and dropping before its entries
 * exist) and a policy change never opens a gap. A failed write makes the
 * state dirty and a resync repairs it; verify() finds and repairs drift in
 * the maps and the stacks, and finds again endpoints whose interface
 * vanished (a container restarted with a new veth).
 *
 * An instance touches only the stacks it attached: an interface that
 * carries another instance's stack is never guarded, replaced or detached
 * (ForeignStackError); its container is listed as unprotected, and taken up
 * when the other instance lets go of it.
 */
import type { Logger } from 'pino';
import type { Endpoint, EndpointSpec, UnprotectedContainer } from './endpoint.js';
import { ForeignStackError, type DatapathPort, type Discovered, type NodePort, type StackState } from './ports.js';
import type { PolicySet, Rule } from '../policy/model.js';
import { IdentityAllocator, RuleNumbers } from './identity.js';
import { Reconciler, type CheckReason, type CheckReport, type ReconcilerHealth, type Repair } from './reconciler.js';
import { SliceCompiler, type DatapathLimits, type SliceEnv } from './slices.js';
import { ID_FIRST_DYNAMIC, MAP_NAMES, encodeIpKey, type TunnelInfo } from '../datapath/layout.js';
import type { RemoteEndpoint } from './remote.js';

/**
 * Where a local endpoint's identity comes from when it is not this node's
 * to hand out (cluster mode: a transaction in the cluster store). `prior` is
 * the identity the maps held for this interface before a restart.
 */
export interface EndpointIdentities {
  identify(spec: EndpointSpec, d: Discovered, prior: number | undefined): Promise<{ identity: number } | { refused: string }>;
}

/** Told about every local endpoint placed or removed (cluster mode publishes them). */
export interface EndpointObserver {
  placed(ep: Endpoint): void;
  removed(ep: Endpoint): void;
}


/** How long the stack check may hold the event loop before it lets other work run (ms). */
const STACK_CHECK_SLICE_MS = 0.5;
export interface ManagerOptions {
  datapath: DatapathPort;
  node: NodePort;
  log: Logger;
  /** every repair of drift or of a failed write, as it is made (metrics, the flow log) */
  onRepair?(r: Repair): void;
  /** resync back-off after a failed write (ms); default 250 ms doubling up to 30 s */
  resyncBackoff?: { firstMs: number; maxMs: number };
  /** an endpoint's mode as the daemon resolves it (run-time overrides, policies in audit mode); undefined: its spec's, then the policy set's */
  modeOf?: (ep: Endpoint) => PolicySet['mode'] | undefined;
  /** the datapath's flood limits (written with the datapath config) */
  limits?: DatapathLimits;
  /** cluster mode: endpoint identities are the cluster's (the local counter then only numbers CIDR prefixes) */
  identities?: EndpointIdentities;
  /** the first identity the local counter hands out (cluster mode keeps it above every cluster identity) */
  localIdentityFloor?: number;
  observer?: EndpointObserver;
  /** cluster mode: this node's name (flow records name the node of each container end) */
  nodeName?: string;
  /** the rule-number table (tests: one with its own clock) */
  ruleNumbers?: RuleNumbers;
  /** the queue of changes has just emptied (the daemon collects V8's young generation then: src/daemon/young-generation.ts) */
  onIdle?(): void;
}

/** What verify() found and did. */
export interface VerifyReport {
  reason: CheckReason;
  at: string;
  ms: number;
  maps: CheckReport;
  stacks: {
    checked: number;
    /** stacks put back (missing, or something else in Bastion's slot) */
    reattached: number;
    /** interfaces that carry another instance's stack instead of ours */
    foreign: Array<{ endpoint?: string; hostIfindex: number; ownerPinPath?: string }>;
    /** endpoints whose interface vanished and that were found again on a new one */
    rediscovered: string[];
    /** endpoints whose interface vanished and that could not be found again (yet) */
    lost: string[];
  };
  /** everything is in place */
  clean: boolean;
}

/** How long a container whose interface carries another instance's stack waits before it is tried again. */
const BLOCKED_RETRY_MS = 100;

export interface ApplyStats {
  ops: number;
  slices: number;
  ms: number;
  /** changeRules: how its time went (ms): waiting in the update queue behind other work, compiling the rules, and the commit (slices recompiled, diffed and written) */
  parts?: { queued: number; compile: number; commit: number };
}

const GLOBAL_SLICE = '@global';
const CONFIG_SLICE = '@config';

export class Manager {
  readonly endpoints = new Map<string, Endpoint>();
  readonly unprotected = new Map<string, UnprotectedContainer>();
  private readonly byIdentity = new Map<number, Endpoint>();
  /** other nodes' endpoints (cluster mode), by id: in the compiler as peers, no stack and no slice of their own */
  readonly remote = new Map<string, RemoteEndpoint>();
  private readonly remoteById = new Map<number, RemoteEndpoint>();
  /** other nodes' underlay addresses (ID_REMOTE_NODE in the ipcache) */
  remoteNodes: string[] = [];
  /** this node's tunnel (cluster mode), written with the global slice */
  private tunnel?: TunnelInfo;
  /** by host-side ifindex: every flow event names its endpoint by ifindex */
  private readonly byIfindex = new Map<number, Endpoint>();
  /**
   * Two endpoints were placed on one interface (one namespace named by name
   * and by /proc path): removing one must find the other. Rare; only then
   * does a removal scan.
   */
  private sharedIfindex = false;
  private readonly guarded = new Set<number>();
  /**
   * Containers to protect whose interface carries another instance's stack:
   * listed as unprotected, tried again until that stack goes.
   */
  private readonly blocked = new Map<string, { spec: EndpointSpec; d: Discovered; owner?: string }>();
  private blockedTimer?: NodeJS.Timeout;
  /** interfaces we warned about (another instance's stack), so each is said once per owner */
  private readonly warnedForeign = new Map<number, string>();
  /** endpoints whose interface vanished and discovery could not find again: said once */
  private readonly warnedLost = new Set<string>();
  readonly ids: IdentityAllocator;
  readonly datapath: DatapathPort;
  readonly rules: RuleNumbers;
  /** the policy's mode; its rules live in the compiler (rules() lists them) */
  mode: PolicySet['mode'] = 'enforce';
  hostAddrs: string[] = [];
  generation = 0;
  /**
   * bastion_config.policy_epoch: bumped after every change written, so that
   * established connections are judged again by the policy now in force
   * (bpf/lib/verdict.h, ct_recheck). Any value works after a restart: a
   * connection whose entry has another epoch is judged once more.
   */
  private policyEpoch = 1;
  lastApply?: ApplyStats;
  readonly reconciler: Reconciler;
  private readonly compiler: SliceCompiler;
  /** identities of endpoints found in the maps at start-up, by host ifindex */
  private readonly adoptable = new Map<number, { identity: number; ipv4: string; mac: string }>();
  private queue: Promise<unknown> = Promise.resolve();
  /** changes queued or running */
  private queued = 0;

  constructor(private readonly o: ManagerOptions) {
    this.rules = o.ruleNumbers ?? new RuleNumbers();
    this.datapath = o.datapath;
    const floor = o.localIdentityFloor ?? ID_FIRST_DYNAMIC;
    this.ids = new IdentityAllocator({
      loadNext: () => Math.max(floor, o.datapath.loadNextIdentity() ?? floor),
      saveNext: (n) => o.datapath.saveNextIdentity(n),
    });
    this.reconciler = new Reconciler({
      datapath: o.datapath,
      log: o.log,
      serial: (fn) => this.serial(fn),
      onRepair: o.onRepair,
      backoff: o.resyncBackoff,
      // connections a drifted entry let open are judged again by the policy repaired
      onRepaired: () => this.newPolicyEpoch(),
      // Stats entries are the record of where a stack was attached (guarded
      // ports have one too): a stale one goes with its stack, by
      // pruneLeftovers or a detach, never by a map check (that would orphan
      // the stack: `down` finds stacks through these keys). The config and
      // the tunnel (cluster mode) are array slots: nothing to delete.
      keepExtra: (map) => map === MAP_NAMES.config || map === MAP_NAMES.tunnel || map === MAP_NAMES.epStats,
    });
    this.compiler = new SliceCompiler({
      cidrIdentity: (cidr) => this.ids.get(`cidr:${cidr}`),
      ruleNumber: (id) => this.rules.number(id),
    });
    for (const e of o.datapath.existingEndpoints()) {
      this.adoptable.set(e.ifindex, { identity: e.identity, ipv4: e.ipv4, mac: e.mac });
    }
    for (const [k, v] of o.datapath.existingIpcache()) {
      // CIDR identities of a previous run keep their numbers, so policy
      // entries that refer to them stay valid across the restart (in
      // cluster mode only those above the cluster's range: a number below
      // it may belong to another node's endpoint now).
      if (k.prefixlen < 32 && k.prefixlen > 0 && v.identity >= floor) {
        this.ids.adopt(`cidr:${k.addr}/${k.prefixlen}`, v.identity);
      }
    }
  }

  /** Serialise every change: they are applied one at a time, whole. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const next = this.queue.then(fn, fn);
    this.queue = next
      .catch(() => undefined)
      .then(() => {
        if (--this.queued === 0) this.o.onIdle?.();
      });
    return next;
  }

  setHostAddresses(addrs: string[]): Promise<void> {
    return this.serial(async () => {
      const sorted = [...new Set(addrs)].sort();
      if (sorted.join() === this.hostAddrs.join()) return;
      this.hostAddrs = sorted;
      this.compiler.setHostAddrs(sorted);
      this.commit(new Set(), true);
    });
  }

  /** Replace the whole policy (a config file reload). */
  setPolicy(next: PolicySet): Promise<ApplyStats> {
    return this.serial(async () => {
      const modeChanged = next.mode !== this.mode;
      this.mode = next.mode;
      const touched = this.compiler.setRules(next.rules);
      if (modeChanged) for (const k of this.endpoints.keys()) touched.add(k);
      const stats = this.commit(touched, true);
      this.releaseRuleNumbers();
      return stats;
    });
  }

  /**
   * Add rules and remove others in one step (runtime policies through the
   * API). Only the endpoints those rules select are recompiled, so the cost
   * follows the size of the change, not the number of rules or containers.
   * The compiler sees both changes before anything is written: one commit
   * takes the maps from the old set to the new one, upserts first.
   */
  changeRules(add: Rule[], remove: Rule[]): Promise<ApplyStats> {
    const asked = performance.now();
    return this.serial(async () => {
      const t0 = performance.now();
      // nothing here may cost in proportion to all rules (no copy of the rule list)
      const prefixes = this.compiler.prefixVersion();
      const touched = this.compiler.changeRules(add, remove);
      const compiled = performance.now();
      // the global slice again only if the rules' CIDR prefixes changed: it
      // holds every registered prefix, and rebuilding it for each change cost
      // in proportion to them (the config slice is rewritten by the new
      // policy epoch after the writes in any case)
      const stats = this.commit(touched, this.compiler.prefixVersion() !== prefixes);
      this.releaseRuleNumbers();
      const ms = (x: number) => +x.toFixed(3);
      return { ...stats, parts: { queued: ms(t0 - asked), compile: ms(compiled - t0), commit: ms(performance.now() - compiled) } };
    });
  }

  /** After a commit: the numbers of rule ids no longer in force (their entries are gone from the maps) go back to RuleNumbers. */
  private releaseRuleNumbers(): void {
    for (const id of this.compiler.takeGoneRuleIds()) this.rules.release(id);
  }

  /**
   * Add or update a container interface (`known`: what a discovery already
   * found). Undefined when its interface carries another instance's stack
   * (the container is then listed as unprotected until that stack goes) or
   * when the cluster refused its identity.
   */
  upsertEndpoint(spec: EndpointSpec, known?: Discovered): Promise<Endpoint | undefined> {
    return this.serial(async () => {
      const d = known ?? (await this.o.node.discover(spec));
      if (!(await this.assignIdentity(spec, d))) return undefined;
      const placed = this.place(spec, d);
      if (!placed) return undefined;
      this.commit(placed.touched, false);
      if (placed.retired) this.retire(placed.retired, placed.retired.hostIfindex !== placed.ep.hostIfindex);
      this.logProtected(placed.ep);
      return placed.ep;
    });
  }

  /**
   * Cluster mode: the endpoint's identity comes from the cluster (the one it
   * had before a restart if the cluster says it is still this endpoint's).
   * A refusal (its address is another node's) leaves its port guarded
   * (drop-all) and the container listed as unprotected, with the reason.
   */
  private async assignIdentity(spec: EndpointSpec, d: Discovered): Promise<boolean> {
    const idp = this.o.identities;
    if (!idp) return true;
    const old = this.endpoints.get(spec.key);
    if (old && old.hostIfindex === d.hostIfindex && old.ipv4 === d.ipv4 && old.mac === d.mac) return true;
    const key = `ep:${spec.key}#${d.hostIfindex}`;
    // The cluster store may take a while (or be away): the port drops
    // everything meanwhile, never unprotected.
    if (!this.endpointByIfindex(d.hostIfindex)) {
      try {
        this.o.datapath.attach(d.hostIfindex);
        this.guarded.add(d.hostIfindex);
      } catch (err) {
        // another instance's stack: not ours to guard, nor to ask the cluster an identity for
        if (err instanceof ForeignStackError) {
          this.block(spec, d, err);
          return false;
        }
        // the veth is gone; placing it will say so
      }
    }
    const prior = this.adoptable.get(d.hostIfindex);
    const r = await idp.identify(spec, d, prior && prior.ipv4 === d.ipv4 && prior.mac === d.mac ? prior.identity : undefined);
    this.adoptable.delete(d.hostIfindex);
    if ('refused' in r) {
      this.refuse(spec.key, spec.name, d.hostIfindex, r.refused);
      return false;
    }
    this.ids.adopt(key, r.identity);
    return true;
  }

  private refuse(key: string, name: string, hostIfindex: number, reason: string): void {
    const old = this.endpoints.get(key);
    if (old) this.dropEndpoint(old, false);
    try {
      this.o.datapath.attach(hostIfindex);
      this.guarded.add(hostIfindex);
    } catch {
      // the veth is gone, or another instance's stack is on it now: nothing of ours to guard
    }
    this.unprotected.set(key, { key, name, reason });
    this.o.log.error({ endpoint: name, reason }, 'endpoint refused: its port drops everything');
  }

  /** Cluster mode: a local endpoint lost its address to another node after the fact (a race both published). */
  refuseEndpoint(key: string, reason: string): Promise<void> {
    return this.serial(async () => {
      const ep = this.endpoints.get(key);
      if (ep) this.refuse(key, ep.name, ep.hostIfindex, reason);
    });
  }

  /**
   * Add or update many container interfaces at once (start-up, a config
   * reload): every stack goes on and every endpoint into the compiler, then
   * one commit recompiles each touched slice once, instead of once per
   * endpoint that touches it.
   */
  upsertEndpoints(items: Array<{ spec: EndpointSpec; known: Discovered }>): Promise<Endpoint[]> {
    return this.serial(async () => {
      const touched = new Set<string>();
      const eps: Endpoint[] = [];
      const retired: Array<[Endpoint, Endpoint]> = [];
      for (const { spec, known } of items) {
        if (!(await this.assignIdentity(spec, known))) continue;
        const r = this.place(spec, known);
        if (!r) continue;
        for (const k of r.touched) touched.add(k);
        eps.push(r.ep);
        if (r.retired) retired.push([r.retired, r.ep]);
      }
      this.commit(touched, false);
      for (const [old, ep] of retired) this.retire(old, old.hostIfindex !== ep.hostIfindex);
      for (const ep of eps) this.logProtected(ep);
      return eps;
    });
  }

  private logProtected(ep: Endpoint): void {
    this.o.observer?.placed(ep);
    this.o.log.info({ endpoint: ep.name, identity: ep.identity, ip: ep.ipv4, hostInterface: ep.hostIfname }, 'endpoint protected');
  }

  /**
   * Attach the stack and enter the endpoint in the compiler; the caller
   * commits. Undefined when the interface carries another instance's stack.
   */
  private place(spec: EndpointSpec, d: Discovered): { ep: Endpoint; touched: Set<string>; retired?: Endpoint } | undefined {
    // The stack goes on first and drops everything until the endpoint's
    // entries exist: there is no moment where the container is unguarded.
    try {
      this.o.datapath.attach(d.hostIfindex);
    } catch (err) {
      if (!(err instanceof ForeignStackError)) throw err;
      this.block(spec, d, err);
      return undefined;
    }
    this.unblock(spec.key);
    const old = this.endpoints.get(spec.key);
    const same = old && old.hostIfindex === d.hostIfindex && old.ipv4 === d.ipv4 && old.mac === d.mac;
    let identity: number;
    let retired: Endpoint | undefined;
    if (same) {
      identity = old.identity;
    } else {
      // A container that comes back on another interface or address (a
      // restart) is one change: its slice is replaced by the new one in the
      // caller's commit, so its address passes from the old identity to the
      // new in one write, never to nobody's in between.
      if (old) {
        this.unindex(old);
        retired = old;
      }
      // After a restart, the same interface with the same address keeps
      // its identity (and so its connections). Anything else is new.
      const prior = this.adoptable.get(d.hostIfindex);
      this.adoptable.delete(d.hostIfindex);
      if (prior && prior.ipv4 === d.ipv4 && prior.mac === d.mac) {
        this.ids.adopt(`ep:${spec.key}#${d.hostIfindex}`, prior.identity);
      }
      identity = this.ids.get(`ep:${spec.key}#${d.hostIfindex}`);
    }
    // Object.assign, not a spread followed by more fields: V8 gave every
    // object built that way a hidden class of its own (about 400 bytes an
    // endpoint, 2 MB at 5,000); these share one
    const ep: Endpoint = Object.assign({}, spec, {
      identity,
      ipv4: d.ipv4,
      mac: d.mac,
      hostIfindex: d.hostIfindex,
      hostIfname: d.hostIfname,
      gwMac: d.gwMac,
      gateway: d.gateway,
      bridge: d.bridge,
    });
    this.endpoints.set(spec.key, ep);
    this.guarded.delete(ep.hostIfindex);
    this.byIdentity.set(ep.identity, ep);
    const holder = this.byIfindex.get(ep.hostIfindex);
    if (holder && holder.key !== ep.key) this.sharedIfindex = true;
    this.byIfindex.set(ep.hostIfindex, ep);
    this.unprotected.delete(spec.key);
    const touched = this.compiler.upsertEndpoint(ep);
    touched.add(spec.key);
    return { ep, touched, ...(retired ? { retired } : {}) };
  }

  removeEndpoint(key: string, opts: { detach?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      if (this.unblock(key)) this.unprotected.delete(key);
      const ep = this.endpoints.get(key);
      if (!ep) return;
      this.dropEndpoint(ep, opts.detach ?? true);
      this.o.log.info({ endpoint: ep.name, identity: ep.identity, ip: ep.ipv4 }, 'endpoint removed');
    });
  }

  private dropEndpoint(ep: Endpoint, detach = true): void {
    this.unindex(ep);
    const touched = this.compiler.removeEndpoint(ep.key);
    touched.add(ep.key);
    this.commit(touched, false);
    this.o.observer?.removed(ep);
    this.retire(ep, detach);
  }

  /** Out of the network map's indexes (the compiler and the maps are the caller's). */
  private unindex(ep: Endpoint): void {
    if (this.endpoints.get(ep.key) === ep) this.endpoints.delete(ep.key);
    this.byIdentity.delete(ep.identity);
    if (this.byIfindex.get(ep.hostIfindex) === ep) {
      this.byIfindex.delete(ep.hostIfindex);
      if (this.sharedIfindex) {
        for (const other of this.endpoints.values()) if (other.hostIfindex === ep.hostIfindex) this.byIfindex.set(other.hostIfindex, other);
      }
    }
  }

  /** After the commit that took an endpoint's entries away: its identity, connections and (unless told not to) stack go. */
  private retire(ep: Endpoint, detach: boolean): void {
    // The identity is retired for good; connections of the old owner of
    // this address are forgotten.
    this.ids.release(`ep:${ep.key}#${ep.hostIfindex}`);
    this.o.datapath.flushConntrack([ep.ipv4], [ep.identity]);
    if (detach) {
      try {
        this.o.datapath.detach(ep.hostIfindex);
      } catch {
        // the veth is usually gone with its container
      }
    }
  }

  /**
   * A container's veth appeared before the container is known: stack on,
   * dropping everything. Never on an interface another instance protects.
   */
  guardPort(hostIfindex: number): Promise<void> {
    return this.serial(async () => {
      if (this.endpointByIfindex(hostIfindex)) return;
      try {
        this.o.datapath.attach(hostIfindex);
        this.guarded.add(hostIfindex);
      } catch (err) {
        if (err instanceof ForeignStackError) this.warnForeign(hostIfindex, err.ownerPinPath, 'not guarding a new port');
        else this.o.log.warn({ hostIfindex, err: (err as Error).message }, 'could not guard new port');
      }
    });
  }

  /** Undo guardPort for a port that is gone or not ours to protect. */
  releasePort(hostIfindex: number): Promise<void> {
    return this.serial(async () => {
      if (!this.guarded.delete(hostIfindex) || this.endpointByIfindex(hostIfindex)) return;
      try {
        this.o.datapath.detach(hostIfindex);
      } catch {
        // gone with its container
      }
    });
  }

  setUnprotected(c: UnprotectedContainer): void {
    this.unprotected.set(c.key, c);
  }
  clearUnprotected(key: string): void {
    this.unprotected.delete(key);
  }

  /**
   * Other nodes' endpoints that appeared, changed or went (cluster mode).
   * They enter the compiler as peers only: the local endpoints whose rules
   * name them are recompiled, and their slices carry the remote entries
   * (bastion_remote) of exactly the peers they need.
   */
  setRemoteEndpoints(upserted: RemoteEndpoint[], removed: string[]): Promise<ApplyStats> {
    return this.serial(async () => {
      const touched = new Set<string>();
      const add = (keys: Set<string>) => {
        for (const k of keys) if (this.endpoints.has(k)) touched.add(k);
      };
      for (const id of removed) {
        const r = this.remote.get(id);
        if (!r) continue;
        this.remote.delete(id);
        if (this.remoteById.get(r.identity) === r) this.remoteById.delete(r.identity);
        add(this.compiler.removeEndpoint(remoteKey(id)));
      }
      for (const r of upserted) {
        const old = this.remote.get(r.id);
        if (old && this.remoteById.get(old.identity) === old) this.remoteById.delete(old.identity);
        this.remote.set(r.id, r);
        this.remoteById.set(r.identity, r);
        add(this.compiler.upsertRemote(remoteKey(r.id), r));
      }
      // a rule with a wildcard peer reaches every remote endpoint
      if (upserted.length || removed.length) for (const k of this.compiler.wildcardSubjects()) if (this.endpoints.has(k)) touched.add(k);
      // No conntrack flush: entries carry both identities, and a removed
      // endpoint's address resolves to another one (or world) from now on.
      return this.commit(touched, false);
    });
  }

  /** Other nodes' underlay addresses: never world for a container. */
  setRemoteNodes(addrs: string[]): Promise<void> {
    return this.serial(async () => {
      const sorted = [...new Set(addrs)].sort();
      if (sorted.join() === this.remoteNodes.join()) return;
      this.remoteNodes = sorted;
      this.commit(new Set(), true);
    });
  }

  /**
   * This node's tunnel (cluster mode): its bastion_tunnel entry is written
   * with the global slice, so the reconciler's drift check reads it back and
   * repairs it like any other entry (the program on the device is the
   * cluster node's to watch: src/cluster/node.ts).
   */
  setTunnel(info: TunnelInfo | undefined): Promise<void> {
    return this.serial(async () => {
      this.tunnel = info;
      this.commit(new Set(), true);
    });
  }

  /** Keep only these endpoint keys (after a platform resync, a config reload). */
  retainOnly(keys: Set<string>): Promise<void> {
    const gone = [...this.endpoints.keys(), ...this.blocked.keys()].filter((k) => !keys.has(k));
    return Promise.all(gone.map((k) => this.removeEndpoint(k))).then(() => undefined);
  }

  /** Recompile the given endpoint slices (and the global one) and write the differences. */
  private commit(keys: Set<string>, global: boolean): ApplyStats {
    const t0 = performance.now();
    const ctx = this.sliceEnv();
    const store = this.reconciler.store;
    if (global) {
      store.replace(GLOBAL_SLICE, this.compiler.globalSlice(ctx));
      store.replace(CONFIG_SLICE, this.compiler.configSlice(ctx, this.policyEpoch));
    }
    for (const key of keys) {
      if (key.startsWith('remote:')) continue; // another node's endpoint: no slice here
      const ep = this.endpoints.get(key);
      if (ep) store.replace(key, this.compiler.endpointSlice(ep, ctx));
      else store.remove(key);
    }
    // every slice's net changes, together, in the one order (a failed write is the reconciler's to repair)
    const { ops, ok } = this.reconciler.flush();
    if (ops) this.generation++;
    // the whole change is written: established connections meet the policy now in force
    // (after a failed write, once the resync has repaired the maps)
    if (ops && ok) this.newPolicyEpoch();
    const stats = { ops, slices: keys.size, ms: performance.now() - t0 };
    this.lastApply = stats;
    return stats;
  }

  private sliceEnv(): SliceEnv {
    return {
      endpoints: this.endpoints,
      hostAddrs: this.hostAddrs,
      mode: this.mode,
      modeOf: this.o.modeOf,
      limits: this.o.limits,
      remoteById: this.remoteById,
      remoteNodes: this.remoteNodes,
      tunnel: this.tunnel,
    };
  }

  /** The next policy epoch, written as the last write of a change (bpf/lib/verdict.h, ct_recheck). */
  private newPolicyEpoch(): void {
    this.policyEpoch = (this.policyEpoch + 1) >>> 0 || 1;
    this.reconciler.store.replace(CONFIG_SLICE, this.compiler.configSlice(this.sliceEnv(), this.policyEpoch));
    this.reconciler.flush();
  }

  /** The daemon's view of these endpoints' modes changed (see ManagerOptions.modeOf): rewrite their entries. */
  refreshModes(keys: Iterable<string>): Promise<ApplyStats> {
    return this.serial(async () => this.commit(new Set([...keys].filter((k) => this.endpoints.has(k))), false));
  }

  /** An endpoint's mode as its stack runs it. */
  effectiveMode(ep: Endpoint): PolicySet['mode'] {
    if (this.mode === 'audit') return 'audit';
    return this.o.modeOf?.(ep) ?? ep.mode ?? this.mode;
  }

  /**
   * After start-up: bring the maps in line (entries a previous run left and
   * this one does not want go: containers dropped from the config while the
   * daemon was down) and detach this instance's stacks from interfaces it no
   * longer manages. Another instance's stacks are never touched.
   */
  async pruneLeftovers(): Promise<{ entries: number; stacks: number }> {
    const maps = await this.reconciler.check('startup');
    return this.serial(async () => {
      const mine = new Set([...this.endpoints.values()].map((e) => e.hostIfindex));
      for (const g of this.guarded) mine.add(g);
      let stacks = 0;
      for (const ifindex of this.o.datapath.attachedIfindexes()) {
        if (mine.has(ifindex)) continue;
        try {
          this.o.datapath.detach(ifindex);
        } catch {
          // interface already gone
        }
        stacks++;
      }
      this.adoptable.clear();
      return { entries: maps.repaired, stacks };
    });
  }

  /**
   * Check that what the kernel holds is what this instance wants, and put
   * right what is not: every managed map read back and compared (see
   * reconciler.ts), every stack of an endpoint or guarded port queried (one
   * missing, or replaced by something that is not Bastion's, is attached
   * again; another instance's is reported, never touched), and endpoints
   * whose interface vanished found again (a container restarted in a new
   * network namespace). Concurrent calls of the map part share one run.
   */
  async verify(reason: CheckReason): Promise<VerifyReport> {
    const t0 = performance.now();
    const maps = await this.reconciler.check(reason);
    const stacks = await this.checkStacks(reason);
    const clean = maps.clean && stacks.foreign.length === 0 && stacks.lost.length === 0 && this.blocked.size === 0;
    return { reason, at: maps.at, ms: +(performance.now() - t0).toFixed(1), maps, stacks, clean };
  }

  private async checkStacks(reason: CheckReason): Promise<VerifyReport['stacks']> {
    const out: VerifyReport['stacks'] = { checked: 0, reattached: 0, foreign: [], rediscovered: [], lost: [] };
    const dp = this.o.datapath;
    const broken: Array<{ ifindex: number; ep?: Endpoint; state: StackState }> = [];
    const gone: Endpoint[] = [];
    // Stack queries are netlink round trips and BPF syscalls, several per
    // interface: the event loop gets a turn every STACK_CHECK_SLICE_MS, so an
    // update that arrives during a check waits about that long, whatever the
    // number of containers (a turn every 256 interfaces held it for tens of
    // ms at 5,000).
    let slice = performance.now();
    const breathe = async () => {
      if (performance.now() - slice < STACK_CHECK_SLICE_MS) return;
      await new Promise((r) => setImmediate(r));
      slice = performance.now();
    };
    for (const ep of [...this.endpoints.values()]) {
      await breathe();
      const s = dp.stackState(ep.hostIfindex);
      out.checked++;
      if (s.gone) gone.push(ep);
      else if (s.owner === 'foreign') {
        out.foreign.push({ endpoint: ep.name, hostIfindex: ep.hostIfindex, ownerPinPath: s.ownerPinPath });
        this.warnForeign(ep.hostIfindex, s.ownerPinPath, `endpoint ${ep.name} lost its stack to`);
      } else if (!s.ok) broken.push({ ifindex: ep.hostIfindex, ep, state: s });
    }
    for (const ifindex of [...this.guarded]) {
      await breathe();
      const s = dp.stackState(ifindex);
      out.checked++;
      if (s.gone || s.owner === 'foreign') {
        // gone with its container, or another instance's now: not ours to guard
        this.guarded.delete(ifindex);
        if (s.owner === 'foreign') this.warnForeign(ifindex, s.ownerPinPath, 'stopped guarding a port taken by');
      } else if (!s.ok) broken.push({ ifindex, state: s });
    }
    await this.serial(async () => {
      for (const b of broken) {
        // still ours to protect, on the same interface?
        if (b.ep ? this.endpoints.get(b.ep.key) !== b.ep : !this.guarded.has(b.ifindex)) continue;
        try {
          dp.attach(b.ifindex);
        } catch (err) {
          if (err instanceof ForeignStackError) this.warnForeign(b.ifindex, err.ownerPinPath, 'could not put a stack back: interface taken by');
          else this.o.log.error({ hostIfindex: b.ifindex, endpoint: b.ep?.name, err: (err as Error).message }, 'could not put a missing stack back');
          continue;
        }
        out.reattached++;
        const was = b.state.owner === 'other' ? 'replaced by a program that is not Bastion\'s' : b.state.owner === 'earlier' ? 'a previous run\'s' : 'missing';
        this.o.log.warn({ endpoint: b.ep?.name, hostIfindex: b.ifindex, hostInterface: b.ep?.hostIfname, was, reason }, 'drift repaired: stack attached again');
        this.reconciler.recordRepair({ map: 'stack', kind: 'reattached', hostIfindex: b.ifindex, identity: b.ep?.identity, reason });
      }
    });
    // Interfaces that vanished: the container may be back in a new namespace, with a new veth.
    for (const ep of gone) {
      let d: Discovered;
      try {
        // discovery looks again at everything: the old interface's values are not the new one's
        d = await this.o.node.discover(specOf(ep));
      } catch (err) {
        out.lost.push(ep.name);
        if (!this.warnedLost.has(ep.key)) {
          this.warnedLost.add(ep.key);
          this.o.log.error({ endpoint: ep.name, hostInterface: ep.hostIfname, err: (err as Error).message }, 'endpoint interface vanished and the container cannot be found again: not protected until it is');
        }
        continue;
      }
      this.warnedLost.delete(ep.key);
      const spec = this.endpoints.get(ep.key);
      if (!spec || spec.hostIfindex !== ep.hostIfindex) continue; // changed meanwhile
      const placed = await this.upsertEndpoint(specOf(spec), d);
      if (!placed) continue;
      out.rediscovered.push(ep.name);
      this.o.log.warn({ endpoint: ep.name, hostInterface: d.hostIfname, identity: placed.identity, reason }, 'drift repaired: endpoint found again on a new interface');
      this.reconciler.recordRepair({ map: 'stack', kind: 'rediscovered', hostIfindex: d.hostIfindex, identity: placed.identity, reason });
    }
    for (const b of this.blocked.values()) out.foreign.push({ endpoint: b.spec.name, hostIfindex: b.d.hostIfindex, ownerPinPath: b.owner });
    return out;
  }

  /** Blocked containers: the interface carried another instance's stack. Listed unprotected; tried again soon. */
  private block(spec: EndpointSpec, d: Discovered, err: ForeignStackError): void {
    const old = this.endpoints.get(spec.key);
    if (old) this.dropEndpoint(old, old.hostIfindex !== d.hostIfindex);
    this.blocked.set(spec.key, { spec, d, owner: err.ownerPinPath });
    this.unprotected.set(spec.key, { key: spec.key, name: spec.name, reason: err.message });
    // asked to protect a container it cannot: an error, not a warning
    this.warnForeign(d.hostIfindex, err.ownerPinPath, `not protecting ${spec.name}: its interface carries the stack of`, 'error');
    this.scheduleBlockedRetry();
  }

  private unblock(key: string): boolean {
    if (!this.blocked.delete(key)) return false;
    this.unprotected.delete(key);
    return true;
  }

  private scheduleBlockedRetry(): void {
    if (this.blockedTimer || !this.blocked.size) return;
    this.blockedTimer = setTimeout(() => {
      this.blockedTimer = undefined;
      void this.retryBlocked();
    }, BLOCKED_RETRY_MS);
    this.blockedTimer.unref();
  }

  /** Take up blocked containers whose interface no longer carries another instance's stack. */
  private async retryBlocked(): Promise<void> {
    for (const [key, b] of [...this.blocked]) {
      const s = this.o.datapath.stackState(b.d.hostIfindex);
      if (s.owner === 'foreign') continue;
      try {
        const d = s.gone ? await this.o.node.discover(b.spec) : b.d;
        if (this.blocked.get(key) !== b) continue;
        const ep = await this.upsertEndpoint(b.spec, d);
        if (ep) this.o.log.warn({ endpoint: ep.name, hostInterface: ep.hostIfname }, 'the other instance let go of the interface: endpoint protected by this one now');
      } catch (err) {
        this.o.log.debug({ endpoint: b.spec.name, err: (err as Error).message }, 'blocked endpoint not placed yet');
      }
    }
    this.scheduleBlockedRetry();
  }

  private warnForeign(hostIfindex: number, owner: string | undefined, what: string, level: 'warn' | 'error' = 'warn'): void {
    const said = this.warnedForeign.get(hostIfindex);
    if (said === (owner ?? '?') + what) return;
    this.warnedForeign.set(hostIfindex, (owner ?? '?') + what);
    this.o.log[level](
      { hostIfindex, ownerPinPath: owner ?? 'unknown' },
      `${what} another Bastion instance's stack: an instance never guards, replaces or detaches another's`,
    );
  }

  /** Containers left unprotected because their interface carries another instance's stack. */
  blockedNames(): string[] {
    return [...this.blocked.values()].map((b) => b.spec.name);
  }

  /** The update path's health: dirty (a write failed) and resyncing, the last check, the repairs. */
  health(): ReconcilerHealth & { blocked: number } {
    return { ...this.reconciler.health(), blocked: this.blocked.size };
  }

  /** Stops the timers (resync, blocked retries); the maps and stacks stay. */
  close(): void {
    this.reconciler.close();
    if (this.blockedTimer) clearTimeout(this.blockedTimer);
    this.blockedTimer = undefined;
  }

  /** Every rule in force, in order (status; costs the number of rules). */
  ruleList(): Rule[] {
    return this.compiler.rules();
  }

  entryCounts(): Record<string, number> {
    const store = this.reconciler.store;
    return {
      policy: store.count(MAP_NAMES.policy),
      neigh: store.count(MAP_NAMES.neigh),
      ipcache: store.count(MAP_NAMES.ipcache),
      endpoints: store.count(MAP_NAMES.endpoints),
      remote: store.count(MAP_NAMES.remote),
    };
  }

  /** The remote endpoints some local endpoint depends on: those in this node's maps. */
  remoteInMaps(): RemoteEndpoint[] {
    return [...this.remote.values()].filter((r) => this.reconciler.store.holds(MAP_NAMES.remote, encodeIpKey(r.ipv4)));
  }

  identityName(identity: number): string | undefined {
    if (identity === 1) return 'host';
    if (identity === 2) return 'world';
    if (identity === 3) return 'remote-node';
    const r = this.remoteById.get(identity);
    if (r) return `${r.node}/${r.name}`;
    return this.byIdentity.get(identity)?.name ?? this.compiler.cidrName(identity);
  }

  /** A container's labels, local or on another node (cluster mode); undefined for anything else. */
  identityLabels(identity: number): Record<string, string> | undefined {
    return this.byIdentity.get(identity)?.labels ?? (this.remoteById.get(identity)?.labels as Record<string, string> | undefined);
  }

  /** The node a container runs on (cluster mode): another node's name, or this one's for a local container. */
  identityNode(identity: number): string | undefined {
    const r = this.remoteById.get(identity);
    if (r) return r.node;
    return this.o.nodeName !== undefined && this.byIdentity.has(identity) ? this.o.nodeName : undefined;
  }

  endpointByIdentity(identity: number): Endpoint | undefined {
    return this.byIdentity.get(identity);
  }

  endpointByIfindex(ifindex: number): Endpoint | undefined {
    return this.byIfindex.get(ifindex);
  }
}

/** The compiler's key of a remote endpoint: never a local endpoint's key. */
function remoteKey(id: string): string {
  return `remote:${id}`;
}

/** The platform's description of an endpoint, without what discovery found (so discovery looks again). */
function specOf(ep: Endpoint): EndpointSpec {
  const { identity: _i, ipv4: _a, mac: _m, hostIfindex: _h, hostIfname: _n, gwMac: _g, gateway: _w, bridge: _b, ...spec } = ep;
  return spec;
}
