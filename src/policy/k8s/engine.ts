/**
 * The direct evaluator of Kubernetes NetworkPolicy semantics, with the reasons
 * for each verdict. The reference for `bastion k8s matrix` / `explain` and for
 * the compiler into Bastion's model (compile.ts), which is tested against it.
 *
 * Semantics (networking.k8s.io/v1, as the upstream e2e truth tables test them):
 * - A policy in namespace N selects the pods of N that its podSelector matches
 *   (an empty or omitted podSelector selects every pod of N).
 * - A pod is isolated for ingress iff some policy whose policyTypes include
 *   Ingress selects it; likewise for egress. policyTypes, when omitted, is
 *   Ingress plus Egress when spec.egress has at least one rule.
 * - A non-isolated direction allows everything. An isolated direction allows
 *   what at least one rule of one selecting policy allows (union, no order, no
 *   deny). A policy type with no rules (missing or empty ingress/egress) allows
 *   nothing but still isolates.
 * - A rule matches a connection when one of its peers matches the other side
 *   (or it has no from/to: every peer) and one of its ports matches (or it has
 *   no ports: every port and protocol).
 * - Peers: podSelector alone = pods of the policy's namespace; namespaceSelector
 *   alone = every pod of the matching namespaces; both in one peer = pods
 *   matching podSelector inside namespaces matching namespaceSelector (AND);
 *   separate peers are ORed. ipBlock matches addresses in cidr but in none of
 *   except, pod IPs included.
 * - Ports: protocol defaults to TCP; no port = every port of that protocol;
 *   port..endPort is an inclusive range; a named port resolves on the server
 *   pod (the destination), to its container port with that name and protocol.
 * - A connection between two pods is allowed iff the client's egress AND the
 *   server's ingress allow it.
 */
import type { V1NetworkPolicyPeer, V1NetworkPolicyPort } from '@kubernetes/client-node';
import { ipInBlock, parseIp } from '../../net/ip.js';
import { formatSelector, matches } from '../selector.js';
import { findPod, rulePeers, type Cluster, type K8sProtocol, type PodInfo, type PolicyInfo } from './objects.js';

export type Direction = 'ingress' | 'egress';

/** One (policy, rule, peer, port) that allows a connection. */
export interface RuleMatch {
  /** "ns/name" */
  policy: string;
  direction: Direction;
  /** index in spec.ingress / spec.egress */
  rule: number;
  /** index in from / to; null when the rule has none (every peer) */
  peer: number | null;
  peerText: string;
  /** index in ports; null when the rule has none (every port and protocol) */
  port: number | null;
  portText: string;
}

/** How one rule fared: which of its peers and ports matched. */
export interface RuleCheck {
  policy: string;
  direction: Direction;
  rule: number;
  /** indices of matching peers; [null] for a rule without from/to */
  peersMatched: Array<number | null>;
  /** indices of matching ports; [null] for a rule without ports */
  portsMatched: Array<number | null>;
  allows: boolean;
}

export interface DirectionVerdict {
  direction: Direction;
  /** the pod whose policies decide: the client for egress, the server for ingress */
  pod: string;
  /** some policy selects the pod for this direction */
  isolated: boolean;
  /** those policies ("ns/name") */
  policies: string[];
  allowed: boolean;
  /** every rule that allows it (first matching peer and port of each rule) */
  allowedBy: RuleMatch[];
  /** every rule of the isolating policies, matched or not */
  rules: RuleCheck[];
}

export interface Verdict {
  from: string;
  to: string;
  protocol: K8sProtocol;
  /** as asked: a number or a port name */
  port: number | string;
  /** the destination port number (a name resolved on the server), if any */
  resolvedPort?: number;
  clientIP?: string;
  serverIP?: string;
  allowed: boolean;
  egress: DirectionVerdict;
  ingress: DirectionVerdict;
  /** remarks that bear on the verdict (unresolved named port, pod without IP...) */
  notes: string[];
}

export class UnknownPodError extends Error {
  constructor(readonly ref: string) {
    super(`no pod "${ref}" in the input (use namespace/name)`);
  }
}

