/**
 * This node as a member of the cluster: the seam between the cluster store
 * (session.ts, view.ts) and the manager.
 *
 * Into the manager: other nodes' believable endpoints (remote endpoints:
 * identity, address, MAC, node address, labels), other nodes' underlay
 * addresses, and the cluster's policies, as deltas in the store's order.
 * Out of the manager: this node's endpoints, published as they are placed
 * and removed, with identities the cluster allocates (EndpointIdentities).
 * An endpoint whose address another node holds is refused, with both nodes
 * named; one that loses a race after publishing is refused then.
 *
 * And the tunnel: the node's VXLAN device on the underlay, from_overlay on it
 * (never over another instance's: ForeignStackError at start-up), and its
 * bastion_tunnel entry through the manager (Manager.setTunnel), so that the
 * reconciler's drift checks read it back and repair it with the other maps.
 * The program on the device is watched here, every 5 s, and put back loudly.
 */
import { readFileSync } from 'node:fs';
import { timeout, TimeoutStrategy } from 'cockatiel';
import type { Logger } from 'pino';
import type { Manager, EndpointIdentities, EndpointObserver } from '../manager/manager.js';
import type { Endpoint, EndpointSpec } from '../manager/endpoint.js';
import { ForeignStackError, type Discovered } from '../manager/ports.js';
import type { RemoteEndpoint } from '../manager/remote.js';
import type { Rule } from '../policy/model.js';
import type { PolicyConfig } from '../policy/bastion-config.js';
import { policyToRules } from '../policy/bastion-config.js';
import { describePolicy, toDocumentPolicy } from '../policy/policy-document.js';
import type { ClusterStatus, PolicyRow } from '../api/types.js';
import { connectCluster, type ClusterConnection } from './etcd.js';
import { ClusterSession, type SessionStatus } from './session.js';
import { checkNodeName, endpointKey, nodeKey, nodeUser, type EndpointRecord, type NodeRecord } from './keys.js';
import { isPermissionDenied } from './etcd.js';
import type { ResolvedEndpoint, ViewDelta } from './view.js';
import { ensureTunnelDevice, interfaceIndex, routeDevice, underlayOf, type UnderlayAttach } from '../agent/tunnel.js';
import { formatIpv4, ipv4Mask, parseIpv4 } from '../net/ip.js';
import { releaseMemory } from '../daemon/memory.js';
import { isSameProcess, processIdentity } from '../daemon/instance.js';
import type { TunnelInfo } from '../datapath/layout.js';

/**
 * After this many remote endpoints came or went in one burst, the node gives
 * the burst's garbage back to the system once the store is quiet again
 * (RELEASE_QUIET_MS): another node starting with 5,000 containers left this
 * node 60 MiB larger in a first measure, 35 MiB of it the records it keeps
 * (test/integration/cluster-scale.test.ts reports both).
 */
const RELEASE_AFTER_CHANGES = 1000;
const RELEASE_QUIET_MS = 1000;

export interface ClusterNodeOptions {
  connection: ClusterConnection;
  node: string;
  /** the underlay interface: its address is the node's, VXLAN goes over it */
  underlay: string;
  leaseTtlS: number;
  tunnelDevice: string;
  tunnelPort: number;
  version: string;
}

/** The node's figures for Prometheus (src/daemon/metrics.ts). */
export interface ClusterMetrics {
  connected: boolean;
  pendingWrites: number;
  remoteEndpoints: number;
  refused: number;
  tampering: number;
  /** this instance's from_overlay is on the tunnel device */
  tunnelAttached: boolean;
  /** this instance's from_underlay is on the underlay interface (it decapsulates other nodes' small packets itself) */
  underlayAttached: boolean;
  /** another daemon publishes this node's record (the same --node twice) */
  nodeConflict: boolean;
  /** other nodes whose underlay address is not reached through --underlay */
  misroutedNodes: number;
  /** times it was found missing and put back */
  tunnelRepairs: number;
}

