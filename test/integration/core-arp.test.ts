/**
 * Core issue, part 2: the direct ARP handler. Discovery (arping, nmap -sn)
 * reveals to a container exactly its dependencies; ARP requests are answered
 * by the stack with the true MAC and never broadcast on the bridge.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CoreLab } from '../helpers/bastion-daemon.js';
import {
  arping,
  captureMany,
  connectAll,
  expectAllConnect,
  expectNoneConnect,
  flushNeighbours,
  neighbour,
  nmapPingScan,
  startTcpEcho,
  usableMac,
} from '../helpers/probes.js';

/** ARP requests from `ip` among captured tcpdump lines ("Request who-has X tell ip"). */
function requestsFrom(lines: string[], ip: string): string[] {
  return lines.filter((l) => /Request who-has/i.test(l) && l.includes(`tell ${ip},`));
}

describe('core: ARP and discovery (web→api 8080/tcp, api→db 5432/tcp)', () => {
  let lab: CoreLab;
  const scanned = (lab: CoreLab) => lab.scanCidr;

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([startTcpEcho(lab.api.netns, lab.api.ip, 8080), startTcpEcho(lab.db.netns, lab.db.ip, 5432)]);
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('baseline without Bastion: arping and nmap discover everyone, ARP broadcasts reach every container', { timeout: 90_000 }, async () => {
    const { web, api, db, attacker } = lab;
    const scan = await nmapPingScan(attacker.netns, 'eth0', scanned(lab));
    for (const c of [web, api, db]) assert.ok(scan.up.includes(c.ip), `nmap -sn from attacker should find ${c.name} (${c.ip}) without Bastion:\n${scan.output}`);

    const a = await arping(attacker.netns, 'eth0', api.ip);
    assert.deepEqual(a.macs, [api.mac], `arping attacker→api without Bastion:\n${a.output}`);
    const b = await arping(web.netns, 'eth0', db.ip);
    assert.deepEqual(b.macs, [db.mac], `arping web→db without Bastion:\n${b.output}`);

    // The captures below see web's ARP requests when they are broadcast.
    const watchers = [api, db, attacker];
    const { captures } = await captureMany(
      watchers.map((c) => ({ ns: c.netns, iface: 'eth0', filter: 'arp' })),
      () => arping(web.netns, 'eth0', api.ip, 2),
    );
    for (const [i, c] of watchers.entries()) {
      assert.ok(requestsFrom(captures[i]!.packets, web.ip).length > 0, `${c.name} should see web's ARP broadcast without Bastion:\n${captures[i]!.packets.join('\n')}`);
    }
    await Promise.all([web, api, db, attacker].map((c) => flushNeighbours(c.netns)));
  });

  it('the daemon starts and becomes ready with the core config', { timeout: 60_000 }, async () => {
    await lab.startDaemon();
  });

  it('nmap -sn from attacker finds no container', { timeout: 90_000 }, async () => {
    lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    const scan = await nmapPingScan(attacker.netns, 'eth0', scanned(lab));
    const leaked = [web, api, db].filter((c) => scan.up.includes(c.ip)).map((c) => `${c.name} (${c.ip})`);
    assert.deepEqual(leaked, [], `nmap -sn from attacker found containers:\n${scan.output}`);
  });

  it('arping from attacker gets no answer from any container', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    const results = await Promise.all([web, api, db].map((c) => arping(attacker.netns, 'eth0', c.ip, 2)));
    for (const [i, c] of [web, api, db].entries()) {
      assert.equal(results[i]!.replies, 0, `arping attacker→${c.name} (${c.ip}) got answers:\n${results[i]!.output}`);
    }
  });

  it("web's ARP for api is answered with api's true MAC", { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api } = lab;
    const r = await arping(web.netns, 'eth0', api.ip, 2);
    assert.ok(r.replies >= 1, `arping web→api got no answer:\n${r.output}`);
    assert.deepEqual(r.macs, [api.mac], `arping web→api answered with ${r.macs.join(', ')}, api's MAC is ${api.mac}:\n${r.output}`);
  });

  it("web's neighbour table gets api's true MAC when web connects to api:8080", { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, api } = lab;
    await flushNeighbours(web.netns);
    expectAllConnect(await connectAll([['web→api:8080', web.netns, api.ip, 8080]]));
    const n = await neighbour(web.netns, api.ip);
    assert.equal(usableMac(n), api.mac, `web's neighbour entry for api: ${JSON.stringify(n)}`);
  });

  it("web's ARP for db gets nothing, and web's kernel never learns db's MAC", { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    const { web, db } = lab;
    const r = await arping(web.netns, 'eth0', db.ip, 2);
    assert.equal(r.replies, 0, `arping web→db got answers:\n${r.output}`);
    expectNoneConnect(await connectAll([['web→db:5432', web.netns, db.ip, 5432]]));
    const n = await neighbour(web.netns, db.ip);
    assert.equal(usableMac(n), undefined, `web's neighbour entry for db should be absent or failed: ${JSON.stringify(n)}`);
  });

  it("api's, db's and attacker's interfaces never see web's ARP requests", { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    const watchers = [api, db, attacker];
    const { captures } = await captureMany(
      watchers.map((c) => ({ ns: c.netns, iface: 'eth0', filter: 'arp' })),
      async () => {
        await arping(web.netns, 'eth0', api.ip, 3);
        await arping(web.netns, 'eth0', db.ip, 2);
        await arping(web.netns, 'eth0', attacker.ip, 2);
      },
    );
    for (const [i, c] of watchers.entries()) {
      const got = requestsFrom(captures[i]!.packets, web.ip);
      assert.deepEqual(got, [], `${c.name}'s eth0 saw web's ARP requests:\n${got.join('\n')}`);
    }
  });

  it('an ARP scan from a container reveals exactly its dependencies', { timeout: 90_000 }, async () => {
    lab.requireDaemon();
    const { web, api, db, attacker } = lab;
    const fromWeb = await nmapPingScan(web.netns, 'eth0', scanned(lab));
    assert.ok(fromWeb.up.includes(api.ip), `nmap -sn from web should find api (its dependency):\n${fromWeb.output}`);
    for (const c of [db, attacker]) assert.ok(!fromWeb.up.includes(c.ip), `nmap -sn from web found ${c.name}:\n${fromWeb.output}`);
    const fromApi = await nmapPingScan(api.netns, 'eth0', scanned(lab));
    assert.ok(fromApi.up.includes(db.ip), `nmap -sn from api should find db (its dependency):\n${fromApi.output}`);
    assert.ok(!fromApi.up.includes(attacker.ip), `nmap -sn from api found attacker:\n${fromApi.output}`);
  });
});
