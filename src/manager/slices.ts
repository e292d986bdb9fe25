/**
 * From the network map and the policy to map entries, one slice at a time.
 *
 * An endpoint's slice holds everything that exists because of it: its
 * endpoint entries (by ifindex and by IP), its /32 in the ipcache, its stats
 * entry, the policy entries keyed by its identity and the neighbour pairs its
 * rules create. The global slice holds what no endpoint owns: host addresses,
 * the CIDR prefixes policy names, 0.0.0.0/0 as world, the datapath config.
 *
 * The policy part is the pure compiler of src/policy/compile.ts; this module
 * only encodes its output and decides which slices a change touches.
 */
import {
  CFG_F_TRACE_ALLOWED,
  EP_F_AUDIT,
  ID_ANY,
  ID_HOST,
  ID_REMOTE_NODE,
  ID_WORLD,
  IPC_F_HOST,
  MAP_NAMES,
  MODE_AUDIT,
  MODE_ENFORCE,
  encodeConfig,
  encodeEndpointInfo,
  encodeEpStats,
  encodeIpKey,
  encodeIpcacheKey,
  encodeIpcacheVal,
  encodeNeighKeyLatin1,
  encodeRemoteEndpoint,
  encodeTunnelInfo,
  type TunnelInfo,
  encodePolicyKeyLatin1,
  encodePolicyValLatin1,
  encodeU32,
  u32Latin1,
} from '../datapath/layout.js';
import type { Endpoint } from './endpoint.js';
import type { RemoteEndpoint } from './remote.js';
import type { Mode, Rule } from '../policy/model.js';
import { addEntry, addPacked, emptyEntrySet, type EntrySet } from './entries.js';
import { createCompileContext, compileEndpointSlice, type CompileContext, type CompileEndpoint } from '../policy/compile.js';
import { mustParseCidr4 } from '../net/ip.js';

export interface SliceEnv {
  endpoints: Map<string, Endpoint>;
  hostAddrs: string[];
  mode: Mode;
  /** the endpoint's mode as the daemon resolves it (a run-time override, a policy in audit mode), over its spec's */
  modeOf?: (ep: Endpoint) => Mode | undefined;
  limits?: DatapathLimits;
  /** other nodes' endpoints by identity (cluster mode) */
  remoteById?: ReadonlyMap<number, RemoteEndpoint>;
  /** other nodes' underlay addresses (cluster mode) */
  remoteNodes?: readonly string[];
  /** this node's tunnel (cluster mode): bastion_tunnel's one entry */
  tunnel?: TunnelInfo;
}

/** The datapath's flood limits (bastion_config); 0 or absent: the datapath's defaults. */
export interface DatapathLimits {
  /** flow events per second for each (container, verdict, reason); the rest are counted */
  eventsPerSec?: number;
  /** conntrack entries one container may hold; its new connections beyond are dropped (ct-limit) */
  ctPerEndpoint?: number;
}

export interface SliceCompilerOptions {
  cidrIdentity(cidr: string): number;
  ruleNumber(ruleId: string): number;
}

const ZERO_STATS = encodeEpStats({ txPackets: 0n, txBytes: 0n, rxPackets: 0n, rxBytes: 0n, drops: 0n });
/** A neighbour pair's value: present. */
const NEIGH_PRESENT = u32Latin1(1);

export class SliceCompiler {
  private readonly ctx: CompileContext;
  private readonly cidrNames = new Map<number, string>();
  /** local endpoints whose last slice had a wildcard peer: they need every remote endpoint */
  private readonly wildcards = new Set<string>();

  constructor(private readonly o: SliceCompilerOptions) {
    this.ctx = createCompileContext({
      endpoints: [],
      rules: [],
      hostAddrs: [],
      cidrIdentity: (c) => this.cidrIdentity(c),
      ruleNumber: (id) => o.ruleNumber(id),
    });
  }

  /** Replace the rules; returns the endpoints whose slices may change. */
  setRules(rules: Rule[]): Set<string> {
    return this.ctx.setRules(rules);
  }

