/**
 * The compiler into Bastion's internal model (src/policy/model.ts): the shape
 * of what it emits, and its meaning. Its meaning is checked by evaluating the
 * compiled rules with the model's semantics and comparing with the direct
 * Kubernetes evaluator: on every upstream e2e scenario, and on random
 * clusters and policies (fast-check).
 *
 * The reference evaluator of the model (src/policy/evaluate.ts) is being
 * written separately; until it lands, `modelAllows` below interprets the
 * model's documented semantics directly (it is deliberately small and
 * independent of the k8s code, except for label-selector matching, whose
 * semantics model.ts defines as the Kubernetes ones).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { V1LabelSelector, V1NetworkPolicyPeer, V1NetworkPolicyPort } from '@kubernetes/client-node';
import type { LabelSelector, PortRange, Rule } from '../../src/policy/model.js';
import {
  compileToPolicySet,
  K8S_POD_MARKER,
  NS_LABEL_PREFIX,
  toPolicySet,
  type CompiledK8s,
} from '../../src/policy/k8s/compile.js';
import { matches as selectorMatches } from '../../src/policy/selector.js';
import { ipInBlock } from '../../src/net/ip.js';
import { computeMatrix, diffMatrices, type Matrix } from '../../src/policy/k8s/matrix.js';
import { buildCluster, K8sInputError, type Cluster, type K8sProtocol } from '../../src/policy/k8s/objects.js';
import { SCENARIOS } from '../fixtures/k8s/e2e-scenarios.js';
import { cluster as e2eCluster } from '../fixtures/k8s/e2e-model.js';

// ---- the model's semantics, directly -----------------------------------------

function portOk(p: PortRange, compiled: CompiledK8s, server: string, port: number, protocol: string): boolean {
  if (p.protocol === 'any') return true;
  if (p.protocol !== protocol) return false;
  if (p.name !== undefined) {
    const np = compiled.namedPorts.get(server)?.[p.name];
    return np !== undefined && np.protocol === p.protocol && np.port === port;
  }
  return port >= p.from && port <= p.to;
}

function ruleAllows(r: Rule, compiled: CompiledK8s, subject: string, peer: string, server: string, port: number, protocol: string): boolean {
  if (!selectorMatches(r.subject as V1LabelSelector, compiled.endpointLabels.get(subject)!)) return false;
  const peerOk = r.peers.some((p) => {
    switch (p.kind) {
      case 'any':
        return true;
      case 'host':
        return false;
      case 'endpoints':
        return selectorMatches(p.selector as V1LabelSelector, compiled.endpointLabels.get(peer)!);
      case 'cidr':
        return (compiled.addresses.get(peer) ?? []).some((ip) => ipInBlock(ip, p.cidr, p.except));
    }
  });
  return peerOk && (r.ports.length === 0 || r.ports.some((p) => portOk(p, compiled, server, port, protocol)));
}

/** Source egress AND destination ingress, both managed endpoints. */
function modelAllows(compiled: CompiledK8s, from: string, to: string, port: number, protocol: string): boolean {
  const rules = toPolicySet(compiled).rules;
  const egress = rules.some((r) => r.direction === 'egress' && ruleAllows(r, compiled, from, to, to, port, protocol));
  const ingress = rules.some((r) => r.direction === 'ingress' && ruleAllows(r, compiled, to, from, to, port, protocol));
  return egress && ingress;
}

function modelMatrix(c: Cluster, port: number, protocol: K8sProtocol): Matrix {
  const compiled = compileToPolicySet(c);
  const pods = c.pods.map((p) => p.key);
  const allowed: Matrix['allowed'] = {};
  for (const f of pods) {
    allowed[f] = {};
    for (const t of pods) if (f !== t) allowed[f][t] = modelAllows(compiled, f, t, port, protocol.toLowerCase());
  }
  return { pods, allowed };
}

// ---- shape -----------------------------------------------------------------------

