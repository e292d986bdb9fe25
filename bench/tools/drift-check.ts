/**
 * What a drift check costs at scale, on real kernel maps: the benchmark's
 * config for N containers (bench/lib/bastion.ts) loaded by the real config
 * loader and manager into the pinned maps of a datapath of its own (a
 * unique pin path, removed afterwards). No veths: stacks are taken as in
 * place, so this times the map part of a check (read back in batches,
 * digests compared) and a repair.
 *
 *   node --expose-gc --max-semi-space-size=2 dist/bench/tools/drift-check.js [N=5000] [checks=5]
 *
 * (2 MB semi-spaces, as bin/bastion runs the daemon: with the default, a
 * young-generation collection during a check held the event loop 40 ms.)
 *
 * Needs root (bpffs). The benchmark suite measures the real daemon; this is
 * for the cost of Manager.verify alone.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { renderConfig } from '../lib/bastion.js';
import { fillerDeps, pairDeps } from '../lib/deps.js';
import type { Entry } from '../lib/topology.js';
import { loadConfigSource } from '../../src/daemon/config-source.js';
import { Manager } from '../../src/manager/manager.js';
import { FAKE_HOST_ADDRESS, fakeDatapath, fakeNode } from '../lib/fake-ports.js';
import { openDatapath } from '../../src/agent/datapath-agent.js';
import { removePinDir } from '../../src/datapath/bpffs.js';
import { MAP_NAMES } from '../../src/datapath/layout.js';
import { percentile } from '../lib/stats.js';

const n = Number(process.argv[2] ?? 5000);
const checks = Number(process.argv[3] ?? 5);
const pinPath = `/sys/fs/bpf/bastion-drift-${randomBytes(3).toString('hex')}`;

const entries: Entry[] = Array.from({ length: n }, (_, i) => {
  const name = i === 0 ? 'client' : i === 1 ? 'server' : `c${i}`;
  return { index: i, name, netns: `ns-${i}`, ifname: 'eth0', hostIf: `v${i}`, ip: '', prefixLen: 16, bridge: 'br0', labels: { app: name } };
});
mkdirSync('/run/bastion', { recursive: true });
const dir = mkdtempSync('/run/bastion/drift-');
const cfgPath = join(dir, 'bastion.yaml');
writeFileSync(cfgPath, renderConfig(entries, pairDeps(), fillerDeps(n)));

const agent = await openDatapath(pinPath);
try {
  // the real maps; no interfaces to attach to
  const datapath = fakeDatapath({ apply: (ops) => agent.apply(ops), readMap: (map) => agent.readMap(map) });
  const node = fakeNode(entries);
  const loaded = await loadConfigSource(cfgPath, { containersRequired: true });
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
  const manager = new Manager({ datapath, node, log: pino({ level: 'warn' }) });
  let t = performance.now();
  await manager.setHostAddresses([FAKE_HOST_ADDRESS]);
  await manager.setPolicy(loaded.policy);
  const found = await Promise.all(loaded.containers.map(async (spec) => ({ spec, known: await node.discover(spec) })));
  await manager.upsertEndpoints(found);
  console.log(`${n} containers: ${JSON.stringify(manager.entryCounts())} written in ${(performance.now() - t).toFixed(0)} ms`);

  const times: number[] = [];
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  for (let i = 0; i < checks; i++) {
    t = performance.now();
    const cpu0 = process.cpuUsage();
    const r = await manager.verify('periodic');
    const cpu = process.cpuUsage(cpu0);
    times.push(performance.now() - t);
    console.log(`check ${i}: ${times[i]!.toFixed(0)} ms wall, ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms CPU, clean ${r.clean}, repaired ${r.maps.repaired}`);
  }
  loop.disable();
  console.log(`drift check (maps in sync) x${checks}: p50 ${percentile(times, 50).toFixed(0)} ms, max ${Math.max(...times).toFixed(0)} ms; event loop held at most ${(loop.max / 1e6).toFixed(1)} ms (p99 ${(loop.percentile(99) / 1e6).toFixed(1)} ms)`);

  // the longest the update queue waits on a check: updates while checks run (after one to warm the path up, as the daemon does)
  await manager.changeRules([{ id: 'warm-up', subject: { matchLabels: { app: 'client' } }, direction: 'egress', peers: [], ports: [] }], []);
  const waits: number[] = [];
  const running = manager.verify('periodic');
  for (let i = 0; i < 40; i++) {
    t = performance.now();
    await manager.changeRules([{ id: `probe-${i}`, subject: { matchLabels: { app: 'client' } }, direction: 'egress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'server' } } }], ports: [{ protocol: 'tcp', from: 30000 + i, to: 30000 + i }] }], []);
    waits.push(performance.now() - t);
  }
  await running;
  console.log(`runtime policy add while a check runs x40: p50 ${percentile(waits, 50).toFixed(2)} ms, max ${Math.max(...waits).toFixed(2)} ms`);

  // drift: one policy entry deleted, one endpoint entry rewritten, one neighbour entry added
  const maps = agent.maps;
  const [pk] = [...maps.all[MAP_NAMES.policy]!.keys()].slice(0, 1);
  maps.all[MAP_NAMES.policy]!.delete(pk!);
  t = performance.now();
  const r = await manager.verify('request');
  console.log(`drift check with one policy entry missing: ${(performance.now() - t).toFixed(0)} ms, repaired ${r.maps.repaired} (${JSON.stringify(r.maps.maps[MAP_NAMES.policy])})`);
  manager.close();
} finally {
  agent.close();
  removePinDir(pinPath);
  rmSync(dir, { recursive: true, force: true });
}
