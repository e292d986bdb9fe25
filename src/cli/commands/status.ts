import type { Command } from 'commander';
import { socketPathFor } from '../../api/paths.js';
import { apiRequest, DaemonUnreachable } from '../../api/client.js';
import type { StatusReport, VerifyResult } from '../../api/types.js';
import { colors, formatTable, parseOutputFormat, printData } from '../output.js';
import { EXIT } from '../errors.js';
import { jsonOption, outputOption, pinPathOption } from '../options.js';
import { inspectPins } from '../../agent/cleanup.js';
import { addClusterOptions, type ClusterFlags } from './cluster-options.js';
import { clusterStatusCommand } from './cluster.js';

function human(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(1)}G`;
}

/** "1 high, 2 low": a container's findings by severity, worst first. */
function findingsCell(fs: Array<{ severity: string }>): string {
  if (!fs.length) return '-';
  const counts = new Map<string, number>();
  for (const sev of ['critical', 'high', 'medium', 'low', 'info']) {
    const n = fs.filter((f) => f.severity === sev).length;
    if (n) counts.set(sev, n);
  }
  return [...counts].map(([sev, n]) => `${n} ${sev}`).join(', ');
}

/** "3 s ago" */
function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

/** The update path in one line: in sync, or dirty and resyncing (and the repairs since start-up). */
function reconcilerLine(s: StatusReport): string | undefined {
  const r = s.reconciler;
  if (!r) return undefined;
  const c = colors;
  const repairs = Object.entries(r.repairs)
    .map(([map, kinds]) => `${map} ${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join('/')}`)
    .join(', ');
  const check = r.lastCheck ? `last check ${ago(r.lastCheck.at)} (${r.lastCheck.reason}, ${r.lastCheck.ms} ms)` : 'no check yet';
  const every = r.checkIntervalMs ? `every ${r.checkIntervalMs / 1000} s` : 'periodic checks off';
  const state = r.dirty
    ? c.red(`DIRTY since ${r.dirtySince}: ${r.lastError ?? 'a write failed'}; ${r.resyncing ? `resync ${r.nextResyncAt ? `at ${r.nextResyncAt}` : 'running'} (attempt ${r.resyncAttempts + 1})` : 'no resync scheduled'}`)
    : c.green('maps in sync');
  const blocked = r.blocked ? `, ${c.red(`${r.blocked} container(s) left to another instance`)}` : '';
  return `${c.bold('Reconciler')} ${state}${blocked}; ${check}, ${every}; repaired: ${repairs || 'nothing'}`;
}

function stackCell(e: StatusReport['endpoints'][number]): string {
  if (e.stack.ok) return 'ok';
  if (e.stack.owner === 'foreign') return `FOREIGN${e.stack.ownerPinPath ? ` (${e.stack.ownerPinPath})` : ''}`;
  if (e.stack.gone) return 'GONE';
  return 'MISSING';
}

/** What `status --verify` found and repaired. */
function renderVerify(v: VerifyResult): string {
  const c = colors;
  const maps = Object.entries(v.maps.maps)
    .filter(([, m]) => m.state !== 'in-sync')
    .map(([name, m]) => `${name}: ${m.state} (${m.missing} missing, ${m.extra} extra, ${m.changed} changed)`);
  const st = v.stacks;
  const lines = [
    `${c.bold('Verify')}     ${v.clean ? c.green('everything in place') : c.red('protection NOT fully in place')} (${v.ms} ms): ` +
      `${v.maps.repaired} map entries repaired, ${st.reattached} of ${st.checked} stacks put back, ${st.rediscovered.length} containers found again`,
  ];
  for (const m of maps) lines.push(`           ${m}`);
  if (v.maps.error) lines.push(`           ${c.red(`maps: ${v.maps.error}`)}`);
  for (const f of st.foreign) lines.push(`           ${c.red(`${f.endpoint ?? `ifindex ${f.hostIfindex}`}: another Bastion instance's stack${f.ownerPinPath ? ` (${f.ownerPinPath})` : ''}`)}`);
  for (const l of st.lost) lines.push(`           ${c.red(`${l}: interface gone, container not found again`)}`);
  return lines.join('\n') + '\n';
}

function renderStatus(s: StatusReport): string {
  const c = colors;
  const out: string[] = [];
  out.push(
    `${c.bold('Daemon')}     ${c.green('running')} (pid ${s.daemon.pid}), mode ${s.daemon.mode === 'enforce' ? c.green('enforce') : c.yellow(s.daemon.mode)}, pins ${s.daemon.pinPath}` +
      (s.daemon.configPath ? `, config ${s.daemon.configPath}` : ''),
  );
  const h = s.daemon.flowHistory;
  if (h) {
    out.push(
      `${c.bold('History')}    ${human(h.bytes)} of ${human(h.maxBytes)} in ${h.dir}` +
        (h.oldestMs ? `, since ${new Date(h.oldestMs).toISOString()}` : '') +
        (h.dropped ? c.yellow(`, ${h.dropped} records not written (disk behind)`) : '') +
        (h.errors ? c.yellow(`, ${h.errors} errors (see the log)`) : ''),
    );
  }
  const inPlace = s.endpoints.filter((e) => e.stack.ok).length;
  out.push(`${c.bold('Stacks')}     ${inPlace === s.endpoints.length ? c.green(`${inPlace}/${s.endpoints.length} in place`) : c.red(`${inPlace}/${s.endpoints.length} in place`)}`);
  const rec = reconcilerLine(s);
  if (rec) out.push(rec);
  const rp = s.runtimePolicies;
  if (rp) out.push(`${c.bold('Runtime')}    ${rp.count} runtime polic${rp.count === 1 ? 'y' : 'ies'} in force${rp.unreadable.length ? `, ${c.red(`${rp.unreadable.length} saved file${rp.unreadable.length === 1 ? '' : 's'} UNREADABLE`)}` : ''}`);
  for (const p of s.problems ?? []) out.push(`${c.bold(c.red('PROBLEM'))}    ${c.red(p)}`);
  if (s.published) {
    const mode = s.published.mode === 'allow' ? 'from the host, and from outside unless bound to loopback' : s.published.mode === 'host-only' ? 'from the host only' : 'not let in (deny)';
    out.push(`${c.bold('Published')}  ${s.published.ports.length} container${s.published.ports.length === 1 ? '' : 's'} publish ports: let in ${mode} (--published-ports ${s.published.mode})`);
  }
  if (s.configPending) out.push(`${c.bold('Config')}     ${c.yellow(`change not applied yet: ${s.configPending}`)}`);
  if (s.audit) {
    const a = s.audit.summary;
    const worst = a.critical + a.high;
    out.push(
      `${c.bold('Posture')}    ${(worst ? c.red : c.green)(`${a.critical} critical, ${a.high} high`)}, ${a.medium} medium, ${a.low} low findings ` +
        `(as of ${s.audit.generatedAt}; \`bastion audit\` for evidence and fixes)`,
    );
  }
  out.push('');
  out.push(
    formatTable(
      ['CONTAINER', 'IDENTITY', 'IP', 'HOST-IF', 'MODE', 'STACK', 'TX', 'RX', 'DROPS', 'CONNS', ...(s.audit ? ['FINDINGS'] : [])],
      s.endpoints.map((e) => [
        e.name,
        String(e.identity),
        e.ipv4,
        e.hostInterface,
        e.mode === 'audit' ? c.yellow(e.modeSource && e.modeSource !== 'default' ? `audit (${e.modePolicy ? `policy ${e.modePolicy}` : e.modeSource})` : 'audit') : e.mode,
        stackCell(e),
        human(e.counters.txBytes),
        human(e.counters.rxBytes),
        String(e.counters.drops),
        e.conntrack === undefined ? '-' : String(e.conntrack),
        ...(s.audit ? [findingsCell(e.findings ?? [])] : []),
      ]),
    ).trimEnd(),
  );
  if (s.published?.ports.length) {
    out.push('', c.bold('Published ports'));
    out.push(formatTable(['CONTAINER', 'FROM HOST', 'FROM OUTSIDE'], s.published.ports.map((p) => [p.container, p.fromHost, p.fromOutside])).trimEnd());
  }
  if (s.unprotected.length) {
    out.push('', c.bold(c.yellow('Unprotected containers')));
    out.push(formatTable(['CONTAINER', 'REASON'], s.unprotected.map((u) => [u.name, u.reason])).trimEnd());
    if (s.audit) {
      const ids = (key: string) => /^docker:([0-9a-f]{12})/.exec(key)?.[1];
      const rows = s.unprotected.map((u) => [u.name, findingsCell(s.audit!.containers[ids(u.key) ?? ''] ?? [])]).filter((r) => r[1] !== '-');
      if (rows.length) out.push('', formatTable(['UNPROTECTED', 'FINDINGS'], rows).trimEnd());
    }
  }
  out.push('', c.bold('Rules'));
  out.push(formatTable(['RULE', 'DIRECTION', 'SUBJECT', 'PEERS', 'PORTS'], s.rules.map((r) => [r.id, r.direction, r.subject, r.peers, r.ports])).trimEnd());
  out.push('', c.bold('Datapath counters'));
  out.push(
    formatTable(
      ['REASON', 'VERDICT', 'PACKETS', 'BYTES'],
      Object.entries(s.counters).map(([k, v]) => [k, v.drop ? 'drop' : 'pass', String(v.packets), human(v.bytes)]),
    ).trimEnd(),
  );
  out.push('', `Map entries: ${Object.entries(s.entries).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (s.conntrack) {
    const ct = s.conntrack;
    out.push(`Conntrack: ${ct.entries}/${ct.capacity} entries (${((100 * ct.entries) / ct.capacity).toFixed(1)} %), at most ${ct.perEndpointLimit} per container`);
  }
  if (s.events) {
    const ev = s.events;
    const lost = ev.lost ? c.red(`${ev.lost} lost (the daemon fell behind)`) : '0 lost';
    out.push(`Flow events: ${ev.suppressed} held back by the rate limit${ev.perSecondLimit ? ` (${ev.perSecondLimit}/s per container and reason)` : ''}, ${lost}`);
  }
  if (s.cluster) out.push('', renderClusterSection(s.cluster));
  return out.join('\n') + '\n';
}

function renderClusterSection(k: NonNullable<StatusReport['cluster']>): string {
  const c = colors;
  const lease = k.session.lease ? `lease ${k.session.lease.id} (${k.session.lease.ttlS}s, renewed ${Math.round((k.session.lease.renewedAgoMs ?? 0) / 1000)}s ago)` : c.red('no lease');
  const lines = [
    `${c.bold('Cluster')}    node ${k.node}, store ${k.store} ${k.session.connected ? c.green('connected') : c.red('unreachable (changes wait for it; enforcement holds)')}, ${lease}` +
      (k.session.pendingWrites ? c.yellow(`, ${k.session.pendingWrites} writes pending`) : ''),
    `${c.bold('Tunnel')}     ${k.tunnel.device} (ifindex ${k.tunnel.ifindex}, UDP ${k.tunnel.port}) on ${k.underlay.interface} ${k.underlay.address}: ${k.tunnel.programAttached ? c.green('from_overlay attached') : c.red('from_overlay MISSING')}, ${
      k.underlay.programAttached ? c.green('from_underlay attached') : k.underlay.whyNotAttached ? c.yellow(`from_underlay not attached (${k.underlay.whyNotAttached})`) : c.yellow('from_underlay not attached')
    }`,
    `${c.bold('Remote')}     ${k.remoteEndpoints.known} endpoints on other nodes, ${k.remoteEndpoints.inMaps} of them peers of local ones (in this node's maps); ${k.policies} cluster policies`,
    '',
    formatTable(
      ['NODE', 'UNDERLAY', 'HEALTH', 'LEASE', 'ENDPOINTS'],
      k.nodes.map((n) => [
        n.self ? `${n.name} (this node)` : n.name,
        n.underlay,
        n.healthy ? c.green('alive') : c.red('no lease'),
        n.lease ? `renewed ${n.lease.ageS}s ago, ${n.lease.ttlS}s left` : '-',
        String(n.endpoints),
      ]),
    ).trimEnd(),
  ];
  if (k.peers.length) lines.push('', c.bold('Remote endpoints in this node\'s maps'), formatTable(['ENDPOINT', 'IDENTITY', 'IP', 'NODE'], k.peers.map((p) => [p.name, String(p.identity), p.ipv4, `${p.node} (${p.nodeIp})`])).trimEnd());
  if (k.refused.length) lines.push('', c.bold(c.red('Refused by the cluster')), formatTable(['ENDPOINT', 'REASON'], k.refused.map((r) => [r.key, r.reason])).trimEnd());
  if (k.invalidRecords.length) lines.push('', c.bold(c.yellow('Ignored cluster records')), formatTable(['KEY', 'ERROR'], k.invalidRecords.map((r) => [r.key, r.error])).trimEnd());
  return lines.join('\n');
}