describe('compileToPolicySet: what it emits', () => {
  const c = buildCluster([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x', labels: { team: 'red' } } },
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'a', namespace: 'x', labels: { app: 'web' } },
      spec: { containers: [{ name: 'c', ports: [{ containerPort: 8080, name: 'http' }, { containerPort: 53, name: 'dns', protocol: 'UDP' }] }] },
      status: { podIP: '10.0.0.1' },
    },
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'b', namespace: 'x', labels: { app: 'db' } }, status: { podIP: '10.0.0.2' } },
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'web', namespace: 'x' },
      spec: {
        podSelector: { matchLabels: { app: 'web' } },
        ingress: [
          {
            from: [
              { podSelector: { matchLabels: { app: 'db' } } },
              { namespaceSelector: { matchLabels: { team: 'blue' } }, podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] } },
              { ipBlock: { cidr: '192.168.1.7/16', except: ['192.168.5.5/24'] } },
            ],
            ports: [{ port: 'http' }, { port: 8000, endPort: 8100, protocol: 'SCTP' }, { protocol: 'UDP' }],
          },
        ],
        egress: [{}],
      },
    },
  ]);
  const compiled = compileToPolicySet(c);

  it('endpoint labels: pod labels, namespace, pod name, prefixed namespace labels', () => {
    assert.deepEqual(compiled.endpointLabels.get('x/a'), {
      app: 'web',
      'bastion.io/namespace': 'x',
      'bastion.io/pod': 'a',
      [`${NS_LABEL_PREFIX}team`]: 'red',
      [K8S_POD_MARKER]: 'x',
    });
    assert.deepEqual(compiled.namedPorts.get('x/a'), { http: { port: 8080, protocol: 'tcp' }, dns: { port: 53, protocol: 'udp' } });
    assert.deepEqual(compiled.addresses.get('x/b'), ['10.0.0.2']);
  });

  it('rules: one per policy rule, selectors translated, ipBlock canonical, ports as ranges', () => {
    const byId = new Map(compiled.rules.map((r) => [r.id, r]));
    const subject: LabelSelector = {
      matchLabels: { app: 'web', 'bastion.io/namespace': 'x' },
      matchExpressions: [{ key: K8S_POD_MARKER, operator: 'Exists' }],
    };
    assert.deepEqual(byId.get('x/web#ingress[0]'), {
      id: 'x/web#ingress[0]',
      subject,
      direction: 'ingress',
      peers: [
        { kind: 'endpoints', selector: { matchLabels: { app: 'db', 'bastion.io/namespace': 'x' }, matchExpressions: [{ key: K8S_POD_MARKER, operator: 'Exists' }] } },
        {
          kind: 'endpoints',
          selector: {
            matchLabels: { [`${NS_LABEL_PREFIX}team`]: 'blue' },
            matchExpressions: [{ key: 'app', operator: 'Exists' }, { key: K8S_POD_MARKER, operator: 'Exists' }],
          },
        },
        { kind: 'cidr', cidr: '192.168.0.0/16', except: ['192.168.5.0/24'] },
      ],
      ports: [
        { protocol: 'tcp', from: 0, to: 0, name: 'http' },
        { protocol: 'sctp', from: 8000, to: 8100 },
        { protocol: 'udp', from: 0, to: 65535 },
      ],
    });
    assert.deepEqual(byId.get('x/web#egress[0]')?.peers, [{ kind: 'any' }]);
    assert.deepEqual(byId.get('x/web#egress[0]')?.ports, []);
  });

  it('a pod no policy selects for a direction gets an allow-all rule for it', () => {
    const ids = compiled.rules.map((r) => r.id).sort();
    // x/web selects x/a for both directions (policyTypes default to Ingress+Egress: it has an egress rule)
    assert.deepEqual(ids, ['x/b#egress:not-isolated', 'x/b#ingress:not-isolated', 'x/web#egress[0]', 'x/web#ingress[0]']);
    assert.deepEqual(compiled.rules.find((r) => r.id === 'x/b#ingress:not-isolated'), {
      id: 'x/b#ingress:not-isolated',
      subject: { matchLabels: { 'bastion.io/namespace': 'x', 'bastion.io/pod': 'b' }, matchExpressions: [{ key: K8S_POD_MARKER, operator: 'Exists' }] },
      direction: 'ingress',
      peers: [{ kind: 'any' }],
      ports: [],
    });
  });

  it('refuses pod labels under bastion.io/', () => {
    const bad = buildCluster([{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'x', labels: { 'bastion.io/namespace': 'y' } } }]);
    assert.throws(() => compileToPolicySet(bad), (e: unknown) => e instanceof K8sInputError && /metadata.labels\[bastion.io\/namespace\]: label keys under "bastion.io\/" are reserved/.test(e.message));
  });
});

// ---- meaning -----------------------------------------------------------------------

