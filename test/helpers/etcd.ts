/**
 * A cluster store for tests: an underlay (a bridge in a namespace of its
 * own, so Docker's FORWARD policy never sees it), namespaces attached to it,
 * and a real etcd (Debian's etcd-server) in its own namespace on that
 * underlay, under TLS with client-certificate authentication, certificates
 * from `bastion cluster certs` and users and roles from `bastion cluster
 * init`'s code. Everything has a unique prefix and goes on destroy().
 *
 *   <p>-ul    bridge "ul" ── veth ── <p>-etcd (etcd at .2)
 *                         ── veth ── other namespaces (hosts) at .11, .12 ...
 *                         ── veth ── the test's own namespace, optionally (.254)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { freeSubnet24, run } from './netns.js';
import { writeClusterCerts } from '../../src/cluster/certs.js';
import { connectCluster } from '../../src/cluster/etcd.js';
import { initCluster } from '../../src/cluster/roles.js';
import type { Etcd3 } from 'etcd3';

export interface Underlay {
  prefix: string;
  /** the underlay namespace (holds the bridge) */
  netns: string;
  /** '10.x.y' */
  base: string;
  /** attach a namespace (null: the test's own) with address base.<host>/24; returns the interface name there */
  attach(ns: string | null, host: number, ifname?: string): Promise<string>;
  destroy(): Promise<void>;
}

const live = new Set<() => Promise<void>>();
if (process.env.NODE_TEST_CONTEXT) {
  after(async () => {
    for (const d of [...live]) await d().catch(() => undefined);
  });
}
process.on('exit', () => {
  for (const k of killOnExit) {
    try {
      k.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});
const killOnExit = new Set<ChildProcess>();

export function uniqueClusterPrefix(): string {
  return `bc${randomBytes(2).toString('hex')}`;
}

export async function createUnderlay(prefix: string): Promise<Underlay> {
  const netns = `${prefix}-ul`;
  const base = await freeSubnet24();
  const links: string[] = [];
  const namespaces = [netns];
  let n = 0;
  await run('ip', ['netns', 'add', netns]);
  const destroy = async () => {
    live.delete(destroy);
    for (const l of links) await run('ip', ['link', 'del', l], { allowFail: true });
    for (const ns of namespaces) await run('ip', ['netns', 'del', ns], { allowFail: true });
  };
  live.add(destroy);
  await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', netns, 'link', 'add', 'ul', 'type', 'bridge']);
  await run('ip', ['-n', netns, 'link', 'set', 'ul', 'up']);
  return {
    prefix,
    netns,
    base,
    async attach(ns, host, ifname = 'ul0') {
      const i = n++;
      const outer = `u${i}`;
      const tmp = `${prefix}t${i}`;
      await run('ip', ['link', 'add', tmp, 'type', 'veth', 'peer', 'name', outer, 'netns', netns]);
      await run('ip', ['-n', netns, 'link', 'set', outer, 'master', 'ul', 'up']);
      if (ns === null) {
        await run('ip', ['link', 'set', tmp, 'name', ifname]);
        links.push(ifname);
        await run('ip', ['addr', 'add', `${base}.${host}/24`, 'dev', ifname]);
        await run('ip', ['link', 'set', ifname, 'up']);
      } else {
        await run('ip', ['link', 'set', tmp, 'netns', ns]);
        await run('ip', ['-n', ns, 'link', 'set', tmp, 'name', ifname]);
        await run('ip', ['-n', ns, 'addr', 'add', `${base}.${host}/24`, 'dev', ifname]);
        await run('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
        await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      }
      return ifname;
    },
    destroy,
  };
}

export interface TestEtcd {
  netns: string;
  ip: string;
  url: string;
  certs: string;
  /** file paths of one identity's credentials: 'root', 'admin', 'node-a' ... */
  creds(name: string): { ca: string; cert: string; key: string };
  /** a client with one identity's certificate */
  client(name: string): Etcd3;
  /** bastion CLI flags for one identity */
  flags(name: string): string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  readonly running: boolean;
  log(): string;
  destroy(): Promise<void>;
}

/**
 * etcd in namespace <prefix>-etcd at base.2 on the underlay, TLS and
 * client-certificate auth on, users and roles for `nodes` created.
 */
export async function startTestEtcd(u: Underlay, nodes: string[], o: { attachSelf?: boolean } = {}): Promise<TestEtcd> {
  const netns = `${u.prefix}-etcd`;
  await run('ip', ['netns', 'add', netns]);
  const dir = mkdtempSync(join(tmpdir(), `${u.prefix}-etcd-`));
  const certs = join(dir, 'certs');
  const data = join(dir, 'data');
  let child: ChildProcess | undefined;
  let output = '';
  const clients: Etcd3[] = [];
  const ip = `${u.base}.2`;
  const url = `https://${ip}:2379`;
  const destroy = async () => {
    live.delete(destroy);
    for (const c of clients) c.close();
    await stop('SIGKILL');
    await run('ip', ['netns', 'del', netns], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  };
  live.add(destroy);
  await u.attach(netns, 2, 'eth0');
  if (o.attachSelf) await u.attach(null, 254, `${u.prefix}ul`);
  await writeClusterCerts({ dir: certs, nodes, etcdHosts: [ip], days: 2 });
  const creds = (name: string) => ({ ca: join(certs, 'ca.pem'), cert: join(certs, `${name}.pem`), key: join(certs, `${name}-key.pem`) });

  const start = async (): Promise<void> => {
    output = '';
    child = spawn(
      'nsenter',
      [
        `--net=/run/netns/${netns}`,
        'etcd',
        '--name', 'etcd0',
        '--data-dir', data,
        '--listen-client-urls', url,
        '--advertise-client-urls', url,
        '--listen-peer-urls', 'http://127.0.0.1:2380',
        '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
        '--initial-cluster', 'etcd0=http://127.0.0.1:2380',
        '--cert-file', join(certs, 'etcd-server.pem'),
        '--key-file', join(certs, 'etcd-server-key.pem'),
        '--trusted-ca-file', join(certs, 'ca.pem'),
        '--client-cert-auth',
        '--logger', 'zap',
        '--log-outputs', 'stderr',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    killOnExit.add(child);
    const c = child;
    c.stdout!.on('data', (d) => (output += String(d)));
    c.stderr!.on('data', (d) => (output += String(d)));
    c.once('exit', () => killOnExit.delete(c));
    const end = Date.now() + 20_000;
    while (Date.now() < end) {
      if (c.exitCode !== null) throw new Error(`etcd exited (${c.exitCode}):\n${output.slice(-3000)}`);
      if (/serving client traffic|ready to serve client requests/.test(output)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd did not start within 20 s:\n${output.slice(-3000)}`);
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(signal);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  };

  await start();
  if (!existsSync(creds('root').cert)) throw new Error('no root certificate');
  // users, roles, authentication: exactly what `bastion cluster init` does
  const root = connectCluster({ url, ...creds('root') });
  try {
    await initCluster(root, nodes);
  } finally {
    root.close();
  }
  return {
    netns,
    ip,
    url,
    certs,
    creds,
    client(name) {
      const c = connectCluster({ url, ...creds(name) });
      clients.push(c);
      return c;
    },
    flags(name) {
      const c = creds(name);
      return ['--cluster', url, '--cluster-ca', c.ca, '--cluster-cert', c.cert, '--cluster-key', c.key];
    },
    stop,
    start,
    get running() {
      return !!child && child.exitCode === null && child.signalCode === null;
    },
    log: () => output,
    destroy,
  };
}
