import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { RuntimePolicies, parsePoliciesDocument, policyRow, toDocumentPolicy } from '../../src/daemon/runtime-policies.js';
import { policyToRules, type PolicyConfig } from '../../src/policy/bastion-config.js';

const labelKey = fc.constantFrom('app', 'tier', 'cidr', 'except', 'team.example.com/owner');
const labelValue = fc.constantFrom('web', 'api', 'db', 'x-1');
const end: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant('host'),
  fc.dictionary(labelKey, labelValue, { maxKeys: 3 }).map((m) => ({ matchLabels: m })),
  fc.record({ cidr: fc.constantFrom('10.0.0.0/8', '192.168.1.0/24') }),
  fc.record({
    matchExpressions: fc.array(
      fc.record({ key: labelKey, operator: fc.constantFrom('In', 'NotIn'), values: fc.uniqueArray(labelValue, { minLength: 1, maxLength: 2 }) }),
      { minLength: 1, maxLength: 2 },
    ),
  }),
);
const ports = fc.option(fc.uniqueArray(fc.constantFrom('8080/tcp', '9000-9010/udp', 'icmp', 'tcp', '53/udp'), { minLength: 1, maxLength: 3 }), { nil: undefined });

function parseOne(doc: unknown): PolicyConfig | undefined {
  const r = parsePoliciesDocument(JSON.stringify({ policies: [doc] }), 'test');
  return r.ok ? r.policies[0] : undefined;
}

