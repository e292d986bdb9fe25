/**
 * Drift repair on the real datapath: what the daemon wants is put back when
 * something else changes it, and a container whose namespace is created
 * again is protected again, without a daemon restart.
 *
 * Each test changes the kernel by hand, the way another tool or an operator
 * would (the libbpf map API on the daemon's pinned maps, `tc`, `ip netns`),
 * and waits for the daemon's drift check (every second here) to put it
 * right, while connections that the policy denies are tried again and again:
 * a deleted entry or stack must never let one of them through. Each repair
 * is logged, counted in /metrics and shown by `bastion flows` as a REPAIRED
 * flow.
 */
import { after, before, describe, it } from 'node:test';
import { request } from 'node:http';
import assert from 'node:assert/strict';
import { CoreLab, bastion, bastionStatus, type BastionDaemon, type CoreName } from '../helpers/bastion-daemon.js';
import { connectAll, nsRun, sleep, startTcpEcho, tcpConnectQuick, waitFor, type ConnectResult } from '../helpers/probes.js';
import { pinNeighbour } from '../helpers/attacks.js';
import { openBastionMaps } from '../../src/datapath/bpf-map.js';
import { DIR_EGRESS, DIR_INGRESS, encodeU32 } from '../../src/datapath/layout.js';
import { apiCall } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';

/** Connections the core policy denies: none may get through while the kernel is changed by hand. */
const DENIED: Array<[string, CoreName, CoreName, number]> = [
  ['web→db:5432', 'web', 'db', 5432],
  ['attacker→api:8080', 'attacker', 'api', 8080],
  ['attacker→db:5432', 'attacker', 'db', 5432],
  ['db→api:8080', 'db', 'api', 8080],
];

