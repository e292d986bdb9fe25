/**
 * The cross-host scenarios: the measured client on one host, the server on
 * another, hosts joined by an underlay bridge. Three ways to carry the pair:
 *
 *   overlay           a plain VXLAN overlay: on each host a bridge with the
 *                     containers and a VXLAN port to the other host (what
 *                     Docker's overlay driver and flannel's vxlan backend build)
 *   overlay-iptables  the same overlay, br_netfilter on, the pair's policy as
 *                     iptables rules on both hosts (conntrack first, one ACCEPT
 *                     per allowed port, DROP)
 *   bastion           the same hosts and bridges without a VXLAN port: each
 *                     host runs `bastion run --cluster` (etcd under TLS in a
 *                     namespace of its own on the underlay), which carries the
 *                     pair over its own VXLAN device with the sender's identity
 *
 * Everything lives in namespaces of this run (prefix P + tag): P<t>ul (the
 * underlay), P<t>h1 and P<t>h2 (hosts), P<t>cl and P<t>sv (client, server),
 * P<t>et (etcd). Containers are 10.S.1.2 and 10.S.2.2 on one /16, MTU 1450;
 * the underlay is 10.U.0.0/24. The bastion underlay is also reached from the
 * harness's namespace (a veth at .254), which writes the timed policies to
 * the store directly, as `bastion policy add --cluster` does.
 */
import { writeFileSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { Context } from './context.js';
import { CONN_PORT, DENIED_PORT, IPERF_PORT, PAIR_PORTS, PROBE_BASE, SOCKPERF_PORT, pairDeps, probeDep } from './deps.js';
import { Background, hrMs, inNs, run, sleep } from './exec.js';
import { loadRuleset, renderRuleset } from './iptables.js';
import { waitQuiet } from './quiet.js';
import { summarize, round } from './stats.js';
import { canConnect, connRate, iperf, sockperfPingPong, startConnServer, startIperfServer, startProbe, startSockperfServer } from './tools.js';
import type { ScenarioRun } from './scenarios.js';
import { removeFlowHistory } from './bastion.js';

export type CrossName = 'overlay' | 'overlay-iptables' | 'bastion';
export const CROSS_SCENARIOS: CrossName[] = ['overlay', 'overlay-iptables', 'bastion'];
const TAG: Record<CrossName, string> = { overlay: 'o', 'overlay-iptables': 'i', bastion: 'b' };

const CONTAINER_SYSCTLS = ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'];
const CLIENT_SYSCTLS = ['net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65535'];
const VNI = 42;
const MTU = 1450;

export interface PolicyLatency {
  samples_ms: number[];
  p50_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
  failures: number;
}

export interface CrossHostResult {
  runs: Record<CrossName, ScenarioRun[]>;
  policy: PolicyLatency | null;
  errors: string[];
}

async function sh(cmd: string[], input?: string): Promise<void> {
  await run(cmd, { timeoutMs: 60_000, ...(input !== undefined ? { input } : {}) });
}

class CrossTopology {
  readonly ns: { ul: string; h1: string; h2: string; client: string; server: string; etcd: string };
  readonly clientIp: string;
  readonly serverIp: string;
  readonly ulBase: string;
  readonly etcdUrl: string;
  private readonly bg: Background[] = [];
  private daemons: Background[] = [];
  private rootLink = '';
  private pki = '';
  private made: string[] = [];

  constructor(
    private readonly ctx: Context,
    readonly name: CrossName,
    underlayOctet: number,
  ) {
    const p = `${ctx.prefix}${TAG[name]}`;
    this.ns = { ul: `${p}ul`, h1: `${p}h1`, h2: `${p}h2`, client: `${p}cl`, server: `${p}sv`, etcd: `${p}et` };
    this.clientIp = `10.${ctx.octet}.1.2`;
    this.serverIp = `10.${ctx.octet}.2.2`;
    this.ulBase = `10.${underlayOctet}.0`;
    this.etcdUrl = `https://${this.ulBase}.2:2379`;
  }

  private hostIp(i: 1 | 2): string {
    return `${this.ulBase}.1${i}`;
  }

  async create(): Promise<void> {
    const { ns } = this;
    const all = [ns.ul, ns.h1, ns.h2, ns.client, ns.server, ...(this.name === 'bastion' ? [ns.etcd] : [])];
    for (const n of all) {
      await sh(['ip', 'netns', 'add', n]);
      this.made.push(n);
      await sh(['ip', '-n', n, 'link', 'set', 'lo', 'up']);
    }
    await sh(['ip', '-n', ns.ul, 'link', 'add', 'ul', 'type', 'bridge']);
    await sh(['ip', '-n', ns.ul, 'link', 'set', 'ul', 'up']);
    // The underlay stands for the wire between hosts: no host firewall runs on
    // it. br_netfilter (loaded machine-wide for Docker) would otherwise pass
    // every frame of every scenario through an empty iptables here (about 3 %
    // of the CPU per byte in a profile), the same for all three.
    await sh(['ip', 'netns', 'exec', ns.ul, 'sysctl', '-qw', 'net.bridge.bridge-nf-call-iptables=0', 'net.bridge.bridge-nf-call-ip6tables=0', 'net.bridge.bridge-nf-call-arptables=0']).catch(() => undefined);
    for (const i of [1, 2] as const) {
      const h = i === 1 ? ns.h1 : ns.h2;
      await sh(['ip', '-n', h, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', `u${i}`, 'netns', ns.ul]);
      await sh(['ip', '-n', ns.ul, 'link', 'set', `u${i}`, 'master', 'ul', 'up']);
      await sh(['ip', '-n', h, 'addr', 'add', `${this.hostIp(i)}/24`, 'dev', 'ul0']);
      await sh(['ip', '-n', h, 'link', 'set', 'ul0', 'up']);
      await sh(['ip', '-n', h, 'link', 'add', 'br0', 'type', 'bridge']);
      await sh(['ip', '-n', h, 'addr', 'add', `10.${this.ctx.octet}.${i}.1/16`, 'dev', 'br0']);
      await sh(['ip', '-n', h, 'link', 'set', 'br0', 'up']);
      const c = i === 1 ? ns.client : ns.server;
      const ip = i === 1 ? this.clientIp : this.serverIp;
      await sh(['ip', '-n', h, 'link', 'add', 'v0', 'mtu', String(MTU), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
      await sh(['ip', 'netns', 'exec', c, 'sysctl', '-qw', ...CONTAINER_SYSCTLS, ...(i === 1 ? CLIENT_SYSCTLS : [])]);
      await sh(['ip', '-n', c, 'link', 'set', 'eth0', 'mtu', String(MTU), 'up']);
      await sh(['ip', '-n', c, 'addr', 'add', `${ip}/16`, 'dev', 'eth0']);
      await sh(['ip', '-n', c, 'route', 'add', 'default', 'via', `10.${this.ctx.octet}.${i}.1`]);
      await sh(['ip', '-n', h, 'link', 'set', 'v0', 'master', 'br0', 'up']);
      const nf = this.name === 'overlay-iptables' ? '1' : '0';
      await sh(['ip', 'netns', 'exec', h, 'sysctl', '-qw', `net.bridge.bridge-nf-call-iptables=${nf}`]).catch(() => undefined);
      if (this.name !== 'bastion') {
        // the overlay: a VXLAN port on the bridge, unicast to the other host
        await sh(['ip', '-n', h, 'link', 'add', 'vx0', 'type', 'vxlan', 'id', String(VNI), 'dstport', '4789', 'local', this.hostIp(i), 'remote', this.hostIp(i === 1 ? 2 : 1), 'dev', 'ul0']);
        await sh(['ip', '-n', h, 'link', 'set', 'vx0', 'master', 'br0', 'up']);
      }
    }
    if (this.name === 'overlay-iptables') {
      const ipOf = (i: number) => (i === 0 ? this.clientIp : this.serverIp);
      const rules = renderRuleset(pairDeps(), ipOf);
      await loadRuleset(ns.h1, rules);
      await loadRuleset(ns.h2, rules);
    }
    if (this.name === 'bastion') await this.startBastion();
  }

  // ------------------------------------------------------------ bastion

  private bastion(args: string[]): string[] {
    return [...this.ctx.bastionCmd, ...args];
  }
  private creds(who: string): string[] {
    return ['--cluster', this.etcdUrl, '--cluster-ca', join(this.pki, 'ca.pem'), '--cluster-cert', join(this.pki, `${who}.pem`), '--cluster-key', join(this.pki, `${who}-key.pem`)];
  }
  pinOf(i: 1 | 2): string {
    return `/sys/fs/bpf/${this.ctx.prefix}/x${i}-${this.ctx.prefix}`;
  }

  private async startBastion(): Promise<void> {
    const { ns, ctx } = this;
    // etcd on the underlay, and the harness's own leg to reach it
    await sh(['ip', '-n', ns.etcd, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'u0', 'netns', ns.ul]);
    await sh(['ip', '-n', ns.ul, 'link', 'set', 'u0', 'master', 'ul', 'up']);
    await sh(['ip', '-n', ns.etcd, 'addr', 'add', `${this.ulBase}.2/24`, 'dev', 'eth0']);
    await sh(['ip', '-n', ns.etcd, 'link', 'set', 'eth0', 'up']);
    this.rootLink = `${ctx.prefix}xr`;
    await sh(['ip', 'link', 'add', this.rootLink, 'type', 'veth', 'peer', 'name', 'u9', 'netns', ns.ul]);
    await sh(['ip', '-n', ns.ul, 'link', 'set', 'u9', 'master', 'ul', 'up']);
    await sh(['ip', 'addr', 'add', `${this.ulBase}.254/24`, 'dev', this.rootLink]);
    await sh(['ip', 'link', 'set', this.rootLink, 'up']);

    this.pki = join(ctx.work, `pki-${ctx.prefix}`);
    await sh(this.bastion(['cluster', 'certs', '--nodes', 'h1,h2', '--etcd-hosts', `${this.ulBase}.2`, '-o', this.pki, '--days', '2']));
    const data = join(ctx.work, `etcd-${ctx.prefix}`);
    mkdirSync(data, { recursive: true });
    const etcd = new Background(
      'etcd',
      inNs(ns.etcd, [
        'etcd', '--name', 'e0', '--data-dir', data,
        '--listen-client-urls', this.etcdUrl, '--advertise-client-urls', this.etcdUrl,
        '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380', '--initial-cluster', 'e0=http://127.0.0.1:2380',
        '--cert-file', join(this.pki, 'etcd-server.pem'), '--key-file', join(this.pki, 'etcd-server-key.pem'), '--trusted-ca-file', join(this.pki, 'ca.pem'),
        '--client-cert-auth', '--logger', 'zap', '--log-outputs', 'stderr',
      ]),
      { logFile: join(ctx.opts.outDir, 'logs', 'etcd-crosshost.log') },
    );
    this.bg.push(etcd);
    if (!(await etcd.waitFor(/ready to serve client requests|serving client traffic/, 30_000))) throw new Error(`etcd did not start: ${etcd.out.slice(-2000)}`);
    await sh(this.bastion(['cluster', 'init', '--nodes', 'h1,h2', ...this.creds('root')]));
    for (const i of [1, 2] as const) {
      const host = i === 1 ? ns.h1 : ns.h2;
      const cfg = join(ctx.work, `crosshost-h${i}.yaml`);
      const c = i === 1 ? { name: 'client', netns: ns.client } : { name: 'server', netns: ns.server };
      writeFileSync(cfg, `containers:\n  - { name: ${c.name}, netns: ${c.netns}, labels: { app: ${c.name} } }\n`);
      const d = new Background(
        `bastion-h${i}`,
        inNs(host, this.bastion(['run', '--config', cfg, '--pin-path', this.pinOf(i), ...this.creds(`node-h${i}`), '--node', `h${i}`, '--underlay', 'ul0', '--tunnel-device', 'bvx0'])),
        { logFile: join(ctx.opts.outDir, 'logs', `bastion-crosshost-h${i}.log`) },
      );
      this.daemons.push(d);
    }
    for (const d of this.daemons) {
      if (!(await d.waitFor(/"msg":"ready"/, 90_000))) throw new Error(`${d.name} did not become ready: ${d.out.slice(-3000)}`);
    }
    const doc = { policies: [{ name: 'client-to-server', from: { app: 'client' }, to: { app: 'server' }, ports: PAIR_PORTS.map((p) => `${p.port}/${p.proto}`) }] };
    const docPath = join(ctx.work, 'crosshost-policy.json');
    writeFileSync(docPath, JSON.stringify(doc));
    await sh(this.bastion(['policy', 'add', '-f', docPath, ...this.creds('admin')]));
  }

  /** A client of the store with the admin's certificate (the timed policy writes). */
  admin(): Etcd3 {
    return new Etcd3({
      hosts: this.etcdUrl,
      credentials: {
        rootCertificate: readFileSync(join(this.pki, 'ca.pem')),
        certChain: readFileSync(join(this.pki, 'admin.pem')),
        privateKey: readFileSync(join(this.pki, 'admin-key.pem')),
      },
    });
  }

  daemonsAlive(): string | null {
    for (const d of this.daemons) if (!d.running) return `${d.name} exited: ${d.out.slice(-2000)}`;
    return null;
  }

  async destroy(): Promise<void> {
    for (const d of this.daemons) await d.stop(5000);
    for (const [i, h] of [[1, this.ns.h1], [2, this.ns.h2]] as const) {
      if (this.daemons.length) await run(inNs(h, this.bastion(['down', '--pin-path', this.pinOf(i)])), { allowFail: true, timeoutMs: 30_000 });
      // `down` keeps the flow history (the record of what happened): the benchmark's is of no use
      if (this.daemons.length) removeFlowHistory(this.pinOf(i));
    }
    for (const b of this.bg) await b.stop(5000);
    for (const n of this.made.reverse()) await run(['ip', 'netns', 'del', n], { allowFail: true });
    if (this.rootLink) await run(['ip', 'link', 'del', this.rootLink], { allowFail: true });
  }
}

/** One measurement of one scenario on its (already built) topology. */
async function measure(ctx: Context, t: CrossTopology): Promise<ScenarioRun> {
  const { opts, tools } = ctx;
  const bad = t.daemonsAlive();
  if (bad) throw new Error(bad);
  const quiet = await waitQuiet(opts.quietPct, opts.quietWaitMs);
  const s = opts.seconds;
  const iperf1 = await iperf(t.ns.client, t.serverIp, IPERF_PORT, s, 1);
  const iperf4 = await iperf(t.ns.client, t.serverIp, IPERF_PORT, s, 4);
  const rr = await sockperfPingPong(t.ns.client, t.serverIp, SOCKPERF_PORT, s, opts.rrProto);
  await connRate(tools.bbconn, t.ns.client, t.serverIp, CONN_PORT, 0.5, opts.conn);
  const conn = await connRate(tools.bbconn, t.ns.client, t.serverIp, CONN_PORT, s, opts.conn);
  return {
    tcp_gbps_1: iperf1.gbps,
    tcp_gbps_4: iperf4.gbps,
    rr_p50_us: rr.p50Us,
    rr_p99_us: rr.p99Us,
    conn_per_s: conn.conn_per_s,
    detail: { iperf1, iperf4, rr, conn, enforcement_checked: true, background_busy_pct: quiet.busyPct, quiet_wait_ms: quiet.waitedMs },
  };
}

/**
 * `count` policies added one at a time, each allowing client -> server on a
 * new port: timed from just before the write to the store until the client
 * on host 1 completes a connection to the server on host 2 (both hosts must
 * have applied it: the client's egress on h1, the server's ingress on h2).
 */
async function policyLatency(ctx: Context, t: CrossTopology, count: number): Promise<PolicyLatency> {
  const admin = t.admin();
  const samples: number[] = [];
  let failures = 0;
  try {
    await admin.get('/bastion/policies/').exec(); // connection and TLS handshake before the first timed write
    await waitQuiet(ctx.opts.quietPct, ctx.opts.quietWaitMs);
    for (let i = 0; i < count; i++) {
      const dep = probeDep(i);
      const probe = await startProbe(ctx.tools.bbprobe, t.ns.client, t.serverIp, dep.port, 10_000);
      await sleep(20);
      const t0 = hrMs();
      const policy = { name: `xh-added-${i}`, from: { matchLabels: { app: 'client' } }, to: { matchLabels: { app: 'server' } }, ports: [`${dep.port}/tcp`] };
      await admin.put(`/bastion/policies/${policy.name}`).value(JSON.stringify(policy)).exec();
      const r = await probe.result;
      await probe.proc.stop();
      if (!r) {
        failures++;
        ctx.log(`    cross-host policy ${i}: port ${dep.port} not reachable within 10 s`);
        if (failures >= 3) break;
        continue;
      }
      if (r.launchMs < t0) throw new Error(`port ${dep.port} was reachable across hosts before its policy existed`);
      samples.push(r.okMs - t0);
      await sleep(Math.max(150, 2 * (r.okMs - t0)));
    }
  } finally {
    admin.close();
  }
  const sum = samples.length ? summarize(samples) : null;
  const sorted = [...samples].sort((a, b) => a - b);
  const pct = (p: number) => (sorted.length ? round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!, 2) : null);
  return { samples_ms: samples.map((x) => round(x, 2)!), p50_ms: sum ? round(sum.median, 2) : null, p99_ms: pct(99), max_ms: sum ? round(sum.max, 2) : null, failures };
}

export async function runCrossHost(ctx: Context, underlayOctet: number, scenarios: CrossName[] = CROSS_SCENARIOS): Promise<CrossHostResult> {
  const out: CrossHostResult = { runs: { overlay: [], 'overlay-iptables': [], bastion: [] }, policy: null, errors: [] };
  const topos: CrossTopology[] = [];
  try {
    for (const s of scenarios) {
      if (s === 'bastion' && !ctx.bastion.available) {
        out.errors.push(`cross-host bastion: not measured (${ctx.bastion.note})`);
        continue;
      }
      const t = new CrossTopology(ctx, s, underlayOctet);
      topos.push(t);
      ctx.log(`cross-host ${s}: building two hosts${s === 'bastion' ? ', etcd and the daemons' : ''}`);
      try {
        await t.create();
        const servers = [
          startConnServer(ctx.tools.bbconn, t.ns.server, t.serverIp, [CONN_PORT], [PROBE_BASE, DENIED_PORT]),
          startIperfServer(t.ns.server, t.serverIp, IPERF_PORT),
          startSockperfServer(t.ns.server, t.serverIp, SOCKPERF_PORT, ctx.opts.rrProto),
        ];
        if (!(await servers[0]!.waitFor(/listening/, 10_000))) throw new Error(`bbconn server: ${servers[0]!.out}`);
        // the pair works, the never-allowed port only without enforcement
        const ok = await waitFor(() => canConnect(ctx.tools.bbprobe, t.ns.client, t.serverIp, CONN_PORT, 2000), 60_000);
        if (!ok) throw new Error(`client cannot reach ${t.serverIp}:${CONN_PORT} across hosts`);
        const deniedOpen = await canConnect(ctx.tools.bbprobe, t.ns.client, t.serverIp, DENIED_PORT, 500);
        if (s !== 'overlay' && deniedOpen) throw new Error(`port ${DENIED_PORT} reachable: the policy is not enforced`);
        if (s === 'overlay' && !deniedOpen) throw new Error(`port ${DENIED_PORT} blocked on the plain overlay`);
      } catch (err) {
        out.errors.push(`cross-host ${s}: ${(err as Error).message.split('\n').slice(0, 6).join(' ')}`);
        topos.pop();
        await t.destroy().catch(() => undefined);
      }
    }
    const hold = process.env.BENCH_CROSSHOST_HOLD;
    if (hold) {
      writeFileSync(hold, JSON.stringify(topos.map((t) => ({ name: t.name, ns: t.ns, client: t.clientIp, server: t.serverIp }))));
      ctx.log(`cross-host: holding the topologies until ${hold} is removed`);
      while (existsSync(hold)) await sleep(1000);
    }
    for (let rep = 0; rep < ctx.opts.reps; rep++) {
      for (const t of topos) {
        if (ctx.overBudget()) break;
        try {
          const r = await measure(ctx, t);
          out.runs[t.name].push(r);
          ctx.log(
            `cross-host rep ${rep + 1}/${ctx.opts.reps} ${t.name.padEnd(16)}: tcp ${r.tcp_gbps_1.toFixed(2)} / ${r.tcp_gbps_4.toFixed(2)} Gbit/s, rr p50 ${r.rr_p50_us.toFixed(1)} µs p99 ${r.rr_p99_us.toFixed(1)} µs, ${r.conn_per_s.toFixed(0)} conn/s`,
          );
        } catch (err) {
          out.errors.push(`cross-host ${t.name} rep ${rep + 1}: ${(err as Error).message.split('\n')[0]}`);
        }
      }
    }
    const b = topos.find((t) => t.name === 'bastion');
    if (b && !ctx.overBudget()) {
      ctx.log(`cross-host bastion: ${ctx.opts.updates} policies added on the store, each timed until it works from h1 to h2`);
      try {
        out.policy = await policyLatency(ctx, b, ctx.opts.updates);
        ctx.log(`cross-host policy add -> enforced on the other host: p50 ${out.policy.p50_ms} ms, p99 ${out.policy.p99_ms} ms (${out.policy.samples_ms.length} samples, ${out.policy.failures} failures)`);
      } catch (err) {
        out.errors.push(`cross-host policy latency: ${(err as Error).message}`);
      }
    }
  } finally {
    for (const t of topos) await t.destroy().catch((e: unknown) => out.errors.push(`cross-host cleanup: ${(e as Error).message}`));
  }
  return out;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await sleep(200);
  }
  return false;
}
