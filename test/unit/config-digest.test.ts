/**
 * What a config load read, as a digest: the config watch compares the file
 * with what the last reload read (accepted or rejected), not with what the
 * watch itself last handed over. The digest is the sha256 of the text, made
 * where the text is read (the worker) and carried in its answer; the
 * reloader records it for every load, start-up's included.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { compactClone, loadConfigSource, loadConfigSourceHere, type LoadedConfig } from '../../src/daemon/config-source.js';
import { ConfigReloader } from '../../src/daemon/config-reloader.js';
import { RuntimePolicies } from '../../src/daemon/runtime-policies.js';
import { recordingManager, TableNode } from '../helpers/recording-datapath.js';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const VALID = 'policies:\n  - { name: p, from: host, to: { app: a }, ports: ["80/tcp"] }\n';
const INVALID = 'policies:\n  - { name: p, from: host, to: { app: a }, ports: ["80/tcpx"] }\n';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'bastion-digest-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('config load digest', () => {
  it('loadConfigSourceHere: the sha256 of the text read, for a valid file and for a rejected one', () => {
    const ok = loadConfigSourceHere(file('valid.yaml', VALID), { containersRequired: false });
    assert.equal(ok.ok, true);
    assert.equal(ok.digest, sha256(VALID));
    const bad = loadConfigSourceHere(file('invalid.yaml', INVALID), { containersRequired: false });
    assert.equal(bad.ok, false);
    assert.equal(bad.digest, sha256(INVALID));
  });

  it('loadConfigSourceHere: no digest when nothing was read (no path, a file refused before reading)', () => {
    assert.equal(loadConfigSourceHere(undefined, { containersRequired: false }).digest, undefined);
    const big = loadConfigSourceHere(file('big.yaml', VALID + `# ${'x'.repeat(100)}\n`), { containersRequired: false, maxBytes: 64 });
    assert.equal(big.ok, false);
    assert.equal(big.digest, undefined);
  });

  it('loadConfigSource: the digest comes through the worker\'s answer', async () => {
    const ok = await loadConfigSource(file('worker-valid.yaml', VALID), { containersRequired: false });
    assert.equal(ok.digest, sha256(VALID));
    const bad = await loadConfigSource(file('worker-invalid.yaml', INVALID), { containersRequired: false });
    assert.equal(bad.ok, false);
    assert.equal(bad.digest, sha256(INVALID));
  });

  it('loadConfigSource: the compacted clone holds what the file says, every kind of policy and rule', async () => {
    const text = [
      'containers:',
      '  - { name: web, netns: web, labels: { app: web } }',
      '  - { name: db, netns: db, labels: { app: db } }',
      'policies:',
      '  - { name: a, from: host, to: { app: web }, ports: ["80/tcp", "53/udp"] }',
      '  - { name: b, from: { app: web }, to: { app: db }, mode: audit }',
      '  - { name: c, from: { app: web }, to: { cidr: 0.0.0.0/0, except: [10.0.0.0/8] } }',
      '  - { name: d, from: { app: web }, to: { cidr: 10.1.0.0/16 }, ports: ["443/tcp"], mode: audit }',
      '',
    ].join('\n');
    const path = file('compact.yaml', text);
    const here = loadConfigSourceHere(path, { containersRequired: true });
    const there = await loadConfigSource(path, { containersRequired: true });
    assert.equal(there.ok, true, JSON.stringify(there));
    assert.deepEqual(there, here);
    if (!there.ok) return;
    assert.deepEqual(Object.keys(there.policies[0]!), ['name', 'from', 'to', 'ports']);
    assert.deepEqual(Object.keys(there.policies[1]!), ['name', 'from', 'to', 'mode']);
    assert.deepEqual(there.policy.rules.map((r) => [r.id, r.direction]), here.ok ? here.policy.rules.map((r) => [r.id, r.direction]) : []);
  });
});

describe('compactClone', () => {
  it('keeps a policy or rule with a field it does not know of as it is, whole', () => {
    const rule = { id: 'p', subject: { matchLabels: { app: 'a' } }, direction: 'egress' as const, peers: [], ports: [] };
    const policy = { name: 'p', from: { selector: { matchLabels: { app: 'a' } } }, to: { host: true } };
    const later = { ...policy, description: 'a field added to the schema after compactClone was written' };
    const laterRule = { ...rule, note: 'likewise' };
    const out = compactClone({ ok: true, policy: { mode: 'enforce', rules: [rule, laterRule] }, containers: [], policies: [policy, later] } as unknown as LoadedConfig);
    assert.deepEqual(out.policies, [policy, later]);
    assert.equal(out.policies[1], later);
    assert.deepEqual(out.policy.rules, [rule, laterRule]);
    assert.equal(out.policy.rules[1], laterRule);
    assert.notEqual(out.policy.rules[0], rule, 'a known shape is rebuilt');
  });
});

describe('ConfigReloader.lastReadDigest', () => {
  const config = (port: string) =>
    ['containers:', '  - { name: web, netns: web, labels: { app: web } }', 'policies:', `  - { name: p, from: host, to: { app: web }, ports: ["${port}"] }`, ''].join('\n');

  it('start-up\'s load records it; undefined while a reload reads; a rejected reload records what it read, an applied one too', async () => {
    const configPath = file('reloaded.yaml', config('80/tcp'));
    const rec = recordingManager();
    rec.node.interfaces.set('web', TableNode.iface(1));
    const reloader = new ConfigReloader({ configPath, platform: false, node: rec.node, runtime: new RuntimePolicies(join(dir, 'policies.json')), log: pino({ level: 'silent' }) });
    assert.equal(reloader.lastReadDigest, undefined, 'nothing read yet');

    const first = await reloader.load();
    assert.equal(reloader.lastReadDigest, sha256(config('80/tcp')), 'start-up');
    await reloader.applyFirst(rec.manager, { config: first, found: await reloader.discover(first.containers) });

    writeFileSync(configPath, config('80/tcpx'));
    const rejected = reloader.reload();
    await Promise.resolve(); // the reload starts: its load is reading
    assert.equal(reloader.lastReadDigest, undefined, 'not known while the reload reads');
    const r1 = await rejected;
    assert.equal(r1.ok, false);
    assert.equal(reloader.lastReadDigest, sha256(config('80/tcpx')), 'rejected: judged all the same');

    writeFileSync(configPath, config('81/tcp'));
    const r2 = await reloader.reload();
    assert.equal(r2.ok, true, JSON.stringify(r2));
    assert.equal(reloader.lastReadDigest, sha256(config('81/tcp')));
    reloader.close();
  });
});