/** Caches what depends only on the cluster (policy selection, namespace labels). */
export class Evaluator {
  private readonly selecting = new Map<string, { ingress: PolicyInfo[]; egress: PolicyInfo[] }>();

  constructor(readonly cluster: Cluster) {}

  namespaceLabels(ns: string): Record<string, string> {
    return this.cluster.namespaces.get(ns)?.labels ?? { 'kubernetes.io/metadata.name': ns };
  }

  /** Policies that select `pod` for each direction. */
  policiesFor(pod: PodInfo): { ingress: PolicyInfo[]; egress: PolicyInfo[] } {
    let s = this.selecting.get(pod.key);
    if (!s) {
      const sel = this.cluster.policies.filter(
        (p) => p.namespace === pod.namespace && matches(p.podSelector, pod.labels),
      );
      s = {
        ingress: sel.filter((p) => p.policyTypes.includes('Ingress')),
        egress: sel.filter((p) => p.policyTypes.includes('Egress')),
      };
      this.selecting.set(pod.key, s);
    }
    return s;
  }

  /** Does a peer of a policy in `policyNs` match pod `other` (seen at address `otherIP`)? */
  peerMatches(peer: V1NetworkPolicyPeer, policyNs: string, other: PodInfo, otherIP: string | undefined): boolean {
    if (peer.ipBlock) return otherIP !== undefined && ipInBlock(otherIP, peer.ipBlock.cidr, peer.ipBlock.except);
    const nsOk = peer.namespaceSelector
      ? matches(peer.namespaceSelector, this.namespaceLabels(other.namespace))
      : other.namespace === policyNs;
    if (!nsOk) return false;
    return peer.podSelector ? matches(peer.podSelector, other.labels) : true;
  }

