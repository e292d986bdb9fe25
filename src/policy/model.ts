/**
 * Bastion's one internal policy model. Every front end (Bastion YAML, Docker
 * Compose, Kubernetes NetworkPolicy) compiles into this; the manager compiles
 * this into datapath map entries.
 *
 * Semantics:
 * - Every managed endpoint is isolated in both directions: what no rule
 *   allows is denied (least privilege). A front end that wants a direction
 *   left open (Kubernetes, for a pod no policy selects) emits an allow-all
 *   rule for it ({ kind: 'any' } peer, no ports).
 * - A rule belongs to the endpoints its `subject` selects and to one
 *   direction. An egress rule lets the subject open connections to its peers;
 *   an ingress rule lets the peers open connections to the subject.
 * - A connection between two managed endpoints is allowed only when the
 *   source's egress AND the destination's ingress allow it. A connection to
 *   something unmanaged (host, CIDR) needs only the source's egress; from
 *   something unmanaged, only the destination's ingress.
 * - Replies of an allowed connection always pass (stateful).
 */

/** Kubernetes-style label selector. An empty selector selects everything. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export type Protocol = 'tcp' | 'udp' | 'sctp' | 'icmp' | 'any';

/** Destination ports. icmp means ICMP echo; 'any' means every protocol. */
export interface PortRange {
  protocol: Protocol;
  /** inclusive; 0..65535 for "every port"; ignored for icmp and any */
  from: number;
  to: number;
  /**
   * A named port (Kubernetes): resolved on the destination endpoint's
   * namedPorts (with this protocol); from/to are then ignored. A named port
   * matches nothing on a destination that does not declare it.
   */
  name?: string;
}

export type Peer =
  /** managed endpoints whose labels match */
  | { kind: 'endpoints'; selector: LabelSelector }
  /** the host: the gateway address and every address of the host itself */
  | { kind: 'host' }
  /** addresses in cidr but in none of except (managed endpoints included) */
  | { kind: 'cidr'; cidr: string; except?: string[] }
  /** anything at all: every endpoint, the host, the world */
  | { kind: 'any' };

export type Direction = 'egress' | 'ingress';

export interface Rule {
  /** stable name, reported in flow events and `explain`: "policy-name" or "ns/policy#ingress[0]" */
  id: string;
  /** which endpoints this rule belongs to */
  subject: LabelSelector;
  direction: Direction;
  /** OR: any of them. An empty list allows nothing. */
  peers: Peer[];
  /** OR: any of them. An empty list means every protocol and port. */
  ports: PortRange[];
}

export type Mode = 'enforce' | 'audit';

export interface PolicySet {
  mode: Mode;
  rules: Rule[];
}

/** Label keys Bastion sets itself on every endpoint. */
export const BUILTIN_LABELS = {
  name: 'bastion.io/name',
  composeService: 'bastion.io/compose-service',
  namespace: 'bastion.io/namespace',
} as const;
