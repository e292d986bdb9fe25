/**
 * Pure part of the Docker adapter: from `docker inspect` data (plus what was
 * found inside the container's network namespace) to the endpoints Bastion
 * protects and the containers it cannot protect. No I/O here, so every rule
 * can be tested without a Docker engine.
 */
import type { EndpointSpec, UnprotectedContainer } from '../../manager/endpoint.js';
import { BUILTIN_LABELS } from '../../policy/model.js';
import type { PublishedPort } from '../../policy/published.js';

/** Label set on every Docker endpoint: the Docker network it is on. */
export const DOCKER_NETWORK_LABEL = 'bastion.io/network';
/** Compose puts the service name of a container in this label. */
export const COMPOSE_SERVICE_LABEL = 'com.docker.compose.service';
/** Compose puts the project name of a container in this label. */
export const COMPOSE_PROJECT_LABEL = 'com.docker.compose.project';

/** The subset of `GET /containers/{id}/json` the adapter reads. */
export interface ContainerInspect {
  Id: string;
  Name: string;
  State: { Running: boolean; Pid: number; Status?: string; StartedAt?: string };
  Config: { Labels?: Record<string, string> | null };
  HostConfig: {
    NetworkMode?: string;
    Privileged?: boolean;
    CapAdd?: string[] | null;
  };
  NetworkSettings: {
    SandboxKey?: string;
    Networks?: Record<string, ContainerNetwork> | null;
    /** "80/tcp": the host bindings of a published port (null: exposed, not published) */
    Ports?: Record<string, Array<{ HostIp?: string; HostPort?: string }> | null> | null;
  };
}

export interface ContainerNetwork {
  NetworkID?: string;
  MacAddress?: string;
  IPAddress?: string;
  Gateway?: string;
}

/** The subset of `GET /networks` the adapter reads. */
export interface NetworkInfo {
  Id: string;
  Name: string;
  Driver: string;
  Options?: Record<string, string> | null;
}

/** A Docker network as the adapter keeps it. */
export interface DockerNetwork {
  id: string;
  name: string;
  driver: string;
  /** Linux bridge device, for driver "bridge" only */
  bridge?: string;
}

/** An interface inside a container's network namespace (`ip -j link`). */
export interface NetnsLink {
  ifindex: number;
  ifname: string;
  mac: string;
  /** ifindex of the veth peer, in the namespace link_netnsid names (the host's, for Docker) */
  peerIfindex?: number;
}

/** What one container should look like to the manager. */
export interface ContainerDesired {
  endpoints: EndpointSpec[];
  unprotected: UnprotectedContainer[];
}

export function shortId(id: string): string {
  return id.slice(0, 12);
}

