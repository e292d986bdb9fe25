/**
 * The four scenarios, all carrying the same traffic between the same two
 * containers (client -> server):
 *   loopback  client and server processes both in the client namespace, over lo
 *   bridge    plain Linux bridge, no netfilter on bridged traffic
 *   iptables  the same bridge, br_netfilter on, the pair's least-privilege policy
 *             as iptables rules (conntrack ESTABLISHED first, one ACCEPT per
 *             allowed port, then DROP)
 *   bastion   the same bridge and the same policy enforced by the Bastion daemon
 * Every repetition of every scenario gets a fresh topology.
 */
import { join } from 'node:path';
import { BastionDaemon, renderConfig } from './bastion.js';
import type { Context, ScenarioName } from './context.js';
import { CONN_PORT, DENIED_PORT, IPERF_PORT, PROBE_BASE, SOCKPERF_PORT, pairDeps } from './deps.js';
import { Background, sleep } from './exec.js';
import { clearRuleset, loadRuleset, renderRuleset } from './iptables.js';
import { waitQuiet } from './quiet.js';
import { Topology } from './topology.js';
import {
  canConnect,
  connRate,
  iperf,
  sockperfPingPong,
  startConnServer,
  startIperfServer,
  startSockperfServer,
  type ConnResult,
  type IperfResult,
  type RrResult,
} from './tools.js';

export interface ScenarioRun {
  tcp_gbps_1: number;
  tcp_gbps_4: number;
  rr_p50_us: number;
  rr_p99_us: number;
  conn_per_s: number;
  detail: {
    iperf1: IperfResult;
    iperf4: IperfResult;
    rr: RrResult;
    conn: ConnResult;
    /** the never-allowed port was blocked (enforcing scenarios) or open (others) as expected */
    enforcement_checked: boolean;
    /** CPU busy (all CPUs, %) just before the measurements, and how long we waited for it to drop */
    background_busy_pct: number;
    quiet_wait_ms: number;
    bastion_startup_s?: number;
    bastion_rss_mb?: number | null;
  };
}

export async function runScenarioOnce(ctx: Context, name: ScenarioName, rep: number): Promise<ScenarioRun> {
  const { opts, tools } = ctx;
  const topo = new Topology({ prefix: ctx.prefix, octet: ctx.octet }, tools.bbnsconf);
  const servers: Background[] = [];
  let daemon: BastionDaemon | null = null;
  try {
    await topo.create();
    const loop = name === 'loopback';
    const clientNs = topo.client.netns;
    const serverNs = loop ? clientNs : topo.server.netns;
    const serverIp = loop ? '127.0.0.1' : topo.server.ip;
    const ipOf = (i: number) => topo.entries[i]!.ip;

    if (name === 'iptables') {
      topo.setBridgeNetfilter(true);
      await loadRuleset(topo.hostNs, renderRuleset(pairDeps(), ipOf));
    }

    servers.push(startConnServer(tools.bbconn, serverNs, serverIp, [CONN_PORT], [PROBE_BASE, DENIED_PORT]));
    servers.push(startIperfServer(serverNs, serverIp, IPERF_PORT));
    servers.push(startSockperfServer(serverNs, serverIp, SOCKPERF_PORT, opts.rrProto));
    if (!(await servers[0]!.waitFor(/listening/, 10_000))) throw new Error(`bbconn server did not start: ${servers[0]!.out}`);
    await sleep(300);
    for (const s of servers) if (!s.running) throw new Error(`${s.name} exited: ${s.out.slice(-500)}`);

    let startup: number | undefined;
    if (name === 'bastion') {
      daemon = new BastionDaemon({
        cmd: ctx.bastionCmd,
        topo,
        configPath: join(ctx.work, `bastion-${name}-${rep}.yaml`),
        pinPath: `/sys/fs/bpf/${ctx.prefix}`,
        logPath: join(opts.outDir, 'logs', `bastion-scenario-rep${rep}.log`),
        reload: opts.bastionReload,
        probeBin: tools.bbprobe,
      });
      await daemon.start(renderConfig(topo.entries, pairDeps(), []));
      startup = await daemon.waitEnforced(Math.min(60_000, Math.max(10_000, ctx.remainingMs())));
    }

    // sanity: the allowed port answers, the never-allowed one only without enforcement
    if (!(await canConnect(tools.bbprobe, clientNs, serverIp, CONN_PORT, 3000))) throw new Error(`${name}: client cannot reach ${serverIp}:${CONN_PORT}`);
    if (!(await canConnect(tools.bbprobe, clientNs, serverIp, IPERF_PORT, 3000))) throw new Error(`${name}: client cannot reach ${serverIp}:${IPERF_PORT}`);
    const deniedOpen = await canConnect(tools.bbprobe, clientNs, serverIp, DENIED_PORT, 500);
    const enforcing = name === 'iptables' || name === 'bastion';
    if (enforcing && deniedOpen) throw new Error(`${name}: port ${DENIED_PORT} is reachable: the policy is not enforced`);
    if (!enforcing && !deniedOpen) throw new Error(`${name}: port ${DENIED_PORT} is blocked without any policy`);

    const quiet = await waitQuiet(opts.quietPct, opts.quietWaitMs);
    const s = opts.seconds;
    const iperf1 = await iperf(clientNs, serverIp, IPERF_PORT, s, 1);
    const iperf4 = await iperf(clientNs, serverIp, IPERF_PORT, s, 4);
    const rr = await sockperfPingPong(clientNs, serverIp, SOCKPERF_PORT, s, opts.rrProto);
    await connRate(tools.bbconn, clientNs, serverIp, CONN_PORT, 0.5, opts.conn); // warm-up, discarded
    const conn = await connRate(tools.bbconn, clientNs, serverIp, CONN_PORT, s, opts.conn);
    const mem = daemon?.memory();
    return {
      tcp_gbps_1: iperf1.gbps,
      tcp_gbps_4: iperf4.gbps,
      rr_p50_us: rr.p50Us,
      rr_p99_us: rr.p99Us,
      conn_per_s: conn.conn_per_s,
      detail: {
        iperf1,
        iperf4,
        rr,
        conn,
        enforcement_checked: true,
        background_busy_pct: quiet.busyPct,
        quiet_wait_ms: quiet.waitedMs,
        ...(startup !== undefined ? { bastion_startup_s: startup, bastion_rss_mb: mem?.rssMb ?? null } : {}),
      },
    };
  } finally {
    for (const s of servers) await s.stop();
    if (daemon) {
      const problems = await daemon.stop();
      for (const p of problems) ctx.notes.push(`bastion scenario rep ${rep}: ${p}`);
    }
    if (name === 'iptables') await clearRuleset(topo.hostNs).catch(() => {});
    await topo.destroy();
  }
}
