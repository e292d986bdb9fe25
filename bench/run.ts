/**
 * Bastion benchmark suite: `npm run bench [-- --quick] [options]`.
 *
 * One run measures the four scenarios (loopback, bridge, iptables, bastion)
 * and the scale series, and writes bench/results/latest.json, latest.md and
 * latest-scale.png. Everything it creates carries a unique prefix and is
 * removed on every exit path. See docs/benchmarks.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectBastion, removeFlowHistory, removePinPath } from './lib/bastion.js';
import { writeChart, renderScaleSvg } from './lib/chart.js';
import { SCENARIOS, type Context, type Options, type ScenarioName } from './lib/context.js';
import { hrMs, killAllTrackedSync, runSync, which } from './lib/exec.js';
import { setQuietBudget } from './lib/quiet.js';
import { iptablesVersion } from './lib/iptables.js';
import { figures, ratios, renderMarkdown, scaleRatios, targets, type Figures } from './lib/report.js';
import { runScale, type ScalePoint } from './lib/scale.js';
import { runScenarioOnce, type ScenarioRun } from './lib/scenarios.js';
import { destroyPrefixSync, namespacesWithPrefix } from './lib/topology.js';
import { buildTools, DEFAULT_CONN_OPTIONS } from './lib/tools.js';
import { crossHostFigures, renderCrossHost } from './lib/report.js';
import { runCrossHost, type CrossHostResult } from './lib/crosshost.js';

const HELP = `usage: npm run bench -- [options]
  --quick                 3 repetitions of 3 s, 20 updates per scale point (must finish in < 10 min)
  --reps N                repetitions per scenario (default 5, quick 3)
  --seconds S             length of each throughput / latency / conn-rate measurement (default 10, quick 3)
  --scale LIST            container counts of the scale series (default 10,100,1000,5000)
  --no-scale              skip the scale series
  --scale-reps N          conn/s repetitions per scale point (default 5, quick 3)
  --scale-seconds S       length of each scale conn/s measurement (default 5, quick 2)
  --updates N             added dependencies timed per scale point (default 30, quick 20; at least 20)
  --deps N                dependencies per container in the scale series (default 10)
  --entries-per-netns K   lighter scale series: K filler containers share one namespace (default 1)
  --rule-position P       where the pair's rules sit in the iptables chain: start|middle|end (default middle)
  --scenarios LIST        subset of loopback,bridge,iptables,bastion
  --rr-proto tcp|udp      sockperf ping-pong protocol (default tcp)
  --no-bastion            do not run the daemon even if it is built
  --bastion-reload MODE   api: POST the added policy to the daemon's API, as "bastion policy add" does (default);
                          signal: append the policy to the config file and send SIGHUP at once;
                          watch: append only and let the daemon notice the change (SIGHUP after 3 s if not)
  --bastion-cmd "CMD"     run this instead of bin/bastion (e.g. a test double: "node dist/bench/tools/fake-bastion.js")
  --quiet-pct P           before each measurement wait until other work uses < P % of the CPUs (default 25)
  --quiet-wait S          ... but at most S seconds each time (default 5 quick, 30 full; 0: only record it);
                          all waits of a run add up to at most 60 s (quick) or 600 s (full)
  --budget S              skip what is left after S seconds (default 480 quick, none full)
  --conn-threads N --conn-concurrency N --conn-linger0   bbconn client settings (default 2, 16, normal close)
  --out DIR               results directory (default bench/results)
  --no-cross-host         skip the cross-host scenarios (plain VXLAN overlay, the same with iptables, bastion across two hosts)
  --cross-host-only       run only the cross-host scenarios (and their policy-add latency series)
`;

function parseArgs(argv: string[], repo: string): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    quick,
    reps: quick ? 3 : 5,
    seconds: quick ? 3 : 10,
    scaleReps: quick ? 3 : 5,
    scaleSeconds: quick ? 2 : 5,
    updates: quick ? 20 : 30,
    scale: [10, 100, 1000, 5000],
    depsPerEntry: 10,
    entriesPerNetns: 1,
    scenarios: [...SCENARIOS],
    rulePosition: 'middle',
    rrProto: 'tcp',
    conn: { ...DEFAULT_CONN_OPTIONS },
    bastion: true,
    bastionReload: 'api',
    bastionCmd: null,
    quietPct: 25,
    quietWaitMs: quick ? 5_000 : 30_000,
    budgetS: quick ? 480 : Infinity,
    outDir: join(repo, 'bench/results'),
    crossHost: true,
    crossHostOnly: false,
  };
  const num = (v: string | undefined, name: string): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    const take = () => {
      i++;
      return v;
    };
    switch (a) {
      case '--quick':
        break;
      case '--reps':
        o.reps = Math.round(num(take(), a));
        break;
      case '--seconds':
        o.seconds = num(take(), a);
        break;
      case '--scale':
        o.scale = (take() ?? '').split(',').map((s) => Math.round(num(s, a)));
        break;
      case '--no-scale':
        o.scale = [];
        break;
      case '--scale-reps':
        o.scaleReps = Math.round(num(take(), a));
        break;
      case '--scale-seconds':
        o.scaleSeconds = num(take(), a);
        break;
      case '--updates':
        o.updates = Math.round(num(take(), a));
        break;
      case '--deps':
        o.depsPerEntry = Math.round(num(take(), a));
        break;
      case '--entries-per-netns':
        o.entriesPerNetns = Math.round(num(take(), a));
        break;
      case '--rule-position': {
        const p = take();
        if (p !== 'start' && p !== 'middle' && p !== 'end') throw new Error('--rule-position is start, middle or end');
        o.rulePosition = p;
        break;
      }
      case '--scenarios': {
        const list = (take() ?? '').split(',').filter(Boolean);
        for (const s of list) if (!SCENARIOS.includes(s as ScenarioName)) throw new Error(`unknown scenario ${s}`);
        o.scenarios = list as ScenarioName[];
        break;
      }
      case '--rr-proto': {
        const p = take();
        if (p !== 'tcp' && p !== 'udp') throw new Error('--rr-proto is tcp or udp');
        o.rrProto = p;
        break;
      }
      case '--no-bastion':
        o.bastion = false;
        break;
      case '--bastion-reload': {
        const m = take();
        if (m !== 'api' && m !== 'watch' && m !== 'signal') throw new Error('--bastion-reload is api, watch or signal');
        o.bastionReload = m;
        break;
      }
      case '--bastion-cmd':
        o.bastionCmd = (take() ?? '').split(' ').filter(Boolean);
        break;
      case '--quiet-pct':
        o.quietPct = num(take(), a);
        break;
      case '--quiet-wait': {
        const w = Number(take());
        if (!Number.isFinite(w) || w < 0) throw new Error('--quiet-wait needs seconds >= 0');
        o.quietWaitMs = w * 1000;
        break;
      }
      case '--budget':
        o.budgetS = num(take(), a);
        break;
      case '--conn-threads':
        o.conn.threads = Math.round(num(take(), a));
        break;
      case '--conn-concurrency':
        o.conn.concurrency = Math.round(num(take(), a));
        break;
      case '--conn-linger0':
        o.conn.linger0 = true;
        break;
      case '--out':
        o.outDir = resolve(take() ?? '');
        break;
      case '--no-cross-host':
        o.crossHost = false;
        break;
      case '--cross-host-only':
        o.crossHostOnly = true;
        o.crossHost = true;
        o.scale = [];
        break;
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}\n${HELP}`);
    }
  }
  if (o.updates > 99) throw new Error('--updates is at most 99');
  return o;
}

/** a 10.x.0.0/16 not routed anywhere on the real host (our addresses live in our own namespace anyway) */
function pickOctet(avoid: number[] = []): number {
  const routes = runSync(['ip', '-4', 'route', 'show', 'table', 'all'], { allowFail: true }).stdout;
  const addrs = runSync(['ip', '-4', 'addr', 'show'], { allowFail: true }).stdout;
  for (let tries = 0; tries < 200; tries++) {
    const o = 100 + Math.floor(Math.random() * 150);
    if (!avoid.includes(o) && !routes.includes(`10.${o}.`) && !addrs.includes(`10.${o}.`)) return o;
  }
  return 100 + Math.floor(Math.random() * 150);
}