/** What the node needs of the datapath beyond the manager's port. */
export interface TunnelPort {
  /** this instance's from_overlay on the device's ingress (ForeignStackError: another instance's is there) */
  attachTunnel(ifindex: number): void;
  /** is this instance's from_overlay on the device's ingress? */
  tunnelAttached(ifindex: number): boolean;
  /** this instance's from_underlay on the underlay's ingress, unless another tool's or instance's filter holds the slot */
  attachUnderlay(ifindex: number): UnderlayAttach;
  /** is this instance's from_underlay on the underlay's ingress? */
  underlayAttached(ifindex: number): boolean;
}


export class ClusterNode implements EndpointIdentities, EndpointObserver {
  readonly session: ClusterSession;
  private manager?: Manager;
  private readonly policies = new Map<string, { policy: PolicyConfig; rules: Rule[] }>();
  private readonly subnets = new Set<string>();
  private readonly refused = new Map<string, { spec: EndpointSpec; ip: string; reason: string }>();
  private queue: Promise<void> = Promise.resolve();
  private datapath?: TunnelPort;
  /** told after the cluster's policies changed (the daemon's modes: policies in audit mode) */
  private policiesApplied?: () => Promise<unknown>;
  private tunnelIfindex = 0;
  private tunnelTimer?: NodeJS.Timeout;
  /** the underlay interface's index as the senders' entry has it (0: gone; they send through the device) */
  private underlayIfindex: number;
  /** times the underlay interface was found gone or made again */
  underlayChanges = 0;
  /** times the tunnel program was found missing and put back */
  tunnelRepairs = 0;
  /**
   * why from_underlay is not on the underlay's ingress (another tool's or
   * instance's filter holds Bastion's slot, attaching failed): said once in
   * the log and in status; this node then receives through the device alone
   */
  private underlayNotAttached?: string;
  /** deltas that arrived before the manager was attached: applied after (idempotent) */
  private pending: ViewDelta[] = [];
  /** loud problems, for metrics */
  tampering = 0;
  /** another daemon took this node's record over (the same --node on two machines), as said in the log */
  private conflict?: string;
  /** other nodes whose underlay address the kernel does not reach through --underlay, with why */
  private misrouted = new Map<string, string>();
  /** remote endpoints that came or went since memory was last given back */
  private churn = 0;
  private releaseTimer?: NodeJS.Timeout;

  private constructor(
    readonly o: ClusterNodeOptions,
    private readonly log: Logger,
    readonly underlay: { ifindex: number; address: string; prefixLen: number; mtu: number },
  ) {
    this.underlayIfindex = underlay.ifindex;
    const record: NodeRecord = {
      name: o.node,
      underlay: underlay.address,
      underlayInterface: o.underlay,
      subnets: [],
      tunnelPort: o.tunnelPort,
      startedAt: new Date().toISOString(),
      version: o.version,
      ...(thisProcess() ? { process: thisProcess()! } : {}),
    };
    this.session = new ClusterSession({ client: connectCluster(o.connection), node: o.node, nodeRecord: record, leaseTtlS: o.leaseTtlS, log });
  }

  static async open(o: ClusterNodeOptions, log: Logger): Promise<ClusterNode> {
    const bad = checkNodeName(o.node);
    if (bad) throw new Error(`--node: ${bad}`);
    const u = await underlayOf(o.underlay);
    return new ClusterNode(o, log, u);
  }