export function registerStatus(program: Command): void {
  addClusterOptions(
    program
      .command('status')
      .description("Show the daemon, the protected containers, their identities, stacks, rules and counters (or, with --cluster, the cluster's nodes)")
      .addOption(pinPathOption())
      .addOption(outputOption(['table', 'json', 'yaml']))
      .addOption(jsonOption())
      .option('--verify', 'first read every map and stack back and repair what differs, and say what was found'),
    'show the nodes of this cluster store instead of one daemon',
  )
    .addHelpText(
      'after',
      '\nExit status: 0 when the daemon runs, every container has its stack and no problem is reported (the maps dirty after\n' +
        'a failed write, a container left to another instance, saved runtime policies that could not be read, ...; with --verify:\n' +
        "and the check found everything in place after its repairs); 4 otherwise. With --cluster: 0 when every node's lease is alive.",
    )
    .action(async (opts: ClusterFlags & { pinPath: string; output: string; json?: boolean; verify?: boolean }) => {
      if (opts.cluster) return clusterStatusCommand(opts);
      const format = parseOutputFormat(opts.output, opts.json);
      try {
        const socket = socketPathFor(opts.pinPath);
        const v = opts.verify ? await apiRequest<VerifyResult & { ok: true }>(socket, 'POST', '/v1/status/verify', 120_000) : undefined;
        // a large policy makes a large answer (500,000 rules: about 50 MB): give it time
        const s = await apiRequest<StatusReport>(socket, 'GET', '/v1/status', 60_000);
        printData(v ? { ...s, verify: v } : s, format, () => (v ? renderVerify(v) : '') + renderStatus(s));
        process.exitCode = s.ok && (!v || v.clean) ? EXIT.ok : EXIT.notReady;
      } catch (err) {
        if (!(err instanceof DaemonUnreachable)) throw err;
        const pins = inspectPins(opts.pinPath);
        const data = { ok: false, daemon: null, reason: 'daemon not running', pinPath: opts.pinPath, enforcement: pins };
        printData(data, format, () =>
          `${colors.bold('Daemon')}     ${colors.red('not running')} (${(err as Error).message})\n` +
          (pins.refused
            ? `${colors.bold('Datapath')}   ${colors.red(pins.refused)}\n`
            : pins.present
            ? `${colors.bold('Datapath')}   still enforcing from ${opts.pinPath}: ${pins.endpoints} containers, ${pins.stacks} stacks attached\n`
            : `${colors.bold('Datapath')}   nothing pinned at ${opts.pinPath}\n`),
        );
        process.exitCode = EXIT.notReady;
      }
    });
}
