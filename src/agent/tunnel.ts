/**
 * The node's tunnel: one VXLAN device in external (collect_md) mode on the
 * underlay, with from_overlay on its tc ingress. Packets to other nodes'
 * endpoints are redirected to it by from_container with their tunnel key
 * already set (bpf/lib/encap.h); what it receives goes to from_overlay.
 *
 * The device is created once (iproute2, at start-up, never on the packet or
 * update path) and kept: a restarted daemon finds it and re-attaches with
 * replace, as for container stacks. `bastion down` removes it.
 *
 * Whose from_overlay is on the device is decided as for stacks (stack.ts,
 * Ownership): by the maps it reads. A device that carries another
 * instance's from_overlay (two cluster nodes on one host with the same
 * --tunnel-device) is never replaced or detached (ForeignStackError), and
 * `down` leaves it and its device alone.
 */
import { libcFunction } from '../sys/libc.js';
import { execFile } from 'node:child_process';
import { detachTc } from '../datapath/tc.js';
import { ForeignStackError, type StackOwner } from '../manager/ports.js';
import { attachHook, hookState, isOurs, type Ownership } from './stack.js';
import { ipJson } from './netns.js';

export const DEFAULT_TUNNEL_DEVICE = 'bastion-vxlan';
export const DEFAULT_TUNNEL_PORT = 4789;
/** VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) */
export const VXLAN_OVERHEAD = 50;

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

interface LinkDetail {
  ifindex: number;
  ifname: string;
  mtu: number;
  operstate?: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
  linkinfo?: { info_kind?: string; info_data?: { external?: boolean; collect_metadata?: boolean; port?: number } };
}

/** The underlay interface's first global IPv4 address, its MTU and ifindex. */
export async function underlayOf(ifname: string): Promise<{ ifindex: number; address: string; prefixLen: number; mtu: number }> {
  let links: LinkDetail[];
  try {
    links = await ipJson<LinkDetail>(['addr', 'show', 'dev', ifname]);
  } catch {
    throw new Error(`--underlay ${ifname}: no such interface`);
  }
  const l = links[0];
  if (!l) throw new Error(`--underlay ${ifname}: no such interface`);
  const a = (l.addr_info ?? []).find((x) => x.family === 'inet' && (x.scope ?? 'global') === 'global');
  if (!a) throw new Error(`--underlay ${ifname}: the interface has no IPv4 address (the node's address on the underlay)`);
  return { ifindex: l.ifindex, address: a.local, prefixLen: a.prefixlen, mtu: l.mtu };
}

/**
 * The interface the kernel sends to `address` through (its route), or the
 * error that says why it cannot: a node's VXLAN to another node leaves by
 * the route to that node's underlay address, so a route through another
 * interface than the underlay means a wrong --underlay (or a wrong route).
 */
export async function routeDevice(address: string): Promise<{ dev: string } | { error: string }> {
  try {
    const r = await ipJson<{ dev?: string }>(['route', 'get', address]);
    return r[0]?.dev ? { dev: r[0].dev } : { error: 'no route' };
  } catch (err) {
    return { error: (err as Error).message.replace(/^ip route get \S+: /, '') };
  }
}

/**
 * The VXLAN device `name`, external mode on UDP `port`, created if missing.
 * A device of that name that is something else is an error, not replaced.
 */
