/**
 * The scale series: N container entries (each with ~10 dependencies) on the
 * benchmark's bridges, and for iptables and Bastion at each N:
 *   - new connections per second between the measured pair,
 *   - the time from applying one added dependency until a connection to the
 *     newly allowed port succeeds (bbprobe knocks every 250 us meanwhile),
 *   - for Bastion, the daemon's memory (VmRSS, VmHWM).
 * The topology grows from one point to the next (entries are only added).
 */
import type { MemoryParts } from './memory-parts.js';
import { join } from 'node:path';
import { BastionDaemon, policyLine, renderConfig, type DaemonApply } from './bastion.js';
import type { Context } from './context.js';
import { CONN_PORT, DENIED_PORT, PROBE_BASE, fillerDeps, orderedDeps, pairDeps, probeDep, type Dep } from './deps.js';
import { Background, hrMs, inNs, run, sleep } from './exec.js';
import { appendRuleArgs, clearRuleset, countRules, loadRuleset, renderRuleset } from './iptables.js';
import { percentile, summarize } from './stats.js';
import { waitQuiet } from './quiet.js';
import { Topology } from './topology.js';
import { canConnect, connRate, startConnServer, startProbe, type ConnResult } from './tools.js';

export interface UpdateStats {
  update_ms_p50: number;
  update_ms_p99: number;
  update_ms_min: number;
  update_ms_max: number;
  updates: number[];
  update_failures: number;
  /** CPU busy (%) before the update series */
  update_background_busy_pct: number;
  /** per enforced update: its dependency's name, and when (hrMs) it was started, its request to the daemon began (API updates) and it was seen working */
  update_times: Array<{ name: string; start: number; sent?: number; ok: number }>;
}

/** p50, p99 and max of one part of the update time (ms) */
export interface PhaseStats {
  p50: number;
  p99: number;
  max: number;
}

export interface BackendPoint extends UpdateStats {
  conn_per_s: number;
  conn_per_s_min: number;
  conn_per_s_max: number;
  conn_runs: ConnResult[];
  /** CPU busy (%) before the conn/s measurement */
  background_busy_pct: number;
}

export interface IptablesPoint extends BackendPoint {
  rules_loaded: number;
  load_s: number;
  rule_position: string;
  /** spawn cost of `nsenter --net=... true` included in every update (not paid on a real host) */
  nsenter_overhead_ms: number;
}

export interface BastionPoint extends BackendPoint {
  rss_mb: number | null;
  rss_hwm_mb: number | null;
  /** RssAnon: private memory, without file pages (the node binary) and the mapped ring buffer */
  rss_anon_mb: number | null;
  rss_tree_mb: number | null;
  rss_after_start_mb: number | null;
  /** where the resident memory lies at the end of the point (bench/lib/memory-parts.ts) */
  memory_parts?: MemoryParts | null;
  startup_s: number;
  sighup_fallbacks: number;
  /** what the daemon logs as its own apply time ("config applied" ms) during the update series */
  daemon_apply_ms_p50: number | null;
  daemon_apply_ms_p99: number | null;
  daemon_reloads: number;
  /**
   * Where an update's time goes (API updates; from the daemon's "policies
   * applied" log line, whose mono times share the harness's clock):
   * client: the harness's own time until its request begins;
   * to_daemon: until the daemon's handler runs (connection, HTTP on both
   * sides, and whatever held either event loop); daemon: reading, parsing
   * and validating the document, compiling and writing the maps;
   * detect: until the probe's connection succeeds (its next attempt, at most
   * 250 us later, and the handshake). sent_to_enforced: from the request
   * written whole into the daemon's socket until the probe's connection
   * succeeds (every update with a request, joined or not): Bastion's share
   * of an update, without the harness's own (client).
   */
  update_phases_ms: {
    client: PhaseStats;
    to_daemon: PhaseStats;
    daemon: PhaseStats;
    detect: PhaseStats;
    sent_to_enforced: PhaseStats;
    /** of the daemon's part: time its thread was runnable but waited for a CPU (its log's sched.runqueue), when logged */
    daemon_cpu_wait?: PhaseStats;
    samples: number;
  } | null;
}

