/**
 * Core issue, part 1: identity-based stateful isolation between containers.
 *
 * web, api, db and attacker on one bridge; policies web→api 8080/tcp and
 * api→db 5432/tcp. Every probe is first shown to succeed without Bastion,
 * so its failure under Bastion means "blocked", not "broken probe".
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreLab, bastionStatus, recordMentions as mentions, type BastionDaemon, type PolicyEntry } from '../helpers/bastion-daemon.js';
import { FLOW_SUMMARY_INTERVAL_MS } from '../../src/agent/datapath-agent.js';
import {
  connectAll,
  echoTransfer,
  expectAllConnect,
  expectNoneConnect,
  ping,
  startTcpEcho,
  startUdpEcho,
  udpEcho,
} from '../helpers/probes.js';

const MB = 1024 * 1024;

/** Every object inside `json` that has a `name` among `names`. */
function objectsNamed(json: unknown, names: string[]): Map<string, Record<string, unknown>> {
  const found = new Map<string, Record<string, unknown>>();
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.name === 'string' && names.includes(o.name) && !found.has(o.name)) found.set(o.name, o);
      Object.values(o).forEach(walk);
    }
  };
  walk(json);
  return found;
}

/** Numbers under keys matching `key`, anywhere inside `v`. */
function numbersUnder(v: unknown, key: RegExp): number[] {
  const out: number[] = [];
  const walk = (x: unknown) => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (x && typeof x === 'object') {
      for (const [k, y] of Object.entries(x)) {
        if (key.test(k) && typeof y === 'number') out.push(y);
        walk(y);
      }
    }
  };
  walk(v);
  return out;
}

