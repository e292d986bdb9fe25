/**
 * `bastion demo`: a small multi-service app on a real Docker engine
 * (web → api → db, plus an attacker), attacked once on plain Docker and once
 * under Bastion, with a report of what was tried and what got through.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { socketPathFor } from '../api/paths.js';
import { apiRequest } from '../api/client.js';
import { BASTION_BIN, DEMO, demoCommand } from './settings.js';
import type { StatusReport } from '../api/types.js';
import type { FlowRecord } from '../agent/flow-log.js';
import { readPidFile, signalRecorded, writePidFile } from '../daemon/instance.js';
import {
  arpScan,
  captureWhile,
  forgetNeighbour,
  nmapSweep,
  pinNeighbour,
  poisonThenSniff,
  portScan,
  spoofedSyns,
  tcpConnects,
  transfers,
  type Netns,
} from './probes.js';

export { DEMO };

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

/** Which of the five security functions stopped an attempt, by the drop reason the datapath logged. */
const PROTECTION_OF_REASON: Record<string, string> = {
  'policy-denied': 'container-aware isolation',
  'ct-invalid': 'container-aware isolation',
  'host-denied': 'host isolation',
  'spoofed-ip': 'source verification',
  'spoofed-mac': 'source verification',
  'spoofed-ifindex': 'source verification',
  'spoofed-arp': 'direct ARP handler',
  'arp-denied': 'direct ARP handler',
  'arp-unsolicited': 'direct ARP handler',
};