export interface ScalePoint {
  containers: number;
  /** ACCEPT rules = dependencies (N x deps per entry) + the measured pair's ports */
  rules: number;
  dependencies: number;
  namespaces: number;
  veths: number;
  bridges: number;
  build_s: number;
  iptables: IptablesPoint | null;
  bastion: BastionPoint | null;
  errors: string[];
}

async function measureConn(ctx: Context, topo: Topology): Promise<Pick<BackendPoint, 'conn_per_s' | 'conn_per_s_min' | 'conn_per_s_max' | 'conn_runs' | 'background_busy_pct'>> {
  const { opts, tools } = ctx;
  const quiet = await waitQuiet(opts.quietPct, opts.quietWaitMs);
  await connRate(tools.bbconn, topo.client.netns, topo.server.ip, CONN_PORT, 0.5, opts.conn); // warm-up
  const runs: ConnResult[] = [];
  for (let r = 0; r < opts.scaleReps; r++) {
    runs.push(await connRate(tools.bbconn, topo.client.netns, topo.server.ip, CONN_PORT, opts.scaleSeconds, opts.conn));
  }
  const s = summarize(runs.map((r) => r.conn_per_s));
  return { conn_per_s: s.median, conn_per_s_min: s.min, conn_per_s_max: s.max, conn_runs: runs, background_busy_pct: quiet.busyPct };
}

/** how long one added dependency may take to be enforced before it counts as a failure */
const UPDATE_TIMEOUT_MS = 15_000;

/**
 * Apply `count` added dependencies one at a time; each is timed from just
 * before `apply` until the probe's first successful connection to the new port.
 */
async function measureUpdates(
  ctx: Context,
  topo: Topology,
  count: number,
  /** may return when (hrMs) the change was handed over (an API request began) */
  apply: (dep: Dep) => Promise<number | void>,
  onSlow?: () => void,
  /** hrMs() after which no further update is started (a share of the time budget) */
  deadline = Infinity,
): Promise<UpdateStats> {
  const left = () => Math.min(ctx.remainingMs(), deadline - hrMs());
  // as before every measurement: let the previous one's after-effects pass
  // (a daemon still logging the last conn/s test's flows, iptables settling)
  const quiet = await waitQuiet(ctx.opts.quietPct, ctx.opts.quietWaitMs);
  const samples: number[] = [];
  const times: UpdateStats['update_times'] = [];
  let failures = 0;
  let inARow = 0;
  for (let i = 0; i < count; i++) {
    const dep = probeDep(i);
    const timeout = Math.round(Math.min(UPDATE_TIMEOUT_MS, Math.max(2000, left())));
    const probe = await startProbe(ctx.tools.bbprobe, topo.client.netns, topo.server.ip, dep.port, timeout);
    await sleep(20); // the probe is knocking (and being dropped) before the change
    const t0 = hrMs();
    const sent = await apply(dep);
    let slowTimer: NodeJS.Timeout | undefined;
    if (onSlow) slowTimer = setTimeout(onSlow, 3000);
    const r = await probe.result;
    clearTimeout(slowTimer);
    await probe.proc.stop();
    if (!r) {
      failures++;
      inARow++;
      ctx.log(`    update ${i}: port ${dep.port} not reachable within ${timeout / 1000} s`);
      if (inARow >= 3) throw new Error(`${inARow} added dependencies in a row were not enforced within ${timeout / 1000} s each (${samples.length} enforced before)`);
      if (left() <= 0) throw new Error(`time budget used up after ${samples.length} enforced updates`);
      continue;
    }
    inARow = 0;
    if (r.launchMs < t0) throw new Error(`port ${dep.port} was reachable before its dependency was added: enforcement is not in place`);
    const ms = r.okMs - t0;
    samples.push(ms);
    times.push({ name: dep.name, start: t0, ...(typeof sent === 'number' ? { sent } : {}), ok: r.okMs });
    // let the change settle before the next one (e.g. a daemon's second, file-watch
    // triggered reload): at least 120 ms, longer after a slow update
    await sleep(Math.min(5000, Math.max(120, 1.5 * ms + 60)));
    if (left() <= 0 && i < count - 1) {
      ctx.notes.push(`time budget used up: only ${samples.length} of ${count} updates measured at ${topo.entries.length} containers`);
      break;
    }
  }
  if (samples.length === 0) throw new Error('no added dependency was ever enforced');
  const s = summarize(samples);
  return {
    update_ms_p50: percentile(samples, 50),
    update_ms_p99: percentile(samples, 99),
    update_ms_min: s.min,
    update_ms_max: s.max,
    updates: samples,
    update_failures: failures,
    update_background_busy_pct: quiet.busyPct,
    update_times: times,
  };
}

