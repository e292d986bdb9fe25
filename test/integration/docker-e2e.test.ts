/**
 * Bastion end to end on a real Docker engine (issue 3, "what it must show").
 *
 * One daemon, `bastion run --docker --select bastion.e2e=<tag>`, manages
 * only this file's containers: web, api, db and attacker on a user-defined
 * bridge (a free 10.x.y.0/24) and the same four on the default bridge
 * docker0. Every refusal is paired with the same tool passing on an allowed
 * path, and a baseline on plain Docker (before the daemon starts) shows that
 * every attack works without Bastion, so each check can fail.
 *
 *   0. baseline: the attacks succeed on plain Docker (both bridges)
 *   1. the attack set under Bastion, on the user-defined bridge and on docker0
 *   2. a container started after the daemon that connects from its first
 *      instant never gets through (its own log and captures at the targets)
 *   3. stop / start / restart / rm leave no stale entry (status and pinned
 *      maps); a new container on a removed container's IP inherits nothing
 *   4. Bastion killed with SIGKILL: enforcement holds; restarted: one filter
 *      per hook, same identities. dockerd restarted (live-restore):
 *      enforcement holds while it is down, the daemon follows it afterwards
 *      (BASTION_E2E_NO_DOCKERD_RESTART=1 skips the engine restart: other
 *      users' Docker API calls fail while it is down, their containers live on)
 *   5. host-network, NET_ADMIN, shared-netns (and privileged, if it can
 *      start) containers are listed as unprotected with a reason
 *
 * Everything created here carries a random tag (containers, network, pin
 * path, config dir) and is removed in after(), whatever happened.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { DockerFixture, dockerdPid, ensureEngine, restartDockerd, sleep, waitFor } from '../helpers/docker.js';
import {
  BastionDaemon,
  bastionDown,
  bastionStatus,
  tcBpfFilters,
  uniquePinPath,
  writeConfigFile,
  type LogRecord,
} from '../helpers/bastion-daemon.js';
import { freeSubnet24 } from '../helpers/netns.js';
import { nsRun, startBackground, stopBackground, type Background } from '../helpers/probes.js';
import { arpScan, captureWhile, inNetns, nmapSweep, spoofedSyns, tcpConnects, transfers, type Netns } from '../../src/demo/probes.js';
import { apiRequest } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import { openBastionMaps } from '../../src/datapath/bpf-map.js';
import type { StatusReport, EndpointStatus } from '../../src/api/types.js';

const engine = await ensureEngine();
const skip = engine.ok ? false : `Docker cannot run here: ${engine.reason}`;

/** The label --select keys on (the fixture's own bastion.test label is on every container, selected or not). */
const SELECT_KEY = 'bastion.e2e';

interface Box {
  role: string;
  name: string;
  id: string;
  /** the endpoint key the adapter reports: docker:<id12>/<network> */
  key: string;
  ip: string;
  mac: string;
  pid: number;
}

interface Net {
  kind: string;
  /** Docker network name */
  name: string;
  /** Linux bridge device */
  bridge: string;
  gateway: string;
  gatewayMac: string;
  /** user-defined bridge: the /24 nmap may sweep; docker0: undefined (arping our IPs only) */
  sweepCidr?: string;
  web: Box;
  api: Box;
  db: Box;
  attacker: Box;
}

const LISTENERS = {
  web: 'nc -ll -p 80 -e cat',
  api: 'nc -ll -p 8080 -e cat & nc -ll -p 9090 -e cat & wait',
  db: 'nc -ll -p 5432 -e cat',
  attacker: 'sleep 2147483647',
} as const;
const LISTEN_PORTS: Record<string, number[]> = { web: [80], api: [8080, 9090], db: [5432], attacker: [] };

const ns = (b: Box): Netns => ({ pid: b.pid });

