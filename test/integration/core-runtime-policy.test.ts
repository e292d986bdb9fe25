/**
 * Runtime policies: `bastion policy add | list | delete` against a running
 * daemon, checked with traffic through the real datapath.
 *
 * A runtime policy opens exactly what it says at once (no config reload),
 * is validated like the config file's (clear errors, nothing applied),
 * cannot shadow a config-file policy, survives a daemon restart, and is
 * forgotten by `bastion down`.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreLab, bastion, bastionMetrics, bastionStatus } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, startTcpEcho } from '../helpers/probes.js';
import { policiesFileFor } from '../../src/api/paths.js';

describe('core: runtime policies (bastion policy)', () => {
  let lab: CoreLab;
  const pin = () => ['--pin-path', lab.pinPath];

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([
      startTcpEcho(lab.api.netns, lab.api.ip, 8080),
      startTcpEcho(lab.api.netns, lab.api.ip, 9090),
      startTcpEcho(lab.db.netns, lab.db.ip, 5432),
      startTcpEcho(lab.db.netns, lab.db.ip, 6379),
    ]);
    await lab.startDaemon();
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('without the policy, web→api:9090 and web→db:6379 are refused', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    await lab.pinNeighbours();
    expectNoneConnect(
      await connectAll([
        ['web→api:9090', lab.web.netns, lab.api.ip, 9090],
        ['web→db:6379', lab.web.netns, lab.db.ip, 6379],
      ]),
    );
    expectAllConnect(await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080]]));
  });

  it('--dry-run validates and says what would change, and changes nothing', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const r = await bastion(['policy', 'add', 'web-to-api-9090', '--from', 'app=web', '--to', 'app=api', '--ports', '9090/tcp', '--dry-run', '--json', ...pin()]);
    assert.equal(r.code, 0, `policy add --dry-run: ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), { ok: true, dryRun: true, policies: [{ name: 'web-to-api-9090', action: 'created' }] });
    expectNoneConnect(await connectAll([['web→api:9090', lab.web.netns, lab.api.ip, 9090]]));
    const list = await bastion(['policy', 'list', '-o', 'json', ...pin()]);
    assert.ok(!(JSON.parse(list.stdout) as Array<{ name: string }>).some((x) => x.name === 'web-to-api-9090'), 'a dry run added nothing');
    // and a bad document is refused the same way as without --dry-run
    const bad = await bastion(['policy', 'add', 'web-to-api', '--from', 'app=web', '--to', 'app=db', '--dry-run', ...pin()]);
    assert.equal(bad.code, 3, 'a config-file name is refused in a dry run too (a name clash is invalid input: exit 3)');
    assert.match(bad.stderr, /policy "web-to-api" is defined in the config file/);
  });

  it('an inline policy opens exactly its port, at once, and is listed as a runtime policy', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const r = await bastion(['policy', 'add', 'web-to-api-9090', '--from', 'app=web', '--to', 'app=api', '--ports', '9090/tcp', '--json', ...pin()]);
    assert.equal(r.code, 0, `policy add: ${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.policies, [{ name: 'web-to-api-9090', action: 'created' }]);
    assert.ok(out.entries > 0, 'map entries were written');
    expectAllConnect(await connectAll([['web→api:9090', lab.web.netns, lab.api.ip, 9090]]));
    expectNoneConnect(
      await connectAll([
        ['attacker→api:9090', lab.attacker.netns, lab.api.ip, 9090],
        ['web→db:6379', lab.web.netns, lab.db.ip, 6379],
      ]),
    );
    const list = await bastion(['policy', 'list', '-o', 'json', ...pin()]);
    assert.equal(list.code, 0, list.stderr);
    const rows = JSON.parse(list.stdout) as Array<{ name: string; source: string; from: string; to: string; ports: string }>;
    assert.deepEqual(
      rows.map((x) => [x.name, x.source]),
      [
        ['web-to-api', 'file'],
        ['api-to-db', 'file'],
        ['web-to-api-9090', 'api'],
      ],
    );
    assert.deepEqual(rows[2], { ...rows[2], from: 'app=web', to: 'app=api', ports: '9090/tcp' });
  });

  it('a policies document (-f) is validated like the config file: errors name the file, object and field; nothing applied', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const file = join(lab.dir, 'bad-policies.yaml');
    writeFileSync(
      file,
      ['policies:', '  - name: web-to-db', '    from: { app: web }', '    to: { app: db }', '    ports: ["6379/tcp"]', '  - name: broken', '    from: { app: web }', '    to: { app: db }', '    ports: ["80/tcpx"]', ''].join('\n'),
    );
    const r = await bastion(['policy', 'add', '-f', file, ...pin()]);
    assert.equal(r.code, 3, `exit 3 (invalid input) expected: ${r.code} ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.]/g, '\\.')}.*policies\\[1\\] \\(broken\\)\\.ports\\[0\\]`));
    assert.match(r.stderr, /80\/tcpx/);
    // the good policy of the same document was not applied either
    expectNoneConnect(await connectAll([['web→db:6379', lab.web.netns, lab.db.ip, 6379]]));

    const withMode = join(lab.dir, 'mode.yaml');
    writeFileSync(withMode, 'mode: audit\npolicies:\n  - { name: x, from: { app: web }, to: { app: db } }\n');
    const m = await bastion(['policy', 'add', '-f', withMode, ...pin()]);
    assert.equal(m.code, 3);
    assert.match(m.stderr, /mode: not allowed here/);

    const usage = await bastion(['policy', 'add', 'x', '--from', 'web', '--to', 'app=db', ...pin()]);
    assert.equal(usage.code, 2, usage.stderr);
    assert.match(usage.stderr, /--from "web": expected host, all, a CIDR, or labels/);
  });

  it('a runtime policy cannot take the name of a config-file policy, and a config file cannot take a runtime one\'s', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const r = await bastion(['policy', 'add', 'web-to-api', '--from', 'app=web', '--to', 'app=db', ...pin()]);
    assert.equal(r.code, 3, 'a name clash with a config-file policy is invalid input');
    assert.match(r.stderr, /policy "web-to-api" is defined in the config file/);
    expectNoneConnect(await connectAll([['web→db:6379', lab.web.netns, lab.db.ip, 6379]]));

    const clash = await daemon.rewriteConfig(lab.config({ extra: [{ name: 'web-to-api-9090', from: { app: 'web' }, to: { app: 'db' }, ports: ['6379/tcp'] }] }));
    assert.equal(clash.applied, false, 'a config naming a runtime policy is rejected');
    assert.match(JSON.stringify(clash.record?.errors), /policy \\"web-to-api-9090\\" is also a runtime policy/);
    expectNoneConnect(await connectAll([['web→db:6379', lab.web.netns, lab.db.ip, 6379]]));
    // put the good config back (the daemon keeps the previous one in force meanwhile)
    const back = await daemon.rewriteConfig(lab.config());
    assert.ok(back.applied);
  });

  it('adding a policy of the same name replaces it (the old port closes, the new one opens)', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const doc = join(lab.dir, 'replace.yaml');
    writeFileSync(doc, 'policies:\n  - name: web-to-api-9090\n    from: { app: web }\n    to: { app: db }\n    ports: ["6379/tcp"]\n');
    const r = await bastion(['policy', 'add', '-f', doc, '-o', 'json', ...pin()]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).policies, [{ name: 'web-to-api-9090', action: 'replaced' }]);
    expectAllConnect(await connectAll([['web→db:6379', lab.web.netns, lab.db.ip, 6379]]));
    expectNoneConnect(await connectAll([['web→api:9090', lab.web.netns, lab.api.ip, 9090]]));
  });

  it('survives a daemon restart (kept in /run/bastion), and the config file still reloads around it', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    assert.ok(existsSync(policiesFileFor(lab.pinPath)), 'runtime policies are saved');
    await daemon.stop();
    const next = await lab.startDaemon(null);
    expectAllConnect(await connectAll([['web→db:6379 after restart', lab.web.netns, lab.db.ip, 6379]]));
    const applied = await next.rewriteConfig(lab.config({ policies: [{ name: 'web-to-api', from: { app: 'web' }, to: { app: 'api' }, ports: ['8080/tcp'] }] }));
    assert.ok(applied.applied);
    expectAllConnect(
      await connectAll([
        ['web→db:6379 after a reload', lab.web.netns, lab.db.ip, 6379],
        ['web→api:8080', lab.web.netns, lab.api.ip, 8080],
      ]),
    );
  });

  it('delete closes it again; deleting an unknown or a config-file policy fails and deletes nothing', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const bad = await bastion(['policy', 'delete', 'web-to-api-9090', 'nope', ...pin()]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no runtime policy "nope"/);
    expectAllConnect(await connectAll([['web→db:6379 (still there)', lab.web.netns, lab.db.ip, 6379]]));
    const fileOne = await bastion(['policy', 'delete', 'web-to-api', ...pin()]);
    assert.equal(fileOne.code, 3, 'naming a config-file policy is invalid input');
    assert.match(fileOne.stderr, /comes from the config file/);

    const r = await bastion(['policy', 'delete', 'web-to-api-9090', ...pin()]);
    assert.equal(r.code, 0, r.stderr);
    expectNoneConnect(await connectAll([['web→db:6379', lab.web.netns, lab.db.ip, 6379]]));
    expectAllConnect(await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080]]));
  });

  it('policy list -o yaml feeds back into policy add -f: runtime ones restored, config-file ones left as they are (round trip)', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const add = await bastion(['policy', 'add', 'rt-web-db', '--from', 'app=web', '--to', 'app=db', '--ports', '6379/tcp', ...pin()]);
    assert.equal(add.code, 0, add.stderr);
    const all = await bastion(['policy', 'list', '-o', 'yaml', ...pin()]);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^policies:/m);
    assert.match(all.stdout, /# source: the config file/);
    const runtimeOnly = await bastion(['policy', 'list', '--source', 'api', '-o', 'yaml', ...pin()]);
    const file = join(lab.dir, 'listed.yaml');
    writeFileSync(file, runtimeOnly.stdout);
    assert.equal((await bastion(['policy', 'delete', 'rt-web-db', ...pin()])).code, 0);
    expectNoneConnect(await connectAll([['web→db:6379 (deleted)', lab.web.netns, lab.db.ip, 6379]]));
    const back = await bastion(['policy', 'add', '-f', file, '-o', 'json', ...pin()]);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(JSON.parse(back.stdout).policies, [{ name: 'rt-web-db', action: 'created' }]);
    expectAllConnect(await connectAll([['web→db:6379 (restored from the listing)', lab.web.netns, lab.db.ip, 6379]]));
    // the whole listing, config-file policies included, goes back in too: those are unchanged
    const whole = join(lab.dir, 'whole.yaml');
    writeFileSync(whole, all.stdout);
    const again = await bastion(['policy', 'add', '-f', whole, '-o', 'json', ...pin()]);
    assert.equal(again.code, 0, again.stderr);
    const rows = JSON.parse((await bastion(['policy', 'list', '-o', 'json', ...pin()])).stdout) as Array<{ name: string; source: string }>;
    assert.deepEqual(
      JSON.parse(again.stdout).policies.map((p: { name: string; action: string }) => [p.name, p.action]),
      rows.map((r) => [r.name, r.source === 'file' ? 'unchanged' : 'replaced']),
    );
    assert.ok(rows.some((r) => r.source === 'file'), 'the listing had config-file policies');
    assert.equal((await bastion(['policy', 'delete', 'rt-web-db', ...pin()])).code, 0);
  });

  it('a truncated saved file is kept aside and reported (status exit 4, a metric, the log); the next add does not overwrite it (failed before: dropped with one log line)', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const add = await bastion(['policy', 'add', 'keep-me', '--from', 'app=web', '--to', 'app=db', '--ports', '6379/tcp', ...pin()]);
    assert.equal(add.code, 0, add.stderr);
    await daemon.stop();
    const file = policiesFileFor(lab.pinPath);
    const whole = readFileSync(file, 'utf8');
    writeFileSync(file, whole.slice(0, Math.floor(whole.length / 2))); // a crash half-way through a write
    const next = await lab.startDaemon(null);
    const loud = next.records.find((r) => r.level >= 50 && /saved runtime policies could not be read and are NOT enforced/.test(r.msg));
    assert.ok(loud, `no error in the log:\n${next.describe(10)}`);
    const status = await bastionStatus(lab.pinPath);
    assert.equal(status.code, 4, 'status exits 4 while saved policies are not enforced');
    const aside = status.json.runtimePolicies.unreadable as string[];
    assert.equal(aside.length, 1);
    assert.match(status.json.problems.join('\n'), new RegExp(aside[0]!.replace(/[.]/g, '\\.')));
    assert.equal(readFileSync(aside[0]!, 'utf8'), whole.slice(0, Math.floor(whole.length / 2)), 'kept as it was');
    const table = await bastion(['status', ...pin()]);
    assert.match(table.stdout, /UNREADABLE/);
    const metrics = await bastionMetrics(lab.pinPath);
    assert.match(metrics, /^bastion_runtime_policies_unreadable_files 1$/m);
    // the next add writes a new file and leaves the kept one alone
    assert.equal((await bastion(['policy', 'add', 'other', '--from', 'app=web', '--to', 'app=api', '--ports', '9090/tcp', ...pin()])).code, 0);
    assert.ok(existsSync(aside[0]!));
    rmSync(aside[0]!);
    assert.equal((await bastionStatus(lab.pinPath)).code, 0, 'once removed, all is well again');
    assert.equal((await bastion(['policy', 'delete', 'other', ...pin()])).code, 0);
  });

  it('`bastion down` forgets them; without a daemon the command says so (exit 4)', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const add = await bastion(['policy', 'add', 'tmp', '--from', 'app=web', '--to', 'app=db', '--ports', '6379/tcp', ...pin()]);
    assert.equal(add.code, 0, add.stderr);
    const down = await bastion(['down', ...pin()]);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(!existsSync(policiesFileFor(lab.pinPath)), 'the runtime policies file is gone');
    const r = await bastion(['policy', 'list', ...pin()]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /no daemon is listening/);
  });
});
