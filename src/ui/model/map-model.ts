/**
 * The console's map as plain data: what the page hands to the graph library
 * (cytoscape), computed from the status report (containers), the dependency
 * graph (policy) and the observed traffic (src/ui/model/traffic.ts).
 *
 * - Containers are nodes, inside a group per network (the Docker network, or
 *   the bridge behind the host-side veth), inside a group per host in
 *   cluster mode. The host, the world and CIDR peers are nodes outside the
 *   groups.
 * - Policy edges carry the ports both sides allow; one that no allowed
 *   traffic used is `unused`.
 * - Traffic that policy does not explain gets edges of its own: `dropped`
 *   (red: who attacks whom), `audit` (what enforce mode would drop), and
 *   allowed traffic with no policy edge (e.g. from the world).
 * - A node that received drops is `attacked`, one that sent them `attacker`.
 *
 * Pure: the same inputs give the same elements, so the page can diff them.
 */
import type { EndpointStatus, GraphReport, StatusReport } from '../../api/types.js';
import { endpointNodeId, trafficEdgeId, type TrafficAggregate } from './traffic.js';

export interface MapNode {
  id: string;
  label: string;
  parent?: string;
  kind: 'host-group' | 'network' | 'endpoint' | 'external';
  classes: string[];
  /** endpoint: its name; group: how many containers it holds */
  name?: string;
  members?: number;
  dropsIn?: number;
  dropsOut?: number;
}

export interface MapEdge {
  id: string;
  source: string;
  target: string;
  kind: 'policy' | 'dropped' | 'audit' | 'allowed';
  label: string;
  classes: string[];
  ports: string[];
  rules?: string[];
  count: number;
}

export interface MapElements {
  nodes: MapNode[];
  edges: MapEdge[];
  /** endpoint name → its map node's group, for search and focus */
  groups: Map<string, string>;
}

/** The fields of cluster mode's status (bastion run --cluster) the map reads: this node, and other nodes' endpoints in its maps. */
interface ClusterStatusLike {
  node?: string;
  peers?: Array<{ name: string; node: string; ipv4?: string }>;
}

export const NETWORK_LABEL = 'bastion.io/network';

/** The network a container is drawn in: its Docker network, else its bridge, else its /24. */
export function networkOf(e: Partial<Pick<EndpointStatus, 'labels' | 'bridge' | 'ipv4'>>): string {
  return e.labels?.[NETWORK_LABEL] ?? e.bridge ?? (e.ipv4 ? `${e.ipv4.split('.').slice(0, 3).join('.')}.0/24` : 'containers');
}

export interface MapInput {
  status: StatusReport;
  graph?: GraphReport;
  traffic: TrafficAggregate;
}

export function endpointClasses(e: EndpointStatus): string[] {
  const c = ['endpoint'];
  if (!e.stack.ok) c.push('stack-missing');
  if (e.mode === 'audit') c.push('audit-mode');
  if (e.findings?.some((f) => f.severity === 'critical' || f.severity === 'high')) c.push('findings');
  return c;
}

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