/** Tries the denied connections over and over until stopped; returns those that got through. */
function deniedProbes(lab: CoreLab): { stop(): Promise<string[]>; rounds(): number } {
  let stopped = false;
  let rounds = 0;
  const through: string[] = [];
  const loop = (async () => {
    while (!stopped) {
      const results = await connectAll(DENIED.map(([name, from, to, port]) => [name, lab.c(from).netns, lab.c(to).ip, port]), 1);
      for (const [name, r] of results as Array<[string, ConnectResult]>) if (r.ok) through.push(`${name} (${r.detail})`);
      rounds++;
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return through;
    },
    rounds: () => rounds,
  };
}

/** Waits until `from` reaches `to`:`port` again; returns how long it took (ms), or undefined. */
async function untilConnects(lab: CoreLab, from: CoreName, to: CoreName, port: number, maxMs: number): Promise<number | undefined> {
  const t0 = Date.now();
  while (Date.now() - t0 < maxMs) {
    if ((await tcpConnectQuick(lab.c(from).netns, lab.c(to).ip, port, 300)).ok) return Date.now() - t0;
    await sleep(100);
  }
  return undefined;
}

async function endpointOf(lab: CoreLab, name: string): Promise<{ identity: number; hostIfindex: number; hostInterface: string; stack: { ok: boolean } }> {
  const s = await bastionStatus(lab.pinPath);
  const ep = (s.json?.endpoints ?? []).find((e: { name: string }) => e.name === name);
  assert.ok(ep, `status lists ${name}: ${s.raw.stdout}${s.raw.stderr}`);
  return ep;
}

/** GET /metrics over the daemon's socket (text, not JSON). */
function metricsText(lab: CoreLab): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socketPathFor(lab.pinPath), path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

function repairCount(metrics: string, map: string, kind: string): number {
  const m = new RegExp(`^bastion_drift_repairs_total\\{map="${map}",kind="${kind}"\\} (\\d+)`, 'm').exec(metrics);
  return m ? Number(m[1]) : 0;
}

async function repairedFlows(lab: CoreLab): Promise<Array<{ reason: string; endpoint?: string }>> {
  const r = await bastion(['flows', '--verdict', 'REPAIRED', '-o', 'json', '-n', '200', '--pin-path', lab.pinPath]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim() ? r.stdout.trim().split('\n').map((l) => JSON.parse(l)) : [];
}

describe('core: drift repair (map entries, stacks, namespaces that come back)', () => {
  let lab: CoreLab;
  let d: BastionDaemon;

  before(async () => {
    lab = await CoreLab.create();
    await Promise.all([startTcpEcho(lab.api.netns, lab.api.ip, 8080), startTcpEcho(lab.db.netns, lab.db.ip, 5432)]);
    d = await lab.startDaemon(lab.config(), ['--verify-interval', '1']);
    await lab.pinNeighbours();
  });

  after(async () => {
    await lab?.cleanup();
  });

  it('the core policy holds before anything is changed', { timeout: 30_000 }, async () => {
    lab.requireDaemon();
    assert.ok((await tcpConnectQuick(lab.web.netns, lab.api.ip, 8080, 1000)).ok, 'web→api:8080');
    const probes = deniedProbes(lab);
    await sleep(500);
    assert.deepEqual(await probes.stop(), []);
  });

  it('a policy entry deleted by hand is back within seconds; denied connections stay denied meanwhile', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const web = await endpointOf(lab, 'web');
    const api = await endpointOf(lab, 'api');
    const before = await metricsText(lab);
    const from = d.mark();
    const maps = openBastionMaps(lab.pinPath);
    let deleted = 0;
    try {
      const probes = deniedProbes(lab);
      // web's egress to api and api's ingress from web: web→api:8080 is denied until they are back
      for (const [k] of [...maps.policy.entries()]) {
        if ((k.epId === web.identity && k.peerId === api.identity && k.direction === DIR_EGRESS) || (k.epId === api.identity && k.peerId === web.identity && k.direction === DIR_INGRESS)) {
          assert.ok(maps.policy.delete(k));
          deleted++;
        }
      }
      assert.equal(deleted, 2, 'the two entries of web-to-api');
      const took = await untilConnects(lab, 'web', 'api', 8080, 8000);
      const through = await probes.stop();
      assert.ok(took !== undefined, `web→api:8080 never came back\n${d.describe()}`);
      assert.deepEqual(through, [], 'a denied connection got through while entries were missing');
      assert.ok(probes.rounds() > 0);
    } finally {
      maps.close();
    }
    const rec = await d.waitForRecord((r) => r.msg === 'drift repaired: map entry' && r.map === 'bastion_policy' && r.kind === 'missing', 5000, from);
    assert.ok(rec, 'the repair is logged');
    assert.equal(repairCount(await metricsText(lab), 'bastion_policy', 'missing') - repairCount(before, 'bastion_policy', 'missing'), 2);
    const flows = await repairedFlows(lab);
    assert.ok(flows.some((f) => f.reason === 'bastion_policy-missing' && f.endpoint === 'web'), `REPAIRED flows: ${JSON.stringify(flows)}`);
    // and in the flow history on disk, like a packet's record (it was only in memory before)
    const inHistory = await waitFor(async () => {
      const h = await bastion(['flows', '--since', '10m', '--verdict', 'REPAIRED', '-o', 'json', '--pin-path', lab.pinPath]);
      return h.code === 0 && h.stdout.split('\n').some((l) => l.includes('"bastion_policy-missing"') && l.includes('"endpoint":"web"'));
    }, 10_000);
    assert.ok(inHistory, 'the repair is in the flow history (bastion flows --since 10m --verdict REPAIRED)');
  });

  it('an endpoint entry deleted by hand is back within seconds (the stack drops everything meanwhile)', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const web = await endpointOf(lab, 'web');
    const from = d.mark();
    const maps = openBastionMaps(lab.pinPath);
    try {
      const probes = deniedProbes(lab);
      assert.ok(maps.endpoints.raw.delete(encodeU32(web.hostIfindex)));
      const took = await untilConnects(lab, 'web', 'api', 8080, 8000);
      const through = await probes.stop();
      assert.ok(took !== undefined, `web→api:8080 never came back\n${d.describe()}`);
      assert.deepEqual(through, []);
      assert.ok(maps.endpoints.get(web.hostIfindex), 'the entry is back');
    } finally {
      maps.close();
    }
    assert.ok(await d.waitForRecord((r) => r.msg === 'drift repaired: map entry' && r.map === 'bastion_ep' && r.kind === 'missing', 5000, from));
  });

  it('an entry added by hand (allowing what the policy denies) is taken away within seconds', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const attacker = await endpointOf(lab, 'attacker');
    const api = await endpointOf(lab, 'api');
    const from = d.mark();
    const maps = openBastionMaps(lab.pinPath);
    try {
      const key = { prefixlen: 72, epId: attacker.identity, peerId: api.identity, direction: DIR_EGRESS, proto: 0, dport: 0 };
      maps.policy.set(key, { ruleId: 999, flags: 0 });
      assert.ok(await waitFor(() => maps.policy.get(key) === undefined, 8000, 100), 'the stray entry is gone');
    } finally {
      maps.close();
    }
    assert.ok(await d.waitForRecord((r) => r.msg === 'drift repaired: map entry' && r.map === 'bastion_policy' && r.kind === 'extra', 5000, from));
  });

  it('a tc filter deleted by hand, and a clsact qdisc deleted with its filters, are attached again within seconds', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const from = d.mark();
    const probes = deniedProbes(lab);
    const del = await nsRun(null, 'tc', ['filter', 'del', 'dev', lab.web.hostIf, 'ingress']);
    assert.equal(del.code, 0, del.stderr);
    const delQ = await nsRun(null, 'tc', ['qdisc', 'del', 'dev', lab.api.hostIf, 'clsact']);
    assert.equal(delQ.code, 0, delQ.stderr);
    const back = await waitFor(async () => {
      const f = await lab.bpfFilters();
      return ['ingress', 'egress'].every((dir) => [lab.web.hostIf, lab.api.hostIf].every((dev) => f.some((l) => l.startsWith(`${dev} ${dir}:`))));
    }, 8000, 100);
    const through = await probes.stop();
    assert.ok(back, `stacks not back: ${(await lab.bpfFilters()).join('\n')}\n${d.describe()}`);
    assert.deepEqual(through, [], 'a denied connection got through while a stack was missing');
    assert.ok((await tcpConnectQuick(lab.web.netns, lab.api.ip, 8080, 1000)).ok);
    const web = await endpointOf(lab, 'web');
    assert.ok(web.stack.ok);
    for (const dev of [lab.web.hostIf, lab.api.hostIf]) {
      assert.ok(await d.waitForRecord((r) => r.msg === 'drift repaired: stack attached again' && r.hostInterface === dev, 5000, from), `repair of ${dev} logged`);
    }
    const flows = await repairedFlows(lab);
    assert.ok(flows.some((f) => f.reason === 'stack-reattached'));
  });

  it('a namespace deleted and created again (a container restart) is protected again by the periodic check, with a new identity', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const old = await endpointOf(lab, 'web');
    const ip = lab.web.ip;
    const from = d.mark();
    await lab.topo.removeContainer('web');
    const web = await lab.topo.addContainer({ name: 'web', ip });
    await pinNeighbour(web.netns, 'eth0', lab.gateway, lab.topo.bridgeMac);
    for (const o of ['api', 'db', 'attacker'] as const) await pinNeighbour(web.netns, 'eth0', lab.c(o).ip, lab.c(o).mac);
    for (const o of ['api', 'db', 'attacker'] as const) await pinNeighbour(lab.c(o).netns, 'eth0', web.ip, web.mac);
    const took = await untilConnects(lab, 'web', 'api', 8080, 10_000);
    assert.ok(took !== undefined, `web never protected again\n${d.describe()}`);
    const now = await endpointOf(lab, 'web');
    assert.equal(now.hostIfindex, web.hostIfindex, 'on its new veth');
    assert.notEqual(now.identity, old.identity, 'with a new identity');
    assert.ok(now.stack.ok);
    const probes = deniedProbes(lab);
    await sleep(300);
    assert.deepEqual(await probes.stop(), []);
    assert.ok(await d.waitForRecord((r) => r.msg === 'drift repaired: endpoint found again on a new interface' && r.endpoint === 'web', 5000, from));
    const s = await bastionStatus(lab.pinPath);
    assert.equal(s.code, 0, `status exits 0 once protection is back: ${s.raw.stdout}`);
  });

  it('with the periodic check off, SIGHUP and POST /v1/reload protect a namespace that came back', { timeout: 90_000 }, async () => {
    lab.requireDaemon();
    await d.stop();
    d = await lab.startDaemon(null, ['--verify-interval', '0']);
    for (const [name, how] of [['db', 'sighup'], ['api', 'reload']] as const) {
      const old = await endpointOf(lab, name);
      const ip = lab.c(name).ip;
      await lab.topo.removeContainer(name);
      const c = await lab.topo.addContainer({ name, ip });
      if (name === 'api') await startTcpEcho(c.netns, c.ip, 8080);
      else await startTcpEcho(c.netns, c.ip, 5432);
      for (const o of CORE_OTHERS(name)) {
        await pinNeighbour(c.netns, 'eth0', lab.c(o).ip, lab.c(o).mac);
        await pinNeighbour(lab.c(o).netns, 'eth0', c.ip, c.mac);
      }
      await pinNeighbour(c.netns, 'eth0', lab.gateway, lab.topo.bridgeMac);
      // nothing looks again by itself
      await sleep(1500);
      const stale = await endpointOf(lab, name);
      assert.equal(stale.hostIfindex, old.hostIfindex, `${name}: not found again without being asked (periodic check off)`);
      assert.equal((await bastionStatus(lab.pinPath)).code, 4, 'status exits 4 while a container has no stack');
      if (how === 'sighup') {
        const from = d.mark();
        d.sighup();
        assert.ok(await d.waitForRecord((r) => /config applied/.test(String(r.msg)), 10_000, from), `reload after SIGHUP\n${d.describe()}`);
      } else {
        const r = await apiCall(socketPathFor(lab.pinPath), 'POST', '/v1/reload');
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
      const now = await endpointOf(lab, name);
      assert.equal(now.hostIfindex, c.hostIfindex, `${name}: protected on its new veth after ${how}`);
      assert.ok(now.stack.ok);
    }
    assert.ok((await tcpConnectQuick(lab.api.netns, lab.db.ip, 5432, 1000)).ok, 'api→db:5432 after both came back');
    const probes = deniedProbes(lab);
    await sleep(300);
    assert.deepEqual(await probes.stop(), []);
    assert.equal((await bastionStatus(lab.pinPath)).code, 0);
  });

  it('status --verify repairs what differs and says so; it exits 0 once everything is in place', { timeout: 60_000 }, async () => {
    lab.requireDaemon();
    const maps = openBastionMaps(lab.pinPath);
    const web = await endpointOf(lab, 'web');
    try {
      assert.ok(maps.endpoints.raw.delete(encodeU32(web.hostIfindex)));
    } finally {
      maps.close();
    }
    const r = await bastion(['status', '--verify', '--json', '--pin-path', lab.pinPath]);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    const j = JSON.parse(r.stdout);
    assert.equal(j.verify.maps.maps.bastion_ep.missing, 1);
    assert.equal(j.verify.clean, true);
    assert.equal(j.reconciler.dirty, false);
    const text = await bastion(['status', '--verify', '--pin-path', lab.pinPath]);
    assert.match(text.stdout, /Verify .*everything in place/);
    assert.match(text.stdout, /Reconciler .*maps in sync/);
  });
});

function CORE_OTHERS(name: CoreName): CoreName[] {
  return (['web', 'api', 'db', 'attacker'] as const).filter((n) => n !== name);
}
