/**
 * Bastion across three hosts (namespaces on one underlay, etcd under TLS):
 * each host's daemon runs `bastion run --cluster`, containers come from each
 * host's file, policies from `bastion policy add --cluster`. A dependency on
 * another host works exactly as a local one (ARP answered with its MAC,
 * connections through the tunnel), nothing else does, and a node holds in
 * its maps only the remote endpoints its own containers depend on.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../helpers/cluster.js';
import { run } from '../helpers/netns.js';
import { encodeIpKey } from '../../src/datapath/layout.js';
import { bastionMetrics } from '../helpers/bastion-daemon.js';
import { arping, echoTransfer, ping, startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';

describe('three hosts, one cluster', () => {
  let k: TestCluster;

  before(async () => {
    k = await TestCluster.create({
      hosts: {
        a: [{ name: 'web' }, { name: 'intruder' }],
        b: [{ name: 'api' }, { name: 'other' }],
        c: [{ name: 'db' }],
      },
    });
    await k.startAll();
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp', 'icmp']);
    await k.policyAdd('api-to-db', 'app=api', 'app=db', ['5432/tcp']);
    await startTcpEcho(k.container('api').netns, k.container('api').ip, 8080);
    await startTcpEcho(k.container('db').netns, k.container('db').ip, 5432);
    await startTcpEcho(k.container('api').netns, k.container('api').ip, 9999);
  });
  after(async () => {
    await k?.destroy();
  });

  it('every node is up, knows the others, and has its tunnel in place', async () => {
    for (const h of ['a', 'b', 'c']) {
      // lease figures are looked up when a node joins and every 2 s after (status never waits on the store)
      let s = await k.status(h);
      const healthy = (st: any) => st.cluster?.nodes?.length === 3 && st.cluster.nodes.every((n: { healthy: boolean }) => n.healthy);
      for (let i = 0; i < 20 && !healthy(s); i++) {
        await new Promise((r) => setTimeout(r, 500));
        s = await k.status(h);
      }
      assert.equal(s.ok, true, `${h}: ${JSON.stringify(s.cluster?.tunnel)}`);
      assert.equal(s.cluster.session.connected, true);
      assert.deepEqual(
        s.cluster.nodes.map((n: { name: string; healthy: boolean }) => [n.name, n.healthy]),
        [['a', true], ['b', true], ['c', true]],
      );
      assert.ok(s.cluster.tunnel.programAttached);
    }
    // and from anywhere, with the admin's credential: the nodes, their subnets and leases
    const r = await k.admin(['status', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const nodes = JSON.parse(r.stdout).nodes as Array<{ name: string; subnets: string[]; healthy: boolean; endpoints: number }>;
    assert.deepEqual(nodes.map((n) => [n.name, n.healthy, n.subnets, n.endpoints]), [
      ['a', true, [`${k.net}.0.0/16`], 2],
      ['b', true, [`${k.net}.0.0/16`], 2],
      ['c', true, [`${k.net}.0.0/16`], 1],
    ]);
  });

  it('a dependency on another host works like a local one: ARP answered with its MAC, ping and TCP through the tunnel', async () => {
    const web = k.container('web');
    const api = k.container('api');
    const db = k.container('db');
    assert.ok(await waitFor(async () => (await tcpConnect(web.netns, api.ip, 8080, 1)).ok, 10_000), 'web -> api:8080 (a -> b)');
    const a = await arping(web.netns, 'eth0', api.ip);
    assert.ok(a.macs.includes(api.mac), `ARP for api answered with ${a.macs.join(',')}`);
    assert.ok(await ping(web.netns, api.ip, 2), 'ping web -> api (icmp allowed)');
    assert.ok(await waitFor(async () => (await tcpConnect(api.netns, db.ip, 5432, 1)).ok, 10_000), 'api -> db:5432 (b -> c)');
  });

  it('and nothing else: other ports, other containers, the reverse direction, no ARP for non-dependencies', async () => {
    const web = k.container('web');
    const api = k.container('api');
    const db = k.container('db');
    const intruder = k.container('intruder');
    assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok, 'web -> api:9999 (port not allowed)');
    assert.ok(!(await tcpConnect(web.netns, db.ip, 5432, 1)).ok, 'web -> db (no policy)');
    assert.ok(!(await tcpConnect(intruder.netns, api.ip, 8080, 1)).ok, 'intruder -> api');
    assert.ok(!(await tcpConnect(db.netns, api.ip, 8080, 1)).ok, 'db -> api (reverse of api -> db)');
    assert.ok(!(await ping(api.netns, web.ip, 1, 1)), 'api -> web ping (reverse)');
    assert.equal((await arping(intruder.netns, 'eth0', api.ip, 2, 2)).replies, 0, 'intruder resolves api');
    assert.equal((await arping(web.netns, 'eth0', db.ip, 2, 2)).replies, 0, 'web resolves db');
  });

  it("a node's maps hold only the remote endpoints its containers depend on", async () => {
    const peers = async (h: string) => ((await k.status(h)).cluster.peers as Array<{ name: string }>).map((p) => p.name).sort();
    assert.deepEqual(await peers('a'), ['b/api']);
    assert.deepEqual(await peers('b'), ['a/web', 'c/db']);
    assert.deepEqual(await peers('c'), ['b/api']);
    const s = await k.status('a');
    assert.equal(s.cluster.remoteEndpoints.known, 3, 'a knows api, other and db');
    assert.equal(s.entries.remote, 1);
  });

  it('a policy added from anywhere is enforced on every host; deleted, it stops being', async () => {
    const web = k.container('web');
    const db = k.container('db');
    const t0 = Date.now();
    await k.policyAdd('web-to-db', 'app=web', 'app=db', ['5432/tcp']);
    assert.ok(await waitFor(async () => (await tcpConnectQuick(web.netns, db.ip, 5432, 300)).ok, 10_000), 'web -> db after policy add');
    const ms = Date.now() - t0;
    assert.ok(ms < 10_000, `${ms} ms`);
    await k.policyDelete('web-to-db');
    assert.ok(await waitFor(async () => !(await tcpConnectQuick(web.netns, db.ip, 5432, 300)).ok, 10_000), 'web -> db after policy delete');
    const list = await k.bastionOn('a', ['policy', 'list', '--json', '--pin-path', k.host('a').pin]);
    assert.deepEqual(JSON.parse(list.stdout).map((p: { name: string }) => p.name).sort(), ['api-to-db', 'web-to-api']);
    const refused = await k.bastionOn('a', ['policy', 'add', 'x', '--from', 'app=a', '--to', 'app=b', '--pin-path', k.host('a').pin]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /cluster/);
  });

  it('a container added on one host is reachable from another once a policy names it; removed, it is gone everywhere', async () => {
    const cache = await k.addContainer('c', 'cache', { app: 'cache' });
    const d = k.host('c').daemon!;
    assert.ok(await d.waitForRecord((r) => r.msg === 'config applied', 10_000), 'c reloaded');
    await k.policyAdd('web-to-cache', 'app=web', 'app=cache', ['6379/tcp']);
    await startTcpEcho(cache.netns, cache.ip, 6379);
    const web = k.container('web');
    assert.ok(await waitFor(async () => (await tcpConnectQuick(web.netns, cache.ip, 6379, 300)).ok, 10_000), 'web -> cache');
    await k.removeContainer('cache');
    assert.ok(
      await waitFor(async () => !((await k.status('a')).cluster.peers as Array<{ name: string }>).some((p) => p.name === 'c/cache'), 10_000),
      'a still has c/cache in its maps',
    );
    await k.policyDelete('web-to-cache');
  });

  it('the tunnel program taken off by another tool is put back, loudly', async () => {
    const d = k.host('b').daemon!;
    const from = d.mark();
    await run('ip', ['netns', 'exec', k.host('b').netns, 'tc', 'filter', 'del', 'dev', 'bvx0', 'ingress']);
    const gone = await run('ip', ['netns', 'exec', k.host('b').netns, 'tc', 'filter', 'show', 'dev', 'bvx0', 'ingress']);
    assert.doesNotMatch(gone.stdout, /from_overlay/, 'the filter is gone');
    assert.ok(await d.waitForRecord((r) => /tunnel program was missing/.test(r.msg), 15_000, from), 'no repair logged');
    assert.equal((await k.status('b')).ok, true);
    const metrics = await bastionMetrics(k.host('b').pin);
    assert.match(metrics, /^bastion_cluster_tunnel_attached 1$/m);
    assert.match(metrics, /^bastion_cluster_tunnel_repairs_total [1-9]/m);
    assert.ok(await waitFor(async () => (await tcpConnect(k.container('web').netns, k.container('api').ip, 8080, 1)).ok, 10_000));
  });

  it("other nodes' small packets are decapsulated on the underlay (from_underlay), large segments through the device; taken off, it is put back", async () => {
    const b = k.host('b');
    const web = k.container('web');
    const api = k.container('api');
    const deviceRx = async () => {
      const r = await run('ip', ['netns', 'exec', b.netns, 'ip', '-s', '-j', 'link', 'show', 'dev', 'bvx0']);
      const rx = (JSON.parse(r.stdout) as Array<{ stats64: { rx: { packets: number; bytes: number } } }>)[0]!.stats64.rx;
      return rx;
    };
    const s = await k.status('b');
    assert.equal(s.cluster.underlay.programAttached, true, JSON.stringify(s.cluster.underlay));
    assert.match(await bastionMetrics(b.pin), /^bastion_cluster_underlay_program_attached 1$/m);

    // 20 connections a -> b: SYNs, ACKs, data and FINs, none of them through b's device
    const before = await deviceRx();
    for (let i = 0; i < 20; i++) assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok, `connection ${i}`);
    const small = await deviceRx();
    assert.ok(small.packets - before.packets <= 2, `b's VXLAN device received ${small.packets - before.packets} packets of 20 connections' (from_underlay takes them)`);
    // a transfer's large segments (GSO) still take the device, and arrive whole both ways
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 4 << 20, timeoutMs: 30_000 }).done;
    assert.equal(t.ok, true, `${t.received} of ${4 << 20} bytes echoed, ${t.stderr}`);
    const large = await deviceRx();
    assert.ok(large.bytes - small.bytes > 1 << 20, `b's device received ${large.bytes - small.bytes} bytes of a 4 MB upload`);
    // and a host on the underlay still cannot speak for a's containers through the fast path:
    // cluster-attacks.test.ts forges VXLAN at both ways in

    // taken off by another tool: put back, counted, logged; connections keep working meanwhile
    const d = b.daemon!;
    const from = d.mark();
    await run('ip', ['netns', 'exec', b.netns, 'tc', 'filter', 'del', 'dev', 'ul0', 'ingress']);
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok, 'without from_underlay, the device receives');
    assert.ok(await d.waitForRecord((r) => /from_underlay was missing/.test(r.msg), 15_000, from), 'no repair logged');
    assert.equal((await k.status('b')).cluster.underlay.programAttached, true);
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok);
  });

  it("another node's endpoint entry deleted by hand and the tunnel entry rewritten are found and repaired by the drift check", async () => {
    const h = k.host('a');
    const api = k.container('api');
    const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0'));
    await run('bpftool', ['map', 'delete', 'pinned', `${h.pin}/bastion_remote`, 'key', 'hex', ...hex(encodeIpKey(api.ip))]);
    await run('bpftool', ['map', 'update', 'pinned', `${h.pin}/bastion_tunnel`, 'key', 'hex', '00', '00', '00', '00', 'value', 'hex', ...hex(Buffer.alloc(16))]);
    // repaired by the periodic check or by this one, whichever comes first: the repairs are counted either way
    const v = await k.bastionOn('a', ['status', '--verify', '--json', '--pin-path', h.pin]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).verify.clean, true);
    const repairs = (await k.status('a')).reconciler.repairs as Record<string, Record<string, number>>;
    assert.ok((repairs['bastion_remote']?.missing ?? 0) >= 1, JSON.stringify(repairs));
    assert.ok((repairs['bastion_tunnel']?.changed ?? 0) >= 1, JSON.stringify(repairs));
    assert.ok(await waitFor(async () => (await tcpConnect(k.container('web').netns, api.ip, 8080, 1)).ok, 10_000), 'web -> api again');
  });

  it('the config file of a cluster node may not carry policies: exit 2, saying where they go', async () => {
    const h = k.host('a');
    k.writeConfig(h, { policies: [{ name: 'p', from: { app: 'x' }, to: { app: 'y' } }] });
    const r = await k.bastionOn('a', ['run', '--config', h.configPath, '--pin-path', `${h.pin}-x`, ...k.daemonArgs(h)]);
    k.writeConfig(h);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /policies:.*bastion policy add --cluster/);
    const noNode = await k.bastionOn('a', ['run', '--config', h.configPath, '--cluster', k.etcd.url]);
    assert.equal(noNode.code, 2);
    assert.match(noNode.stderr, /--node/);
  });
});
