/**
 * From traffic to least privilege on the Docker demo app (issue 14): web,
 * api, db and an attacker on a user-defined bridge of a real dockerd, under
 * `bastion run --docker` in audit mode. Record a normal run, learn, verify
 * (passes), an attack during the observation makes the replay fail naming
 * it, enforce the learned policies: the app still works, the attack set is
 * still blocked.
 *
 * A copy of the demo with unique names (not `bastion demo`, whose names are
 * fixed); everything is removed in after().
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { DockerFixture, ensureEngine, waitFor } from '../helpers/docker.js';
import { BastionDaemon, bastion, bastionDown, uniquePinPath, writeConfigFile } from '../helpers/bastion-daemon.js';
import { freeSubnet24 } from '../helpers/netns.js';
import { startBackground, stopBackground } from '../helpers/probes.js';
import { captureWhile, inNetns, nmapSweep, portScan, spoofedSyns, tcpConnects, transfers, type Netns } from '../../src/demo/probes.js';
import { apiRequest } from '../../src/api/client.js';
import { socketPathFor } from '../../src/api/paths.js';
import type { FlowRecord } from '../../src/flows/record.js';
import type { StatusReport } from '../../src/api/types.js';

const engine = await ensureEngine();
const skip = engine.ok ? false : `Docker cannot run here: ${engine.reason}`;

const SELECT_KEY = 'bastion.learn';
const SERVICES = {
  web: 'nc -ll -p 80 -e cat',
  api: 'nc -ll -p 8080 -e cat & nc -ll -p 9090 -e cat & wait',
  db: 'nc -ll -p 5432 -e cat',
  attacker: 'sleep 2147483647',
} as const;
type Role = keyof typeof SERVICES;

interface Box {
  name: string;
  ip: string;
  mac: string;
  pid: number;
}

const ns = (b: Box): Netns => ({ pid: b.pid });

function ndjson(text: string): FlowRecord[] {
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FlowRecord);
}

describe('learning on the Docker demo app', { skip, timeout: 600_000 }, () => {
  const docker = (engine as { docker: Docker }).docker;
  let fx: DockerFixture;
  let dir: string;
  let configPath: string;
  const pinPath = uniquePinPath();
  const pin = ['--pin-path', pinPath];
  let daemon: BastionDaemon | undefined;
  let base: string;
  let gateway: string;
  const hostPort = 20000 + Math.floor(Math.random() * 9000);
  const box = {} as Record<Role, Box>;
  const file = (n: string) => join(dir, n);

  const config = (mode: 'audit' | 'enforce') => `mode: ${mode}\npolicies: []\n`;

  async function normalRun(): Promise<void> {
    for (let i = 0; i < 2; i++) {
      assert.ok(await transfers(ns(box.web), box.api.ip, 8080, 200_000), 'web → api:8080 transfers');
      assert.ok(await transfers(ns(box.api), box.db.ip, 5432, 200_000), 'api → db:5432 transfers');
    }
  }

  before(async () => {
    fx = new DockerFixture(docker);
    dir = mkdtempSync(join(tmpdir(), `bastion-${fx.prefix}-`));
    configPath = join(dir, 'bastion.yaml');
    let net: Docker.NetworkInspectInfo | undefined;
    for (let i = 0; !net; i++) {
      base = await freeSubnet24();
      try {
        net = await fx.createNetwork('demo', { IPAM: { Driver: 'default', Config: [{ Subnet: `${base}.0/24`, Gateway: `${base}.1` }] } });
      } catch (err) {
        if (i >= 4) throw err;
      }
    }
    gateway = `${base}.1`;
    const ips: Record<Role, string> = { web: `${base}.10`, api: `${base}.20`, db: `${base}.30`, attacker: `${base}.66` };
    for (const role of Object.keys(SERVICES) as Role[]) {
      const info = await fx.run({ name: role, cmd: ['sh', '-c', SERVICES[role]], labels: { [SELECT_KEY]: fx.prefix, app: role }, network: fx.name('demo'), ipv4: ips[role] });
      const n = info.NetworkSettings.Networks[fx.name('demo')]!;
      box[role] = { name: info.Name.replace(/^\//, ''), ip: n.IPAddress, mac: n.MacAddress.toLowerCase(), pid: info.State.Pid };
    }
    for (const [role, ports] of [['web', [80]], ['api', [8080, 9090]], ['db', [5432]]] as const) {
      await waitFor(`${role} listening`, async () => {
        const r = await inNetns(ns(box[role]), 'ss', ['-Hltn']);
        return ports.every((p) => new RegExp(`:${p}\\b`).test(r.stdout));
      }, 10_000);
    }
    // a service of the host, on the network's gateway (as the demo has one)
    startBackground(null, 'socat', [`TCP4-LISTEN:${hostPort},bind=${gateway},reuseaddr,fork`, 'EXEC:cat']);
    writeConfigFile(configPath, config('audit'));
    daemon = new BastionDaemon(configPath, pinPath, ['--docker', '--select', `${SELECT_KEY}=${fx.prefix}`]).start();
    await daemon.waitReady(60_000);
    await waitFor('the four containers protected', async () => {
      const s = await apiRequest<StatusReport>(socketPathFor(pinPath), 'GET', '/v1/status', 5000);
      return s.endpoints.length === 4 && s.ok;
    }, 60_000);
  });

  after(async () => {
    await daemon?.stop().catch(() => undefined);
    await bastionDown(pinPath).catch(() => undefined);
    await stopBackground();
    const problems = await fx?.cleanup();
    if (problems?.length) console.error(problems.join('\n'));
    rmSync(pinPath, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a normal run in audit mode is recorded, learned, and the learned policies verify against it', async () => {
    assert.ok(daemon?.running, 'daemon runs');
    await normalRun();
    await new Promise((r) => setTimeout(r, 500));
    const rec = await bastion(['flows', '--since', '10m', '-o', 'json', ...pin]);
    assert.equal(rec.code, 0, rec.stderr);
    writeFileSync(file('normal.ndjson'), rec.stdout);
    const flows = ndjson(rec.stdout);
    assert.ok(flows.some((f) => f.verdict === 'AUDIT' && f.src.name === box.web.name && f.dst.name === box.api.name && f.dst.port === 8080), 'web → api recorded as AUDIT');
    assert.equal(flows.find((f) => f.src.name === box.web.name)!.src.labels.app, 'web');

    const learned = await bastion(['learn', '--since', '10m', ...pin]);
    assert.equal(learned.code, 0, learned.stderr);
    writeFileSync(file('learned.yaml'), learned.stdout);
    assert.match(learned.stdout, /name: learned-web-to-api-8080-tcp\n/);
    assert.match(learned.stdout, /name: learned-api-to-db-5432-tcp\n/);
    assert.doesNotMatch(learned.stdout, /^\s+(from|to): .*bastion\.io\/(name|network)/m, 'selected by stable labels only');
    assert.doesNotMatch(learned.stdout, /9090|attacker/, 'nothing that was not observed');
    assert.match(learned.stdout, /from: \{ app: web, bastion\.learn: \w+, bastion\.test: \w+ \}/);

    const v = await bastion(['policy', 'verify', file('learned.yaml'), '--flows', file('normal.ndjson')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });

  test('an attack during the observation makes the replay fail, naming it', async () => {
    assert.ok(daemon?.running, 'daemon runs');
    // the attacker probes db while everything is only audited: it gets through, and is recorded
    assert.ok(await tcpConnects(ns(box.attacker), box.db.ip, 5432), 'in audit mode the attacker reaches db');
    await new Promise((r) => setTimeout(r, 500));
    const rec = await bastion(['flows', '--since', '10m', '-o', 'json', ...pin]);
    writeFileSync(file('attacked.ndjson'), rec.stdout);
    const v = await bastion(['policy', 'verify', file('learned.yaml'), '--flows', file('attacked.ndjson'), '-o', 'json']);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    const out = JSON.parse(v.stdout) as { ok: boolean; wouldDrop: FlowRecord[] };
    assert.deepEqual(out.wouldDrop.map((f) => `${f.src.name} -> ${f.dst.name}:${f.dst.port}`), [`${box.attacker.name} -> ${box.db.name}:5432`]);
  });

  test('enforced, the learned policies keep the app working and the attack set blocked', async () => {
    assert.ok(daemon?.running, 'daemon runs');
    const add = await bastion(['policy', 'add', '-f', file('learned.yaml'), ...pin]);
    assert.equal(add.code, 0, add.stderr);
    const re = await daemon!.rewriteConfig(config('enforce'));
    assert.ok(re.applied, 'mode: enforce applied');
    for (const b of Object.values(box)) await inNetns(ns(b), 'ip', ['neigh', 'flush', 'all']);

    await normalRun();
    const attempts: Array<[string, boolean]> = [
      ['web → api:9090 (undeclared port)', await tcpConnects(ns(box.web), box.api.ip, 9090)],
      ['web → db:5432 (skipping the api)', await tcpConnects(ns(box.web), box.db.ip, 5432)],
      ['api → web:80 (reverse direction)', await tcpConnects(ns(box.api), box.web.ip, 80)],
      ['attacker → db:5432', await tcpConnects(ns(box.attacker), box.db.ip, 5432)],
      [`web → host ${gateway}:${hostPort}`, await tcpConnects(ns(box.web), gateway, hostPort)],
    ];
    const up = (await nmapSweep(ns(box.attacker), 'eth0', `${base}.0/24`)).filter((ip) => ip !== box.attacker.ip);
    attempts.push([`attacker nmap sweep found ${up.join(', ')}`, up.length > 0]);
    const open = [...(await portScan(ns(box.attacker), box.api.ip, [8080, 9090])), ...(await portScan(ns(box.attacker), box.db.ip, [5432]))];
    attempts.push([`attacker port scan found ${open.join(', ')}`, open.length > 0]);
    const spoofed = await captureWhile(ns(box.api), 'eth0', `tcp port 8080 and src host ${box.web.ip} and tcp[tcpflags] & tcp-syn != 0`, 2500, () => spoofedSyns(ns(box.attacker), box.web.ip, box.api.ip, 8080, 5));
    attempts.push([`attacker's SYNs forged as web reached api: ${spoofed}`, spoofed > 0]);
    const through = attempts.filter(([, ok]) => ok).map(([what]) => what);
    if (through.length) {
      // what the daemon thought when it let them through
      const modes = await bastion(['mode', '-o', 'json', ...pin]);
      const tail = daemon!.lines.slice(-40).join('\n');
      assert.deepEqual(through, [], `every attack of the set is blocked; modes: ${modes.stdout}\ndaemon log:\n${tail}`);
    }
  });
});
