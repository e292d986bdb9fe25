/**
 * Two Bastion instances on one host (issue 9, "instances own what they
 * attach"): each touches only the stacks it attached. A stack is whose
 * programs read whose maps (src/agent/stack.ts); an instance that meets
 * another's stack never guards over it, replaces it or detaches it, says so
 * in its log and its status, and `down` of one instance leaves the other's
 * containers protected.
 *
 *  - file mode: a second instance whose config lists containers the first
 *    one protects refuses to take them over, loudly (error log naming the
 *    first instance's pin path, status exit 4 listing them as unprotected),
 *    and its `down` leaves them as they were;
 *  - Docker: two `--docker` instances with disjoint `--select` (before this,
 *    the second guarded the first one's veths at start-up and detached them
 *    when it learnt they were not its own); the second is started, given a
 *    container and stopped with `down`: the first's containers stay
 *    protected throughout (attacks fail, stacks in place), and the second's
 *    container is released.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import {
  BastionDaemon,
  CoreLab,
  bastionDown,
  bastionStatus,
  tcBpfFilters,
  uniquePinPath,
  writeConfigFile,
  type LogRecord,
} from '../helpers/bastion-daemon.js';
import { connectAll, sleep, startTcpEcho, stopBackground, tcpConnect, type ConnectResult } from '../helpers/probes.js';
import { DockerFixture, ensureEngine, waitFor } from '../helpers/docker.js';
import { freeSubnet24 } from '../helpers/netns.js';
import { inNetns, tcpConnects, type Netns } from '../../src/demo/probes.js';
import { apiRequest } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import type { StatusReport } from '../../src/api/types.js';

/** Repeats `attempt` until stopped; returns what it saw get through. */
function keepTrying(attempt: () => Promise<string[]>): { stop(): Promise<string[]> } {
  let stopped = false;
  const through: string[] = [];
  const loop = (async () => {
    while (!stopped) through.push(...(await attempt()));
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return through;
    },
  };
}

describe('two instances, file mode: the second refuses to take over the first one\'s interfaces', () => {
  let lab: CoreLab;
  let dir: string;
  const pinB = uniquePinPath();
  let b: BastionDaemon | undefined;

  before(async () => {
    lab = await CoreLab.create();
    dir = mkdtempSync(join(tmpdir(), 'bastion-inst-'));
    await Promise.all([startTcpEcho(lab.api.netns, lab.api.ip, 8080), startTcpEcho(lab.db.netns, lab.db.ip, 5432)]);
    await lab.startDaemon(lab.config(), ['--verify-interval', '1']);
    await lab.pinNeighbours();
  });

  after(async () => {
    await b?.stop().catch(() => undefined);
    await bastionDown(pinB).catch(() => undefined);
    rmSync(pinB, { recursive: true, force: true });
    for (const f of ['sock', 'pid']) rmSync(`/run/bastion/${pinB.split('/').pop()}.${f}`, { force: true });
    rmSync(dir, { recursive: true, force: true });
    await lab?.cleanup();
  });

  const attacks = (): Promise<string[]> =>
    connectAll(
      [
        ['attacker→api:8080', lab.attacker.netns, lab.api.ip, 8080],
        ['web→db:5432', lab.web.netns, lab.db.ip, 5432],
        ['attacker→db:5432', lab.attacker.netns, lab.db.ip, 5432],
      ],
      1,
    ).then((rs) => (rs as Array<[string, ConnectResult]>).filter(([, r]) => r.ok).map(([n]) => n));

  it('refuses web and api (another instance protects them), says so, and leaves their stacks alone; down leaves them too', { timeout: 90_000 }, async () => {
    lab.requireDaemon();
    const a = await bastionStatus(lab.pinPath);
    assert.equal(a.code, 0);
    const stacksBefore = await lab.bpfFilters();
    const probes = keepTrying(attacks);
    // B lists web and api, and would let anyone reach them
    const cfg = join(dir, 'b.yaml');
    writeConfigFile(cfg, {
      mode: 'enforce',
      containers: [
        { name: 'web', netns: lab.web.netns, labels: { app: 'web' } },
        { name: 'api', netns: lab.api.netns, labels: { app: 'api' } },
      ],
      policies: [{ name: 'everything', from: {}, to: {} }],
    });
    b = new BastionDaemon(cfg, pinB, ['--verify-interval', '1']).start();
    await b.waitReady();
    for (const name of ['web', 'api']) {
      const said = await b.waitForRecord((r: LogRecord) => r.level === 50 && typeof r.msg === 'string' && r.msg.includes(`not protecting ${name}`) && r.ownerPinPath === lab.pinPath, 5000);
      assert.ok(said, `B says, at error level, that it does not take ${name} over from ${lab.pinPath}\n${b.describe()}`);
    }
    const sb = await bastionStatus(pinB);
    assert.equal(sb.code, 4, 'B: protection not in place (exit 4)');
    assert.deepEqual(sb.json.endpoints, []);
    assert.deepEqual(sb.json.unprotected.map((u: { name: string }) => u.name).sort(), ['api', 'web']);
    for (const u of sb.json.unprotected) assert.match(u.reason, new RegExp(`another Bastion instance.*${lab.pinPath}`));
    assert.equal(sb.json.reconciler.blocked, 2);
    await sleep(2500); // two of B's drift checks
    assert.deepEqual(await lab.bpfFilters(), stacksBefore, "A's stacks are the same programs");
    assert.equal((await bastionStatus(lab.pinPath)).code, 0, 'A: still in place');
    // B goes: down detaches only its own (none)
    const down = await bastionDown(pinB);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /detached 0 stacks/);
    b = undefined;
    await sleep(1500);
    assert.deepEqual(await lab.bpfFilters(), stacksBefore);
    const through = await probes.stop();
    assert.deepEqual(through, [], 'an attack got through while two instances ran');
    assert.equal((await bastionStatus(lab.pinPath)).code, 0);
    assert.ok((await connectAll([['web→api:8080', lab.web.netns, lab.api.ip, 8080]]))[0]![1].ok);
  });
});

