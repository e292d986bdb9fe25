/**
 * The IPv4 addresses of the host (the agent's network namespace). Every one
 * of them maps to the HOST identity in the ipcache: a container reaching the
 * host through the gateway IP or any other host address is "host" traffic,
 * allowed only on the host ports its policy names.
 */
import { ipJson } from './netns.js';

export interface HostAddress {
  address: string;
  prefixLen: number;
  ifname: string;
  ifindex: number;
  /** 'global', 'host' (loopback), 'link' */
  scope: string;
}

interface IpAddrEntry {
  ifindex: number;
  ifname: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope?: string }>;
}

/** Every IPv4 address of the agent's namespace, loopback included, with its interface. */
export async function listHostAddressDetails(): Promise<HostAddress[]> {
  const links = await ipJson<IpAddrEntry>(['-4', 'addr', 'show']);
  const out: HostAddress[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (a.family !== 'inet') continue;
      out.push({ address: a.local, prefixLen: a.prefixlen, ifname: l.ifname, ifindex: l.ifindex, scope: a.scope ?? 'global' });
    }
  }
  return out;
}

/** Every IPv4 address of the host, deduplicated, in the order iproute2 lists them. */
export async function listHostAddresses(): Promise<string[]> {
  return [...new Set((await listHostAddressDetails()).map((a) => a.address))];
}