describe('core: isolation between containers (web→api 8080/tcp, api→db 5432/tcp)', () => {
  let lab: CoreLab;
  let daemon: BastionDaemon;

  before(async () => {
    lab = await CoreLab.create();
    const { web, api, db, attacker } = lab;
    await Promise.all([
      startTcpEcho(api.netns, api.ip, 8080),
      startTcpEcho(api.netns, api.ip, 9090),
      startUdpEcho(api.netns, api.ip, 8080),
      startUdpEcho(api.netns, api.ip, 9095),
      startTcpEcho(web.netns, web.ip, 8080),
      startTcpEcho(db.netns, db.ip, 5432),
      startTcpEcho(attacker.netns, attacker.ip, 8080),
    ]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('baseline without Bastion: every probe used below succeeds (with and without static ARP entries)', { timeout: 60_000 }, async () => {
    assert.deepEqual(await lab.bpfFilters(), [], 'no Bastion filter may be on the veths before the daemon runs');
    const { web, api, db, attacker } = lab;
    const probes: Array<[string, string, string, number]> = [
      ['web→api:8080', web.netns, api.ip, 8080],
      ['web→api:9090', web.netns, api.ip, 9090],
      ['api→web:8080', api.netns, web.ip, 8080],
      ['web→db:5432', web.netns, db.ip, 5432],
      ['api→db:5432', api.netns, db.ip, 5432],
      ['db→api:8080', db.netns, api.ip, 8080],
      ['attacker→web:8080', attacker.netns, web.ip, 8080],
      ['attacker→api:8080', attacker.netns, api.ip, 8080],
      ['attacker→db:5432', attacker.netns, db.ip, 5432],
      ['web→attacker:8080', web.netns, attacker.ip, 8080],
      ['api→attacker:8080', api.netns, attacker.ip, 8080],
    ];
    const all = (label: string) => probes.map(([what, ns, ip, port]): [string, string, string, number] => [`${label}${what}`, ns, ip, port]);
    expectAllConnect(await connectAll(all('')));
    await lab.pinNeighbours();
    expectAllConnect(await connectAll(all('[static ARP] ')));
    await lab.flushNeighbours();
    for (const port of [8080, 9095]) {
      const udp = await udpEcho(web.netns, api.ip, port);
      assert.ok(udp.ok, `udp echo web→api:${port} without Bastion: ${udp.detail}`);
    }
    assert.ok(await ping(web.netns, api.ip), 'ping web→api without Bastion');
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 4 * MB }).done;
    assert.ok(t.ok, `4 MB echo transfer web→api:8080 without Bastion: ${JSON.stringify(t)}`);
  });

  it('the daemon starts and becomes ready with the core config', { timeout: 60_000 }, async () => {
    daemon = await lab.startDaemon();
  });

  it('web→api:8080 moves 4 MB both ways intact (checksums equal), repeatedly', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const { web, api } = lab;
    for (let i = 0; i < 3; i++) {
      const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 4 * MB, timeoutMs: 20_000 }).done;
      assert.ok(t.ok, `transfer ${i + 1}: sent ${t.sent} bytes (sha ${t.sentSha.slice(0, 12)}), got back ${t.received} (sha ${t.receivedSha.slice(0, 12)}), exit ${t.code}, ${t.stderr}`);
    }
  });

  it('api→db:5432 (the second policy) connects and moves data', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { api, db } = lab;
    const t = await echoTransfer(api.netns, db.ip, 5432, { bytes: 1 * MB, timeoutMs: 15_000 }).done;
    assert.ok(t.ok, `api→db:5432 transfer: ${JSON.stringify(t)}`);
  });

  /** Every probe that must be refused; run as a container would, then again with static ARP entries. */
  async function refusals(label: string): Promise<void> {
    const { web, api, db, attacker } = lab;
    expectNoneConnect(
      await connectAll([
        [`${label} web→api:9090 (port no policy names)`, web.netns, api.ip, 9090],
        [`${label} api→web:8080 (reverse of web→api)`, api.netns, web.ip, 8080],
        [`${label} web→db:5432 (no web→db policy)`, web.netns, db.ip, 5432],
        [`${label} db→api:8080 (reverse of api→db, other port)`, db.netns, api.ip, 8080],
        [`${label} attacker→web:8080`, attacker.netns, web.ip, 8080],
        [`${label} attacker→api:8080`, attacker.netns, api.ip, 8080],
        [`${label} attacker→api:9090`, attacker.netns, api.ip, 9090],
        [`${label} attacker→db:5432`, attacker.netns, db.ip, 5432],
        [`${label} web→attacker:8080`, web.netns, attacker.ip, 8080],
        [`${label} api→attacker:8080`, api.netns, attacker.ip, 8080],
      ]),
    );
    const udp = await udpEcho(web.netns, api.ip, 8080);
    assert.equal(udp.ok, false, `${label} udp web→api:8080 must be refused (the policy says 8080/tcp): ${udp.detail}`);
    assert.equal(await ping(web.netns, api.ip), false, `${label} icmp web→api must be refused (the policy does not name icmp)`);
    assert.equal(await ping(attacker.netns, api.ip), false, `${label} icmp attacker→api must be refused`);
  }

  it('refused: another port, udp, icmp, the reverse direction, web→db, db→api, and every attacker connection', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    await refusals('');
  });

  it('refused likewise with static ARP entries everywhere (the IP policy itself decides, not ARP)', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    await lab.pinNeighbours();
    await refusals('[static ARP]');
  });

  it('the allowed path still works after all those drops (no collateral damage)', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api } = lab;
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 1 * MB }).done;
    assert.ok(t.ok, `web→api:8080 transfer after the drops: ${JSON.stringify(t)}`);
  });

  it('a drop is logged as a JSON line naming containers, addresses, ports, verdict and reason', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { api, attacker } = lab;
    const from = daemon.mark();
    expectNoneConnect(await connectAll([['attacker→api:8080', attacker.netns, api.ip, 8080]], 1));
    const rec = await daemon.waitForRecord(
      (r) => 'verdict' in r && 'reason' in r && /drop|deny|denied|block/i.test(String(r.verdict)) && mentions(r, attacker.ip, api.ip, 8080),
      3000,
      from,
    );
    assert.ok(rec, `no drop line for attacker(${attacker.ip})→api(${api.ip}):8080 in the daemon's stdout\n${daemon.describe(20)}`);
    assert.ok(mentions(rec, 'attacker'), `the drop line should name the source container "attacker": ${JSON.stringify(rec)}`);
    assert.ok(mentions(rec, 'api'), `the drop line should name the destination container "api": ${JSON.stringify(rec)}`);
    assert.ok(String(rec.reason).length > 0, `the drop line should give a reason: ${JSON.stringify(rec)}`);
  });

  it('an allowed connection is logged with an allowing verdict', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api } = lab;
    const from = daemon.mark();
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    // web → api:8080 was seen before: this connection is counted in the kernel and logged
    // with the key's next summary (bpf/lib/summary.h), within FLOW_SUMMARY_INTERVAL_MS
    const rec = await daemon.waitForRecord(
      (r) => 'verdict' in r && /allow|forward|pass|redirect/i.test(String(r.verdict)) && mentions(r, web.ip, api.ip, 8080),
      FLOW_SUMMARY_INTERVAL_MS + 3000,
      from,
    );
    assert.ok(rec, `no allowed-connection line for web(${web.ip})→api(${api.ip}):8080\n${daemon.describe(20)}`);
    assert.ok(mentions(rec, 'web') && mentions(rec, 'api'), `the line should name web and api: ${JSON.stringify(rec)}`);
  });

  it('port ranges and icmp in a policy: "8070-8090/udp" and "icmp" open exactly that', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    const { web, api } = lab;
    const extra: PolicyEntry = { name: 'web-to-api-extra', from: { app: 'web' }, to: { app: 'api' }, ports: ['8070-8090/udp', 'icmp'] };
    const res = await d.rewriteConfig(lab.config({ extra: [extra] }));
    assert.ok(res.applied, `config with udp range and icmp not applied: ${JSON.stringify(res.record)}\n${d.describe(20)}`);
    const inRange = await udpEcho(web.netns, api.ip, 8080);
    assert.ok(inRange.ok, `udp web→api:8080 (inside 8070-8090/udp) should pass: ${inRange.detail}`);
    const outOfRange = await udpEcho(web.netns, api.ip, 9095);
    assert.equal(outOfRange.ok, false, `udp web→api:9095 (outside the range) should be refused: ${outOfRange.detail}`);
    assert.ok(await ping(web.netns, api.ip), 'icmp web→api should pass with "icmp" in the policy');
    assert.equal(await ping(api.netns, web.ip), false, 'icmp api→web (reverse direction) should still be refused');
    expectNoneConnect(await connectAll([['web→api:9090/tcp (tcp untouched by the udp range)', web.netns, api.ip, 9090]]));
  });

  it('`from: {}` selects every managed container', { timeout: 60_000 }, async () => {
    const d = lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    const everyone: PolicyEntry = { name: 'all-to-db', from: {}, to: { app: 'db' }, ports: ['5432/tcp'] };
    const res = await d.rewriteConfig(lab.config({ extra: [everyone] }));
    assert.ok(res.applied, `config with from: {} not applied: ${JSON.stringify(res.record)}\n${d.describe(20)}`);
    expectAllConnect(
      await connectAll([
        ['web→db:5432', web.netns, db.ip, 5432],
        ['attacker→db:5432', attacker.netns, db.ip, 5432],
        ['api→db:5432', api.netns, db.ip, 5432],
      ]),
    );
    expectNoneConnect(await connectAll([['attacker→api:8080 (not in all-to-db)', attacker.netns, api.ip, 8080]]));
    const back = await d.rewriteConfig(lab.config());
    assert.ok(back.applied, 'the core config re-applies');
    expectNoneConnect(await connectAll([['attacker→db:5432 after all-to-db was removed', attacker.netns, db.ip, 5432]]));
  });

  it('bastion status --json exits 0 and lists the 4 containers with identities, interfaces, rules and counters', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const s = await bastionStatus(lab.pinPath);
    assert.equal(s.code, 0, `status exit code while the daemon runs\n${s.raw.stdout}\n${s.raw.stderr}`);
    assert.ok(s.json, `status --json printed no JSON: ${s.raw.stdout.slice(0, 500)}`);
    const names = ['web', 'api', 'db', 'attacker'];
    const found = objectsNamed(s.json, names);
    assert.deepEqual([...found.keys()].sort(), [...names].sort(), `containers listed by status: ${JSON.stringify(s.json).slice(0, 2000)}`);
    const identities = new Set<unknown>();
    for (const [name, o] of found) {
      const idKey = Object.keys(o).find((k) => /identity/i.test(k));
      assert.ok(idKey && typeof o[idKey] === 'number', `${name}: no numeric identity in ${JSON.stringify(o)}`);
      identities.add(o[idKey]);
      assert.ok(Object.keys(o).some((k) => /counter|stats|packets|bytes|drops/i.test(k)), `${name}: no counters in ${JSON.stringify(o)}`);
    }
    assert.equal(identities.size, 4, 'every container has its own identity');
    const text = JSON.stringify(s.json);
    for (const c of lab.topo.containers) assert.ok(text.includes(`"${c.hostIf}"`), `status should list ${c.name}'s host interface ${c.hostIf}`);
    for (const rule of ['web-to-api', 'api-to-db']) assert.ok(text.includes(rule), `status should list the rule ${rule}`);
    // Counters move: the attacker's refused attempts above are counted as drops.
    const drops = numbersUnder(found.get('attacker'), /drop/i);
    assert.ok(drops.some((n) => n > 0), `attacker's drop counters should be > 0 after its refused connections: ${JSON.stringify(found.get('attacker'))}`);
  });
});
