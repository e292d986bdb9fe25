/**
 * A config file written in place, slowly (issue 13): `cat > bastion.yaml`
 * or an editor that truncates then writes goes through every prefix of the
 * new content. None of those may be enforced, not even for a moment: no
 * container may drop out of protection, no policy may be applied before
 * its `ports:` line is written (it would allow every port). Only the final
 * content is applied, once its writer has closed the file.
 *
 * Checked through the datapath: while a child process writes the new config
 * in chunks with pauses (each far longer than the old 50 ms debounce), probes
 * run continuously: web→api:9090 (no policy ever allows it; a policy whose
 * ports line is missing would) and attacker→db:5432 (allowed only if both
 * dropped out of protection), plus the daemon's status (4 stacks in place).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreLab, bastionMetrics, bastionStatus, configText, type BastionConfig } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, expectNoneConnect, sleep, startTcpEcho, tcpConnectQuick } from '../helpers/probes.js';

/** Pause between chunks: far above the old debounce (50 ms) and above the watch's settle time. */
const PAUSE_MS = 800;

describe('core: a config file written in place is applied only when complete', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    const { api, db } = lab;
    await Promise.all([startTcpEcho(api.netns, api.ip, 8080), startTcpEcho(api.netns, api.ip, 9090), startTcpEcho(api.netns, api.ip, 9091), startTcpEcho(db.netns, db.ip, 5432)]);
    await lab.startDaemon();
    await lab.pinNeighbours();
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('no intermediate state is ever enforced; the final one is (failed before: containers dropped out and every port opened)', { timeout: 120_000 }, async () => {
    const daemon = lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    // the new version: the same containers, plus web -> api 9091, whose ports line comes last
    const next: BastionConfig = lab.config({ extra: [{ name: 'web-to-api-9091', from: { app: 'web' }, to: { app: 'api' }, ports: ['9091/tcp'] }] });
    const text = configText(next);
    // chunks that end where an intermediate file is a valid config of its own
    const cuts = [
      text.indexOf('\n', text.indexOf('name: api')) + 1, // containers: web and api only (db and attacker would drop out)
      text.indexOf('policies:'), // every container, no policy
      text.indexOf('- name: web-to-api-9091'), // the old policies
      text.indexOf('ports:', text.indexOf('- name: web-to-api-9091')), // web-to-api-9091 without its ports line: every port
      text.length,
    ];
    assert.ok(cuts.every((c, i) => c > 0 && (i === 0 || c > cuts[i - 1]!)), `cuts ${cuts} in:\n${text}`);
    const chunks = cuts.map((c, i) => text.slice(i === 0 ? 0 : cuts[i - 1], c));

    const writer = `
      const fs = require('fs');
      const chunks = ${JSON.stringify(chunks)};
      const fd = fs.openSync(${JSON.stringify(lab.configPath)}, 'w'); // truncate, in place (same inode)
      const wait = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      for (const c of chunks) { fs.writeSync(fd, c); wait(${PAUSE_MS}); }
      fs.closeSync(fd);
    `;
    const mark = daemon.mark();
    const child = spawn(process.execPath, ['-e', writer], { stdio: 'inherit' });
    const written = new Promise<number | null>((r) => child.on('exit', r));
    let done = false;
    void written.then(() => (done = true));

    const leaks: string[] = [];
    const stacks: string[] = [];
    let probes = 0;
    const probeLoop = (async () => {
      while (!done) {
        const [port9090, attackerDb] = await Promise.all([tcpConnectQuick(web.netns, api.ip, 9090, 300), tcpConnectQuick(attacker.netns, db.ip, 5432, 300)]);
        probes++;
        if (port9090.ok) leaks.push(`web→api:9090 connected at ${new Date().toISOString()} (a policy without its ports line was enforced)`);
        if (attackerDb.ok) leaks.push(`attacker→db:5432 connected at ${new Date().toISOString()} (containers dropped out of protection)`);
      }
    })();
    const statusLoop = (async () => {
      while (!done) {
        const s = await bastionStatus(lab.pinPath);
        const n = (s.json?.endpoints ?? []).filter((e: { stack: { ok: boolean } }) => e.stack.ok).length;
        if (n !== 4) stacks.push(`${n} stacks in place at ${new Date().toISOString()}`);
        await sleep(200);
      }
    })();
    assert.equal(await written, 0, 'the writer ran');
    await Promise.all([probeLoop, statusLoop]);

    assert.ok(probes >= 5, `only ${probes} probe rounds during the write`);
    assert.deepEqual(leaks, [], 'no intermediate state may be enforced');
    assert.deepEqual(stacks, [], 'no container may drop out of protection');
    const appliedDuring = daemon.records.slice(mark).filter((r) => /config applied/.test(r.msg ?? ''));
    // the final version, once closed
    const applied = await daemon.waitForRecord((r) => /config applied/.test(r.msg ?? ''), 10_000, mark);
    assert.ok(applied, `the complete file was not applied:\n${daemon.describe(20)}`);
    assert.ok(appliedDuring.length <= 1, `applied ${appliedDuring.length} times during the write`);
    assert.equal(daemon.records.slice(mark).filter((r) => /config applied/.test(r.msg ?? '')).length, 1, 'applied exactly once');
    expectAllConnect(await connectAll([['web→api:9091 (the new policy)', web.netns, api.ip, 9091]]));
    expectNoneConnect(await connectAll([['web→api:9090', web.netns, api.ip, 9090], ['attacker→db:5432', attacker.netns, db.ip, 5432]]));
  });

  it('a change that takes containers out of protection says so, by name, and counts it', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const without = lab.config();
    without.containers = without.containers.filter((c) => c.name !== 'attacker');
    const r = await daemon.rewriteConfig(without);
    assert.ok(r.applied, JSON.stringify(r.record));
    const warn = daemon.records.find((x) => x.level === 40 && /out of protection/.test(x.msg ?? '') && JSON.stringify(x.containers) === '["attacker"]');
    assert.ok(warn, `no warning naming attacker:\n${daemon.describe(10)}`);
    assert.match(await bastionMetrics(lab.pinPath), /^bastion_config_containers_removed_total 1$/m);
    const back = await daemon.rewriteConfig(lab.config());
    assert.ok(back.applied);
  });

  it('a file without its final newline is not applied until the rest comes', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const text = configText(lab.config({ extra: [{ name: 'web-to-api-9090', from: { app: 'web' }, to: { app: 'api' }, ports: ['9090/tcp'] }] }));
    const mark = daemon.mark();
    writeFileSync(lab.configPath, text.slice(0, -1)); // in place, closed, but no final newline
    await sleep(1500);
    assert.equal(daemon.records.slice(mark).filter((r) => /config applied/.test(r.msg ?? '')).length, 0, 'applied without its final newline');
    const s = await bastionStatus(lab.pinPath);
    assert.match(s.json?.configPending ?? '', /newline/);
    writeFileSync(lab.configPath, text);
    const applied = await daemon.waitForRecord((r) => /config applied/.test(r.msg ?? ''), 10_000, mark);
    assert.ok(applied);
    expectAllConnect(await connectAll([['web→api:9090', lab.web.netns, lab.api.ip, 9090]]));
    await daemon.rewriteConfig(lab.config());
  });
});