describe('runtime policies', () => {
  it('toDocumentPolicy is the inverse of parsing (property; label keys named like fields included)', () => {
    fc.assert(
      fc.property(end, end, ports, (from, to, p) => {
        const parsed = parseOne({ name: 'p', from, to, ...(p ? { ports: p } : {}) });
        fc.pre(parsed !== undefined);
        assert.deepEqual(parseOne(toDocumentPolicy(parsed!)), parsed);
      }),
    );
  });

  it('rejects mode and containers, an empty list, and bad policies, naming the source and field', () => {
    const bad = parsePoliciesDocument('mode: audit\ncontainers: []\npolicies: []\n', 'req.yaml');
    assert.equal(bad.ok, false);
    const errs = (bad as { errors: string[] }).errors.join('\n');
    assert.match(errs, /req\.yaml.*mode: not allowed here/);
    assert.match(errs, /containers: not allowed here/);
    assert.match(errs, /policies: empty/);
    const field = parsePoliciesDocument('policies:\n  - { name: a, from: { app: web }, to: { app: db }, ports: ["99999/tcp"] }\n', 'x.yaml');
    assert.match((field as { errors: string[] }).errors.join(), /x\.yaml.*policies\[0\] \(a\)\.ports\[0\]/);
    assert.match((parsePoliciesDocument('{}', 's') as { errors: string[] }).errors.join(), /policies: required/);
  });

  it('set replaces by name and returns the rules that leave; delete ignores unknown names', () => {
    const rp = new RuntimePolicies('/nonexistent/never-written.json');
    const a = parseOne({ name: 'a', from: { app: 'web' }, to: { app: 'api' }, ports: ['80/tcp'] })!;
    const a2 = parseOne({ name: 'a', from: { app: 'web' }, to: 'host', ports: ['53/udp'] })!;
    const first = rp.set([a]);
    assert.equal(first.removed.length, 0);
    assert.deepEqual(first.added, policyToRules(a));
    const second = rp.set([a2]);
    assert.deepEqual(second.removed, first.added);
    assert.deepEqual(rp.rules(), policyToRules(a2));
    assert.deepEqual(rp.delete(['nope']), []);
    assert.deepEqual(rp.delete(['a']), second.added);
    assert.equal(rp.size, 0);
  });

  it('saves atomically and loads back the same policies; a corrupt file is reported, not used', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bastion-rp-'));
    try {
      const file = join(dir, 'p.json');
      const rp = new RuntimePolicies(file);
      const policies = [
        parseOne({ name: 'a', from: { app: 'web' }, to: { cidr: '10.0.0.0/8' }, ports: ['80/tcp'] })!,
        parseOne({ name: 'b', from: 'host', to: { tier: 'db' } })!,
      ];
      rp.set(policies, new Date('2026-01-01T00:00:00Z'));
      await rp.save();
      const back = new RuntimePolicies(file);
      assert.deepEqual(back.load(), { loaded: 2, errors: [] });
      assert.deepEqual(back.all().map((p) => p.policy), policies);
      assert.deepEqual(back.all().map((p) => p.added), ['2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
      assert.deepEqual(policyRow(back.get('b')!.policy, 'api'), {
        name: 'b',
        source: 'api',
        from: 'host',
        to: 'tier=db',
        ports: 'any',
        spec: { name: 'b', from: 'host', to: { matchLabels: { tier: 'db' } } },
      });
      writeFileSync(file, readFileSync(file, 'utf8').replace('"80/tcp"', '"80/tcpx"'));
      const broken = new RuntimePolicies(file).load();
      assert.equal(broken.loaded, 0);
      assert.match(broken.errors.join(), /p\.json.*ports\[0\]/);
      assert.ok(broken.keptAside && existsSync(broken.keptAside), 'the file that does not validate is kept aside');
      assert.deepEqual(new RuntimePolicies(join(dir, 'none.json')).load(), { loaded: 0, errors: [] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a truncated or corrupt file is kept aside, reported, and never overwritten by the next save (failed before: the next save replaced it)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bastion-rp-'));
    try {
      const file = join(dir, 'p.json');
      const rp = new RuntimePolicies(file);
      rp.set([parseOne({ name: 'a', from: { app: 'web' }, to: { app: 'api' }, ports: ['80/tcp'] })!]);
      await rp.save();
      const whole = readFileSync(file, 'utf8');
      for (const corrupt of [whole.slice(0, whole.length - 7), '', '[1,2]', '{"policies": 3}', whole.replace('web', 'w\u0000b')]) {
        writeFileSync(file, corrupt);
        const next = new RuntimePolicies(file);
        const r = next.load(new Date(`2026-01-01T00:00:0${next.unreadableCopies().length}Z`));
        assert.equal(r.loaded, 0, `loaded from ${JSON.stringify(corrupt)}`);
        assert.ok(r.errors.length > 0, 'says why');
        assert.ok(r.keptAside, `kept aside: ${r.errors.join()}`);
        assert.equal(readFileSync(r.keptAside, 'utf8'), corrupt, 'as it was');
        assert.ok(!existsSync(file), 'moved, not copied');
        // the next policy add saves a new file; the unreadable one stays where it was put
        next.set([parseOne({ name: 'b', from: { app: 'web' }, to: 'host' })!]);
        await next.save();
        assert.equal(readFileSync(r.keptAside, 'utf8'), corrupt);
        assert.ok(next.unreadableCopies().includes(r.keptAside));
        rmSync(file);
      }
      assert.equal(new RuntimePolicies(file).unreadableCopies().length, 5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('save leaves no temporary file and writes the whole document', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bastion-rp-'));
    try {
      const file = join(dir, 'p.json');
      const rp = new RuntimePolicies(file);
      rp.set([parseOne({ name: 'a', from: { app: 'web' }, to: { app: 'api' } })!]);
      await rp.save();
      assert.deepEqual(readdirSync(dir), ['p.json']);
      assert.equal(JSON.parse(readFileSync(file, 'utf8')).policies.length, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('saves asked one after the other without waiting land in order: the last asked is the file, and no temporary file is left', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bastion-rp-'));
    try {
      const file = join(dir, 'p.json');
      const rp = new RuntimePolicies(file);
      const saves: Promise<void>[] = [];
      for (let i = 0; i < 20; i++) {
        rp.set([parseOne({ name: `p${i}`, from: { app: 'web' }, to: { app: 'api' }, ports: [`${1000 + i}/tcp`] })!]);
        saves.push(rp.save());
      }
      await Promise.all(saves);
      assert.deepEqual(readdirSync(dir), ['p.json']);
      const back = new RuntimePolicies(file);
      assert.deepEqual(back.load(), { loaded: 20, errors: [] });
      assert.deepEqual(back.all().map((p) => p.policy.name), Array.from({ length: 20 }, (_, i) => `p${i}`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
