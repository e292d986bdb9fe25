/**
 * Core issue, part 9: audit mode drops nothing and records what enforce mode
 * would have dropped. Switching the same daemon to enforce then refuses the
 * very connections audit let through (so the probes do tell the difference).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreLab, recordMentions as mentions } from '../helpers/bastion-daemon.js';
import { connectAll, echoTransfer, expectAllConnect, expectNoneConnect, startTcpEcho } from '../helpers/probes.js';
import { FLOW_SUMMARY_INTERVAL_MS } from '../../src/agent/datapath-agent.js';

describe('core: audit mode', () => {
  let lab: CoreLab;

  before(async () => {
    lab = await CoreLab.create();
    const { web, api, db } = lab;
    await Promise.all([startTcpEcho(api.netns, api.ip, 8080), startTcpEcho(db.netns, db.ip, 5432), startTcpEcho(web.netns, web.ip, 8080)]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('the daemon starts and becomes ready with the core policies in audit mode', { timeout: 60_000 }, async () => {
    await lab.startDaemon(lab.config({ mode: 'audit' }));
  });

  it('audit mode drops nothing: what enforce would refuse connects', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    expectAllConnect(
      await connectAll([
        ['attacker→api:8080', attacker.netns, api.ip, 8080],
        ['attacker→db:5432', attacker.netns, db.ip, 5432],
        ['web→db:5432', web.netns, db.ip, 5432],
        ['api→web:8080', api.netns, web.ip, 8080],
        ['web→api:8080', web.netns, api.ip, 8080],
      ]),
    );
    const t = await echoTransfer(attacker.netns, api.ip, 8080, { bytes: 1024 * 1024 }).done;
    assert.ok(t.ok, `attacker→api:8080 transfer in audit mode: ${JSON.stringify(t)}`);
  });

  it('audit mode records what it would have dropped (verdict AUDIT or similar) with containers, addresses and port', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const { api, attacker } = lab;
    const from = daemon.mark();
    expectAllConnect(await connectAll([['attacker→api:8080', attacker.netns, api.ip, 8080]]));
    // an event if it is the first of its key, else in the key's next summary (bpf/lib/summary.h)
    const rec = await daemon.waitForRecord((r) => 'verdict' in r && /audit/i.test(`${r.verdict} ${r.reason}`) && mentions(r, attacker.ip, api.ip, 8080), FLOW_SUMMARY_INTERVAL_MS + 3000, from);
    assert.ok(rec, `no audit record for attacker(${attacker.ip})→api(${api.ip}):8080\n${daemon.describe(30)}`);
    assert.ok(mentions(rec, 'attacker') && mentions(rec, 'api'), `the audit record should name attacker and api: ${JSON.stringify(rec)}`);
    // Nothing for that flow says it was dropped.
    const dropped = daemon.flows(from).filter((r) => /drop/i.test(String(r.verdict)) && mentions(r, attacker.ip, api.ip));
    assert.deepEqual(dropped, [], 'audit mode logged drops');
  });

  it('switched to enforce, the same daemon refuses what audit let through', { timeout: 30_000 }, async () => {
    const daemon = lab.requireDaemon();
    const res = await daemon.rewriteConfig(lab.config({ mode: 'enforce' }));
    assert.ok(res.applied, `enforce config not applied: ${JSON.stringify(res.record)}\n${daemon.describe(20)}`);
    const { web, api, db, attacker } = lab;
    expectNoneConnect(
      await connectAll([
        ['attacker→api:8080', attacker.netns, api.ip, 8080],
        ['web→db:5432', web.netns, db.ip, 5432],
        ['api→web:8080', api.netns, web.ip, 8080],
      ]),
    );
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
  });
});