async function nsenterOverhead(hostNs: string): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < 10; i++) xs.push((await run(inNs(hostNs, ['true']))).ms);
  return percentile(xs, 50);
}

async function checkPair(ctx: Context, topo: Topology, what: string): Promise<void> {
  const { bbprobe } = ctx.tools;
  if (!(await canConnect(bbprobe, topo.client.netns, topo.server.ip, CONN_PORT, 5000))) throw new Error(`${what}: the allowed port ${CONN_PORT} is not reachable`);
  if (await canConnect(bbprobe, topo.client.netns, topo.server.ip, DENIED_PORT, 500)) throw new Error(`${what}: port ${DENIED_PORT} is reachable: the policy is not enforced`);
}

async function iptablesPoint(ctx: Context, topo: Topology, n: number, deps: Dep[]): Promise<IptablesPoint> {
  const ipOf = (i: number) => topo.entries[i]!.ip;
  topo.setBridgeNetfilter(true);
  try {
    const load = await loadRuleset(topo.hostNs, renderRuleset(deps, ipOf));
    const loaded = await countRules(topo.hostNs);
    await checkPair(ctx, topo, `iptables at ${n}`);
    const conn = await measureConn(ctx, topo);
    const overhead = await nsenterOverhead(topo.hostNs);
    const upd = await measureUpdates(ctx, topo, ctx.opts.updates, async (dep) => {
      await run(appendRuleArgs(topo.hostNs, dep, ipOf));
    });
    return { ...conn, ...upd, rules_loaded: loaded, load_s: load.ms / 1000, rule_position: ctx.opts.rulePosition, nsenter_overhead_ms: overhead };
  } finally {
    await clearRuleset(topo.hostNs);
    topo.setBridgeNetfilter(false);
  }
}

