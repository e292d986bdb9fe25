/**
 * Kubernetes input objects for the NetworkPolicy engine and the posture
 * audit: Namespace, Pod, NetworkPolicy, and ServiceAccount, Role,
 * ClusterRole, RoleBinding, ClusterRoleBinding (the real API types of
 * @kubernetes/client-node), read from
 * multi-document YAML or JSON (also `kind: List` / `*List` with items),
 * checked for shape with zod and for meaning with the API server's own
 * validation rules, and normalised into a `Cluster` snapshot.
 *
 * Every error names the object, the field and (when read from a file) the file
 * and document, e.g.
 *   policies.yaml (document 3): NetworkPolicy x/allow-cidr: spec.egress[0].to[0].ipBlock.cidr: "10.0.0.0/33" is not a valid CIDR
 */
import { parseAllDocuments } from 'yaml';
import { InvalidInput, formatOrigin, formatPath, issueLines, quote, yamlErrorLine, type Issue, type IssueCode, type Path } from '../errors.js';
import { DEFAULT_INPUT_MAX_BYTES, readInputFile } from '../input-file.js';
import { z } from 'zod';
import type {
  RbacV1Subject,
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1LabelSelector,
  V1Namespace,
  V1NetworkPolicy,
  V1NetworkPolicyEgressRule,
  V1NetworkPolicyIngressRule,
  V1NetworkPolicyPeer,
  V1NetworkPolicyPort,
  V1NetworkPolicySpec,
  V1Pod,
  V1PolicyRule,
  V1Role,
  V1RoleBinding,
  V1RoleRef,
  V1ServiceAccount,
} from '@kubernetes/client-node';
import { cidrCovers, parseCidr, parseIp } from '../../net/ip.js';
import { checkDns1123Label, checkDns1123Subdomain, checkPortName } from './names.js';
import { K8S_LABEL_MESSAGES, validateLabels, validateSelector } from '../selector.js';

export type K8sProtocol = 'TCP' | 'UDP' | 'SCTP';
export const K8S_PROTOCOLS: readonly K8sProtocol[] = ['TCP', 'UDP', 'SCTP'];
export type PolicyType = 'Ingress' | 'Egress';
/** Set by the API server on every namespace (immutable, equal to its name). */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

/** Where an object came from, for error messages. */
export interface ObjectSource {
  file?: string;
  /** 1-based document number in a multi-document file */
  document?: number;
  /** 0-based index in a List's items */
  item?: number;
}

/**
 * The issue of a field of an object: its path is relative to the object
 * (named before it, "NetworkPolicy x/deny-all", "document" when it is no
 * object), printed as Kubernetes prints paths.
 */
export function objectIssue(object: string, source: ObjectSource, i: Pick<Issue, 'code' | 'path' | 'message'>): Issue {
  return {
    ...i,
    ...(source.file !== undefined ? { file: source.file } : {}),
    ...(source.document !== undefined ? { document: source.document } : {}),
    ...(source.item !== undefined ? { item: source.item } : {}),
    object: { name: object, at: 0 },
    pathStyle: 'dotted',
  };
}

/** Invalid input: every problem found, not only the first. */
export class K8sInputError extends InvalidInput {
  constructor(issues: Issue[]) {
    super(
      issues,
      issues.length === 1
        ? issueLines(issues)[0]!
        : `${issues.length} invalid fields:\n` + issueLines(issues).map((l) => '  ' + l).join('\n'),
    );
    this.name = 'K8sInputError';
  }
}

export interface NamespaceInfo {
  name: string;
  /** includes kubernetes.io/metadata.name */
  labels: Record<string, string>;
  /** false when no Namespace object was given and it was inferred from a pod or policy */
  declared: boolean;
}

export interface ContainerPortInfo {
  container: string;
  name?: string;
  port: number;
  protocol: K8sProtocol;
}

export interface PodInfo {
  /** "ns/name" */
  key: string;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  /** status.podIP (or the first of status.podIPs) */
  ip?: string;
  /** every pod IP (status.podIPs, or podIP) */
  ips: string[];
  ports: ContainerPortInfo[];
  hostNetwork: boolean;
  hostPID: boolean;
  hostIPC: boolean;
  /** spec.serviceAccountName (or the deprecated spec.serviceAccount), default "default" */
  serviceAccount: string;
  /** spec.automountServiceAccountToken; undefined when not set (the service account's setting applies) */
  automountServiceAccountToken?: boolean;
  /** every container and init container, with what the audit reads of its securityContext */
  containers: PodContainerInfo[];
  /** where the pod was read ("pods.yaml (document 2)") */
  source?: string;
}

export interface PodContainerInfo {
  name: string;
  /** "spec.containers[0]", "spec.initContainers[1]" */
  field: string;
  privileged: boolean;
  /** securityContext.capabilities, as written */
  capabilities: { add: string[]; drop: string[] };
}

export interface ServiceAccountInfo {
  /** "ns/name" */
  key: string;
  namespace: string;
  name: string;
  automountServiceAccountToken?: boolean;
  source?: string;
}

export interface RoleInfo {
  kind: 'Role' | 'ClusterRole';
  /** "ns/name" for a Role, "name" for a ClusterRole */
  key: string;
  namespace?: string;
  name: string;
  rules: V1PolicyRule[];
  /** a ClusterRole built by aggregation: its rules are the API server's to fill */
  aggregated: boolean;
  source?: string;
}

