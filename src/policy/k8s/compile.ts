/**
 * Compiles a Kubernetes cluster snapshot (namespaces, pods, NetworkPolicies)
 * into Bastion's internal policy model (src/policy/model.ts), so that
 * Kubernetes policy feeds the same dependency map as Bastion's own policies.
 *
 * Endpoints: every pod becomes an endpoint keyed "ns/pod" whose labels are
 *   - the pod's labels,
 *   - bastion.io/namespace: <namespace>,
 *   - bastion.io/pod: <pod name>,
 *   - every label of its namespace under bastion.io/ns-label/<key>
 *     (so bastion.io/ns-label/kubernetes.io/metadata.name: <namespace> is on
 *     every pod endpoint, and marks it as a Kubernetes pod).
 * Pod labels whose key starts with "bastion.io/" are refused (they would clash).
 *
 * Selectors: podSelector → the same selector plus bastion.io/namespace = the
 * policy's namespace; namespaceSelector → the same selector with its keys
 * prefixed by bastion.io/ns-label/. Both in one peer → both (AND).
 * ipBlock → a cidr peer with except; ports → PortRange (named port → name,
 * endPort → range, no port → 0..65535, no ports at all → []).
 *
 * Isolation: the model isolates every endpoint in both directions, so a pod
 * that no policy selects for a direction gets an allow-all rule for that
 * direction (peer any, no ports), as Kubernetes leaves it open. The compiled
 * rules therefore depend on the pods' labels: recompile when pods change.
 */
import type { V1LabelSelector, V1NetworkPolicyPeer, V1NetworkPolicyPort } from '@kubernetes/client-node';
import type { LabelSelector, LabelSelectorRequirement, Mode, Peer, PolicySet, PortRange, Rule } from '../model.js';
import { BUILTIN_LABELS } from '../model.js';
import { formatCidr, parseCidr } from '../../net/ip.js';
import { Evaluator } from './engine.js';
import { K8sInputError, NAMESPACE_NAME_LABEL, objectIssue, rulePeers, type Cluster } from './objects.js';
import type { Issue } from '../errors.js';
import { selectorAnd, selectorOf } from '../selector.js';

/** Namespace labels appear on pod endpoints under this prefix. */
export const NS_LABEL_PREFIX = 'bastion.io/ns-label/';
/** The pod's name (the namespace is BUILTIN_LABELS.namespace). */
export const POD_NAME_LABEL = 'bastion.io/pod';
/** Label keys Bastion owns: pods may not carry them. */
export const RESERVED_PREFIX = 'bastion.io/';
/** On every pod endpoint (the API server gives every namespace this label). */
export const K8S_POD_MARKER = NS_LABEL_PREFIX + NAMESPACE_NAME_LABEL;

export type NamedPorts = Record<string, { port: number; protocol: 'tcp' | 'udp' | 'sctp' }>;

export interface CompiledK8s {
  rules: Rule[];
  /** "ns/pod" → endpoint labels */
  endpointLabels: Map<string, Record<string, string>>;
  /** "ns/pod" → named container ports */
  namedPorts: Map<string, NamedPorts>;
  /** "ns/pod" → pod IPs (status.podIP first); cidr peers match these */
  addresses: Map<string, string[]>;
}

/** A selector that matches nothing, as null. */
type Sel = LabelSelector | null;

const MARKER: LabelSelectorRequirement = { key: K8S_POD_MARKER, operator: 'Exists' };

function asOperator(op: string): LabelSelectorRequirement['operator'] {
  if (op === 'In' || op === 'NotIn' || op === 'Exists' || op === 'DoesNotExist') return op;
  throw new Error(`invalid selector operator ${op}`); // validation prevents this
}

/**
 * A podSelector over pod labels. Keys under bastion.io/ are on no pod (pods
 * may not carry them), so requirements on them are decided here.
 */
function podSel(s: V1LabelSelector): Sel {
  const matchLabels: Record<string, string> = {};
  const matchExpressions: LabelSelectorRequirement[] = [];
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) {
    if (k.startsWith(RESERVED_PREFIX)) return null;
    matchLabels[k] = v;
  }
  for (const r of s.matchExpressions ?? []) {
    const op = asOperator(r.operator);
    if (r.key.startsWith(RESERVED_PREFIX)) {
      if (op === 'In' || op === 'Exists') return null;
      continue; // NotIn, DoesNotExist: always true on an absent key
    }
    matchExpressions.push({ key: r.key, operator: op, ...(r.values ? { values: [...r.values] } : {}) });
  }
  return selectorOf(matchLabels, matchExpressions);
}

/** A namespaceSelector, over the prefixed namespace labels of pod endpoints. */
function nsSel(s: V1LabelSelector): LabelSelector {
  const matchLabels: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) matchLabels[NS_LABEL_PREFIX + k] = v;
  const matchExpressions = (s.matchExpressions ?? []).map(
    (r): LabelSelectorRequirement => ({
      key: NS_LABEL_PREFIX + r.key,
      operator: asOperator(r.operator),
      ...(r.values ? { values: [...r.values] } : {}),
    }),
  );
  return selectorOf(matchLabels, matchExpressions);
}