async function bastionPoint(ctx: Context, topo: Topology, n: number, fillers: Dep[], deadline: number): Promise<BastionPoint> {
  const daemon = new BastionDaemon({
    cmd: ctx.bastionCmd,
    topo,
    configPath: join(ctx.work, `bastion-scale-${n}.yaml`),
    pinPath: `/sys/fs/bpf/${ctx.prefix}`,
    logPath: join(ctx.opts.outDir, 'logs', `bastion-scale-${n}.log`),
    reload: ctx.opts.bastionReload,
    probeBin: ctx.tools.bbprobe,
  });
  try {
    await daemon.start(renderConfig(topo.entries.slice(0, n), pairDeps(), fillers));
    const startup = await daemon.waitEnforced(Math.round(Math.min(60_000 + n * 20, Math.max(10_000, deadline - hrMs()))));
    await checkPair(ctx, topo, `bastion at ${n}`);
    const afterStart = daemon.memory();
    const conn = await measureConn(ctx, topo);
    await daemon.warmUp();
    const mark = daemon.logOffset();
    const upd = await measureUpdates(
      ctx,
      topo,
      ctx.opts.updates,
      async (dep) => {
        const ports = [`${dep.port}/${dep.proto}`];
        return daemon.addPolicy(policyLine(dep.name, topo.client, topo.server, ports), { name: dep.name, from: topo.client, to: topo.server, ports });
      },
      () => daemon.hup(),
      deadline,
    );
    const mem = daemon.memory();
    const parts = await daemon.memoryParts();
    if (parts) {
      ctx.log(
        `  scale ${n}: memory (MB): node binary ${parts.node_binary_mb}, libraries ${parts.libraries_mb}, malloc heap ${parts.malloc_heap_mb}, bpf maps ${parts.bpf_maps_mb}, other anonymous ${parts.other_anon_mb}; V8 heap ${parts.v8_heap_used_mb} used of ${parts.v8_heap_total_mb} (${Object.entries(parts.v8_spaces_mb).map(([k, v]) => `${k} ${v}`).join(', ')}), external ${parts.v8_external_mb}`,
      );
    }
    const applied = daemon.appliedSince(mark);
    const phases = updatePhases(upd.update_times, daemon.apiAppliesSince(mark));
    if (phases) {
      const f = (s: PhaseStats) => `${s.p50.toFixed(2)}/${s.p99.toFixed(2)}`;
      ctx.log(`  scale ${n}: update p50/p99 by part (ms): client ${f(phases.client)}, to daemon ${f(phases.to_daemon)}, daemon ${f(phases.daemon)}, detect ${f(phases.detect)}; from the request in the daemon's socket ${f(phases.sent_to_enforced)}${phases.daemon_cpu_wait ? `; the daemon waiting for a CPU ${f(phases.daemon_cpu_wait)}` : ''}`);
    }
    return {
      ...conn,
      ...upd,
      rss_mb: mem.rssMb,
      rss_hwm_mb: mem.hwmMb,
      rss_anon_mb: mem.anonMb,
      rss_tree_mb: mem.treeRssMb,
      rss_after_start_mb: afterStart.rssMb,
      memory_parts: parts,
      startup_s: startup,
      sighup_fallbacks: daemon.sighupFallbacks,
      daemon_apply_ms_p50: applied.length ? percentile(applied, 50) : null,
      daemon_apply_ms_p99: applied.length ? percentile(applied, 99) : null,
      daemon_reloads: applied.length,
      update_phases_ms: phases,
    };
  } finally {
    const problems = await daemon.stop();
    for (const p of problems) ctx.notes.push(`bastion at ${n} containers: ${p}`);
  }
}

/** The parts of each update's time, from the harness's times and the daemon's (same clock), joined by policy name. */
export function updatePhases(
  times: UpdateStats['update_times'],
  daemon: Map<string, DaemonApply>,
): BastionPoint['update_phases_ms'] {
  const parts = { client: [] as number[], to_daemon: [] as number[], daemon: [] as number[], detect: [] as number[] };
  const cpuWait: number[] = [];
  for (const t of times) {
    const d = daemon.get(t.name);
    if (!d || t.sent === undefined) continue;
    parts.client.push(t.sent - t.start);
    parts.to_daemon.push(d.received - t.sent);
    parts.daemon.push(d.written - d.received);
    parts.detect.push(t.ok - d.written);
    if (d.runqueue !== undefined) cpuWait.push(d.runqueue);
  }
  if (!parts.client.length) return null;
  const stats = (xs: number[]): PhaseStats => ({ p50: percentile(xs, 50), p99: percentile(xs, 99), max: Math.max(...xs) });
  const fromSent = times.flatMap((t) => (t.sent === undefined ? [] : [t.ok - t.sent]));
  return {
    client: stats(parts.client),
    to_daemon: stats(parts.to_daemon),
    daemon: stats(parts.daemon),
    detect: stats(parts.detect),
    sent_to_enforced: stats(fromSent),
    ...(cpuWait.length ? { daemon_cpu_wait: stats(cpuWait) } : {}),
    samples: parts.client.length,
  };
}

