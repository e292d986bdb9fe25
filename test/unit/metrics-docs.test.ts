/**
 * docs/metrics.md and docs/grafana-dashboard.json stay true to the code:
 * the metrics the daemon's registry exposes are exactly those the page
 * lists, and every metric the dashboard queries exists.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMetrics } from '../../src/daemon/metrics.js';
import { FlowStore } from '../../src/agent/flow-log.js';
import { recordingManager } from '../helpers/recording-datapath.js';
import { RuleNumbers } from '../../src/manager/identity.js';
import type { FlowRecord } from '../../src/agent/flow-log.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** A cluster node's registry: the single-host metrics and the cluster's (docs/cluster.md). */
async function exposed(): Promise<Set<string>> {
  const { manager } = recordingManager();
  const history = { bytes: 0, files: 1, written: 0, dropped: 0, rotatedOut: 0, errors: 0, maxBytes: 1 << 20 };
  const m = createMetrics(() => manager, () => new Map(), new FlowStore(4), { followers: 0, skipped: 0, dropped: 0 }, {
    runtimePolicies: () => ({ count: 0, unreadable: [], saveFailures: 0 }),
    config: () => ({ pending: false, containersRemoved: 0 }),
    modes: () => ({ global: 'enforce', containers: [] }),
    history,
  }, undefined, () => ({ connected: true, pendingWrites: 0, remoteEndpoints: 0, refused: 0, tampering: 0, tunnelAttached: true, underlayAttached: true, tunnelRepairs: 0, nodeConflict: false, misroutedNodes: 0 }));
  const text = await m.registry.metrics();
  return new Set([...text.matchAll(/^# HELP (\S+)/gm)].map((x) => x[1]!).filter((n) => !n.startsWith('bastion_daemon_')));
}

describe('metrics documentation', () => {
  it('docs/metrics.md lists every metric the daemon exposes, and no other', async () => {
    const names = await exposed();
    const doc = readFileSync(join(root, 'docs/metrics.md'), 'utf8');
    const tables = doc.split('## Useful queries')[0]!;
    const listed = new Set([...tables.matchAll(/`(bastion_[a-z_]+)`/g)].map((x) => x[1]!).filter((n) => !n.startsWith('bastion_daemon_')));
    assert.deepEqual([...names].filter((n) => !listed.has(n)).sort(), [], 'exposed but not documented');
    assert.deepEqual([...listed].filter((n) => !names.has(n)).sort(), [], 'documented but not exposed');
  });

  it('the Grafana dashboard queries only metrics that exist, and is valid JSON with unique panel ids', async () => {
    const names = await exposed();
    const dash = JSON.parse(readFileSync(join(root, 'docs/grafana-dashboard.json'), 'utf8')) as { panels: Array<{ id: number; targets?: Array<{ expr: string }> }> };
    const ids = dash.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    const used = new Set(dash.panels.flatMap((p) => (p.targets ?? []).flatMap((t) => [...t.expr.matchAll(/\b(bastion_[a-z_]+)\b/g)].map((x) => x[1]!))));
    assert.ok(used.size >= 15, `the dashboard uses ${used.size} metrics`);
    assert.deepEqual([...used].filter((n) => !names.has(n)).sort(), [], 'queried but not exposed');
  });
});

describe('metrics scrape', () => {
  it("a policy's verdict series go once its rule id is forgotten (pods come and go: the series must not)", async () => {
    const clock = { t: 0 };
    const ruleNumbers = new RuleNumbers(() => clock.t, 1000);
    const { manager } = recordingManager({ ruleNumbers });
    const flows = new FlowStore(4);
    const m = createMetrics(() => manager, () => new Map(), flows, { followers: 0, skipped: 0, dropped: 0 }, {
      runtimePolicies: () => ({ count: 0, unreadable: [], saveFailures: 0 }),
      config: () => ({ pending: false, containersRemoved: 0 }),
    });
    const pod = 'default/web-1#egress:not-isolated';
    const kept = 'web-to-api';
    ruleNumbers.number(pod);
    ruleNumbers.number(kept);
    for (const policy of [pod, kept]) flows.emit('flow', { verdict: 'ALLOWED', reason: 'POLICY', direction: 'egress', policies: { egress: policy } } as unknown as FlowRecord);
    const series = async () => [...(await m.registry.metrics()).matchAll(/^bastion_policy_verdicts_total\{policy="([^"]+)"/gm)].map((x) => x[1]);
    assert.deepEqual((await series()).sort(), [pod, kept].sort());
    ruleNumbers.release(pod);
    assert.deepEqual((await series()).sort(), [pod, kept].sort(), 'in quarantine: still named');
    clock.t = 2000;
    ruleNumbers.number('default/web-2#egress:not-isolated'); // takes the pod's number: the pod's id is forgotten
    assert.deepEqual(await series(), [kept]);
  });

  it('reads the conntrack charges once per scrape for its five gauges, and again at the next scrape', async () => {
    const { manager, datapath } = recordingManager();
    let reads = 0;
    const usage = { entries: 7, capacity: 1024, perEndpointLimit: 64, byIdentity: new Map<number, number>(), collected: 0, eventsPerSec: 100 };
    (datapath as { conntrackUsage?: () => typeof usage }).conntrackUsage = () => (reads++, usage);
    const m = createMetrics(() => manager, () => new Map(), new FlowStore(4), { followers: 0, skipped: 0, dropped: 0 }, {
      runtimePolicies: () => ({ count: 0, unreadable: [], saveFailures: 0 }),
      config: () => ({ pending: false, containersRemoved: 0 }),
    });
    const text = await m.registry.metrics();
    assert.equal(reads, 1);
    assert.match(text, /^bastion_conntrack_entries 7$/m);
    assert.match(text, /^bastion_conntrack_capacity 1024$/m);
    usage.entries = 9;
    await new Promise((r) => setImmediate(r));
    assert.match(await m.registry.metrics(), /^bastion_conntrack_entries 9$/m);
    assert.equal(reads, 2);
  });
});
