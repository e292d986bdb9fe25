/**
 * Input objects: parsing (multi-document YAML, JSON, Lists), the API server's
 * validation rules with errors naming object and field, normalisation
 * (policyTypes default, namespace name label), and the helpers underneath
 * (CIDRs, label syntax, selectors).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  K8sInputError,
  buildCluster,
  effectivePolicyTypes,
  loadCluster,
  readCluster,
} from '../../src/policy/k8s/objects.js';
import { formatOrigin, formatPath, type Issue } from '../../src/policy/errors.js';
import { K8S_LABEL_MESSAGES, checkLabelKey as labelKeyCheck, checkLabelValue as labelValueCheck, matches as selectorMatches } from '../../src/policy/selector.js';
import { cidrCovers, formatCidr, ipInBlock, parseCidr, parseIp, formatIp } from '../../src/net/ip.js';
import { checkPortName } from '../../src/policy/k8s/names.js';

const checkLabelKey = (k: string) => labelKeyCheck(k, K8S_LABEL_MESSAGES);
const checkLabelValue = (v: string) => labelValueCheck(v, K8S_LABEL_MESSAGES);

/** The parts of an issue as the k8s front end prints them: source, object, field. */
const source = (i: Issue) => formatOrigin(i);
const object = (i: Issue) => i.object?.name;
const field = (i: Issue) => formatPath(i.path, i.pathStyle);

const FIX = 'test/fixtures/k8s';

function issues(f: () => unknown): Issue[] {
  try {
    f();
  } catch (e) {
    if (e instanceof K8sInputError) return e.issues;
    throw e;
  }
  assert.fail('expected a K8sInputError');
}

const np = (spec: unknown, name = 'p', namespace = 'x') => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name, namespace },
  spec,
});

describe('parsing', () => {
  it('reads the fixture cluster (multi-document YAML with a List of pods)', async () => {
    const c = await readCluster([`${FIX}/cluster-xyz.yaml`]);
    assert.deepEqual(
      c.pods.map((p) => p.key),
      ['x/a', 'x/b', 'x/c', 'y/a', 'y/b', 'y/c', 'z/a', 'z/b', 'z/c'],
    );
    assert.equal(c.namespaces.get('y')!.labels['kubernetes.io/metadata.name'], 'y');
    const xa = c.pods[0]!;
    assert.equal(xa.ip, '10.244.1.10');
    assert.deepEqual(xa.labels, { pod: 'a' });
    assert.equal(xa.ports.length, 6);
    assert.deepEqual(xa.ports.find((p) => p.name === 'serve-81-udp'), {
      container: 'cont-81-udp',
      name: 'serve-81-udp',
      port: 81,
      protocol: 'UDP',
    });
    assert.deepEqual(c.warnings, []);
  });

  it('reads JSON, a NetworkPolicyList, and files together', async () => {
    const c = await readCluster([`${FIX}/cluster-xyz.yaml`, `${FIX}/policies-named-port.json`]);
    assert.equal(c.policies.length, 1);
    const p = c.policies[0]!;
    assert.equal(p.key, 'x/allow-client-a-via-ns-selector-80');
    assert.deepEqual(p.policyTypes, ['Ingress']);
    assert.equal(p.policyTypesDefaulted, true);
    assert.deepEqual(p.ingress[0]!._from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } }]);
  });

  it('accepts a JSON array and kind: List, and ignores other kinds with a warning', () => {
    const c = loadCluster([
      {
        file: 'a.json',
        text: JSON.stringify([
          { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'q' } }] },
          { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'q' } },
        ]),
      },
    ]);
    assert.deepEqual([...c.namespaces.keys()], ['q']);
    assert.match(c.warnings.join('\n'), /Service q\/s: kind ignored/);
  });

  it('reports YAML syntax errors with file and document', () => {
    const i = issues(() => loadCluster([{ file: 'bad.yaml', text: 'kind: Pod\n---\nmetadata: [unclosed\n' }]));
    assert.equal(source(i[0]!), 'bad.yaml (document 2)');
    assert.match(i[0]!.message, /^YAML: /);
  });

  it('infers namespaces that have no Namespace object, with their name label', () => {
    const c = buildCluster([{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } }]);
    assert.equal(c.pods[0]!.key, 'default/p');
    assert.deepEqual(c.namespaces.get('default'), {
      name: 'default',
      labels: { 'kubernetes.io/metadata.name': 'default' },
      declared: false,
    });
    assert.match(c.warnings[0]!, /namespace default .* has no Namespace object/);
  });

  it('sets kubernetes.io/metadata.name to the namespace name, as the API server does', () => {
    const c = buildCluster([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x', labels: { 'kubernetes.io/metadata.name': 'y' } } }]);
    assert.equal(c.namespaces.get('x')!.labels['kubernetes.io/metadata.name'], 'x');
    assert.match(c.warnings[0]!, /replaced/);
  });

  it('treats null as absent and accepts the client-node name _from', () => {
    const c = buildCluster([np({ podSelector: null, ingress: [{ _from: [{ podSelector: {} }], ports: null }], egress: null })]);
    const p = c.policies[0]!;
    assert.deepEqual(p.podSelector, {});
    assert.deepEqual(p.ingress, [{ _from: [{ podSelector: {} }] }]);
  });

  it('uses status.podIPs when podIP is missing', () => {
    const c = buildCluster([
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'x' }, status: { podIPs: [{ ip: 'fd00::5' }, { ip: '10.0.0.5' }] } },
    ]);
    assert.equal(c.pods[0]!.ip, 'fd00::5');
    assert.deepEqual(c.pods[0]!.ips, ['fd00::5', '10.0.0.5']);
  });
});