export interface BindingInfo {
  kind: 'RoleBinding' | 'ClusterRoleBinding';
  /** "ns/name" for a RoleBinding, "name" for a ClusterRoleBinding */
  key: string;
  namespace?: string;
  name: string;
  roleRef: V1RoleRef;
  subjects: RbacV1Subject[];
  source?: string;
}

export interface PolicyInfo {
  /** "ns/name" */
  key: string;
  namespace: string;
  name: string;
  /** spec.podSelector; {} (all pods of the namespace) when omitted */
  podSelector: V1LabelSelector;
  /** effective policy types (spec.policyTypes, or the API default) */
  policyTypes: PolicyType[];
  /** true when spec.policyTypes was omitted and the API default applied */
  policyTypesDefaulted: boolean;
  /** rules (empty when missing) */
  ingress: V1NetworkPolicyIngressRule[];
  egress: V1NetworkPolicyEgressRule[];
}

/** A snapshot of the objects the engine needs. */
export interface Cluster {
  namespaces: Map<string, NamespaceInfo>;
  /** sorted by namespace, then name */
  pods: PodInfo[];
  policies: PolicyInfo[];
  /** by "ns/name" */
  serviceAccounts: Map<string, ServiceAccountInfo>;
  /** Roles by "ns/name", ClusterRoles by name */
  roles: Map<string, RoleInfo>;
  clusterRoles: Map<string, RoleInfo>;
  /** RoleBindings and ClusterRoleBindings, in input order */
  bindings: BindingInfo[];
  /** things worth telling the user that are not errors (ignored kinds, inferred namespaces) */
  warnings: string[];
}

export type K8sObject =
  | V1Namespace
  | V1Pod
  | V1NetworkPolicy
  | V1ServiceAccount
  | V1Role
  | V1ClusterRole
  | V1RoleBinding
  | V1ClusterRoleBinding;

// ---- shape (zod) ----------------------------------------------------------

/** null means absent in Kubernetes JSON */
const opt = <T extends z.ZodType>(s: T) => s.nullish().transform((v) => v ?? undefined);
const stringMap = z.record(z.string(), z.string());

const Metadata = z.looseObject({
  name: z.string(),
  namespace: opt(z.string()),
  labels: opt(stringMap),
});

/**
 * The NetworkPolicy schemas, strict (unknown fields are errors, as with
 * kubectl's strict field validation) or lenient (unknown fields dropped, used
 * to go on validating the rest of an object that has unknown fields).
 */
function policySchemas(strict: boolean) {
  const obj = <S extends z.ZodRawShape>(shape: S) => (strict ? z.strictObject(shape) : z.object(shape));
  const Selector = obj({
    matchLabels: opt(stringMap),
    matchExpressions: opt(
      z.array(
        obj({
          key: z.string(),
          operator: z.string(),
          values: opt(z.array(z.string())),
        }),
      ),
    ),
  });

  const IntOrString = z.union([z.number().int(), z.string()], { error: 'must be an integer or a port name' });

  const PolicyPort = obj({
    protocol: opt(z.string()),
    port: opt(IntOrString),
    endPort: opt(z.number().int({ error: 'must be an integer' })),
  });

  const Peer = obj({
    podSelector: opt(Selector),
    namespaceSelector: opt(Selector),
    ipBlock: opt(
      obj({
        cidr: z.string(),
        except: opt(z.array(z.string())),
      }),
    ),
  });

  const PolicySpec = obj({
    podSelector: opt(Selector),
    policyTypes: opt(z.array(z.string())),
    ingress: opt(
      z.array(
        obj({
          from: opt(z.array(Peer)),
            /** the client-node TypeScript name of `from`, accepted for objects built in code */
            _from: opt(z.array(Peer)),
            ports: opt(z.array(PolicyPort)),
          })
          .refine((r) => r.from === undefined || r._from === undefined, {
            message: 'may not specify both from and _from',
            path: ['from'],
          }),
      ),
    ),
    egress: opt(z.array(obj({ to: opt(z.array(Peer)), ports: opt(z.array(PolicyPort)) }))),
  });

  const NetworkPolicy = z.looseObject({
    apiVersion: z.string(),
    kind: z.literal('NetworkPolicy'),
    metadata: Metadata,
    spec: opt(PolicySpec),
  });
  return { Selector, PolicyPort, Peer, PolicySpec, NetworkPolicy };
}

const STRICT = policySchemas(true);
const LENIENT = policySchemas(false);
type Selector = z.infer<typeof STRICT.Selector>;
type Peer = z.infer<typeof STRICT.Peer>;
type PolicyPort = z.infer<typeof STRICT.PolicyPort>;
type PolicySpec = z.infer<typeof STRICT.PolicySpec>;

const ContainerSchema = z.looseObject({
  name: opt(z.string()),
  restartPolicy: opt(z.string()),
  securityContext: opt(
    z.looseObject({
      privileged: opt(z.boolean()),
      capabilities: opt(z.looseObject({ add: opt(z.array(z.string())), drop: opt(z.array(z.string())) })),
    }),
  ),
  ports: opt(
    z.array(
      z.looseObject({
        containerPort: z.number().int({ error: 'must be an integer' }),
        name: opt(z.string()),
        protocol: opt(z.string()),
      }),
    ),
  ),
});

const PodSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.literal('Pod'),
  metadata: Metadata,
  spec: opt(
    z.looseObject({
      containers: opt(z.array(ContainerSchema)),
      initContainers: opt(z.array(ContainerSchema)),
      hostNetwork: opt(z.boolean()),
      hostPID: opt(z.boolean()),
      hostIPC: opt(z.boolean()),
      serviceAccountName: opt(z.string()),
      serviceAccount: opt(z.string()),
      automountServiceAccountToken: opt(z.boolean()),
    }),
  ),
  status: opt(
    z.looseObject({
      podIP: opt(z.string()),
      podIPs: opt(z.array(z.looseObject({ ip: z.string() }))),
    }),
  ),
});

const NamespaceSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.literal('Namespace'),
  metadata: z.looseObject({ name: z.string(), labels: opt(stringMap) }),
});

const ServiceAccountSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.literal('ServiceAccount'),
  metadata: Metadata,
  automountServiceAccountToken: opt(z.boolean()),
});

const PolicyRuleSchema = z.looseObject({
  verbs: z.array(z.string()),
  apiGroups: opt(z.array(z.string())),
  resources: opt(z.array(z.string())),
  resourceNames: opt(z.array(z.string())),
  nonResourceURLs: opt(z.array(z.string())),
});

const RoleSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.enum(['Role', 'ClusterRole']),
  metadata: Metadata,
  rules: opt(z.array(PolicyRuleSchema)),
  aggregationRule: opt(z.looseObject({})),
});

const BindingSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.enum(['RoleBinding', 'ClusterRoleBinding']),
  metadata: Metadata,
  roleRef: z.looseObject({ apiGroup: z.string(), kind: z.string(), name: z.string() }),
  subjects: opt(
    z.array(z.looseObject({ kind: z.string(), name: z.string(), namespace: opt(z.string()), apiGroup: opt(z.string()) })),
  ),
});

const RBAC = 'rbac.authorization.k8s.io/v1';
const API_VERSIONS: Record<string, string> = {
  Namespace: 'v1',
  Pod: 'v1',
  NetworkPolicy: 'networking.k8s.io/v1',
  ServiceAccount: 'v1',
  Role: RBAC,
  ClusterRole: RBAC,
  RoleBinding: RBAC,
  ClusterRoleBinding: RBAC,
};
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);

/** A field's issue, before it is placed in its object and file. */
type FieldIssue = Pick<Issue, 'code' | 'path' | 'message'>;

function zodIssues(err: z.ZodError): FieldIssue[] {
  return err.issues.map((i) => {
    const path = i.path.map((p) => (typeof p === 'number' ? p : String(p)));
    if (i.code === 'unrecognized_keys') {
      const keys = (i as { keys: string[] }).keys;
      return {
        code: 'unknown-field',
        path,
        message: `unknown field${keys.length > 1 ? 's' : ''} ${keys.map((k) => `${quote(k)}`).join(', ')}`,
      };
    }
    const m = /^Invalid input: expected (\w+), received (\w+)$/.exec(i.message);
    if (m) return m[2] === 'undefined' ? { code: 'required', path, message: 'required field is missing' } : { code: 'invalid-type', path, message: `expected ${m[1]}, got ${m[2]}` };
    return { code: i.code === 'invalid_type' || i.code === 'invalid_union' ? 'invalid-type' : 'invalid-value', path, message: i.message };
  });
}

const fieldIssue = (code: IssueCode, path: Path, message: string): FieldIssue => ({ code, path, message });

// ---- meaning (the API server's validation) ---------------------------------

function checkProtocol(p: string | undefined, path: Path, out: FieldIssue[]): void {
  if (p !== undefined && !(K8S_PROTOCOLS as readonly string[]).includes(p))
    out.push(fieldIssue('invalid-value', path, `unsupported protocol ${quote(p)}: supported values are "TCP", "UDP", "SCTP"`));
}

function validatePolicyPort(p: V1NetworkPolicyPort, path: Path, out: FieldIssue[]): void {
  checkProtocol(p.protocol, [...path, 'protocol'], out);
  if (typeof p.port === 'number') {
    if (p.port < 1 || p.port > 65535) out.push(fieldIssue('invalid-value', [...path, 'port'], `${p.port} is not a valid port number (1-65535)`));
  } else if (typeof p.port === 'string') {
    const e = checkPortName(p.port);
    if (e) out.push(fieldIssue('invalid-value', [...path, 'port'], `invalid port name: ${e}`));
  }
  if (p.endPort !== undefined) {
    const at = [...path, 'endPort'];
    if (p.port === undefined) out.push(fieldIssue('not-allowed', at, 'may not be specified when `port` is not specified'));
    else if (typeof p.port === 'string') out.push(fieldIssue('not-allowed', at, 'may not be specified when `port` is a named port'));
    else if (p.endPort < p.port) out.push(fieldIssue('invalid-value', at, `must be greater than or equal to \`port\` (${p.endPort} < ${p.port})`));
    if (p.endPort < 1 || p.endPort > 65535) out.push(fieldIssue('invalid-value', at, `${p.endPort} is not a valid port number (1-65535)`));
  }
}

