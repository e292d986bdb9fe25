/**
 * `bastion k8s matrix | explain | compile` end to end, on the fixture files
 * (the compiled CLI, run as a child process).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { reachability } from '../fixtures/k8s/e2e-model.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const main = path.join(root, 'dist/src/cli/main.js');
const FIX = 'test/fixtures/k8s';

function bastion(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const CLUSTER = `${FIX}/cluster-xyz.yaml`;
const EGRESS = `${FIX}/policies-egress-client-side.yaml`;
const NAMED = `${FIX}/policies-named-port.json`;

describe('bastion k8s matrix', () => {
  it('-o json prints exactly {pods, allowed} for every ordered pair of different pods', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, EGRESS, '--port', '80', '--protocol', 'TCP', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as { pods: string[]; allowed: Record<string, Record<string, boolean>> };
    assert.deepEqual(Object.keys(m), ['pods', 'allowed']);
    assert.deepEqual(m.pods, ['x/a', 'x/b', 'x/c', 'y/a', 'y/b', 'y/c', 'z/a', 'z/b', 'z/c']);
    for (const from of m.pods) {
      assert.deepEqual(Object.keys(m.allowed[from]!).sort(), m.pods.filter((p) => p !== from).sort());
      for (const v of Object.values(m.allowed[from]!)) assert.equal(typeof v, 'boolean');
    }
    const expected = reachability()
      .expectPeer({ namespace: 'x', pod: 'a' }, {}, false)
      .expectPeer({}, { namespace: 'y', pod: 'a' }, false)
      .expectPeer({ namespace: 'x', pod: 'a' }, { namespace: 'y', pod: 'a' }, true)
      .expectPeer({}, { namespace: 'y', pod: 'b' }, false)
      .toMatrix();
    assert.deepEqual(m, expected);
  });

  it('prints the upstream-style truth table by default (rows from, columns to)', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, EGRESS, '--port', '80');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], 'TCP/80: rows from, columns to ("." allowed, "X" denied)');
    assert.equal(lines[2], '-   x/a x/b x/c y/a y/b y/c z/a z/b z/c');
    assert.equal(lines[3], 'x/a -   X   X   .   X   X   X   X   X');
    assert.equal(lines[4], 'x/b .   -   .   X   X   .   .   .   .');
  });

  it('resolves a named --port on each server', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, NAMED, '--port', 'serve-80-tcp', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    const m = JSON.parse(r.stdout) as { allowed: Record<string, Record<string, boolean>> };
    assert.equal(m.allowed['y/c']!['x/a'], true);
    assert.equal(m.allowed['z/c']!['x/a'], false);
    assert.equal(m.allowed['z/c']!['x/b'], true);
  });

  it('accepts -f repeated', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, '-f', NAMED, '--port', '80', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).allowed['x/b']['x/a'], false);
  });

  it('UDP and SCTP', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, NAMED, '--port', '80', '--protocol', 'SCTP', '-o', 'json');
    const m = JSON.parse(r.stdout) as { allowed: Record<string, Record<string, boolean>> };
    // x/a is isolated for ingress; its only rule allows TCP
    assert.equal(m.allowed['y/a']!['x/a'], false);
    assert.equal(m.allowed['y/a']!['x/b'], true);
  });
});

describe('bastion k8s explain', () => {
  it('says why a connection is denied', () => {
    const r = bastion('k8s', 'explain', '-f', CLUSTER, EGRESS, '--from', 'x/a', '--to', 'y/b', '--port', '80', '--protocol', 'TCP');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^x\/a \(10\.244\.1\.10\) -> y\/b \(10\.244\.2\.11\) TCP 80: DENIED$/m);
    assert.match(r.stdout, /egress of x\/a \(client\): DENIED: isolated by x\/allow-to-ns-y-pod-a/);
    assert.match(r.stdout, /ingress of y\/b \(server\): allowed: isolated by y\/allow-from-xa-on-yb-match-selector/);
    assert.match(r.stdout, /y\/allow-from-xa-on-yb-match-selector ingress\[0\]: ALLOWS: from\[0\] pods \{pod=a\} in namespaces \{kubernetes.io\/metadata.name=x\}; all ports and protocols/);
  });

  it('-o json: verdict, isolating policies, allowing rules', () => {
    const r = bastion('k8s', 'explain', '-f', CLUSTER, EGRESS, '--from', 'x/a', '--to', 'y/a', '--port', '80', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout);
    assert.equal(v.allowed, true);
    assert.equal(v.from, 'x/a');
    assert.equal(v.to, 'y/a');
    assert.equal(v.protocol, 'TCP');
    assert.equal(v.port, 80);
    assert.deepEqual(v.egress.policies, ['x/allow-to-ns-y-pod-a']);
    assert.deepEqual(v.ingress.policies, ['y/allow-from-xa-on-ya-match-selector']);
    assert.deepEqual(v.egress.allowedBy[0], {
      policy: 'x/allow-to-ns-y-pod-a',
      direction: 'egress',
      rule: 0,
      peer: 0,
      peerText: 'pods {pod=a} in namespaces {kubernetes.io/metadata.name=y}',
      port: null,
      portText: 'all ports and protocols',
    });
    assert.match(v.reason, /^allowed: egress of x\/a allowed by x\/allow-to-ns-y-pod-a egress\[0\]; ingress of y\/a allowed by/);
  });
});

describe('bastion k8s compile', () => {
  it('-o json: rules and endpoints', () => {
    const r = bastion('k8s', 'compile', '-f', CLUSTER, NAMED, '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    assert.ok(d.rules.some((x: { id: string }) => x.id === 'x/allow-client-a-via-ns-selector-80#ingress[0]'));
    assert.equal(d.endpoints.length, 9);
    assert.equal(d.endpoints[0].labels['bastion.io/ns-label/ns'], 'x');
  });
});

describe('errors', () => {
  it('invalid objects: exit 3, each object and field named', () => {
    const r = bastion('k8s', 'matrix', '-f', CLUSTER, `${FIX}/invalid-policies.yaml`, '--port', '80');
    assert.equal(r.code, 3);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /invalid-policies\.yaml \(document 1\): NetworkPolicy x\/bad-cidr: spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr: "10\.0\.0\.0\/33" is not a valid CIDR/);
    assert.match(r.stderr, /NetworkPolicy x\/bad-ports: spec\.ingress\[0\]\.ports\[0\]\.port: invalid port name: must be no more than 15 characters/);
    assert.match(r.stderr, /NetworkPolicy x\/bad-ports: spec\.ingress\[0\]\.ports\[1\]\.protocol: unsupported protocol "ICMP"/);
  });

  it('missing file: exit 1 (a failure to read, not invalid input)', () => {
    const r = bastion('k8s', 'matrix', '-f', 'nope.yaml', '--port', '80');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nope\.yaml: cannot read: no such file/);
  });

  it('usage errors: exit 2', () => {
    assert.match(bastion('k8s', 'matrix', '-f', CLUSTER, '--port', '80', '--protocol', 'ICMP').stderr, /--protocol: "ICMP" is not TCP, UDP or SCTP/);
    assert.equal(bastion('k8s', 'matrix', '-f', CLUSTER, '--port', '80', '--protocol', 'ICMP').code, 2);
    const port = bastion('k8s', 'matrix', '-f', CLUSTER, '--port', '70000');
    assert.equal(port.code, 2);
    assert.match(port.stderr, /--port: 70000 is not a valid port number/);
    const pod = bastion('k8s', 'explain', '-f', CLUSTER, '--from', 'x/q', '--to', 'x/a', '--port', '80');
    assert.equal(pod.code, 2);
    assert.match(pod.stderr, /--from: no pod "x\/q" in the input/);
    assert.equal(bastion('k8s', 'matrix', '--port', '80').code, 2);
    assert.equal(bastion('k8s', 'matrix', '-f', CLUSTER, '--port', '80', '-o', 'xml').code, 2);
  });

  it('warnings go to stderr and do not fail', () => {
    const r = bastion('k8s', 'matrix', '-f', NAMED, '--port', '80');
    assert.equal(r.code, 0);
    assert.match(r.stderr, /warning: namespace x .* has no Namespace object/);
    assert.equal(r.stdout, 'no pods in the input\n');
  });
});