export function buildMap(input: MapInput): MapElements {
  const { status, graph, traffic } = input;
  const cluster = (status as StatusReport & { cluster?: ClusterStatusLike }).cluster;
  const nodes = new Map<string, MapNode>();
  const groups = new Map<string, string>();
  const members = new Map<string, number>();

  const group = (host: string | undefined, network: string): string => {
    let parent: string | undefined;
    if (host !== undefined) {
      parent = `h:${host}`;
      if (!nodes.has(parent)) nodes.set(parent, { id: parent, label: `host ${host}`, kind: 'host-group', classes: ['host-group'] });
    }
    const id = host !== undefined ? `n:${host}/${network}` : `n:${network}`;
    if (!nodes.has(id)) nodes.set(id, { id, label: network, kind: 'network', classes: ['network'], ...(parent ? { parent } : {}) });
    members.set(id, (members.get(id) ?? 0) + 1);
    return id;
  };

  const here = cluster?.node;
  for (const e of status.endpoints) {
    const parent = group(here, networkOf(e));
    const id = endpointNodeId(e.name);
    groups.set(e.name, parent);
    nodes.set(id, { id, label: e.name, name: e.name, parent, kind: 'endpoint', classes: endpointClasses(e) });
  }
  for (const p of cluster?.peers ?? []) {
    const id = endpointNodeId(p.name);
    if (nodes.has(id)) continue;
    const parent = group(p.node, networkOf(p));
    groups.set(p.name, parent);
    nodes.set(id, { id, label: p.name, name: p.name, parent, kind: 'endpoint', classes: ['endpoint', 'remote'] });
  }
  for (const [id, n] of members) {
    const g = nodes.get(id)!;
    g.members = n;
    g.label = `${g.label} · ${plural(n, 'container')}`;
  }
  for (const x of graph?.externals ?? []) {
    const id = `x:${x.id}`;
    nodes.set(id, { id, label: x.label, kind: 'external', classes: ['external', x.kind] });
  }
  const ensure = (id: string): void => {
    if (nodes.has(id)) return;
    // a traffic end the status does not list: host, world, a CIDR, an address nobody names, a container that is gone
    if (id.startsWith('e:')) nodes.set(id, { id, label: id.slice(2), name: id.slice(2), kind: 'endpoint', classes: ['endpoint', 'unknown'] });
    else {
      const label = id === 'x:unknown' ? 'unknown address' : id.startsWith('x:cidr:') ? id.slice(7) : id.slice(2);
      nodes.set(id, { id, label, kind: 'external', classes: ['external', id === 'x:host' ? 'host' : id === 'x:world' ? 'world' : 'cidr'] });
    }
  };

  const edges: MapEdge[] = [];
  const policyEdges = new Set<string>();
  const externalIds = new Set(graph?.externals.map((x) => x.id));
  const nodeRef = (end: string) => (externalIds.has(end) ? `x:${end}` : endpointNodeId(end));
  for (const g of graph?.edges ?? []) {
    const source = nodeRef(g.from);
    const target = nodeRef(g.to);
    ensure(source);
    ensure(target);
    const key = `${source}>${target}`;
    policyEdges.add(key);
    const used = traffic.edges.get(trafficEdgeId('allowed', source, target));
    edges.push({
      id: `p:${key}`,
      source,
      target,
      kind: 'policy',
      label: g.ports.join(' '),
      classes: ['policy', used ? 'used' : 'unused'],
      ports: g.ports,
      rules: g.rules,
      count: used?.count ?? 0,
    });
  }
  for (const [id, t] of traffic.edges) {
    if (t.kind === 'allowed' && policyEdges.has(`${t.from}>${t.to}`)) continue; // drawn as the policy edge, used
    ensure(t.from);
    ensure(t.to);
    const ports = [...t.ports];
    edges.push({
      id,
      source: t.from,
      target: t.to,
      kind: t.kind,
      label: `${ports.slice(0, 3).join(' ')}${ports.length > 3 ? ' …' : ''} ×${t.count}`,
      classes: [t.kind === 'allowed' ? 'allowed-unlisted' : t.kind],
      ports,
      count: t.count,
    });
  }
  for (const [id, n] of traffic.nodes) {
    const node = nodes.get(id);
    if (!node) continue;
    node.dropsIn = n.dropsIn;
    node.dropsOut = n.dropsOut;
    if (n.dropsIn > 0) node.classes = [...node.classes, 'attacked'];
    if (n.dropsOut > 0) node.classes = [...node.classes, 'attacker'];
  }
  return { nodes: [...nodes.values()], edges, groups };
}

/** Containers whose name, labels or address contain the text (case-insensitive), at most `limit`. */
export function searchEndpoints(endpoints: readonly EndpointStatus[], text: string, limit = 50): EndpointStatus[] {
  const q = text.trim().toLowerCase();
  if (!q) return [];
  const out: EndpointStatus[] = [];
  for (const e of endpoints) {
    const hay = [e.name, e.ipv4, ...Object.entries(e.labels).map(([k, v]) => `${k}=${v}`)];
    if (hay.some((h) => h.toLowerCase().includes(q))) out.push(e);
    if (out.length >= limit) break;
  }
  return out.sort((a, b) => (a.name.toLowerCase() === q ? -1 : b.name.toLowerCase() === q ? 1 : 0));
}

/** Flow records name an outside address by its CIDR: the graph's external node for each. */
export function cidrIdsOf(graph: GraphReport | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const x of graph?.externals ?? []) if (x.cidr && !out.has(x.cidr)) out.set(x.cidr, x.id);
  return out;
}