describe('compiled rules mean what the engine means', () => {
  for (const s of SCENARIOS) {
    it(`e2e: ${s.name}`, () => {
      for (const step of s.steps) {
        const c = e2eCluster(step.policies, step.model);
        for (const check of step.checks) {
          const diff = diffMatrices(check.expect.toMatrix(), modelMatrix(c, check.port, check.protocol));
          assert.deepEqual(diff, [], `${check.protocol}/${check.port}`);
        }
      }
    });
  }

  it('selectors on keys Bastion reserves match no pod, as in Kubernetes', () => {
    const sels: V1LabelSelector[] = [];
    for (const key of ['bastion.io/namespace', 'bastion.io/pod', 'bastion.io/ns-label'])
      for (const value of ['x', 'pod0'])
        sels.push(
          { matchLabels: { [key]: value } },
          { matchExpressions: [{ key, operator: 'In', values: [value] }] },
          { matchExpressions: [{ key, operator: 'NotIn', values: [value] }] },
          { matchExpressions: [{ key, operator: 'Exists' }] },
          { matchExpressions: [{ key, operator: 'DoesNotExist' }] },
        );
    for (const sel of sels)
      for (const where of ['subject', 'peer'] as const) {
        const spec =
          where === 'subject'
            ? { podSelector: sel, policyTypes: ['Ingress'] }
            : { podSelector: {}, ingress: [{ _from: [{ podSelector: sel }] }] };
        const c = buildCluster([
          { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'pod0', namespace: 'x' }, status: { podIP: '10.0.0.1' } },
          { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'pod1', namespace: 'x' }, status: { podIP: '10.0.0.2' } },
          { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'x' }, spec },
        ]);
        assert.deepEqual(diffMatrices(computeMatrix(c, 80, 'TCP'), modelMatrix(c, 80, 'TCP')), [], `${where} ${JSON.stringify(sel)}`);
      }
  });

  it('random clusters and policies: matrix of the engine = matrix of the compiled rules', () => {
    fc.assert(
      fc.property(arbCluster, fc.constantFrom(53, 80, 81, 82, 8080), fc.constantFrom<K8sProtocol>('TCP', 'UDP', 'SCTP'), (objs, port, protocol) => {
        const c = buildCluster(objs);
        const engine = computeMatrix(c, port, protocol);
        const model = modelMatrix(c, port, protocol);
        assert.deepEqual(diffMatrices(engine, model), []);
      }),
      { numRuns: 1000 },
    );
  });
});

// ---- generators ----------------------------------------------------------------------

const NS = ['x', 'y', 'z'];
const POD_KEYS = ['app', 'tier'];
const POD_VALUES = ['a', 'b', 'web'];
const NS_KEYS = ['team', 'kubernetes.io/metadata.name'];
const NS_VALUES = ['red', 'blue', 'x', 'y'];

const arbSelector = (keys: string[], values: string[]): fc.Arbitrary<V1LabelSelector> =>
  fc.record(
    {
      matchLabels: fc.dictionary(fc.constantFrom(...keys), fc.constantFrom(...values), { maxKeys: 2 }),
      matchExpressions: fc.array(
        fc.oneof(
          fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('In', 'NotIn'), values: fc.uniqueArray(fc.constantFrom(...values), { minLength: 1, maxLength: 2 }) }),
          fc.record({ key: fc.constantFrom(...keys), operator: fc.constantFrom('Exists', 'DoesNotExist') }),
        ),
        { maxLength: 2 },
      ),
    },
    { requiredKeys: [] },
  );

