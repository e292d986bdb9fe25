/**
 * `bastion demo`: a small multi-service app on a real Docker engine
 * (web → api → db, plus an attacker), attacked once on plain Docker and once
 * under Bastion, with a report of what was tried and what got through.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { socketPathFor } from '../api/paths.js';
import { apiRequest } from '../api/client.js';
import { DEMO } from './settings.js';

export { DEMO };
import type { StatusReport } from '../api/types.js';
import {
  arpScan,
  arpspoofFor,
  captureWhile,
  neighbourMac,
  nmapSweep,
  portScan,
  spoofedSyns,
  tcpConnects,
  transfers,
  type Netns,
} from './probes.js';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');



const SERVICES: Array<{ name: string; app: string; ip: string; cmd: string }> = [
  { name: 'demo-web', app: 'web', ip: '10.213.7.10', cmd: 'nc -ll -p 80 -e cat' },
  { name: 'demo-api', app: 'api', ip: '10.213.7.20', cmd: 'nc -ll -p 8080 -e cat & nc -ll -p 9090 -e cat & wait' },
  { name: 'demo-db', app: 'db', ip: '10.213.7.30', cmd: 'nc -ll -p 5432 -e cat' },
  { name: 'demo-attacker', app: 'attacker', ip: '10.213.7.66', cmd: 'sleep 2147483647' },
];

export const DEMO_POLICY = `# Bastion demo policy: web may call api on 8080, api may call db on 5432.
# Everything else between these containers, and to the host, is denied.
mode: enforce
policies:
  - name: web-to-api
    from: { app: web }
    to: { app: api }
    ports: ["8080/tcp"]
  - name: api-to-db
    from: { app: api }
    to: { app: db }
    ports: ["5432/tcp"]
`;

export interface CheckResult {
  attack: string;
  expectWithBastion: 'allowed' | 'blocked';
  plain?: string;
  bastion?: string;
  ok?: boolean;
}

type Say = (msg: string) => void;

interface Running {
  name: string;
  app: string;
  ip: string;
  mac: string;
  pid: number;
}

async function ensureDocker(say: Say): Promise<void> {
  say('making sure the Docker engine runs and the demo image exists (scripts/ensure-docker)');
  await run('bash', [join(ROOT, 'scripts/ensure-docker')], { timeout: 600_000 });
}

async function startApp(docker: Docker, say: Say): Promise<Running[]> {
  await removeApp(docker);
  say(`creating network ${DEMO.network} (${DEMO.subnet})`);
  await docker.createNetwork({
    Name: DEMO.network,
    Driver: 'bridge',
    IPAM: { Config: [{ Subnet: DEMO.subnet, Gateway: DEMO.gateway }] },
    Labels: { [DEMO.label]: 'true' },
  });
  const out: Running[] = [];
  for (const s of SERVICES) {
    say(`starting ${s.name} (${s.ip})`);
    const c = await docker.createContainer({
      name: s.name,
      Image: DEMO.image,
      Cmd: ['sh', '-c', s.cmd],
      Labels: { [DEMO.label]: 'true', app: s.app },
      HostConfig: { NetworkMode: DEMO.network },
      NetworkingConfig: { EndpointsConfig: { [DEMO.network]: { IPAMConfig: { IPv4Address: s.ip } } } },
    });
    await c.start();
    const info = await c.inspect();
    out.push({ name: s.name, app: s.app, ip: s.ip, mac: info.NetworkSettings.Networks[DEMO.network]!.MacAddress.toLowerCase(), pid: info.State.Pid });
  }
  return out;
}

async function removeApp(docker: Docker): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`${DEMO.label}=true`] } });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
  const nets = await docker.listNetworks({ filters: { name: [DEMO.network] } });
  for (const n of nets) if (n.Name === DEMO.network) await docker.getNetwork(n.Id).remove().catch(() => undefined);
}

function startHostListener(): void {
  stopPid(DEMO.hostListenerPid);
  const p = spawn('socat', [`TCP-LISTEN:${DEMO.hostPort},bind=${DEMO.gateway},fork,reuseaddr`, 'EXEC:cat'], { detached: true, stdio: 'ignore' });
  p.unref();
  mkdirSync(dirname(DEMO.hostListenerPid), { recursive: true });
  writeFileSync(DEMO.hostListenerPid, `${p.pid}\n`);
}

function stopPid(file: string, signal: NodeJS.Signals = 'SIGTERM'): boolean {
  if (!existsSync(file)) return false;
  const pid = Number(readFileSync(file, 'utf8').trim());
  try {
    if (pid > 0) process.kill(pid, signal);
  } catch {
    // already gone
  }
  unlinkSync(file);
  return pid > 0;
}

/** The attack set. Each returns a short text of what happened, and whether that is "through". */
async function attackSet(apps: Record<string, Running>, say: Say): Promise<Array<{ attack: string; expect: 'allowed' | 'blocked'; result: string; through: boolean }>> {
  const { web, api, db, attacker } = apps as Record<'web' | 'api' | 'db' | 'attacker', Running>;
  const ns = (r: Running): Netns => ({ pid: r.pid });
  const out: Array<{ attack: string; expect: 'allowed' | 'blocked'; result: string; through: boolean }> = [];
  const add = (attack: string, expect: 'allowed' | 'blocked', through: boolean, result: string) => {
    out.push({ attack, expect, result, through });
    say(`  ${attack}: ${result}`);
  };

  let ok = await transfers(ns(web), api.ip, 8080, 1_000_000);
  add('web → api:8080 (declared dependency), 1 MB', 'allowed', ok, ok ? 'transferred' : 'failed');
  ok = await tcpConnects(ns(web), api.ip, 9090);
  add('web → api:9090 (undeclared port)', 'blocked', ok, ok ? 'connected' : 'refused');
  ok = await tcpConnects(ns(web), db.ip, 5432);
  add('web → db:5432 (skipping the api)', 'blocked', ok, ok ? 'connected' : 'refused');
  ok = await tcpConnects(ns(api), web.ip, 80);
  add('api → web:80 (reverse direction)', 'blocked', ok, ok ? 'connected' : 'refused');

  const up = (await nmapSweep(ns(attacker), 'eth0', DEMO.subnet)).filter((ip) => ip !== attacker.ip);
  add('attacker: nmap -sn ARP sweep of the subnet', 'blocked', up.length > 0, up.length ? `found ${up.join(', ')}` : 'found nothing');
  const arp = await arpScan(ns(attacker), 'eth0', [web.ip, api.ip, db.ip]);
  add('attacker: arping web, api, db', 'blocked', arp.size > 0, arp.size ? `${arp.size} answered` : 'no answer');

  const open = [...(await portScan(ns(attacker), api.ip, [8080, 9090])), ...(await portScan(ns(attacker), db.ip, [5432]))];
  add('attacker: port scan of api and db', 'blocked', open.length > 0, open.length ? `open: ${open.join(', ')}` : 'nothing open');

  const webArp = await arpScan(ns(web), 'eth0', [api.ip, db.ip]);
  const apiMacOk = webArp.get(api.ip) === api.mac;
  add("web's ARP for api (a dependency) gets api's true MAC", 'allowed', apiMacOk, webArp.get(api.ip) ?? 'no answer');
  add("web's ARP for db (not a dependency)", 'blocked', webArp.has(db.ip), webArp.get(db.ip) ?? 'no answer');

  const spoofed = await captureWhile(ns(api), 'eth0', `tcp port 8080 and src host ${web.ip} and tcp[tcpflags] & tcp-syn != 0`, 2500, () =>
    spoofedSyns(ns(attacker), web.ip, api.ip, 8080, 5),
  );
  add("attacker forges web's IP towards api:8080 (5 SYNs)", 'blocked', spoofed > 0, `${spoofed} reached api`);

  await neighbourMac(ns(web), api.ip);
  await arpspoofFor(ns(attacker), 'eth0', web.ip, api.ip, 3000);
  const seen = await neighbourMac(ns(web), api.ip);
  const poisoned = seen === attacker.mac;
  add("attacker arpspoof: tells web that api is at the attacker's MAC", 'blocked', poisoned, poisoned ? "web's cache poisoned" : `web still has ${seen ?? 'no entry'}`);

  const sniffed = await captureWhile(ns(attacker), 'eth0', `host ${web.ip} and host ${api.ip}`, 1500, () => transfers(ns(web), api.ip, 8080, 500_000));
  add('attacker sniffs (promiscuous) during a web → api transfer', 'blocked', sniffed > 0, `${sniffed} packets captured`);

  ok = await tcpConnects(ns(web), DEMO.gateway, DEMO.hostPort);
  add(`web → host ${DEMO.gateway}:${DEMO.hostPort} (a host service)`, 'blocked', ok, ok ? 'connected' : 'refused');
  return out;
}