function validatePeer(peer: V1NetworkPolicyPeer, path: Path, out: FieldIssue[]): void {
  let n = 0;
  if (peer.podSelector) {
    n++;
    out.push(...validateSelector(peer.podSelector, [...path, 'podSelector'], K8S_LABEL_MESSAGES));
  }
  if (peer.namespaceSelector) {
    n++;
    out.push(...validateSelector(peer.namespaceSelector, [...path, 'namespaceSelector'], K8S_LABEL_MESSAGES));
  }
  if (peer.ipBlock) {
    n++;
    const f = [...path, 'ipBlock'];
    const c = parseCidr(peer.ipBlock.cidr);
    if (!c) out.push(fieldIssue('invalid-value', [...f, 'cidr'], `${quote(peer.ipBlock.cidr)} is not a valid CIDR`));
    (peer.ipBlock.except ?? []).forEach((e, i) => {
      const x = parseCidr(e);
      if (!x) out.push(fieldIssue('invalid-value', [...f, 'except', i], `${quote(e)} is not a valid CIDR`));
      else if (c && (!cidrCovers(c, x) || x.prefix <= c.prefix))
        out.push(fieldIssue('invalid-value', [...f, 'except', i], `${quote(e)} must be a strict subset of cidr ${quote(peer.ipBlock!.cidr)}`));
    });
  }
  if (n === 0) out.push(fieldIssue('required', path, 'must specify a peer (podSelector, namespaceSelector or ipBlock)'));
  else if (n > 1 && peer.ipBlock) out.push(fieldIssue('not-allowed', path, 'may not specify both ipBlock and another peer'));
}

function validatePolicySpec(spec: V1NetworkPolicySpec, out: FieldIssue[]): void {
  if (spec.podSelector) out.push(...validateSelector(spec.podSelector, ['spec', 'podSelector'], K8S_LABEL_MESSAGES));
  (spec.ingress ?? []).forEach((r, i) => {
    (r.ports ?? []).forEach((p, j) => validatePolicyPort(p, ['spec', 'ingress', i, 'ports', j], out));
    (r._from ?? []).forEach((p, j) => validatePeer(p, ['spec', 'ingress', i, 'from', j], out));
  });
  (spec.egress ?? []).forEach((r, i) => {
    (r.ports ?? []).forEach((p, j) => validatePolicyPort(p, ['spec', 'egress', i, 'ports', j], out));
    (r.to ?? []).forEach((p, j) => validatePeer(p, ['spec', 'egress', i, 'to', j], out));
  });
  const types = spec.policyTypes ?? [];
  if (types.length > 2) out.push(fieldIssue('invalid-value', ['spec', 'policyTypes'], 'may not specify more than two policyTypes'));
  types.forEach((t, i) => {
    if (t !== 'Ingress' && t !== 'Egress')
      out.push(fieldIssue('invalid-value', ['spec', 'policyTypes', i], `unsupported value ${quote(t)}: supported values are "Ingress", "Egress"`));
  });
}

/**
 * The effective policy types: spec.policyTypes, or when omitted, Ingress plus
 * Egress if the policy has at least one egress rule (the API server default).
 */
export function effectivePolicyTypes(spec: V1NetworkPolicySpec): { types: PolicyType[]; defaulted: boolean } {
  if (spec.policyTypes && spec.policyTypes.length > 0) {
    const types: PolicyType[] = [];
    if (spec.policyTypes.includes('Ingress')) types.push('Ingress');
    if (spec.policyTypes.includes('Egress')) types.push('Egress');
    return { types, defaulted: false };
  }
  const types: PolicyType[] = ['Ingress'];
  if ((spec.egress ?? []).length > 0) types.push('Egress');
  return { types, defaulted: true };
}

// ---- building a cluster ------------------------------------------------------

interface Located {
  obj: unknown;
  source: ObjectSource;
}

/** "policies.yaml (document 2, items[3])" */
export function formatSource(s: ObjectSource): string | undefined {
  return formatOrigin(s);
}

function describe(obj: unknown): string {
  if (typeof obj !== 'object' || obj === null) return 'document';
  const o = obj as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
  // names and kinds are the input's: at most an excerpt of them (they may not be valid)
  const cut = (s: string) => quote(s).slice(1, -1);
  const kind = typeof o.kind === 'string' ? o.kind : 'object';
  const name = typeof o.metadata?.name === 'string' ? cut(o.metadata.name) : '<unnamed>';
  if (CLUSTER_SCOPED.has(kind)) return `${kind} ${name}`;
  const ns = typeof o.metadata?.namespace === 'string' ? cut(o.metadata.namespace) : 'default';
  return `${cut(kind)} ${ns}/${name}`;
}

/**
 * Parses one file's text: multi-document YAML, or JSON (one object, or an
 * array of objects). Returns the top-level documents (null documents dropped).
 */
export function parseText(text: string, file?: string): Located[] {
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      const v: unknown = JSON.parse(text);
      if (Array.isArray(v)) return v.map((obj, i) => ({ obj, source: { file, item: i } }));
      return [{ obj: v, source: { file } }];
    } catch {
      // not JSON after all: let the YAML parser report
    }
  }
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const out: Located[] = [];
  const issues: Issue[] = [];
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    const source = { file, document: i + 1 };
    if (doc.errors.length > 0) {
      for (const e of doc.errors)
        issues.push(objectIssue('document', source, { code: 'syntax', path: [], message: `YAML: ${yamlErrorLine(e.message)}${e.linePos ? ` (line ${e.linePos[0].line})` : ''}` }));
      return;
    }
    const obj: unknown = doc.toJS({ maxAliasCount: 1000 });
    if (obj === null || obj === undefined) return;
    out.push({ obj, source: list.length > 1 ? source : { file } });
  });
  if (issues.length > 0) throw new K8sInputError(issues);
  return out;
}

