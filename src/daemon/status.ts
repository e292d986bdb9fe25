/** The status report: what `bastion status` prints and /v1/status serves. */
import { EVENT_COUNTER_REASONS, FIRST_DROP_REASON, REASON, REASON_NAMES } from '../datapath/layout.js';
import type { Manager } from '../manager/manager.js';
import type { Rule, Peer, PortRange, LabelSelector } from '../policy/model.js';
import type { EndpointStatus, ModeInfo, PublishedStatus, ReconcilerStatus, RuntimePoliciesStatus, StatusReport } from '../api/types.js';
import type { Endpoint } from '../manager/endpoint.js';
import type { AuditReport } from '../audit/findings.js';
import { findingsOfEndpoint, statusAudit } from '../audit/daemon-audit.js';
import type { ClusterStatus } from '../api/types.js';
import { formatSelector, isEmptySelector } from '../policy/selector.js';

/** A selector as status prints it: formatSelector's form, "*" for every container. */
export function selectorText(s: LabelSelector): string {
  return isEmptySelector(s) ? '*' : formatSelector(s);
}

export function peerText(p: Peer): string {
  switch (p.kind) {
    case 'endpoints':
      return selectorText(p.selector);
    case 'host':
      return 'host';
    case 'any':
      return 'any';
    case 'cidr':
      return p.except?.length ? `${p.cidr} except ${p.except.join(',')}` : p.cidr;
  }
}

export function portsText(ports: PortRange[]): string {
  if (!ports.length) return 'any';
  return ports
    .map((p) => {
      if (p.protocol === 'icmp' || p.protocol === 'any') return p.protocol;
      if (p.name) return `${p.name}/${p.protocol}`;
      if (p.from === 0 && p.to === 65535) return `*/${p.protocol}`;
      return `${p.from === p.to ? p.from : `${p.from}-${p.to}`}/${p.protocol}`;
    })
    .join(',');
}

type RuleRow = StatusReport['rules'][number];
/**
 * A rule's row, made once per rule object: a status of 500,000 rules (a
 * 20 MB config) spent seconds formatting the same selectors again at every
 * request, long enough for `bastion status` to give up waiting.
 */
const rowOf = new WeakMap<Rule, RuleRow>();

export function ruleRows(rules: Rule[]): StatusReport['rules'] {
  const out: RuleRow[] = new Array(rules.length);
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    let row = rowOf.get(r);
    if (!row) {
      row = { id: r.id, direction: r.direction, subject: selectorText(r.subject), peers: r.peers.map(peerText).join(' | ') || 'none', ports: portsText(r.ports) };
      rowOf.set(r, row);
    }
    out[i] = row;
  }
  return out;
}

/** What the status report is made of: the manager (and its datapath) and a few facts about the daemon. */
export interface StatusSources {
  manager: Manager;
  pinPath: string;
  configPath?: string;
  startedAt: Date;
  flowsSeen: number;
  /** the last posture audit, if one ran */
  audit?: AuditReport;
  /** the periodic drift check's interval (ms; 0: off) */
  checkIntervalMs?: number;
  /** a container's mode and where it comes from (src/daemon/modes.ts) */
  modes?: (ep: Endpoint) => ModeInfo;
  /** the flow history on disk */
  history?: StatusReport['daemon']['flowHistory'];
  runtimePolicies: RuntimePoliciesStatus;
  /** why a change of the config file is not applied yet */
  configPending?: string;
  published?: PublishedStatus;
  /** cluster mode: the node's view of the cluster */
  cluster?: ClusterStatus;
}

/** The problems a status report names (each one makes `ok` false). */
export function statusProblems(src: Pick<StatusSources, 'runtimePolicies'>, reconciler?: ReconcilerStatus, blockedNames: string[] = []): string[] {
  const out: string[] = [];
  if (reconciler?.dirty) {
    out.push(
      `the maps are not known to be what the daemon wants since ${reconciler.dirtySince}: a write failed (${reconciler.lastError ?? 'unknown error'}); ` +
        (reconciler.nextResyncAt ? `resync at ${reconciler.nextResyncAt} (attempt ${reconciler.resyncAttempts + 1})` : 'resync running'),
    );
  }
  if (blockedNames.length) {
    out.push(`${blockedNames.length} container${blockedNames.length === 1 ? '' : 's'} left unprotected: their interface carries another Bastion instance's stack (${blockedNames.join(', ')})`);
  }
  for (const f of src.runtimePolicies.unreadable) {
    out.push(`saved runtime policies could not be read and are NOT enforced: the file is kept at ${f} (add them again with bastion policy add -f, then remove it)`);
  }
  if (src.runtimePolicies.saveError) out.push(`the runtime policies could not be saved (a restart would lose them): ${src.runtimePolicies.saveError}`);
  return out;
}

