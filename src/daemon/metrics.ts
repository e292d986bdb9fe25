/** Prometheus metrics, read from the manager and the datapath counters at scrape time. */
import { Counter as PromCounter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { EVENT_COUNTER_REASONS, FIRST_DROP_REASON, REASON, REASON_NAMES, type Counter } from '../datapath/layout.js';
import type { Manager } from '../manager/manager.js';
import type { FlowStore, FlowRecord } from '../agent/flow-log.js';
import type { FlowStreamStats } from '../api/flow-stream.js';
import type { FlowHistoryStats } from '../flows/history.js';
import { POLICY_REASONS, flowCount } from '../flows/record.js';
import type { ModesAnswer, RuntimePoliciesStatus } from '../api/types.js';
import type { VerifyReport } from '../manager/manager.js';
import type { ClusterMetrics } from '../cluster/node.js';

/** What the daemon reports about itself besides the manager and the datapath. */
export interface DaemonHealth {
  runtimePolicies(): RuntimePoliciesStatus & { saveFailures: number };
  config(): { pending: boolean; containersRemoved: number };
  /** audit per workload (src/daemon/modes.ts) */
  modes?: () => ModesAnswer;
  /** the flow history on disk */
  history?: FlowHistoryStats;
}


/**
 * A value read once per scrape: prom-client runs every metric's collect()
 * one after the other within one turn of the event loop, so the value is
 * kept until the next turn and read again by the next scrape.
 */
export function oncePerScrape<T>(read: () => T): () => T {
  let held: { value: T } | undefined;
  return () => {
    if (!held) {
      held = { value: read() };
      setImmediate(() => (held = undefined));
    }
    return held.value;
  };
}

/**
 * Names follow the Prometheus conventions (docs/metrics.md lists them):
 * bastion_ prefix, base units, _total for counters, one metric per meaning
 * with labels for its dimensions.
 */
export function createMetrics(
  manager: () => Manager,
  counters: () => Map<number, Counter>,
  flows: FlowStore,
  followers: FlowStreamStats,
  health: DaemonHealth,
  lastCheck: () => VerifyReport | undefined = () => undefined,
  cluster?: () => ClusterMetrics | undefined,
) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bastion_daemon_' });

  if (cluster) {
    new Gauge({
      name: 'bastion_cluster_store_connected',
      help: 'The cluster store answers (1) or not (0): changes wait while it does not',
      registers: [registry],
      collect() {
        this.set(cluster()?.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_pending_writes',
      help: "This node's records waiting to be written to the cluster store",
      registers: [registry],
      collect() {
        this.set(cluster()?.pendingWrites ?? 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_remote_endpoints',
      help: "Other nodes' endpoints this node believes (only the peers of local ones reach its maps: bastion_map_entries{map=remote})",
      registers: [registry],
      collect() {
        this.set(cluster()?.remoteEndpoints ?? 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_refused_endpoints',
      help: "Local endpoints the cluster refused (an address another node holds): their ports drop everything",
      registers: [registry],
      collect() {
        this.set(cluster()?.refused ?? 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_tunnel_attached',
      help: "This node's from_overlay is on its tunnel device (0: nothing from other nodes is checked or delivered)",
      registers: [registry],
      collect() {
        this.set(cluster()?.tunnelAttached ? 1 : 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_underlay_program_attached',
      help: "This node's from_underlay is on its underlay interface (0: packets from other nodes all take the tunnel device, still checked by from_overlay)",
      registers: [registry],
      collect() {
        this.set(cluster()?.underlayAttached ? 1 : 0);
      },
    });
    new PromCounter({
      name: 'bastion_cluster_tunnel_repairs_total',
      help: 'Times the tunnel program was found missing (taken off by another tool, the device gone) and put back',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(cluster()?.tunnelRepairs ?? 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_identity_tampering',
      help: 'Identity records found rewritten or deleted in the cluster store since start (never done by Bastion)',
      registers: [registry],
      collect() {
        this.set(cluster()?.tampering ?? 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_node_conflict',
      help: "Another daemon publishes this node's record (the same --node twice: their containers replace each other in the cluster)",
      registers: [registry],
      collect() {
        this.set(cluster()?.nodeConflict ? 1 : 0);
      },
    });
    new Gauge({
      name: 'bastion_cluster_misrouted_nodes',
      help: 'Other nodes whose underlay address is not reached through --underlay (a wrong --underlay or route: VXLAN to them does not go over the underlay)',
      registers: [registry],
      collect() {
        this.set(cluster()?.misroutedNodes ?? 0);
      },
    });
  }

  new Gauge({
    name: 'bastion_endpoints',
    help: 'Container interfaces protected by a Bastion stack',
    registers: [registry],
    collect() {
      this.set(manager().endpoints.size);
    },
  });
  new Gauge({
    name: 'bastion_unprotected_containers',
    help: 'Containers Bastion sees but cannot protect',
    registers: [registry],
    collect() {
      this.set(manager().unprotected.size);
    },
  });
  new Gauge({
    name: 'bastion_map_entries',
    help: 'Entries the manager keeps in each datapath map',
    labelNames: ['map'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [map, n] of Object.entries(manager().entryCounts())) this.set({ map }, n);
    },
  });
  new Gauge({
    name: 'bastion_last_apply_seconds',
    help: 'Time the last change took to compile and write',
    registers: [registry],
    collect() {
      this.set((manager().lastApply?.ms ?? 0) / 1000);
    },
  });
  // The datapath's counters are counters (they only grow, until `bastion down`): each is
  // read whole at scrape time and given to prom-client as the counter's value.
  new PromCounter({
    name: 'bastion_datapath_packets_total',
    help: 'Packets seen by the datapath, by reason (verdict=drop for reasons that drop)',
    labelNames: ['reason', 'verdict'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [r, c] of counters()) {
        if (c.packets === 0n || EVENT_COUNTER_REASONS.includes(r)) continue;
        this.inc({ reason: REASON_NAMES[r] ?? String(r), verdict: r >= FIRST_DROP_REASON ? 'drop' : 'pass' }, Number(c.packets));
      }
    },
  });
  new PromCounter({
    name: 'bastion_flow_events_lost_total',
    help: 'Flow events the datapath could not write (ring buffer full: the daemon fell behind)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Number(counters().get(REASON.eventsLost)?.packets ?? 0n));
    },
  });
  new PromCounter({
    name: 'bastion_flow_events_suppressed_total',
    help: 'Flow events held back by the datapath rate limit (counted, reported as a number on the next event of their kind)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Number(counters().get(REASON.eventsSuppressed)?.packets ?? 0n));
    },
  });
  new PromCounter({
    name: 'bastion_flow_summaries_total',
    help: 'Allowed-flow summaries read from the kernel (one per key whose count moved; bpf/lib/summary.h)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(manager().datapath.flowSummaryStats?.summaries ?? 0);
    },
  });
  new Gauge({
    name: 'bastion_flow_summary_keys',
    help: 'Keys (source, destination, protocol, port) the kernel counts allowed flows under, at the last read',
    registers: [registry],
    collect() {
      this.set(manager().datapath.flowSummaryStats?.keys ?? 0);
    },
  });
  // the datapath's conntrack figures, one gauge each, from one read of the
  // charges map per scrape (5,000 endpoints: one batch read, not five)
  const conntrackUsage = oncePerScrape(() => manager().datapath.conntrackUsage?.());
  const conntrackGauges: [string, string, 'eventsPerSec' | 'entries' | 'capacity' | 'perEndpointLimit'][] = [
    ['bastion_flow_events_rate_limit', 'Flow events the datapath reports per second for each (endpoint, verdict, reason); the rest are counted', 'eventsPerSec'],
    ['bastion_conntrack_entries', 'Conntrack entries in use (each charged to the endpoint whose stack opened it)', 'entries'],
    ['bastion_conntrack_capacity', 'Conntrack entries the table can hold', 'capacity'],
    ['bastion_conntrack_endpoint_limit', 'Conntrack entries one endpoint may hold; its new connections beyond are dropped (ct-limit)', 'perEndpointLimit'],
  ];
  for (const [name, help, field] of conntrackGauges)
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const u = conntrackUsage();
        if (u) this.set(u[field]);
      },
    });
  new Gauge({
    name: 'bastion_conntrack_endpoint_entries',
    help: 'Conntrack entries charged to each endpoint',
    labelNames: ['endpoint'],
    registers: [registry],
    collect() {
      this.reset();
      const m = manager();
      const u = conntrackUsage();
      if (!u) return;
      for (const ep of m.endpoints.values()) this.set({ endpoint: ep.name }, u.byIdentity.get(ep.identity) ?? 0);
    },
  });
  const flowsTotal = new PromCounter({
    name: 'bastion_flow_events_total',
    help: 'Flow events read from the datapath',
    labelNames: ['verdict', 'reason'],
    registers: [registry],
  });
  const flowsByVerdict = new PromCounter({
    name: 'bastion_flows_total',
    help: 'Flows by verdict (ALLOWED, DROPPED, AUDIT, ARP_REPLY), reason and traffic direction; an allowed-flow summary counts every flow it stands for',
    labelNames: ['verdict', 'reason', 'direction'],
    registers: [registry],
  });
  /** the policies (rule ids) that have series below: each goes once its rule id is forgotten */
  const verdictPolicies = new Set<string>();
  const policyVerdicts = new PromCounter({
    name: 'bastion_policy_verdicts_total',
    help: 'Policy verdicts on new connections: action allow (by the policy named, on each side that allowed), deny or audit (policy "none": no policy allows it)',
    labelNames: ['policy', 'direction', 'action'],
    registers: [registry],
    collect() {
      // a series per rule id that ever allowed a flow would grow without end
      // where ids come and go (each Kubernetes pod without a policy has its
      // own): a policy's series go once the manager no longer knows its id
      // (neither in force nor in its rule number's quarantine)
      const rules = manager().rules;
      for (const policy of verdictPolicies) {
        if (rules.has(policy)) continue;
        for (const direction of ['egress', 'ingress']) this.remove({ policy, direction, action: 'allow' });
        verdictPolicies.delete(policy);
      }
    },
  });
  flows.on('flow', (r: FlowRecord) => {
    const n = flowCount(r);
    flowsTotal.inc({ verdict: r.verdict, reason: r.reason });
    flowsByVerdict.inc({ verdict: r.verdict, reason: r.reason, direction: r.direction }, n);
    if (r.verdict === 'ALLOWED') {
      for (const side of ['egress', 'ingress'] as const) {
        const p = r.policies[side];
        if (p === undefined) continue;
        policyVerdicts.inc({ policy: p, direction: side, action: 'allow' }, n);
        verdictPolicies.add(p);
      }
    } else if ((r.verdict === 'DROPPED' || r.verdict === 'AUDIT') && POLICY_REASONS.has(r.reason)) {
      policyVerdicts.inc({ policy: 'none', direction: r.direction, action: r.verdict === 'AUDIT' ? 'audit' : 'deny' }, n);
    }
  });
  new PromCounter({
    name: 'bastion_drops_total',
    help: 'Packets the datapath dropped, by reason (every packet, also those whose flow events the rate limit held back)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [r, c] of counters()) {
        if (r < FIRST_DROP_REASON || c.packets === 0n) continue;
        this.inc({ reason: REASON_NAMES[r] ?? String(r) }, Number(c.packets));
      }
    },
  });
  if (health.modes) {
    const modes = health.modes;
    new Gauge({
      name: 'bastion_endpoint_mode',
      help: 'The mode of each protected container (1 for its current mode) and where it comes from: config, runtime (bastion mode), default (the host\'s mode)',
      labelNames: ['endpoint', 'mode', 'source'],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of modes().containers) this.set({ endpoint: c.name, mode: c.mode, source: c.source }, 1);
      },
    });
    new Gauge({
      name: 'bastion_endpoints_by_mode',
      help: 'Protected containers in each mode (audit: what they would drop is let through and reported as AUDIT)',
      labelNames: ['mode'],
      registers: [registry],
      collect() {
        const n = { enforce: 0, audit: 0 };
        for (const c of modes().containers) n[c.mode]++;
        this.set({ mode: 'enforce' }, n.enforce);
        this.set({ mode: 'audit' }, n.audit);
      },
    });
  }
  if (health.history) {
    const h = health.history;
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(value());
        },
      });
    const counter = (name: string, help: string, value: () => number) =>
      new PromCounter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(value());
        },
      });
    gauge('bastion_flow_history_bytes', 'Bytes the flow history holds on disk', () => h.bytes);
    gauge('bastion_flow_history_max_bytes', 'The flow history\'s size cap (the oldest segments are deleted to stay under it)', () => h.maxBytes);
    gauge('bastion_flow_history_files', 'Segment files of the flow history', () => h.files);
    gauge('bastion_flow_history_oldest_timestamp_seconds', 'Time of the oldest flow the history holds (0: none)', () => (h.oldestMs ?? 0) / 1000);
    counter('bastion_flow_history_records_written_total', 'Flow records written to the history', () => h.written);
    counter('bastion_flow_history_records_dropped_total', 'Flow records not written to the history (the disk did not keep up)', () => h.dropped);
    counter('bastion_flow_history_segments_deleted_total', 'History segments deleted to stay under the size cap', () => h.rotatedOut);
    counter('bastion_flow_history_errors_total', 'Flow history problems (write or compression failures, damaged lines)', () => h.errors);
  }
  new Gauge({
    name: 'bastion_flow_followers',
    help: 'Clients following the live flows (/v1/flows?follow=1, bastion flows -f, the web UI)',
    registers: [registry],
    collect() {
      this.set(followers.followers);
    },
  });
  new PromCounter({
    name: 'bastion_flow_follower_records_skipped_total',
    help: 'Flow records not sent to a follower that fell behind (its buffer was full); it is told how many with a "lost" line',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(followers.skipped);
    },
  });
  new PromCounter({
    name: 'bastion_flow_followers_dropped_total',
    help: 'Followers disconnected because they stayed stalled (took nothing for 10 s while missing records)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(followers.dropped);
    },
  });
  new Gauge({
    name: 'bastion_runtime_policies',
    help: 'Runtime policies (bastion policy add) in force',
    registers: [registry],
    collect() {
      this.set(health.runtimePolicies().count);
    },
  });
  new Gauge({
    name: 'bastion_runtime_policies_unreadable_files',
    help: 'Saved runtime-policy files that could not be read: their policies are NOT enforced (moved aside until someone removes them)',
    registers: [registry],
    collect() {
      this.set(health.runtimePolicies().unreadable.length);
    },
  });
  new PromCounter({
    name: 'bastion_runtime_policies_save_failures_total',
    help: 'Saves of the runtime policies that failed (a restart would lose what was not saved)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(health.runtimePolicies().saveFailures);
    },
  });
  new Gauge({
    name: 'bastion_config_change_pending',
    help: '1 while a change of the config file waits to be complete (its writer has not closed it, or its last line has no newline yet)',
    registers: [registry],
    collect() {
      this.set(health.config().pending ? 1 : 0);
    },
  });
  new PromCounter({
    name: 'bastion_config_containers_removed_total',
    help: 'Containers that config reloads took out of protection (each is also logged by name)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(health.config().containersRemoved);
    },
  });
  // Protection that lapses is loud: these say when the maps or the stacks are not what the daemon wants.
  new Gauge({
    name: 'bastion_reconciler_dirty',
    help: '1 while a map write has failed and a resync has not yet brought the maps back to what the daemon wants',
    registers: [registry],
    collect() {
      this.set(manager().health().dirty ? 1 : 0);
    },
  });
  new Gauge({
    name: 'bastion_reconciler_resyncing',
    help: '1 while a resync (read back, compare, repair) is scheduled or running after a failed write',
    registers: [registry],
    collect() {
      this.set(manager().health().resyncing ? 1 : 0);
    },
  });
  new PromCounter({
    name: 'bastion_reconciler_failed_writes_total',
    help: 'Map writes that failed (each makes the state dirty until a resync repairs it)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(manager().health().failedWrites);
    },
  });
  new PromCounter({
    name: 'bastion_drift_repairs_total',
    help: 'Differences between what the daemon wants and what the kernel holds, repaired (map or "stack"; kind missing, extra, changed, reattached, rediscovered)',
    labelNames: ['map', 'kind'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [map, kinds] of Object.entries(manager().health().repairs)) for (const [kind, n] of Object.entries(kinds)) this.inc({ map, kind }, n);
    },
  });
  new Gauge({
    name: 'bastion_drift_check_seconds',
    help: 'Time the last drift check (maps and stacks read back) took',
    registers: [registry],
    collect() {
      this.set((lastCheck()?.ms ?? 0) / 1000);
    },
  });
  new Gauge({
    name: 'bastion_stacks_not_in_place',
    help: 'Protected containers without this daemon\'s stack after the last drift check (another instance\'s stack, or an interface gone and not found again), and containers left to another instance',
    registers: [registry],
    collect() {
      const s = lastCheck()?.stacks;
      this.set((s ? s.foreign.length + s.lost.length : 0) + (s ? 0 : manager().health().blocked));
    },
  });
  return { registry };
}