export async function ensureTunnelDevice(name: string, port: number, underlay: string, underlayMtu: number): Promise<{ ifindex: number; mtu: number; created: boolean }> {
  const existing = (await ipJson<LinkDetail>(['-d', 'link', 'show'])).find((l) => l.ifname === name);
  let created = false;
  if (existing) {
    const info = existing.linkinfo;
    const external = info?.info_data?.external ?? info?.info_data?.collect_metadata;
    if (info?.info_kind !== 'vxlan' || !external || (info.info_data?.port !== undefined && info.info_data.port !== port)) {
      throw new Error(`interface ${name} exists and is not a VXLAN device in external mode on port ${port}; remove it or choose another --tunnel-device`);
    }
  } else {
    await ip(['link', 'add', name, 'mtu', String(underlayMtu - VXLAN_OVERHEAD), 'type', 'vxlan', 'external', 'dstport', String(port), 'dev', underlay, 'nolearning']);
    created = true;
  }
  await ip(['link', 'set', name, 'up']);
  const [l] = await ipJson<LinkDetail>(['link', 'show', 'dev', name]);
  if (!l) throw new Error(`VXLAN device ${name} vanished`);
  return { ifindex: l.ifindex, mtu: l.mtu, created };
}

/**
 * from_overlay on the device's ingress: replaces this instance's own (or a
 * previous run's, or a program that is not Bastion's), never another
 * instance's (ForeignStackError, nothing attached).
 */
export function attachTunnelProgram(ifindex: number, progFd: number, who: Ownership): void {
  const h = hookState(ifindex, 'ingress', who);
  if (h.owner === 'foreign') throw new ForeignStackError(ifindex, h.pinPath);
  attachHook(ifindex, 'ingress', progFd, who, h.id !== undefined);
}

/** Id of this instance's from_overlay on the device's ingress (the one loaded now), or undefined. */
export function tunnelProgramId(ifindex: number, who: Ownership): number | undefined {
  const h = tunnelProgramOwner(ifindex, who);
  return h?.owner === 'self' ? h.id : undefined;
}

/** Whose program is on the device's ingress (status, down). */
export function tunnelProgramOwner(ifindex: number, who: Ownership): ReturnType<typeof hookState> | undefined {
  try {
    return hookState(ifindex, 'ingress', who);
  } catch {
    return undefined;
  }
}

/** This instance's from_overlay off the device (another instance's stays). True if there was one. */
export function detachTunnelProgram(ifindex: number, who: Ownership): boolean {
  const h = tunnelProgramOwner(ifindex, who);
  if (!h || !isOurs(h.owner)) return false;
  try {
    return detachTc(ifindex, 'ingress');
  } catch {
    return false;
  }
}

/** What attaching from_underlay found in Bastion's slot on the underlay's ingress. */
export type UnderlayAttach = { attached: true } | { attached: false; owner: StackOwner; pinPath?: string };

/**
 * from_underlay on the underlay interface's ingress (bpf/from_underlay.c):
 * the node decapsulates other nodes' packets itself, sparing them the host's
 * UDP receive and the device. The underlay is the host's own interface, so
 * Bastion's slot there is taken only when it is empty or this instance's:
 * a filter of another tool, or another instance's from_underlay (two nodes
 * of one host on one underlay, each with its own port), stays where it is,
 * and this node receives through the device alone, as it would without the
 * program. Packets that are not this node's VXLAN go on to any filter after
 * ours (TC_ACT_UNSPEC).
 */
export function attachUnderlayProgram(ifindex: number, progFd: number, who: Ownership): UnderlayAttach {
  const h = hookState(ifindex, 'ingress', who);
  if (h.gone) return { attached: false, owner: 'none' };
  if (h.owner === 'foreign' || h.owner === 'other') return { attached: false, owner: h.owner, ...(h.pinPath ? { pinPath: h.pinPath } : {}) };
  attachHook(ifindex, 'ingress', progFd, who, h.id !== undefined);
  return { attached: true };
}

/** This instance's from_underlay off the underlay (anything else there stays, clsact included: the interface is the host's). */
export function detachUnderlayProgram(ifindex: number, who: Ownership): boolean {
  return detachTunnelProgram(ifindex, who);
}

/** The index of a network interface in this network namespace, 0 if there is none of that name (if_nametoindex). */
export function interfaceIndex(name: string): number {
  return libcFunction<(name: string) => number>('unsigned int if_nametoindex(const char *ifname)')(name);
}