export interface CheckResult {
  attack: string;
  expectWithBastion: 'allowed' | 'blocked';
  /** what happened on plain Docker, and under Bastion */
  plain?: string;
  bastion?: string;
  /** the protection that stopped it, from the daemon's own evidence (drop reasons, forwarding counter) */
  protection?: string;
  /** works, blocked, not vulnerable (plain Docker was not either), INCONCLUSIVE (the attack failed on plain Docker), FAILED */
  verdict?: string;
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

/** One row of the report: an attempt run once on plain Docker and once under Bastion. */
interface Attempt {
  attack: string;
  expect: 'allowed' | 'blocked';
  /**
   * Plain Docker is open to this attack: the row must show it succeeding
   * there, or it proves nothing (INCONCLUSIVE). false: plain Docker is not
   * open to it either, and the report says so.
   */
  plainVulnerable: boolean;
  /** the containers whose drops are the evidence (the attacker, and the target for ingress drops) */
  actors: Running[];
  /** the protection is direct forwarding: evidence is the redirected counter, not a drop */
  forwarding?: boolean;
  run(): Promise<{ through: boolean; result: string }>;
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
  stopRecorded(DEMO.hostListenerPid);
  const p = spawn('socat', [`TCP-LISTEN:${DEMO.hostPort},bind=${DEMO.gateway},fork,reuseaddr`, 'EXEC:cat'], { detached: true, stdio: 'ignore' });
  p.unref();
  if (p.pid) writePidFile(DEMO.hostListenerPid, {}, p.pid);
}

/**
 * Stops the process a pid file of the demo records, if it is still that
 * process (pid and start time): a stale file naming a reused pid is removed
 * without signalling anyone.
 */
function stopRecorded(file: string): boolean {
  const rec = readPidFile(file);
  rmSync(file, { force: true });
  return !!rec && signalRecorded(rec, 'SIGTERM') === 'signalled';
}

/**
 * The attempts, in the order of the report. Attacks whose target's MAC the
 * attacker needs use a pinned neighbour entry with the true MAC (Docker
 * derives it from the IP, so an attacker knows it without asking ARP): the
 * packet then gets past ARP, and what stops it under Bastion is the
 * protection the row is about, not an unanswered ARP request.
 */
function attempts(apps: Record<'web' | 'api' | 'db' | 'attacker', Running>): Attempt[] {
  const { web, api, db, attacker } = apps;
  const ns = (r: Running): Netns => ({ pid: r.pid });
  const pinned = async (from: Running, ...to: Running[]) => {
    for (const t of to) await pinNeighbour(ns(from), 'eth0', t.ip, t.mac);
  };
  const refused = (ok: boolean) => ({ through: ok, result: ok ? 'connected' : 'refused' });
  return [
    {
      attack: 'web → api:8080 (declared dependency), 1 MB',
      expect: 'allowed',
      plainVulnerable: false,
      actors: [web, api],
      run: async () => {
        const ok = await transfers(ns(web), api.ip, 8080, 1_000_000);
        return { through: ok, result: ok ? 'transferred' : 'failed' };
      },
    },
    {
      attack: "web's ARP for api (a dependency) gets api's true MAC",
      expect: 'allowed',
      plainVulnerable: false,
      actors: [web],
      run: async () => {
        await forgetNeighbour(ns(web), 'eth0', api.ip);
        const got = (await arpScan(ns(web), 'eth0', [api.ip])).get(api.ip);
        return { through: got === api.mac, result: got ?? 'no answer' };
      },
    },
    {
      attack: 'web → api:9090 (undeclared port)',
      expect: 'blocked',
      plainVulnerable: true,
      actors: [web, api],
      run: async () => refused(await tcpConnects(ns(web), api.ip, 9090)),
    },
    {
      attack: "web → db:5432 (a compromised web skips the api; db's MAC known)",
      expect: 'blocked',
      plainVulnerable: true,
      actors: [web, db],
      run: async () => {
        await pinned(web, db);
        return refused(await tcpConnects(ns(web), db.ip, 5432));
      },
    },
    {
      attack: 'api → web:80 (reverse direction)',
      expect: 'blocked',
      plainVulnerable: true,
      actors: [api, web],
      run: async () => {
        await pinned(api, web);
        return refused(await tcpConnects(ns(api), web.ip, 80));
      },
    },
    {
      attack: 'attacker: nmap -sn ARP sweep of the subnet',
      expect: 'blocked',
      plainVulnerable: true,
      actors: [attacker],
      run: async () => {
        const up = (await nmapSweep(ns(attacker), 'eth0', DEMO.subnet)).filter((ip) => ip !== attacker.ip && ip !== DEMO.gateway);
        return { through: up.length > 0, result: up.length ? `found ${up.join(', ')}` : 'found no container' };
      },
    },
    {
      attack: 'attacker: arping web, api, db',
      expect: 'blocked',
      plainVulnerable: true,
      actors: [attacker],
      run: async () => {
        const arp = await arpScan(ns(attacker), 'eth0', [web.ip, api.ip, db.ip]);
        return { through: arp.size > 0, result: arp.size ? `${arp.size} answered` : 'no answer' };
      },
    },
    {
      attack: "web's ARP for db (not a dependency)",
      expect: 'blocked',
      plainVulnerable: true,
      actors: [web],
      run: async () => {
        await forgetNeighbour(ns(web), 'eth0', db.ip);
        const got = (await arpScan(ns(web), 'eth0', [db.ip])).get(db.ip);
        return { through: got !== undefined, result: got ? `answered ${got}` : 'no answer' };
      },
    },
    {
      attack: "attacker: port scan of api and db (their MACs known)",
      expect: 'blocked',
      plainVulnerable: true,
      actors: [attacker, api, db],
      run: async () => {
        await pinned(attacker, api, db);
        const open = [...(await portScan(ns(attacker), api.ip, [8080, 9090])).map((p) => `api:${p}`), ...(await portScan(ns(attacker), db.ip, [5432])).map((p) => `db:${p}`)];
        return { through: open.length > 0, result: open.length ? `open: ${open.join(', ')}` : 'nothing open' };
      },
    },
    {
      attack: "attacker forges web's IP towards api:8080 (5 SYNs, api's MAC known)",
      expect: 'blocked',
      plainVulnerable: true,
      actors: [attacker, api],
      run: async () => {
        await pinned(attacker, api);
        const n = await captureWhile(ns(api), 'eth0', `tcp port 8080 and src host ${web.ip} and tcp[tcpflags] & tcp-syn != 0 and ether src ${attacker.mac}`, 2500, () =>
          spoofedSyns(ns(attacker), web.ip, api.ip, 8080, 5),
        );
        return { through: n > 0, result: `${n} reached api` };
      },
    },
    {
      attack: 'attacker ARP-poisons web (arpspoof: "api is at my MAC"), then sniffs web → api',
      expect: 'blocked',
      plainVulnerable: true,
      actors: [attacker],
      run: async () => {
        // web talks to api first, so that it has an entry a forged reply can overwrite
        await tcpConnects(ns(web), api.ip, 8080);
        const r = await poisonThenSniff(ns(attacker), 'eth0', { ns: ns(web), ip: web.ip }, { ip: api.ip, port: 8080 }, { poisonMs: 4500, bytes: 200_000 });
        const poisoned = r.victimHas === attacker.mac;
        return {
          through: r.captured > 0,
          result: `${poisoned ? "web's cache poisoned" : `web kept ${r.victimHas ?? 'no entry'}`}, ${r.captured} packets of web → api captured`,
        };
      },
    },
    {
      attack: 'attacker sniffs (promiscuous) a web → api transfer, without poisoning',
      expect: 'blocked',
      // a learning bridge hands a unicast frame only to the port of its destination
      plainVulnerable: false,
      actors: [attacker],
      forwarding: true,
      run: async () => {
        const n = await captureWhile(ns(attacker), 'eth0', `host ${web.ip} and host ${api.ip}`, 1500, () => transfers(ns(web), api.ip, 8080, 500_000));
        return { through: n > 0, result: `${n} packets captured` };
      },
    },
    {
      attack: `web → host ${DEMO.gateway}:${DEMO.hostPort} (a host service)`,
      expect: 'blocked',
      plainVulnerable: true,
      actors: [web],
      run: async () => refused(await tcpConnects(ns(web), DEMO.gateway, DEMO.hostPort)),
    },
  ];
}

interface Outcome {
  through: boolean;
  result: string;
  protection?: string;
}

/** Runs every attempt once; with a daemon, also finds what stopped each one in its flow log and counters. */
async function runAttempts(list: Attempt[], say: Say, daemon?: { socket: string }): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const a of list) {
    const redirectedBefore = daemon ? await redirectedPackets(daemon.socket) : 0;
    const mark = new Date(Date.now() - 50).toISOString();
    const r = await a.run();
    let protection: string | undefined;
    if (daemon && a.expect === 'blocked' && !r.through) {
      protection = a.forwarding
        ? forwardingEvidence((await redirectedPackets(daemon.socket)) - redirectedBefore)
        : await dropEvidence(daemon.socket, mark, a.actors);
    }
    out.push({ ...r, ...(protection ? { protection } : {}) });
    say(`  ${a.attack}: ${r.result}${protection ? ` [${protection}]` : ''}`);
  }
  return out;
}

