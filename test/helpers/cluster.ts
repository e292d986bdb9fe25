/**
 * A Bastion cluster on one machine: three (or more) "hosts" as network
 * namespaces joined by an underlay bridge, etcd in its own namespace on that
 * underlay (TLS, client-certificate users, `cluster init`'s roles), and in
 * each host a Docker-like bridge with namespace containers and that host's
 * daemon (`bastion run --cluster ...`, run inside the host namespace with
 * nsenter --net so bpffs and /run stay shared) with its own pin path.
 *
 *   <p>-ul: bridge ── <p>-etcd (.2)
 *                  ── <p>-a (.11): br0 10.N.1.1/16 ── <p>-a-web 10.N.1.10 ...
 *                  ── <p>-b (.12): br0 10.N.2.1/16 ── <p>-b-api 10.N.2.10 ...
 *                  ── <p>-c (.13): ...
 *
 * Containers of all hosts share one /16 (as on a Docker overlay network),
 * each host allocating from its own /24, so a container reaches another
 * host's container on its link: the stack answers the ARP, the tunnel
 * carries the packet. Container MTU is 1450 (underlay 1500 less VXLAN).
 */
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { run } from './netns.js';
import { createUnderlay, startTestEtcd, uniqueClusterPrefix, type TestEtcd, type Underlay } from './etcd.js';
import { flowHistoryDirFor } from '../../src/api/paths.js';
import { BASTION_BIN, BastionDaemon, uniquePinPath, writeConfigFile, type BastionConfig } from './bastion-daemon.js';
import { nsRun, stopBackground, type RunResult } from './probes.js';

export interface ClusterContainer {
  name: string;
  host: string;
  /** namespace name */
  netns: string;
  ip: string;
  mac: string;
  /** host-side veth, in the host's namespace */
  hostIf: string;
  labels: Record<string, string>;
}

export interface TestHost {
  name: string;
  index: number;
  netns: string;
  /** underlay address */
  ip: string;
  pin: string;
  configPath: string;
  bridgeMac: string;
  containers: ClusterContainer[];
  daemon?: BastionDaemon;
  nextIp: number;
}

export interface ClusterSpec {
  /** host name → its containers (name and labels) */
  hosts: Record<string, Array<{ name: string; labels?: Record<string, string> }>>;
  leaseTtlS?: number;
  /** each host's containers on a /24 of their own, other hosts reached through the gateway (default: one /16 on-link) */
  routed?: boolean;
  /** more node names with credentials and etcd roles but no host namespace (a node the test runs elsewhere, e.g. in its own namespace) */
  extraNodes?: string[];
}

