/**
 * Results: the JSON document (bench/results/latest.json) with medians, min/max,
 * ratios and target checks computed inside the run, and its Markdown table.
 * Everything here is pure: it only shapes data.
 */
import type { ScenarioName } from './context.js';
import type { ScalePoint } from './scale.js';
import type { ScenarioRun } from './scenarios.js';
import { ratio, round, summarize, type Summary } from './stats.js';
import type { CrossHostResult, CrossName, PolicyLatency } from './crosshost.js';

/** The cross-host part of the results: medians per scenario, Bastion's ratios to the overlays, the policy latency. */
export interface CrossHostFigures {
  scenarios: Record<CrossName, Figures | null>;
  ratios: { bastion_vs_overlay: Ratios | null; bastion_vs_overlay_iptables: Ratios | null; overlay_iptables_vs_overlay: Ratios | null };
  policy: PolicyLatency | null;
  runs: CrossHostResult['runs'];
}

export function crossHostFigures(r: CrossHostResult): CrossHostFigures {
  const scenarios = { overlay: figures(r.runs.overlay), 'overlay-iptables': figures(r.runs['overlay-iptables']), bastion: figures(r.runs.bastion) };
  return {
    scenarios,
    ratios: {
      bastion_vs_overlay: ratios(scenarios.bastion, scenarios.overlay),
      bastion_vs_overlay_iptables: ratios(scenarios.bastion, scenarios['overlay-iptables']),
      overlay_iptables_vs_overlay: ratios(scenarios['overlay-iptables'], scenarios.overlay),
    },
    policy: r.policy,
    runs: r.runs,
  };
}

export const METRICS = ['tcp_gbps_1', 'tcp_gbps_4', 'rr_p50_us', 'rr_p99_us', 'conn_per_s'] as const;
export type Metric = (typeof METRICS)[number];

export const METRIC_LABELS: Record<Metric, string> = {
  tcp_gbps_1: 'TCP throughput, 1 stream (Gbit/s)',
  tcp_gbps_4: 'TCP throughput, 4 streams (Gbit/s)',
  rr_p50_us: 'request/response p50 (µs, round trip)',
  rr_p99_us: 'request/response p99 (µs, round trip)',
  conn_per_s: 'new connections per second',
};
/** for these, smaller is better */
export const LOWER_IS_BETTER: ReadonlySet<Metric> = new Set(['rr_p50_us', 'rr_p99_us']);

export type Figures = Record<Metric, number> & {
  reps: number;
  min: Record<Metric, number>;
  max: Record<Metric, number>;
};

export function figures(runs: ScenarioRun[]): Figures | null {
  if (runs.length === 0) return null;
  const f = { reps: runs.length, min: {}, max: {} } as Figures;
  for (const m of METRICS) {
    const s: Summary = summarize(runs.map((r) => r[m]));
    f[m] = round(s.median, 3)!;
    f.min[m] = round(s.min, 3)!;
    f.max[m] = round(s.max, 3)!;
  }
  return f;
}

export type Ratios = Record<Metric, number | null>;

export function ratios(a: Figures | null, b: Figures | null): Ratios | null {
  if (!a || !b) return null;
  const r = {} as Ratios;
  for (const m of METRICS) r[m] = round(ratio(a[m], b[m]), 3);
  return r;
}

export interface Target {
  id: string;
  description: string;
  value: number | null;
  op: '>=' | '<=';
  threshold: number;
  /** null: not measured in this run */
  met: boolean | null;
}

function target(id: string, description: string, value: number | null, op: '>=' | '<=', threshold: number): Target {
  const v = round(value, 3);
  return { id, description, value: v, op, threshold, met: v === null ? null : op === '>=' ? v >= threshold : v <= threshold };
}

