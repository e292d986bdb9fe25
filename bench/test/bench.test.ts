/**
 * Unit tests of the benchmark's pure parts: statistics, dependency sets,
 * iptables and Bastion config rendering, sockperf parsing, report shape.
 *   npx tsc -p bench/tsconfig.json && node --test dist/bench/test/
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { ApiConnection, parseResponse } from '../lib/api-connection.js';
import { policyLine, renderConfig } from '../lib/bastion.js';
import { fillerDeps, orderedDeps, pairDeps, probeDep, PROBE_PORTS } from '../lib/deps.js';
import { renderRuleset } from '../lib/iptables.js';
import { updatePhases } from '../lib/scale.js';
import { figures, ratios, renderMarkdown, scaleRatios, targets } from '../lib/report.js';
import type { ScenarioRun } from '../lib/scenarios.js';
import { median, percentile, ratio, summarize } from '../lib/stats.js';
import { Topology, type Entry } from '../lib/topology.js';
import { parseSockperf } from '../lib/tools.js';
import { renderScaleSvg } from '../lib/chart.js';
import { classifySmaps, v8FromMetrics } from '../lib/memory-parts.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

test('percentile interpolates between ranks', () => {
  assert.equal(median([1, 2, 3, 4]), 2.5);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(percentile([1, 2, 3, 4, 5], 0), 1);
  assert.equal(percentile([1, 2, 3, 4, 5], 100), 5);
  const xs = Array.from({ length: 20 }, (_, i) => i + 1);
  assert.ok(percentile(xs, 99) > 19 && percentile(xs, 99) < 20);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('summarize and ratio', () => {
  const s = summarize([3, 1, 2, NaN]);
  assert.deepEqual([s.median, s.min, s.max, s.n], [2, 1, 3, 3]);
  assert.equal(ratio(2, 4), 0.5);
  assert.equal(ratio(2, 0), null);
  assert.equal(ratio(null, 1), null);
});

test('filler dependencies: perEntry each, distinct, never self', () => {
  for (const n of [2, 10, 100, 1000]) {
    const deps = fillerDeps(n, 10);
    assert.equal(deps.length, n * 10);
    const keys = new Set(deps.map((d) => `${d.src}>${d.dst}:${d.port}`));
    assert.equal(keys.size, deps.length);
    assert.ok(deps.every((d) => d.src !== d.dst && d.dst >= 0 && d.dst < n));
  }
});

test('ordered dependencies place the pair where asked', () => {
  const f = fillerDeps(10, 10);
  const p = pairDeps();
  assert.deepEqual(orderedDeps(f, p, 'start').slice(0, 4), p);
  assert.deepEqual(orderedDeps(f, p, 'end').slice(-4), p);
  assert.deepEqual(orderedDeps(f, p, 'middle').slice(50, 54), p);
  assert.throws(() => probeDep(PROBE_PORTS));
});

test('addresses: 1000 entries per bridge, distinct, inside the /16', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const a = Topology.addressOf(123, i);
    assert.ok(!seen.has(a.ip));
    seen.add(a.ip);
    assert.equal(a.bridge, Math.floor(i / 1000));
    const [, , third, fourth] = a.ip.split('.').map(Number);
    assert.equal(Math.floor(third! / 4), a.bridge);
    assert.notEqual(`${third}.${fourth}`, `${a.bridge * 4}.1`); // never the gateway
    assert.ok(!(third! % 4 === 3 && fourth === 255)); // never the broadcast
  }
});

function entries(n: number): Entry[] {
  return Array.from({ length: n }, (_, i) => {
    const name = i === 0 ? 'client' : i === 1 ? 'server' : `c${i}`;
    return { index: i, name, netns: `bbtest${name}`, ifname: 'eth0', hostIf: `bbtestv${i}`, ip: Topology.addressOf(9, i).ip, prefixLen: 22, bridge: 'bbtestb0', labels: { app: name } };
  });
}

test('iptables ruleset: ESTABLISHED first, one ACCEPT per dependency, then DROP', () => {
  const e = entries(10);
  const deps = orderedDeps(fillerDeps(10), pairDeps(), 'middle');
  const text = renderRuleset(deps, (i) => e[i]!.ip);
  const fwd = text.split('\n').filter((l) => l.startsWith('-A FORWARD'));
  assert.match(fwd[0]!, /ESTABLISHED/);
  assert.match(fwd[fwd.length - 1]!, /-j DROP$/);
  assert.equal(text.split('\n').filter((l) => l.startsWith('-A BB-DEPS') && l.endsWith('-j ACCEPT')).length, 104);
  assert.match(text, /-s 10\.9\.0\.2\/32 -d 10\.9\.0\.3\/32 -p udp -m udp --dport 11111 -j ACCEPT/);
});

test('bastion config: the reference shape, and appending a policy line keeps it valid', () => {
  const e = entries(12);
  const text = renderConfig(e, pairDeps(), fillerDeps(12, 10));
  const appended = text + policyLine('added-0', e[0]!, e[1]!, ['9000/tcp']) + '\n';
  const cfg = parse(appended);
  assert.equal(cfg.mode, 'enforce');
  assert.equal(cfg.containers.length, 12);
  assert.deepEqual(cfg.containers[0], { name: 'client', netns: 'bbtestclient', interface: 'eth0', labels: { app: 'client' } });
  assert.deepEqual(cfg.policies[0], { name: 'client-to-server', from: { app: 'client' }, to: { app: 'server' }, ports: ['5201/tcp', '11111/tcp', '11111/udp', '8080/tcp'] });
  assert.equal(cfg.policies.length, 1 + 120 + 1);
  assert.deepEqual(cfg.policies.at(-1), { name: 'added-0', from: { app: 'client' }, to: { app: 'server' }, ports: ['9000/tcp'] });
});

test("bastion config is accepted by the daemon's own parser (when built)", async (t) => {
  const mod = join(repo, 'dist/src/policy/bastion-config.js');
  if (!existsSync(mod)) return t.skip('dist/src/policy/bastion-config.js not built');
  let parser: { parseConfigText: (text: string, file: string, o?: object) => { ok: boolean; errors?: unknown[] } };
  try {
    parser = await import(pathToFileURL(mod).href);
  } catch (err) {
    return t.skip(`cannot load the parser: ${(err as Error).message}`);
  }
  const e = entries(12);
  const r = parser.parseConfigText(renderConfig(e, pairDeps(), fillerDeps(12, 10)), 'bench.yaml', { containersRequired: true });
  assert.equal(r.ok, true, JSON.stringify(r.errors));
});

test('sockperf output parsing', () => {
  const out = `sockperf: [2;35m====> avg-rtt=24.952 (std-dev=15.939)[0m
sockperf: [2;35mTotal 102049 observations[0m; each percentile contains 1020.49 observations
sockperf: ---> <MAX> observation = 4006.691
sockperf: ---> percentile 99.999 = 1332.097
sockperf: ---> percentile 99.000 =   36.919
sockperf: ---> percentile 90.000 =   27.301
sockperf: ---> percentile 50.000 =   23.313
sockperf: ---> <MIN> observation =   18.354`;
  const r = parseSockperf(out);
  assert.deepEqual(r, { p50Us: 23.313, p99Us: 36.919, avgUs: 24.952, observations: 102049 });
  assert.throws(() => parseSockperf('nothing'));
});

function fakeRun(x: number): ScenarioRun {
  return { tcp_gbps_1: x, tcp_gbps_4: 2 * x, rr_p50_us: 10 / x, rr_p99_us: 20 / x, conn_per_s: 1000 * x } as ScenarioRun;
}

test('figures, ratios and targets', () => {
  const bridge = figures([fakeRun(1), fakeRun(2), fakeRun(3)])!;
  assert.equal(bridge.tcp_gbps_1, 2);
  assert.equal(bridge.min.tcp_gbps_1, 1);
  assert.equal(bridge.max.conn_per_s, 3000);
  assert.equal(bridge.reps, 3);
  const bastion = figures([fakeRun(4)])!;
  assert.equal(ratios(bastion, bridge)!.tcp_gbps_1, 2);
  assert.equal(ratios(null, bridge), null);
  const t = targets({ bridge, iptables: bridge, bastion }, []);
  assert.equal(t.find((x) => x.id === 'tcp1_vs_bridge')!.met, true);
  assert.equal(t.find((x) => x.id === 'rr_p50_vs_bridge')!.met, true); // 2.5 / 5
  assert.equal(t.find((x) => x.id === 'rss_5000')!.met, null);
  const none = targets({ bridge, iptables: bridge, bastion: null }, []);
  assert.ok(none.every((x) => x.met === null));
});

test('markdown and chart render without bastion', () => {
  const f = figures([fakeRun(1)]);
  const point = {
    containers: 10,
    rules: 104,
    dependencies: 100,
    namespaces: 10,
    veths: 10,
    bridges: 1,
    build_s: 0.1,
    iptables: { conn_per_s: 100, conn_per_s_min: 90, conn_per_s_max: 110, update_ms_p50: 4, update_ms_p99: 5 },
    bastion: null,
    errors: [],
  } as never;
  const doc = {
    quick: true,
    finished_at: 'now',
    duration_s: 1,
    machine: { cpus: 2, cpu_model: 'x', mem_gb: 1, kernel: 'k', load_avg_start: [0, 0, 0] },
    config: { reps: 1, seconds: 1, rr_proto: 'tcp', rr_msg_size: 64, conn: { req: 64, concurrency: 16, threads: 2 }, deps_per_entry: 10, rule_position: 'middle', scale_reps: 1, scale_seconds: 1, updates: 20 },
    bastion: { available: false, note: 'not built' },
    scenarios: { loopback: f, bridge: f, iptables: f, bastion: null },
    ratios: { bastion_vs_bridge: null, bastion_vs_iptables: null, iptables_vs_bridge: ratios(f, f) },
    scale: [point],
    scale_ratios: scaleRatios([point]),
    targets: targets({ bridge: f, iptables: f, bastion: null }, [point]),
    notes: [],
    errors: [],
  };
  const md = renderMarkdown(doc);
  assert.match(md, /\| new connections per second \| 1,000 \(1,000–1,000\) \|/);
  assert.match(md, /bastion: not measured/);
  assert.match(md, /\| 10 \| 104 \| 10 \| 100 \(90–110\) \| n\/a \|/);
  const svg = renderScaleSvg([point], 'test');
  assert.match(svg, /^<svg/);
  assert.match(svg, /not measured/);
});

test('updatePhases splits each update at the daemon\'s times and skips what cannot be joined', () => {
  const times = [
    { name: 'a', start: 100, sent: 100.5, ok: 104 },
    { name: 'b', start: 200, sent: 200.25, ok: 210 },
    { name: 'c', start: 300, ok: 303 }, // file mode: no request
    { name: 'd', start: 400, sent: 400.5, ok: 403 }, // not in the daemon's log
  ];
  const daemon = new Map([
    ['a', { received: 101.5, written: 103.5 }],
    ['b', { received: 201.25, written: 209 }],
  ]);
  const ph = updatePhases(times, daemon)!;
  assert.equal(ph.samples, 2);
  assert.equal(ph.client.max, 0.5);
  assert.equal(ph.to_daemon.p50, 1);
  assert.equal(ph.daemon.max, 7.75);
  assert.equal(ph.detect.max, 1);
  // from the request in the socket: every update with a request, joined or not (a 3.5, b 9.75, d 2.5)
  assert.equal(ph.sent_to_enforced.p50, 3.5);
  assert.equal(ph.sent_to_enforced.max, 9.75);
  assert.equal(updatePhases([{ name: 'c', start: 1, ok: 2 }], daemon), null);
  // no daemon that logs its CPU wait: no such figure
  assert.equal(ph.daemon_cpu_wait, undefined);
  const waited = updatePhases(times, new Map([['a', { received: 101.5, written: 103.5, runqueue: 0.25 }], ['b', { received: 201.25, written: 209, runqueue: 4 }]]))!;
  assert.equal(waited.daemon_cpu_wait!.max, 4);
  assert.equal(waited.daemon_cpu_wait!.p50, 2.125);
});

test('memory parts: smaps split by kind of mapping, and V8 figures from the metrics text', async () => {
  const smaps = [
    '00400000-00500000 r-xp 00000000 fd:01 123 /usr/bin/node',
    'Rss:                2048 kB',
    '7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6',
    'Rss:                1024 kB',
    '01000000-02000000 rw-p 00000000 00:00 0 [heap]',
    'Rss:                3072 kB',
    '7f1000000000-7f1000800000 r--s 00000000 00:0e 789 anon_inode:bpf-map',
    'Rss:                8192 kB',
    '7f2000000000-7f2004000000 rw-p 00000000 00:00 0 ',
    'Rss:               10240 kB',
    '7ffc00000000-7ffc00100000 rw-p 00000000 00:00 0 [stack]',
    'Rss:                 512 kB',
  ].join('\n');
  assert.deepEqual(classifySmaps(smaps), { node_binary_mb: 2, libraries_mb: 1, malloc_heap_mb: 3, bpf_maps_mb: 8, stacks_mb: 0.5, other_anon_mb: 10 });
  // this very process: the parts add up to its VmRSS at the moment smaps was read, which lies
  // between VmRSS read just before and just after (reading and splitting smaps itself allocates:
  // 2 MB more after than before in one CI run), within a page or two
  const { readFileSync } = await import('node:fs');
  const vmRss = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
  const before = vmRss();
  const parts = classifySmaps(readFileSync('/proc/self/smaps', 'utf8'));
  const after = vmRss();
  const sum = Object.values(parts).reduce((a, b) => a + b, 0);
  assert.ok(sum > Math.min(before, after) - 2 && sum < Math.max(before, after) + 2, `parts ${sum} MB, VmRSS ${before} MB before and ${after} MB after`);
  assert.ok(parts.node_binary_mb > 5, `node binary ${parts.node_binary_mb} MB`);
  const text = [
    'bastion_daemon_nodejs_heap_size_total_bytes 104857600',
    'bastion_daemon_nodejs_heap_size_used_bytes 83886080',
    'bastion_daemon_nodejs_external_memory_bytes 2097152',
    'bastion_daemon_nodejs_heap_space_size_total_bytes{space="old"} 73400320',
    'bastion_daemon_nodejs_heap_space_size_total_bytes{space="new"} 8388608',
  ].join('\n');
  assert.deepEqual(v8FromMetrics(text), { v8_heap_total_mb: 100, v8_heap_used_mb: 80, v8_external_mb: 2, v8_spaces_mb: { old: 70, new: 8 } });
  assert.deepEqual(v8FromMetrics(''), { v8_heap_total_mb: null, v8_heap_used_mb: null, v8_external_mb: null, v8_spaces_mb: {} });
});

test('the update client parses HTTP/1.1 answers with Content-Length or chunked bodies, and waits for the rest', () => {
  const cl = Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello');
  assert.deepEqual(parseResponse(cl), { status: 200, body: Buffer.from('hello'), consumed: cl.length });
  assert.equal(parseResponse(cl.subarray(0, cl.length - 1)), undefined);
  assert.equal(parseResponse(cl.subarray(0, 20)), undefined);
  const chunked = Buffer.from('HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n');
  assert.deepEqual(parseResponse(chunked), { status: 422, body: Buffer.from('abcde'), consumed: chunked.length });
  assert.equal(parseResponse(chunked.subarray(0, chunked.length - 3)), undefined);
  assert.throws(() => parseResponse(Buffer.from('SSH-2.0-x\r\n\r\n')), /not an HTTP response/);
});

test('the update client keeps one connection to a real HTTP server on a Unix socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-api-'));
  const sock = join(dir, 'api.sock');
  const peers = new Set<number>();
  const server = createServer((req, res) => {
    peers.add(req.socket.remotePort ?? peers.size); // one entry per connection object
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      // chunked answer (no Content-Length) for the second request
      if (body.includes('chunk')) res.write('{"a":'), res.end('1}');
      else res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  });
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(sock, r));
  const api = new ApiConnection(sock);
  try {
    const t0 = performance.now();
    const a = await api.request('POST', '/v1/policies', '{"x":1}');
    assert.equal(a.status, 200);
    assert.equal(a.text, '{"x":1}');
    assert.ok(a.sentMs > 0 && Number.isFinite(a.sentMs));
    const b = await api.request('POST', '/v1/policies', '"chunk"');
    assert.equal(b.text, '{"a":1}');
    const c = await api.request('GET', '/metrics');
    assert.equal(c.status, 200);
    assert.equal(connections, 1, 'three requests on one connection');
    assert.ok(performance.now() - t0 < 5000);
  } finally {
    api.close();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});