/** The protections named by the drops of the actors since `mark`, with the drop reasons. */
async function dropEvidence(socket: string, mark: string, actors: Running[]): Promise<string | undefined> {
  // the ring buffer reader wakes within milliseconds; give the last drops a moment
  await new Promise((r) => setTimeout(r, 200));
  const flows = await apiRequest<FlowRecord[]>(socket, 'GET', '/v1/flows?limit=5000&verdict=DROPPED', 5000).catch(() => [] as FlowRecord[]);
  const isActor = (n: string | undefined) => !!n && actors.some((a) => n === a.name || n.startsWith(`${a.name}/`));
  const reasons = new Set(flows.filter((f) => f.time >= mark && (isActor(f.src.name) || isActor(f.endpoint))).map((f) => f.reason));
  const by = new Map<string, string[]>();
  for (const reason of reasons) {
    const p = PROTECTION_OF_REASON[reason];
    if (p) by.set(p, [...(by.get(p) ?? []), reason]);
  }
  return by.size ? [...by].map(([p, rs]) => `${p} (${rs.join(', ')})`).join('; ') : undefined;
}

function forwardingEvidence(redirected: number): string | undefined {
  return redirected > 0 ? `direct forwarding (${redirected} packets veth to veth, never on the bridge)` : undefined;
}