export function targets(sc: Partial<Record<ScenarioName, Figures | null>>, scale: ScalePoint[], xh: CrossHostFigures | null = null): Target[] {
  const b = sc.bastion ?? null;
  const ipt = sc.iptables ?? null;
  const br = sc.bridge ?? null;
  const at = (n: number) => scale.find((p) => p.containers === n) ?? null;
  const b10 = at(10)?.bastion?.conn_per_s ?? null;
  const p5k = at(5000);
  const p10 = at(10);
  const xb = xh?.scenarios.bastion ?? null;
  const xo = xh?.scenarios.overlay ?? null;
  const out: Target[] = [
    target('tcp1_vs_iptables', 'bastion TCP 1 stream ≥ 1.25 × iptables', ratio(b?.tcp_gbps_1, ipt?.tcp_gbps_1), '>=', 1.25),
    target('tcp4_vs_iptables', 'bastion TCP 4 streams ≥ 1.25 × iptables', ratio(b?.tcp_gbps_4, ipt?.tcp_gbps_4), '>=', 1.25),
    target('tcp1_vs_bridge', 'bastion TCP 1 stream ≥ 1.0 × bridge', ratio(b?.tcp_gbps_1, br?.tcp_gbps_1), '>=', 1.0),
    target('tcp4_vs_bridge', 'bastion TCP 4 streams ≥ 1.0 × bridge', ratio(b?.tcp_gbps_4, br?.tcp_gbps_4), '>=', 1.0),
    target('rr_p50_vs_bridge', 'bastion request/response p50 ≤ 0.8 × bridge', ratio(b?.rr_p50_us, br?.rr_p50_us), '<=', 0.8),
    target('conn_1000_vs_10', 'bastion conn/s at 1,000 containers ≥ 0.95 × its 10-container figure', ratio(at(1000)?.bastion?.conn_per_s, b10), '>=', 0.95),
    target('conn_5000_vs_10', 'bastion conn/s at 5,000 containers ≥ 0.95 × its 10-container figure', ratio(p5k?.bastion?.conn_per_s, b10), '>=', 0.95),
    target('conn_5000_vs_iptables', 'bastion conn/s at 5,000 containers ≥ 2 × iptables', ratio(p5k?.bastion?.conn_per_s, p5k?.iptables?.conn_per_s), '>=', 2),
    target('update_p99_5000', 'one added dependency enforced in ≤ 5 ms p99 at 5,000 containers', p5k?.bastion?.update_ms_p99 ?? null, '<=', 5),
    target('update_flat', 'update p99 flat: p99 at 5,000 ≤ 1.5 × p99 at 10 containers', ratio(p5k?.bastion?.update_ms_p99, p10?.bastion?.update_ms_p99), '<=', 1.5),
    target('rss_5000', 'daemon memory (VmRSS) ≤ 150 MB at 5,000 containers', p5k?.bastion?.rss_mb ?? null, '<=', 150),
    target('xh_tcp1_vs_overlay', 'cross-host: bastion TCP 1 stream ≥ 1.15 × the plain VXLAN overlay', ratio(xb?.tcp_gbps_1, xo?.tcp_gbps_1), '>=', 1.15),
    target('xh_tcp4_vs_overlay', 'cross-host: bastion TCP 4 streams ≥ 1.15 × the plain VXLAN overlay', ratio(xb?.tcp_gbps_4, xo?.tcp_gbps_4), '>=', 1.15),
    target('xh_conn_vs_overlay', 'cross-host: bastion conn/s ≥ 1.0 × the plain VXLAN overlay', ratio(xb?.conn_per_s, xo?.conn_per_s), '>=', 1.0),
    target('xh_policy_p99', 'cross-host: a policy added on the store enforced on the other host in ≤ 100 ms p99', xh?.policy?.p99_ms ?? null, '<=', 100),
  ];
  return out;
}

export interface ScaleRatio {
  containers: number;
  bastion_vs_iptables_conn: number | null;
  bastion_conn_vs_10: number | null;
  iptables_conn_vs_10: number | null;
  bastion_vs_iptables_update_p99: number | null;
}

export function scaleRatios(scale: ScalePoint[]): ScaleRatio[] {
  const first = scale[0];
  return scale.map((p) => ({
    containers: p.containers,
    bastion_vs_iptables_conn: round(ratio(p.bastion?.conn_per_s, p.iptables?.conn_per_s)),
    bastion_conn_vs_10: round(ratio(p.bastion?.conn_per_s, first?.bastion?.conn_per_s)),
    iptables_conn_vs_10: round(ratio(p.iptables?.conn_per_s, first?.iptables?.conn_per_s)),
    bastion_vs_iptables_update_p99: round(ratio(p.bastion?.update_ms_p99, p.iptables?.update_ms_p99)),
  }));
}

/* ------------------------------------------------------------ markdown */

/** fixed decimals with thousands separators; "–" when missing */
function fmt(x: number | null | undefined, decimals = 2): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

const DECIMALS: Record<Metric, number> = { tcp_gbps_1: 2, tcp_gbps_4: 2, rr_p50_us: 1, rr_p99_us: 1, conn_per_s: 0 };

function cell(f: Figures | null | undefined, m: Metric): string {
  if (!f) return 'n/a';
  const d = DECIMALS[m];
  return `${fmt(f[m], d)} (${fmt(f.min[m], d)}–${fmt(f.max[m], d)})`;
}

