/**
 * The Bastion YAML config file: parsing, every validation error (collected,
 * naming the file, the object and the field), and its meaning as a policy
 * set.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import {
  parseConfigTextFully,
  configToPolicySet,
  containerLabels,
  loadConfigFile,
  parseConfigText,
  type BastionConfig,
  type ConfigParseResult,
} from '../../src/policy/bastion-config.js';
import { InvalidInput, closest, formatIssue } from '../../src/policy/errors.js';
import { loadConfigSource } from '../../src/daemon/config-source.js';
import { evaluate } from '../../src/policy/evaluate.js';
import { parsePortSpec } from '../../src/policy/ports.js';

const GOOD = `# a small deployment
mode: enforce
containers:
  - name: web
    netns: web
    labels: { app: web }
  - name: api
    netns: /proc/1234/ns/net
    interface: eth1
    labels:
      app: api
      tier: backend
    mode: audit
  - name: db
    netns: db
policies:
  - name: web-to-api
    from: { app: web }
    to: { app: api }
    ports: [ "8080/tcp", "9000-9010/udp", "icmp" ]
  - name: api-to-db
    from: { matchLabels: { tier: backend } }
    to: { matchExpressions: [ { key: bastion.io/name, operator: In, values: [ db ] } ] }
    ports: [ "5432/tcp" ]
  - name: dns
    from: {}
    to: host
    ports: [ "53/udp", "53/tcp" ]
  - name: health
    from: host
    to: { app: api }
  - name: outside
    from: { app: api }
    to: { cidr: 0.0.0.0/0, except: [ 10.0.0.0/8, 192.168.0.0/16 ] }
    ports: [ "443/tcp" ]
  - name: lan
    from: { cidr: 192.168.0.0/16 }
    to: { app: web }
    ports: [ tcp ]
`;

function errorsOf(text: string, opts?: { containersRequired?: boolean }): string[] {
  const r = parseConfigText(text, 'config.yaml', opts);
  assert.ok(!r.ok, 'expected errors');
  return r.errors.map(formatIssue);
}

function configOf(r: ConfigParseResult): BastionConfig {
  assert.ok(r.ok, r.ok ? '' : r.errors.map(formatIssue).join('\n'));
  return r.config;
}

describe('config file: valid', () => {
  it('parses every form, applies defaults', () => {
    const c = configOf(parseConfigText(GOOD, 'config.yaml'));
    assert.equal(c.mode, 'enforce');
    assert.deepEqual(c.containers, [
      { name: 'web', netns: 'web', interface: 'eth0', labels: { app: 'web' } },
      { name: 'api', netns: '/proc/1234/ns/net', interface: 'eth1', labels: { app: 'api', tier: 'backend' }, mode: 'audit' },
      { name: 'db', netns: 'db', interface: 'eth0', labels: {} },
    ]);
    assert.equal(c.policies.length, 6);
    assert.deepEqual(c.policies[0], {
      name: 'web-to-api',
      from: { kind: 'endpoints', selector: { matchLabels: { app: 'web' } } },
      to: { kind: 'endpoints', selector: { matchLabels: { app: 'api' } } },
      ports: [
        { protocol: 'tcp', from: 8080, to: 8080 },
        { protocol: 'udp', from: 9000, to: 9010 },
        { protocol: 'icmp', from: 0, to: 0 },
      ],
    });
    assert.deepEqual(c.policies[1]!.to, {
      kind: 'endpoints',
      selector: { matchExpressions: [{ key: 'bastion.io/name', operator: 'In', values: ['db'] }] },
    });
    assert.deepEqual(c.policies[2]!.from, { kind: 'endpoints', selector: {} });
    assert.deepEqual(c.policies[2]!.to, { kind: 'host' });
    assert.equal(c.policies[3]!.ports, undefined, 'omitted: every protocol and port');
    assert.deepEqual(c.policies[4]!.to, { kind: 'cidr', cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '192.168.0.0/16'] });
    assert.deepEqual(c.policies[5]!.ports, [{ protocol: 'tcp', from: 0, to: 65535 }]);
    assert.deepEqual(containerLabels(c.containers![0]!), { app: 'web', 'bastion.io/name': 'web' });
  });

  it('becomes directional rules: egress on from, ingress on to, one id', () => {
    const ps = configToPolicySet(configOf(parseConfigText(GOOD, 'config.yaml')));
    assert.equal(ps.mode, 'enforce');
    assert.deepEqual(
      ps.rules.map((r) => `${r.id} ${r.direction} ${JSON.stringify(r.subject)} ${r.peers.map((p) => p.kind).join(',')} ${r.ports.length}`),
      [
        'web-to-api egress {"matchLabels":{"app":"web"}} endpoints 3',
        'web-to-api ingress {"matchLabels":{"app":"api"}} endpoints 3',
        'api-to-db egress {"matchLabels":{"tier":"backend"}} endpoints 1',
        'api-to-db ingress {"matchExpressions":[{"key":"bastion.io/name","operator":"In","values":["db"]}]} endpoints 1',
        'dns egress {} host 2',
        'health ingress {"matchLabels":{"app":"api"}} host 0',
        'outside egress {"matchLabels":{"app":"api"}} cidr 1',
        'lan ingress {"matchLabels":{"app":"web"}} cidr 1',
      ],
    );
    assert.deepEqual(ps.rules[0]!.peers[0], { kind: 'endpoints', selector: { matchLabels: { app: 'api' } } });
    assert.deepEqual(ps.rules[1]!.peers[0], { kind: 'endpoints', selector: { matchLabels: { app: 'web' } } });
  });

  it('containers are optional (a platform supplies them); then selectors are not checked against them', () => {
    const c = configOf(parseConfigText('policies:\n  - name: p\n    from: { app: nothing }\n    to: host\n', 'c.yaml'));
    assert.equal(c.containers, undefined);
    assert.equal(c.policies.length, 1);
    assert.deepEqual(configOf(parseConfigText('', 'c.yaml')), { mode: 'enforce', policies: [] });
    assert.deepEqual(configOf(parseConfigText('# nothing\n', 'c.yaml')), { mode: 'enforce', policies: [] });
    assert.equal(configOf(parseConfigText('mode: audit\n', 'c.yaml')).mode, 'audit');
  });

  it('a bare address is a /32; ports are deduplicated', () => {
    const c = configOf(parseConfigText('policies:\n  - name: p\n    from: {}\n    to: { cidr: 10.1.2.3 }\n    ports: [ 80/tcp, 80/TCP, "80/tcp" ]\n', 'c.yaml'));
    assert.deepEqual(c.policies[0]!.to, { kind: 'cidr', cidr: '10.1.2.3/32' });
    assert.deepEqual(c.policies[0]!.ports, [{ protocol: 'tcp', from: 80, to: 80 }]);
  });

  it('loadConfigFile reads a file; a missing file is an error naming it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bastion-config-'));
    try {
      const path = join(dir, 'bastion.yaml');
      await writeFile(path, GOOD);
      configOf(await loadConfigFile(path));
      const missing = await loadConfigFile(join(dir, 'nope.yaml'));
      assert.ok(!missing.ok);
      assert.equal(formatIssue(missing.errors[0]!), `${join(dir, 'nope.yaml')}: cannot read: no such file (ENOENT)`);
      await writeFile(path, 'policies: [');
      const bad = await loadConfigFile(path);
      assert.ok(!bad.ok);
      assert.match(formatIssue(bad.errors[0]!), new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: line \\d+: YAML syntax error`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('config file: errors', () => {
  it('the examples of the design, exactly', () => {
    const text = `containers:
  - name: web
    netns: web
    labels: { app: web }
  - name: api
    netns: api
    labels: { app: api }
  - name: db
    netnss: db
policies:
  - name: ok
    from: { app: web }
    to: { app: api }
  - name: web-to-api
    from: { app: web }
    to: { app: api }
    ports: [ "80/tcpx" ]
`;
    assert.deepEqual(errorsOf(text), [
      'config.yaml: containers[2] (db).netns: required',
      'config.yaml: containers[2] (db): unknown field "netnss" (did you mean "netns"?)',
      'config.yaml: policies[1] (web-to-api).ports[0]: "80/tcpx" is not a port: expected PORT[-PORT]/tcp|udp|sctp, or icmp',
    ]);
  });

  it('YAML syntax errors name the line', () => {
    const errs = errorsOf('mode: enforce\npolicies:\n  - name: a\n    from: { app: web\n    to: host\n  - name: b\n    from: [\n');
    assert.ok(errs.length >= 1);
    for (const e of errs) assert.match(e, /^config\.yaml: line \d+: YAML syntax error: /);
    assert.deepEqual(errorsOf('a: 1\na: 2\n'), ['config.yaml: line 2: YAML syntax error: Map keys must be unique (column 1)']);
  });

  it('collects every error of the file, in order', () => {
    const text = `mode: enforcing
containers:
  - name: web
    netns: web
    labels: { app: web, tier: 1, "bastion.io/name": x }
  - name: web
    netns: web
  - name: "bad name"
    netns: "relative/path"
    interface: "this-name-is-too-long"
  - just-a-string
policies:
  - name: p1
    from: host
    to: host
  - name: p2
    from: { app: nope }
    to: { app: web }
    ports: [ "70000/tcp", "9010-9000/udp", 53, "53", "8/icmp", [80] ]
  - name: p3
    from: { app: web }
    to: { cidr: 10.0.0.1/8, except: [ 11.0.0.0/16 ] }
    prots: []
  - name: p1
    from: web
    to: { cidr: "2001:db8::/32" }
  - name: p5
    from: { matchLabels: { app: web }, matchExpressions: [ { key: app, operator: In }, { key: x, operator: Exists, values: [a] }, { key: y, operator: Equals, values: [a] } ], extra: 1 }
    to: { cidr: 10.0.0.0/8, except: [ 10.0.0.0/8, 10.1.0.0/16, 10.1.0.0/16, 10.2.0.0/15 ] }
    ports: []
  - name: p6
    to: { app: web }
    ports: "80/tcp"
`;
    assert.deepEqual(errorsOf(text), [
      'config.yaml: mode: "enforcing" is not one of: enforce, audit',
      'config.yaml: containers[0] (web).labels.tier: a label value must be a string (quote it)',
      'config.yaml: containers[0] (web).labels["bastion.io/name"]: label keys under "bastion.io/" are reserved for Bastion',
      'config.yaml: containers[2] (bad name).name: "bad name" is not a valid name: use letters, digits, \'-\', \'_\' or \'.\', starting and ending with a letter or digit',
      'config.yaml: containers[2] (bad name).netns: "relative/path" is neither a name under /run/netns nor an absolute path',
      'config.yaml: containers[2] (bad name).interface: "this-name-is-too-long" is not a valid interface name (1 to 15 characters, no \'/\', \':\' or spaces)',
      'config.yaml: containers[3]: expected a mapping with name, netns, interface, labels and mode, got the string "just-a-string"',
      'config.yaml: containers[1] (web).name: duplicate name "web" (also containers[0])',
      'config.yaml: containers[1] (web).netns: netns "web" interface eth0 is already containers[0]',
      'config.yaml: policies[0] (p1): from: host and to: host: traffic of the host with itself is not filtered by Bastion; one end must be a container selector',
      'config.yaml: policies[1] (p2).ports[0]: "70000/tcp": port 70000 is out of range 0-65535',
      'config.yaml: policies[1] (p2).ports[1]: "9010-9000/udp": the range is reversed (9010 > 9000)',
      'config.yaml: policies[1] (p2).ports[2]: 53 has no protocol: write "53/tcp" or "53/udp" (or both)',
      'config.yaml: policies[1] (p2).ports[3]: "53" has no protocol: write "53/tcp" or "53/udp" (or both)',
      'config.yaml: policies[1] (p2).ports[4]: "8/icmp": icmp has no ports: write "icmp"',
      'config.yaml: policies[1] (p2).ports[5]: a port must be a string: expected PORT[-PORT]/tcp|udp|sctp, or icmp',
      'config.yaml: policies[2] (p3).to.cidr: "10.0.0.1/8" has host bits set: did you mean "10.0.0.0/8"?',
      'config.yaml: policies[2] (p3): unknown field "prots" (did you mean "ports"?)',
      'config.yaml: policies[3] (p1).name: duplicate name "p1" (also policies[0])',
      'config.yaml: policies[3] (p1).from: "web" is not a peer: to select the container web, write { bastion.io/name: web }',
      'config.yaml: policies[3] (p1).to.cidr: "2001:db8::/32": IPv6 is not supported (Bastion protects IPv4 container networks)',
      'config.yaml: policies[4] (p5).from: unknown field "extra"',
      'config.yaml: policies[4] (p5).from.matchExpressions[0].values: must be a non-empty list when the operator is In',
      'config.yaml: policies[4] (p5).from.matchExpressions[1].values: must be empty when the operator is Exists',
      'config.yaml: policies[4] (p5).from.matchExpressions[2].operator: "Equals" is not an operator: expected one of In, NotIn, Exists, DoesNotExist',
      'config.yaml: policies[4] (p5).to.except[0]: "10.0.0.0/8" is not strictly inside 10.0.0.0/8',
      'config.yaml: policies[4] (p5).to.except[2]: "10.1.0.0/16" is listed twice',
      'config.yaml: policies[4] (p5).ports: an empty list: omit "ports" to allow every protocol and port, or list the ports',
      'config.yaml: policies[5] (p6).from: required: expected a label selector such as { app: web }, the word host, or { cidr: 10.0.0.0/8 }',
      'config.yaml: policies[5] (p6).ports: expected a list of ports such as [ "8080/tcp", "53/udp", "icmp" ], got the string "80/tcp"',
    ]);
  });

  it('a selector that matches no listed container is an error naming the policy and the field', () => {
    const base = 'containers:\n  - name: web\n    netns: web\n    labels: { app: web }\npolicies:\n';
    assert.deepEqual(errorsOf(`${base}  - name: web-to-api\n    from: { app: web }\n    to: { app: apx }\n`), [
      'config.yaml: policies[0] (web-to-api).to: selector app=apx matches no container',
    ]);
    assert.deepEqual(errorsOf(`${base}  - name: x\n    from: { matchExpressions: [ { key: app, operator: DoesNotExist } ] }\n    to: host\n`), [
      'config.yaml: policies[0] (x).from: selector !app matches no container',
    ]);
    // the built-in name label selects
    configOf(parseConfigText(`${base}  - name: x\n    from: { bastion.io/name: web }\n    to: host\n`, 'config.yaml'));
  });

  it('a container\'s name given as a peer: the hint repeats the name only when it is short enough to show whole', () => {
    // found by the config fuzzer: a 70-character name was echoed twice in full, past the excerpt bound
    const long = 'x'.repeat(70);
    const errs = errorsOf(`containers:\n  - name: ${long}\n    netns: a\npolicies:\n  - name: p\n    from: host\n    to: ${long}\n`);
    assert.ok(errs.includes('config.yaml: policies[0] (p).to: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" is not a peer: to select that container, write { bastion.io/name: <its name> }'), errs.join('\n'));
    for (const e of errs) assert.ok(!e.includes(long), e);
  });

  it('containers are required when no platform supplies them', () => {
    assert.deepEqual(errorsOf('policies: []\n', { containersRequired: true }), [
      'config.yaml: containers: required: no platform supplies containers here, so the file must list the containers to protect',
    ]);
    configOf(parseConfigText('containers: []\n', 'config.yaml', { containersRequired: true }));
  });

  it('rejects documents that are not a mapping, unknown top-level fields, wrong types', () => {
    assert.deepEqual(errorsOf('- a\n- b\n'), ['config.yaml: line 1: not a Bastion config file: expected a mapping with mode, containers and policies, got a list']);
    assert.deepEqual(errorsOf('polices: []\n'), ['config.yaml: line 1: unknown field "polices" (did you mean "policies"?)']);
    assert.deepEqual(errorsOf('containers: {}\n'), ['config.yaml: containers: expected a list, got a mapping']);
    assert.deepEqual(errorsOf('containers:\n  - name: 3\n    netns: x\n    labels: [a]\n'), [
      'config.yaml: containers[0].name: expected a string, got the number 3',
      'config.yaml: containers[0].labels: expected a mapping, got a list',
    ]);
    assert.deepEqual(errorsOf('policies:\n  - name: p\n    from: 7\n    to: host\n'), [
      'config.yaml: policies[0] (p).from: expected a label selector such as { app: web }, the word host, or { cidr: 10.0.0.0/8 }, got the number 7',
    ]);
    assert.deepEqual(errorsOf('policies:\n  - name: p\n    from: world\n    to: host\n'), [
      'config.yaml: policies[0] (p).from: "world" is not a peer: expected a label selector such as { app: web }, the word host, or { cidr: 10.0.0.0/8 } (everything outside is { cidr: 0.0.0.0/0 })',
    ]);
    assert.deepEqual(errorsOf('policies:\n  - name: p\n    from: { cidr: 10.0.0.0/8 }\n    to: { cidr: 11.0.0.0/8 }\n'), [
      'config.yaml: policies[0] (p): neither end is a managed container (from: { cidr: 10.0.0.0/8 }, to: { cidr: 11.0.0.0/8 }); one end must be a container selector',
    ]);
    assert.deepEqual(errorsOf('policies:\n  - name: p\n    from: { app: [x] }\n    to: { cidr: 10.0.0.0/8, port: 1 }\n'), [
      'config.yaml: policies[0] (p).from.app: a label value must be a string (quote it)',
      'config.yaml: policies[0] (p).to: unknown field "port"',
    ]);
  });

  it('errors carry the line of the field; formatting of errors', () => {
    const r = parseConfigText(GOOD.replace('"9000-9010/udp"', '"9000-9010/upd"'), 'config.yaml');
    assert.ok(!r.ok);
    assert.equal(r.errors.length, 1);
    assert.deepEqual(r.errors[0], {
      code: 'invalid-value',
      file: 'config.yaml',
      path: ['policies', 0, 'ports', 1],
      object: { name: 'web-to-api', at: 2 },
      line: 20,
      message: '"9000-9010/upd" is not a port: expected PORT[-PORT]/tcp|udp|sctp, or icmp',
    });
    assert.equal(formatIssue({ code: 'invalid-value', file: 'f', path: [], message: 'm' }), 'f: m');
    const unknown = parseConfigText('mode: audit\n\nfoo: 1\n', 'c.yaml');
    assert.ok(!unknown.ok);
    assert.equal(unknown.errors[0]!.line, 3, 'the line of the unknown key');
    assert.equal(formatIssue({ code: 'invalid-value', file: 'f', path: ['mode'], message: 'm', line: 3 }), 'f: mode: m');
    assert.equal(formatIssue({ code: 'invalid-value', file: 'f', path: ['policies', 0], object: { name: 'x', at: 2 }, message: 'm' }), 'f: policies[0] (x): m');
    assert.equal(new InvalidInput([{ code: 'invalid-value', file: 'f', path: [], message: 'a' }, { code: 'invalid-value', file: 'f', path: ['b'], message: 'c' }]).message, 'f: a\nf: b: c');
    assert.equal(closest('fromm', ['from', 'to']), 'from');
    assert.equal(closest('zzzzzz', ['from', 'to']), undefined);
  });
});

// ------------------------------------------------------------ meaning

describe('config file: fast and full parse paths', () => {
  it('give the same result on valid documents, in flow and block style (property)', () => {
    const label = fc.constantFrom('a', 'b', 'web', 'x-1', 'true', '80', '2020-01-01');
    const container = fc.record({ name: fc.constantFrom('c0'), netns: fc.constantFrom('n0', '/proc/1/ns/net'), labels: fc.dictionary(fc.constantFrom('app', 'tier', 'cidr'), label, { maxKeys: 2 }) });
    fc.assert(
      fc.property(container, fc.uniqueArray(fc.constantFrom('80/tcp', '53/udp', 'icmp', '8000-8100/tcp'), { maxLength: 3 }), fc.boolean(), fc.constantFrom('enforce', 'audit'), (c, ports, flow, mode) => {
        const doc = { mode, containers: [c], policies: [{ name: 'p', from: { 'bastion.io/name': 'c0' }, to: 'host', ...(ports.length ? { ports } : {}) }] };
        const text = stringify(doc, flow ? { collectionStyle: 'flow' } : {});
        const fast = parseConfigText(text, 'f.yaml');
        assert.ok(fast.ok, JSON.stringify(fast));
        assert.deepEqual(fast, parseConfigTextFully(text, 'f.yaml', {}));
      }),
    );
  });

  it('errors come with their lines (the full path), and YAML the fast parser refuses still gets a clear error', () => {
    const bad = parseConfigText('mode: enforce\npolicies:\n  - name: p\n    from: host\n    to: { app: x }\n    ports: ["80/tcpx"]\n', 'l.yaml');
    assert.ok(!bad.ok && bad.errors.some((e) => e.line === 6), JSON.stringify(bad));
    const dup = parseConfigText('mode: enforce\nmode: audit\n', 'd.yaml');
    assert.ok(!dup.ok && /unique|duplicate/i.test(dup.errors[0]!.message), JSON.stringify(dup));
  });
});

describe('config file: memory', () => {
  it('the config the daemon receives keeps no view into the file text (a long policy name would hold all of it)', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    // 8 MB of comment after the document: what must not stay on the heap
    const padding = `# ${'x'.repeat(1000)}\n`.repeat(8000);
    let text: string | undefined =
      'mode: enforce\ncontainers:\n  - { name: frontend-service, netns: n1, labels: { app.kubernetes.io/name: frontend-service } }\n' +
      'policies:\n  - { name: frontend-to-backend-policy, from: { app.kubernetes.io/name: frontend-service }, to: host, ports: ["8080/tcp"] }\n' +
      padding;
    // the daemon's parser thread: the text and its views stay on the worker's heap, which ends
    const dir = await mkdtemp(join(tmpdir(), 'bastion-config-'));
    const file = join(dir, 'big.yaml');
    await writeFile(file, text);
    text = undefined;
    const before = heap();
    const parsed = await loadConfigSource(file, { containersRequired: true });
    const after = heap();
    await rm(dir, { recursive: true, force: true });
    assert.ok(parsed.ok);
    assert.equal(parsed.policies[0]!.name, 'frontend-to-backend-policy');
    assert.ok(after - before < 4_000_000, `the heap kept ${((after - before) / 1e6).toFixed(1)} MB after the text was dropped`);
  });
});

describe('config file: meaning (property)', () => {
  const KEYS = ['app', 'tier'] as const;
  const VALS = ['a', 'b'] as const;
  const SPECS = ['80/tcp', '53/udp', '53/tcp', '8000-8100/tcp', 'icmp', 'udp', '9/sctp'];

  const arb = fc
    .array(fc.dictionary(fc.constantFrom(...KEYS), fc.constantFrom(...VALS)), { minLength: 1, maxLength: 4 })
    .chain((labelSets) => {
      const n = labelSets.length;
      // a selector made of a subset of one container's labels always matches something
      const sel = fc.tuple(fc.nat(n - 1), fc.array(fc.boolean(), { minLength: 2, maxLength: 2 })).map(([i, pick]) => {
        const l = labelSets[i]!;
        return Object.fromEntries(Object.entries(l).filter((_, j) => pick[j % 2]));
      });
      const end = fc.oneof({ weight: 4, arbitrary: sel }, { weight: 1, arbitrary: fc.constant('host' as const) });
      const policy = fc
        .record({ from: end, to: end, ports: fc.option(fc.uniqueArray(fc.constantFrom(...SPECS), { minLength: 1, maxLength: 3 }), { nil: undefined }) })
        .filter((p) => !(p.from === 'host' && p.to === 'host'));
      return fc.record({ labelSets: fc.constant(labelSets), policies: fc.array(policy, { maxLength: 5 }) });
    });

  it('managed → managed is allowed exactly when one policy has the source in from, the destination in to and the port', () => {
    fc.assert(
      fc.property(arb, fc.constantFrom(...SPECS, '81/tcp', '54/udp'), ({ labelSets, policies }, probe) => {
        const doc = {
          containers: labelSets.map((labels, i) => ({ name: `c${i}`, netns: `c${i}`, labels })),
          policies: policies.map((p, i) => ({ name: `p${i}`, ...p })),
        };
        const config = configOf(parseConfigText(stringify(doc), 'gen.yaml'));
        const ps = configToPolicySet(config);
        const eps = config.containers!.map((c, i) => ({ key: c.name, ipv4: `10.0.0.${i + 10}`, labels: containerLabels(c) }));
        const port = parsePortSpec(probe);
        assert.ok(port.ok);
        const protocol = port.port.protocol as 'tcp' | 'udp' | 'sctp' | 'icmp';
        const portNo = port.port.from;
        const inSel = (end: 'host' | Record<string, string>, c: number) =>
          end !== 'host' && Object.entries(end).every(([k, v]) => labelSets[c]![k] === v);
        const portOk = (ports: string[] | undefined) =>
          ports === undefined ||
          ports.some((s) => {
            const r = parsePortSpec(s);
            return r.ok && (r.port.protocol === 'icmp' ? protocol === 'icmp' : r.port.protocol === protocol && r.port.from <= portNo && portNo <= r.port.to);
          });
        for (let a = 0; a < eps.length; a++) {
          for (let b = 0; b < eps.length; b++) {
            const want = policies.some((p) => inSel(p.from, a) && inSel(p.to, b) && portOk(p.ports));
            const got = evaluate(ps, eps, ['10.0.0.1'], { src: { endpoint: `c${a}` }, dst: { endpoint: `c${b}` }, protocol, port: portNo }).allowed;
            assert.equal(got, want, `c${a} → c${b} ${probe}`);
          }
          const toHost = policies.some((p) => inSel(p.from, a) && p.to === 'host' && portOk(p.ports));
          assert.equal(evaluate(ps, eps, ['10.0.0.1'], { src: { endpoint: `c${a}` }, dst: { ip: '10.0.0.1' }, protocol, port: portNo }).allowed, toHost);
          const fromHost = policies.some((p) => p.from === 'host' && inSel(p.to, a) && portOk(p.ports));
          assert.equal(evaluate(ps, eps, ['10.0.0.1'], { src: { ip: '10.0.0.1' }, dst: { endpoint: `c${a}` }, protocol, port: portNo }).allowed, fromHost);
        }
      }),
      { numRuns: 300 },
    );
  });
});
