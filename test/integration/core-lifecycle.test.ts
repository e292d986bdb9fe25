/**
 * Core issue, parts 6 and 7: live policy changes and the daemon's life.
 *
 * - A policy added to the file takes effect within a second while a long,
 *   rate-limited allowed transfer keeps flowing unbroken; a policy removed
 *   stops new connections. SIGHUP re-applies.
 * - kill -9 of the daemon leaves enforcement intact (attacks still blocked,
 *   allowed traffic still works) and `status` says the daemon is not
 *   running; SIGTERM likewise; a restart reconciles without duplicate
 *   attachments; `bastion down` leaves nothing behind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  CoreLab,
  bastionDown,
  bastionStatus,
  hasClsact,
  pinsUnder,
  tcBpfFilters,
  type PolicyEntry,
} from '../helpers/bastion-daemon.js';
import {
  arping,
  connectAll,
  echoTransfer,
  expectAllConnect,
  expectNoneConnect,
  nsRun,
  sleep,
  startTcpEcho,
  timeUntilConnect,
  waitFor,
} from '../helpers/probes.js';

const MB = 1024 * 1024;
/** "Within a second", plus one quick probe's own bound (300 ms). */
const TAKES_EFFECT_MS = 1300;

describe('core: live policy changes and daemon lifecycle', () => {
  let lab: CoreLab;
  const web9090: PolicyEntry = { name: 'web-to-api-9090', from: { app: 'web' }, to: { app: 'api' }, ports: ['9090/tcp'] };

  before(async () => {
    lab = await CoreLab.create();
    const { api, db } = lab;
    await Promise.all([startTcpEcho(api.netns, api.ip, 8080), startTcpEcho(api.netns, api.ip, 9090), startTcpEcho(db.netns, db.ip, 5432)]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  /**
   * The core expectations: allowed works (with data, ARP through the stack),
   * attacks and unlisted flows are refused (with static ARP entries, so the
   * IP policy itself is what refuses them).
   */
  async function enforcementHolds(when: string): Promise<void> {
    const { web, api, db, attacker } = lab;
    await lab.flushNeighbours();
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 1 * MB, timeoutMs: 15_000 }).done;
    assert.ok(t.ok, `${when}: web→api:8080 transfer: ${JSON.stringify(t)}`);
    expectAllConnect(await connectAll([[`${when}: api→db:5432`, api.netns, db.ip, 5432]]));
    const a = await arping(attacker.netns, 'eth0', api.ip, 2);
    assert.equal(a.replies, 0, `${when}: arping attacker→api answered:\n${a.output}`);
    await lab.pinNeighbours(['web', 'attacker']);
    expectNoneConnect(
      await connectAll([
        [`${when}: attacker→api:8080`, attacker.netns, api.ip, 8080],
        [`${when}: attacker→db:5432`, attacker.netns, db.ip, 5432],
        [`${when}: web→db:5432`, web.netns, db.ip, 5432],
        [`${when}: web→api:9090`, web.netns, api.ip, 9090],
      ]),
    );
  }

  /** Exactly one BPF filter on each hook of every host veth: from_container on ingress, to_container on egress. */
  async function exactlyOneStackEach(when: string): Promise<void> {
    const problems: string[] = [];
    for (const c of lab.topo.containers) {
      for (const [dir, prog] of [
        ['ingress', 'from_container'],
        ['egress', 'to_container'],
      ] as const) {
        const f = await tcBpfFilters(c.hostIf, dir);
        if (f.length !== 1) problems.push(`${c.name} ${c.hostIf} ${dir}: ${f.length} bpf filters\n    ${f.map((x) => x.line).join('\n    ')}`);
        else if (f[0]!.name && !f[0]!.name.includes(prog)) problems.push(`${c.name} ${c.hostIf} ${dir}: program ${f[0]!.name}, expected ${prog}`);
      }
    }
    assert.deepEqual(problems, [], `${when}: tc filters on the host veths`);
  }

  it('baseline without Bastion: every probe used below succeeds (with and without static ARP entries)', { timeout: 60_000 }, async () => {
    const { web, api, db, attacker } = lab;
    const probes = (label: string) =>
      connectAll([
        [`${label}web→api:8080`, web.netns, api.ip, 8080],
        [`${label}web→api:9090`, web.netns, api.ip, 9090],
        [`${label}attacker→api:8080`, attacker.netns, api.ip, 8080],
        [`${label}attacker→db:5432`, attacker.netns, db.ip, 5432],
        [`${label}web→db:5432`, web.netns, db.ip, 5432],
      ]);
    expectAllConnect(await probes(''));
    await lab.pinNeighbours(['web', 'attacker']);
    expectAllConnect(await probes('[static ARP] '));
    await lab.flushNeighbours();
    const a = await arping(attacker.netns, 'eth0', api.ip, 2);
    assert.ok(a.replies > 0, `arping attacker→api without Bastion:\n${a.output}`);
  });

  it('the daemon starts, becomes ready, and enforces the core config', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
    await enforcementHolds('first start');
    await exactlyOneStackEach('first start');
  });

  it('a policy added to the file takes effect within a second, a removed one stops new connections, a long transfer flows on unbroken', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const { web, api } = lab;
    // ~4.4 MB at ~550 KB/s: about 8 s.
    const long = echoTransfer(web.netns, api.ip, 8080, { bytes: Math.round(4.4 * MB), chunk: 28 * 1024, intervalMs: 50, timeoutMs: 40_000, idleS: 10 });
    await long.firstEcho;
    await sleep(1000);

    const t0 = Date.now();
    const added = await daemon.rewriteConfig(lab.config({ extra: [web9090] }));
    const addMs = await timeUntilConnect(web.netns, api.ip, 9090, true, t0);
    assert.ok(added.applied, `the daemon did not report the new config applied: ${JSON.stringify(added.record)}\n${daemon.describe(20)}`);
    assert.ok(addMs !== undefined, `web→api:9090 never connected after the policy was added (waited 5 s)`);
    assert.ok(addMs <= TAKES_EFFECT_MS, `web→api:9090 first connected ${addMs} ms after the file was written (limit ${TAKES_EFFECT_MS} ms)`);

    await sleep(1000);
    const t1 = Date.now();
    const removed = await daemon.rewriteConfig(lab.config());
    const removeMs = await timeUntilConnect(web.netns, api.ip, 9090, false, t1);
    assert.ok(removed.applied, `the daemon did not report the config applied: ${JSON.stringify(removed.record)}`);
    assert.ok(removeMs !== undefined && removeMs <= TAKES_EFFECT_MS, `web→api:9090 still connected ${removeMs ?? '>5000'} ms after the policy was removed`);
    expectNoneConnect(await connectAll([['web→api:9090 after removal', web.netns, api.ip, 9090]]));

    const r = await long.done;
    assert.ok(r.ok, `the long web→api:8080 transfer across both config changes broke: ${JSON.stringify(r)}`);
    assert.ok(r.ms > 5000, `the transfer should have lasted several seconds (${r.ms} ms)`);
    assert.ok(r.maxGapMs < 1000, `the long transfer stalled for ${r.maxGapMs} ms`);
    console.log(`# policy add took effect after ${addMs} ms, removal after ${removeMs} ms (daemon: applied after ${added.ms}/${removed.ms} ms); transfer ${r.ms} ms, max gap ${r.maxGapMs} ms`);
  });

  it('SIGHUP re-applies the config and changes nothing', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const from = daemon.mark();
    daemon.sighup();
    const rec = await daemon.waitForRecord((r) => typeof r.msg === 'string' && /config (applied|rejected)/i.test(r.msg), 5000, from);
    assert.ok(rec && /applied/i.test(rec.msg), `no "config applied" after SIGHUP: ${JSON.stringify(rec)}\n${daemon.describe(20)}`);
    assert.ok(daemon.running, 'the daemon survives SIGHUP');
    await enforcementHolds('after SIGHUP');
  });

  it('bastion status exits 0 while the daemon runs', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const s = await bastionStatus(lab.pinPath);
    assert.equal(s.code, 0, `status: ${s.raw.stdout}\n${s.raw.stderr}`);
  });

  it('kill -9 of the daemon leaves enforcement intact, and status exits non-zero', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    await daemon.kill9();
    const s = await bastionStatus(lab.pinPath);
    assert.notEqual(s.code, 0, `status after kill -9 should exit non-zero (daemon not running): ${s.raw.stdout}`);
    await enforcementHolds('after kill -9');
    await exactlyOneStackEach('after kill -9');
  });

  it('a restart reconciles without duplicate attachments, and enforces', { timeout: 60_000 }, async () => {
    await lab.startDaemon(null);
    await exactlyOneStackEach('after restart');
    const s = await bastionStatus(lab.pinPath);
    assert.equal(s.code, 0, `status after restart: ${s.raw.stdout}\n${s.raw.stderr}`);
    await enforcementHolds('after restart');
  });

  it("status notices a stack removed behind the daemon's back (or the daemon restores it); a restart re-attaches it", { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const victim = lab.attacker;
    const del = await nsRun(null, 'tc', ['qdisc', 'del', 'dev', victim.hostIf, 'clsact'], { timeoutMs: 5000 });
    assert.equal(del.code, 0, `tc qdisc del dev ${victim.hostIf} clsact: ${del.stderr}`);
    await sleep(500);
    const s = await bastionStatus(lab.pinPath);
    const restored = (await tcBpfFilters(victim.hostIf, 'ingress')).length === 1 && (await tcBpfFilters(victim.hostIf, 'egress')).length === 1;
    assert.ok(
      s.code !== 0 || restored,
      `status exits 0 although ${victim.name}'s stack is gone from ${victim.hostIf} and was not restored:\n${s.raw.stdout.slice(0, 1500)}`,
    );
    await daemon.kill9();
    await lab.startDaemon(null);
    await exactlyOneStackEach('after a restart that found a stack missing');
    const s2 = await bastionStatus(lab.pinPath);
    assert.equal(s2.code, 0, `status after the restart: ${s2.raw.stdout.slice(0, 1500)}`);
    await enforcementHolds('after a restart that found a stack missing');
  });

  it('SIGTERM stops the daemon (it exits within 10 s)', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const from = daemon.mark();
    daemon.signal('SIGTERM');
    const exit = await Promise.race([daemon.exited, sleep(10_000).then(() => undefined)]);
    try {
      assert.ok(
        exit,
        `the daemon did not exit within 10 s of SIGTERM; what it logged after the signal:\n${daemon.records
          .slice(from)
          .filter((r) => r.msg !== 'flow')
          .map((r) => JSON.stringify(r))
          .join('\n')}`,
      );
    } finally {
      await daemon.kill9(); // so that the rest of the lifecycle still gets tested
    }
  });

  it('after SIGTERM enforcement stays in place; another restart still has one filter per hook', { timeout: 60_000 }, async () => {
    await enforcementHolds('after SIGTERM');
    await lab.startDaemon(null);
    await exactlyOneStackEach('after the second restart');
    await enforcementHolds('after the second restart');
  });

  it('bastion down removes every stack and pin: no pins, no clsact, no filters, and traffic is no longer filtered', { timeout: 60_000 }, async () => {
    const daemon = lab.requireDaemon();
    const r = await bastionDown(lab.pinPath);
    assert.equal(r.code, 0, `bastion down: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    assert.ok(await waitFor(() => !daemon.running, 5000), 'the daemon is still running after bastion down');
    assert.deepEqual(pinsUnder(lab.pinPath), [], `pins left under ${lab.pinPath}`);
    const left = await lab.bpfFilters();
    for (const c of lab.topo.containers) if (await hasClsact(c.hostIf)) left.push(`${c.hostIf}: clsact qdisc`);
    assert.deepEqual(left, [], 'Bastion left these on the host veths');
    const { web, api, db, attacker } = lab;
    await lab.flushNeighbours();
    expectAllConnect(
      await connectAll([
        ['attacker→api:8080 after down', attacker.netns, api.ip, 8080],
        ['web→db:5432 after down', web.netns, db.ip, 5432],
        ['web→api:8080 after down', web.netns, api.ip, 8080],
      ]),
    );
    const s = await bastionStatus(lab.pinPath);
    assert.notEqual(s.code, 0, 'status after down exits non-zero');
  });
});