function pickPrefix(): string {
  const env = process.env.BENCH_PREFIX;
  if (env && /^bb[0-9a-f]{4}$/.test(env)) return env;
  for (;;) {
    const p = `bb${randomBytes(2).toString('hex')}`;
    if (namespacesWithPrefix(p).length === 0) return p;
  }
}

function toolVersion(cmd: string[]): string {
  const r = runSync(cmd, { allowFail: true, timeoutMs: 10_000 });
  return (r.stdout + r.stderr).split('\n').find((l) => l.trim())?.trim() ?? 'unknown';
}

async function main(): Promise<number> {
  const here = dirname(fileURLToPath(import.meta.url)); // dist/bench
  const repo = resolve(here, '../..');
  const opts = parseArgs(process.argv.slice(2), repo);
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (network namespaces, iptables, bpffs)\n');
    return 2;
  }
  for (const bin of ['ip', 'nsenter', 'iptables', 'iptables-restore', 'iperf3', 'sockperf', 'gcc', 'tc']) {
    if (!which(bin)) {
      process.stderr.write(`bench: ${bin} not found (scripts/bench installs the tools)\n`);
      return 2;
    }
  }
  const started = hrMs();
  const startedAt = new Date();
  const prefix = pickPrefix();
  const work = mkdtempSync(join(tmpdir(), `${prefix}-`));
  mkdirSync(join(opts.outDir, 'logs'), { recursive: true });
  const logLines: string[] = [];
  const log = (msg: string) => {
    const line = `[${((hrMs() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`;
    logLines.push(line);
    process.stdout.write(line + '\n');
  };

  // every exit path removes what this run created
  let cleaned = false;
  const cleanupSync = () => {
    if (cleaned) return;
    cleaned = true;
    killAllTrackedSync();
    destroyPrefixSync(prefix);
    removePinPath(`/sys/fs/bpf/${prefix}`);
    removeFlowHistory(`/sys/fs/bpf/${prefix}`);
    rmSync(work, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
      cleanupSync();
      process.exit(130);
    });
  }
  process.on('exit', cleanupSync);

  setQuietBudget(opts.quick ? 60_000 : 600_000);
  const tools = buildTools(join(repo, 'bench/tools'), join(repo, 'dist/bench/tools'));
  const bastionCmd = opts.bastionCmd ?? [join(repo, 'bin/bastion')];
  const bastion = opts.bastion && (opts.scenarios.includes('bastion') || opts.crossHost) ? await detectBastion(bastionCmd, opts.bastionCmd ? null : repo) : { available: false, note: 'disabled with --no-bastion' };
  const remainingMs = () => opts.budgetS * 1000 - (hrMs() - started);
  const overBudget = () => remainingMs() <= 0;
  const ctx: Context = { opts, repo, tools, prefix, octet: pickOctet(), work, bastion, bastionCmd, notes: [], log, overBudget, remainingMs };
  const errors: string[] = [];
  log(`bench: prefix ${prefix}, subnet 10.${ctx.octet}.0.0/16, ${opts.quick ? 'quick' : 'full'} run, ${opts.reps} reps × ${opts.seconds} s`);
  log(`bench: bastion ${bastion.available ? 'available' : `not measured (${bastion.note})`}`);
  if (!bastion.available) ctx.notes.push(`bastion not measured: ${bastion.note}`);
  const load0 = loadavg();
  if (load0[0]! > 0.7) ctx.notes.push(`the machine was busy when the run started (load average ${load0.map((x) => x.toFixed(2)).join(' ')}): figures may be low and noisy`);

  // ---- scenarios: repetitions outside, scenarios interleaved inside
  const active = opts.crossHostOnly ? [] : opts.scenarios.filter((s) => s !== 'bastion' || bastion.available);
  const runs: Record<ScenarioName, ScenarioRun[]> = { loopback: [], bridge: [], iptables: [], bastion: [] };
  for (let rep = 0; rep < opts.reps; rep++) {
    // the scenarios may use about half of the budget, so that the scale series still runs
    if (rep > 0 && remainingMs() < opts.budgetS * 1000 * 0.45) {
      ctx.notes.push(`time budget: only ${rep} of ${opts.reps} repetitions run, to leave time for the scale series`);
      break;
    }
    for (const s of active) {
      try {
        const r = await runScenarioOnce(ctx, s, rep);
        runs[s].push(r);
        log(
          `rep ${rep + 1}/${opts.reps} ${s.padEnd(8)}: tcp ${r.tcp_gbps_1.toFixed(2)} / ${r.tcp_gbps_4.toFixed(2)} Gbit/s, rr p50 ${r.rr_p50_us.toFixed(1)} µs p99 ${r.rr_p99_us.toFixed(1)} µs, ${r.conn_per_s.toFixed(0)} conn/s`,
        );
      } catch (err) {
        const msg = `scenario ${s} rep ${rep + 1}: ${(err as Error).message}`;
        errors.push(msg);
        log(`ERROR ${msg.split('\n')[0]}`);
      }
    }
  }
  const busyRuns = Object.values(runs)
    .flat()
    .filter((r) => r.detail.background_busy_pct > opts.quietPct);
  if (busyRuns.length) {
    ctx.notes.push(
      `${busyRuns.length} scenario run(s) started while other work kept the CPUs more than ${opts.quietPct} % busy (up to ${Math.max(...busyRuns.map((r) => r.detail.background_busy_pct)).toFixed(0)} %): those figures are pessimistic; see scenario_runs[].detail.background_busy_pct`,
    );
  }
  const sc: Record<ScenarioName, Figures | null> = {
    loopback: figures(runs.loopback),
    bridge: figures(runs.bridge),
    iptables: figures(runs.iptables),
    bastion: figures(runs.bastion),
  };

  // ---- scale series
  let scale: ScalePoint[] = [];
  if (opts.scale.length) {
    log(`scale series: ${opts.scale.join(', ')} containers`);
    try {
      scale = await runScale(ctx);
    } catch (err) {
      errors.push(`scale series: ${(err as Error).message}`);
      log(`ERROR scale series: ${(err as Error).message.split('\n')[0]}`);
    }
  }

  // ---- cross-host scenarios
  let crossHost: CrossHostResult | null = null;
  if (opts.crossHost && !ctx.overBudget()) {
    log('cross-host scenarios: overlay, overlay-iptables, bastion (two hosts, one underlay)');
    try {
      crossHost = await runCrossHost(ctx, pickOctet([ctx.octet]));
      errors.push(...crossHost.errors);
    } catch (err) {
      errors.push(`cross-host: ${(err as Error).message}`);
      log(`ERROR cross-host: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  const xh = crossHost ? crossHostFigures(crossHost) : null;

  // ---- report
  const finishedAt = new Date();
  const png = join(opts.outDir, 'latest-scale.png');
  const doc = {
    quick: opts.quick,
    started_at: startedAt.toISOString(),
    finished_at: finishedAt.toISOString(),
    duration_s: Math.round((hrMs() - started) / 100) / 10,
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? 'unknown',
      mem_gb: Math.round(totalmem() / 2 ** 30),
      kernel: release(),
      load_avg_start: load0,
      load_avg_end: loadavg(),
      node: process.version,
      iptables: iptablesVersion(),
      iperf3: toolVersion(['iperf3', '--version']),
      sockperf: toolVersion(['sockperf', '--version']),
    },
    config: {
      reps: opts.reps,
      seconds: opts.seconds,
      scale_reps: opts.scaleReps,
      scale_seconds: opts.scaleSeconds,
      updates: opts.updates,
      deps_per_entry: opts.depsPerEntry,
      entries_per_netns: opts.entriesPerNetns,
      rule_position: opts.rulePosition,
      rr_proto: opts.rrProto,
      rr_msg_size: 64,
      conn: { ...opts.conn, req: 64, resp: 64 },
      bastion_reload: opts.bastionReload,
      bastion_cmd: bastionCmd.join(' '),
      quiet_pct: opts.quietPct,
      quiet_wait_s: opts.quietWaitMs / 1000,
      budget_s: Number.isFinite(opts.budgetS) ? opts.budgetS : null,
      prefix,
    },
    bastion,
    scenarios: sc,
    ratios: {
      bastion_vs_bridge: ratios(sc.bastion, sc.bridge),
      bastion_vs_iptables: ratios(sc.bastion, sc.iptables),
      iptables_vs_bridge: ratios(sc.iptables, sc.bridge),
      bridge_vs_loopback: ratios(sc.bridge, sc.loopback),
    },
    scenario_runs: runs,
    scale,
    scale_ratios: scaleRatios(scale),
    cross_host: xh,
    targets: targets(sc, scale, xh),
    chart: null as string | null,
    notes: ctx.notes,
    errors,
  };
  if (scale.length) {
    try {
      const subtitle = `${doc.machine.cpus} CPUs, kernel ${doc.machine.kernel}, ${opts.depsPerEntry} dependencies per container, ${opts.quick ? 'quick run' : 'full run'}, ${finishedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
      const out = writeChart(renderScaleSvg(scale, subtitle), join(opts.outDir, 'latest-scale.svg'), png);
      doc.chart = out ? relative(opts.outDir, out) : 'latest-scale.svg';
      if (!out) ctx.notes.push('rsvg-convert not found: chart written as SVG only');
    } catch (err) {
      errors.push(`chart: ${(err as Error).message}`);
    }
  }
  writeFileSync(join(opts.outDir, 'latest.json'), JSON.stringify(doc, null, 2) + '\n');
  writeFileSync(join(opts.outDir, 'latest.md'), renderMarkdown(doc));
  writeFileSync(join(opts.outDir, 'logs', 'latest-run.log'), logLines.join('\n') + '\n');

  log('cleaning up');
  cleanupSync();
  const left = namespacesWithPrefix(prefix);
  if (left.length) log(`WARNING: namespaces left behind: ${left.join(' ')}`);
  log(`wrote ${relative(process.cwd(), join(opts.outDir, 'latest.json'))}, latest.md${doc.chart ? `, ${doc.chart}` : ''} in ${doc.duration_s} s`);
  process.stdout.write('\n' + readFileSync(join(opts.outDir, 'latest.md'), 'utf8'));
  return errors.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? err}\n`);
    process.exitCode = 1;
  },
);
