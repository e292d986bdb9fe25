/**
 * Where the daemon's memory and update time go at scale, without the kernel:
 * the benchmark's own config for N containers (bench/lib/bastion.ts), loaded
 * and compiled by the real config loader and manager, with a datapath that
 * only counts writes and a node that makes up addresses. It prints the V8
 * heap (after a full GC) and RSS at each stage of start-up, then times
 * runtime-policy additions the way `POST /v1/policies` applies them.
 *
 *   node --expose-gc dist/bench/tools/daemon-heap.js [N=5000] [updates=50]
 *
 * The benchmark suite measures the real daemon; this is for finding out why.
 *
 * RELEASE=inspector|gc|none (default inspector) ends the run with what the
 * daemon does after start-up to give memory back (src/daemon/memory.ts:
 * V8's low-memory collection through the inspector, then malloc_trim, again
 * two seconds later), a plain full collection and malloc_trim instead, or
 * nothing, and prints the resident size then: what each is worth (with
 * STAGE_GC=0, so that no collection of this tool's own runs before).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import inspector from 'node:inspector';
import v8 from 'node:v8';
import pino from 'pino';
import { renderConfig } from '../lib/bastion.js';
import { fillerDeps, pairDeps, probeDep } from '../lib/deps.js';
import type { Entry } from '../lib/topology.js';
import { loadConfigSource } from '../../src/daemon/config-source.js';
import { Manager } from '../../src/manager/manager.js';
import type { Discovered } from '../../src/manager/ports.js';
import { FAKE_HOST_ADDRESS, fakeDatapath, fakeNode } from '../lib/fake-ports.js';
import { RuntimePolicies, parsePoliciesDocument } from '../../src/daemon/runtime-policies.js';
import { percentile } from '../lib/stats.js';
import { releaseMemory } from '../../src/daemon/memory.js';
import koffi from 'koffi';

const n = Number(process.argv[2] ?? 5000);
const updates = Number(process.argv[3] ?? 50);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

/** STAGE_GC=0: no full collection at each stage (as in the daemon), to measure RELEASE alone */
const stageGc = process.env.STAGE_GC !== '0';

function mem(stage: string, t0?: number): void {
  if (stageGc) {
    gc!();
    gc!();
  }
  const m = process.memoryUsage();
  const mb = (b: number) => (b / 1048576).toFixed(1).padStart(7);
  const ms = t0 === undefined ? '' : `${(performance.now() - t0).toFixed(0).padStart(6)} ms`;
  console.log(`${stage.padEnd(34)} heapUsed ${mb(m.heapUsed)} MB  heapTotal ${mb(m.heapTotal)} MB  rss ${mb(m.rss)} MB  external ${mb(m.external + m.arrayBuffers)} MB ${ms}`);
}

const entries: Entry[] = Array.from({ length: n }, (_, i) => {
  const name = i === 0 ? 'client' : i === 1 ? 'server' : `c${i}`;
  return { index: i, name, netns: `ns-${i}`, ifname: 'eth0', hostIf: `v${i}`, ip: '', prefixLen: 16, bridge: 'br0', labels: { app: name } };
});
// under /run (tmpfs), where the daemon keeps its runtime policies
mkdirSync('/run/bastion', { recursive: true });
const dir = mkdtempSync('/run/bastion/heap-');
// removed however the tool ends (an error included)
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const cfgPath = join(dir, 'bastion.yaml');
writeFileSync(cfgPath, renderConfig(entries, pairDeps(), fillerDeps(n)));

let writes = 0;
const datapath = fakeDatapath({
  apply(ops) {
    writes += ops.length;
  },
});
const node = fakeNode(entries);

mem('baseline');
let t = performance.now();
const loaded = await loadConfigSource(cfgPath, { containersRequired: true });
// The worker's message is held by the native scope that delivered it until
// the event loop turns; the daemon turns it (discovery waits on I/O), this
// tool would not, and would count the structured clone twice.
await new Promise((r) => setImmediate(r));
if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
mem(`config loaded (${loaded.policy.rules.length} rules)`, t);
t = performance.now();
const found = new Map<string, Discovered>();
for (const c of loaded.containers) found.set(c.key, await node.discover(c));
const manager = new Manager({ datapath, node, log: pino({ level: 'warn' }) });
await manager.setHostAddresses([FAKE_HOST_ADDRESS]);
await manager.setPolicy(loaded.policy);
mem('policy set', t);
t = performance.now();
await manager.upsertEndpoints(loaded.containers.map((spec) => ({ spec, known: found.get(spec.key)! })));
mem(`endpoints placed (${writes} writes)`, t);
found.clear();
// the daemon keeps the config without its rule list (ConfigReloader's withoutRules)
loaded.policy = { mode: loaded.policy.mode, rules: [] };
mem('discovery results, rule list dropped');
if (process.env.HEAP_SNAPSHOT) console.log(`heap snapshot: ${v8.writeHeapSnapshot(process.env.HEAP_SNAPSHOT)}`);