async function redirectedPackets(socket: string): Promise<number> {
  const s = await apiRequest<StatusReport>(socket, 'GET', '/v1/status', 5000).catch(() => undefined);
  return s?.counters.redirected?.packets ?? 0;
}

/** A row's verdict from both runs. */
export function verdictOf(a: Pick<Attempt, 'expect' | 'plainVulnerable'>, plain: Outcome, guarded: Outcome): { verdict: string; ok: boolean } {
  if (a.expect === 'allowed') return guarded.through ? { verdict: 'works', ok: true } : { verdict: 'FAILED', ok: false };
  if (guarded.through) return { verdict: 'FAILED', ok: false };
  if (plain.through) return { verdict: 'blocked', ok: true };
  if (!a.plainVulnerable) return { verdict: 'not vulnerable on plain Docker either', ok: true };
  // the attack did not work without Bastion: the row shows nothing about Bastion
  return { verdict: 'INCONCLUSIVE (failed on plain Docker too)', ok: false };
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
  // a previous demo's daemon and stacks would protect the "plain Docker" run
  await stopDemoDaemon();
  await run(BASTION_BIN, ['down', '--pin-path', DEMO.pinPath]).catch(() => undefined);
  const running = await startApp(docker, say);
  const apps = Object.fromEntries(running.map((r) => [r.app, r])) as Record<'web' | 'api' | 'db' | 'attacker', Running>;
  startHostListener();
  await new Promise((r) => setTimeout(r, 500));
  const list = attempts(apps);

  say('attacking the app on plain Docker (no Bastion yet)');
  const plain = await runAttempts(list, say);

  const args = ['run', '--docker', '--config', DEMO.config, '--select', `${DEMO.label}=true`, '--pin-path', DEMO.pinPath];
  say(`starting Bastion: ${demoCommand(args.join(' '))} (log: ${DEMO.log})`);
  mkdirSync(dirname(DEMO.config), { recursive: true });
  writeFileSync(DEMO.config, DEMO_POLICY);
  const logFd = openSync(DEMO.log, 'a');
  const daemon = spawn(BASTION_BIN, args, { detached: true, stdio: ['ignore', logFd, logFd] });
  daemon.unref();
  closeSync(logFd);
  if (daemon.pid) writePidFile(DEMO.pidFile, { pinPath: DEMO.pinPath, configPath: DEMO.config }, daemon.pid);
  const status = await waitForDaemon(60_000);
  // ARP caches filled during the plain run would hide what the stack does.
  for (const r of running) await run('nsenter', [`--net=/proc/${r.pid}/ns/net`, 'ip', 'neigh', 'flush', 'all']).catch(() => undefined);

  say('attacking the same app under Bastion');
  const guarded = await runAttempts(list, say, { socket: socketPathFor(DEMO.pinPath) });

  const checks: CheckResult[] = list.map((a, i) => {
    const p = plain[i]!;
    const g = guarded[i]!;
    const v = verdictOf(a, p, g);
    return { attack: a.attack, expectWithBastion: a.expect, plain: p.result, bastion: g.result, ...(g.protection ? { protection: g.protection } : {}), verdict: v.verdict, ok: v.ok };
  });
  return { checks, passed: checks.every((c) => c.ok), status };
}

async function stopDemoDaemon(): Promise<void> {
  if (stopRecorded(DEMO.pidFile)) await new Promise((r) => setTimeout(r, 500));
}

export async function demoDown(say: Say): Promise<void> {
  say('stopping the demo daemon and removing its stacks and pins');
  await stopDemoDaemon();
  await run(BASTION_BIN, ['down', '--pin-path', DEMO.pinPath]).catch(() => undefined);
  stopRecorded(DEMO.hostListenerPid);
  say('removing the demo containers and network');
  try {
    await removeApp(new Docker({ socketPath: '/var/run/docker.sock' }));
  } catch {
    // no Docker engine: nothing to remove there
  }
  // the demo's config and pid files
  rmSync(dirname(DEMO.config), { recursive: true, force: true });
}
