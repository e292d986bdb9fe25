/**
 * The evaluator's semantic rules one by one, on small hand-made clusters, and
 * the verdict details `explain` is built from.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { V1NetworkPolicySpec } from '@kubernetes/client-node';
import { buildCluster, type Cluster } from '../../src/policy/k8s/objects.js';
import { evaluateConnection, UnknownPodError } from '../../src/policy/k8s/engine.js';
import { explain, formatExplanation } from '../../src/policy/k8s/explain.js';
import { computeMatrix, formatMatrix, Reachability } from '../../src/policy/k8s/matrix.js';

const ns = (name: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels },
});
const pod = (
  namespace: string,
  name: string,
  ip: string | undefined,
  labels: Record<string, string> = {},
  ports: Array<{ containerPort: number; name?: string; protocol?: string }> = [],
) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels },
  spec: { containers: [{ name: 'main', ports }] },
  ...(ip ? { status: { podIP: ip } } : {}),
});
const np = (namespace: string, name: string, spec: V1NetworkPolicySpec) => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name, namespace },
  spec,
});

/** ns a (team=red): client (app=client), server (app=server, http=8080/TCP, dns=53/UDP); ns b (team=blue): other (app=client) */
function base(...policies: unknown[]): Cluster {
  return buildCluster([
    ns('a', { team: 'red' }),
    ns('b', { team: 'blue' }),
    pod('a', 'client', '10.0.0.1', { app: 'client' }),
    pod('a', 'server', '10.0.0.2', { app: 'server' }, [
      { containerPort: 8080, name: 'http' },
      { containerPort: 53, name: 'dns', protocol: 'UDP' },
    ]),
    pod('b', 'other', '10.1.0.1', { app: 'client' }, [{ containerPort: 9090, name: 'http' }]),
    ...policies,
  ]);
}

const ok = (c: Cluster, from: string, to: string, port: number | string, protocol: 'TCP' | 'UDP' | 'SCTP' = 'TCP') =>
  evaluateConnection(c, from, to, port, protocol).allowed;

