/**
 * Finding a container's interface, and the host-side veth where its stack is
 * attached, from the container's network namespace.
 *
 * This runs once per endpoint (not per packet or per policy update), so it
 * uses iproute2's JSON output (`ip -j`) rather than a netlink client, run
 * through `nsenter --net=PATH ip ...` for named namespaces (/run/netns/NAME)
 * and namespace paths (/proc/PID/ns/net, Docker's /run/docker/netns/ID). Commands are run
 * with execFile: no shell, arguments never interpreted.
 */
import { execFile } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import type { NetnsRef } from '../manager/endpoint.js';

/** What discovery learns about one container interface. */
export interface DiscoveredInterface {
  /** the container-side interface's first global IPv4 address */
  ipv4: string;
  prefixLen: number;
  /** the container-side MAC */
  mac: string;
  /** ifindex of the interface inside the container's namespace */
  ifindex: number;
  /** ifindex of the host-side veth, in the agent's namespace (where tc programs go) */
  peerIfindex: number;
  hostIfname: string;
  /** the bridge the host-side veth is enslaved to, if any */
  bridge?: string;
  /** MAC the container must reach its gateway at: the bridge's, or the host veth's when there is no bridge */
  gwMac: string;
  /** the container's default gateway, if it has a default route */
  gateway?: string;
}

const IP_TIMEOUT_MS = 10_000;

/** How to name a namespace in messages: its name, or its path. */
export function netnsLabel(ref: NetnsRef): string {
  return ref.kind === 'name' ? ref.name : ref.path;
}

/** The path of the namespace file, checked to exist. */
async function netnsPath(ref: NetnsRef): Promise<string> {
  if (ref.kind === 'name' && (ref.name === '' || ref.name.includes('/') || ref.name === '.' || ref.name === '..')) {
    throw new Error(`invalid netns name ${JSON.stringify(ref.name)}`);
  }
  const path = ref.kind === 'name' ? `/run/netns/${ref.name}` : ref.path;
  try {
    await access(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw new NetnsPermissionDenied(`netns ${netnsLabel(ref)}: ${NETNS_PERMISSION}`);
    throw new Error(`netns ${netnsLabel(ref)} not found`);
  }
  return path;
}

/** The daemon may not open a container's namespace: a missing privilege, not a wrong config. */
export class NetnsPermissionDenied extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetnsPermissionDenied';
  }
}

/**
 * Why a process's namespace cannot be opened: /proc/PID/ns/net of a process
 * that runs as another user, or with capabilities the daemon lacks (every
 * Docker container), needs CAP_SYS_PTRACE (ptrace access mode checks).
 */
const NETNS_PERMISSION =
  'permission denied (opening the namespace of a process of another user, or with capabilities the daemon lacks, needs CAP_SYS_PTRACE: docs/operations.md)';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: IP_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = typeof err.code === 'number' ? err.code : null;
        const detail = String(stderr).trim() || err.message;
        reject(new CommandError(`${cmd} ${args.join(' ')}: ${detail}`, String(stderr), code));
      } else {
        resolve(String(stdout));
      }
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/**
 * `ip` in a namespace (or here), its arguments and, for `-b -`, its batch
 * input. Named namespaces too go through nsenter, which only joins the
 * network namespace: `ip -n NAME` also makes a private mount namespace (to
 * remount /sys), which copies every mount of the host, and each of the
 * /run/netns names is one. With 5,000 namespaces that was 17 ms per `ip`,
 * growing with their number; nsenter takes 3 ms. Link and address queries
 * go through netlink and need no /sys of their own.
 */
function ipIn(ns: NetnsRef | undefined, args: string[], input?: string): Promise<string> {
  if (!ns) return run('ip', args, input);
  const path = ns.kind === 'name' ? `/run/netns/${ns.name}` : ns.path;
  return run('nsenter', [`--net=${path}`, 'ip', ...args], input);
}

/**
 * Runs `ip -j ARGS` in the agent's namespace (no `ns`) or in `ns`, and
 * parses its JSON. An empty output (e.g. no default route) is [].
 */
export async function ipJson<T = unknown>(args: string[], ns?: NetnsRef): Promise<T[]> {
  const out = await ipIn(ns, ['-j', ...args]);
  const trimmed = out.trim();
  if (!trimmed) return [];
  return JSON.parse(trimmed) as T[];
}

/** The fields of `ip -j -d link` we use. */
export interface IpLink {
  ifindex: number;
  ifname: string;
  address?: string;
  /** peer ifindex (veth) in the namespace `link_netnsid` designates */
  link_index?: number;
  /** present when the peer lives in another namespace */
  link_netnsid?: number;
  /** peer name, when the peer is in the same namespace */
  link?: string;
  master?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_slave_kind?: string };
}