  /** Add some rules and remove others (equal ones, one each): cost in proportion to them, not to all rules. */
  changeRules(add: readonly Rule[], remove: readonly Rule[]): Set<string> {
    const touched = remove.length ? this.ctx.removeRules(remove) : new Set<string>();
    if (add.length) for (const k of this.ctx.addRules(add)) touched.add(k);
    return touched;
  }

  rules(): Rule[] {
    return this.ctx.rules();
  }

  /** Rule ids of which no rule is in force any more since the last call. */
  takeGoneRuleIds(): string[] {
    return this.ctx.takeGoneRuleIds();
  }

  /** Changes whenever the rules' CIDR prefixes (the part of the global slice rules decide) change. */
  prefixVersion(): number {
    return this.ctx.prefixVersion();
  }

  setHostAddrs(addrs: string[]): void {
    this.ctx.setHostAddrs(addrs);
  }

  /** Add or replace an endpoint; returns the endpoints whose slices may change (itself included). */
  upsertEndpoint(ep: Endpoint): Set<string> {
    return this.ctx.upsertEndpoint(toCompileEndpoint(ep));
  }

  /** Remove an endpoint (local or remote); returns the other endpoints whose slices may change. */
  removeEndpoint(key: string): Set<string> {
    this.wildcards.delete(key);
    return this.ctx.removeEndpoint(key);
  }

  /**
   * Add or replace another node's endpoint: a peer for selectors and CIDR
   * rules like any endpoint, but never a subject here (its own node compiles
   * its rules). Returns the local endpoints whose slices may change.
   */
  upsertRemote(key: string, r: RemoteEndpoint): Set<string> {
    const touched = this.ctx.upsertEndpoint({ key, identity: r.identity, ipv4: r.ipv4, labels: r.labels, namedPorts: r.namedPorts });
    touched.delete(key);
    return touched;
  }

  /** Local endpoints with a rule to or from anyone: every remote endpoint is their peer. */
  wildcardSubjects(): Iterable<string> {
    return this.wildcards;
  }

  private cidrIdentity(cidr: string): number {
    if (cidr === '0.0.0.0/0') return ID_WORLD;
    const id = this.o.cidrIdentity(cidr);
    this.cidrNames.set(id, cidr);
    return id;
  }

  cidrName(identity: number): string | undefined {
    return this.cidrNames.get(identity);
  }

  endpointSlice(ep: Endpoint, env: SliceEnv): EntrySet {
    const set = emptyEntrySet();
    const flags = (env.modeOf?.(ep) ?? ep.mode ?? env.mode) === 'audit' && env.mode !== 'audit' ? EP_F_AUDIT : 0;
    const info = encodeEndpointInfo({
      identity: ep.identity,
      ifindex: ep.hostIfindex,
      ipv4: ep.ipv4,
      flags,
      mac: ep.mac,
      gwMac: ep.gwMac,
    });
    addEntry(set, { map: MAP_NAMES.endpoints, key: encodeU32(ep.hostIfindex), value: info });
    addEntry(set, { map: MAP_NAMES.endpointsByIp, key: encodeIpKey(ep.ipv4), value: info });
    addEntry(set, { map: MAP_NAMES.epStats, key: encodeU32(ep.hostIfindex), value: ZERO_STATS });
    addEntry(set, {
      map: MAP_NAMES.ipcache,
      key: encodeIpcacheKey({ prefixlen: 32, addr: ep.ipv4 }),
      value: encodeIpcacheVal({ identity: ep.identity, flags: 0 }),
    });

    const compiled = compileEndpointSlice(toCompileEndpoint(ep), this.ctx);
    const remote = env.remoteById;
    let wildcard = false;
    let remotePeers = false;
    const addRemote = (r: RemoteEndpoint) => {
      remotePeers = true;
      addEntry(set, { map: MAP_NAMES.remote, key: encodeIpKey(r.ipv4), value: encodeRemoteEndpoint({ identity: r.identity, nodeIpv4: r.nodeIp, mac: r.mac, flags: 0 }) });
    };
    for (const e of compiled.policy) {
      addPacked(set, MAP_NAMES.policy, encodePolicyKeyLatin1(e.key), encodePolicyValLatin1(e.val));
      if (e.key.peerId === ID_ANY) wildcard = true;
      // another node's endpoint this one depends on (either way): its entry comes with this slice
      const r = remote?.get(e.key.peerId);
      if (r) addRemote(r);
    }
    if (wildcard && remote) for (const r of remote.values()) addRemote(r);
    if (wildcard) this.wildcards.add(ep.key);
    else this.wildcards.delete(ep.key);
    for (const n of compiled.neigh) {
      // pairs keyed by a remote endpoint are its own node's business
      if (remote?.has(n.epId)) continue;
      addPacked(set, MAP_NAMES.neigh, encodeNeighKeyLatin1(n), NEIGH_PRESENT);
    }
    // Reaching another node's endpoint may go through the gateway (its
    // address not on the container's link): let it resolve the gateway.
    if (remotePeers) addPacked(set, MAP_NAMES.neigh, encodeNeighKeyLatin1({ epId: ep.identity, peerId: ID_HOST }), NEIGH_PRESENT);
    // A wildcard peer lets the endpoint resolve anyone it may now talk to.
    if (wildcard) {
      addPacked(set, MAP_NAMES.neigh, encodeNeighKeyLatin1({ epId: ep.identity, peerId: ID_ANY }), NEIGH_PRESENT);
    }
    return set;
  }