  /**
   * Load the cluster (waits for the store), bring up the tunnel, and give
   * the manager what the cluster already holds: remote endpoints, remote
   * nodes, policies. Local endpoints are published once the daemon has
   * placed its first ones (beginPublishing).
   */
  async start(manager: Manager, datapath: TunnelPort): Promise<void> {
    this.log.info({ store: this.o.connection.url, node: this.o.node }, 'connecting to the cluster store');
    await this.session.start((d) => this.onDelta(d));
    await this.checkMembership();
    const t = await ensureTunnelDevice(this.o.tunnelDevice, this.o.tunnelPort, this.o.underlay, this.underlay.mtu);
    this.datapath = datapath;
    try {
      datapath.attachTunnel(t.ifindex);
    } catch (err) {
      if (err instanceof ForeignStackError) {
        throw new Error(
          `tunnel device ${this.o.tunnelDevice} carries another Bastion instance's from_overlay${err.ownerPinPath ? ` (pin path ${err.ownerPinPath})` : ''}: ` +
            'not taking it over; give this instance its own --tunnel-device and --tunnel-port',
        );
      }
      throw err;
    }
    this.tunnelIfindex = t.ifindex;
    await manager.setTunnel(this.tunnelInfo(t.ifindex));
    // after the tunnel entry, which from_underlay reads (this node's address and port)
    const onUnderlay = this.attachUnderlay(datapath);
    this.log.info({ device: this.o.tunnelDevice, ifindex: t.ifindex, created: t.created, mtu: t.mtu, underlay: this.underlay.address, underlayProgram: onUnderlay }, 'tunnel in place');
    // Without from_overlay nothing from other nodes is checked or delivered:
    // if another tool takes it off (or the device goes), put it back, loudly.
    this.tunnelTimer = setInterval(() => void this.checkTunnel(manager, datapath), 5000);
    this.tunnelTimer.unref();
    await this.refreshLeases();
    this.leaseTimer = setInterval(() => void this.refreshLeases(), 2000);
    this.leaseTimer.unref();
    for (const p of this.session.view.policies.values()) this.setPolicy(p.policy);
    this.manager = manager;
    await this.checkRoutes();
    await manager.setRemoteNodes(this.session.view.remoteNodeAddresses());
    await manager.setRemoteEndpoints(this.session.view.remoteEndpoints().map(toRemote), []);
    const pending = this.pending;
    this.pending = [];
    for (const d of pending) await this.apply(d);
  }

  /**
   * The tunnel device's name for its ifindex, or the underlay's for its own
   * (from_underlay's records): flow records of packets from other nodes
   * dropped before their receiver is known.
   */
  tunnelDevice(ifindex: number): string | undefined {
    if (ifindex <= 0) return undefined;
    if (ifindex === this.tunnelIfindex) return this.o.tunnelDevice;
    return ifindex === this.underlayIfindex ? this.o.underlay : undefined;
  }

  /** The node whose underlay address this is (this node's own included). */
  nodeByUnderlay(address: string): string | undefined {
    if (address === this.underlay.address) return this.o.node;
    for (const [name, n] of this.session.view.nodes) if (n.record.underlay === address) return name;
    return undefined;
  }

  /**
   * The senders' tunnel entry: the device, and the underlay interface and
   * port they build VXLAN packets for themselves (lib/encap.h,
   * tunnel_encap_direct), so that a packet to another node skips the
   * device's transmit path. The device stays: it receives.
   */
  private tunnelInfo(ifindex: number): TunnelInfo {
    return { ifindex, localIpv4: this.underlay.address, underlayIfindex: this.underlayIfindex, port: this.o.tunnelPort, flags: 0 };
  }

  beginPublishing(): void {
    this.session.beginPublishing();
  }

  /**
   * Before this node writes anything: may its credential write this node's
   * keys, and is the name free? Both are mistakes an operator makes (a
   * copied command line, the wrong certificate), and both would otherwise
   * fail later and quietly: writes retried forever, or a second daemon with
   * the same --node rewriting the first one's record and deleting its
   * containers from the cluster.
   */
  private async checkMembership(): Promise<void> {
    const node = this.o.node;
    try {
      await this.session.probeWrite([nodeKey(node), endpointKey(node, 'bastion-permission-check')]);
    } catch (err) {
      if (!isPermissionDenied(err)) throw err;
      throw new Error(
        `the cluster store refuses this node's writes: the certificate ${this.o.connection.cert ?? '(none)'} may not write node ${node}'s keys ` +
          `(etcd user ${nodeUser(node)} may). Start each node with its own certificate: node-${node}.pem from bastion cluster certs`,
      );
    }
    const held = this.session.view.nodes.get(node);
    if (!held) return; // free
    if (held.record.underlay === this.underlay.address) {
      // this host's: an earlier run (a restart), unless that daemon still runs
      const other = held.record.process;
      const me = thisProcess();
      if (!other || !me || other.bootId !== me.bootId || other.pid === me.pid || !isSameProcess(other)) return;
      throw new Error(
        `node name ${node} is in use by another daemon on this host: pid ${other.pid}, started ${held.record.startedAt}. ` +
          'Two daemons with one --node would take each other\'s containers off the cluster: stop it first (bastion down --pin-path ITS_PIN_PATH), or give this one its own --node',
      );
    }
    const lease = await this.session.leaseTtl(held.meta.lease).catch(() => undefined);
    if (!lease) return; // its lease is gone: the record is a leftover
    throw new Error(
      `node name ${node} is in use by another daemon: its record says underlay ${held.record.underlay} (this host's is ${this.underlay.address}), ` +
        `started ${held.record.startedAt}, lease alive for ${lease.ttlS} s more. Two daemons with one --node would take each other's containers off the cluster: ` +
        `give this host its own --node, or stop the other daemon and wait for its lease to expire`,
    );
  }