export function collectStatus(src: StatusSources): StatusReport {
  const audit = src.audit ? statusAudit(src.audit) : undefined;
  const cluster = src.cluster;
  const m = src.manager;
  const dp = m.datapath;
  const ct = dp.conntrackUsage?.();
  const endpoints: EndpointStatus[] = [...m.endpoints.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((ep) => {
      const s = dp.endpointStats(ep.hostIfindex);
      const mode = src.modes?.(ep) ?? { mode: m.effectiveMode(ep), source: ep.mode ? 'config' : 'default' };
      return {
        name: ep.name,
        key: ep.key,
        identity: ep.identity,
        ipv4: ep.ipv4,
        mac: ep.mac,
        interface: ep.interface,
        hostInterface: ep.hostIfname,
        hostIfindex: ep.hostIfindex,
        ...(ep.bridge ? { bridge: ep.bridge } : {}),
        ...(ep.gateway ? { gateway: ep.gateway } : {}),
        mode: mode.mode,
        modeSource: mode.source,
        ...(mode.policy ? { modePolicy: mode.policy } : {}),
        labels: ep.labels,
        stack: dp.stackState(ep.hostIfindex),
        counters: {
          txPackets: Number(s?.txPackets ?? 0n),
          txBytes: Number(s?.txBytes ?? 0n),
          rxPackets: Number(s?.rxPackets ?? 0n),
          rxBytes: Number(s?.rxBytes ?? 0n),
          drops: Number(s?.drops ?? 0n),
        },
        ...(ct ? { conntrack: ct.byIdentity.get(ep.identity) ?? 0 } : {}),
        ...(audit ? { findings: findingsOfEndpoint(audit, ep.key) } : {}),
      };
    });
  const counters: StatusReport['counters'] = {};
  const all = dp.counters();
  for (const [reason, c] of all) {
    if (c.packets === 0n || EVENT_COUNTER_REASONS.includes(reason)) continue;
    counters[REASON_NAMES[reason] ?? `reason-${reason}`] = {
      packets: Number(c.packets),
      bytes: Number(c.bytes),
      drop: reason >= FIRST_DROP_REASON,
    };
  }
  const h = m.health();
  const reconciler: ReconcilerStatus = {
    dirty: h.dirty,
    ...(h.dirtySince ? { dirtySince: h.dirtySince } : {}),
    ...(h.lastError ? { lastError: h.lastError } : {}),
    failedWrites: h.failedWrites,
    resyncing: h.resyncing,
    resyncAttempts: h.resyncAttempts,
    ...(h.nextResyncAt ? { nextResyncAt: h.nextResyncAt } : {}),
    ...(h.lastCheck
      ? { lastCheck: { at: h.lastCheck.at, reason: h.lastCheck.reason, ms: h.lastCheck.ms, repaired: h.lastCheck.repaired, clean: h.lastCheck.clean, ...(h.lastCheck.error ? { error: h.lastCheck.error } : {}) } }
      : {}),
    repairs: h.repairs,
    blocked: h.blocked,
    checkIntervalMs: src.checkIntervalMs ?? 0,
  };
  // protection is in place: every stack, and no problem (maps dirty, a container left to another instance, ...)
  const problems = [...statusProblems(src, reconciler, m.blockedNames()), ...(cluster?.problems ?? [])];
  return {
    // in cluster mode the tunnel program must be in place too (without it, nothing from other nodes is checked or delivered)
    ok: endpoints.every((e) => e.stack.ok) && problems.length === 0 && (!cluster || cluster.tunnel.programAttached),
    problems,
    runtimePolicies: src.runtimePolicies,
    ...(src.configPending ? { configPending: src.configPending } : {}),
    ...(src.published ? { published: src.published } : {}),
    daemon: {
      pid: process.pid,
      pinPath: src.pinPath,
      configPath: src.configPath,
      mode: m.mode,
      startedAt: src.startedAt.toISOString(),
      generation: m.generation,
      lastApplyMs: m.lastApply ? +m.lastApply.ms.toFixed(3) : undefined,
      flowsSeen: src.flowsSeen,
      ...(src.history ? { flowHistory: src.history } : {}),
    },
    endpoints,
    unprotected: [...m.unprotected.values()].map((u) => ({ name: u.name, key: u.key, reason: u.reason })),
    rules: ruleRows(m.ruleList()),
    entries: m.entryCounts(),
    counters,
    ...(ct ? { conntrack: { entries: ct.entries, capacity: ct.capacity, perEndpointLimit: ct.perEndpointLimit, collected: ct.collected } } : {}),
    events: {
      ...(ct ? { perSecondLimit: ct.eventsPerSec } : {}),
      suppressed: Number(all.get(REASON.eventsSuppressed)?.packets ?? 0n),
      lost: Number(all.get(REASON.eventsLost)?.packets ?? 0n),
    },
    ...(cluster ? { cluster } : {}),
    ...(audit ? { audit } : {}),
    reconciler,
  };
}