describe('policyTypes', () => {
  it('defaults to Ingress, plus Egress when there is at least one egress rule', () => {
    assert.deepEqual(effectivePolicyTypes({}), { types: ['Ingress'], defaulted: true });
    assert.deepEqual(effectivePolicyTypes({ egress: [] }), { types: ['Ingress'], defaulted: true });
    assert.deepEqual(effectivePolicyTypes({ egress: [{}] }), { types: ['Ingress', 'Egress'], defaulted: true });
    assert.deepEqual(effectivePolicyTypes({ policyTypes: ['Egress'], ingress: [{}] }), { types: ['Egress'], defaulted: false });
  });
});

describe('validation errors name the object and the field', () => {
  const one = (spec: unknown) => {
    const i = issues(() => buildCluster([np(spec, 'bad', 'x')]));
    for (const x of i) assert.equal(object(x), 'NetworkPolicy x/bad');
    return i.map((x) => `${field(x)}: ${x.message}`);
  };

  it('ipBlock.cidr that is not a CIDR', () => {
    assert.deepEqual(one({ egress: [{ to: [{ ipBlock: { cidr: '10.0.0.1' } }] }] }), [
      'spec.egress[0].to[0].ipBlock.cidr: "10.0.0.1" is not a valid CIDR',
    ]);
    assert.match(one({ egress: [{ to: [{ ipBlock: { cidr: '300.0.0.0/8' } }] }] })[0]!, /not a valid CIDR/);
  });

  it('except outside the cidr, or not a strict subset', () => {
    assert.deepEqual(
      one({ ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/16', '10.0.0.0/8', 'nope'] } }] }] }),
      [
        'spec.ingress[0].from[0].ipBlock.except[0]: "11.0.0.0/16" must be a strict subset of cidr "10.0.0.0/8"',
        'spec.ingress[0].from[0].ipBlock.except[1]: "10.0.0.0/8" must be a strict subset of cidr "10.0.0.0/8"',
        'spec.ingress[0].from[0].ipBlock.except[2]: "nope" is not a valid CIDR',
      ],
    );
  });

  it('a named port that is too long, or malformed', () => {
    assert.deepEqual(one({ ingress: [{ ports: [{ port: 'serve-80-tcp-long-name' }] }] }), [
      'spec.ingress[0].ports[0].port: invalid port name: must be no more than 15 characters (is 22: "serve-80-tcp-long-name")',
    ]);
    assert.match(one({ ingress: [{ ports: [{ port: '80' }] }] })[0]!, /at least one letter/);
    assert.match(one({ ingress: [{ ports: [{ port: 'Http' }] }] })[0]!, /lowercase/);
    assert.match(one({ ingress: [{ ports: [{ port: 'a--b' }] }] })[0]!, /consecutive hyphens/);
  });

  it('a protocol that is not allowed (case-sensitive, as upstream)', () => {
    assert.deepEqual(one({ egress: [{ ports: [{ protocol: 'ICMP' }, { protocol: 'tcp', port: 80 }] }] }), [
      'spec.egress[0].ports[0].protocol: unsupported protocol "ICMP": supported values are "TCP", "UDP", "SCTP"',
      'spec.egress[0].ports[1].protocol: unsupported protocol "tcp": supported values are "TCP", "UDP", "SCTP"',
    ]);
  });

  it('port numbers and endPort', () => {
    assert.deepEqual(
      one({
        ingress: [
          {
            ports: [{ port: 0 }, { port: 70000 }, { endPort: 90 }, { port: 'http', endPort: 90 }, { port: 90, endPort: 80 }, { port: 80, endPort: 70000 }],
          },
        ],
      }),
      [
        'spec.ingress[0].ports[0].port: 0 is not a valid port number (1-65535)',
        'spec.ingress[0].ports[1].port: 70000 is not a valid port number (1-65535)',
        'spec.ingress[0].ports[2].endPort: may not be specified when `port` is not specified',
        'spec.ingress[0].ports[3].endPort: may not be specified when `port` is a named port',
        'spec.ingress[0].ports[4].endPort: must be greater than or equal to `port` (80 < 90)',
        'spec.ingress[0].ports[5].endPort: 70000 is not a valid port number (1-65535)',
      ],
    );
  });

  it('peers: none given, or ipBlock with a selector', () => {
    assert.deepEqual(one({ ingress: [{ from: [{}, { ipBlock: { cidr: '10.0.0.0/8' }, namespaceSelector: {} }] }] }), [
      'spec.ingress[0].from[0]: must specify a peer (podSelector, namespaceSelector or ipBlock)',
      'spec.ingress[0].from[1]: may not specify both ipBlock and another peer',
    ]);
  });

  it('selectors: operators, values, label syntax', () => {
    assert.deepEqual(
      one({
        podSelector: {
          matchLabels: { 'bad key!': 'v', ok: 'bad value!' },
          matchExpressions: [
            { key: 'a', operator: 'In' },
            { key: 'b', operator: 'Exists', values: ['x'] },
            { key: 'c', operator: 'Equals', values: ['x'] },
          ],
        },
      }),
      [
        'spec.podSelector.matchLabels: invalid label key "bad key!": name part must consist of alphanumerics, \'-\', \'_\' or \'.\', and must start and end with an alphanumeric',
        "spec.podSelector.matchLabels[ok]: invalid label value \"bad value!\": a label value must be empty or consist of alphanumerics, '-', '_' or '.', and must start and end with an alphanumeric",
        'spec.podSelector.matchExpressions[0].values: must be specified when operator is In',
        'spec.podSelector.matchExpressions[1].values: may not be specified when operator is Exists',
        'spec.podSelector.matchExpressions[2].operator: "Equals" is not a valid selector operator (In, NotIn, Exists, DoesNotExist)',
      ],
    );
  });

  it('policyTypes', () => {
    assert.deepEqual(one({ policyTypes: ['Ingress', 'Outgress'] }), [
      'spec.policyTypes[1]: unsupported value "Outgress": supported values are "Ingress", "Egress"',
    ]);
    assert.deepEqual(one({ policyTypes: ['Ingress', 'Egress', 'Ingress'] }), ['spec.policyTypes: may not specify more than two policyTypes']);
  });

  it('unknown fields (typos) are reported and the rest still validated', () => {
    assert.deepEqual(one({ podselector: {}, ingress: [{ form: [], ports: [{ port: 99999 }] }] }), [
      'spec.ingress[0]: unknown field "form"',
      'spec: unknown field "podselector"',
      'spec.ingress[0].ports[0].port: 99999 is not a valid port number (1-65535)',
    ]);
  });

  it('wrong types', () => {
    assert.deepEqual(one({ ingress: [{ ports: [{ port: 1.5 }] }] }), ['spec.ingress[0].ports[0].port: must be an integer or a port name']);
    assert.deepEqual(one({ ingress: { from: [] } }), ['spec.ingress: expected array, got object']);
  });

  it('names, apiVersion, kind', () => {
    const i = issues(() =>
      buildCluster([
        np({}, 'Bad_Name', 'x'),
        { apiVersion: 'extensions/v1beta1', kind: 'NetworkPolicy', metadata: { name: 'old' } },
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'Upper' } },
        { apiVersion: 'v1', metadata: { name: 'nokind' } },
        { apiVersion: 'v1', kind: 'Pod', metadata: {} },
        'just a string',
      ]),
    );
    assert.deepEqual(
      i.map((x) => `${object(x)}: ${field(x)}: ${x.message}`),
      [
        "NetworkPolicy x/Bad_Name: metadata.name: must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' or '.', starting and ending with an alphanumeric",
        'NetworkPolicy default/old: apiVersion: "extensions/v1beta1" is not supported for NetworkPolicy (expected "networking.k8s.io/v1")',
        "Namespace Upper: metadata.name: must be a lowercase RFC 1123 label: lowercase alphanumerics or '-', starting and ending with an alphanumeric",
        'object default/nokind: kind: required field is missing',
        'Pod default/<unnamed>: metadata.name: required field is missing',
        'document: : is not a Kubernetes object (expected a mapping with apiVersion and kind)',
      ],
    );
  });

  it('pods: container ports, duplicate port names, IPs', () => {
    const i = issues(() =>
      buildCluster([
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'p', namespace: 'x', labels: { app: 'web' } },
          spec: {
            containers: [
              { name: 'c1', ports: [{ containerPort: 80, name: 'http' }, { containerPort: 0 }, { containerPort: 81, name: 'http-very-long-name' }] },
              { name: 'c2', ports: [{ containerPort: 82, name: 'http', protocol: 'ICMP' }] },
            ],
          },
          status: { podIP: '10.0.0.300' },
        },
      ]),
    );
    assert.deepEqual(
      i.map((x) => `${object(x)}: ${field(x)}: ${x.message}`),
      [
        'Pod x/p: spec.containers[0].ports[1].containerPort: 0 is not a valid port number (1-65535)',
        'Pod x/p: spec.containers[0].ports[2].name: invalid port name: must be no more than 15 characters (is 19: "http-very-long-name")',
        'Pod x/p: spec.containers[1].ports[0].protocol: unsupported protocol "ICMP": supported values are "TCP", "UDP", "SCTP"',
        'Pod x/p: spec.containers[1].ports[0].name: duplicate port name "http" (also spec.containers[0].ports[0])',
        'Pod x/p: status.podIP: "10.0.0.300" is not a valid IP address',
      ],
    );
  });

  it('duplicate objects', () => {
    const i = issues(() => loadCluster([{ file: 'a.yaml', text: 'apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n' }]));
    assert.equal(i.length, 1);
    assert.equal(source(i[0]!), 'a.yaml (document 2)');
    assert.match(i[0]!.message, /duplicate object \(first defined in a.yaml \(document 1\)\)/);
  });

  it('the invalid fixture: every object and field, with file and document', async () => {
    await assert.rejects(readCluster([`${FIX}/invalid-policies.yaml`]), (e: unknown) => {
      assert.ok(e instanceof K8sInputError);
      const text = e.message;
      for (const want of [
        'invalid-policies.yaml (document 1): NetworkPolicy x/bad-cidr: spec.egress[0].to[0].ipBlock.cidr: "10.0.0.0/33" is not a valid CIDR',
        'invalid-policies.yaml (document 2): NetworkPolicy x/bad-ports: spec.ingress[0].ports[0].port: invalid port name: must be no more than 15 characters',
        'NetworkPolicy x/bad-ports: spec.ingress[0].ports[1].protocol: unsupported protocol "ICMP"',
        'NetworkPolicy x/bad-ports: spec.ingress[0].ports[2].endPort: must be greater than or equal to `port`',
        'NetworkPolicy x/bad-peers: spec: unknown field "podselector"',
        'NetworkPolicy x/bad-peers: spec.ingress[0].from[0]: must specify a peer',
        'NetworkPolicy x/bad-peers: spec.ingress[0].from[1]: may not specify both ipBlock and another peer',
        'NetworkPolicy x/bad-peers: spec.policyTypes[1]: unsupported value "Sideways"',
      ])
        assert.ok(text.includes(want), `missing: ${want}\nin:\n${text}`);
      return true;
    });
  });

  it('an unreadable file', async () => {
    await assert.rejects(readCluster(['/nonexistent/x.yaml']), /\/nonexistent\/x.yaml: cannot read: no such file/);
  });

  it('keeps the fixture texts parseable as plain YAML (sanity)', () => {
    assert.ok(readFileSync(`${FIX}/cluster-xyz.yaml`, 'utf8').includes('kind: List'));
  });
});

