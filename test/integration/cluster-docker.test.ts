/**
 * `bastion run --cluster ... --docker`: a node whose containers come from
 * the real Docker engine, its policies from the cluster.
 *
 * Node d is this machine's own network namespace (where dockerd and its
 * bridges live), on the test underlay through the interface etcd's helper
 * attaches there; its containers are real Docker containers on a Docker
 * bridge network (their addresses in the cluster's /16, from a /24 of their
 * own, MTU 1450). Node b is a host namespace with namespace containers, as
 * in the other cluster tests. dweb (Docker, d) may reach api (b) on
 * 8080/tcp; a second Docker container, dother, may reach nothing.
 *
 * Why not Docker on both nodes: there is one dockerd on this machine, in the
 * root namespace, and a node's VXLAN device receives on one UDP port per
 * namespace; two nodes in one namespace would need two devices on one port
 * (the kernel refuses a second external VXLAN device on a port) and would
 * see each other's Docker containers. A second dockerd in another namespace
 * would mean starting and stopping a dockerd, which this shared machine's
 * tests must not do. So: one Docker node, one namespace node.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, type ClusterContainer } from '../helpers/cluster.js';
import { run } from '../helpers/netns.js';
import { BASTION_BIN, BastionDaemon, uniquePinPath, writeConfigFile } from '../helpers/bastion-daemon.js';
import { DockerFixture, ensureEngine } from '../helpers/docker.js';
import { arping, nsRun, startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';

describe('a Docker node in the cluster (bastion run --cluster --docker)', () => {
  let k: TestCluster;
  let fx: DockerFixture | undefined;
  let d: BastionDaemon | undefined;
  let api: ClusterContainer, other: ClusterContainer;
  const pin = uniquePinPath();
  /** named network namespaces of the Docker containers (ip netns attach), for the probes */
  const dweb = { ns: '', ip: '', mac: '' };
  const dother = { ns: '', ip: '', mac: '' };
  let tunnelDevice = '';
  let engineMissing: string | undefined;

  const statusOfD = async () => {
    const r = await nsRun(null, BASTION_BIN, ['status', '--json', '--pin-path', pin], { timeoutMs: 20_000 });
    return JSON.parse(r.stdout);
  };

  before(async () => {
    const engine = await ensureEngine();
    if (!engine.ok) {
      engineMissing = engine.reason;
      return;
    }
    const port = randomInt(20_000, 30_000);
    k = await TestCluster.create({ hosts: { b: [{ name: 'api' }, { name: 'other' }] }, extraNodes: ['d'] });
    [api, other] = [k.container('api'), k.container('other')];
    tunnelDevice = `${k.prefix}vx`;
    // every node of a cluster sends and listens on one VXLAN port: a random one, so that d's device in this shared namespace meets nobody else's
    await k.start('b', ['--tunnel-port', String(port)]);

    fx = new DockerFixture(engine.docker);
    const net = await fx.createNetwork('net', {
      IPAM: { Config: [{ Subnet: `${k.net}.0.0/16`, IPRange: `${k.net}.4.0/24`, Gateway: `${k.net}.4.1` }] },
      Options: { 'com.docker.network.driver.mtu': '1450' },
    });
    for (const [c, name] of [[dweb, 'dweb'], [dother, 'dother']] as const) {
      const info = await fx.run({ name, network: net.Name, labels: { app: name } });
      const n = info.NetworkSettings.Networks[net.Name]!;
      c.ip = n.IPAddress;
      c.mac = n.MacAddress.toLowerCase();
      c.ns = `${k.prefix}-${name}`;
      await run('ip', ['netns', 'attach', c.ns, String(info.State.Pid)]);
    }

    const config = join(k.dir, 'd.yaml');
    writeConfigFile(config, { containers: [] });
    d = new BastionDaemon(config, pin, [
      '--docker', '--select', `bastion.test=${fx.prefix}`,
      ...k.etcd.flags('node-d'), '--node', 'd', '--underlay', `${k.prefix}ul`,
      '--tunnel-device', tunnelDevice, '--tunnel-port', String(port), '--lease-ttl', '4',
    ]);
    d.start();
    await d.waitReady(60_000);
    await k.policyAdd('dweb-to-api', 'app=dweb', 'app=api', ['8080/tcp']);
    for (const p of [8080, 9999]) await startTcpEcho(api.netns, api.ip, p);
    await startTcpEcho(other.netns, other.ip, 8080);
    await startTcpEcho(dweb.ns, dweb.ip, 8080);
  });
  after(async () => {
    await d?.stop().catch(() => undefined);
    await nsRun(null, BASTION_BIN, ['down', '--pin-path', pin], { timeoutMs: 30_000 }).catch(() => undefined);
    rmSync(pin, { recursive: true, force: true });
    for (const c of [dweb, dother]) if (c.ns) await run('ip', ['netns', 'del', c.ns], { allowFail: true });
    await fx?.cleanup();
    await run('ip', ['link', 'del', tunnelDevice], { allowFail: true });
    await k?.destroy();
  });

  it('d publishes its Docker containers; b believes them, and each node holds only its own containers\' peers', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    const s = await statusOfD();
    assert.equal(s.ok, true, JSON.stringify({ problems: s.problems, tunnel: s.cluster?.tunnel }));
    assert.deepEqual((s.endpoints as Array<{ labels: Record<string, string> }>).map((e) => e.labels.app).sort(), ['dother', 'dweb']);
    assert.ok(await waitFor(async () => ((await k.status('b')).cluster.peers as Array<{ name: string }>).length === 1, 10_000, 200), 'b has no peer');
    const peersOfB = ((await k.status('b')).cluster.peers as Array<{ name: string; node: string; ipv4: string }>).map((p) => [p.node, p.ipv4]);
    assert.deepEqual(peersOfB, [['d', dweb.ip]]);
    assert.deepEqual(((await statusOfD()).cluster.peers as Array<{ name: string }>).map((p) => p.name), ['b/api']);
  });

  it('the Docker container on d reaches its dependency on b (ARP answered with its MAC, TCP through the tunnel), and nothing else', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    assert.ok(await waitFor(async () => (await tcpConnectQuick(dweb.ns, api.ip, 8080, 400)).ok, 15_000, 200), 'dweb (Docker, d) -> api (b):8080');
    const a = await arping(dweb.ns, 'eth0', api.ip);
    assert.deepEqual(a.macs, [api.mac], 'ARP for api');
    assert.ok(!(await tcpConnect(dweb.ns, api.ip, 9999, 1)).ok, 'dweb -> api:9999 (port not allowed)');
    assert.ok(!(await tcpConnect(dweb.ns, other.ip, 8080, 1)).ok, 'dweb -> other (no policy)');
    assert.equal((await arping(dweb.ns, 'eth0', other.ip, 2, 2)).replies, 0, 'dweb resolves other');
    assert.ok(!(await tcpConnect(dother.ns, api.ip, 8080, 1)).ok, 'dother (Docker, d) -> api');
    assert.ok(!(await tcpConnect(api.netns, dweb.ip, 8080, 1)).ok, 'api -> dweb (the reverse direction)');
    // the one of these that got past ARP (to api, a dependency, on a port not allowed) was dropped on d, by dweb's own stack
    assert.ok(((await statusOfD()).counters['policy-denied']?.packets ?? 0) >= 1, 'policy-denied on d');
  });

  it('a policy added from anywhere reaches the Docker node: dother -> api works once it names it, and stops when deleted', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    await k.policyAdd('dother-to-api', 'app=dother', 'app=api', ['8080/tcp']);
    assert.ok(await waitFor(async () => (await tcpConnectQuick(dother.ns, api.ip, 8080, 400)).ok, 15_000, 200), 'dother -> api after policy add');
    await k.policyDelete('dother-to-api');
    assert.ok(await waitFor(async () => !(await tcpConnectQuick(dother.ns, api.ip, 8080, 400)).ok, 15_000, 200), 'dother -> api after policy delete');
  });
});