describe('isolation', () => {
  it('no policy: everything is allowed', () => {
    const c = base();
    assert.ok(ok(c, 'a/client', 'a/server', 1));
    assert.ok(ok(c, 'b/other', 'a/server', 65535, 'SCTP'));
  });

  it('a pod is isolated for ingress only if a policy selects it for ingress, likewise for egress', () => {
    const c = base(np('a', 'deny-in', { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'] }));
    const v = evaluateConnection(c, 'a/client', 'a/server', 8080, 'TCP');
    assert.equal(v.allowed, false);
    assert.equal(v.egress.isolated, false);
    assert.equal(v.ingress.isolated, true);
    assert.deepEqual(v.ingress.policies, ['a/deny-in']);
    // the server's own egress is untouched
    assert.ok(ok(c, 'a/server', 'a/client', 80));
  });

  it('a policy selects pods of its own namespace only', () => {
    const c = base(np('b', 'deny-all-in-b', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    assert.ok(ok(c, 'a/client', 'a/server', 8080));
    assert.ok(!ok(c, 'a/client', 'b/other', 9090));
    assert.ok(!ok(c, 'b/other', 'a/server', 8080));
  });

  it('both sides must allow: egress of the client AND ingress of the server', () => {
    const egressOnlyToServer = np('a', 'client-out', {
      podSelector: { matchLabels: { app: 'client' } },
      policyTypes: ['Egress'],
      egress: [{ to: [{ podSelector: { matchLabels: { app: 'server' } } }] }],
    });
    const serverOnlyFromB = np('a', 'server-in', {
      podSelector: { matchLabels: { app: 'server' } },
      ingress: [{ _from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }] }],
    });
    const c = base(egressOnlyToServer, serverOnlyFromB);
    const v = evaluateConnection(c, 'a/client', 'a/server', 8080, 'TCP');
    assert.equal(v.egress.allowed, true);
    assert.equal(v.ingress.allowed, false);
    assert.equal(v.allowed, false);
    assert.ok(ok(c, 'b/other', 'a/server', 8080));
    assert.ok(!ok(c, 'a/client', 'b/other', 9090));
  });

  it('several policies add up (union), none subtracts', () => {
    const p80 = np('a', 'p80', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] });
    const p81 = np('a', 'p81', { podSelector: { matchLabels: { app: 'server' } }, ingress: [{ ports: [{ port: 81 }] }] });
    const deny = np('a', 'deny', { podSelector: {}, policyTypes: ['Ingress'] });
    const c = base(p80, p81, deny);
    assert.ok(ok(c, 'b/other', 'a/server', 80));
    assert.ok(ok(c, 'b/other', 'a/server', 81));
    assert.ok(!ok(c, 'b/other', 'a/client', 81));
    assert.ok(!ok(c, 'b/other', 'a/server', 82));
    const v = evaluateConnection(c, 'b/other', 'a/server', 81, 'TCP');
    assert.deepEqual(v.ingress.policies, ['a/p80', 'a/p81', 'a/deny']);
    assert.deepEqual(
      v.ingress.allowedBy.map((m) => `${m.policy} ${m.rule} ${m.port}`),
      ['a/p81 0 0'],
    );
  });
});

describe('empty versus missing', () => {
  it('ingress missing or [] with policyType Ingress: allows nothing; [{}] allows everything', () => {
    for (const ingress of [undefined, []]) {
      const c = base(np('a', 'p', { podSelector: {}, policyTypes: ['Ingress'], ...(ingress ? { ingress } : {}) }));
      assert.ok(!ok(c, 'b/other', 'a/server', 8080));
    }
    const c = base(np('a', 'p', { podSelector: {}, ingress: [{}] }));
    assert.ok(ok(c, 'b/other', 'a/server', 8080));
    assert.ok(ok(c, 'b/other', 'a/server', 5, 'SCTP'));
  });

  it('from/to missing or [] mean every peer; ports missing or [] mean every port and protocol', () => {
    for (const variant of [{}, { _from: [] }, { ports: [] }, { _from: [], ports: [] }]) {
      const c = base(np('a', 'p', { podSelector: {}, ingress: [variant] }));
      assert.ok(ok(c, 'b/other', 'a/server', 12345, 'UDP'), JSON.stringify(variant));
    }
    for (const variant of [{}, { to: [] }, { ports: [] }]) {
      const c = base(np('a', 'p', { podSelector: {}, policyTypes: ['Egress'], egress: [variant] }));
      assert.ok(ok(c, 'a/client', 'b/other', 12345, 'SCTP'), JSON.stringify(variant));
    }
  });

  it('an empty podSelector {} in a peer means every pod of the policy namespace; omitted podSelector in spec means all pods', () => {
    const c = base(np('a', 'p', { ingress: [{ _from: [{ podSelector: {} }] }] }));
    assert.ok(ok(c, 'a/client', 'a/server', 8080));
    assert.ok(!ok(c, 'b/other', 'a/server', 8080));
    assert.ok(!ok(c, 'b/other', 'a/client', 8080));
  });

  it('an empty namespaceSelector {} means every pod of every namespace', () => {
    const c = base(np('a', 'p', { podSelector: {}, ingress: [{ _from: [{ namespaceSelector: {} }] }] }));
    assert.ok(ok(c, 'b/other', 'a/server', 8080));
  });
});

describe('peers', () => {
  it('podSelector and namespaceSelector in one peer: AND; in separate peers: OR', () => {
    const and = base(
      np('a', 'and', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ _from: [{ namespaceSelector: { matchLabels: { team: 'blue' } }, podSelector: { matchLabels: { app: 'server' } } }] }],
      }),
    );
    assert.ok(!ok(and, 'b/other', 'a/server', 8080)); // namespace matches, pod does not
    assert.ok(!ok(and, 'a/client', 'a/server', 8080)); // neither
    const or = base(
      np('a', 'or', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ _from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }, { podSelector: { matchLabels: { app: 'server' } } }] }],
      }),
    );
    assert.ok(ok(or, 'b/other', 'a/server', 8080));
    assert.ok(!ok(or, 'a/client', 'a/server', 8080));
  });

  it('matchExpressions In, NotIn, Exists, DoesNotExist on namespaces and pods', () => {
    const mk = (op: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist', values?: string[]) =>
      base(
        np('a', 'p', {
          podSelector: { matchLabels: { app: 'server' } },
          ingress: [{ _from: [{ namespaceSelector: { matchExpressions: [{ key: 'team', operator: op, ...(values ? { values } : {}) }] } }] }],
        }),
      );
    assert.ok(ok(mk('In', ['blue']), 'b/other', 'a/server', 8080));
    assert.ok(!ok(mk('In', ['blue']), 'a/client', 'a/server', 8080));
    assert.ok(!ok(mk('NotIn', ['blue']), 'b/other', 'a/server', 8080));
    assert.ok(ok(mk('NotIn', ['blue']), 'a/client', 'a/server', 8080));
    assert.ok(ok(mk('Exists'), 'a/client', 'a/server', 8080));
    assert.ok(!ok(mk('DoesNotExist'), 'b/other', 'a/server', 8080));
  });

  it('namespaces carry kubernetes.io/metadata.name', () => {
    const c = base(
      np('a', 'p', {
        podSelector: {},
        ingress: [{ _from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'b' } } }] }],
      }),
    );
    assert.ok(ok(c, 'b/other', 'a/server', 8080));
    assert.ok(!ok(c, 'a/client', 'a/server', 8080));
  });

  it('ipBlock with except, matched against pod IPs, both directions', () => {
    const ingress = base(
      np('a', 'p', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [{ _from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.0.0.0/24'] } }] }],
      }),
    );
    assert.ok(ok(ingress, 'b/other', 'a/server', 8080));
    assert.ok(!ok(ingress, 'a/client', 'a/server', 8080));
    const egress = base(
      np('a', 'p', {
        podSelector: { matchLabels: { app: 'client' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.0.0.2/32' } }] }],
      }),
    );
    assert.ok(ok(egress, 'a/client', 'a/server', 8080));
    assert.ok(!ok(egress, 'a/client', 'b/other', 9090));
  });

  it('ipBlock never matches a pod without an IP, and IPv6 blocks match IPv6 pods', () => {
    const c = buildCluster([
      pod('a', 'v6', 'fd00::1'),
      pod('a', 'noip', undefined),
      pod('a', 'srv', 'fd00::2'),
      np('a', 'p', { podSelector: { matchLabels: {} }, ingress: [{ _from: [{ ipBlock: { cidr: 'fd00::/64' } }] }] }),
    ]);
    assert.ok(ok(c, 'a/v6', 'a/srv', 80));
    const v = evaluateConnection(c, 'a/noip', 'a/srv', 80, 'TCP');
    assert.equal(v.allowed, false);
    assert.match(v.notes.join('\n'), /a\/noip has no IP/);
  });
});

describe('ports', () => {
  it('numeric ports, protocol defaulting to TCP, port omitted = every port of the protocol', () => {
    const c = base(np('a', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 8080 }, { protocol: 'UDP' }] }] }));
    assert.ok(ok(c, 'b/other', 'a/server', 8080, 'TCP'));
    assert.ok(!ok(c, 'b/other', 'a/server', 8080, 'SCTP'));
    assert.ok(ok(c, 'b/other', 'a/server', 1, 'UDP'));
    assert.ok(!ok(c, 'b/other', 'a/server', 1, 'TCP'));
  });

  it('endPort: an inclusive range', () => {
    const c = base(np('a', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 8000, endPort: 8080, protocol: 'SCTP' }] }] }));
    assert.ok(!ok(c, 'b/other', 'a/server', 7999, 'SCTP'));
    assert.ok(ok(c, 'b/other', 'a/server', 8000, 'SCTP'));
    assert.ok(ok(c, 'b/other', 'a/server', 8080, 'SCTP'));
    assert.ok(!ok(c, 'b/other', 'a/server', 8081, 'SCTP'));
    assert.ok(!ok(c, 'b/other', 'a/server', 8040, 'TCP'));
  });

  it('named ports resolve on the server pod, with the rule protocol', () => {
    // egress from every pod of a to "http": resolves to 8080 on a/server, 9090 on b/other
    const c = base(np('a', 'p', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'http' }, { port: 'dns', protocol: 'UDP' }] }] }));
    assert.ok(ok(c, 'a/client', 'a/server', 8080));
    assert.ok(!ok(c, 'a/client', 'a/server', 9090));
    assert.ok(ok(c, 'a/client', 'b/other', 9090));
    assert.ok(!ok(c, 'a/client', 'b/other', 8080));
    assert.ok(ok(c, 'a/client', 'a/server', 53, 'UDP'));
    // "dns" is UDP on the server: a TCP rule named dns matches nothing
    const tcpDns = base(np('a', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 'dns' }] }] }));
    assert.ok(!ok(tcpDns, 'b/other', 'a/server', 53, 'TCP'));
    assert.ok(!ok(tcpDns, 'b/other', 'a/server', 53, 'UDP'));
    // a/client declares no ports: a named-port rule allows nothing to it
    const toClient = base(np('a', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 'http' }] }] }));
    assert.ok(!ok(toClient, 'b/other', 'a/client', 8080));
  });

  it('the queried port may itself be a name, resolved on the server', () => {
    const c = base();
    const v = evaluateConnection(c, 'a/client', 'a/server', 'http', 'TCP');
    assert.equal(v.resolvedPort, 8080);
    assert.ok(v.allowed);
    const none = evaluateConnection(c, 'a/client', 'a/server', 'http', 'UDP');
    assert.equal(none.allowed, false);
    assert.match(none.notes[0]!, /declares no UDP container port named "http"/);
  });
});