interface IpAddr extends IpLink {
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
}

/**
 * Discovers `ifname` in the namespace `ref` and its host-side veth peer.
 * Errors name the namespace and the interface: "netns web not found",
 * "interface eth0 not found in netns web", "eth0 in netns web is not a veth".
 */
export async function discoverInterface(ref: NetnsRef, ifname: string, hostLinks: HostLinks = new HostLinks()): Promise<DiscoveredInterface> {
  const label = netnsLabel(ref);
  await netnsPath(ref);

  // One process in the container's namespace: the interface and the default route.
  let links: IpAddr[];
  let routes: IpRoute[];
  try {
    const out = (await ipIn(ref, ['-d', '-j', '-b', '-'], `addr show dev ${ifname}\nroute show default\n`)).split('\n').filter((l) => l.trim());
    links = out[0] ? (JSON.parse(out[0]) as IpAddr[]) : [];
    routes = out[1] ? (JSON.parse(out[1]) as IpRoute[]) : [];
  } catch (e) {
    const stderr = e instanceof CommandError ? e.stderr : '';
    if (/does not exist/i.test(stderr)) throw new Error(`interface ${ifname} not found in netns ${label}`);
    if (/Permission denied|Operation not permitted/i.test(stderr)) throw new NetnsPermissionDenied(`netns ${label}: ${NETNS_PERMISSION}`);
    if (/Cannot open network namespace|No such file/i.test(stderr)) throw new Error(`netns ${label} not found`);
    throw new Error(`cannot inspect ${ifname} in netns ${label}: ${(e as Error).message}`);
  }
  const link = links[0];
  if (!link) throw new Error(`interface ${ifname} not found in netns ${label}`);

  const kind = link.linkinfo?.info_kind;
  if (kind !== 'veth') throw new Error(`${ifname} in netns ${label} is not a veth (${kind ? `it is a ${kind}` : 'no link kind'})`);
  if (link.link_index === undefined || link.link_netnsid === undefined) {
    throw new Error(`the veth peer of ${ifname} in netns ${label} is in the same namespace, not on the host`);
  }
  if (!link.address) throw new Error(`${ifname} in netns ${label} has no MAC address`);

  const inet = (link.addr_info ?? []).filter((a) => a.family === 'inet');
  const addr = inet.find((a) => a.scope === undefined || a.scope === 'global') ?? inet[0];
  if (!addr) throw new Error(`${ifname} in netns ${label} has no IPv4 address`);

  // The peer's ifindex is relative to the peer's namespace; check that the
  // interface with that index here really is the other end of this veth.
  const peerIfindex = link.link_index;
  const isPeer = (l: IpLink | undefined) => !!l && l.linkinfo?.info_kind === 'veth' && l.link_index === link.ifindex && l.link_netnsid !== undefined;
  let peer = await hostLinks.byIndex(peerIfindex);
  // A snapshot older than this veth: look again once.
  if (!isPeer(peer)) peer = await hostLinks.byIndex(peerIfindex, { fresh: true });
  if (!peer || !isPeer(peer)) {
    throw new Error(
      `the veth peer of ${ifname} in netns ${label} (ifindex ${peerIfindex}) is not in the agent's network namespace`,
    );
  }

  let gwMac = peer.address;
  let bridge: string | undefined;
  if (peer.master) {
    bridge = peer.master;
    const br = await hostLinks.byName(peer.master);
    if (!br?.address) throw new Error(`bridge ${peer.master} of ${peer.ifname} not found`);
    gwMac = br.address;
    await freezeBridgeMac(bridge, gwMac, br.ifindex);
  }
  if (!gwMac) throw new Error(`host-side veth ${peer.ifname} has no MAC address`);

  const gateway = routes.find((r) => r.gateway)?.gateway;

  return {
    ipv4: addr.local,
    prefixLen: addr.prefixlen,
    mac: link.address.toLowerCase(),
    ifindex: link.ifindex,
    peerIfindex,
    hostIfname: peer.ifname,
    ...(bridge ? { bridge } : {}),
    gwMac: gwMac.toLowerCase(),
    ...(gateway ? { gateway } : {}),
  };
}

/** Bridges whose MAC this process has fixed (or found fixed), by name#ifindex. */
const frozenBridges = new Set<string>();

/** NET_ADDR_SET in /sys/class/net/DEV/addr_assign_type: the address was set explicitly. */
const NET_ADDR_SET = 3;

/**
 * A Linux bridge whose MAC was never set explicitly takes the lowest MAC of
 * its ports, so it changes when a container joins or leaves. The stacks answer
 * ARP for the gateway with the bridge MAC they were given, so a bridge MAC that
 * moves would cut every container off its gateway. Setting the address to its
 * own current value makes it fixed (Docker does the same for its bridges);
 * nothing else about the bridge changes.
 */