  /** Evaluates one connection from `from` to `to`'s IP on `port`/`protocol`. */
  evaluate(from: PodInfo, to: PodInfo, port: number | string, protocol: K8sProtocol): Verdict {
    const notes: string[] = [];
    let resolvedPort: number | undefined;
    if (typeof port === 'number') resolvedPort = port;
    else {
      resolvedPort = resolveNamedPort(to, port, protocol);
      if (resolvedPort === undefined)
        notes.push(`${to.key} declares no ${protocol} container port named "${port}": there is nothing to connect to`);
    }
    const serverIP = to.ip;
    const serverFamily = serverIP ? parseIp(serverIP)?.family : undefined;
    const clientIP =
      serverFamily === undefined ? from.ip : from.ips.find((ip) => parseIp(ip)?.family === serverFamily);
    if (!serverIP) notes.push(`${to.key} has no IP (status.podIP): ipBlock peers cannot match it`);
    if (!clientIP)
      notes.push(`${from.key} has no IP${serverFamily ? ` of the server's family (IPv${serverFamily})` : ''}: ipBlock peers cannot match it`);
    const egress = this.direction('egress', from, to, serverIP, to, resolvedPort, protocol);
    const ingress = this.direction('ingress', to, from, clientIP, to, resolvedPort, protocol);
    return {
      from: from.key,
      to: to.key,
      protocol,
      port,
      ...(resolvedPort !== undefined ? { resolvedPort } : {}),
      ...(clientIP !== undefined ? { clientIP } : {}),
      ...(serverIP !== undefined ? { serverIP } : {}),
      allowed: resolvedPort !== undefined && egress.allowed && ingress.allowed,
      egress,
      ingress,
      notes,
    };
  }

  private direction(
    direction: Direction,
    subject: PodInfo,
    other: PodInfo,
    /** the other side's address in this connection (what ipBlock peers match) */
    otherIP: string | undefined,
    server: PodInfo,
    port: number | undefined,
    protocol: K8sProtocol,
  ): DirectionVerdict {
    const policies = this.policiesFor(subject)[direction];
    const verdict: DirectionVerdict = {
      direction,
      pod: subject.key,
      isolated: policies.length > 0,
      policies: policies.map((p) => p.key),
      allowed: policies.length === 0,
      allowedBy: [],
      rules: [],
    };
    for (const policy of policies) {
      const rules = direction === 'ingress' ? policy.ingress : policy.egress;
      rules.forEach((rule, ri) => {
        const peers = rulePeers(rule);
        const peersMatched: Array<number | null> =
          !peers || peers.length === 0
            ? [null]
            : peers.flatMap((p, i) => (this.peerMatches(p, policy.namespace, other, otherIP) ? [i] : []));
        const ports = rule.ports;
        const portsMatched: Array<number | null> =
          !ports || ports.length === 0
            ? [null]
            : ports.flatMap((p, i) => (portMatches(p, server, port, protocol) ? [i] : []));
        const allows = peersMatched.length > 0 && portsMatched.length > 0;
        verdict.rules.push({ policy: policy.key, direction, rule: ri, peersMatched, portsMatched, allows });
        if (allows) {
          const peer = peersMatched[0]!;
          const portIdx = portsMatched[0]!;
          verdict.allowedBy.push({
            policy: policy.key,
            direction,
            rule: ri,
            peer,
            peerText: peer === null ? (direction === 'ingress' ? 'all sources' : 'all destinations') : describePeer(peers![peer]!, policy.namespace),
            port: portIdx,
            portText: portIdx === null ? 'all ports and protocols' : describePort(ports![portIdx]!, server),
          });
        }
      });
    }
    if (verdict.isolated) verdict.allowed = verdict.allowedBy.length > 0;
    return verdict;
  }
}

/** A named container port of `pod` with that protocol, if declared. */
export function resolveNamedPort(pod: PodInfo, name: string, protocol: K8sProtocol): number | undefined {
  return pod.ports.find((p) => p.name === name && p.protocol === protocol)?.port;
}

/** Does a NetworkPolicyPort match a connection to `server` on port/protocol? */
export function portMatches(
  pp: V1NetworkPolicyPort,
  server: PodInfo,
  port: number | undefined,
  protocol: K8sProtocol,
): boolean {
  const proto = (pp.protocol ?? 'TCP') as K8sProtocol;
  if (proto !== protocol) return false;
  if (pp.port === undefined) return port !== undefined;
  if (port === undefined) return false;
  if (typeof pp.port === 'number') return port >= pp.port && port <= (pp.endPort ?? pp.port);
  return resolveNamedPort(server, pp.port, proto) === port;
}

export function describePeer(peer: V1NetworkPolicyPeer, policyNs: string): string {
  if (peer.ipBlock)
    return `ipBlock ${peer.ipBlock.cidr}${peer.ipBlock.except?.length ? ` except ${peer.ipBlock.except.join(', ')}` : ''}`;
  const pods = peer.podSelector ? `pods {${formatSelector(peer.podSelector)}}` : 'all pods';
  const ns = peer.namespaceSelector
    ? `namespaces {${formatSelector(peer.namespaceSelector)}}`
    : `namespace ${policyNs}`;
  return `${pods} in ${ns}`;
}

export function describePort(pp: V1NetworkPolicyPort, server?: PodInfo): string {
  const proto = (pp.protocol ?? 'TCP') as K8sProtocol;
  if (pp.port === undefined) return `${proto} all ports`;
  if (typeof pp.port === 'number')
    return pp.endPort !== undefined && pp.endPort !== pp.port ? `${proto} ${pp.port}-${pp.endPort}` : `${proto} ${pp.port}`;
  const n = server ? resolveNamedPort(server, pp.port, proto) : undefined;
  return server
    ? `${proto} ${pp.port} (${n === undefined ? `not declared by ${server.key}` : `${n} on ${server.key}`})`
    : `${proto} ${pp.port}`;
}

function pod(cluster: Cluster, p: PodInfo | string): PodInfo {
  if (typeof p !== 'string') return p;
  const found = findPod(cluster, p);
  if (!found) throw new UnknownPodError(p);
  return found;
}

/**
 * The verdict for a connection from pod `from` to pod `to`'s IP on `port`
 * (a number, or a container port name resolved on `to`) and `protocol`,
 * with the policies and rules that decided it. Pods as PodInfo or "ns/name".
 */
export function evaluateConnection(
  cluster: Cluster,
  from: PodInfo | string,
  to: PodInfo | string,
  port: number | string,
  protocol: K8sProtocol,
): Verdict {
  return new Evaluator(cluster).evaluate(pod(cluster, from), pod(cluster, to), port, protocol);
}
