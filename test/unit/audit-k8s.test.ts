/**
 * The Kubernetes checks on fixtures: k8s-risky.yaml has each problem,
 * k8s-clean.yaml is the same cluster with every fix applied and must have no
 * finding. Plus the cases around the edges (service account groups, built-in
 * roles, roles not in the input), and the CLI end to end.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCluster, loadCluster } from '../../src/policy/k8s/objects.js';
import { auditKubernetes } from '../../src/audit/k8s-rules.js';
import { RULES } from '../../src/audit/rules.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const RISKY = 'test/fixtures/audit/k8s-risky.yaml';
const CLEAN = 'test/fixtures/audit/k8s-clean.yaml';

const EXPECTED: Array<[string, string]> = [
  ['k8s.namespace.no-networkpolicy', 'legacy'],
  ['k8s.namespace.no-default-deny', 'shop'],
  ['k8s.pod.not-selected', 'shop/deployer'],
  ['k8s.pod.not-selected', 'shop/web'],
  ['k8s.pod.host-network', 'legacy/agent'],
  ['k8s.pod.host-pid', 'legacy/agent'],
  ['k8s.pod.host-ipc', 'legacy/agent'],
  ['k8s.pod.privileged', 'legacy/agent'],
  ['k8s.pod.net-raw', 'shop/web'],
  ['k8s.pod.net-raw', 'shop/api'],
  ['k8s.pod.dangerous-capability', 'shop/deployer'],
  ['k8s.pod.token-automount', 'shop/web'],
  ['k8s.rbac.cluster-admin', 'deployer-admin'],
  ['k8s.rbac.wildcard', 'shop/reader-too-much'],
  ['k8s.rbac.secrets-read', 'shop/reader-too-much'],
  ['k8s.rbac.pods-exec', 'shop/reader-too-much'],
  ['k8s.rbac.networkpolicy-write', 'shop/reader-too-much'],
];

describe('audit: Kubernetes objects', () => {
  it('every Kubernetes rule has a case in the fixture', () => {
    const k8sRules = [...RULES.values()].filter((r) => r.scope === 'kubernetes').map((r) => r.id).sort();
    assert.deepEqual([...new Set(EXPECTED.map(([id]) => id))].sort(), k8sRules);
  });

  it('k8s-risky.yaml raises exactly the expected findings', async () => {
    const { findings } = auditKubernetes(await readCluster([RISKY]));
    assert.deepEqual(
      findings.map((f) => `${f.id} ${f.object.name}`).sort(),
      EXPECTED.map(([id, o]) => `${id} ${o}`).sort(),
    );
    for (const f of findings) {
      assert.ok(f.evidence.length > 0 && f.gain && f.fix, f.id);
      if (f.object.kind === 'pod' || f.object.kind.endsWith('binding')) assert.match(f.object.file ?? '', /k8s-risky\.yaml \(document \d+\)/);
    }
  });

  it('k8s-clean.yaml (every fix applied) has none', async () => {
    const r = auditKubernetes(await readCluster([CLEAN]));
    assert.deepEqual(r.findings, []);
    assert.deepEqual(r.skipped, []);
  });

  it('evidence names the field and value', async () => {
    const { findings } = auditKubernetes(await readCluster([RISKY]));
    const get = (id: string, o: string) => findings.find((f) => f.id === id && f.object.name === o)!;
    assert.deepEqual(get('k8s.namespace.no-default-deny', 'shop').evidence[0], { field: 'default deny missing for', value: 'Ingress, Egress' });
    assert.match(get('k8s.pod.net-raw', 'shop/api').evidence[0]!.field, /^spec\.initContainers\[0\]\.securityContext/);
    assert.deepEqual(get('k8s.pod.privileged', 'legacy/agent').evidence[0], { field: 'spec.containers[0].securityContext.privileged', value: 'true (container agent)' });
    assert.match(get('k8s.rbac.secrets-read', 'shop/reader-too-much').evidence.map((e) => `${e.field}=${e.value}`).join('\n'), /rules\[0\]=apiGroups \[""\], resources \["secrets"\], verbs \["get"\]/);
    assert.equal(get('k8s.pod.privileged', 'legacy/agent').cis, 'CIS Kubernetes Benchmark v1.9.0 5.2.2');
  });

  it('a binding to the group of every service account of a namespace counts; a role missing from the input is reported as not checked', () => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'a' }, spec: { automountServiceAccountToken: false, containers: [{ name: 'c', securityContext: { capabilities: { drop: ['ALL'] } } }] } };
    const np = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'a' }, spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] } };
    const binding = (roleRef: object, group: string) => ({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'b', namespace: 'a' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', ...roleRef },
      subjects: [{ kind: 'Group', name: group, apiGroup: 'rbac.authorization.k8s.io' }],
    });
    const edit = auditKubernetes(loadCluster([{ text: JSON.stringify([pod, np, binding({ kind: 'ClusterRole', name: 'edit' }, 'system:serviceaccounts:a')]) }]));
    assert.deepEqual(edit.findings.map((f) => f.id).sort(), ['k8s.rbac.networkpolicy-write', 'k8s.rbac.pods-exec', 'k8s.rbac.secrets-read']);
    const otherNs = auditKubernetes(loadCluster([{ text: JSON.stringify([pod, np, binding({ kind: 'ClusterRole', name: 'edit' }, 'system:serviceaccounts:b')]) }]));
    assert.deepEqual(otherNs.findings, []);
    const missing = auditKubernetes(loadCluster([{ text: JSON.stringify([pod, np, binding({ kind: 'Role', name: 'nowhere' }, 'system:serviceaccounts')]) }]));
    assert.deepEqual(missing.findings, []);
    assert.match(missing.skipped[0]!.reason, /Role nowhere is not in the input/);
  });

  it('invalid RBAC objects are rejected naming the file, object and field', () => {
    assert.throws(
      () => loadCluster([{ file: 'rbac.yaml', text: 'apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: { name: x }\nroleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: r }\nsubjects: [ { kind: ServiceAccount, name: s } ]\n' }]),
      (e: Error) => /rbac\.yaml: ClusterRoleBinding x: roleRef\.kind: "Role" is not supported here/.test(e.message) && /subjects\[0\]\.namespace: required/.test(e.message),
    );
  });
});

describe('bastion audit --k8s (the CLI)', () => {
  const bastion = (...args: string[]) => spawnSync(process.execPath, [path.join(root, 'dist/src/cli/main.js'), 'audit', ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });

  it('-o json: the findings; --fail-on decides the exit code', () => {
    const r = bastion('--k8s', RISKY, '-o', 'json');
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { findings: Array<{ id: string }>; summary: Record<string, number>; sources: string[] };
    assert.equal(report.findings.length, EXPECTED.length);
    assert.deepEqual(report.sources, ['kubernetes']);
    assert.equal(bastion('--k8s', RISKY, '--fail-on', 'critical', '-o', 'json').status, 1);
    assert.equal(bastion('--k8s', CLEAN, '--fail-on', 'info').status, 0);
  });

  it('the table names each finding with its evidence and fix', () => {
    const r = bastion('--k8s', RISKY);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^17 findings: 2 critical, 8 high, 6 medium, 1 low, 0 info \(kubernetes\)/);
    assert.match(r.stdout, /CRITICAL k8s\.pod\.privileged  pod legacy\/agent \[test\/fixtures\/audit\/k8s-risky\.yaml \(document \d+\)\]/);
    assert.match(r.stdout, /  fix       remove securityContext\.privileged/);
  });

  it('usage errors exit 2, invalid input 3', () => {
    assert.equal(bastion('--k8s', RISKY, '--fail-on', 'severe').status, 2);
    assert.equal(bastion('--k8s', RISKY, '-o', 'xml').status, 2);
    const bad = bastion('--k8s', 'test/fixtures/k8s/invalid-policies.yaml');
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /invalid-policies\.yaml/);
  });
});