  /** Host addresses, other nodes' underlay addresses and the tunnel (cluster mode), registered CIDR prefixes, world (the datapath config is configSlice's). */
  globalSlice(env: SliceEnv): EntrySet {
    const set = emptyEntrySet();
    // host addresses, or prefixes the host delivers locally ("127.0.0.0/8")
    const ipcache = (cidr: string, identity: number, flags: number) => {
      const c = mustParseCidr4(cidr);
      addEntry(set, {
        map: MAP_NAMES.ipcache,
        key: encodeIpcacheKey({ prefixlen: c.prefixLen, addr: c.addr }),
        value: encodeIpcacheVal({ identity, flags }),
      });
    };
    for (const host of env.hostAddrs) ipcache(host, ID_HOST, IPC_F_HOST);
    // other nodes' underlay addresses (cluster mode): never world for a container
    for (const addr of env.remoteNodes ?? []) if (!env.hostAddrs.includes(addr)) ipcache(addr, ID_REMOTE_NODE, 0);
    for (const [cidr, identity] of this.ctx.registeredPrefixes()) ipcache(cidr, identity, 0);
    // the VXLAN device the senders hand other nodes' packets to (read back by drift checks like the rest)
    if (env.tunnel) addEntry(set, { map: MAP_NAMES.tunnel, key: encodeU32(0), value: encodeTunnelInfo(env.tunnel) });
    return set;
  }

  /**
   * The datapath config, a slice of its own: the manager rewrites it after
   * every change (a new policy epoch, bpf/lib/verdict.h), and that must not
   * cost a pass over the global slice's prefixes.
   */
  configSlice(env: SliceEnv, policyEpoch: number): EntrySet {
    const set = emptyEntrySet();
    addEntry(set, {
      map: MAP_NAMES.config,
      key: encodeU32(0),
      value: encodeConfig({
        mode: env.mode === 'audit' ? MODE_AUDIT : MODE_ENFORCE,
        flags: CFG_F_TRACE_ALLOWED,
        ctTcpLifetimeS: 0,
        ctOtherLifetimeS: 0,
        eventsPerSec: env.limits?.eventsPerSec ?? 0,
        ctPerEndpoint: env.limits?.ctPerEndpoint ?? 0,
        policyEpoch,
      }),
    });
    return set;
  }
}

function toCompileEndpoint(ep: Endpoint): CompileEndpoint {
  return { key: ep.key, identity: ep.identity, ipv4: ep.ipv4, labels: ep.labels, namedPorts: ep.namedPorts };
}
