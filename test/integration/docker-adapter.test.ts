/**
 * The Docker platform adapter and the bridge port watcher against a real
 * dockerd (started by scripts/ensure-docker when needed), plus the pure
 * mapping rules they rely on. Every container and network created here has
 * a unique name prefix and label, and is removed afterwards, even on failure.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { EndpointSpec, PlatformEvent } from '../../src/manager/endpoint.js';
import {
  BridgePortWatcher,
  DockerPlatform,
  desiredForContainer,
  parseIpLinkJson,
  parseMonitorLine,
  watchDockerBridgePorts,
  type BridgePort,
  type ContainerInspect,
  type DockerNetwork,
} from '../../src/platform/docker/index.js';
import { DockerFixture, dockerdPid, ensureEngine, inNetns, restartDockerd, sleep, waitFor } from '../helpers/docker.js';

const run = promisify(execFile);

// ---------------------------------------------------------------------------
// Pure rules (no engine needed)

const nets = new Map<string, DockerNetwork>([
  ['bridge', { id: 'b'.repeat(64), name: 'bridge', driver: 'bridge', bridge: 'docker0' }],
  ['app', { id: 'a'.repeat(64), name: 'app', driver: 'bridge', bridge: 'br-aaaaaaaaaaaa' }],
  ['mv', { id: 'c'.repeat(64), name: 'mv', driver: 'macvlan' }],
]);

function inspectOf(p: Partial<ContainerInspect> & { networks?: Record<string, { mac: string; ip: string }> }): ContainerInspect {
  return {
    Id: '0123456789ab' + 'f'.repeat(52),
    Name: '/web',
    State: { Running: true, Pid: 4242 },
    Config: { Labels: { 'com.docker.compose.service': 'web', team: 'a' } },
    HostConfig: { NetworkMode: 'app' },
    NetworkSettings: {
      Networks: Object.fromEntries(Object.entries(p.networks ?? { app: { mac: '02:42:0a:00:00:02', ip: '10.0.0.2' } }).map(([k, v]) => [k, { MacAddress: v.mac, IPAddress: v.ip }])),
    },
    ...p,
  };
}

describe('docker mapping rules (no engine needed)', () => {
  test('one endpoint per bridge network, interface found by MAC, host ifindex from the veth peer', () => {
    const info = inspectOf({ networks: { app: { mac: '02:42:0A:00:00:02', ip: '10.0.0.2' }, bridge: { mac: '02:42:ac:11:00:05', ip: '172.17.0.5' } } });
    const links = parseIpLinkJson(
      JSON.stringify([
        { ifindex: 1, ifname: 'lo', link_type: 'loopback', address: '00:00:00:00:00:00' },
        { ifindex: 7, link_index: 8, ifname: 'eth0', address: '02:42:ac:11:00:05', link_netnsid: 0 },
        { ifindex: 9, link_index: 10, ifname: 'eth1', address: '02:42:0a:00:00:02', link_netnsid: 0 },
      ]),
    );
    const d = desiredForContainer(info, { networks: nets, links });
    assert.deepEqual(d.unprotected, []);
    const want: EndpointSpec[] = [
      {
        key: 'docker:0123456789ab/app',
        name: 'web/app',
        netns: { kind: 'path', path: '/proc/4242/ns/net' },
        interface: 'eth1',
        labels: { 'com.docker.compose.service': 'web', team: 'a', 'bastion.io/name': 'web', 'bastion.io/compose-service': 'web', 'bastion.io/network': 'app' },
        ipv4: '10.0.0.2',
        mac: '02:42:0a:00:00:02',
        hostIfindex: 10,
      },
      {
        key: 'docker:0123456789ab/bridge',
        name: 'web/bridge',
        netns: { kind: 'path', path: '/proc/4242/ns/net' },
        interface: 'eth0',
        labels: { 'com.docker.compose.service': 'web', team: 'a', 'bastion.io/name': 'web', 'bastion.io/compose-service': 'web', 'bastion.io/network': 'bridge' },
        ipv4: '172.17.0.5',
        mac: '02:42:ac:11:00:05',
        hostIfindex: 8,
      },
    ];
    assert.deepEqual(d.endpoints, want);
  });

  test('single network: the name is the container name', () => {
    const d = desiredForContainer(inspectOf({}), { networks: nets, links: [{ ifindex: 5, ifname: 'eth0', mac: '02:42:0a:00:00:02', peerIfindex: 6 }] });
    assert.equal(d.endpoints.length, 1);
    assert.equal(d.endpoints[0]!.name, 'web');
  });

  const whole: Array<[string, Partial<ContainerInspect['HostConfig']>, RegExp]> = [
    ['host network', { NetworkMode: 'host' }, /host network namespace \(--network host\)/],
    ['another container\'s netns', { NetworkMode: 'container:abc123' }, /shares the network namespace of container abc123/],
    ['privileged', { NetworkMode: 'app', Privileged: true }, /privileged \(--privileged\)/],
    ['CAP_NET_ADMIN', { NetworkMode: 'app', CapAdd: ['NET_ADMIN'] }, /CAP_NET_ADMIN \(--cap-add NET_ADMIN\)/],
    ['CAP_NET_ADMIN (long name)', { NetworkMode: 'app', CapAdd: ['CAP_NET_ADMIN'] }, /CAP_NET_ADMIN/],
    ['ALL capabilities', { NetworkMode: 'app', CapAdd: ['ALL'] }, /CAP_NET_ADMIN \(--cap-add ALL\)/],
  ];
  for (const [what, hc, reason] of whole) {
    test(`unprotected: ${what}`, () => {
      const d = desiredForContainer(inspectOf({ HostConfig: hc }), { networks: nets });
      assert.deepEqual(d.endpoints, []);
      assert.equal(d.unprotected.length, 1);
      assert.equal(d.unprotected[0]!.key, 'docker:0123456789ab');
      assert.equal(d.unprotected[0]!.name, 'web');
      assert.match(d.unprotected[0]!.reason, reason);
    });
  }

  test('--network none and stopped containers: nothing to report', () => {
    assert.deepEqual(desiredForContainer(inspectOf({ HostConfig: { NetworkMode: 'none' }, networks: { none: { mac: '', ip: '' } } }), { networks: nets }), {
      endpoints: [],
      unprotected: [],
    });
    assert.deepEqual(desiredForContainer(inspectOf({ State: { Running: false, Pid: 0 } }), { networks: nets }), { endpoints: [], unprotected: [] });
  });

  test('a non-bridge network is unprotected on its own, the bridge one stays an endpoint', () => {
    const info = inspectOf({ networks: { app: { mac: '02:42:0a:00:00:02', ip: '10.0.0.2' }, mv: { mac: '02:42:0b:00:00:02', ip: '10.1.0.2' } } });
    const d = desiredForContainer(info, { networks: nets, links: [{ ifindex: 5, ifname: 'eth0', mac: '02:42:0a:00:00:02', peerIfindex: 6 }] });
    assert.deepEqual(d.endpoints.map((e) => [e.key, e.name]), [['docker:0123456789ab/app', 'web']]);
    assert.deepEqual(d.unprotected, [
      { key: 'docker:0123456789ab/mv', name: 'web/mv', reason: 'network mv uses driver macvlan: Bastion protects bridge networks only (its traffic does not cross a veth)' },
    ]);
  });

  test('ip monitor lines', () => {
    assert.deepEqual(
      parseMonitorLine('15: vethd2b9ca4@vethf4268a9: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 qdisc noop master docker0 state DOWN group default \\    link/ether a6:27:85:07:92:0b brd ff:ff:ff:ff:ff:ff'),
      { deleted: false, ifindex: 15, ifname: 'vethd2b9ca4', flags: ['BROADCAST', 'MULTICAST', 'M-DOWN'], master: 'docker0', mac: 'a6:27:85:07:92:0b' },
    );
    assert.deepEqual(parseMonitorLine('Deleted 15: vethd2b9ca4@NONE: <BROADCAST,MULTICAST> mtu 1500 master docker0 state DOWN \\    link/ether a6:27:85:07:92:0b'), {
      deleted: true,
      ifindex: 15,
      ifname: 'vethd2b9ca4',
      flags: ['BROADCAST', 'MULTICAST'],
      master: 'docker0',
      mac: 'a6:27:85:07:92:0b',
    });
    assert.equal(parseMonitorLine('5: docker0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default \\    link/ether 02:42:6b:6d:e1:22')?.master, undefined);
    assert.equal(parseMonitorLine('Timestamp: Mon Nov 23 09:45:37 2026 724810 usec'), undefined);
  });

  test('watcher state machine: added once, changed on carrier, removed on release or delete', () => {
    const w = new BridgePortWatcher({ bridges: ['docker0'] });
    const seen: string[] = [];
    w.on('added', (p: BridgePort) => seen.push(`+${p.ifindex}:${p.bridge}:${p.up}`));
    w.on('changed', (p: BridgePort) => seen.push(`~${p.ifindex}:${p.up}`));
    w.on('removed', (p: BridgePort) => seen.push(`-${p.ifindex}`));
    const m = (line: string) => w.handle(parseMonitorLine(line)!);
    m('14: vethA@NONE: <BROADCAST,MULTICAST> mtu 1500 state DOWN \\    link/ether 5e:25:a9:db:f5:8b');
    m('15: vethB@vethA: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 master docker0 state DOWN \\    link/ether a6:27:85:07:92:0b');
    m('15: vethB@vethA: <BROADCAST,MULTICAST,M-DOWN> mtu 1500 master docker0 state DOWN \\    link/ether a6:27:85:07:92:0b');
    m('15: vethB@if14: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master docker0 state UP \\    link/ether a6:27:85:07:92:0b');
    m('16: vethC@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master br-other state UP \\    link/ether a6:27:85:07:92:0c');
    m('17: vethD@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master docker0 state UP \\    link/ether a6:27:85:07:92:0d');
    m('17: vethD@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP \\    link/ether a6:27:85:07:92:0d');
    m('Deleted 15: vethB@NONE: <BROADCAST,MULTICAST> mtu 1500 master docker0 state DOWN \\    link/ether a6:27:85:07:92:0b');
    assert.deepEqual(seen, ['+15:docker0:false', '~15:true', '+17:docker0:true', '-17', '-15']);
    assert.deepEqual(w.ports(), []);
  });
});

// ---------------------------------------------------------------------------
// Against the real engine

const engine = await ensureEngine();
const skip = engine.ok ? false : `Docker cannot run here: ${engine.reason}`;
if (!engine.ok) process.stderr.write(`docker-adapter: SKIPPED: ${engine.reason}\n`);

class Recorder {
  readonly events: PlatformEvent[] = [];
  constructor(p: DockerPlatform) {
    p.on('event', (e: PlatformEvent) => this.events.push(e));
  }
  get mark(): number {
    return this.events.length;
  }
  since(mark: number): PlatformEvent[] {
    return this.events.slice(mark);
  }
  wait(what: string, mark: number, pred: (e: PlatformEvent) => boolean, timeoutMs = 15_000): Promise<PlatformEvent> {
    return waitFor(what, () => this.events.slice(mark).find(pred), timeoutMs);
  }
}

const keyOf = (e: PlatformEvent): string =>
  e.type === 'upsert' ? e.spec.key : e.type === 'unprotected' ? e.container.key : e.type === 'synced' ? '' : 'key' in e ? e.key : '';

describe('Docker platform adapter on a real engine', { skip, timeout: 300_000 }, () => {
  const docker = engine.ok ? engine.docker : (undefined as never);
  const fx = engine.ok ? new DockerFixture(docker) : (undefined as never);
  let platform: DockerPlatform;
  let watcher: BridgePortWatcher;
  let rec: Recorder;
  const ports: Array<BridgePort & { removedAt?: number }> = [];
  let netName: string;
  let bridgeDev: string;
  let subnetGw: string;
  let a: Awaited<ReturnType<DockerFixture['run']>>;
  const id12 = (id: string) => id.slice(0, 12);

  before(async () => {
    const net = await fx.createNetwork('net');
    netName = net.Name;
    bridgeDev = `br-${net.Id.slice(0, 12)}`;
    subnetGw = net.IPAM?.Config?.[0]?.Gateway ?? '';
    // running before the adapter starts: reported by the initial sync
    a = await fx.run({ name: 'a', network: netName, labels: { 'com.docker.compose.service': 'web', 'com.docker.compose.project': fx.prefix } });
    platform = new DockerPlatform({ select: fx.label, backoff: { initialMs: 100, maxMs: 1000 } });
    platform.on('warning', (w: string) => process.stderr.write(`docker-adapter warning: ${w}\n`));
    rec = new Recorder(platform);
    watcher = watchDockerBridgePorts(platform, { resyncIntervalMs: 1000 });
    watcher.on('added', (p: BridgePort) => ports.push({ ...p }));
    watcher.on('removed', (p: BridgePort) => {
      const known = ports.find((x) => x.ifindex === p.ifindex && x.removedAt === undefined);
      if (known) known.removedAt = Date.now();
    });
    await watcher.start();
    await platform.start();
  });

  after(async () => {
    await platform?.stop();
    await watcher?.stop();
    // a failed restart test may have left the engine down: bring it back to clean up
    if (!dockerdPid()) await ensureEngine();
    const problems = await fx.cleanup();
    assert.deepEqual(problems, [], 'cleanup left something behind');
  });

  test('initial sync reports a running container with IP, MAC, netns, interface, host ifindex and labels', async () => {
    const synced = rec.events.find((e) => e.type === 'synced');
    assert.ok(synced && synced.type === 'synced');
    const key = `docker:${id12(a.Id)}/${netName}`;
    assert.deepEqual(synced.keys, [key]);
    const up = rec.events.find((e) => e.type === 'upsert' && e.spec.key === key);
    assert.ok(up && up.type === 'upsert');
    const n = a.NetworkSettings.Networks[netName]!;
    const links = JSON.parse(await inNetns(a.State.Pid, ['ip', '-j', 'link', 'show', 'eth0'])) as Array<{ link_index: number; address: string }>;
    const hostVeth = JSON.parse((await run('ip', ['-j', 'link', 'show', 'master', bridgeDev])).stdout) as Array<{ ifindex: number }>;
    assert.deepEqual(up.spec, {
      key,
      name: fx.name('a'),
      netns: { kind: 'path', path: `/proc/${a.State.Pid}/ns/net` },
      interface: 'eth0',
      labels: {
        'bastion.test': fx.prefix,
        'com.docker.compose.service': 'web',
        'com.docker.compose.project': fx.prefix,
        'bastion.io/name': fx.name('a'),
        'bastion.io/compose-service': 'web',
        'bastion.io/network': netName,
      },
      ipv4: n.IPAddress,
      mac: n.MacAddress.toLowerCase(),
      hostIfindex: links[0]!.link_index,
    });
    assert.ok(n.IPAddress.length > 0);
    assert.equal(links[0]!.address, n.MacAddress.toLowerCase());
    assert.deepEqual(hostVeth.map((l) => l.ifindex), [links[0]!.link_index], 'hostIfindex is the veth on the network bridge');
    assert.deepEqual(platform.portOwner(links[0]!.link_index), { kind: 'endpoint', key, containerId: a.Id });
    assert.ok(platform.bridgeDevices().includes(bridgeDev));
    assert.ok(platform.bridgeDevices().includes('docker0'));
    // the watcher saw the existing port at start
    assert.ok(ports.some((p) => p.ifindex === links[0]!.link_index && p.bridge === bridgeDev));
  });

  test('first packet: the veth is reported before the container process starts', async () => {
    const mark = rec.mark;
    // this container sends at the instant it starts
    const c = await fx.run({ name: 'eager', network: netName, cmd: ['sh', '-c', `ping -c 1 -W 1 ${subnetGw}; sleep 3600`] });
    const up = await rec.wait('upsert of eager', mark, (e) => e.type === 'upsert' && e.spec.key === `docker:${id12(c.Id)}/${netName}`);
    assert.ok(up.type === 'upsert');
    const port = ports.find((p) => p.ifindex === up.spec.hostIfindex);
    assert.ok(port, 'the watcher reported the container\'s host-side veth');
    assert.equal(port.bridge, bridgeDev);
    const startedAt = Date.parse(c.State.StartedAt);
    const lead = startedAt - port.seenAt;
    process.stderr.write(`docker-adapter: veth ${port.ifname} reported ${lead} ms before the process started (carrier up at report: ${port.up})\n`);
    assert.ok(lead > 0, `port seen at ${port.seenAt}, process started at ${startedAt}`);
    assert.equal(port.up, false, 'reported while the veth has no carrier yet: nothing can flow');
  });

  test('a container on two networks: one endpoint per network, each with its own interface', async () => {
    const mark = rec.mark;
    const b = await fx.run({ name: 'b', network: netName, start: false });
    await docker.getNetwork('bridge').connect({ Container: b.Id });
    await docker.getContainer(b.Id).start();
    const info = await fx.inspect(b.Id);
    const k1 = `docker:${id12(b.Id)}/${netName}`;
    const k2 = `docker:${id12(b.Id)}/bridge`;
    await rec.wait('both endpoints of b', mark, () => platform.snapshot().endpoints.filter((e) => e.key === k1 || e.key === k2).length === 2);
    const links = JSON.parse(await inNetns(info.State.Pid, ['ip', '-j', 'link'])) as Array<{ ifname: string; address: string; link_index?: number }>;
    for (const [key, net] of [[k1, netName], [k2, 'bridge']] as const) {
      const spec = platform.snapshot().endpoints.find((e) => e.key === key)!;
      const mac = info.NetworkSettings.Networks[net]!.MacAddress.toLowerCase();
      const link = links.find((l) => l.address === mac)!;
      assert.equal(spec.name, `${fx.name('b')}/${net}`);
      assert.equal(spec.interface, link.ifname);
      assert.equal(spec.hostIfindex, link.link_index);
      assert.equal(spec.ipv4, info.NetworkSettings.Networks[net]!.IPAddress);
      assert.equal(spec.labels['bastion.io/network'], net);
    }
    assert.notEqual(platform.snapshot().endpoints.find((e) => e.key === k1)!.interface, platform.snapshot().endpoints.find((e) => e.key === k2)!.interface);

    // disconnect: that endpoint goes, the other is renamed to the container name
    let m2 = rec.mark;
    await docker.getNetwork('bridge').disconnect({ Container: b.Id });
    await rec.wait('remove of b/bridge', m2, (e) => e.type === 'remove' && e.key === k2);
    const renamed = await rec.wait('b renamed', m2, (e) => e.type === 'upsert' && e.spec.key === k1);
    assert.ok(renamed.type === 'upsert');
    assert.equal(renamed.spec.name, fx.name('b'));
    // connect again
    m2 = rec.mark;
    await docker.getNetwork('bridge').connect({ Container: b.Id });
    const back = await rec.wait('b/bridge back', m2, (e) => e.type === 'upsert' && e.spec.key === k2);
    assert.ok(back.type === 'upsert');
    assert.equal(back.spec.ipv4, (await fx.inspect(b.Id)).NetworkSettings.Networks.bridge!.IPAddress);
  });

  test('containers Bastion cannot protect are reported with a reason', async (t) => {
    const mark = rec.mark;
    const host = await fx.run({ name: 'host', network: 'host' });
    const admin = await fx.run({ name: 'admin', network: netName, hostConfig: { CapAdd: ['NET_ADMIN'] } });
    const shared = await fx.run({ name: 'shared', hostConfig: { NetworkMode: `container:${a.Id}` } });
    const none = await fx.run({ name: 'none', network: 'none' });
    const hu = await rec.wait('host unprotected', mark, (e) => e.type === 'unprotected' && e.container.key === `docker:${id12(host.Id)}`);
    assert.ok(hu.type === 'unprotected');
    assert.equal(hu.container.name, fx.name('host'));
    assert.match(hu.container.reason, /--network host/);
    const au = await rec.wait('NET_ADMIN unprotected', mark, (e) => e.type === 'unprotected' && e.container.key === `docker:${id12(admin.Id)}`);
    assert.ok(au.type === 'unprotected');
    assert.match(au.container.reason, /CAP_NET_ADMIN/);
    const su = await rec.wait('shared netns unprotected', mark, (e) => e.type === 'unprotected' && e.container.key === `docker:${id12(shared.Id)}`);
    assert.ok(su.type === 'unprotected');
    assert.match(su.container.reason, new RegExp(`shares the network namespace of container ${a.Id}`));
    // NET_ADMIN has a veth on the bridge: the agent can tell it is not to be guarded
    const adminVeth = JSON.parse(await inNetns(admin.State.Pid, ['ip', '-j', 'link', 'show', 'eth0']))[0].link_index as number;
    assert.equal(platform.portOwner(adminVeth)?.kind, 'unprotected');
    await sleep(300);
    // no endpoint for any of them, nothing at all for --network none
    const ids = [host.Id, admin.Id, shared.Id, none.Id].map(id12);
    assert.deepEqual(
      rec.since(mark).filter((e) => e.type === 'upsert' && ids.some((i) => e.spec.key.includes(i))),
      [],
    );
    assert.deepEqual(rec.since(mark).filter((e) => keyOf(e).includes(id12(none.Id))), []);

    // privileged: this machine's root may lack capabilities runc wants to hand over
    let priv: Awaited<ReturnType<DockerFixture['run']>> | undefined;
    try {
      priv = await fx.run({ name: 'priv', network: netName, hostConfig: { Privileged: true } });
    } catch (err) {
      t.diagnostic(`privileged container not started by this engine (${(err as Error).message.split('\n')[0]}); the rule is covered by the mapping tests`);
    }
    if (priv) {
      const pu = await rec.wait('privileged unprotected', mark, (e) => e.type === 'unprotected' && e.container.key === `docker:${id12(priv!.Id)}`);
      assert.ok(pu.type === 'unprotected');
      assert.match(pu.container.reason, /--privileged/);
    }

    // gone: unprotected-gone
    const m2 = rec.mark;
    await docker.getContainer(host.Id).remove({ force: true });
    await rec.wait('host unprotected-gone', m2, (e) => e.type === 'unprotected-gone' && e.key === `docker:${id12(host.Id)}`);
  });

  test('containers outside select are left alone', async () => {
    const mark = rec.mark;
    // not labelled with our select label; still ours (named with the prefix, cleaned up via its id)
    const c = await docker.createContainer({ name: fx.name('other'), Image: 'bastion/busybox:latest', Cmd: ['sleep', '3600'], HostConfig: { NetworkMode: netName } });
    (fx as unknown as { containers: Set<string> }).containers.add(c.id);
    await c.start();
    const info = await c.inspect();
    const veth = JSON.parse(await inNetns(info.State.Pid, ['ip', '-j', 'link', 'show', 'eth0']))[0].link_index as number;
    await waitFor('unselected port owner', () => platform.portOwner(veth)?.kind === 'unselected');
    assert.deepEqual(rec.since(mark).filter((e) => keyOf(e).includes(id12(c.id))), []);
  });

  test('stop, start and remove are followed', async () => {
    const key = `docker:${id12(a.Id)}/${netName}`;
    let mark = rec.mark;
    await docker.getContainer(a.Id).stop({ t: 0 });
    await rec.wait('remove on stop', mark, (e) => e.type === 'remove' && e.key === key);
    assert.equal(platform.snapshot().endpoints.some((e) => e.key === key), false);

    mark = rec.mark;
    await docker.getContainer(a.Id).start();
    const up = await rec.wait('upsert on start', mark, (e) => e.type === 'upsert' && e.spec.key === key);
    const info = await fx.inspect(a.Id);
    assert.ok(up.type === 'upsert');
    assert.deepEqual(up.spec.netns, { kind: 'path', path: `/proc/${info.State.Pid}/ns/net` });
    assert.equal(up.spec.ipv4, info.NetworkSettings.Networks[netName]!.IPAddress);
    assert.ok(ports.some((p) => p.ifindex === up.spec.hostIfindex && p.removedAt === undefined), 'new veth reported by the watcher');

    // restart: a new process (and veth) under the same key
    mark = rec.mark;
    await docker.getContainer(a.Id).restart({ t: 0 });
    const again = await rec.wait('upsert on restart', mark, (e) => e.type === 'upsert' && e.spec.key === key);
    assert.ok(again.type === 'upsert');
    const removedFirst = rec.since(mark).findIndex((e) => e.type === 'remove' && e.key === key);
    assert.ok(removedFirst >= 0 && removedFirst < rec.since(mark).indexOf(again), 'the old interface is removed before the new one is reported');

    mark = rec.mark;
    await docker.getContainer(a.Id).remove({ force: true });
    await rec.wait('remove on rm -f', mark, (e) => e.type === 'remove' && e.key === key);
    await waitFor('veth of a gone from the watcher', () => !watcher.port(again.spec.hostIfindex!));
  });

  test('the watcher restarts its ip monitor when it dies', async () => {
    const pid = watcher.monitorPid;
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    await waitFor('a new ip monitor', () => watcher.monitorPid !== undefined && watcher.monitorPid !== pid);
    await sleep(200);
    const mark = rec.mark;
    const c = await fx.run({ name: 'after-monitor-restart', network: netName });
    const up = await rec.wait('upsert', mark, (e) => e.type === 'upsert' && e.spec.key === `docker:${id12(c.Id)}/${netName}`);
    assert.ok(up.type === 'upsert');
    const port = ports.find((p) => p.ifindex === up.spec.hostIfindex);
    assert.ok(port);
    assert.ok(port.seenAt < Date.parse(c.State.StartedAt), 'still seen before the process started');
  });

  test('dockerd restart: reconnects, resyncs and emits synced with what really runs', async () => {
    const liveRestore = Boolean(((await docker.info()) as { LiveRestoreEnabled?: boolean }).LiveRestoreEnabled);
    const keep = await fx.run({ name: 'keep', network: netName });
    const dies = await fx.run({ name: 'dies', network: netName });
    const always = await fx.run({ name: 'always', network: netName, hostConfig: { RestartPolicy: { Name: 'always' } } });
    const all = [keep, dies, always];
    const key = (c: { Id: string }) => `docker:${id12(c.Id)}/${netName}`;
    await waitFor('three upserts', () => all.every((c) => platform.snapshot().endpoints.some((e) => e.key === key(c))));
    const syncsBefore = platform.syncs;
    const mark = rec.mark;
    let disconnected = false;
    platform.once('disconnected', () => (disconnected = true));

    await restartDockerd({
      // while the engine is down, two containers die behind its back
      beforeStart: async () => {
        await waitFor('adapter noticed the engine went away', () => disconnected, 30_000);
        for (const c of [dies, always]) {
          try {
            process.kill(c.State.Pid, 'SIGKILL');
          } catch {
            // without live-restore the engine already stopped it
          }
        }
      },
    });
    await waitFor('resync after restart', () => platform.syncs > syncsBefore, 60_000);
    assert.ok(disconnected);
    assert.ok(platform.connected);

    // the truth, from the engine ("always" is brought back by its restart policy)
    const alwaysNow = await waitFor('"always" restarted', async () => {
      const x = await fx.inspect(always.Id);
      return x.State.Running ? x : undefined;
    }, 30_000);
    assert.notEqual(alwaysNow.State.Pid, always.State.Pid);
    const keepNow = await fx.inspect(keep.Id);
    const diesNow = await fx.inspect(dies.Id);
    assert.equal(diesNow.State.Running, false);
    if (liveRestore) {
      assert.equal(keepNow.State.Running, true, 'live-restore kept "keep" running');
      assert.equal(keepNow.State.Pid, keep.State.Pid);
    }

    await rec.wait('remove of the container that died while the engine was down', mark, (e) => e.type === 'remove' && e.key === key(dies), 30_000);
    await waitFor(
      '"always" re-reported with its new process',
      () => platform.snapshot().endpoints.find((e) => e.key === key(always) && e.netns.kind === 'path' && e.netns.path === `/proc/${alwaysNow.State.Pid}/ns/net`),
      30_000,
    );
    const synced = rec.since(mark).filter((e) => e.type === 'synced').pop();
    assert.ok(synced && synced.type === 'synced');
    assert.ok(!synced.keys.includes(key(dies)));
    if (keepNow.State.Running) {
      assert.ok(synced.keys.includes(key(keep)));
      // nothing changed for it: not re-reported
      assert.deepEqual(rec.since(mark).filter((e) => e.type === 'upsert' && e.spec.key === key(keep)), []);
      const spec = platform.snapshot().endpoints.find((e) => e.key === key(keep))!;
      assert.deepEqual(spec.netns, { kind: 'path', path: `/proc/${keep.State.Pid}/ns/net` });
    } else {
      assert.ok(rec.since(mark).some((e) => e.type === 'remove' && e.key === key(keep)));
    }
    // in the end the adapter says exactly what runs
    const running = [];
    for (const c of all) if ((await fx.inspect(c.Id)).State.Running) running.push(key(c));
    assert.deepEqual(
      platform.snapshot().endpoints.filter((e) => all.some((c) => e.key === key(c))).map((e) => e.key).sort(),
      running.sort(),
    );
  });
});
