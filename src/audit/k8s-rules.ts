/**
 * The Kubernetes checks, as pure functions over the objects `bastion k8s`
 * reads (src/policy/k8s/objects.ts: Namespaces, Pods, NetworkPolicies,
 * ServiceAccounts, Roles, ClusterRoles and their bindings).
 */
import type { RbacV1Subject, V1PolicyRule } from '@kubernetes/client-node';
import type { BindingInfo, Cluster, PodInfo, RoleInfo } from '../policy/k8s/objects.js';
import { formatSelector, isEmptySelector, matches } from '../policy/selector.js';
import type { AuditObject, Evidence, Finding, Skipped } from './findings.js';
import { DANGEROUS_CAPABILITIES, finding } from './rules.js';

/**
 * Built-in ClusterRoles a binding may name without the input holding them:
 * the rules of each that the checks look at (upstream's bootstrap policy;
 * admin and edit aggregate more, but not less).
 */
export const BUILTIN_CLUSTER_ROLES: ReadonlyMap<string, V1PolicyRule[]> = new Map([
  [
    'cluster-admin',
    [
      { apiGroups: ['*'], resources: ['*'], verbs: ['*'] },
      { nonResourceURLs: ['*'], verbs: ['*'] },
    ],
  ],
  ...(['admin', 'edit'] as const).map((name): [string, V1PolicyRule[]] => [
    name,
    [
      { apiGroups: [''], resources: ['secrets'], verbs: ['create', 'delete', 'deletecollection', 'patch', 'update', 'get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['pods/attach', 'pods/exec', 'pods/portforward', 'pods/proxy'], verbs: ['create', 'delete', 'deletecollection', 'patch', 'update', 'get', 'list', 'watch'] },
      { apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['create', 'delete', 'deletecollection', 'patch', 'update', 'get', 'list', 'watch'] },
    ],
  ]),
  ['view', [{ apiGroups: [''], resources: ['pods', 'services', 'configmaps'], verbs: ['get', 'list', 'watch'] }]],
]);

const capName = (c: string) => c.toUpperCase().replace(/^CAP_/, '');

function podObject(p: PodInfo): AuditObject {
  return { kind: 'pod', name: p.key, ...(p.source ? { file: p.source } : {}) };
}

export function auditKubernetes(c: Cluster): { findings: Finding[]; skipped: Skipped[] } {
  const out: Finding[] = [];
  const skipped: Skipped[] = [];

  // ---- namespaces and NetworkPolicies
  const policiesByNs = new Map<string, Cluster['policies']>();
  for (const p of c.policies) (policiesByNs.get(p.namespace) ?? policiesByNs.set(p.namespace, []).get(p.namespace)!).push(p);
  const podsByNs = new Map<string, PodInfo[]>();
  for (const p of c.pods) (podsByNs.get(p.namespace) ?? podsByNs.set(p.namespace, []).get(p.namespace)!).push(p);
  for (const ns of [...c.namespaces.keys()].sort()) {
    const pols = policiesByNs.get(ns) ?? [];
    const obj: AuditObject = { kind: 'namespace', name: ns };
    if (pols.length === 0) {
      out.push(finding('k8s.namespace.no-networkpolicy', obj, [{ field: 'NetworkPolicies', value: `none in namespace ${ns} (${(podsByNs.get(ns) ?? []).length} pods)` }]));
      continue;
    }
    const missing = (['Ingress', 'Egress'] as const).filter(
      (d) =>
        !pols.some((p) => {
          return isEmptySelector(p.podSelector) && p.policyTypes.includes(d) && (d === 'Ingress' ? p.ingress : p.egress).length === 0;
        }),
    );
    if (missing.length) {
      out.push(
        finding('k8s.namespace.no-default-deny', obj, [
          { field: 'default deny missing for', value: missing.join(', ') },
          { field: 'NetworkPolicies', value: pols.map((p) => p.name).join(', ') },
        ]),
      );
    }
  }

  // ---- pods
  for (const pod of c.pods) {
    const obj = podObject(pod);
    const pols = policiesByNs.get(pod.namespace) ?? [];
    if (pols.length > 0 && !pod.hostNetwork) {
      const ingress = pols.filter((p) => p.policyTypes.includes('Ingress'));
      if (!ingress.some((p) => matches(p.podSelector, pod.labels))) {
        out.push(
          finding('k8s.pod.not-selected', obj, [
            { field: 'metadata.labels', value: JSON.stringify(pod.labels) },
            { field: 'Ingress policies of the namespace', value: ingress.map((p) => `${p.name} (${formatSelector(p.podSelector)})`).join(', ') || '(none)' },
          ]),
        );
      }
    }
    if (pod.hostNetwork) out.push(finding('k8s.pod.host-network', obj, [{ field: 'spec.hostNetwork', value: 'true' }]));
    if (pod.hostPID) out.push(finding('k8s.pod.host-pid', obj, [{ field: 'spec.hostPID', value: 'true' }]));
    if (pod.hostIPC) out.push(finding('k8s.pod.host-ipc', obj, [{ field: 'spec.hostIPC', value: 'true' }]));
    for (const ct of pod.containers) {
      if (ct.privileged) {
        out.push(finding('k8s.pod.privileged', obj, [{ field: `${ct.field}.securityContext.privileged`, value: `true (container ${ct.name})` }]));
        continue;
      }
      const add = ct.capabilities.add.map(capName);
      const drop = ct.capabilities.drop.map(capName);
      if (add.includes('NET_RAW') || add.includes('ALL') || !(drop.includes('ALL') || drop.includes('NET_RAW'))) {
        out.push(
          finding('k8s.pod.net-raw', obj, [
            { field: `${ct.field}.securityContext.capabilities.drop`, value: `${JSON.stringify(ct.capabilities.drop)} (container ${ct.name})` },
            ...(ct.capabilities.add.length ? [{ field: `${ct.field}.securityContext.capabilities.add`, value: JSON.stringify(ct.capabilities.add) }] : []),
          ]),
        );
      }
      const dangerous = DANGEROUS_CAPABILITIES.filter((d) => add.includes(d.cap)).map((d) => d.cap);
      if (dangerous.length) {
        out.push(
          finding('k8s.pod.dangerous-capability', obj, [
            { field: `${ct.field}.securityContext.capabilities.add`, value: `${JSON.stringify(ct.capabilities.add)} (container ${ct.name})` },
            ...dangerous.map((d) => ({ field: d, value: DANGEROUS_CAPABILITIES.find((x) => x.cap === d)!.gain })),
          ]),
        );
      }
    }
  }

  // ---- service accounts: tokens and RBAC
  const workloadAccounts = new Map<string, PodInfo[]>();
  for (const p of c.pods) {
    const k = `${p.namespace}/${p.serviceAccount}`;
    (workloadAccounts.get(k) ?? workloadAccounts.set(k, []).get(k)!).push(p);
  }
  const bound = new Set<string>();
  for (const b of c.bindings) for (const a of accountsOf(b, workloadAccounts.keys())) bound.add(a);
  for (const pod of c.pods) {
    const k = `${pod.namespace}/${pod.serviceAccount}`;
    const sa = c.serviceAccounts.get(k);
    const automount = pod.automountServiceAccountToken ?? sa?.automountServiceAccountToken ?? true;
    if (!automount || bound.has(k)) continue;
    out.push(
      finding('k8s.pod.token-automount', podObject(pod), [
        {
          field: 'automountServiceAccountToken',
          value:
            pod.automountServiceAccountToken !== undefined
              ? 'true (spec.automountServiceAccountToken)'
              : sa?.automountServiceAccountToken !== undefined
                ? `true (ServiceAccount ${k})`
                : `unset on the pod and on ServiceAccount ${k} (default true)`,
        },
        { field: 'spec.serviceAccountName', value: `${pod.serviceAccount}: no RoleBinding or ClusterRoleBinding in the input names it` },
      ]),
    );
  }

  for (const b of c.bindings) {
    const accounts = [...accountsOf(b, workloadAccounts.keys())];
    if (accounts.length === 0) continue;
    const obj: AuditObject = { kind: b.kind === 'RoleBinding' ? 'role-binding' : 'cluster-role-binding', name: b.key, ...(b.source ? { file: b.source } : {}) };
    const who: Evidence = {
      field: 'subjects (workload service accounts)',
      value: accounts.map((a) => `${a} (pods ${workloadAccounts.get(a)!.map((p) => p.name).join(', ')})`).join('; '),
    };
    const ref: Evidence = { field: 'roleRef', value: `${b.roleRef.kind} ${b.roleRef.name}` };
    if (b.roleRef.kind === 'ClusterRole' && b.roleRef.name === 'cluster-admin') {
      out.push(finding('k8s.rbac.cluster-admin', obj, [ref, who]));
      continue;
    }
    const role = resolveRole(c, b);
    if (!role) {
      skipped.push({ check: `RBAC of ${b.kind} ${b.key}`, reason: `its ${b.roleRef.kind} ${b.roleRef.name} is not in the input (give it with --k8s to check what it grants)` });
      continue;
    }
    if (role.aggregated) skipped.push({ check: `RBAC of ${b.kind} ${b.key}`, reason: `ClusterRole ${role.name} is aggregated: only the rules written in the input were checked` });
    const roleEv: Evidence = { field: 'role', value: role.builtin ? `built-in ClusterRole ${role.name}` : `${role.kind} ${role.key}` };
    const checks: Array<[string, (r: V1PolicyRule) => boolean]> = [
      ['k8s.rbac.wildcard', (r) => [r.verbs, r.resources ?? [], r.apiGroups ?? []].some((l) => l.includes('*'))],
      ['k8s.rbac.secrets-read', (r) => grants(r, '', ['secrets'], ['get', 'list', 'watch'])],
      ['k8s.rbac.pods-exec', (r) => grants(r, '', ['pods/exec', 'pods/attach'], ['create', 'get'])],
      ['k8s.rbac.networkpolicy-write', (r) => grants(r, 'networking.k8s.io', ['networkpolicies'], ['create', 'update', 'patch', 'delete', 'deletecollection'])],
    ];
    for (const [id, test] of checks) {
      const hits = role.rules.map((r, i) => [r, i] as const).filter(([r]) => test(r));
      if (hits.length === 0) continue;
      out.push(finding(id, obj, [ref, roleEv, ...hits.map(([r, i]) => ({ field: `rules[${i}]`, value: ruleText(r) })), who]));
    }
  }
  return { findings: out, skipped };
}

/** The workload service accounts ("ns/name") among a binding's subjects, groups of service accounts included. */
function* accountsOf(b: BindingInfo, accounts: Iterable<string>): Generator<string> {
  const all = [...accounts];
  const hit = new Set<string>();
  for (const s of b.subjects as RbacV1Subject[]) {
    if (s.kind === 'ServiceAccount') {
      const k = `${s.namespace ?? b.namespace ?? 'default'}/${s.name}`;
      if (all.includes(k)) hit.add(k);
    } else if (s.kind === 'Group' && s.name === 'system:serviceaccounts') {
      for (const a of all) hit.add(a);
    } else if (s.kind === 'Group' && s.name.startsWith('system:serviceaccounts:')) {
      const ns = s.name.slice('system:serviceaccounts:'.length);
      for (const a of all) if (a.startsWith(`${ns}/`)) hit.add(a);
    }
  }
  yield* [...hit].sort();
}

function resolveRole(c: Cluster, b: BindingInfo): (Pick<RoleInfo, 'kind' | 'key' | 'name' | 'rules' | 'aggregated'> & { builtin?: boolean }) | undefined {
  if (b.roleRef.kind === 'Role') return c.roles.get(`${b.namespace}/${b.roleRef.name}`);
  const r = c.clusterRoles.get(b.roleRef.name);
  if (r) return r;
  const builtin = BUILTIN_CLUSTER_ROLES.get(b.roleRef.name);
  return builtin ? { kind: 'ClusterRole', key: b.roleRef.name, name: b.roleRef.name, rules: builtin, aggregated: false, builtin: true } : undefined;
}

/** Does a rule grant one of `verbs` on one of `resources` of API group `group`? */
export function grants(r: V1PolicyRule, group: string, resources: string[], verbs: string[]): boolean {
  const groups = r.apiGroups ?? [];
  const res = r.resources ?? [];
  return (
    (groups.includes('*') || groups.includes(group)) &&
    resources.some((x) => res.includes('*') || res.includes(x) || (x.includes('/') && res.includes(`${x.split('/')[0]}/*`))) &&
    (r.verbs.includes('*') || verbs.some((v) => r.verbs.includes(v)))
  );
}

function ruleText(r: V1PolicyRule): string {
  const parts = [
    `apiGroups ${JSON.stringify(r.apiGroups ?? [])}`,
    `resources ${JSON.stringify(r.resources ?? [])}`,
    `verbs ${JSON.stringify(r.verbs)}`,
  ];
  if (r.resourceNames?.length) parts.push(`only resourceNames ${JSON.stringify(r.resourceNames)}`);
  return parts.join(', ');
}