export async function freezeBridgeMac(bridge: string, mac: string, ifindex?: number): Promise<void> {
  // Once per bridge: /sys shows the mount namespace's network namespace,
  // which is not ours when the agent was started with `nsenter --net`.
  const key = `${bridge}#${ifindex ?? ''}`;
  if (frozenBridges.has(key)) return;
  const type = Number((await readFile(`/sys/class/net/${bridge}/addr_assign_type`, 'utf8').catch(() => '')).trim());
  frozenBridges.add(key);
  if (type === NET_ADDR_SET) return;
  await new Promise<void>((resolve, reject) => {
    execFile('ip', ['link', 'set', 'dev', bridge, 'address', mac], { timeout: IP_TIMEOUT_MS }, (err, _out, stderr) => {
      if (err) reject(new Error(`could not fix the MAC of bridge ${bridge} at ${mac}: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
}

/**
 * How long a snapshot of the host's links answers before it is taken again.
 * A stale answer cannot do harm: the peer found must point back at the
 * container's interface, or a fresh snapshot is taken.
 */
const HOST_LINKS_MAX_AGE_MS = 30_000;

/**
 * The host's links, from one `ip -d link show`, shared by every discovery
 * in a short window: at thousands of containers, one dump per container
 * would cost seconds each (every dump lists every veth). A lookup that
 * misses, or that the caller finds stale, takes a fresh snapshot; snapshots
 * taken while one is under way are the same one.
 */
export function slimLink(l: IpLink): IpLink {
  // fields added one by one in a fixed order, not by conditional spreads: each
  // object built from spreads got a hidden class of its own (V8), 5,000 of
  // them in a snapshot of the host's veths
  const out: IpLink = { ifindex: l.ifindex, ifname: l.ifname };
  if (l.address !== undefined) out.address = l.address;
  if (l.link_index !== undefined) out.link_index = l.link_index;
  if (l.link_netnsid !== undefined) out.link_netnsid = l.link_netnsid;
  if (l.link !== undefined) out.link = l.link;
  if (l.master !== undefined) out.master = l.master;
  const kind = l.linkinfo?.info_kind;
  const slave = l.linkinfo?.info_slave_kind;
  if (kind !== undefined || slave !== undefined) {
    const info: NonNullable<IpLink['linkinfo']> = {};
    if (kind !== undefined) info.info_kind = kind;
    if (slave !== undefined) info.info_slave_kind = slave;
    out.linkinfo = info;
  }
  return out;
}

export class HostLinks {
  private snapshot?: { at: number; byIndex: Map<number, IpLink>; byName: Map<string, IpLink> };
  private pending?: Promise<NonNullable<HostLinks['snapshot']>>;
  private expiry?: NodeJS.Timeout;

  /** maxAgeMs: how long a snapshot serves lookups; it is dropped then, not kept (2.3 MB with 5,000 veths) until the next discovery */
  constructor(private readonly maxAgeMs = HOST_LINKS_MAX_AGE_MS) {}

  /** a snapshot is held (for tests) */
  get holding(): boolean {
    return this.snapshot !== undefined;
  }

  private take(): Promise<NonNullable<HostLinks['snapshot']>> {
    this.pending ??= ipJson<IpLink>(['-d', 'link', 'show'])
      .then((all) => {
        // only what discovery reads: `ip -d` gives some 40 fields per link,
        // 20 MB kept for nothing with 10,000 links on the host
        const links = all.map(slimLink);
        const snap = { at: Date.now(), byIndex: new Map(links.map((l) => [l.ifindex, l])), byName: new Map(links.map((l) => [l.ifname, l])) };
        this.snapshot = snap;
        clearTimeout(this.expiry);
        this.expiry = setTimeout(() => {
          if (this.snapshot === snap) this.snapshot = undefined;
        }, this.maxAgeMs);
        this.expiry.unref();
        return snap;
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }

  private async current(fresh: boolean): Promise<NonNullable<HostLinks['snapshot']>> {
    if (this.pending) return this.pending;
    if (!fresh && this.snapshot && Date.now() - this.snapshot.at < this.maxAgeMs) return this.snapshot;
    return this.take();
  }

  async byIndex(ifindex: number, o: { fresh?: boolean } = {}): Promise<IpLink | undefined> {
    const snap = await this.current(o.fresh ?? false);
    return snap.byIndex.get(ifindex) ?? (o.fresh ? undefined : (await this.current(true)).byIndex.get(ifindex));
  }

  async byName(name: string): Promise<IpLink | undefined> {
    const snap = await this.current(false);
    return snap.byName.get(name) ?? (await this.current(true)).byName.get(name);
  }
}