function ratioCell(r: number | null | undefined): string {
  return r === null || r === undefined ? '–' : `${r.toFixed(2)}×`;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function renderMarkdown(doc: any): string {
  const sc = doc.scenarios as Record<ScenarioName, Figures | null>;
  const rt = doc.ratios as Record<string, Ratios | null>;
  const L: string[] = [];
  L.push(`# Bastion benchmark${doc.quick ? ' (quick)' : ''}`);
  L.push('');
  L.push(
    `${doc.finished_at} · ${doc.machine.cpus} CPUs (${doc.machine.cpu_model}), ${doc.machine.mem_gb} GiB, kernel ${doc.machine.kernel} · run took ${fmt(doc.duration_s, 0)} s · load average at start ${doc.machine.load_avg_start.map((x: number) => x.toFixed(2)).join(' ')}`,
  );
  L.push('');
  L.push(
    `Each figure is the median of ${doc.config.reps} repetitions with (min–max); every repetition uses a fresh topology; scenarios are interleaved within a repetition. Measurements: ${doc.config.seconds} s each. Request/response: sockperf ping-pong over ${doc.config.rr_proto.toUpperCase()}, ${doc.config.rr_msg_size}-byte messages, full round trip. New connections: bbconn, one ${doc.config.conn.req}-byte request and response per connection, ${doc.config.conn.concurrency} in flight on ${doc.config.conn.threads} threads.`,
  );
  L.push('');
  L.push('## Scenarios');
  L.push('');
  L.push('| figure | loopback | bridge | iptables | bastion | bastion / bridge | bastion / iptables | iptables / bridge |');
  L.push('|---|---|---|---|---|---|---|---|');
  for (const m of METRICS) {
    L.push(
      `| ${METRIC_LABELS[m]} | ${cell(sc.loopback, m)} | ${cell(sc.bridge, m)} | ${cell(sc.iptables, m)} | ${cell(sc.bastion, m)} | ${ratioCell(rt.bastion_vs_bridge?.[m])} | ${ratioCell(rt.bastion_vs_iptables?.[m])} | ${ratioCell(rt.iptables_vs_bridge?.[m])} |`,
    );
  }
  L.push('');
  L.push('Ratios are ratios of medians; for latency a ratio below 1 is better.');
  if (!sc.bastion) L.push('', `**bastion: not measured** — ${doc.bastion.note}`);
  else if (doc.config.bastion_cmd && !/\/bin\/bastion$/.test(doc.config.bastion_cmd)) L.push('', `**bastion was measured with \`${doc.config.bastion_cmd}\`, not bin/bastion.**`);
  L.push('');
  if (doc.scale?.length) {
    L.push('## Scale series');
    L.push('');
    L.push(
      `${doc.config.deps_per_entry} dependencies per container; iptables rules with the measured pair's rules at the **${doc.config.rule_position}** of the chain; conn/s is the median of ${doc.config.scale_reps} × ${doc.config.scale_seconds} s; update = time from applying one added dependency until a connection to the newly allowed port succeeds, over ${doc.config.updates} changes.`,
    );
    L.push('');
    L.push('| containers | rules | netns | iptables conn/s | bastion conn/s | bastion / iptables | iptables update p50 / p99 (ms) | bastion update p50 / p99 (ms) | bastion RSS (MB) | bastion private (RssAnon, MB) |');
    L.push('|---|---|---|---|---|---|---|---|---|---|');
    const sr = doc.scale_ratios as ScaleRatio[];
    for (const [i, p] of (doc.scale as ScalePoint[]).entries()) {
      const ipt = p.iptables;
      const b = p.bastion;
      const conn = (x: typeof ipt | typeof b) => (x ? `${fmt(x.conn_per_s, 0)} (${fmt(x.conn_per_s_min, 0)}–${fmt(x.conn_per_s_max, 0)})` : 'n/a');
      const upd = (x: typeof ipt | typeof b) => (x ? `${fmt(x.update_ms_p50)} / ${fmt(x.update_ms_p99)}` : 'n/a');
      L.push(
        `| ${p.containers.toLocaleString('en-US')} | ${p.rules.toLocaleString('en-US')} | ${p.namespaces.toLocaleString('en-US')} | ${conn(ipt)} | ${conn(b)} | ${ratioCell(sr[i]?.bastion_vs_iptables_conn)} | ${upd(ipt)} | ${upd(b)} | ${b ? fmt(b.rss_mb, 1) : 'n/a'} | ${b?.rss_anon_mb != null ? fmt(b.rss_anon_mb, 1) : 'n/a'} |`,
      );
    }
    L.push('');
    const phased = (doc.scale as ScalePoint[]).filter((p) => p.bastion?.update_phases_ms);
    if (phased.length) {
      L.push('Where a Bastion update\'s time goes (p50 / p99, ms): the harness until its request is in the daemon\'s socket; until the daemon\'s handler runs (HTTP); the daemon reading, parsing and validating the document, compiling and writing the maps; until the probe\'s connection succeeds. Then: from the request in the socket until enforced, Bastion\'s share of the update time; and, of the daemon\'s part, how long its thread waited for a CPU that other processes held.');
      L.push('');
      L.push('| containers | client | to daemon | daemon | detect | request in socket → enforced | daemon waiting for a CPU |');
      L.push('|---|---|---|---|---|---|---|');
      for (const p of phased) {
        const ph = p.bastion!.update_phases_ms!;
        const c = (s: { p50: number; p99: number }) => `${fmt(s.p50)} / ${fmt(s.p99)}`;
        L.push(`| ${p.containers.toLocaleString('en-US')} | ${c(ph.client)} | ${c(ph.to_daemon)} | ${c(ph.daemon)} | ${c(ph.detect)} | ${ph.sent_to_enforced ? c(ph.sent_to_enforced) : 'n/a'} | ${ph.daemon_cpu_wait ? c(ph.daemon_cpu_wait) : 'n/a'} |`);
      }
      L.push('');
    }
    const errs = (doc.scale as ScalePoint[]).flatMap((p) => p.errors.map((e) => `${p.containers}: ${e.split('\n')[0]}`));
    if (errs.length) {
      L.push('Errors in the scale series:');
      for (const e of errs) L.push(`- ${e}`);
      L.push('');
    }
    L.push(`![scale series](${doc.chart ?? 'latest-scale.png'})`);
    L.push('');
  }
  if (doc.cross_host) L.push(...renderCrossHost(doc.cross_host as CrossHostFigures));
  L.push('## Targets');
  L.push('');
  L.push('| target | value | required | met |');
  L.push('|---|---|---|---|');
  for (const t of doc.targets as Target[]) {
    L.push(`| ${t.description} | ${t.value === null ? '–' : fmt(t.value, 2)} | ${t.op} ${t.threshold} | ${t.met === null ? 'not measured' : t.met ? 'yes' : '**no**'} |`);
  }
  L.push('');
  if (doc.notes?.length || doc.errors?.length) {
    L.push('## Notes');
    L.push('');
    for (const n of doc.notes ?? []) L.push(`- ${n}`);
    for (const e of doc.errors ?? []) L.push(`- error: ${String(e).split('\n')[0]}`);
    L.push('');
  }
  L.push('See docs/benchmarks.md for how each scenario is built and what each figure means.');
  L.push('');
  return L.join('\n');
}

export function renderCrossHost(x: CrossHostFigures): string[] {
  const L: string[] = [];
  L.push('## Cross-host');
  L.push('');
  L.push(
    'Client on one host, server on another (namespaces joined by an underlay bridge), container MTU 1450. overlay: a bridge per host with a VXLAN port to the other (as Docker overlay / flannel vxlan); overlay-iptables: the same with br_netfilter and the pair\'s rules on both hosts; bastion: the same hosts without the VXLAN port, `bastion run --cluster` on each (etcd under TLS on the underlay) carrying the pair over its own VXLAN device.',
  );
  L.push('');
  L.push('| figure | overlay | overlay-iptables | bastion | bastion / overlay | bastion / overlay-iptables |');
  L.push('|---|---|---|---|---|---|');
  for (const m of METRICS) {
    L.push(
      `| ${METRIC_LABELS[m]} | ${cell(x.scenarios.overlay, m)} | ${cell(x.scenarios['overlay-iptables'], m)} | ${cell(x.scenarios.bastion, m)} | ${ratioCell(x.ratios.bastion_vs_overlay?.[m])} | ${ratioCell(x.ratios.bastion_vs_overlay_iptables?.[m])} |`,
    );
  }
  L.push('');
  if (x.policy) {
    L.push(
      `Policy added on the store (as \`bastion policy add --cluster\` writes it) until the client on host 1 connects to the newly allowed port on host 2: p50 ${fmt(x.policy.p50_ms)} ms, p99 ${fmt(x.policy.p99_ms)} ms, max ${fmt(x.policy.max_ms)} ms over ${x.policy.samples_ms.length} changes${x.policy.failures ? `, ${x.policy.failures} not enforced within 10 s` : ''}.`,
    );
    L.push('');
  }
  return L;
}