// PROFILE_UPDATES=FILE: a CPU profile of the update series alone
const session = process.env.PROFILE_UPDATES ? new inspector.Session() : undefined;
const post = (m: string, p?: object) => new Promise<any>((res, rej) => session!.post(m, p ?? {}, (e, r) => (e ? rej(e) : res(r))));
if (session) {
  session.connect();
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 100 });
  await post('Profiler.start');
}
const runtime = new RuntimePolicies(join(dir, 'policies.json'));
const times: number[] = [];
const ops: number[] = [];
// minor page faults per update: 12 µs each on the development VM (docs/benchmarks.md)
const faults: number[] = [];
const parts: unknown[] = [];
for (let i = 0; i < updates; i++) {
  // the benchmark's added dependencies (client -> server, a new port each)
  const d = i < 100 ? probeDep(i) : { name: `added-${i}`, port: 20000 + i, proto: 'tcp' };
  const body = JSON.stringify({ policies: [{ name: d.name, from: entries[0]!.labels, to: entries[1]!.labels, ports: [`${d.port}/${d.proto}`] }] });
  const f0 = process.resourceUsage().minorPageFault;
  const t1 = performance.now();
  const parsed = parsePoliciesDocument(body, 'POST /v1/policies');
  if (!parsed.ok) throw new Error(parsed.errors.join('\n'));
  const { added, removed } = runtime.set(parsed.policies);
  const s = await manager.changeRules(added, removed);
  await runtime.save();
  times.push(performance.now() - t1);
  faults.push(process.resourceUsage().minorPageFault - f0);
  ops.push(s.ops);
  parts.push(s.parts);
}
if (parts.length) {
  // the manager's own parts (queue, compile, commit), without the parse and the runtime file's save
  const of = (k: string) => parts.map((p) => (p as Record<string, number> | undefined)?.[k] ?? 0);
  const show = (k: string) => `${k} ${percentile(of(k), 50).toFixed(3)}/${percentile(of(k), 99).toFixed(3)}`;
  console.log(`manager's parts p50/p99 (ms): ${['queued', 'compile', 'commit'].map(show).join(', ')}`);
}
if (times.length) console.log(`first update ${times[0]!.toFixed(2)} ms; runtime policy add x${updates}: p50 ${percentile(times, 50).toFixed(2)} ms, p99 ${percentile(times, 99).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms, ops/update ${percentile(ops, 50)}; minor page faults per update p50 ${Math.round(percentile(faults, 50))}, p99 ${Math.round(percentile(faults, 99))}, total ${faults.reduce((a, b) => a + b, 0)}`);
// SHOW_SLOW=N: the N slowest updates, with their page faults and the manager's parts
if (process.env.SHOW_SLOW) for (const i of times.map((_, i) => i).sort((a, b) => times[b]! - times[a]!).slice(0, +process.env.SHOW_SLOW)) console.log(`slow update ${i}: ${times[i]!.toFixed(2)} ms, ${faults[i]} minor faults`, parts[i]);
if (session) {
  const { profile } = await post('Profiler.stop');
  writeFileSync(process.env.PROFILE_UPDATES!, JSON.stringify(profile));
}
mem('after updates');

// what the daemon's memory release is worth: RSS after it, without --expose-gc's collections in between
const release = process.env.RELEASE ?? 'inspector';
const before = process.memoryUsage.rss();
if (release === 'inspector') await releaseMemory();
else if (release === 'gc') {
  gc!();
  (koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as (pad: number) => number)(0);
}
await new Promise((r) => setTimeout(r, 2500)); // the daemon's late trim
const after = process.memoryUsage();
console.log(`release ${release.padEnd(25)} rss ${(before / 1048576).toFixed(1)} -> ${(after.rss / 1048576).toFixed(1)} MB  heapTotal ${(after.heapTotal / 1048576).toFixed(1)} MB`);