// ------------------------------------------------------------------ Docker

const engine = await ensureEngine();
const skip = engine.ok ? false : `Docker cannot run here: ${engine.reason}`;
const SELECT_KEY = 'bastion.inst';

describe('two --docker instances with disjoint --select', { skip, timeout: 300_000 }, () => {
  const docker = (engine as { docker: Docker }).docker;
  let fx: DockerFixture;
  let dir: string;
  let net: string;
  const pinA = uniquePinPath();
  const pinB = uniquePinPath();
  const daemons: BastionDaemon[] = [];
  let a: BastionDaemon;
  type Box = { name: string; id: string; ip: string; mac: string; pid: number; ns: Netns };
  const boxes: Record<string, Box> = {};

  async function run(name: string, owner: 'A' | 'B', app: string, cmd: string, ip: string): Promise<Box> {
    const info = await fx.run({ name, cmd: ['sh', '-c', cmd], labels: { [SELECT_KEY]: `${fx.prefix}-${owner}`, app }, network: net, ipv4: ip });
    const n = info.NetworkSettings.Networks[net]!;
    const box = { name, id: info.Id, ip: n.IPAddress, mac: n.MacAddress.toLowerCase(), pid: info.State.Pid, ns: { pid: info.State.Pid } };
    boxes[name] = box;
    return box;
  }

  const status = (pin: string) => apiRequest<StatusReport>(socketPathFor(pin), 'GET', '/v1/status', 5000);

  async function pinAll(): Promise<void> {
    const all = Object.values(boxes);
    for (const b of all) {
      for (const o of all) if (o !== b) await inNetns(b.ns, 'ip', ['neigh', 'replace', o.ip, 'lladdr', o.mac, 'dev', 'eth0', 'nud', 'permanent']);
    }
  }

  /** Attacks on A's containers: the attacker (A's, no policy) and B's container may reach none of A's services. */
  const attacks = async (): Promise<string[]> => {
    const tries: Array<[string, Box, Box, number]> = [
      ['attacker→api:8080', boxes.attacker!, boxes.api!, 8080],
      ['attacker→web:80', boxes.attacker!, boxes.web!, 80],
      ...(boxes.bee ? ([['bee→api:8080', boxes.bee, boxes.api!, 8080]] as Array<[string, Box, Box, number]>) : []),
    ];
    const r = await Promise.all(tries.map(async ([n, from, to, port]) => ((await tcpConnects(from.ns, to.ip, port, 1)) ? [n] : [])));
    return r.flat();
  };

  before(async () => {
    fx = new DockerFixture(docker);
    dir = mkdtempSync(join(tmpdir(), `bastion-${fx.prefix}-`));
    let info: Docker.NetworkInspectInfo | undefined;
    let base = '';
    for (let i = 0; !info; i++) {
      base = await freeSubnet24();
      try {
        info = await fx.createNetwork('net', { IPAM: { Driver: 'default', Config: [{ Subnet: `${base}.0/24`, Gateway: `${base}.1` }] } });
      } catch (err) {
        if (i >= 4) throw err;
      }
    }
    net = fx.name('net');
    await run('web', 'A', 'web', 'nc -ll -p 80 -e cat', `${base}.10`);
    await run('api', 'A', 'api', 'nc -ll -p 8080 -e cat', `${base}.20`);
    await run('attacker', 'A', 'attacker', 'sleep 2147483647', `${base}.66`);
    for (const name of ['a', 'b']) {
      writeConfigFile(join(dir, `${name}.yaml`), ['mode: enforce', 'policies:', '  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }', ''].join('\n'));
    }
    a = new BastionDaemon(join(dir, 'a.yaml'), pinA, ['--docker', '--select', `${SELECT_KEY}=${fx.prefix}-A`, '--verify-interval', '1']).start();
    daemons.push(a);
    await a.waitReady(60_000);
    await waitFor('A protects its three containers', async () => {
      const s = await status(pinA);
      return s.endpoints.length === 3 && s.endpoints.every((e) => e.stack.ok) ? s : undefined;
    }, 30_000);
    await pinAll();
  });

  after(async () => {
    for (const d of daemons) await d.stop().catch(() => undefined);
    for (const p of [pinA, pinB]) {
      await bastionDown(p).catch(() => undefined);
      rmSync(p, { recursive: true, force: true });
      for (const f of ['sock', 'pid']) rmSync(`/run/bastion/${p.split('/').pop()}.${f}`, { force: true });
    }
    await stopBackground();
    const problems = fx ? await fx.cleanup() : [];
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (problems.length) console.error(`instances cleanup: ${problems.join('\n')}`);
  });

  it("the second instance starts, gets a container and goes down; the first one's containers stay protected throughout", { timeout: 240_000 }, async () => {
    assert.ok(await tcpConnects(boxes.web!.ns, boxes.api!.ip, 8080, 2), 'web→api:8080 (allowed)');
    assert.deepEqual(await attacks(), [], 'attacks fail under A');
    const sa0 = await status(pinA);
    const veths = sa0.endpoints.map((e) => e.hostInterface);
    const progs = async () => (await Promise.all(veths.flatMap((v) => (['ingress', 'egress'] as const).map((d) => tcBpfFilters(v, d))))).flat().map((f) => f.line).sort();
    const stacks0 = await progs();
    assert.equal(stacks0.length, 6);

    const probes = keepTrying(attacks);
    // B: selects other containers, starts while A's are running
    const b = new BastionDaemon(join(dir, 'b.yaml'), pinB, ['--docker', '--select', `${SELECT_KEY}=${fx.prefix}-B`, '--verify-interval', '1']).start();
    daemons.push(b);
    await b.waitReady(60_000);
    // B met A's stacks on the bridge's ports and left them alone
    assert.ok(
      await b.waitForRecord((r) => r.level === 40 && r.ownerPinPath === pinA, 10_000),
      `B says it met A's stacks (pin path ${pinA})\n${b.describe()}`,
    );
    // B gets a container of its own
    const bee = await run('bee', 'B', 'bee', 'nc -ll -p 7070 -e cat', boxes.api!.ip.replace(/\.\d+$/, '.77'));
    await waitFor('B protects its container', async () => {
      const s = await status(pinB);
      return s.endpoints.length === 1 && s.endpoints[0]!.stack.ok ? s : undefined;
    }, 30_000);
    await pinAll();
    const beeVeth = (await status(pinB)).endpoints[0]!.hostInterface;
    // under B, the host may not reach bee (no policy lets it)
    assert.equal((await tcpConnect(null, bee.ip, 7070, 1)).ok, false, 'host→bee:7070 under B');
    assert.ok(!veths.includes(beeVeth));
    const sb = await status(pinB);
    assert.deepEqual(sb.endpoints.map((e) => e.name), [fx.name('bee')]);
    // A's containers: same stacks, A in place
    await sleep(2500);
    assert.deepEqual(await progs(), stacks0, "A's stacks are untouched by B");
    const sa1 = await status(pinA);
    assert.ok(sa1.ok, `A in place: ${JSON.stringify(sa1.endpoints.map((e) => [e.name, e.stack]))}`);
    assert.equal(sa1.endpoints.length, 3);
    assert.ok((await tcBpfFilters(beeVeth, 'ingress')).length === 1, "B's container has B's stack");
    // B goes
    const down = await bastionDown(pinB);
    assert.equal(down.code, 0, down.stderr);
    await sleep(2500); // two of A's drift checks
    const through = await probes.stop();
    assert.deepEqual(through, [], 'an attack on A got through');
    assert.deepEqual(await progs(), stacks0, "A's stacks after B's down");
    const sa2 = await status(pinA);
    assert.ok(sa2.ok && sa2.endpoints.every((e) => e.stack.ok), 'A still in place after B went down');
    assert.ok(await tcpConnects(boxes.web!.ns, boxes.api!.ip, 8080, 2), 'web→api:8080 still allowed');
    // B's container is released: no stack on its veth, and nothing stops it (it is nobody's now)
    assert.deepEqual([...(await tcBpfFilters(beeVeth, 'ingress')), ...(await tcBpfFilters(beeVeth, 'egress'))], [], "B's stack is gone from its container");
    assert.ok((await tcpConnect(null, bee.ip, 7070, 2)).ok, 'host→bee:7070 once B let go of it');
    assert.equal((await bastionStatus(pinA)).code, 0);
  });
});
