/**
 * Published ports (`docker run -p`, Compose `ports:`) as policy. Publishing
 * a port is a declared intent to serve it, so Bastion lets it in by
 * default, from where Docker delivers it:
 *
 * - from the host: Docker's userland proxy (docker-proxy) connects to the
 *   container from the gateway address, and DNAT of the host's own
 *   connections keeps a host address as the source;
 * - from outside (world, 0.0.0.0/0), unless the port is bound to a loopback
 *   address: DNAT of a connection from another machine keeps the client's
 *   address.
 *
 * `--published-ports` narrows it: host-only (no connection from outside),
 * or deny (nothing: the port is reachable only if a policy says so).
 */
import type { PolicyConfig } from './bastion-config.js';
import type { PortRange } from './model.js';

export type PublishedPortsMode = 'allow' | 'host-only' | 'deny';
export const PUBLISHED_PORTS_MODES: readonly PublishedPortsMode[] = ['allow', 'host-only', 'deny'];

/** One published port of a container: its container port, and the host address it is bound to (undefined or 0.0.0.0/::: every address). */
export interface PublishedPort {
  protocol: 'tcp' | 'udp' | 'sctp';
  from: number;
  to: number;
  hostIp?: string;
}

/** Is a host address a loopback one (a port bound there is reached from the host only)? */
export function isLoopbackHostIp(ip: string | undefined): boolean {
  if (!ip) return false;
  const bare = ip.replace(/^\[|\]$/g, '');
  return bare === '::1' || bare === 'localhost' || /^127\./.test(bare);
}

/** Ranges of one protocol sorted and merged (overlapping or adjacent). */
export function mergeRanges<T extends { protocol: string; from: number; to: number }>(ports: readonly T[]): PortRange[] {
  const order: Record<string, number> = { tcp: 0, udp: 1, sctp: 2 };
  const sorted = ports.map(({ protocol, from, to }) => ({ protocol, from, to })).sort((a, b) => (order[a.protocol] ?? 9) - (order[b.protocol] ?? 9) || a.from - b.from || a.to - b.to);
  const out: PortRange[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && last.protocol === p.protocol && p.from <= last.to + 1) last.to = Math.max(last.to, p.to);
    else out.push({ protocol: p.protocol as PortRange['protocol'], from: p.from, to: p.to });
  }
  return out;
}

/** The ports let in from the host and from outside, for a mode. */
export function publishedAccess(published: readonly PublishedPort[], mode: PublishedPortsMode): { fromHost: PortRange[]; fromOutside: PortRange[] } {
  if (mode === 'deny' || published.length === 0) return { fromHost: [], fromOutside: [] };
  return {
    fromHost: mergeRanges(published),
    fromOutside: mode === 'allow' ? mergeRanges(published.filter((p) => !isLoopbackHostIp(p.hostIp))) : [],
  };
}

/**
 * The policies of one endpoint's published ports: `published:<name>:from-host`
 * and `published:<name>:from-outside`, to the endpoint's own labels. Their
 * names cannot clash with a config file's or a runtime policy's (':' is not
 * allowed there).
 */
export function publishedPolicies(name: string, labels: Record<string, string>, published: readonly PublishedPort[], mode: PublishedPortsMode): PolicyConfig[] {
  const { fromHost, fromOutside } = publishedAccess(published, mode);
  const to = { kind: 'endpoints' as const, selector: { matchLabels: { ...labels } } };
  const out: PolicyConfig[] = [];
  if (fromHost.length) out.push({ name: `published:${name}:from-host`, from: { kind: 'host' }, to, ports: fromHost });
  if (fromOutside.length) out.push({ name: `published:${name}:from-outside`, from: { kind: 'cidr', cidr: '0.0.0.0/0' }, to, ports: fromOutside });
  return out;
}