async function waitForDaemon(ms: number): Promise<StatusReport> {
  const deadline = Date.now() + ms;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const s = await apiRequest<StatusReport>(socketPathFor(DEMO.pinPath), 'GET', '/v1/status', 2000);
      if (s.ok && s.endpoints.length >= SERVICES.length) return s;
      last = `${s.endpoints.length} containers protected`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`the Bastion daemon did not get ready in ${ms / 1000}s (${last}); see ${DEMO.log}`);
}

export interface DemoReport {
  checks: CheckResult[];
  passed: boolean;
  status?: StatusReport;
}

export async function runDemo(say: Say): Promise<DemoReport> {
  await ensureDocker(say);
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  await stopDemoDaemon();
  const running = await startApp(docker, say);
  const apps = Object.fromEntries(running.map((r) => [r.app, r]));
  startHostListener();
  await new Promise((r) => setTimeout(r, 500));

  say('attacking the app on plain Docker (no Bastion yet)');
  const plain = await attackSet(apps, say);

  say(`starting Bastion: bin/bastion run --docker --config ${DEMO.config} (log: ${DEMO.log})`);
  mkdirSync(dirname(DEMO.config), { recursive: true });
  writeFileSync(DEMO.config, DEMO_POLICY);
  const logFd = openSync(DEMO.log, 'a');
  const daemon = spawn(
    join(ROOT, 'bin/bastion'),
    ['run', '--docker', '--config', DEMO.config, '--select', `${DEMO.label}=true`, '--pin-path', DEMO.pinPath],
    { detached: true, stdio: ['ignore', logFd, logFd] },
  );
  daemon.unref();
  closeSync(logFd);
  writeFileSync(DEMO.pidFile, `${daemon.pid}\n`);
  const status = await waitForDaemon(60_000);
  // ARP caches filled during the plain run would hide what the stack does.
  for (const r of running) await run('nsenter', [`--net=/proc/${r.pid}/ns/net`, 'ip', 'neigh', 'flush', 'all']).catch(() => undefined);

  say('attacking the same app under Bastion');
  const guarded = await attackSet(apps, say);

  const checks: CheckResult[] = guarded.map((g, i) => ({
    attack: g.attack,
    expectWithBastion: g.expect,
    plain: plain[i]?.result,
    bastion: g.result,
    ok: g.expect === 'allowed' ? g.through : !g.through,
  }));
  return { checks, passed: checks.every((c) => c.ok), status };
}

async function stopDemoDaemon(): Promise<void> {
  if (stopPid(DEMO.pidFile)) await new Promise((r) => setTimeout(r, 500));
}

export async function demoDown(say: Say): Promise<void> {
  say('stopping the demo daemon and removing its stacks and pins');
  await stopDemoDaemon();
  await run(join(ROOT, 'bin/bastion'), ['down', '--pin-path', DEMO.pinPath]).catch(() => undefined);
  stopPid(DEMO.hostListenerPid);
  say('removing the demo containers and network');
  try {
    await removeApp(new Docker({ socketPath: '/var/run/docker.sock' }));
  } catch {
    // no Docker engine: nothing to remove there
  }
  // the demo's config and pid files
  rmSync(dirname(DEMO.config), { recursive: true, force: true });
}