export function containerName(info: Pick<ContainerInspect, 'Name' | 'Id'>): string {
  const n = (info.Name ?? '').replace(/^\//, '');
  return n || shortId(info.Id);
}

/** "docker:<id12>/<network>": an endpoint; "docker:<id12>": a whole container. */
export function endpointKey(containerId: string, network?: string): string {
  return network === undefined ? `docker:${shortId(containerId)}` : `docker:${shortId(containerId)}/${network}`;
}

/** The Linux bridge behind a Docker network of driver "bridge". */
export function bridgeDeviceOf(net: NetworkInfo): string | undefined {
  if (net.Driver !== 'bridge') return undefined;
  const named = net.Options?.['com.docker.network.bridge.name'];
  if (named) return named;
  return net.Name === 'bridge' ? 'docker0' : `br-${shortId(net.Id)}`;
}

export function toDockerNetwork(net: NetworkInfo): DockerNetwork {
  const bridge = bridgeDeviceOf(net);
  return { id: net.Id, name: net.Name, driver: net.Driver, ...(bridge ? { bridge } : {}) };
}

const NET_ADMIN = new Set(['NET_ADMIN', 'CAP_NET_ADMIN', 'ALL', 'CAP_ALL']);

/**
 * Why a whole container cannot be protected, or undefined when it can.
 * "none" is not here: a container without a network has nothing to protect
 * and is ignored.
 */
export function containerUnprotectedReason(info: ContainerInspect): string | undefined {
  const mode = info.HostConfig.NetworkMode ?? '';
  if (mode === 'host') return 'uses the host network namespace (--network host): it has no interface of its own to guard';
  if (mode.startsWith('container:')) {
    return `shares the network namespace of container ${mode.slice('container:'.length)} (--network ${mode}): its traffic is that container's`;
  }
  const reasons: string[] = [];
  if (info.HostConfig.Privileged) reasons.push('is privileged (--privileged): it can reconfigure its network and escape its stack');
  const caps = (info.HostConfig.CapAdd ?? []).map((c) => c.toUpperCase());
  const admin = caps.find((c) => NET_ADMIN.has(c));
  if (admin && !info.HostConfig.Privileged) {
    reasons.push(`has CAP_NET_ADMIN (--cap-add ${admin}): it can reconfigure its own interfaces, addresses and routes`);
  }
  return reasons.length ? reasons.join('; ') : undefined;
}

export interface DesiredOptions {
  /** Docker networks by name */
  networks: ReadonlyMap<string, DockerNetwork>;
  /** interfaces found in the container's netns; undefined when not looked up */
  links?: NetnsLink[];
}

/**
 * The endpoints and unprotected entries of one running container.
 *
 * - one endpoint per network whose driver is "bridge", key
 *   docker:<id12>/<network>, name <container> (or <container>/<network>
 *   when it has several such networks);
 * - the container as a whole (key docker:<id12>) is unprotected when it is
 *   on the host network, shares another container's netns, is privileged or
 *   has CAP_NET_ADMIN; none of its interfaces is then reported as an endpoint;
 * - every network of another driver (macvlan, ipvlan, overlay...) is an
 *   unprotected docker:<id12>/<network>: its traffic does not cross a veth.
 */
export function desiredForContainer(info: ContainerInspect, o: DesiredOptions): ContainerDesired {
  const out: ContainerDesired = { endpoints: [], unprotected: [] };
  if (!info.State.Running || !info.State.Pid) return out;
  const name = containerName(info);
  const whole = containerUnprotectedReason(info);
  if (whole) {
    out.unprotected.push({ key: endpointKey(info.Id), name, reason: whole });
    return out;
  }
  const nets = Object.entries(info.NetworkSettings.Networks ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const bridged: Array<[string, ContainerNetwork]> = [];
  for (const [netName, n] of nets) {
    if (netName === 'none' || netName === 'host') continue;
    const net = o.networks.get(netName);
    const driver = net?.driver ?? 'unknown';
    if (driver === 'bridge') bridged.push([netName, n]);
    else {
      out.unprotected.push({
        key: endpointKey(info.Id, netName),
        name: `${name}/${netName}`,
        reason: `network ${netName} uses driver ${driver}: Bastion protects bridge networks only (its traffic does not cross a veth)`,
      });
    }
  }
  const labels = info.Config.Labels ?? {};
  const published = publishedPortsOf(info);
  for (const [netName, n] of bridged) {
    const mac = (n.MacAddress ?? '').toLowerCase();
    const link = mac ? o.links?.find((l) => l.mac === mac) : undefined;
    const spec: EndpointSpec = {
      key: endpointKey(info.Id, netName),
      name: bridged.length > 1 ? `${name}/${netName}` : name,
      netns: { kind: 'path', path: `/proc/${info.State.Pid}/ns/net` },
      interface: link?.ifname ?? 'eth0',
      labels: {
        ...labels,
        [BUILTIN_LABELS.name]: name,
        ...(labels[COMPOSE_SERVICE_LABEL] !== undefined ? { [BUILTIN_LABELS.composeService]: labels[COMPOSE_SERVICE_LABEL] } : {}),
        [DOCKER_NETWORK_LABEL]: netName,
      },
    };
    if (n.IPAddress) spec.ipv4 = n.IPAddress;
    if (mac) spec.mac = mac;
    if (link?.peerIfindex !== undefined) spec.hostIfindex = link.peerIfindex;
    if (published.length) spec.published = published;
    out.endpoints.push(spec);
  }
  return out;
}

/**
 * The container ports a running container publishes on the host, one per
 * binding (a port bound on 0.0.0.0 and on :: is one entry without hostIp).
 */
export function publishedPortsOf(info: Pick<ContainerInspect, 'NetworkSettings'>): PublishedPort[] {
  const out: PublishedPort[] = [];
  const seen = new Set<string>();
  for (const [key, bindings] of Object.entries(info.NetworkSettings.Ports ?? {})) {
    if (!bindings?.length) continue;
    const m = /^(\d+)\/(tcp|udp|sctp)$/.exec(key);
    if (!m) continue;
    const port = Number(m[1]);
    for (const b of bindings) {
      const ip = b.HostIp && b.HostIp !== '0.0.0.0' && b.HostIp !== '::' ? b.HostIp : undefined;
      const k = `${key}@${ip ?? '*'}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push({ protocol: m[2] as PublishedPort['protocol'], from: port, to: port, ...(ip ? { hostIp: ip } : {}) });
    }
  }
  return out.sort((a, b) => a.protocol.localeCompare(b.protocol) || a.from - b.from || (a.hostIp ?? '').localeCompare(b.hostIp ?? ''));
}

/** Bridge networks of a container whose interface was not found by MAC. */
export function missingLinks(info: ContainerInspect, o: DesiredOptions): string[] {
  const missing: string[] = [];
  for (const [netName, n] of Object.entries(info.NetworkSettings.Networks ?? {})) {
    if (o.networks.get(netName)?.driver !== 'bridge') continue;
    const mac = (n.MacAddress ?? '').toLowerCase();
    if (!mac || !o.links?.some((l) => l.mac === mac)) missing.push(netName);
  }
  return missing;
}

/** Parse `ip -j link` output. */
export function parseIpLinkJson(text: string): NetnsLink[] {
  const raw = JSON.parse(text) as Array<{ ifindex: number; ifname: string; address?: string; link_index?: number; link_type?: string }>;
  return raw
    .filter((l) => l.link_type !== 'loopback')
    .map((l) => ({
      ifindex: l.ifindex,
      ifname: l.ifname,
      mac: (l.address ?? '').toLowerCase(),
      ...(typeof l.link_index === 'number' ? { peerIfindex: l.link_index } : {}),
    }));
}

/** Stable structural equality for specs (key order independent). */
export function sameValue(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