  /** Has another daemon written this node's record (under a lease that is not ours)? Loud, once per takeover. */
  private checkConflict(): void {
    const rec = this.session.view.nodes.get(this.o.node);
    const ours = this.session.currentLease();
    // Our record deleted under our live lease (by hand, or with the lease of
    // a daemon that had taken it over): write it again, or every other node
    // stops believing this node's endpoints.
    if (!rec && ours) this.session.republishNode();
    if (!rec || !ours || rec.meta.lease === ours) {
      if (rec && ours && this.conflict) {
        this.log.warn({ node: this.o.node }, 'this node\'s record is this daemon\'s again');
        this.conflict = undefined;
      }
      return;
    }
    const text =
      `another daemon publishes node ${this.o.node}'s record (underlay ${rec.record.underlay}, started ${rec.record.startedAt}, lease ${rec.meta.lease}; ours is ${ours}): ` +
      'two daemons run with one --node; their containers replace each other in the cluster. Stop one, or give it its own --node';
    if (text !== this.conflict) this.log.error({ node: this.o.node, underlay: rec.record.underlay, lease: rec.meta.lease }, text);
    this.conflict = text;
  }

  /**
   * Every other node's underlay address must be reached through --underlay:
   * VXLAN to its containers leaves by the kernel's route to that address. A
   * wrong --underlay (or a route that takes another way) is said, loudly.
   */
  private async checkRoutes(): Promise<void> {
    const now = new Map<string, string>();
    for (const [name, n] of this.session.view.nodes) {
      if (name === this.o.node) continue;
      const r = await routeDevice(n.record.underlay);
      if ('error' in r) now.set(name, `node ${name}'s underlay address ${n.record.underlay} is unreachable (${r.error})`);
      else if (r.dev !== this.o.underlay) now.set(name, `node ${name}'s underlay address ${n.record.underlay} is reached through ${r.dev}, not the underlay ${this.o.underlay}: is --underlay right?`);
    }
    for (const [name, why] of now) if (this.misrouted.get(name) !== why) this.log.error({ node: name }, `${why}; traffic to its containers does not go over the underlay`);
    for (const name of this.misrouted.keys()) if (!now.has(name)) this.log.info({ node: name }, 'the node is reached through the underlay again');
    this.misrouted = now;
  }

  /** What keeps this node from being a sound member (status problems). */
  problems(): string[] {
    return [...(this.conflict ? [this.conflict] : []), ...this.misrouted.values()];
  }

  /** The cluster's policies as rules (the daemon's whole rule set in cluster mode). */
  rules(): Rule[] {
    return [...this.policies.values()].flatMap((p) => p.rules);
  }

  policyRows(): PolicyRow[] {
    return [...this.policies.values()].map((p) => ({ name: p.policy.name, source: 'cluster' as const, ...describePolicy(p.policy), spec: toDocumentPolicy(p.policy) }));
  }

  /** The cluster's policies in force, as parsed (the daemon's modes read their mode). */
  policyConfigs(): PolicyConfig[] {
    return [...this.policies.values()].map((p) => p.policy);
  }

  onPoliciesApplied(fn: () => Promise<unknown>): void {
    this.policiesApplied = fn;
  }

