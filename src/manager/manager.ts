/**
 * The manager: keeps the network map (endpoints and their identities) and
 * the policy, and keeps the datapath's maps equal to what they imply.
 *
 * Every change is turned into the set of endpoint slices it can touch; only
 * those are recompiled, and only their differences are written. Writes are
 * ordered so that a container never runs unprotected (stack attached and
 * dropping before its entries exist) and a policy change never opens a gap.
 */
import type { Logger } from 'pino';
import type { Endpoint, EndpointSpec, UnprotectedContainer } from './endpoint.js';
import type { DatapathPort, Discovered, NodePort } from './ports.js';
import type { PolicySet, Rule } from '../policy/model.js';
import { IdentityAllocator, RuleNumbers } from './identity.js';
import { SliceStore, type MapOp } from './entries.js';
import { SliceCompiler, type DatapathLimits } from './slices.js';
import { ID_FIRST_DYNAMIC } from '../datapath/layout.js';

export interface ManagerOptions {
  datapath: DatapathPort;
  node: NodePort;
  log: Logger;
  /** the datapath's flood limits (written with the datapath config) */
  limits?: DatapathLimits;
}

export interface ApplyStats {
  ops: number;
  slices: number;
  ms: number;
}

const GLOBAL_SLICE = '@global';

export class Manager {
  readonly endpoints = new Map<string, Endpoint>();
  readonly unprotected = new Map<string, UnprotectedContainer>();
  private readonly byIdentity = new Map<number, Endpoint>();
  /** by host-side ifindex: every flow event names its endpoint by ifindex */
  private readonly byIfindex = new Map<number, Endpoint>();
  /**
   * Two endpoints were placed on one interface (one namespace named by name
   * and by /proc path): removing one must find the other. Rare; only then
   * does a removal scan.
   */
  private sharedIfindex = false;
  private readonly guarded = new Set<number>();
  readonly ids: IdentityAllocator;
  readonly datapath: DatapathPort;
  readonly rules = new RuleNumbers();
  /** the policy's mode; its rules live in the compiler (rules() lists them) */
  mode: PolicySet['mode'] = 'enforce';
  hostAddrs: string[] = [];
  generation = 0;
  lastApply?: ApplyStats;
  private readonly slices = new SliceStore();
  private readonly compiler: SliceCompiler;
  /** identities of endpoints found in the maps at start-up, by host ifindex */
  private readonly adoptable = new Map<number, { identity: number; ipv4: string; mac: string }>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: ManagerOptions) {
    this.datapath = o.datapath;
    this.ids = new IdentityAllocator({
      loadNext: () => o.datapath.loadNextIdentity(),
      saveNext: (n) => o.datapath.saveNextIdentity(n),
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
      // entries that refer to them stay valid across the restart.
      if (k.prefixlen < 32 && k.prefixlen > 0 && v.identity >= ID_FIRST_DYNAMIC) {
        this.ids.adopt(`cidr:${k.addr}/${k.prefixlen}`, v.identity);
      }
    }
  }

  /** Serialise every change: they are applied one at a time, whole. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
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
      return this.commit(touched, true);
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
    return this.serial(async () => {
      // nothing here may cost in proportion to all rules (no copy of the rule list)
      const touched = this.compiler.changeRules(add, remove);
      return this.commit(touched, true);
    });
  }

  /** Add or update a container interface (`known`: what a discovery already found). */
  upsertEndpoint(spec: EndpointSpec, known?: Discovered): Promise<Endpoint> {
    return this.serial(async () => {
      const d = known ?? (await this.o.node.discover(spec));
      const { ep, touched } = this.place(spec, d);
      this.commit(touched, false);
      this.logProtected(ep);
      return ep;
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
      for (const { spec, known } of items) {
        const r = this.place(spec, known);
        for (const k of r.touched) touched.add(k);
        eps.push(r.ep);
      }
      this.commit(touched, false);
      for (const ep of eps) this.logProtected(ep);
      return eps;
    });
  }

  private logProtected(ep: Endpoint): void {
    this.o.log.info({ endpoint: ep.name, identity: ep.identity, ip: ep.ipv4, hostInterface: ep.hostIfname }, 'endpoint protected');
  }

  /** Attach the stack and enter the endpoint in the compiler; the caller commits. */
  private place(spec: EndpointSpec, d: Discovered): { ep: Endpoint; touched: Set<string> } {
    const old = this.endpoints.get(spec.key);
    const same = old && old.hostIfindex === d.hostIfindex && old.ipv4 === d.ipv4 && old.mac === d.mac;
    let identity: number;
    if (same) {
      identity = old.identity;
    } else {
      if (old) this.dropEndpoint(old);
      // After a restart, the same interface with the same address keeps
      // its identity (and so its connections). Anything else is new.
      const prior = this.adoptable.get(d.hostIfindex);
      this.adoptable.delete(d.hostIfindex);
      if (prior && prior.ipv4 === d.ipv4 && prior.mac === d.mac) {
        this.ids.adopt(`ep:${spec.key}#${d.hostIfindex}`, prior.identity);
      }
      identity = this.ids.get(`ep:${spec.key}#${d.hostIfindex}`);
    }
    const ep: Endpoint = {
      ...spec,
      identity,
      ipv4: d.ipv4,
      mac: d.mac,
      hostIfindex: d.hostIfindex,
      hostIfname: d.hostIfname,
      gwMac: d.gwMac,
      gateway: d.gateway,
      bridge: d.bridge,
    };
    // The stack goes on first and drops everything until the endpoint's
    // entries exist: there is no moment where the container is unguarded.
    this.o.datapath.attach(ep.hostIfindex);
    this.endpoints.set(spec.key, ep);
    this.guarded.delete(ep.hostIfindex);
    this.byIdentity.set(ep.identity, ep);
    const holder = this.byIfindex.get(ep.hostIfindex);
    if (holder && holder.key !== ep.key) this.sharedIfindex = true;
    this.byIfindex.set(ep.hostIfindex, ep);
    this.unprotected.delete(spec.key);
    const touched = this.compiler.upsertEndpoint(ep);
    touched.add(spec.key);
    return { ep, touched };
  }

  removeEndpoint(key: string, opts: { detach?: boolean } = {}): Promise<void> {
    return this.serial(async () => {
      const ep = this.endpoints.get(key);
      if (!ep) return;
      this.dropEndpoint(ep, opts.detach ?? true);
      this.o.log.info({ endpoint: ep.name, identity: ep.identity, ip: ep.ipv4 }, 'endpoint removed');
    });
  }

  private dropEndpoint(ep: Endpoint, detach = true): void {
    this.endpoints.delete(ep.key);
    this.byIdentity.delete(ep.identity);
    if (this.byIfindex.get(ep.hostIfindex) === ep) {
      this.byIfindex.delete(ep.hostIfindex);
      if (this.sharedIfindex) {
        for (const other of this.endpoints.values()) if (other.hostIfindex === ep.hostIfindex) this.byIfindex.set(other.hostIfindex, other);
      }
    }
    const touched = this.compiler.removeEndpoint(ep.key);
    touched.add(ep.key);
    this.commit(touched, false);
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

  /** A container's veth appeared before the container is known: stack on, dropping everything. */
  guardPort(hostIfindex: number): Promise<void> {
    return this.serial(async () => {
      if (this.endpointByIfindex(hostIfindex)) return;
      try {
        this.o.datapath.attach(hostIfindex);
        this.guarded.add(hostIfindex);
      } catch (err) {
        this.o.log.warn({ hostIfindex, err: (err as Error).message }, 'could not guard new port');
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

  /** Keep only these endpoint keys (after a platform resync). */
  retainOnly(keys: Set<string>): Promise<void> {
    const gone = [...this.endpoints.keys()].filter((k) => !keys.has(k));
    return Promise.all(gone.map((k) => this.removeEndpoint(k))).then(() => undefined);
  }

  /** Recompile the given endpoint slices (and the global one) and write the differences. */
  private commit(keys: Set<string>, global: boolean): ApplyStats {
    const t0 = performance.now();
    const ops: MapOp[] = [];
    const ctx = { endpoints: this.endpoints, hostAddrs: this.hostAddrs, mode: this.mode, limits: this.o.limits };
    if (global) ops.push(...this.slices.replace(GLOBAL_SLICE, this.compiler.globalSlice(ctx)));
    for (const key of keys) {
      const ep = this.endpoints.get(key);
      ops.push(...(ep ? this.slices.replace(key, this.compiler.endpointSlice(ep, ctx)) : this.slices.remove(key)));
    }
    // Within one commit, put every upsert before every delete (each replace
    // already orders its own writes by map).
    ops.sort((a, b) => (a.op === b.op ? 0 : a.op === 'upsert' ? -1 : 1));
    this.o.datapath.apply(ops);
    if (ops.length) this.generation++;
    const stats = { ops: ops.length, slices: keys.size, ms: performance.now() - t0 };
    this.lastApply = stats;
    return stats;
  }

  /** Rewrite every entry (after a restart, to repair whatever a crash left half-done). */
  resyncAll(): Promise<ApplyStats> {
    return this.serial(async () => this.commit(new Set(this.endpoints.keys()), true));
  }

  /**
   * After start-up: delete map entries and detach stacks that a previous run
   * left and this one does not manage (containers dropped from the config
   * while the daemon was down).
   */
  pruneLeftovers(): Promise<{ entries: number; stacks: number }> {
    return this.serial(async () => {
      const entries = this.o.datapath.prune(this.slices.all());
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
      return { entries, stacks };
    });
  }

  /** Every rule in force, in order (status; costs the number of rules). */
  ruleList(): Rule[] {
    return this.compiler.rules();
  }

  entryCounts(): Record<string, number> {
    return {
      policy: this.slices.count('bastion_policy'),
      neigh: this.slices.count('bastion_neigh'),
      ipcache: this.slices.count('bastion_ipcache'),
      endpoints: this.slices.count('bastion_ep'),
    };
  }

  identityName(identity: number): string | undefined {
    if (identity === 1) return 'host';
    if (identity === 2) return 'world';
    return this.byIdentity.get(identity)?.name ?? this.compiler.cidrName(identity);
  }

  endpointByIfindex(ifindex: number): Endpoint | undefined {
    return this.byIfindex.get(ifindex);
  }
}
