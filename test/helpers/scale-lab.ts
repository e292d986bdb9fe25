/**
 * Many namespace containers for the console's scale test: `networks` Linux
 * bridges of `perNetwork` containers each, every container a network
 * namespace with a veth and an address, and a Bastion daemon protecting all
 * of them. Everything lives inside a private "host" namespace of its own (as
 * the benchmark's topology does, bench/lib/topology.ts): the bridges, the
 * host-side veths and the daemon (nsenter --net, which keeps the real bpffs);
 * cleanup deletes the namespaces, and with them every link.
 *
 * The containers' subnet is one /16 over all the bridges (each bridge holds
 * its /24's gateway address): a container reaches a dependency on another
 * bridge directly, as Bastion answers its ARP request and hands the packets
 * veth to veth; no container needs the host (its gateway) for that.
 *
 * Namespaces are created with `ip -b` batches and configured by the
 * benchmark's bbnsconf (one process for all of them, bench/tools/bbnsconf.c):
 * 1,000 containers take seconds, not minutes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BASTION_BIN, BastionDaemon, REPO_ROOT, uniquePinPath, writeConfigFile, type BastionConfig, type PolicyEntry } from './bastion-daemon.js';
import { nsRun, type RunResult } from './probes.js';
import { buildTools } from '../../bench/lib/tools.js';

export interface ScaleContainer {
  name: string;
  netns: string;
  ip: string;
  network: number;
  labels: Record<string, string>;
}

async function must(r: Promise<RunResult>, what: string): Promise<RunResult> {
  const x = await r;
  if (x.code !== 0) throw new Error(`${what}: exit ${x.code}${x.timedOut ? ' (timed out)' : ''}: ${x.stderr.slice(0, 2000)}`);
  return x;
}

export class ScaleLab {
  readonly containers: ScaleContainer[] = [];
  readonly bridges: string[] = [];
  daemon?: BastionDaemon;
  private readonly namespaces: string[] = [];
  private created = false;

  private constructor(
    readonly prefix: string,
    readonly hostNs: string,
    readonly dir: string,
    readonly pinPath: string,
    readonly octet: number,
  ) {}

  get configPath(): string {
    return join(this.dir, 'bastion.yaml');
  }

  static async create(o: { networks: number; perNetwork: number }): Promise<ScaleLab> {
    if (o.networks > 200 || o.perNetwork > 240) throw new Error('scale lab: at most 200 networks of 240 containers');
    const prefix = `bs${randomBytes(2).toString('hex')}`;
    const lab = new ScaleLab(prefix, `${prefix}h`, mkdtempSync(join(tmpdir(), 'bastion-scale-')), uniquePinPath(), randomInt(100, 250));
    const onExit = () => lab.destroySync();
    process.once('exit', onExit);
    lab.removeExitHook = () => process.off('exit', onExit);
    try {
      await lab.build(o.networks, o.perNetwork);
    } catch (err) {
      await lab.cleanup();
      throw err;
    }
    return lab;
  }

  private removeExitHook = (): void => undefined;

  private async build(networks: number, perNetwork: number): Promise<void> {
    const tools = buildTools(join(REPO_ROOT, 'bench', 'tools'), join(this.dir, 'tools'));
    await must(nsRun(null, 'ip', ['netns', 'add', this.hostNs]), `ip netns add ${this.hostNs}`);
    this.created = true;
    const inHost = (args: string[], input: string) => must(nsRun(null, 'nsenter', [`--net=/run/netns/${this.hostNs}`, '--', 'ip', ...args], { input, timeoutMs: 300_000 }), 'ip in the host namespace');
    const bridgeLines: string[] = [];
    for (let k = 0; k < networks; k++) {
      const br = `${this.prefix}b${k}`;
      this.bridges.push(br);
      bridgeLines.push(`link add ${br} type bridge`, `addr add 10.${this.octet}.${k}.1/24 dev ${br}`, `link set ${br} up`);
    }
    await inHost(['-b', '-'], bridgeLines.join('\n') + '\n');
    const nsAdds: string[] = [];
    const links: string[] = [];
    const enslave: string[] = [];
    const conf: string[] = [`${this.hostNs} lo - net.ipv4.ip_forward=1 net.ipv6.conf.all.disable_ipv6=1`];
    for (let k = 0; k < networks; k++) {
      for (let i = 0; i < perNetwork; i++) {
        const n = this.containers.length;
        const name = `n${k}-c${i}`;
        const netns = `${this.prefix}c${n}`;
        const hostIf = `${this.prefix}v${n}`;
        const ip = `10.${this.octet}.${k}.${10 + i}`;
        nsAdds.push(`netns add ${netns}`);
        links.push(`link add ${hostIf} netns ${this.hostNs} type veth peer name eth0 netns ${netns}`);
        enslave.push(`link set ${hostIf} master ${this.bridges[k]} up`);
        conf.push(`${netns} eth0 ${ip}/16 net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
        this.namespaces.push(netns);
        this.containers.push({ name, netns, ip, network: k, labels: { app: name, tier: `t${i % 5}`, net: `n${k}` } });
      }
    }
    await must(nsRun(null, 'ip', ['-b', '-'], { input: nsAdds.join('\n') + '\n', timeoutMs: 300_000 }), 'ip netns add (batch)');
    await must(nsRun(null, 'ip', ['-b', '-'], { input: links.join('\n') + '\n', timeoutMs: 300_000 }), 'ip link add (batch)');
    await inHost(['-b', '-'], enslave.join('\n') + '\n');
    await must(nsRun(null, tools.bbnsconf, [], { input: conf.join('\n') + '\n', timeoutMs: 300_000 }), 'bbnsconf');
  }

  config(policies: PolicyEntry[], mode: 'enforce' | 'audit' = 'enforce'): BastionConfig {
    return { mode, containers: this.containers.map((c) => ({ name: c.name, netns: c.netns, labels: c.labels })), policies };
  }

  async startDaemon(policies: PolicyEntry[], readyTimeoutMs = 180_000): Promise<BastionDaemon> {
    writeConfigFile(this.configPath, this.config(policies));
    const d = new BastionDaemon(this.configPath, this.pinPath, [], this.hostNs);
    d.keepFlowLines = false;
    this.daemon = d.start();
    await d.waitReady(readyTimeoutMs);
    return d;
  }

  /** Runs a command in a container's namespace (nsenter: cheap, and no /sys remount). */
  exec(c: ScaleContainer, cmd: string, args: string[], timeoutMs = 10_000): Promise<RunResult> {
    return nsRun(null, 'nsenter', [`--net=/run/netns/${c.netns}`, '--', cmd, ...args], { timeoutMs });
  }

  async cleanup(): Promise<void> {
    await this.daemon?.stop().catch(() => undefined);
    if (this.created) {
      await nsRun(null, 'nsenter', [`--net=/run/netns/${this.hostNs}`, '--', BASTION_BIN, 'down', '--pin-path', this.pinPath], { timeoutMs: 60_000 });
    }
    this.destroySync();
    this.removeExitHook();
  }

  /** Deletes every namespace of the lab (and with them the links), the pins and the files. */
  private destroySync(): void {
    if (this.namespaces.length || this.created) {
      const names = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(this.prefix)) : [];
      if (names.length) {
        // synchronous: this also runs from the process's exit hook
        spawnSync('ip', ['-force', '-b', '-'], { input: names.map((n) => `netns del ${n}`).join('\n') + '\n', timeout: 300_000, stdio: ['pipe', 'ignore', 'ignore'] });
      }
      this.namespaces.length = 0;
      this.created = false;
    }
    rmSync(this.pinPath, { recursive: true, force: true });
    for (const f of ['sock', 'pid', 'policies.json']) rmSync(`/run/bastion/${this.pinPath.split('/').pop()}.${f}`, { force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