export interface BuildOptions {
  /** error (default) or let the later object replace the earlier one */
  duplicates?: 'error' | 'replace';
  /** largest file read (readCluster), default DEFAULT_INPUT_MAX_BYTES */
  maxBytes?: number;
}

/**
 * Validates and normalises objects into a Cluster. Accepts Namespace, Pod,
 * NetworkPolicy and lists of them (`kind: List` or any `*List` with items);
 * other kinds are ignored with a warning. Throws K8sInputError listing every
 * invalid field.
 */
export function buildCluster(input: Array<unknown | Located>, opts: BuildOptions = {}): Cluster {
  const located: Located[] = input.map((x) =>
    typeof x === 'object' && x !== null && 'obj' in x && 'source' in x ? (x as Located) : { obj: x, source: {} },
  );
  const issues: Issue[] = [];
  const warnings: string[] = [];
  const namespaces = new Map<string, NamespaceInfo>();
  const pods = new Map<string, PodInfo>();
  const policies = new Map<string, PolicyInfo>();
  const serviceAccounts = new Map<string, ServiceAccountInfo>();
  const roles = new Map<string, RoleInfo>();
  const clusterRoles = new Map<string, RoleInfo>();
  const bindings = new Map<string, BindingInfo>();
  const seen = new Map<string, string | undefined>();

  const add = (issue: FieldIssue, obj: unknown, source: ObjectSource) => issues.push(objectIssue(describe(obj), source, issue));

  const visit = ({ obj, source }: Located): void => {
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      add(fieldIssue('not-a-document', [], 'is not a Kubernetes object (expected a mapping with apiVersion and kind)'), obj, source);
      return;
    }
    const o = obj as Record<string, unknown>;
    if (typeof o.kind !== 'string') {
      add(fieldIssue('required', ['kind'], 'required field is missing'), obj, source);
      return;
    }
    if (o.kind === 'List' || (o.kind.endsWith('List') && 'items' in o)) {
      if (!Array.isArray(o.items)) {
        add(fieldIssue('invalid-type', ['items'], 'must be a list'), obj, source);
        return;
      }
      o.items.forEach((item, i) => visit({ obj: item, source: { ...source, item: i } }));
      return;
    }
    const expected = API_VERSIONS[o.kind];
    if (expected === undefined) {
      warnings.push(`${formatSource(source) ? formatSource(source) + ': ' : ''}${describe(obj)}: kind ignored`);
      return;
    }
    if (o.apiVersion !== expected) {
      add(
        o.apiVersion === undefined
          ? fieldIssue('required', ['apiVersion'], `required field is missing (expected ${quote(expected)})`)
          : fieldIssue('invalid-value', ['apiVersion'], `${quote(String(o.apiVersion))} is not supported for ${o.kind} (expected ${quote(expected)})`),
        obj,
        source,
      );
      return;
    }
    const local: FieldIssue[] = [];
    let key: string | undefined;
    if (o.kind === 'Namespace') {
      const r = NamespaceSchema.safeParse(obj);
      if (!r.success) return void zodIssues(r.error).forEach((i) => add(i, obj, source));
      const ns = r.data;
      const e = checkDns1123Label(ns.metadata.name);
      if (e) local.push(fieldIssue('invalid-value', ['metadata', 'name'], e));
      local.push(...validateLabels(ns.metadata.labels, ['metadata', 'labels'], K8S_LABEL_MESSAGES));
      const labels = { ...(ns.metadata.labels ?? {}) };
      if (labels[NAMESPACE_NAME_LABEL] !== undefined && labels[NAMESPACE_NAME_LABEL] !== ns.metadata.name)
        warnings.push(
          `${describe(obj)}: label ${NAMESPACE_NAME_LABEL}=${quote(labels[NAMESPACE_NAME_LABEL])} replaced by ${quote(ns.metadata.name)} (the API server sets it to the namespace name)`,
        );
      labels[NAMESPACE_NAME_LABEL] = ns.metadata.name;
      key = `Namespace ${ns.metadata.name}`;
      if (local.length === 0) namespaces.set(ns.metadata.name, { name: ns.metadata.name, labels, declared: true });
    } else if (o.kind === 'Pod') {
      const r = PodSchema.safeParse(obj);
      if (!r.success) return void zodIssues(r.error).forEach((i) => add(i, obj, source));
      const pod = r.data;
      const namespace = pod.metadata.namespace ?? 'default';
      checkMeta(pod.metadata.name, namespace, local);
      local.push(...validateLabels(pod.metadata.labels, ['metadata', 'labels'], K8S_LABEL_MESSAGES));
      const ports: ContainerPortInfo[] = [];
      const names = new Map<string, string>();
      const visitContainers = (list: z.infer<typeof ContainerSchema>[] | undefined, field: string, sidecarsOnly: boolean) =>
        (list ?? []).forEach((c, ci) => {
          if (sidecarsOnly && c.restartPolicy !== 'Always') return;
          (c.ports ?? []).forEach((p, pi) => {
            const f: Path = ['spec', field, ci, 'ports', pi];
            if (p.containerPort < 1 || p.containerPort > 65535)
              local.push(fieldIssue('invalid-value', [...f, 'containerPort'], `${p.containerPort} is not a valid port number (1-65535)`));
            checkProtocol(p.protocol, [...f, 'protocol'], local);
            if (p.name !== undefined) {
              const e = checkPortName(p.name);
              if (e) local.push(fieldIssue('invalid-value', [...f, 'name'], `invalid port name: ${e}`));
              const prev = names.get(p.name);
              if (prev) local.push(fieldIssue('duplicate', [...f, 'name'], `duplicate port name ${quote(p.name)} (also ${prev})`));
              names.set(p.name, formatPath(f, 'dotted'));
            }
            ports.push({
              container: c.name ?? `#${ci}`,
              ...(p.name !== undefined ? { name: p.name } : {}),
              port: p.containerPort,
              protocol: (p.protocol ?? 'TCP') as K8sProtocol,
            });
          });
        });
      visitContainers(pod.spec?.containers, 'containers', false);
      visitContainers(pod.spec?.initContainers, 'initContainers', true);
      const containers: PodContainerInfo[] = [];
      for (const [list, field] of [
        [pod.spec?.initContainers, 'spec.initContainers'],
        [pod.spec?.containers, 'spec.containers'],
      ] as const) {
        (list ?? []).forEach((c, ci) =>
          containers.push({
            name: c.name ?? `#${ci}`,
            field: `${field}[${ci}]`,
            privileged: c.securityContext?.privileged ?? false,
            capabilities: { add: c.securityContext?.capabilities?.add ?? [], drop: c.securityContext?.capabilities?.drop ?? [] },
          }),
        );
      }
      const ips: string[] = [];
      if (pod.status?.podIP !== undefined && pod.status.podIP !== '') {
        if (!parseIp(pod.status.podIP)) local.push(fieldIssue('invalid-value', ['status', 'podIP'], `${quote(pod.status.podIP)} is not a valid IP address`));
        else ips.push(pod.status.podIP);
      }
      (pod.status?.podIPs ?? []).forEach((p, i) => {
        if (!parseIp(p.ip)) local.push(fieldIssue('invalid-value', ['status', 'podIPs', i, 'ip'], `${quote(p.ip)} is not a valid IP address`));
        else if (!ips.includes(p.ip)) ips.push(p.ip);
      });
      key = `Pod ${namespace}/${pod.metadata.name}`;
      if (local.length === 0)
        pods.set(`${namespace}/${pod.metadata.name}`, {
          key: `${namespace}/${pod.metadata.name}`,
          namespace,
          name: pod.metadata.name,
          labels: { ...(pod.metadata.labels ?? {}) },
          ...(ips[0] !== undefined ? { ip: ips[0] } : {}),
          ips,
          ports,
          hostNetwork: pod.spec?.hostNetwork ?? false,
          hostPID: pod.spec?.hostPID ?? false,
          hostIPC: pod.spec?.hostIPC ?? false,
          serviceAccount: pod.spec?.serviceAccountName ?? pod.spec?.serviceAccount ?? 'default',
          ...(pod.spec?.automountServiceAccountToken !== undefined ? { automountServiceAccountToken: pod.spec.automountServiceAccountToken } : {}),
          containers,
          ...(formatSource(source) ? { source: formatSource(source) } : {}),
        });
    } else if (o.kind === 'ServiceAccount') {
      const r = ServiceAccountSchema.safeParse(obj);
      if (!r.success) return void zodIssues(r.error).forEach((i) => add(i, obj, source));
      const sa = r.data;
      const namespace = sa.metadata.namespace ?? 'default';
      checkMeta(sa.metadata.name, namespace, local);
      key = `ServiceAccount ${namespace}/${sa.metadata.name}`;
      if (local.length === 0)
        serviceAccounts.set(`${namespace}/${sa.metadata.name}`, {
          key: `${namespace}/${sa.metadata.name}`,
          namespace,
          name: sa.metadata.name,
          ...(sa.automountServiceAccountToken !== undefined ? { automountServiceAccountToken: sa.automountServiceAccountToken } : {}),
          ...(formatSource(source) ? { source: formatSource(source) } : {}),
        });
    } else if (o.kind === 'Role' || o.kind === 'ClusterRole') {
      const r = RoleSchema.safeParse(obj);
      if (!r.success) return void zodIssues(r.error).forEach((i) => add(i, obj, source));
      const role = r.data;
      const cluster = role.kind === 'ClusterRole';
      const namespace = cluster ? undefined : (role.metadata.namespace ?? 'default');
      const e = checkRbacName(role.metadata.name);
      if (e) local.push(fieldIssue('invalid-value', ['metadata', 'name'], e));
      if (namespace) {
        const n = checkDns1123Label(namespace);
        if (n) local.push(fieldIssue('invalid-value', ['metadata', 'namespace'], n));
      }
      (role.rules ?? []).forEach((rule, i) => {
        if (rule.verbs.length === 0) local.push(fieldIssue('required', ['rules', i, 'verbs'], 'must list at least one verb'));
        if ((rule.nonResourceURLs ?? []).length > 0 && !cluster)
          local.push(fieldIssue('not-allowed', ['rules', i, 'nonResourceURLs'], 'only a ClusterRole may have nonResourceURLs'));
      });
      const k = namespace ? `${namespace}/${role.metadata.name}` : role.metadata.name;
      key = `${role.kind} ${k}`;
      if (local.length === 0)
        (cluster ? clusterRoles : roles).set(k, {
          kind: role.kind,
          key: k,
          ...(namespace ? { namespace } : {}),
          name: role.metadata.name,
          rules: (role.rules ?? []).map((x) => ({ ...x })) as V1PolicyRule[],
          aggregated: role.aggregationRule !== undefined,
          ...(formatSource(source) ? { source: formatSource(source) } : {}),
        });
    } else if (o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding') {
      const r = BindingSchema.safeParse(obj);
      if (!r.success) return void zodIssues(r.error).forEach((i) => add(i, obj, source));
      const b = r.data;
      const cluster = b.kind === 'ClusterRoleBinding';
      const namespace = cluster ? undefined : (b.metadata.namespace ?? 'default');
      const e = checkRbacName(b.metadata.name);
      if (e) local.push(fieldIssue('invalid-value', ['metadata', 'name'], e));
      if (b.roleRef.apiGroup !== 'rbac.authorization.k8s.io')
        local.push(fieldIssue('invalid-value', ['roleRef', 'apiGroup'], `"${b.roleRef.apiGroup}" is not supported (expected "rbac.authorization.k8s.io")`));
      const refKinds = cluster ? ['ClusterRole'] : ['Role', 'ClusterRole'];
      if (!refKinds.includes(b.roleRef.kind))
        local.push(fieldIssue('invalid-value', ['roleRef', 'kind'], `"${b.roleRef.kind}" is not supported here (expected ${refKinds.map((x) => `"${x}"`).join(' or ')})`));
      (b.subjects ?? []).forEach((sub, i) => {
        if (!['ServiceAccount', 'User', 'Group'].includes(sub.kind))
          local.push(fieldIssue('invalid-value', ['subjects', i, 'kind'], `"${sub.kind}" is not supported (expected "ServiceAccount", "User" or "Group")`));
        if (sub.kind === 'ServiceAccount' && cluster && !sub.namespace)
          local.push(fieldIssue('required', ['subjects', i, 'namespace'], 'required for a ServiceAccount subject of a ClusterRoleBinding'));
      });
      const k = namespace ? `${namespace}/${b.metadata.name}` : b.metadata.name;
      key = `${b.kind} ${k}`;
      if (local.length === 0)
        bindings.set(key, {
          kind: b.kind,
          key: k,
          ...(namespace ? { namespace } : {}),
          name: b.metadata.name,
          roleRef: { apiGroup: b.roleRef.apiGroup, kind: b.roleRef.kind, name: b.roleRef.name },
          subjects: (b.subjects ?? []).map((sub) => ({
            kind: sub.kind,
            name: sub.name,
            ...(sub.kind === 'ServiceAccount' ? { namespace: sub.namespace ?? namespace } : sub.namespace ? { namespace: sub.namespace } : {}),
            ...(sub.apiGroup !== undefined ? { apiGroup: sub.apiGroup } : {}),
          })),
          ...(formatSource(source) ? { source: formatSource(source) } : {}),
        });
    } else {
      let r = STRICT.NetworkPolicy.safeParse(obj);
      if (!r.success) {
        zodIssues(r.error).forEach((i) => add(i, obj, source));
        // unknown fields only: report them, and go on validating the rest
        if (!r.error.issues.every((i) => i.code === 'unrecognized_keys')) return;
        r = LENIENT.NetworkPolicy.safeParse(obj);
        if (!r.success) return;
      }
      const np = r.data;
      const namespace = np.metadata.namespace ?? 'default';
      checkMeta(np.metadata.name, namespace, local);
      const spec = toV1Spec(np.spec ?? {});
      validatePolicySpec(spec, local);
      key = `NetworkPolicy ${namespace}/${np.metadata.name}`;
      if (local.length === 0) {
        const { types, defaulted } = effectivePolicyTypes(spec);
        policies.set(`${namespace}/${np.metadata.name}`, {
          key: `${namespace}/${np.metadata.name}`,
          namespace,
          name: np.metadata.name,
          podSelector: spec.podSelector ?? {},
          policyTypes: types,
          policyTypesDefaulted: defaulted,
          ingress: spec.ingress ?? [],
          egress: spec.egress ?? [],
        });
      }
    }
    for (const i of local) add(i, obj, source);
    if (key !== undefined) {
      if (seen.has(key) && (opts.duplicates ?? 'error') === 'error')
        add(fieldIssue('duplicate', ['metadata', 'name'], `duplicate object (first defined in ${seen.get(key) ?? 'the input'})`), obj, source);
      seen.set(key, formatSource(source));
    }
  };

  for (const l of located) visit(l);
  if (issues.length > 0) throw new K8sInputError(issues);

  // namespaces referenced but not given: the API server would have them with their name label
  const refer = (ns: string, by: string) => {
    if (namespaces.has(ns)) return;
    namespaces.set(ns, { name: ns, labels: { [NAMESPACE_NAME_LABEL]: ns }, declared: false });
    warnings.push(`namespace ${ns} (used by ${by}) has no Namespace object: assuming only the label ${NAMESPACE_NAME_LABEL}=${ns}`);
  };
  for (const p of pods.values()) refer(p.namespace, `Pod ${p.key}`);
  for (const p of policies.values()) refer(p.namespace, `NetworkPolicy ${p.key}`);
  for (const a of serviceAccounts.values()) refer(a.namespace, `ServiceAccount ${a.key}`);

  const sortedPods = [...pods.values()].sort((a, b) =>
    a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace),
  );
  return {
    namespaces,
    pods: sortedPods,
    policies: [...policies.values()],
    serviceAccounts,
    roles,
    clusterRoles,
    bindings: [...bindings.values()],
    warnings,
  };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** RBAC object names are path segments (the API server's ValidateRBACName): "system:controller:x" is valid. */
function checkRbacName(name: string): string | undefined {
  if (name === '' ) return 'must not be empty';
  if (name === '.' || name === '..') return `may not be "${name}"`;
  if (/[/%]/.test(name)) return 'may not contain "/" or "%"';
  return undefined;
}

function checkMeta(name: string, namespace: string, out: FieldIssue[]): void {
  const e = checkDns1123Subdomain(name);
  if (e) out.push(fieldIssue('invalid-value', ['metadata', 'name'], e));
  const n = checkDns1123Label(namespace);
  if (n) out.push(fieldIssue('invalid-value', ['metadata', 'namespace'], n));
}

type ParsedSpec = PolicySpec;

/** zod's output → the client-node types (same JSON names, except `from`, which the client calls `_from`). */
function toV1Spec(s: Partial<ParsedSpec>): V1NetworkPolicySpec {
  const sel = (x: Selector | undefined): V1LabelSelector | undefined =>
    x === undefined
      ? undefined
      : {
          ...(x.matchLabels !== undefined ? { matchLabels: x.matchLabels } : {}),
          ...(x.matchExpressions !== undefined
            ? {
                matchExpressions: x.matchExpressions.map((r) => ({
                  key: r.key,
                  operator: r.operator,
                  ...(r.values !== undefined ? { values: r.values } : {}),
                })),
              }
            : {}),
        };
  const peer = (p: Peer): V1NetworkPolicyPeer => ({
    ...(p.podSelector !== undefined ? { podSelector: sel(p.podSelector)! } : {}),
    ...(p.namespaceSelector !== undefined ? { namespaceSelector: sel(p.namespaceSelector)! } : {}),
    ...(p.ipBlock !== undefined
      ? { ipBlock: { cidr: p.ipBlock.cidr, ...(p.ipBlock.except !== undefined ? { except: p.ipBlock.except } : {}) } }
      : {}),
  });
  const port = (p: PolicyPort): V1NetworkPolicyPort => ({
    ...(p.protocol !== undefined ? { protocol: p.protocol } : {}),
    ...(p.port !== undefined ? { port: p.port } : {}),
    ...(p.endPort !== undefined ? { endPort: p.endPort } : {}),
  });
  return {
    ...(s.podSelector !== undefined ? { podSelector: sel(s.podSelector)! } : {}),
    ...(s.policyTypes !== undefined ? { policyTypes: s.policyTypes } : {}),
    ...(s.ingress !== undefined
      ? {
          ingress: s.ingress.map((r) => ({
            ...((r.from ?? r._from) !== undefined ? { _from: (r.from ?? r._from)!.map(peer) } : {}),
            ...(r.ports !== undefined ? { ports: r.ports.map(port) } : {}),
          })),
        }
      : {}),
    ...(s.egress !== undefined
      ? {
          egress: s.egress.map((r) => ({
            ...(r.to !== undefined ? { to: r.to.map(peer) } : {}),
            ...(r.ports !== undefined ? { ports: r.ports.map(port) } : {}),
          })),
        }
      : {}),
  };
}

/** Parses texts (YAML or JSON) and builds a cluster. */
export function loadCluster(texts: Array<{ text: string; file?: string }>, opts: BuildOptions = {}): Cluster {
  const located: Located[] = [];
  const issues: Issue[] = [];
  for (const t of texts) {
    try {
      located.push(...parseText(t.text, t.file));
    } catch (e) {
      if (e instanceof K8sInputError) issues.push(...e.issues);
      else throw e;
    }
  }
  if (issues.length > 0) throw new K8sInputError(issues);
  return buildCluster(located, opts);
}

/** Reads files and builds a cluster. */
export async function readCluster(paths: string[], opts: BuildOptions = {}): Promise<Cluster> {
  // regular files of a trusted owner, size-limited (an InputFileError says why not)
  const texts = paths.map((file) => ({ text: readInputFile(file, { maxBytes: opts.maxBytes ?? DEFAULT_INPUT_MAX_BYTES }), file }));
  return loadCluster(texts, opts);
}

/** The peers of a rule: `from` of an ingress rule, `to` of an egress rule (undefined when missing). */
export function rulePeers(
  rule: V1NetworkPolicyIngressRule | V1NetworkPolicyEgressRule,
): V1NetworkPolicyPeer[] | undefined {
  return '_from' in rule ? rule._from : 'to' in rule ? (rule as V1NetworkPolicyEgressRule).to : undefined;
}

/** Finds a pod by "ns/name" (or "name" for the default namespace). */
export function findPod(cluster: Cluster, ref: string): PodInfo | undefined {
  const key = ref.includes('/') ? ref : `default/${ref}`;
  return cluster.pods.find((p) => p.key === key);
}

export function isProtocol(p: string): p is K8sProtocol {
  return (K8S_PROTOCOLS as readonly string[]).includes(p);
}
