/** Prometheus metrics, read from the manager and the datapath counters at scrape time. */
import { Counter as PromCounter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { EVENT_COUNTER_REASONS, FIRST_DROP_REASON, REASON, REASON_NAMES, type Counter } from '../datapath/layout.js';
import type { Manager } from '../manager/manager.js';
import type { FlowStore, FlowRecord } from '../agent/flow-log.js';
import type { FlowStreamStats } from '../api/flow-stream.js';
import type { RuntimePoliciesStatus } from '../api/types.js';

/** What the daemon reports about itself besides the manager and the datapath. */
export interface DaemonHealth {
  runtimePolicies(): RuntimePoliciesStatus & { saveFailures: number };
  config(): { pending: boolean; containersRemoved: number };
}

export function createMetrics(manager: () => Manager, counters: () => Map<number, Counter>, flows: FlowStore, followers: FlowStreamStats, health: DaemonHealth) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bastion_daemon_' });

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
  new Gauge({
    name: 'bastion_datapath_packets',
    help: 'Packets seen by the datapath, by reason (verdict=drop for reasons that drop)',
    labelNames: ['reason', 'verdict'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [r, c] of counters()) {
        if (c.packets === 0n || EVENT_COUNTER_REASONS.includes(r)) continue;
        this.set({ reason: REASON_NAMES[r] ?? String(r), verdict: r >= FIRST_DROP_REASON ? 'drop' : 'pass' }, Number(c.packets));
      }
    },
  });
  new Gauge({
    name: 'bastion_flow_events_lost',
    help: 'Flow events the datapath could not write (ring buffer full: the daemon fell behind)',
    registers: [registry],
    collect() {
      this.set(Number(counters().get(REASON.eventsLost)?.packets ?? 0n));
    },
  });
  new Gauge({
    name: 'bastion_flow_events_suppressed',
    help: 'Flow events held back by the datapath rate limit (counted, reported as a number on the next event of their kind)',
    registers: [registry],
    collect() {
      this.set(Number(counters().get(REASON.eventsSuppressed)?.packets ?? 0n));
    },
  });
  // the datapath's conntrack figures, one gauge each
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
        const u = manager().datapath.conntrackUsage?.();
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
      const u = m.datapath.conntrackUsage?.();
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
  flows.on('flow', (r: FlowRecord) => flowsTotal.inc({ verdict: r.verdict, reason: r.reason }));
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
  return { registry };
}
