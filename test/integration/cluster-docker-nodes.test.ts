/**
 * Two Docker hosts in one cluster: on each "host" (a network namespace on
 * the test underlay) a real dockerd of its own and `bastion run --cluster
 * --docker` following it. Containers are Docker's from end to end: Docker
 * makes their networks (one bridge network per host, addresses in the
 * cluster's /16, each host's from a /24 of its own, MTU 1450), their veths
 * and its iptables rules in the host's namespace; Bastion finds them
 * through each engine's API, publishes them to etcd and protects them.
 *
 *   a: dockerd, web (app=web), other (app=other)     b: dockerd, api (app=api)
 *
 * Policy: web may reach api on 8080/tcp. What is shown, across hosts: the
 * dependency works, with api's own MAC in web's ARP answer; the port not
 * named, the container not named and the reverse direction do not; a
 * container Docker restarts (a new namespace and veth) is protected again
 * and reachable again; a removed container leaves the other host's maps;
 * its address, given by Docker to a new container with other labels, gets
 * a new identity and inherits nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../helpers/cluster.js';
import { run } from '../helpers/netns.js';
import { BASTION_BIN, BastionDaemon, uniquePinPath, writeConfigFile } from '../helpers/bastion-daemon.js';
import { DockerFixture, ensureEngine } from '../helpers/docker.js';
import { NetnsDockerd } from '../helpers/netns-dockerd.js';
import { arping, nsRun, startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';

interface DockerHost {
  name: string;
  netns: string;
  pin: string;
  engine?: NetnsDockerd;
  fx?: DockerFixture;
  network?: string;
  daemon?: BastionDaemon;
}

interface DockerContainer {
  name: string;
  host: DockerHost;
  id: string;
  /** a name for its network namespace (ip netns attach), for the probes */
  ns: string;
  ip: string;
  mac: string;
}

