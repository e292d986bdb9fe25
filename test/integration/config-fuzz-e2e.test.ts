/**
 * The end-to-end half of the parser fuzzing (issue 13; the parser half is
 * test/unit/config-fuzz.test.ts): random invalid policies documents sent to
 * a real daemon with `bastion policy add -f`, and random invalid configs
 * written over its config file. Each must be refused with exit 3 (or a
 * config rejection) and an error naming the field, and leave the kernel's
 * maps exactly as they were: nothing half applied.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify as toYaml } from 'yaml';
import { CoreLab, bastion } from '../helpers/bastion-daemon.js';
import { openBastionMaps } from '../../src/datapath/bpf-map.js';

const RUNS = Number(process.env.FUZZ_E2E_RUNS ?? 25);

/** Every entry of the maps the control plane writes (but the host's addresses), as sorted hex lines. */
function mapsSnapshot(pinPath: string): string[] {
  const maps = openBastionMaps(pinPath);
  try {
    const out: string[] = [];
    for (const name of ['bastion_policy', 'bastion_ipcache', 'bastion_neigh', 'bastion_ep', 'bastion_ep_ip']) {
      const m = maps.all[name];
      assert.ok(m, `map ${name}`);
      for (const [k, v] of m.entries()) {
        // the host's addresses (identity 1) follow the host's interfaces, which other tests on this
        // machine add and remove at any time: not something a policies document could change
        if (name === 'bastion_ipcache' && v.readUInt32LE(0) === 1) continue;
        out.push(`${name} ${k.toString('hex')} ${v.toString('hex')}`);
      }
    }
    return out.sort();
  } finally {
    maps.close();
  }
}

const word = fc.constantFrom('web', 'api', 'db', 'host', 'any', '', 'x'.repeat(80), '10.0.0.0/8', '10.0.0.1/8', '::1/128', '80/tcp', '80/tcpx', '70000/udp', 'tcp', 'icmp', 'matchLabels', 'bastion.io/name');
const scalar = fc.oneof(word, fc.integer({ min: -3, max: 70000 }), fc.boolean(), fc.constant(null));
const end = fc.oneof(
  fc.constant('host'),
  fc.dictionary(fc.constantFrom('app', 'tier', 'bastion.io/x', 'a b'), fc.oneof(word, scalar), { maxKeys: 2 }),
  fc.record({ cidr: fc.oneof(word, scalar) }),
  scalar,
);
/** A policy with at least one wrong field (a valid one is filtered out by the property). */
const policy = fc.record({ name: fc.oneof(word, scalar), from: end, to: end, ports: fc.oneof(fc.array(fc.oneof(word, scalar), { maxLength: 3 }), scalar), bogus: scalar }, { requiredKeys: ['name'] });

describe('fuzzing through a real daemon: a rejected document changes nothing in the kernel', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    await lab.startDaemon();
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('policy add -f of a document with an invalid policy: exit 3, the field named, the maps unchanged', { timeout: 600_000 }, async () => {
    lab.requireDaemon();
    const before = mapsSnapshot(lab.pinPath);
    const file = join(lab.dir, 'fuzz.yaml');
    // one good policy that would open web -> db: it must not be applied with the bad one
    const good = { name: 'fuzz-good', from: { app: 'web' }, to: { app: 'db' }, ports: ['6379/tcp'] };
    let tried = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(policy, { minLength: 1, maxLength: 3 }), fc.boolean(), async (bad, json) => {
        const doc = { policies: [good, ...bad] };
        const text = json ? JSON.stringify(doc) : toYaml(doc);
        writeFileSync(file, text);
        const r = await bastion(['policy', 'add', '-f', file, '--pin-path', lab.pinPath]);
        // a document the fuzzer made valid by chance is not the point here
        if (r.code === 0) {
          await bastion(['policy', 'delete', ...doc.policies.map((p) => String(p.name)), '--pin-path', lab.pinPath]);
          return;
        }
        tried++;
        assert.equal(r.code, 3, `exit ${r.code}: ${r.stderr}`);
        assert.match(r.stderr, /nothing applied/);
        // every error line names the file and a field of a policy (or the document)
        const lines = r.stderr.split('\n').filter((l) => l.startsWith('  ') && !/^  \.\.\. and \d+ more/.test(l));
        assert.ok(lines.length > 0, r.stderr);
        for (const l of lines) assert.match(l, new RegExp(`^  ${file.replace(/[.]/g, '\\.')}: (policies(\\[\\d+\\])?|line \\d+)`), l);
        assert.deepEqual(mapsSnapshot(lab.pinPath), before, 'the maps changed after a rejected document');
      }),
      { numRuns: RUNS },
    );
    assert.ok(tried >= RUNS / 2, `only ${tried} of ${RUNS} documents were invalid`);
    const list = await bastion(['policy', 'list', '-o', 'json', '--pin-path', lab.pinPath]);
    assert.ok(!(JSON.parse(list.stdout) as Array<{ name: string }>).some((p) => p.name === 'fuzz-good'), 'no part of a rejected document was kept');
  });

  it('an invalid config written over the file: rejected, the field named, the maps unchanged', { timeout: 600_000 }, async () => {
    const daemon = lab.requireDaemon();
    const before = mapsSnapshot(lab.pinPath);
    await fc.assert(
      fc.asyncProperty(policy, async (bad) => {
        const cfg = lab.config({ extra: [{ name: 'fuzz-good', from: { app: 'web' }, to: { app: 'db' }, ports: ['6379/tcp'] }] }) as unknown as { policies: unknown[] };
        cfg.policies.push(bad);
        const r = await daemon.rewriteConfig(toYaml(cfg), 30_000);
        if (r.applied) {
          await daemon.rewriteConfig(lab.config());
          return;
        }
        assert.ok(r.record, 'the daemon said nothing');
        const errors = r.record!.errors as string[];
        assert.ok(errors.every((e) => e.startsWith(`${lab.configPath}: `) || /^\.\.\. and \d+ more/.test(e)), JSON.stringify(errors));
        assert.ok(errors.some((e) => /policies\[\d+\]/.test(e)), JSON.stringify(errors));
        assert.deepEqual(mapsSnapshot(lab.pinPath), before, 'the maps changed after a rejected config');
      }),
      { numRuns: Math.ceil(RUNS / 2) },
    );
  });
});
