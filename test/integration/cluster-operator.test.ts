/**
 * The cluster run by a careless operator (and an attacker with a node's
 * credential): two daemons claiming one --node, a node started with another
 * node's certificate, a node started on the wrong underlay interface, and a
 * node's record overwritten by somebody else. Each mistake is loud: the
 * daemon refuses to start (exit 1, saying what to fix), or it runs and says
 * so in its log, its status (ok: false, a problem, a non-zero exit) and a
 * metric; and nothing it did took another node's containers off the cluster.
 */
import { after, before, describe, it } from 'node:test';
import { existsSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { flowHistoryDirFor, pidFileFor } from '../../src/api/paths.js';
import { readPidFile } from '../../src/daemon/instance.js';
import assert from 'node:assert/strict';
import { TestCluster, type ClusterContainer } from '../helpers/cluster.js';
import { addOtherToolFilter, run } from '../helpers/netns.js';
import { bastionMetrics, uniquePinPath } from '../helpers/bastion-daemon.js';
import { startTcpEcho, tcpConnectQuick, waitFor } from '../helpers/probes.js';
import { nodeKey, type NodeRecord } from '../../src/cluster/keys.js';

describe('a careless operator', () => {
  let k: TestCluster;
  let web: ClusterContainer, api: ClusterContainer;
  const reaches = () => waitFor(async () => (await tcpConnectQuick(web.netns, api.ip, 8080, 400)).ok, 15_000, 200);
  const metric = async (host: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await bastionMetrics(k.host(host).pin))?.[1]);
  /** did the last runOn leave its state directory (the flow history) behind? */
  let leftState = false;
  /** `bastion run` on a host (c unless named) with these cluster flags and that host's config, in the foreground: it must exit by itself */
  const runOnC = (flags: string[], node: string) => runOn('c', flags, node);
  const runOn = async (host: string, flags: string[], node: string) => {
    const c = k.host(host);
    const pin = uniquePinPath();
    try {
      return await k.bastionOn(host, ['run', '--config', c.configPath, '--pin-path', pin, ...flags, '--node', node, '--underlay', 'ul0', '--lease-ttl', '4', '--tunnel-device', 'bvx0'], 45_000);
    } finally {
      await k.bastionOn('c', ['down', '--pin-path', pin]).catch(() => undefined);
      rmSync(pin, { recursive: true, force: true });
      leftState = existsSync(dirname(flowHistoryDirFor(pin)));
      rmSync(dirname(flowHistoryDirFor(pin)), { recursive: true, force: true });
    }
  };

  before(async () => {
    k = await TestCluster.create({ hosts: { a: [{ name: 'web' }], b: [{ name: 'api' }], c: [{ name: 'spare' }] } });
    [web, api] = [k.container('web'), k.container('api')];
    await k.start('a');
    await k.start('b');
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    await startTcpEcho(api.netns, api.ip, 8080);
    assert.ok(await reaches(), 'web -> api');
  });
  after(async () => {
    await k?.destroy();
  });

  it("a second daemon with a's --node (and a's certificate) on another host is refused: exit 1, naming the other's underlay; a keeps its containers", async () => {
    const t0 = Date.now();
    const r = await runOnC(k.etcd.flags('node-a'), 'a');
    assert.equal(r.code, 1, `exit ${r.code} after ${Date.now() - t0} ms: ${r.stderr.slice(-1500)}`);
    assert.match(r.stderr, new RegExp(`node name a is in use by another daemon: its record says underlay ${k.host('a').ip.replace(/\./g, '\\.')}`));
    assert.equal(leftState, false, 'a refused daemon leaves no flow history directory');
    const s = await k.status('b');
    assert.deepEqual((s.cluster.peers as Array<{ name: string }>).map((p) => p.name), ['a/web'], "a's web is still in b's maps");
    assert.equal((await k.status('a')).ok, true);
    assert.ok(await reaches(), 'web -> api');
  });

  it("a second daemon with a's --node on a's own host, while a's runs, is refused: exit 1, naming its pid (failed before: taken for a restart)", async () => {
    const pid = readPidFile(pidFileFor(k.host('a').pin))!.pid;
    const r = await runOn('a', k.etcd.flags('node-a'), 'a');
    assert.equal(r.code, 1, r.stderr.slice(-1500));
    assert.match(r.stderr, new RegExp(`node name a is in use by another daemon on this host: pid ${pid}`));
    assert.equal(leftState, false);
    const s = await k.status('b');
    assert.deepEqual((s.cluster.peers as Array<{ name: string }>).map((p) => p.name), ['a/web'], "a's web is still in b's maps");
    assert.equal((await k.status('a')).ok, true);
    assert.ok(await reaches(), 'web -> api');
  });

  it("a node started with another node's certificate is refused before it writes anything: exit 1, saying whose certificate to use", async () => {
    const r = await runOnC(k.etcd.flags('node-a'), 'c');
    assert.equal(r.code, 1, r.stderr.slice(-1500));
    assert.match(r.stderr, /may not write node c's keys .*node-c\.pem/);
    const root = k.etcd.client('root');
    assert.equal((await root.getAll().prefix('/bastion/endpoints/c/').keys()).length, 0, 'c has endpoints in the store');
    assert.equal(await root.get(nodeKey('c')).string(), null, 'c has a node record');
  });

  it("a's record written by somebody else (another daemon's lease): a says so (log, status, metric); that lease gone, a writes its record again", async () => {
    const d = k.host('a').daemon!;
    const mark = d.mark();
    const root = k.etcd.client('root');
    const lease = root.lease(30);
    const real = JSON.parse((await root.get(nodeKey('a')).string())!) as NodeRecord;
    await lease.put(nodeKey('a')).value(JSON.stringify({ ...real, underlay: `${k.underlay.base}.77`, startedAt: new Date().toISOString() }));
    assert.ok(await d.waitForRecord((r) => /another daemon publishes node a's record/.test(r.msg), 10_000, mark), 'a did not say it');
    const s = await k.bastionOn('a', ['status', '--json', '--pin-path', k.host('a').pin]);
    assert.notEqual(s.code, 0, 'status exits 0');
    const st = JSON.parse(s.stdout);
    assert.equal(st.ok, false);
    assert.ok((st.problems as string[]).some((p) => /another daemon publishes node a's record/.test(p)), JSON.stringify(st.problems));
    assert.equal(await metric('a', 'bastion_cluster_node_conflict'), 1);
    await lease.revoke();
    assert.ok(await waitFor(async () => (JSON.parse((await root.get(nodeKey('a')).string()) ?? 'null') as NodeRecord | null)?.underlay === k.host('a').ip, 10_000, 200), "a did not write its record again");
    assert.ok(await waitFor(async () => (await k.status('a')).ok === true, 10_000, 200), 'a not ok again');
    assert.equal(await metric('a', 'bastion_cluster_node_conflict'), 0);
    assert.ok(await reaches(), 'web -> api again');
  });

  it('a node started on the wrong underlay interface says which nodes it cannot reach through it, and so do the others about it', async () => {
    const c = k.host('c');
    await run('ip', ['-n', c.netns, 'link', 'add', 'wrong0', 'type', 'veth', 'peer', 'name', 'wrong1']); // (no dummy module in this kernel)
    await run('ip', ['-n', c.netns, 'addr', 'add', '172.31.250.1/24', 'dev', 'wrong0']);
    await run('ip', ['-n', c.netns, 'link', 'set', 'wrong0', 'up']);
    const d = await k.start('c', ['--underlay', 'wrong0']);
    const s = await k.bastionOn('c', ['status', '--json', '--pin-path', c.pin]);
    assert.notEqual(s.code, 0, 'status on c exits 0');
    const problems = JSON.parse(s.stdout).problems as string[];
    assert.ok(problems.some((p) => new RegExp(`node a's underlay address ${k.host('a').ip.replace(/\./g, '\\.')} is reached through ul0, not the underlay wrong0`).test(p)), JSON.stringify(problems));
    assert.equal(await metric('c', 'bastion_cluster_misrouted_nodes'), 2);
    assert.ok(d.records.some((r) => r.level >= 50 && /is reached through ul0, not the underlay wrong0/.test(r.msg)), 'no error logged on c');
    // the others cannot reach c's published address at all
    assert.ok(await waitFor(async () => ((await k.status('a')).problems as string[]).some((p) => /node c's underlay address 172\.31\.250\.1 is (unreachable|reached through)/.test(p)), 10_000, 200), 'a says nothing about c');
    assert.equal(await metric('a', 'bastion_cluster_misrouted_nodes'), 1);
    // c leaves: the others' problem goes with it
    const filters = () => run('ip', ['netns', 'exec', c.netns, 'tc', 'filter', 'show', 'dev', 'wrong0', 'ingress']).then((r) => r.stdout);
    assert.match(await filters(), /from_underlay/, "c's from_underlay is on its underlay");
    await d.stop();
    assert.match(await filters(), /from_underlay/, 'a stopped daemon leaves it (enforcement holds)');
    const down = await k.bastionOn('c', ['down', '--pin-path', c.pin]);
    assert.equal(down.code, 0, down.stderr);
    assert.doesNotMatch(await filters(), /from_underlay/, '`down` takes it off the host\'s interface');
    assert.ok(await waitFor(async () => (await k.status('a')).ok === true, 15_000, 200), 'a not ok after c left');
    await run('ip', ['-n', c.netns, 'link', 'del', 'wrong0']);
  });

  it("another tool's filter in Bastion's tc slot on the underlay is left alone: said in the log and status, metric 0; other nodes' packets take the device, checked as before", async () => {
    const c = k.host('c');
    const spare = k.container('spare');
    addOtherToolFilter('ul0', c.netns);
    const filters = () => run('ip', ['netns', 'exec', c.netns, 'tc', 'filter', 'show', 'dev', 'ul0', 'ingress']).then((r) => r.stdout);
    const d = await k.start('c');
    try {
      await k.policyAdd('web-to-spare', 'app=web', 'app=spare', ['7070/tcp']);
      await startTcpEcho(spare.netns, spare.ip, 7070);
      assert.ok(await waitFor(async () => (await tcpConnectQuick(web.netns, spare.ip, 7070, 400)).ok, 15_000, 200), 'web -> spare (a -> c) through the device');
      const s = await k.status('c');
      assert.equal(s.ok, true, JSON.stringify(s.problems));
      assert.equal(s.cluster.underlay.programAttached, false);
      assert.match(s.cluster.underlay.whyNotAttached, /another tool's filter/);
      assert.equal(await metric('c', 'bastion_cluster_underlay_program_attached'), 0);
      assert.ok(d.records.some((r) => r.level === 40 && /from_underlay not attached/.test(r.msg)), 'no warning logged on c');
      assert.match(await filters(), /other_tool/, "the other tool's filter stays");
      assert.doesNotMatch(await filters(), /from_underlay/);
      // still only what the policy allows
      assert.equal((await tcpConnectQuick(web.netns, spare.ip, 7071, 400)).ok, false, 'web -> spare:7071');
    } finally {
      await d.stop();
      await k.bastionOn('c', ['down', '--pin-path', c.pin]).catch(() => undefined);
      await k.policyDelete('web-to-spare').catch(() => undefined);
    }
    assert.match(await filters(), /other_tool/, "c's down leaves the other tool's filter");
  });
});