describe('two Docker hosts in one cluster (a dockerd and bastion run --cluster --docker on each)', () => {
  let k: TestCluster;
  let engineMissing: string | undefined;
  const hosts: DockerHost[] = [];
  const containers = new Map<string, DockerContainer>();

  const c = (name: string): DockerContainer => containers.get(name)!;

  const statusOf = async (h: DockerHost) => {
    const r = await nsRun(null, 'nsenter', [`--net=/run/netns/${h.netns}`, BASTION_BIN, 'status', '--json', '--pin-path', h.pin], { timeoutMs: 20_000 });
    try {
      return JSON.parse(r.stdout);
    } catch {
      throw new Error(`status of ${h.name}: exit ${r.code} ${r.stderr}`);
    }
  };

  /** (re)names the container's network namespace after its current process */
  const attachNetns = async (ct: DockerContainer) => {
    const info = await ct.host.engine!.docker.getContainer(ct.id).inspect();
    const n = info.NetworkSettings.Networks[ct.host.network!]!;
    ct.ip = n.IPAddress;
    ct.mac = n.MacAddress.toLowerCase();
    await run('ip', ['netns', 'del', ct.ns], { allowFail: true });
    await run('ip', ['netns', 'attach', ct.ns, String(info.State.Pid)]);
  };

  const runContainer = async (h: DockerHost, name: string, labels: Record<string, string>, ipv4?: string) => {
    const info = await h.fx!.run({ name, network: h.network!, labels, ...(ipv4 ? { ipv4 } : {}) });
    const ct: DockerContainer = { name, host: h, id: info.Id, ns: `${k.prefix}-${name}`, ip: '', mac: '' };
    containers.set(name, ct);
    await attachNetns(ct);
    return ct;
  };

  before(async () => {
    const engine = await ensureEngine();
    if (!engine.ok) {
      engineMissing = engine.reason;
      return;
    }
    k = await TestCluster.create({ hosts: {}, extraNodes: ['a', 'b'] });
    for (const [i, name] of ['a', 'b'].entries()) {
      const h: DockerHost = { name, netns: `${k.prefix}-${name}`, pin: uniquePinPath() };
      hosts.push(h);
      await run('ip', ['netns', 'add', h.netns]);
      await run('ip', ['-n', h.netns, 'link', 'set', 'lo', 'up']);
      await k.underlay.attach(h.netns, 11 + i, 'ul0');
      h.engine = await NetnsDockerd.start(h.netns, `/tmp/${k.prefix}${name}`);
      h.fx = new DockerFixture(h.engine.docker);
      const third = 20 + i;
      const net = await h.fx.createNetwork('net', {
        IPAM: { Config: [{ Subnet: `${k.net}.0.0/16`, IPRange: `${k.net}.${third}.0/24`, Gateway: `${k.net}.${third}.1` }] },
        Options: { 'com.docker.network.driver.mtu': '1450' },
      });
      h.network = net.Name;
    }
    const [a, b] = hosts as [DockerHost, DockerHost];
    await runContainer(a, 'web', { app: 'web' });
    await runContainer(a, 'other', { app: 'other' });
    await runContainer(b, 'api', { app: 'api' }, `${k.net}.21.10`);

    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    for (const h of hosts) {
      const config = join(k.dir, `${h.name}.yaml`);
      writeConfigFile(config, { containers: [] });
      h.daemon = new BastionDaemon(config, h.pin, [
        '--docker', '--select', `bastion.test=${h.fx!.prefix}`,
        ...k.etcd.flags(`node-${h.name}`), '--node', h.name, '--underlay', 'ul0', '--lease-ttl', '4', '--tunnel-device', 'bvx0',
      ], h.netns);
      h.daemon.env = { DOCKER_HOST: h.engine!.host };
      h.daemon.start();
    }
    await Promise.all(hosts.map((h) => h.daemon!.waitReady(60_000)));
    for (const p of [8080, 9999]) await startTcpEcho(c('api').ns, c('api').ip, p);
    await startTcpEcho(c('web').ns, c('web').ip, 8080);
  });

  after(async () => {
    for (const h of hosts) {
      await h.daemon?.stop().catch(() => undefined);
      await nsRun(null, 'nsenter', [`--net=/run/netns/${h.netns}`, BASTION_BIN, 'down', '--pin-path', h.pin], { timeoutMs: 30_000 }).catch(() => undefined);
      rmSync(h.pin, { recursive: true, force: true });
    }
    for (const ct of containers.values()) await run('ip', ['netns', 'del', ct.ns], { allowFail: true });
    for (const h of hosts) {
      await h.engine?.stop();
      await run('ip', ['netns', 'del', h.netns], { allowFail: true });
    }
    await k?.destroy();
  });

  it('each host publishes its own Docker containers, sees the other host, and holds only its containers\' peers', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    const [a, b] = hosts as [DockerHost, DockerHost];
    const sa = await statusOf(a);
    assert.equal(sa.ok, true, JSON.stringify({ problems: sa.problems }));
    assert.deepEqual((sa.endpoints as Array<{ labels: Record<string, string> }>).map((e) => e.labels.app).sort(), ['other', 'web']);
    assert.deepEqual((sa.cluster.nodes as Array<{ name: string }>).map((n) => n.name).sort(), ['a', 'b']);
    const sb = await statusOf(b);
    assert.deepEqual((sb.endpoints as Array<{ labels: Record<string, string> }>).map((e) => e.labels.app), ['api']);
    // web's dependency is api (on b); api's ingress peer is web (on a); other needs nobody
    assert.ok(await waitFor(async () => ((await statusOf(a)).cluster.peers as unknown[]).length === 1, 10_000, 200), 'a has its peer');
    assert.deepEqual(((await statusOf(a)).cluster.peers as Array<{ node: string; ipv4: string }>).map((p) => [p.node, p.ipv4]), [['b', c('api').ip]]);
    assert.ok(await waitFor(async () => ((await statusOf(b)).cluster.peers as unknown[]).length === 1, 10_000, 200), 'b has its peer');
    assert.deepEqual(((await statusOf(b)).cluster.peers as Array<{ node: string; ipv4: string }>).map((p) => [p.node, p.ipv4]), [['a', c('web').ip]]);
  });

  it('web (a) reaches api (b) on the port named, with api\'s own MAC in its ARP answer; nothing else crosses', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    const [web, other, api] = [c('web'), c('other'), c('api')];
    assert.ok(await waitFor(async () => (await tcpConnectQuick(web.ns, api.ip, 8080, 400)).ok, 15_000, 200), 'web -> api:8080');
    assert.deepEqual((await arping(web.ns, 'eth0', api.ip)).macs, [api.mac], 'ARP for api, from web');
    assert.ok(!(await tcpConnect(web.ns, api.ip, 9999, 1)).ok, 'web -> api:9999 (port not named)');
    assert.ok(!(await tcpConnect(other.ns, api.ip, 8080, 1)).ok, 'other -> api (no policy)');
    assert.equal((await arping(other.ns, 'eth0', api.ip, 2, 2)).replies, 0, 'other resolves api');
    assert.ok(!(await tcpConnect(api.ns, web.ip, 8080, 1)).ok, 'api -> web (the reverse direction)');
    assert.ok(((await statusOf(hosts[0]!)).counters['policy-denied']?.packets ?? 0) >= 1, 'policy-denied on a');
  });

  it('a container Docker restarts (new namespace, new veth) is protected and reachable again', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    const [web, other, api] = [c('web'), c('other'), c('api')];
    const b = hosts[1]!;
    const ifBefore = (await statusOf(b)).endpoints[0].hostIfindex as number;
    await b.engine!.docker.getContainer(api.id).restart({ t: 1 });
    await attachNetns(api);
    assert.equal(api.ip, `${k.net}.21.10`);
    for (const p of [8080, 9999]) await startTcpEcho(api.ns, api.ip, p);
    assert.ok(await waitFor(async () => {
      const s = await statusOf(b);
      return s.ok && s.endpoints.length === 1 && s.endpoints[0].hostIfindex !== ifBefore;
    }, 20_000, 250), 'b protects api on its new veth');
    assert.ok(await waitFor(async () => (await tcpConnectQuick(web.ns, api.ip, 8080, 400)).ok, 15_000, 200), 'web -> api:8080 after the restart');
    assert.ok(!(await tcpConnect(web.ns, api.ip, 9999, 1)).ok, 'web -> api:9999 after the restart');
    assert.ok(!(await tcpConnect(other.ns, api.ip, 8080, 1)).ok, 'other -> api after the restart');
  });

  it('a removed container leaves the other host; a new container given its address gets a new identity and inherits nothing', async (t) => {
    if (engineMissing) return t.skip(engineMissing);
    const [a, b] = hosts as [DockerHost, DockerHost];
    const [web, api] = [c('web'), c('api')];
    const idBefore = (await statusOf(b)).endpoints[0].identity as number;
    await b.engine!.docker.getContainer(api.id).remove({ force: true });
    await run('ip', ['netns', 'del', api.ns], { allowFail: true });
    assert.ok(await waitFor(async () => ((await statusOf(a)).cluster.peers as unknown[]).length === 0, 15_000, 250), 'a drops b/api');
    // Docker gives the address to a new container, of another application
    const impostor = await runContainer(b, 'impostor', { app: 'impostor' }, api.ip);
    await startTcpEcho(impostor.ns, impostor.ip, 8080);
    assert.ok(await waitFor(async () => {
      const s = await statusOf(b);
      return s.endpoints.length === 1 && s.endpoints[0].labels.app === 'impostor';
    }, 20_000, 250), 'b protects the new container');
    const idAfter = (await statusOf(b)).endpoints[0].identity as number;
    assert.notEqual(idAfter, idBefore, 'a new identity for the address');
    assert.ok(!(await tcpConnect(web.ns, impostor.ip, 8080, 1)).ok, 'web -> the new container on api\'s old address and port');
    assert.equal((await arping(web.ns, 'eth0', impostor.ip, 2, 2)).replies, 0, 'web resolves the new container');
    assert.deepEqual((await statusOf(a)).cluster.peers, [], 'a holds no peer for it');
  });
});
