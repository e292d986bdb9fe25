/**
 * Large configs (issue 13): the API keeps answering while a big file is
 * parsed (the parse runs in a worker thread), a file over the size limit is
 * refused with a clear error, and status and policy list work with a large
 * policy set (they overflowed the stack at 250,000 policies).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { CoreLab, bastion, bastionStatus, configText, type BastionConfig } from '../helpers/bastion-daemon.js';
import { apiCall } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import { sleep } from '../helpers/probes.js';

/** A config with n extra policies web -> api (distinct names and ports), text appended to the core config. */
function bigConfig(lab: CoreLab, n: number, tail = ''): string {
  const base = configText(lab.config() as BastionConfig);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) lines.push(`  - { name: bulk-web-to-api-${i}, from: { app: web }, to: { app: api }, ports: [ "${20000 + (i % 40000)}/tcp" ] }`);
  return `${base}${lines.join('\n')}\n${tail}`;
}

function writeAtomically(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : 0;
}

describe('large configs', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    await lab.startDaemon();
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('the API answers within a bound while a big invalid config is parsed; the error names the field; nothing changes (failed before: the API waited for the whole parse)', { timeout: 300_000 }, async (t) => {
    const daemon = lab.requireDaemon();
    const socket = socketPathFor(lab.pinPath);
    const before = await bastionStatus(lab.pinPath);
    // about 11 MB, under the 16 MiB default; the error is on the last line
    const text = bigConfig(lab, 110_000, '  - { name: broken, from: { app: web }, to: { app: api }, ports: [ "80/tcpx" ] }\n');
    const mark = daemon.mark();
    writeAtomically(lab.configPath, text);
    const latencies: number[] = [];
    let peak = 0;
    let done: Record<string, unknown> | undefined;
    const deadline = Date.now() + 240_000;
    while (!done && Date.now() < deadline) {
      const t0 = performance.now();
      const r = await apiCall<{ ok: boolean }>(socket, 'GET', '/v1/status', undefined, 30_000);
      latencies.push(performance.now() - t0);
      assert.equal(r.status, 200);
      peak = Math.max(peak, rssMb(daemon.pid!));
      done = daemon.records.slice(mark).find((x) => /config (applied|rejected)/.test(x.msg ?? ''));
      await sleep(100);
    }
    assert.ok(done, 'the reload finished');
    assert.match(String(done.msg), /rejected/);
    assert.match(JSON.stringify(done.errors), /policies\[\d+\] \(broken\)\.ports\[0\]: \\"80\/tcpx\\" is not a port/);
    const worst = Math.max(...latencies);
    t.diagnostic(`status answered ${latencies.length} times during the parse, slowest ${worst.toFixed(0)} ms; daemon RSS peak ${peak} MB`);
    assert.ok(latencies.length >= 5, `only ${latencies.length} status requests during the parse`);
    assert.ok(worst < 2000, `status took ${worst.toFixed(0)} ms during the parse`);
    const after = await bastionStatus(lab.pinPath);
    assert.deepEqual(after.json.rules, before.json.rules, 'the previous config stays in force');
    // the file back as it is in force, and its reload over before the next test writes again, so
    // that the records the next test waits for are its own (a reload still starting when the next
    // file lands reads that file instead; the watch then reloads this content once more when it is
    // written back: see docs/operations.md, "A config file written in place")
    const since = daemon.mark();
    writeAtomically(lab.configPath, configText(lab.config() as BastionConfig));
    assert.ok(await daemon.waitForRecord((x) => /config (applied|rejected)/.test(x.msg ?? ''), 30_000, since), 'the restored file was reloaded');
  });

  it('a config over the size limit is refused with a clear error naming the limit and the flag', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const text = configText(lab.config() as BastionConfig) + `# ${'x'.repeat(1000)}\n`.repeat(17 * 1024);
    const r = await daemon.rewriteConfig(text, 30_000);
    assert.equal(r.applied, false);
    assert.match(JSON.stringify(r.record?.errors), /refused: 1[67]\.\d MiB, over the limit of 16 MiB \(raise it with bastion run --max-config-size\)/);
    const since = daemon.mark();
    const back = await daemon.rewriteConfig(lab.config());
    // one CI run in six saw no answer to this small file within 10 s, not seen since: say what the daemon did
    const said = daemon.records.slice(since).filter((x) => !('verdict' in x)).map((x) => `${x.time ?? ''} ${x.msg ?? ''}`);
    assert.ok(back.applied, `the previous config was not applied again within 10 s; the daemon said meanwhile:\n${said.join('\n')}`);
  });

  it('status and policy list work with a large policy set (they overflowed the stack at 250,000 policies)', { timeout: 300_000 }, async (t) => {
    const daemon = lab.requireDaemon();
    const n = 60_000;
    const r = await daemon.rewriteConfig(bigConfig(lab, n), 240_000);
    assert.ok(r.applied, JSON.stringify(r.record));
    const t0 = Date.now();
    const status = await bastion(['status', '--pin-path', lab.pinPath], 120_000);
    t.diagnostic(`status (table) of ${2 * n + 4} rules: ${Date.now() - t0} ms`);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /bulk-web-to-api-59999/);
    const list = await bastion(['policy', 'list', '--pin-path', lab.pinPath, '-o', 'json'], 120_000);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(JSON.parse(list.stdout).length, n + 2);
    const table = await bastion(['policy', 'list', '--pin-path', lab.pinPath], 120_000);
    assert.equal(table.code, 0, table.stderr);
    const back = await daemon.rewriteConfig(lab.config(), 120_000);
    assert.ok(back.applied);
  });
});