describe('cidr', () => {
  it('parses IPv4 and IPv6 strictly', () => {
    assert.deepEqual(parseIp('10.1.2.3'), { family: 4, value: 0x0a010203n });
    assert.equal(parseIp('010.1.2.3'), undefined);
    assert.equal(parseIp('1.2.3'), undefined);
    assert.equal(parseIp('256.0.0.1'), undefined);
    assert.equal(formatIp(parseIp('2001:db8::1')!), '2001:db8::1');
    assert.equal(formatIp(parseIp('::')!), '::');
    assert.equal(formatIp(parseIp('::ffff:10.0.0.1')!), '::ffff:a00:1');
    assert.equal(parseIp('1::2::3'), undefined);
    assert.equal(parseIp('fe80::1%eth0'), undefined);
    assert.equal(parseIp('1:2:3:4:5:6:7:8:9'), undefined);
  });

  it('CIDRs: host bits cleared, containment, coverage', () => {
    assert.equal(formatCidr(parseCidr('10.244.1.10/4')!), '0.0.0.0/4');
    assert.equal(formatCidr(parseCidr('2001:db8::1/32')!), '2001:db8::/32');
    assert.equal(parseCidr('10.0.0.0/33'), undefined);
    assert.equal(parseCidr('10.0.0.0'), undefined);
    assert.equal(parseCidr('10.0.0.0/08'), undefined);
    assert.ok(ipInBlock('10.244.1.11', '10.244.1.10/4'));
    assert.ok(!ipInBlock('10.244.1.11', '10.0.0.0/4', ['10.244.1.11/32']));
    assert.ok(!ipInBlock('fd00::1', '10.0.0.0/8'));
    assert.ok(ipInBlock('fd00::1', 'fd00::/8'));
    assert.ok(ipInBlock('1.2.3.4', '0.0.0.0/0'));
    assert.ok(cidrCovers(parseCidr('10.0.0.0/8')!, parseCidr('10.1.0.0/16')!));
    assert.ok(!cidrCovers(parseCidr('10.1.0.0/16')!, parseCidr('10.0.0.0/8')!));
  });
});