  /**
   * The underlay interface made again (a bond or VLAN re-created, a driver
   * reloaded) has a new index: the senders' entry must follow it, or packets
   * to other nodes would go to an interface that is gone (and be lost). While
   * it is missing, the entry names none and the programs send through the
   * tunnel device, which routes by address. Returns whether the index
   * changed (checkTunnel writes the entry).
   */
  private followUnderlay(): boolean {
    const now = interfaceIndex(this.o.underlay);
    if (now === this.underlayIfindex) return false;
    const was = this.underlayIfindex;
    this.underlayIfindex = now;
    this.underlayChanges++;
    if (now === 0) this.log.error({ underlay: this.o.underlay, was }, 'the underlay interface is gone: packets to other nodes go through the tunnel device until it is back');
    else this.log.warn({ underlay: this.o.underlay, was, now }, 'the underlay interface was made again: packets to other nodes follow its new index');
    return true;
  }

  /**
   * from_underlay onto the underlay interface (the index the senders' entry
   * has). Returns whether it is there. Another tool's or instance's filter in
   * Bastion's slot is left in place, said once in the log: packets from
   * other nodes then all take the device, checked by from_overlay as before.
   */
  private attachUnderlay(datapath: TunnelPort): boolean {
    const ifindex = this.underlayIfindex;
    if (!ifindex) return false;
    try {
      const r = datapath.attachUnderlay(ifindex);
      if (r.attached) {
        this.underlayNotAttached = undefined;
        return true;
      }
      const who =
        r.owner === 'foreign'
          ? `Bastion's tc slot there holds another instance's from_underlay${r.pinPath ? ` (pin path ${r.pinPath})` : ''}`
          : r.owner === 'other'
            ? "Bastion's tc slot there holds another tool's filter"
            : 'the interface is gone';
      if (this.underlayNotAttached !== who) {
        this.underlayNotAttached = who;
        this.log.warn({ underlay: this.o.underlay, why: who }, 'from_underlay not attached (a filter in its slot is left as it is): packets from other nodes are received through the tunnel device only');
      }
    } catch (err) {
      // e.g. a filter of another kind at Bastion's priority: tried again every check, said once
      const why = `attaching failed: ${(err as Error).message}`;
      if (this.underlayNotAttached !== why) {
        this.underlayNotAttached = why;
        this.log.error({ underlay: this.o.underlay, err: (err as Error).message }, 'could not attach from_underlay: packets from other nodes are received through the tunnel device only');
      }
    }
    return false;
  }

  /**
   * Every 5 s: the underlay's index, from_underlay on it, the tunnel device
   * and from_overlay on it, each put back if it went. The kernel deletes a
   * VXLAN device with its underlay interface, so an underlay made again
   * usually means a device made again too: the senders' entry is written
   * once, after both are back, naming both new indexes (written between the
   * two, it named a device that was gone for as long as making it took).
   */
  private async checkTunnel(manager: Manager, datapath: TunnelPort): Promise<void> {
    let moved = this.followUnderlay();
    // from_underlay only saves work (the device receives everything without it), but a
    // missing one is drift all the same: put back, counted, logged (on an underlay made
    // again, said above already; not attached for a reason already said: tried again
    // quietly, the slot may be free now)
    if (this.underlayIfindex && !datapath.underlayAttached(this.underlayIfindex)) {
      const wasOn = this.underlayNotAttached === undefined;
      if (this.attachUnderlay(datapath) && wasOn && !moved) {
        this.tunnelRepairs++;
        this.log.error({ underlay: this.o.underlay, ifindex: this.underlayIfindex }, 'from_underlay was missing from the underlay interface: attached again');
      }
    }
    if (!this.tunnelIfindex || !datapath.tunnelAttached(this.tunnelIfindex)) {
      try {
        const t = await ensureTunnelDevice(this.o.tunnelDevice, this.o.tunnelPort, this.o.underlay, this.underlay.mtu);
        datapath.attachTunnel(t.ifindex);
        // a device made again has a new ifindex: the senders' entry follows
        if (t.ifindex !== this.tunnelIfindex) moved = true;
        this.tunnelIfindex = t.ifindex;
        this.tunnelRepairs++;
        this.log.error({ device: this.o.tunnelDevice, ifindex: t.ifindex, recreated: t.created }, 'the tunnel program was missing: attached again');
      } catch (err) {
        this.log.error({ device: this.o.tunnelDevice, err: (err as Error).message }, 'the tunnel program is missing and could not be attached again: nothing from other nodes is delivered');
      }
    }
    if (moved && this.tunnelIfindex) {
      await manager.setTunnel(this.tunnelInfo(this.tunnelIfindex)).catch((err: Error) => this.log.error({ err: err.message }, 'could not follow the underlay interface'));
    }
  }