describe('Bastion on a real Docker engine', { skip, timeout: 600_000 }, () => {
  const docker = (engine as { docker: Docker }).docker;
  let fx: DockerFixture;
  let tag: string;
  let dir: string;
  let configPath: string;
  const pinPath = uniquePinPath();
  const daemons: BastionDaemon[] = [];
  let daemon: BastionDaemon | undefined;
  const hostPort = 20000 + Math.floor(Math.random() * 9000);
  const listeners: Background[] = [];
  let user: Net;
  let dflt: Net;
  let base: string;
  let userNetName: string;
  let outsider: Box; // unselected container on the user bridge, listening on 7070

  const selected = (): Record<string, string> => ({ [SELECT_KEY]: tag });

  function daemonArgs(): string[] {
    return ['--docker', '--select', `${SELECT_KEY}=${tag}`];
  }

  async function startDaemon(): Promise<BastionDaemon> {
    const d = new BastionDaemon(configPath, pinPath, daemonArgs()).start();
    daemons.push(d);
    await d.waitReady(60_000);
    daemon = d;
    return d;
  }

  function requireDaemon(): BastionDaemon {
    if (!daemon?.running) throw new Error('no running Bastion daemon (see the failure of the test that started it)');
    return daemon;
  }

  async function apiStatus(): Promise<StatusReport> {
    return apiRequest<StatusReport>(socketPathFor(pinPath), 'GET', '/v1/status', 5000);
  }

  /** `bastion status --json`, the CLI the brief names. */
  async function cliStatus(): Promise<StatusReport> {
    const s = await bastionStatus(pinPath);
    assert.equal(s.code, 0, `bastion status failed: ${s.raw.stderr}`);
    return s.json as StatusReport;
  }

  async function waitEndpoints(keys: string[], what: string, timeoutMs = 30_000): Promise<StatusReport> {
    return waitFor(
      what,
      async () => {
        const s = await apiStatus();
        const ok = keys.every((k) => s.endpoints.some((e) => e.key === k && e.stack.ok));
        return ok ? s : undefined;
      },
      timeoutMs,
    );
  }

  function ep(s: StatusReport, b: Box | string): EndpointStatus | undefined {
    const key = typeof b === 'string' ? b : b.key;
    return s.endpoints.find((e) => e.key === key);
  }

  async function boxOf(role: string, info: Docker.ContainerInspectInfo, net: string): Promise<Box> {
    const n = info.NetworkSettings.Networks[net];
    assert.ok(n, `${info.Name} is not on ${net}`);
    return { role, name: info.Name.replace(/^\//, ''), id: info.Id, key: `docker:${info.Id.slice(0, 12)}/${net}`, ip: n.IPAddress, mac: n.MacAddress.toLowerCase(), pid: info.State.Pid };
  }

  async function refresh(b: Box, net: string): Promise<Box> {
    return boxOf(b.role, await fx.inspect(b.id), net);
  }

  async function listening(b: Box, ports: number[]): Promise<void> {
    if (!ports.length) return;
    await waitFor(`${b.name} listening on ${ports.join(',')}`, async () => {
      const r = await inNetns(ns(b), 'ss', ['-Hltn']);
      return ports.every((p) => new RegExp(`:${p}\\b`).test(r.stdout));
    }, 10_000);
  }

  async function runBox(role: keyof typeof LISTENERS, net: string, o: { ipv4?: string; suffix?: string; labels?: Record<string, string> } = {}): Promise<Box> {
    const info = await fx.run({
      name: `${role}${o.suffix ?? ''}`,
      cmd: ['sh', '-c', LISTENERS[role]],
      labels: { ...selected(), app: role, ...(o.labels ?? {}) },
      network: net,
      ipv4: o.ipv4,
    });
    const b = await boxOf(role, info, net);
    await listening(b, LISTEN_PORTS[role]!);
    return b;
  }

  async function flushNeigh(boxes: Box[]): Promise<void> {
    await Promise.all(boxes.map((b) => inNetns(ns(b), 'ip', ['neigh', 'flush', 'all'])));
  }

  /** Static ARP entries with the true MACs: a refusal then proves the IP policy refused, not merely unanswered ARP. */
  async function pinNeigh(who: Box, peers: Array<{ ip: string; mac: string }>): Promise<void> {
    for (const p of peers) {
      const r = await inNetns(ns(who), 'ip', ['neigh', 'replace', p.ip, 'lladdr', p.mac, 'dev', 'eth0', 'nud', 'permanent']);
      assert.equal(r.code, 0, `ip neigh replace in ${who.name}: ${r.stderr}`);
    }
  }

  async function pinAll(n: Net): Promise<void> {
    const all = [n.web, n.api, n.db, n.attacker];
    for (const b of all) await pinNeigh(b, [...all.filter((o) => o !== b), { ip: n.gateway, mac: n.gatewayMac }]);
  }

  function bridgeMac(dev: string): string {
    return readFileSync(`/sys/class/net/${dev}/address`, 'utf8').trim().toLowerCase();
  }

  /** Number of SYNs to api:8080 with web's source address that api sees while `during` runs. */
  function synsAtApi(n: Net, during: () => Promise<unknown>): Promise<number> {
    return captureWhile(ns(n.api), 'eth0', `tcp dst port 8080 and src host ${n.web.ip} and tcp[tcpflags] & tcp-syn != 0`, 2500, during);
  }

  function flowsSince(d: BastionDaemon, from: number, pred: (r: LogRecord) => boolean): LogRecord[] {
    return d.records.slice(from).filter((r) => r.msg === 'flow' && pred(r));
  }

  async function containerLogs(id: string): Promise<string> {
    const buf = (await docker.getContainer(id).logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    // multiplexed stream: 8-byte frame headers; strip them
    const out: string[] = [];
    let i = 0;
    while (i + 8 <= buf.length) {
      const len = buf.readUInt32BE(i + 4);
      out.push(buf.subarray(i + 8, i + 8 + len).toString('utf8'));
      i += 8 + len;
    }
    return out.join('');
  }

  before(async () => {
    fx = new DockerFixture(docker);
    tag = fx.prefix;
    dir = mkdtempSync(join(tmpdir(), `bastion-${tag}-`));
    configPath = join(dir, 'bastion.yaml');

    // the user-defined bridge, on a free 10.x.y.0/24
    let netInfo: Docker.NetworkInspectInfo | undefined;
    for (let i = 0; !netInfo; i++) {
      base = await freeSubnet24();
      try {
        netInfo = await fx.createNetwork('net', { IPAM: { Driver: 'default', Config: [{ Subnet: `${base}.0/24`, Gateway: `${base}.1` }] } });
      } catch (err) {
        if (i >= 4) throw err;
      }
    }
    userNetName = fx.name('net');
    const userBridge = netInfo.Options?.['com.docker.network.bridge.name'] ?? `br-${netInfo.Id.slice(0, 12)}`;

    const [uweb, uapi, udb, uatt] = await Promise.all([
      runBox('web', userNetName, { ipv4: `${base}.10` }),
      runBox('api', userNetName, { ipv4: `${base}.20` }),
      runBox('db', userNetName, { ipv4: `${base}.30` }),
      runBox('attacker', userNetName, { ipv4: `${base}.66` }),
    ]);
    const oinfo = await fx.run({ name: 'outsider', cmd: ['sh', '-c', 'nc -ll -p 7070 -e cat'], labels: { app: 'outsider' }, network: userNetName, ipv4: `${base}.77` });
    outsider = await boxOf('outsider', oinfo, userNetName);
    await listening(outsider, [7070]);
    user = {
      kind: 'user-defined bridge',
      name: userNetName,
      bridge: userBridge,
      gateway: `${base}.1`,
      gatewayMac: bridgeMac(userBridge),
      sweepCidr: `${base}.0/24`,
      web: uweb!,
      api: uapi!,
      db: udb!,
      attacker: uatt!,
    };

    const [dweb, dapi, ddb, datt] = await Promise.all([
      runBox('web', 'bridge', { suffix: '0' }),
      runBox('api', 'bridge', { suffix: '0' }),
      runBox('db', 'bridge', { suffix: '0' }),
      runBox('attacker', 'bridge', { suffix: '0' }),
    ]);
    const d0 = (await fx.inspect(dweb!.id)).NetworkSettings.Networks.bridge!;
    dflt = {
      kind: 'default bridge docker0',
      name: 'bridge',
      bridge: 'docker0',
      gateway: d0.Gateway,
      gatewayMac: bridgeMac('docker0'),
      web: dweb!,
      api: dapi!,
      db: ddb!,
      attacker: datt!,
    };

    // a host service on each gateway address
    for (const gw of [user.gateway, dflt.gateway]) {
      listeners.push(startBackground(null, 'socat', [`TCP-LISTEN:${hostPort},bind=${gw},fork,reuseaddr`, 'EXEC:cat']));
    }
    await waitFor('host listeners', async () => {
      const r = await nsRun(null, 'ss', ['-Hltn'], { timeoutMs: 5000 });
      return [user.gateway, dflt.gateway].every((gw) => r.stdout.includes(`${gw}:${hostPort}`));
    }, 10_000);

    // --docker supplies the containers; the file has the mode and the policies
    writeConfigFile(
      configPath,
      [
        'mode: enforce',
        'policies:',
        '  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }',
        '  - { name: api-to-db, from: { app: api }, to: { app: db }, ports: ["5432/tcp"] }',
        '  # the positive control for host isolation: db may reach the host service, web may not',
        `  - { name: db-to-host, from: { app: db }, to: host, ports: ["${hostPort}/tcp"] }`,
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    const problems: string[] = [];
    for (const d of daemons) await d.stop().catch((e) => problems.push(`daemon stop: ${String(e)}`));
    if (!dockerdPid()) await ensureEngine(); // a failed dockerd restart must not leave the engine down
    const down = await bastionDown(pinPath).catch((e) => ({ code: -1, stderr: String(e) }));
    if (down.code !== 0 && pinPath) problems.push(`bastion down: exit ${down.code} ${down.stderr}`);
    for (const l of listeners) await l.stop('SIGKILL').catch(() => undefined);
    await stopBackground();
    if (fx) problems.push(...(await fx.cleanup()));
    rmSync(pinPath, { recursive: true, force: true });
    for (const f of ['sock', 'pid']) rmSync(`/run/bastion/${pinPath.split('/').pop()}.${f}`, { force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (problems.length) console.error(`docker e2e cleanup: ${problems.join('\n')}`);
  });

  // ------------------------------------------------------------------ 0

  test('baseline on plain Docker: every attack of the set works (the probes can see what Bastion must stop)', async (t) => {
    for (const n of [user, dflt]) {
      await flushNeigh([n.web, n.api, n.db, n.attacker]);
      if (n.sweepCidr) {
        const up = await nmapSweep(ns(n.attacker), 'eth0', n.sweepCidr);
        for (const b of [n.web, n.api, n.db]) assert.ok(up.includes(b.ip), `${n.kind}: the attacker's nmap sweep finds ${b.role} without Bastion (found ${up.join(', ')})`);
      } else {
        const found = await arpScan(ns(n.attacker), 'eth0', [n.web.ip, n.api.ip, n.db.ip]);
        assert.equal(found.size, 3, `${n.kind}: the attacker's arping finds web, api and db without Bastion (found ${[...found.keys()].join(', ')})`);
      }
      await pinAll(n);
      assert.ok(await tcpConnects(ns(n.web), n.api.ip, 9090), `${n.kind}: web → api:9090 connects without Bastion`);
      assert.ok(await tcpConnects(ns(n.api), n.web.ip, 80), `${n.kind}: api → web:80 connects without Bastion`);
      assert.ok(await tcpConnects(ns(n.web), n.db.ip, 5432), `${n.kind}: web → db:5432 connects without Bastion`);
      assert.ok(await tcpConnects(ns(n.web), n.gateway, hostPort), `${n.kind}: web → host ${n.gateway}:${hostPort} connects without Bastion`);
      const spoofed = await synsAtApi(n, () => spoofedSyns(ns(n.attacker), n.web.ip, n.api.ip, 8080, 5));
      assert.ok(spoofed > 0, `${n.kind}: SYNs forged with web's address reach api without Bastion`);
      t.diagnostic(`${n.kind}: plain Docker lets everything through (${spoofed} forged SYNs reached api)`);
    }
    assert.ok(await tcpConnects(ns(user.attacker), outsider.ip, 7070), 'attacker → outsider:7070 connects without Bastion');
  });

  test('the daemon starts with --docker --select and protects exactly the selected containers', async (t) => {
    const t0 = Date.now();
    await startDaemon();
    const all = [user, dflt].flatMap((n) => [n.web, n.api, n.db, n.attacker]);
    await waitEndpoints(all.map((b) => b.key), 'every selected container protected');
    const s = await cliStatus();
    assert.equal(s.ok, true);
    for (const b of all) {
      const e = ep(s, b)!;
      assert.equal(e.ipv4, b.ip, `${b.name}: ip`);
      assert.equal(e.mac, b.mac, `${b.name}: mac`);
      assert.equal(e.labels['bastion.io/name'], b.name);
      assert.equal(e.labels.app, b.role);
      assert.ok(e.identity > 0);
    }
    assert.equal(new Set(all.map((b) => ep(s, b)!.identity)).size, all.length, 'one identity per container interface');
    assert.ok(!s.endpoints.some((e) => e.ipv4 === outsider.ip), 'the unselected outsider is not managed');
    assert.ok(s.endpoints.every((e) => e.labels[SELECT_KEY] === tag), 'nothing but our selected containers is managed');
    t.diagnostic(`${s.endpoints.length} endpoints protected ${Date.now() - t0} ms after start (pin path ${pinPath})`);
  });

  // ------------------------------------------------------------------ 1

  for (const which of ['user', 'docker0'] as const) {
    test(`attack set on the ${which === 'user' ? 'user-defined bridge' : 'default bridge docker0'}`, async (t) => {
      const d = requireDaemon();
      const n = which === 'user' ? user : dflt;
      const { web, api, db, attacker } = n;
      await flushNeigh([web, api, db, attacker]);

      // declared dependency, resolved through Bastion's ARP handler (caches flushed)
      assert.ok(await transfers(ns(web), api.ip, 8080, 1_000_000), `${n.kind}: web → api:8080 (declared) transfers 1 MB`);

      // discovery: the attacker finds nothing; web (same tool) finds its dependency only
      if (n.sweepCidr) {
        const up = (await nmapSweep(ns(attacker), 'eth0', n.sweepCidr)).filter((ip) => ip !== attacker.ip);
        assert.deepEqual(up, [], `${n.kind}: the attacker's nmap -sn ${n.sweepCidr} finds nothing`);
        const seen = await nmapSweep(ns(web), 'eth0', n.sweepCidr);
        assert.ok(seen.includes(api.ip), `${n.kind}: web's sweep (same tool) finds its dependency api (found ${seen.join(', ')})`);
        for (const b of [db, attacker]) assert.ok(!seen.includes(b.ip), `${n.kind}: web's sweep does not find ${b.role}`);
      } else {
        const found = await arpScan(ns(attacker), 'eth0', [web.ip, api.ip, db.ip, n.gateway]);
        assert.deepEqual([...found.keys()], [], `${n.kind}: the attacker's arping of web, api, db and the gateway gets no answer`);
        const seen = await arpScan(ns(web), 'eth0', [api.ip, db.ip, attacker.ip]);
        assert.equal(seen.get(api.ip), api.mac, `${n.kind}: web's arping (same tool) of api gets api's true MAC`);
        assert.ok(!seen.has(db.ip) && !seen.has(attacker.ip), `${n.kind}: web's arping of db and attacker gets no answer`);
      }

      // static ARP from here on: refusals are the IP policy's
      await pinAll(n);
      const mark = d.mark();
      const [ok8080, ok5432, hostOk] = await Promise.all([
        tcpConnects(ns(web), api.ip, 8080),
        tcpConnects(ns(api), db.ip, 5432),
        tcpConnects(ns(db), n.gateway, hostPort),
      ]);
      assert.ok(ok8080, `${n.kind}: web → api:8080 connects (control)`);
      assert.ok(ok5432, `${n.kind}: api → db:5432 connects (control)`);
      assert.ok(hostOk, `${n.kind}: db → host ${n.gateway}:${hostPort} connects (its policy names it; control)`);
      const [p9090, reverse, skipHop, webHost, attApi] = await Promise.all([
        tcpConnects(ns(web), api.ip, 9090),
        tcpConnects(ns(api), web.ip, 80),
        tcpConnects(ns(web), db.ip, 5432),
        tcpConnects(ns(web), n.gateway, hostPort),
        tcpConnects(ns(attacker), api.ip, 8080),
      ]);
      assert.equal(p9090, false, `${n.kind}: web → api:9090 (undeclared port) refused`);
      assert.equal(reverse, false, `${n.kind}: api → web:80 (reverse direction) refused`);
      assert.equal(skipHop, false, `${n.kind}: web → db:5432 (skipping a hop) refused`);
      assert.equal(webHost, false, `${n.kind}: web → host ${n.gateway}:${hostPort} refused`);
      assert.equal(attApi, false, `${n.kind}: attacker → api:8080 refused`);

      // spoofing: forged SYNs with web's address never reach api; web's own do (same capture)
      const forged = await synsAtApi(n, () => spoofedSyns(ns(attacker), web.ip, api.ip, 8080, 5));
      const genuine = await synsAtApi(n, () => tcpConnects(ns(web), api.ip, 8080));
      assert.equal(forged, 0, `${n.kind}: forged SYNs from web's address reach api`);
      assert.ok(genuine > 0, `${n.kind}: web's genuine SYN is seen by the same capture in api (control)`);

      // the daemon said why
      await sleep(300);
      const dropped = flowsSince(d, mark, (r) => r.verdict === 'DROPPED' && r.src?.ip === web.ip && r.dst?.ip === api.ip && r.dst?.port === 9090);
      assert.ok(dropped.length > 0, `${n.kind}: a DROPPED flow for web → api:9090 is logged`);
      assert.equal(dropped[0]!.src.name, web.name);
      const spoof = flowsSince(d, mark, (r) => r.verdict === 'DROPPED' && r.src?.ip === web.ip && /spoof/.test(r.reason) && r.endpoint === attacker.name);
      assert.ok(spoof.length > 0, `${n.kind}: the forged SYNs are logged as spoofed at the attacker's stack`);
      t.diagnostic(`${n.kind}: drop reasons: ${[...new Set(flowsSince(d, mark, (r) => r.verdict === 'DROPPED').map((r) => r.reason))].join(', ')}`);
    });
  }

  // ------------------------------------------------------------------ 2

  test('a container started after the daemon is protected from its first packet', async (t) => {
    const d = requireDaemon();
    const n = user;
    const script = (withAllowed: boolean) =>
      [
        'i=0',
        'while [ $i -lt 10 ]; do',
        `  (nc -w1 ${n.api.ip} 9090 </dev/null && echo LEAKED-api9090) &`,
        `  (nc -w1 ${outsider.ip} 7070 </dev/null && echo LEAKED-outsider) &`,
        `  (nc -w1 ${n.gateway} ${hostPort} </dev/null && echo LEAKED-host) &`,
        '  i=$((i+1)); sleep 0.05',
        'done',
        'wait',
        'echo ATTEMPTS-DONE',
        ...(withAllowed ? [`j=0; until nc -w1 ${n.api.ip} 8080 </dev/null; do j=$((j+1)); [ $j -gt 50 ] && break; sleep 0.2; done; [ $j -gt 50 ] && echo GAVE-UP || echo REACHED-api8080`] : []),
        'sleep 2147483647',
      ].join('\n');
    const lateIp = `${base}.40`;
    const mark = d.mark();
    const controlIp = `${base}.78`;

    // control: the same script in an unselected container leaks (the probe works)
    const control = await fx.run({ name: 'control', cmd: ['sh', '-c', script(false)], labels: { app: 'web' }, network: n.name, ipv4: controlIp });
    const controlLog = await waitFor('control done', async () => {
      const l = await containerLogs(control.Id);
      return l.includes('ATTEMPTS-DONE') ? l : undefined;
    }, 20_000);
    assert.match(controlLog, /LEAKED-outsider/, `an unprotected container with the same script reaches the outsider (control):\n${controlLog}`);
    assert.match(controlLog, /LEAKED-host/, `an unprotected container with the same script reaches the host (control):\n${controlLog}`);
    assert.doesNotMatch(controlLog, /LEAKED-api9090/, `api's own stack refuses an unmanaged sender:\n${controlLog}`);

    // the real thing: a selected container (app=web) with the same script, from its first instant
    let lateId = '';
    let log = '';
    let atOutsider = 0;
    // captures at the targets span the whole start: the outsider's interface, and the bridge (what goes to the host)
    const atBridge = await captureWhile('host', n.bridge, `src host ${lateIp} and tcp`, 0, async () => {
      atOutsider = await captureWhile(ns(outsider), 'eth0', `src host ${lateIp}`, 0, async () => {
        const late = await fx.run({ name: 'late', cmd: ['sh', '-c', script(true)], labels: { ...selected(), app: 'web' }, network: n.name, ipv4: lateIp });
        lateId = late.Id;
        log = await waitFor('late container done', async () => {
          const l = await containerLogs(lateId);
          return /REACHED-api8080|GAVE-UP/.test(l) ? l : undefined;
        }, 30_000).catch(() => containerLogs(lateId));
      });
    });
    assert.doesNotMatch(log, /LEAKED/, `the late container got through before (or despite) its stack:\n${log}`);
    assert.match(log, /REACHED-api8080/, `once protected, the late container (app=web) reaches api:8080 with the same tool (control):\n${log}`);
    assert.equal(atOutsider, 0, 'no packet of the late container reached the (unprotected) outsider');
    assert.equal(atBridge, 0, `no TCP packet of the late container crossed the bridge ${n.bridge} (to the host or anyone)`);
    const s = await cliStatus();
    const late = s.endpoints.find((e) => e.ipv4 === lateIp);
    assert.ok(late?.stack.ok, 'the late container is a protected endpoint');
    // no-endpoint drops carry no addresses (the stack drops before parsing), so they are counted for any port
    const quarantined = flowsSince(d, mark, (r) => r.reason === 'no-endpoint').length;
    const denied = flowsSince(d, mark, (r) => r.src?.ip === lateIp && r.verdict === 'DROPPED').length;
    const lines = log.split('\n').filter((l) => l && !/timed out/.test(l));
    t.diagnostic(`late container ${late?.name} (identity ${late?.identity}): ${denied} drops logged from its address, ${quarantined} no-endpoint drops (guarded ports) during its start; log: ${lines.join(' | ')}`);
  });

  // ------------------------------------------------------------------ 3

  test('stop, start, restart and rm leave no stale entries; a new container on a removed IP inherits nothing', async (t) => {
    requireDaemon();
    const n = user;
    const ip = `${base}.50`;
    const net = n.name;
    const seenIdentities = new Set<number>();
    const seenIfindexes = new Set<number>();

    /** status and pinned maps agree, and nothing in the maps names a retired identity / ifindex / the address when unused */
    const checkClean = async (what: string, gone: { ids: number[]; ifindexes: number[]; ip?: string }) => {
      const s = await cliStatus();
      const maps = openBastionMaps(pinPath);
      try {
        const epMap = [...maps.endpoints.entries()];
        const byIp = [...maps.endpointsByIp.entries()];
        assert.deepEqual(
          epMap.map(([k, v]) => `${k}:${v.identity}:${v.ipv4}`).sort(),
          s.endpoints.map((e) => `${e.hostIfindex}:${e.identity}:${e.ipv4}`).sort(),
          `${what}: bastion_ep holds exactly the endpoints status lists`,
        );
        assert.deepEqual(
          byIp.map(([k, v]) => `${k}:${v.identity}`).sort(),
          s.endpoints.map((e) => `${e.ipv4}:${e.identity}`).sort(),
          `${what}: bastion_ep_ip holds exactly the endpoints status lists`,
        );
        for (const id of gone.ids) {
          assert.ok(!s.endpoints.some((e) => e.identity === id), `${what}: status lists identity ${id}`);
          const ipc = [...maps.ipcache.entries()].filter(([, v]) => v.identity === id);
          assert.deepEqual(ipc, [], `${what}: ipcache names retired identity ${id}`);
          const pol = [...maps.policy.keys()].filter((k) => k.epId === id || k.peerId === id);
          assert.deepEqual(pol, [], `${what}: policy entries name retired identity ${id}`);
          const nb = [...maps.neigh.keys()].filter((k) => k.epId === id || k.peerId === id);
          assert.deepEqual(nb, [], `${what}: neighbour entries name retired identity ${id}`);
          const ct = [...maps.ct.entries()].filter(([, v]) => v.srcId === id || v.dstId === id);
          assert.deepEqual(ct.length, 0, `${what}: conntrack entries name retired identity ${id}`);
        }
        for (const ifi of gone.ifindexes) {
          assert.equal(maps.endpoints.get(ifi), undefined, `${what}: bastion_ep still has ifindex ${ifi}`);
          assert.equal(maps.epStats.get(ifi), undefined, `${what}: bastion_ep_stat still has ifindex ${ifi}`);
        }
        if (gone.ip) {
          assert.equal(maps.endpointsByIp.get(gone.ip), undefined, `${what}: bastion_ep_ip still has ${gone.ip}`);
          const ipc = maps.ipcache.get({ prefixlen: 32, addr: gone.ip });
          assert.ok(!ipc || ipc.identity <= 2, `${what}: ipcache still maps ${gone.ip} to identity ${ipc?.identity}`);
          assert.deepEqual([...maps.ct.keys()].filter((k) => k.saddr === gone.ip || k.daddr === gone.ip), [], `${what}: conntrack entries for ${gone.ip} remain`);
        }
      } finally {
        maps.close();
      }
      return s;
    };

    const waitGone = (key: string, what: string) =>
      waitFor(what, async () => {
        const s = await apiStatus();
        return !s.endpoints.some((e) => e.key === key);
      }, 20_000);

    // old: a web at .50, with web's permissions
    let old = await runBox('web', net, { ipv4: ip, suffix: '-old' });
    let s = await waitEndpoints([old.key], 'old protected');
    let e = ep(s, old)!;
    seenIdentities.add(e.identity);
    seenIfindexes.add(e.hostIfindex);
    await pinNeigh(old, [{ ip: n.api.ip, mac: n.api.mac }]);
    assert.ok(await tcpConnects(ns(old), n.api.ip, 8080), 'old (app=web) → api:8080 connects');

    // stop → gone; start → back (new interface), works again
    await docker.getContainer(old.id).stop({ t: 1 });
    await waitGone(old.key, 'old removed from status after stop');
    await checkClean('after docker stop', { ids: [...seenIdentities], ifindexes: [...seenIfindexes], ip });
    await docker.getContainer(old.id).start();
    old = await refresh(old, net);
    await listening(old, [80]);
    s = await waitEndpoints([old.key], 'old protected again after start');
    e = ep(s, old)!;
    assert.ok(!seenIdentities.has(e.identity), `after start: a fresh identity (${e.identity}), not one of ${[...seenIdentities].join(',')}`);
    seenIdentities.add(e.identity);
    seenIfindexes.add(e.hostIfindex);
    await checkClean('after docker start', { ids: [...seenIdentities].filter((i) => i !== e.identity), ifindexes: [...seenIfindexes].filter((i) => i !== e.hostIfindex) });
    await pinNeigh(old, [{ ip: n.api.ip, mac: n.api.mac }]);
    assert.ok(await tcpConnects(ns(old), n.api.ip, 8080), 'old → api:8080 connects after start');

    // restart
    await docker.getContainer(old.id).restart({ t: 1 });
    old = await refresh(old, net);
    await listening(old, [80]);
    s = await waitFor('old protected on its new interface after restart', async () => {
      const x = await apiStatus();
      const y = ep(x, old);
      return y && y.stack.ok && !seenIfindexes.has(y.hostIfindex) ? x : undefined;
    }, 30_000);
    e = ep(s, old)!;
    assert.equal(s.endpoints.filter((x) => x.ipv4 === ip).length, 1, 'after restart: one endpoint for the address');
    seenIdentities.add(e.identity);
    seenIfindexes.add(e.hostIfindex);
    await checkClean('after docker restart', { ids: [...seenIdentities].filter((i) => i !== e.identity), ifindexes: [...seenIfindexes].filter((i) => i !== e.hostIfindex) });
    await pinNeigh(old, [{ ip: n.api.ip, mac: n.api.mac }]);
    assert.ok(await tcpConnects(ns(old), n.api.ip, 8080), 'old → api:8080 connects after restart');

    // rm -f
    await docker.getContainer(old.id).remove({ force: true });
    await waitGone(old.key, 'old removed from status after rm -f');
    s = await checkClean('after docker rm -f', { ids: [...seenIdentities], ifindexes: [...seenIfindexes], ip });
    assert.ok(!s.endpoints.some((x) => x.name === old.name), 'status no longer names the removed container');

    // new: same address, other labels
    const mark = requireDaemon().mark();
    const fresh = await fx.run({ name: 'new', cmd: ['sh', '-c', 'sleep 2147483647'], labels: { ...selected(), app: 'intruder' }, network: net, ipv4: ip });
    const nb = await boxOf('intruder', fresh, net);
    assert.equal(nb.ip, ip);
    s = await waitEndpoints([nb.key], 'new container protected');
    const ne = ep(s, nb)!;
    assert.ok(!seenIdentities.has(ne.identity), `the new container on ${ip} gets a new identity (${ne.identity}), not one of ${[...seenIdentities].join(',')}`);
    assert.ok(ne.identity > Math.max(...seenIdentities), 'identities are never reused');
    const maps = openBastionMaps(pinPath);
    try {
      assert.equal(maps.endpointsByIp.get(ip)?.identity, ne.identity, `bastion_ep_ip maps ${ip} to the new identity`);
    } finally {
      maps.close();
    }
    await pinNeigh(nb, [{ ip: n.api.ip, mac: n.api.mac }]);
    assert.equal(await tcpConnects(ns(nb), n.api.ip, 8080), false, "the new container on the old one's address cannot reach api:8080");
    const arp = await arpScan(ns(nb), 'eth0', [n.api.ip]);
    assert.equal(arp.size, 0, 'nor resolve api by ARP');
    await sleep(300);
    const drops = flowsSince(requireDaemon(), mark, (r) => r.verdict === 'DROPPED' && r.src?.ip === ip && r.dst?.port === 8080);
    assert.ok(drops.length > 0, 'the refusal is logged');
    assert.equal(drops[0]!.src.identity, ne.identity, "the refused flow carries the new identity, not the old one's");
    assert.equal(drops[0]!.src.name, nb.name);
    t.diagnostic(`identities for ${ip}: old ${[...seenIdentities].join(' → ')}, new container ${ne.identity}`);
  });

  // ------------------------------------------------------------------ 4

  /** The enforcement probes used around restarts: attacker blocked, web → api allowed (both bridges). */
  async function enforcement(): Promise<string[]> {
    const wrong: string[] = [];
    for (const n of [user, dflt]) {
      const [att, ok, p9090] = await Promise.all([
        tcpConnects(ns(n.attacker), n.api.ip, 8080),
        transfers(ns(n.web), n.api.ip, 8080, 200_000),
        tcpConnects(ns(n.web), n.api.ip, 9090),
      ]);
      const arp = await arpScan(ns(n.attacker), 'eth0', [n.api.ip]);
      if (att) wrong.push(`${n.kind}: attacker → api:8080 connected`);
      if (arp.size) wrong.push(`${n.kind}: attacker's arping got api's MAC`);
      if (p9090) wrong.push(`${n.kind}: web → api:9090 connected`);
      if (!ok) wrong.push(`${n.kind}: web → api:8080 transfer failed`);
    }
    return wrong;
  }

  test('Bastion killed with SIGKILL: enforcement holds; restarted: one filter per hook, identities unchanged', async (t) => {
    const d = requireDaemon();
    const before = await cliStatus();
    await d.kill9();
    assert.equal(d.running, false);
    const whileDead = await enforcement();
    assert.deepEqual(whileDead, [], 'while the daemon is dead');

    const t0 = Date.now();
    await startDaemon();
    const s = await waitEndpoints(before.endpoints.map((e) => e.key), 'every endpoint back after the restart');
    t.diagnostic(`restarted and ready in ${Date.now() - t0} ms`);
    assert.deepEqual(
      s.endpoints.map((e) => `${e.key}=${e.identity}`).sort(),
      before.endpoints.map((e) => `${e.key}=${e.identity}`).sort(),
      'same endpoints, same identities',
    );
    for (const e of s.endpoints) {
      for (const dir of ['ingress', 'egress'] as const) {
        const f = await tcBpfFilters(e.hostInterface, dir);
        assert.equal(f.length, 1, `${e.name} ${e.hostInterface} ${dir}: exactly one bpf filter, got ${f.map((x) => x.line).join(' | ')}`);
      }
    }
    assert.deepEqual(await enforcement(), [], 'after the restart');
  });

  test('dockerd restarted (live-restore): enforcement holds while it is down; the daemon follows the new engine', async (t) => {
    const d = requireDaemon();
    if (process.env.BASTION_E2E_NO_DOCKERD_RESTART) {
      t.skip('BASTION_E2E_NO_DOCKERD_RESTART is set');
      return;
    }
    const info = (await docker.info()) as { LiveRestoreEnabled?: boolean };
    if (!info.LiveRestoreEnabled) {
      t.skip('dockerd runs without --live-restore: restarting it would stop every container on this machine');
      return;
    }
    const before = await cliStatus();
    const oldPid = dockerdPid();
    let whileDown: string[] | undefined;
    let engineWasDown = false;
    const t0 = Date.now();
    await restartDockerd({
      graceMs: 20_000,
      // never throw here: the engine must come back whatever we find
      beforeStart: async () => {
        try {
          engineWasDown = dockerdPid() === undefined && (await docker.ping().then(() => false, () => true));
          whileDown = await enforcement();
        } catch (err) {
          whileDown = [`probe error: ${(err as Error).message}`];
        }
      },
    });
    const newPid = dockerdPid();
    t.diagnostic(`dockerd ${oldPid} → ${newPid} in ${Date.now() - t0} ms`);
    assert.ok(engineWasDown, 'the engine was really down during the probes');
    assert.deepEqual(whileDown, [], 'while dockerd is down');
    assert.notEqual(newPid, oldPid);
    assert.equal(d.running, true, 'the daemon survived the engine restart');

    // the daemon follows the new engine: a container started now gets protected
    const probe = await runBox('attacker', user.name, { ipv4: `${base}.90`, suffix: '-after' });
    const s = await waitEndpoints([probe.key, ...before.endpoints.map((e) => e.key)], 'a container started after the engine restart protected', 45_000);
    for (const e of before.endpoints) assert.equal(ep(s, e.key)?.identity, e.identity, `${e.name}: identity unchanged across the engine restart`);
    await pinNeigh(probe, [{ ip: user.api.ip, mac: user.api.mac }]);
    assert.equal(await tcpConnects(ns(probe), user.api.ip, 8080), false, 'the new attacker is refused');
    assert.deepEqual(await enforcement(), [], 'after the engine restart');
  });

  // ------------------------------------------------------------------ 5

  test('host-network, NET_ADMIN, shared-netns and privileged containers are reported unprotected with a reason', async (t) => {
    requireDaemon();
    const cmd = ['sh', '-c', 'sleep 2147483647'];
    const hostnet = await fx.run({ name: 'hostnet', cmd, labels: selected(), hostConfig: { NetworkMode: 'host' } });
    const netadmin = await fx.run({ name: 'netadmin', cmd, labels: selected(), network: user.name, hostConfig: { NetworkMode: user.name, CapAdd: ['NET_ADMIN'] } });
    const shared = await fx.run({ name: 'shared', cmd, labels: selected(), hostConfig: { NetworkMode: `container:${user.web.id}` } });
    const want: Array<[Docker.ContainerInspectInfo, RegExp]> = [
      [hostnet, /host network/i],
      [netadmin, /NET_ADMIN/],
      [shared, /shares the network namespace/i],
    ];
    let privileged: Docker.ContainerInspectInfo | undefined;
    try {
      privileged = await fx.run({ name: 'privileged', cmd, labels: selected(), network: user.name, hostConfig: { NetworkMode: user.name, Privileged: true } });
      want.push([privileged, /privileged/i]);
    } catch (err) {
      t.diagnostic(`--privileged cannot start here: ${(err as Error).message.split('\n')[0]}`);
    }
    await waitFor('unprotected containers listed', async () => {
      const s = await apiStatus();
      return want.every(([c]) => s.unprotected.some((u) => u.key === `docker:${c.Id.slice(0, 12)}`)) ? s : undefined;
    }, 20_000);
    const s = await cliStatus();
    for (const [c, reason] of want) {
      const u = s.unprotected.find((x) => x.key === `docker:${c.Id.slice(0, 12)}`)!;
      assert.equal(u.name, c.Name.replace(/^\//, ''));
      assert.match(u.reason, reason, `${u.name}: reason`);
      assert.ok(!s.endpoints.some((e) => e.key.startsWith(`docker:${c.Id.slice(0, 12)}`)), `${u.name} is not an endpoint`);
      t.diagnostic(`${u.name}: ${u.reason}`);
    }
    // the NET_ADMIN container's veth is left alone (no stack of ours)
    const naPid = (await fx.inspect(netadmin.Id)).State.Pid;
    const links = JSON.parse((await inNetns({ pid: naPid }, 'ip', ['-j', 'link', 'show', 'eth0'])).stdout) as Array<{ link_index?: number }>;
    const hostIfindex = links[0]?.link_index;
    assert.ok(hostIfindex, 'netadmin has a veth');
    const host = JSON.parse((await nsRun(null, 'ip', ['-j', 'link', 'show'], { timeoutMs: 5000 })).stdout) as Array<{ ifindex: number; ifname: string }>;
    const dev = host.find((l) => l.ifindex === hostIfindex)!.ifname;
    await waitFor(`no Bastion stack on ${dev}`, async () => (await tcBpfFilters(dev, 'ingress')).length === 0 && (await tcBpfFilters(dev, 'egress')).length === 0, 10_000);

    // and they go away with their containers
    for (const [c] of want) await docker.getContainer(c.Id).remove({ force: true });
    await waitFor('unprotected entries gone after rm', async () => {
      const x = await apiStatus();
      return !want.some(([c]) => x.unprotected.some((u) => u.key === `docker:${c.Id.slice(0, 12)}`));
    }, 20_000);
  });
});