describe('labels', () => {
  it('syntax', () => {
    assert.equal(checkLabelKey('kubernetes.io/metadata.name'), undefined);
    assert.equal(checkLabelKey('app'), undefined);
    assert.ok(checkLabelKey('a/b/c'));
    assert.ok(checkLabelKey('Upper.Case/x'));
    assert.ok(checkLabelKey('x'.repeat(64)));
    assert.equal(checkLabelValue(''), undefined);
    assert.ok(checkLabelValue('-x'));
    assert.equal(checkPortName('serve-80-tcp'), undefined);
    assert.ok(checkPortName('serve-80-tcp-xxx'));
  });

  it('selector semantics, including keys the labels lack', () => {
    const l = { app: 'web', tier: 'front' };
    assert.ok(selectorMatches({}, l));
    assert.ok(selectorMatches({ matchLabels: {} }, {}));
    assert.ok(selectorMatches({ matchLabels: { app: 'web' } }, l));
    assert.ok(!selectorMatches({ matchLabels: { app: 'web', x: 'y' } }, l));
    assert.ok(selectorMatches({ matchExpressions: [{ key: 'app', operator: 'In', values: ['db', 'web'] }] }, l));
    assert.ok(!selectorMatches({ matchExpressions: [{ key: 'missing', operator: 'In', values: ['a'] }] }, l));
    assert.ok(selectorMatches({ matchExpressions: [{ key: 'missing', operator: 'NotIn', values: ['a'] }] }, l));
    assert.ok(!selectorMatches({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, l));
    assert.ok(selectorMatches({ matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, l));
    assert.ok(!selectorMatches({ matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, l));
    assert.ok(selectorMatches({ matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, l));
    // matchLabels AND matchExpressions
    assert.ok(!selectorMatches({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['back'] }] }, l));
    // toString-like keys are labels like any other
    assert.ok(!selectorMatches({ matchLabels: { constructor: 'x' } }, {}));
  });
});