function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export class TestCluster {
  readonly hosts = new Map<string, TestHost>();
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    readonly underlay: Underlay,
    readonly etcd: TestEtcd,
    /** '10.N': containers are 10.N.<host>.x/16 */
    readonly net: string,
    readonly dir: string,
    readonly leaseTtlS: number,
    /** prefix length of container addresses and bridges: 16 (one link) or 24 (routed) */
    readonly prefixLen: number,
  ) {}

  static async create(spec: ClusterSpec): Promise<TestCluster> {
    const prefix = uniqueClusterPrefix();
    const u = await createUnderlay(prefix);
    const names = Object.keys(spec.hosts);
    let etcd: TestEtcd | undefined;
    try {
      etcd = await startTestEtcd(u, [...names, ...(spec.extraNodes ?? [])], { attachSelf: true });
      const c = new TestCluster(prefix, u, etcd, `10.${randomInt(100, 250)}`, mkdtempSync(join(tmpdir(), `${prefix}-cluster-`)), spec.leaseTtlS ?? 4, spec.routed ? 24 : 16);
      process.once('exit', () => rmSync(c.dir, { recursive: true, force: true }));
      let i = 1;
      for (const name of names) {
        await c.addHost(name, i++);
        for (const ct of spec.hosts[name]!) await c.addContainer(name, ct.name, ct.labels ?? { app: ct.name });
      }
      return c;
    } catch (e) {
      await etcd?.destroy().catch(() => undefined);
      await u.destroy().catch(() => undefined);
      throw e;
    }
  }

  private async addHost(name: string, index: number): Promise<TestHost> {
    const netns = `${this.prefix}-${name}`;
    await run('ip', ['netns', 'add', netns]);
    const h: TestHost = {
      name,
      index,
      netns,
      ip: `${this.underlay.base}.${10 + index}`,
      pin: uniquePinPath(),
      configPath: join(this.dir, `${name}.yaml`),
      bridgeMac: randomMac(),
      containers: [],
      nextIp: 10,
    };
    this.hosts.set(name, h);
    await this.underlay.attach(netns, 10 + index, 'ul0');
    await run('ip', ['-n', netns, 'link', 'add', 'br0', 'address', h.bridgeMac, 'type', 'bridge']);
    await run('ip', ['-n', netns, 'addr', 'add', `${this.net}.${index}.1/${this.prefixLen}`, 'dev', 'br0']);
    await run('ip', ['-n', netns, 'link', 'set', 'br0', 'up']);
    return h;
  }

  host(name: string): TestHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  container(name: string): ClusterContainer {
    for (const h of this.hosts.values()) {
      const c = h.containers.find((x) => x.name === name);
      if (c) return c;
    }
    throw new Error(`no container ${name}`);
  }

  /** A namespace container on a host's bridge; `ip` defaults to the host's next address. */
  async addContainer(host: string, name: string, labels: Record<string, string>, ip?: string): Promise<ClusterContainer> {
    const h = this.host(host);
    const netns = `${this.prefix}-${host}-${name}`;
    const hostIf = `v${name}`.slice(0, 15);
    const c: ClusterContainer = { name, host, netns, ip: ip ?? `${this.net}.${h.index}.${h.nextIp++}`, mac: randomMac(), hostIf, labels };
    await run('ip', ['netns', 'add', netns]);
    await run('ip', ['-n', h.netns, 'link', 'add', hostIf, 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    await run('ip', ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'address', c.mac, 'mtu', '1450']);
    await run('ip', ['-n', netns, 'addr', 'add', `${c.ip}/${this.prefixLen}`, 'dev', 'eth0']);
    await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', netns, 'route', 'add', 'default', 'via', `${this.net}.${h.index}.1`]);
    await run('ip', ['-n', h.netns, 'link', 'set', hostIf, 'master', 'br0', 'up']);
    h.containers.push(c);
    this.writeConfig(h);
    return c;
  }

  async removeContainer(name: string): Promise<void> {
    const c = this.container(name);
    const h = this.host(c.host);
    h.containers.splice(h.containers.indexOf(c), 1);
    this.writeConfig(h);
    await run('ip', ['netns', 'del', c.netns], { allowFail: true });
  }

  /** The host's config: its containers, no policies (those are the cluster's). */
  writeConfig(h: TestHost, extra: Partial<BastionConfig> = {}): void {
    writeConfigFile(h.configPath, { containers: h.containers.map((c) => ({ name: c.name, netns: c.netns, labels: c.labels })), ...extra });
  }

  daemonArgs(h: TestHost, extra: string[] = []): string[] {
    return [...this.etcd.flags(`node-${h.name}`), '--node', h.name, '--underlay', 'ul0', '--lease-ttl', String(this.leaseTtlS), '--tunnel-device', 'bvx0', ...extra];
  }

  /** Starts a host's daemon and waits for it to be ready. */
  async start(host: string, extra: string[] = []): Promise<BastionDaemon> {
    const h = this.host(host);
    if (h.daemon?.running) throw new Error(`daemon of ${host} already running`);
    const d = new BastionDaemon(h.configPath, h.pin, this.daemonArgs(h, extra), h.netns);
    h.daemon = d;
    d.start();
    await d.waitReady(60_000);
    return d;
  }

  async startAll(): Promise<void> {
    await Promise.all([...this.hosts.keys()].map((h) => this.start(h)));
  }

  /** `bastion ARGS` inside a host's namespace. */
  bastionOn(host: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return nsRun(null, 'nsenter', [`--net=/run/netns/${this.host(host).netns}`, BASTION_BIN, ...args], { timeoutMs });
  }

  /** `bastion ARGS --cluster ...` with the admin credential, from the test's namespace. */
  admin(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return nsRun(null, BASTION_BIN, [...args, ...this.etcd.flags('admin')], { timeoutMs });
  }

  async policyAdd(name: string, from: string, to: string, ports?: string[]): Promise<void> {
    const r = await this.admin(['policy', 'add', name, '--from', from, '--to', to, ...(ports ? ['--ports', ...ports] : [])]);
    if (r.code !== 0) throw new Error(`policy add ${name}: exit ${r.code} ${r.stderr}`);
  }

  async policyDelete(...names: string[]): Promise<void> {
    const r = await this.admin(['policy', 'delete', ...names]);
    if (r.code !== 0) throw new Error(`policy delete ${names.join(' ')}: exit ${r.code} ${r.stderr}`);
  }

  async status(host: string): Promise<any> {
    const r = await this.bastionOn(host, ['status', '--json', '--pin-path', this.host(host).pin], 20_000);
    try {
      return JSON.parse(r.stdout);
    } catch {
      throw new Error(`status on ${host}: exit ${r.code} ${r.stderr}`);
    }
  }

  /** Everything away: daemons, `bastion down` in each host, namespaces, etcd, underlay, files. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await stopBackground().catch(() => undefined);
    for (const h of this.hosts.values()) {
      await h.daemon?.stop().catch(() => undefined);
      await this.bastionOn(h.name, ['down', '--pin-path', h.pin]).catch(() => undefined);
      rmSync(h.pin, { recursive: true, force: true });
      // its flow history too (a daemon started here in the background is not a BastionDaemon's)
      rmSync(dirname(flowHistoryDirFor(h.pin)), { recursive: true, force: true });
      for (const c of h.containers) await run('ip', ['netns', 'del', c.netns], { allowFail: true });
      await run('ip', ['netns', 'del', h.netns], { allowFail: true });
    }
    await this.etcd.destroy().catch(() => undefined);
    await this.underlay.destroy().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