const inNamespace = (ns: string): LabelSelector => ({
  matchLabels: { [BUILTIN_LABELS.namespace]: ns },
  matchExpressions: [MARKER],
});

function peer(p: V1NetworkPolicyPeer, policyNs: string): Peer | null {
  if (p.ipBlock) {
    const c = parseCidr(p.ipBlock.cidr)!;
    const except = (p.ipBlock.except ?? []).map((e) => formatCidr(parseCidr(e)!));
    return { kind: 'cidr', cidr: formatCidr(c), ...(except.length ? { except } : {}) };
  }
  const sel = p.namespaceSelector
    ? selectorAnd(nsSel(p.namespaceSelector), p.podSelector ? podSel(p.podSelector) : {}, { matchExpressions: [MARKER] })
    : selectorAnd(podSel(p.podSelector ?? {}), inNamespace(policyNs));
  return sel === null ? null : { kind: 'endpoints', selector: sel };
}

function port(p: V1NetworkPolicyPort): PortRange {
  const protocol = (p.protocol ?? 'TCP').toLowerCase() as 'tcp' | 'udp' | 'sctp';
  if (p.port === undefined) return { protocol, from: 0, to: 65535 };
  // named: from/to are ignored by the model; 0..0 so that nothing is allowed if they were not
  if (typeof p.port === 'string') return { protocol, from: 0, to: 0, name: p.port };
  return { protocol, from: p.port, to: p.endPort ?? p.port };
}

/**
 * Compiles the cluster. Throws K8sInputError when a pod carries a label under
 * bastion.io/ (reserved for the labels Bastion sets itself).
 */
export function compileToPolicySet(cluster: Cluster): CompiledK8s {
  const issues: Issue[] = [];
  const endpointLabels = new Map<string, Record<string, string>>();
  const namedPorts = new Map<string, NamedPorts>();
  const addresses = new Map<string, string[]>();
  for (const pod of cluster.pods) {
    for (const k of Object.keys(pod.labels))
      if (k.startsWith(RESERVED_PREFIX))
        issues.push(
          objectIssue(`Pod ${pod.key}`, {}, {
            code: 'not-allowed',
            path: ['metadata', 'labels', { key: k }],
            message: `label keys under "${RESERVED_PREFIX}" are reserved for Bastion`,
          }),
        );
    const labels: Record<string, string> = { ...pod.labels };
    for (const [k, v] of Object.entries(cluster.namespaces.get(pod.namespace)?.labels ?? { [NAMESPACE_NAME_LABEL]: pod.namespace }))
      labels[NS_LABEL_PREFIX + k] = v;
    labels[BUILTIN_LABELS.namespace] = pod.namespace;
    labels[POD_NAME_LABEL] = pod.name;
    endpointLabels.set(pod.key, labels);
    const named: NamedPorts = {};
    for (const p of pod.ports)
      if (p.name !== undefined) named[p.name] = { port: p.port, protocol: p.protocol.toLowerCase() as 'tcp' | 'udp' | 'sctp' };
    namedPorts.set(pod.key, named);
    addresses.set(pod.key, [...pod.ips]);
  }
  if (issues.length > 0) throw new K8sInputError(issues);

  const rules: Rule[] = [];
  for (const policy of cluster.policies) {
    const subject = selectorAnd(podSel(policy.podSelector), inNamespace(policy.namespace));
    if (subject === null) continue; // selects no pod: neither isolates nor allows
    for (const direction of ['ingress', 'egress'] as const) {
      if (!policy.policyTypes.includes(direction === 'ingress' ? 'Ingress' : 'Egress')) continue;
      const list = direction === 'ingress' ? policy.ingress : policy.egress;
      list.forEach((r, i) => {
        const peers = rulePeers(r);
        rules.push({
          id: `${policy.key}#${direction}[${i}]`,
          subject,
          direction,
          peers:
            !peers || peers.length === 0
              ? [{ kind: 'any' }]
              : peers.map((p) => peer(p, policy.namespace)).filter((p): p is Peer => p !== null),
          ports: (r.ports ?? []).map(port),
        });
      });
    }
  }

  // Kubernetes leaves a direction open on a pod no policy selects for it
  const ev = new Evaluator(cluster);
  for (const pod of cluster.pods) {
    const sel = ev.policiesFor(pod);
    for (const direction of ['ingress', 'egress'] as const) {
      if (sel[direction].length > 0) continue;
      rules.push({
        id: `${pod.key}#${direction}:not-isolated`,
        subject: {
          matchLabels: { [BUILTIN_LABELS.namespace]: pod.namespace, [POD_NAME_LABEL]: pod.name },
          matchExpressions: [MARKER],
        },
        direction,
        peers: [{ kind: 'any' }],
        ports: [],
      });
    }
  }
  return { rules, endpointLabels, namedPorts, addresses };
}

/** The compiled rules as a PolicySet. */
export function toPolicySet(compiled: CompiledK8s, mode: Mode = 'enforce'): PolicySet {
  return { mode, rules: compiled.rules };
}