export async function runScale(ctx: Context, onPoint?: (p: ScalePoint) => void): Promise<ScalePoint[]> {
  const { opts, tools } = ctx;
  const topo = new Topology({ prefix: ctx.prefix, octet: ctx.octet, entriesPerNetns: opts.entriesPerNetns }, tools.bbnsconf);
  const points: ScalePoint[] = [];
  let server: Background | null = null;
  try {
    await topo.create();
    server = startConnServer(tools.bbconn, topo.server.netns, topo.server.ip, [CONN_PORT], [PROBE_BASE, DENIED_PORT]);
    if (!(await server.waitFor(/listening/, 10_000))) throw new Error(`bbconn server did not start: ${server.out}`);
    const sizes = [...opts.scale].sort((a, b) => a - b);
    for (const n of sizes) {
      if (ctx.overBudget()) {
        ctx.notes.push(`scale ${n} and above: skipped, the run's time budget (${opts.budgetS} s) was used up`);
        break;
      }
      const t0 = hrMs();
      ctx.log(`  scale ${n}: building ${n} containers`);
      await topo.grow(n);
      const build = (hrMs() - t0) / 1000;
      const fillers = fillerDeps(n, opts.depsPerEntry);
      const pair = pairDeps();
      const point: ScalePoint = {
        containers: n,
        rules: fillers.length + pair.length,
        dependencies: fillers.length,
        namespaces: topo.netnsCount,
        veths: n,
        bridges: topo.bridges.length,
        build_s: build,
        iptables: null,
        bastion: null,
        errors: [],
      };
      ctx.log(`  scale ${n}: ${point.namespaces} namespaces, ${point.bridges} bridge(s), built in ${build.toFixed(1)} s`);
      try {
        ctx.log(`  scale ${n}: iptables (${point.rules} rules, pair at the ${opts.rulePosition})`);
        point.iptables = await iptablesPoint(ctx, topo, n, orderedDeps(fillers, pair, opts.rulePosition));
        ctx.log(`  scale ${n}: iptables ${point.iptables.conn_per_s.toFixed(0)} conn/s, update p50 ${point.iptables.update_ms_p50.toFixed(2)} ms p99 ${point.iptables.update_ms_p99.toFixed(2)} ms`);
      } catch (err) {
        point.errors.push(`iptables: ${(err as Error).message}`);
        ctx.log(`  scale ${n}: iptables FAILED: ${(err as Error).message}`);
      }
      if (ctx.bastion.available && opts.bastion && ctx.remainingMs() < 20_000) {
        point.errors.push('bastion: skipped, time budget used up');
        ctx.notes.push(`scale ${n}: bastion skipped, the run's time budget (${opts.budgetS} s) was used up`);
      } else if (ctx.bastion.available && opts.bastion) {
        try {
          // a budgeted run gives each remaining point's bastion phase a fair share, keeping
          // ~30 s for each later iptables phase, so one slow point cannot starve the rest
          const pointsLeft = sizes.length - sizes.indexOf(n);
          const share = (ctx.remainingMs() - 30_000 * (pointsLeft - 1)) / pointsLeft;
          const deadline = hrMs() + Math.max(20_000, share);
          ctx.log(`  scale ${n}: bastion`);
          point.bastion = await bastionPoint(ctx, topo, n, fillers, deadline);
          ctx.log(
            `  scale ${n}: bastion ${point.bastion.conn_per_s.toFixed(0)} conn/s, update p50 ${point.bastion.update_ms_p50.toFixed(2)} ms p99 ${point.bastion.update_ms_p99.toFixed(2)} ms, rss ${point.bastion.rss_mb?.toFixed(1)} MB`,
          );
        } catch (err) {
          point.errors.push(`bastion: ${(err as Error).message}`);
          ctx.log(`  scale ${n}: bastion FAILED: ${(err as Error).message.split('\n')[0]}`);
        }
      }
      points.push(point);
      onPoint?.(point);
    }
  } finally {
    await server?.stop();
    ctx.log('  scale: removing the topology');
    await topo.destroy();
  }
  return points;
}