  // ------------------------------------------------------ from the store

  private onDelta(d: ViewDelta): void {
    if (!this.manager) {
      this.pending.push(d);
      return;
    }
    this.queue = this.queue.then(() => this.apply(d)).catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'cluster change failed'));
  }

  private async apply(d: ViewDelta): Promise<void> {
    const m = this.manager!;
    for (const i of d.invalid) this.log.warn({ key: i.key, error: i.error }, 'cluster record ignored: it does not validate');
    for (const t of d.tampered) {
      this.tampering++;
      this.log.error({ key: t.key, what: t.what }, 'identity record tampered with: Bastion writes each once and never deletes it; endpoints claiming it are refused');
    }
    if (d.nodesChanged) {
      void this.refreshLeases(); // a node that joined shows its health now, not at the next timer
      this.checkConflict();
      await this.checkRoutes();
      await m.setRemoteNodes(this.session.view.remoteNodeAddresses());
    }
    if (d.upserted.length || d.removed.length) {
      await m.setRemoteEndpoints(d.upserted.map(toRemote), d.removed);
      this.noteChurn(d.upserted.length + d.removed.length);
    }
    if (d.policiesSet.length || d.policiesDeleted.length) {
      const added: Rule[] = [];
      const removed: Rule[] = [];
      for (const name of d.policiesDeleted) {
        const old = this.policies.get(name);
        if (!old) continue;
        removed.push(...old.rules);
        this.policies.delete(name);
      }
      for (const p of d.policiesSet) {
        const r = this.setPolicy(p);
        added.push(...r.added);
        removed.push(...r.removed);
      }
      const t0 = performance.now();
      const stats = await m.changeRules(added, removed);
      this.log.info({ set: d.policiesSet.map((p) => p.name), deleted: d.policiesDeleted, entries: stats.ops, ms: +(performance.now() - t0).toFixed(2) }, 'cluster policies applied');
      await this.policiesApplied?.();
    }
    for (const o of d.own) {
      if (o.verdict.state !== 'refused') continue;
      const ep = m.endpoints.get(o.key);
      this.log.error({ endpoint: o.key, reason: o.verdict.reason }, 'endpoint refused by the cluster');
      if (ep) this.refused.set(o.key, { spec: specOf(ep), ip: ep.ipv4, reason: o.verdict.reason });
      await m.refuseEndpoint(o.key, o.verdict.reason);
    }
    await this.retryRefused();
  }

  private noteChurn(n: number): void {
    this.churn += n;
    if (this.churn < RELEASE_AFTER_CHANGES) return;
    clearTimeout(this.releaseTimer);
    this.releaseTimer = setTimeout(() => {
      const changes = this.churn;
      this.churn = 0;
      void releaseMemory().then((memory) => this.log.info({ remoteEndpointChanges: changes, memory }, 'memory released after a burst of cluster changes'));
    }, RELEASE_QUIET_MS);
    this.releaseTimer.unref();
  }

  private setPolicy(p: PolicyConfig): { added: Rule[]; removed: Rule[] } {
    const old = this.policies.get(p.name);
    const rules = policyToRules(p);
    this.policies.set(p.name, { policy: p, rules });
    return { added: rules, removed: old?.rules ?? [] };
  }

  /** Endpoints refused for an address another node held: admitted again once it no longer does. */
  private async retryRefused(): Promise<void> {
    const m = this.manager!;
    for (const [key, r] of this.refused) {
      if (m.endpoints.has(key)) {
        this.refused.delete(key); // placed again meanwhile (by its platform)
        continue;
      }
      const holder = this.session.view.holderOf(r.ip);
      if (holder && holder.node !== this.o.node) continue;
      this.refused.delete(key);
      this.log.info({ endpoint: key, ip: r.ip }, 'address free again: admitting the endpoint');
      await m.upsertEndpoint(r.spec).catch((err: unknown) => this.log.error({ endpoint: key, err: (err as Error).message }, 'could not admit the endpoint again'));
    }
  }

  // ------------------------------------------------------ for the manager

  async identify(spec: EndpointSpec, d: Discovered, prior: number | undefined): Promise<{ identity: number } | { refused: string }> {
    const holder = this.session.view.holderOf(d.ipv4);
    if (holder && holder.node !== this.o.node) {
      const reason = `address ${d.ipv4} is already held by node ${holder.node} (endpoint ${holder.name}); ${this.o.node}/${spec.name} is refused`;
      this.refused.set(spec.key, { spec, ip: d.ipv4, reason });
      return { refused: reason };
    }
    this.refused.delete(spec.key);
    this.noteSubnet(d);
    // The store may be away: keep trying (the port already drops everything).
    let waitMs = 200;
    for (;;) {
      try {
        if (prior !== undefined && (await this.session.identityIsOurs(prior, spec.key))) return { identity: prior };
        return { identity: await this.session.allocateIdentity(spec.key) };
      } catch (err) {
        this.log.warn({ endpoint: spec.name, err: (err as Error).message }, 'waiting for the cluster store to allocate an identity');
        await new Promise((r) => setTimeout(r, waitMs));
        waitMs = Math.min(waitMs * 2, 3000);
      }
    }
  }

  placed(ep: Endpoint): void {
    const rec: EndpointRecord = {
      key: ep.key,
      name: ep.name,
      identity: ep.identity,
      ipv4: ep.ipv4,
      mac: ep.mac,
      labels: { ...ep.labels },
      ...(ep.namedPorts && Object.keys(ep.namedPorts).length ? { namedPorts: { ...ep.namedPorts } } : {}),
    };
    this.session.setEndpoint(rec);
  }

  removed(ep: Endpoint): void {
    this.session.deleteEndpoint(ep.key);
  }

  private noteSubnet(d: Discovered): void {
    const ip = parseIpv4(d.ipv4);
    if (ip === undefined) return;
    const net = `${formatIpv4((ip & ipv4Mask(d.prefixLen)) >>> 0)}/${d.prefixLen}`;
    if (this.subnets.has(net)) return;
    this.subnets.add(net);
    this.session.setNodeSubnets([...this.subnets].sort());
  }

  // ------------------------------------------------------ status

  metrics(): ClusterMetrics {
    const s = this.session.status();
    return {
      connected: s.connected,
      pendingWrites: s.pendingWrites,
      remoteEndpoints: this.session.view.remoteEndpoints().length,
      refused: this.refused.size,
      tampering: this.tampering,
      tunnelAttached: this.tunnelIfindex > 0 && !!this.datapath?.tunnelAttached(this.tunnelIfindex),
      underlayAttached: this.underlayIfindex > 0 && !!this.datapath?.underlayAttached(this.underlayIfindex),
      tunnelRepairs: this.tunnelRepairs,
      nodeConflict: this.conflict !== undefined,
      misroutedNodes: this.misrouted.size,
    };
  }

  /** Lease figures of every node, looked up every few seconds (status must not wait on the store). */
  private readonly leases = new Map<string, { ttlS: number; grantedTtlS: number; ageS: number }>();
  private leaseTimer?: NodeJS.Timeout;

  private leaseRefresh?: Promise<void>;
  private leaseRefreshAgain = false;

  /**
   * Looks up every node's lease, all at once (one slow answer does not hold
   * up the others). Asked while a lookup runs, it runs once more after it:
   * a node that joined meanwhile is looked up without waiting for the timer.
   */
  private refreshLeases(): Promise<void> {
    if (this.leaseRefresh) {
      this.leaseRefreshAgain = true;
      return this.leaseRefresh;
    }
    this.leaseRefresh = (async () => {
      do {
        this.leaseRefreshAgain = false;
        await this.lookUpLeases();
      } while (this.leaseRefreshAgain);
    })().finally(() => (this.leaseRefresh = undefined));
    return this.leaseRefresh;
  }

  private async lookUpLeases(): Promise<void> {
    const nodes = [...this.session.view.nodes];
    await Promise.all(
      nodes.map(async ([name, n]) => {
        try {
          const t = await leaseLookup.execute(() => this.session.leaseTtl(n.meta.lease));
          if (t) this.leases.set(name, { ...t, ageS: t.grantedTtlS - t.ttlS });
          else this.leases.delete(name);
        } catch {
          // the store is away: keep the last figures
        }
      }),
    );
    const seen = new Set(nodes.map(([name]) => name));
    for (const name of this.leases.keys()) if (!seen.has(name)) this.leases.delete(name);
  }

  status(): ClusterStatus {
    const view = this.session.view;
    const counts = new Map<string, number>();
    for (const e of view.endpoints.values()) counts.set(e.node, (counts.get(e.node) ?? 0) + 1);
    const nodes: ClusterStatus['nodes'] = [...view.nodes.entries()]
      .map(([name, n]) => {
        const lease = this.leases.get(name);
        return { name, underlay: n.record.underlay, self: name === this.o.node, endpoints: counts.get(name) ?? 0, ...(lease ? { lease } : {}), healthy: !!lease && lease.ttlS > 0 };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
    return {
      node: this.o.node,
      store: this.o.connection.url,
      session: this.session.status(),
      underlay: {
        interface: this.o.underlay,
        address: this.underlay.address,
        programAttached: this.underlayIfindex > 0 && !!this.datapath?.underlayAttached(this.underlayIfindex),
        ...(this.underlayNotAttached ? { whyNotAttached: this.underlayNotAttached } : {}),
      },
      tunnel: {
        device: this.o.tunnelDevice,
        ifindex: this.tunnelIfindex,
        port: this.o.tunnelPort,
        programAttached: this.tunnelIfindex > 0 && !!this.datapath?.tunnelAttached(this.tunnelIfindex),
        repairs: this.tunnelRepairs,
      },
      nodes,
      remoteEndpoints: { known: view.remoteEndpoints().length, inMaps: this.manager?.entryCounts().remote ?? 0 },
      peers: (this.manager?.remoteInMaps() ?? []).map((r) => ({ id: r.id, name: `${r.node}/${r.name}`, identity: r.identity, ipv4: r.ipv4, node: r.node, nodeIp: r.nodeIp })).sort((a, b) => a.id.localeCompare(b.id)),
      refused: [...this.refused.entries()].map(([key, r]) => ({ key, reason: r.reason })),
      invalidRecords: [...view.invalid.entries()].map(([key, error]) => ({ key, error })),
      policies: this.policies.size,
      problems: this.problems(),
    };
  }

  /** Leave: `leave` revokes the lease (the node's records go at once: `bastion down`); else they stay until it expires (a restart). */
  async close(o: { leave?: boolean } = {}): Promise<void> {
    clearInterval(this.tunnelTimer);
    clearInterval(this.leaseTimer);
    clearTimeout(this.releaseTimer);
    await this.session.settled(2000);
    await this.session.close({ revoke: o.leave });
  }
}

function toRemote(e: ResolvedEndpoint): RemoteEndpoint {
  return {
    id: e.id,
    node: e.node,
    nodeIp: e.nodeIp,
    name: e.name,
    identity: e.identity,
    ipv4: e.ipv4,
    mac: e.mac,
    labels: e.labels,
    ...(e.namedPorts ? { namedPorts: e.namedPorts } : {}),
  };
}

function specOf(ep: Endpoint): EndpointSpec {
  return { key: ep.key, name: ep.name, netns: ep.netns, interface: ep.interface, labels: ep.labels, ...(ep.mode ? { mode: ep.mode } : {}), ...(ep.namedPorts ? { namedPorts: ep.namedPorts } : {}) };
}

/**
 * One lease lookup for `status` may take 3 s: a lookup that never answers
 * (the store away) must not hold up every later refresh. Unreferenced: a
 * lookup in flight does not keep a stopping daemon alive.
 */
const leaseLookup = timeout(3000, TimeoutStrategy.Aggressive).dangerouslyUnref();

let self: { bootId: string; pid: number; startTime: string } | null | undefined;
/** This daemon's process as a node record names it (boot id, pid, start time); null where /proc does not say. */
function thisProcess(): { bootId: string; pid: number; startTime: string } | null {
  if (self === undefined) {
    const id = processIdentity(process.pid);
    let bootId: string | undefined;
    try {
      bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootId = undefined;
    }
    self = id && bootId ? { bootId, pid: id.pid, startTime: id.startTime } : null;
  }
  return self;
}