describe('explain', () => {
  it('names the isolating policies and the rule, peer and port that allowed it', () => {
    const c = base(
      np('a', 'web', {
        podSelector: { matchLabels: { app: 'server' } },
        ingress: [
          { _from: [{ podSelector: { matchLabels: { app: 'nobody' } } }] },
          { _from: [{ ipBlock: { cidr: '192.168.0.0/16' } }, { namespaceSelector: { matchLabels: { team: 'blue' } } }], ports: [{ port: 'dns', protocol: 'UDP' }, { port: 'http' }] },
        ],
      }),
    );
    const v = explain(evaluateConnection(c, 'b/other', 'a/server', 8080, 'TCP'));
    assert.equal(v.allowed, true);
    assert.deepEqual(v.ingress.allowedBy, [
      {
        policy: 'a/web',
        direction: 'ingress',
        rule: 1,
        peer: 1,
        peerText: 'all pods in namespaces {team=blue}',
        port: 1,
        portText: 'TCP http (8080 on a/server)',
      },
    ]);
    assert.deepEqual(v.ingress.rules.map((r) => [r.rule, r.peersMatched, r.portsMatched, r.allows]), [
      [0, [], [null], false],
      [1, [1], [1], true],
    ]);
    assert.equal(v.reason, 'allowed: b/other is not isolated for egress; ingress of a/server allowed by a/web ingress[1]');
    const text = formatExplanation(c, v);
    assert.match(text, /^b\/other \(10\.1\.0\.1\) -> a\/server \(10\.0\.0\.2\) TCP 8080: ALLOWED$/m);
    assert.match(text, /egress of b\/other \(client\): allowed: not isolated/);
    assert.match(text, /ingress of a\/server \(server\): allowed: isolated by a\/web/);
    assert.match(text, /a\/web ingress\[0\]: no: b\/other matches none of from: pods \{app=nobody\} in namespace a/);
    assert.match(text, /a\/web ingress\[1\]: ALLOWS: from\[1\] all pods in namespaces \{team=blue\}; ports\[1\] TCP http \(8080 on a\/server\)/);
  });

  it('says that no rule allowed it', () => {
    const c = base(np('a', 'deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    const v = explain(evaluateConnection(c, 'a/client', 'a/server', 8080, 'TCP'));
    assert.equal(v.allowed, false);
    assert.equal(v.reason, 'denied: no egress rule of a/deny allows it; no ingress rule of a/deny allows it');
    const text = formatExplanation(c, v);
    assert.match(text, /egress of a\/client \(client\): DENIED: isolated by a\/deny/);
    assert.match(text, /the isolating policies have no ingress rules: they allow nothing/);
  });

  it('reports port mismatches', () => {
    const c = base(np('a', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 90 }] }] }));
    const text = formatExplanation(c, evaluateConnection(c, 'b/other', 'a/server', 8080, 'TCP'));
    assert.match(text, /a\/p ingress\[0\]: no: TCP\/8080 matches none of ports: TCP 80-90/);
  });

  it('unknown pods are an error', () => {
    assert.throws(() => evaluateConnection(base(), 'a/nope', 'a/server', 80, 'TCP'), UnknownPodError);
  });
});

describe('matrix', () => {
  it('covers every ordered pair of different pods, and prints like the upstream truth tables', () => {
    const c = base(np('a', 'p', { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'] }));
    const m = computeMatrix(c, 8080, 'TCP');
    assert.deepEqual(m, {
      pods: ['a/client', 'a/server', 'b/other'],
      allowed: {
        'a/client': { 'a/server': false, 'b/other': true },
        'a/server': { 'a/client': true, 'b/other': true },
        'b/other': { 'a/client': true, 'a/server': false },
      },
    });
    assert.equal(
      formatMatrix(m),
      ['-        a/client a/server b/other', 'a/client -        X        .', 'a/server .        -        .', 'b/other  .        X        -', ''].join('\n'),
    );
    const r = new Reachability(m.pods, true).expectAllIngress('a/server', false);
    assert.deepEqual(r.toMatrix(), m);
  });
});