const arbPeer: fc.Arbitrary<V1NetworkPolicyPeer> = fc.oneof(
  // reserved keys are on no pod: the compiler must decide them itself
  fc.record({ podSelector: arbSelector([...POD_KEYS, 'bastion.io/namespace'], [...POD_VALUES, 'x']) }),
  // selectors on the keys Bastion reserves: on no pod, so decided by the compiler itself
  fc
    .tuple(
      fc.constantFrom('bastion.io/namespace', 'bastion.io/pod'),
      fc.constantFrom('In', 'NotIn', 'Exists', 'DoesNotExist', 'matchLabels'),
      fc.constantFrom('x', 'pod0', 'pod1'),
    )
    .map(([key, op, value]): V1NetworkPolicyPeer => ({
      podSelector:
        op === 'matchLabels'
          ? { matchLabels: { [key]: value } }
          : { matchExpressions: [{ key, operator: op, ...(op === 'In' || op === 'NotIn' ? { values: [value] } : {}) }] },
    })),
  fc.record({ namespaceSelector: arbSelector(NS_KEYS, NS_VALUES) }),
  fc.record({ podSelector: arbSelector(POD_KEYS, POD_VALUES), namespaceSelector: arbSelector(NS_KEYS, NS_VALUES) }),
  fc.constantFrom<V1NetworkPolicyPeer>(
    { ipBlock: { cidr: '10.0.0.0/8' } },
    { ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.1.0/24'] } },
    { ipBlock: { cidr: '10.0.1.3/24' } },
    { ipBlock: { cidr: '10.0.2.1/32' } },
    { ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/23', '10.0.3.0/24'] } },
  ),
);

const arbPort: fc.Arbitrary<V1NetworkPolicyPort> = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.constantFrom(53, 80, 81, 8080) }, { requiredKeys: ['port'] }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }),
  fc.record({ port: fc.constantFrom(53, 80), endPort: fc.constantFrom(81, 8080), protocol: fc.constantFrom('TCP', 'UDP') }, { requiredKeys: ['port', 'endPort'] }),
  fc.record({ port: fc.constantFrom('http', 'dns', 'metrics'), protocol: fc.constantFrom('TCP', 'UDP') }, { requiredKeys: ['port'] }),
);

const arbIngressRule = fc.record({ _from: fc.array(arbPeer, { maxLength: 3 }), ports: fc.array(arbPort, { maxLength: 3 }) }, { requiredKeys: [] });
const arbEgressRule = fc.record({ to: fc.array(arbPeer, { maxLength: 3 }), ports: fc.array(arbPort, { maxLength: 3 }) }, { requiredKeys: [] });

const arbPolicy = (i: number) =>
  fc.record(
    {
      namespace: fc.constantFrom(...NS),
      podSelector: arbSelector([...POD_KEYS, 'bastion.io/pod'], POD_VALUES),
      policyTypes: fc.option(fc.constantFrom(['Ingress'], ['Egress'], ['Ingress', 'Egress']), { nil: undefined }),
      ingress: fc.option(fc.array(arbIngressRule, { maxLength: 2 }), { nil: undefined }),
      egress: fc.option(fc.array(arbEgressRule, { maxLength: 2 }), { nil: undefined }),
    },
    { requiredKeys: ['namespace', 'podSelector'] },
  ).map(({ namespace, ...spec }) => ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: `p${i}`, namespace },
    spec,
  }));

const NAMED = [
  { name: 'http', containerPort: 80, protocol: 'TCP' },
  { name: 'http', containerPort: 8080, protocol: 'TCP' },
  { name: 'dns', containerPort: 53, protocol: 'UDP' },
  { name: 'dns', containerPort: 53, protocol: 'TCP' },
  { name: 'metrics', containerPort: 81, protocol: 'SCTP' },
];

const arbPod = (i: number) =>
  fc
    .record({
      namespace: fc.constantFrom(...NS),
      labels: fc.dictionary(fc.constantFrom(...POD_KEYS), fc.constantFrom(...POD_VALUES), { maxKeys: 2 }),
      ports: fc.uniqueArray(fc.constantFrom(...NAMED), { maxLength: 3, selector: (p) => p.name }),
      hasIP: fc.boolean(),
    })
    .map(({ namespace, labels, ports, hasIP }) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `pod${i}`, namespace, labels },
      spec: { containers: [{ name: 'c', ports }] },
      // pods spread over 10.0.0.0/24 .. 10.0.3.0/24; a few without IP
      ...(hasIP || i % 3 !== 2 ? { status: { podIP: `10.0.${i % 4}.${i + 1}` } } : {}),
    }));

const arbCluster: fc.Arbitrary<unknown[]> = fc
  .record({
    nsLabels: fc.array(fc.dictionary(fc.constantFrom('team', 'env'), fc.constantFrom('red', 'blue', 'prod'), { maxKeys: 2 }), { minLength: 3, maxLength: 3 }),
    nPods: fc.integer({ min: 1, max: 6 }),
    nPolicies: fc.integer({ min: 0, max: 4 }),
    declareNs: fc.boolean(),
  })
  .chain(({ nsLabels, nPods, nPolicies, declareNs }) =>
    fc
      .tuple(fc.tuple(...Array.from({ length: nPods }, (_, i) => arbPod(i))), fc.tuple(...Array.from({ length: nPolicies }, (_, i) => arbPolicy(i))))
      .map(([pods, policies]) => [
        ...(declareNs ? NS.map((name, i) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: nsLabels[i] } })) : []),
        ...pods,
        ...policies,
      ]),
  );
