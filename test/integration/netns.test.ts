/**
 * The topology helper every integration test builds on, and the agent's
 * discovery of a container interface from its network namespace, on a real
 * bridge + namespaces + veths topology.
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { discoverInterface } from '../../src/agent/netns.js';
import { HostAddressWatcher, listHostAddressDetails, listHostAddresses, listHostLocalAddresses } from '../../src/agent/host-addresses.js';
import { createTopology, freeSubnet24, run, uniquePrefix, type Topology } from '../helpers/netns.js';

async function leftovers(prefix: string): Promise<string[]> {
  const { stdout: links } = await run('ip', ['-o', 'link', 'show']);
  const { stdout: nets } = await run('ip', ['netns', 'list']);
  const { stdout: rules } = await run('iptables', ['-w', '-S', 'FORWARD'], { allowFail: true });
  return [
    ...links.split('\n').filter((l) => l.includes(`: ${prefix}`)),
    ...nets.split('\n').filter((l) => l.startsWith(`${prefix}-`)),
    ...rules.split('\n').filter((l) => l.includes(prefix)),
  ];
}

describe('test topology', () => {
  let topo: Topology;
  let net: string;

  before(async () => {
    net = await freeSubnet24();
    topo = await createTopology({
      bridgeIp: `${net}.1/24`,
      containers: [
        { name: 'web', ip: `${net}.2`, mac: '02:00:00:aa:00:02' },
        { name: 'db', ip: `${net}.3/24` },
      ],
    });
  });
  after(() => topo?.destroy());

  it('names everything with its prefix and within interface name limits', () => {
    assert.match(topo.prefix, /^bt[0-9a-f]{4}$/);
    assert.equal(topo.bridge, `${topo.prefix}br`);
    for (const c of topo.containers) {
      assert.ok(c.hostIf.startsWith(topo.prefix) && c.hostIf.length <= 15);
      assert.equal(c.netns, `${topo.prefix}-${c.name}`);
      assert.ok(existsSync(`/run/netns/${c.netns}`));
    }
    assert.equal(topo.container('web').mac, '02:00:00:aa:00:02');
    assert.match(topo.container('db').mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(topo.subnet, `${net}.0/24`);
  });

  it('connects containers to each other and to the gateway', async () => {
    assert.ok(await topo.ping('web', topo.container('db').ip, { timeoutS: 2 }), 'web -> db');
    assert.ok(await topo.ping('db', topo.bridgeIp, { timeoutS: 2 }), 'db -> gateway');
    assert.ok(!(await topo.ping('web', `${net}.250`, { timeoutS: 1 })), 'nobody at .250');
    const { stdout } = await topo.exec('web', 'ip', ['-4', 'route', 'show', 'default']);
    assert.match(stdout, new RegExp(`default via ${topo.bridgeIp.replace(/\./g, '\\.')} dev eth0`));
  });

  it('disables IPv6 in containers unless asked', async () => {
    const { stdout } = await topo.exec('web', 'sysctl', ['-n', 'net.ipv6.conf.eth0.disable_ipv6']);
    assert.equal(stdout.trim(), '1');
  });

  it('runs commands and long-lived processes in a namespace', async () => {
    const r = await topo.exec('web', 'ip', ['-br', 'addr', 'show', 'dev', 'eth0']);
    assert.match(r.stdout, new RegExp(topo.container('web').ip.replace(/\./g, '\\.')));
    const failed = await topo.exec('web', 'false', [], { allowFail: true });
    assert.notEqual(failed.code, 0);
    await assert.rejects(topo.exec('web', 'false'), /exit 1/);
    const child = topo.spawn('web', 'sleep', ['30']);
    await new Promise((r) => child.once('spawn', r));
    assert.ok(child.pid);
  });

  it('refuses a subnet that overlaps an existing one (another topology)', async () => {
    await assert.rejects(
      createTopology({ bridgeIp: `${net}.1/24`, containers: [], registerCleanup: false }),
      /overlaps host route/,
    );
  });

  it('adds and removes containers (IP reuse after churn)', async () => {
    const c = await topo.addContainer({ name: 'tmp', ip: `${net}.9` });
    assert.ok(await topo.ping('tmp', topo.bridgeIp, { timeoutS: 2 }));
    await topo.removeContainer('tmp');
    assert.ok(!existsSync(`/run/netns/${c.netns}`));
    assert.ok(!existsSync(`/sys/class/net/${c.hostIf}`));
    const again = await topo.addContainer({ name: 'tmp2', ip: `${net}.9` });
    assert.notEqual(again.hostIf, c.hostIf);
  });

  it('cleans up after a failed creation', async () => {
    const prefix = uniquePrefix();
    const other = await freeSubnet24();
    await assert.rejects(
      createTopology({
        prefix,
        bridgeIp: `${other}.1/24`,
        containers: [{ name: 'ok', ip: `${other}.2` }, { name: 'bad', ip: '10.1.2.3' }],
        registerCleanup: false,
      }),
      /not in/,
    );
    assert.deepEqual(await leftovers(prefix), []);
  });

  it('destroy() removes every namespace, link and iptables rule, and is idempotent', async () => {
    const other = await freeSubnet24();
    const t = await createTopology({ bridgeIp: `${other}.1/24`, containers: [{ name: 'x', ip: `${other}.2` }], registerCleanup: false });
    t.spawn('x', 'sleep', ['30']);
    assert.notDeepEqual(await leftovers(t.prefix), []);
    await t.destroy();
    await t.destroy();
    assert.deepEqual(await leftovers(t.prefix), []);
  });
});

describe('netns discovery', () => {
  let topo: Topology;

  before(async () => {
    const net = await freeSubnet24();
    topo = await createTopology({ bridgeIp: `${net}.1/24`, containers: [{ name: 'web', ip: `${net}.2`, mac: '02:00:00:bb:00:02' }] });
    // A non-veth interface to be refused.
    await topo.exec('web', 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
  });
  after(() => topo?.destroy());

  it('finds the container interface and its host side from a named netns', async () => {
    const web = topo.container('web');
    const d = await discoverInterface(web.netnsRef, 'eth0');
    assert.deepEqual(d, {
      ipv4: web.ip,
      prefixLen: 24,
      mac: '02:00:00:bb:00:02',
      ifindex: web.ifindex,
      peerIfindex: web.hostIfindex,
      hostIfname: web.hostIf,
      bridge: topo.bridge,
      gwMac: topo.bridgeMac,
      gateway: topo.bridgeIp,
    });
  });

  it('gives the same answer from a /proc/PID/ns/net path and from /run/netns', async () => {
    const web = topo.container('web');
    const expected = await discoverInterface(web.netnsRef, 'eth0');
    const child = topo.spawn('web', 'sleep', ['30']);
    await new Promise((r) => child.once('spawn', r));
    // `ip netns exec` execs sleep, but give it a moment to enter the namespace.
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await discoverInterface({ kind: 'path', path: `/proc/${child.pid}/ns/net` }, 'eth0'), expected);
    assert.deepEqual(await discoverInterface({ kind: 'path', path: `/run/netns/${web.netns}` }, 'eth0'), expected);
    child.kill('SIGKILL');
  });

  it('reports a missing gateway as undefined', async () => {
    const web = topo.container('web');
    await topo.exec('web', 'ip', ['route', 'del', 'default']);
    try {
      const d = await discoverInterface(web.netnsRef, 'eth0');
      assert.equal(d.gateway, undefined);
      assert.equal(d.peerIfindex, web.hostIfindex);
    } finally {
      await topo.exec('web', 'ip', ['route', 'add', 'default', 'via', topo.bridgeIp]);
    }
  });

  it('explains what is wrong', async () => {
    const web = topo.container('web');
    await assert.rejects(discoverInterface({ kind: 'name', name: `${topo.prefix}-nope` }, 'eth0'), new RegExp(`^Error: netns ${topo.prefix}-nope not found$`));
    await assert.rejects(discoverInterface({ kind: 'path', path: '/proc/999999999/ns/net' }, 'eth0'), /netns \/proc\/999999999\/ns\/net not found/);
    await assert.rejects(discoverInterface(web.netnsRef, 'eth9'), new RegExp(`interface eth9 not found in netns ${web.netns}`));
    await assert.rejects(discoverInterface(web.netnsRef, 'lo'), new RegExp(`lo in netns ${web.netns} is not a veth`));
    await assert.rejects(discoverInterface(web.netnsRef, 'br0'), /br0 in netns .* is not a veth \(it is a bridge\)/);
    await assert.rejects(discoverInterface({ kind: 'name', name: '../etc' }, 'eth0'), /invalid netns name/);
  });

  it('refuses a veth whose peer is not on the host', async () => {
    await topo.exec('web', 'ip', ['link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb']);
    await assert.rejects(discoverInterface(topo.container('web').netnsRef, 'va'), /same namespace, not on the host/);
  });

  it('fixes the MAC of a bridge that follows its ports, so a joining container does not move the gateway', async () => {
    const net = await freeSubnet24();
    const t = await createTopology({ kernelBridgeMac: true, bridgeIp: `${net}.1/24`, containers: [{ name: 'a', ip: `${net}.2`, mac: '02:00:00:cc:00:20' }] });
    try {
      const assignType = () => readFileSync(`/sys/class/net/${t.bridge}/addr_assign_type`, 'utf8').trim();
      assert.notEqual(assignType(), '3', 'the kernel bridge MAC starts as not set explicitly');
      const d = await discoverInterface(t.container('a').netnsRef, 'eth0');
      assert.equal(assignType(), '3', 'discovery set the bridge MAC explicitly');
      // A port with a lower MAC would have become the bridge's MAC.
      await t.addContainer({ name: 'b', ip: `${net}.3`, mac: '02:00:00:00:00:01' });
      const now = (await discoverInterface(t.container('b').netnsRef, 'eth0')).gwMac;
      assert.equal(now, d.gwMac, 'the bridge MAC did not change when a port with a lower MAC joined');
    } finally {
      await t.destroy();
    }
  });

  it("the host's own addresses are the local table: interface addresses, every directed broadcast, 127/8 and 0.0.0.0, never a container's", async () => {
    const all = await listHostLocalAddresses();
    const bcast = `${topo.bridgeIp.split('.').slice(0, 3).join('.')}.255`;
    for (const a of [topo.bridgeIp, bcast, '127.0.0.0/8', '127.0.0.1', '0.0.0.0']) assert.ok(all.includes(a), `${a} in ${all.join(', ')}`);
    assert.ok(!all.includes(topo.container('web').ip), 'container addresses are not host addresses');
  });

  it('the watcher reports an address added to the host as it appears (rtnetlink), and its removal', async () => {
    const seen: string[][] = [];
    const w = new HostAddressWatcher((a) => void seen.push(a), { resyncMs: 60_000 });
    await w.start();
    const addr = `${topo.bridgeIp.split('.').slice(0, 3).join('.')}.250`;
    try {
      const t0 = Date.now();
      execFileSync('ip', ['addr', 'add', `${addr}/32`, 'dev', topo.bridge]);
      while (!seen.some((a) => a.includes(addr)) && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
      const ms = Date.now() - t0;
      assert.ok(seen.some((a) => a.includes(addr)), `${addr} not reported within 2 s`);
      assert.ok(ms < 500, `${addr} reported after ${ms} ms`);
      execFileSync('ip', ['addr', 'del', `${addr}/32`, 'dev', topo.bridge]);
      const t1 = Date.now();
      while (seen[seen.length - 1]!.includes(addr) && Date.now() - t1 < 2000) await new Promise((r) => setTimeout(r, 5));
      assert.ok(!seen[seen.length - 1]!.includes(addr), 'removal reported');
    } finally {
      w.stop();
      try {
        execFileSync('ip', ['addr', 'del', `${addr}/32`, 'dev', topo.bridge], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  });

  it('lists the host addresses, the bridge and loopback included', async () => {
    const all = await listHostAddresses();
    assert.ok(all.includes(topo.bridgeIp), `${topo.bridgeIp} in ${all.join(', ')}`);
    assert.ok(all.includes('127.0.0.1'));
    assert.ok(!all.includes(topo.container('web').ip), 'container addresses are not host addresses');
    const details = await listHostAddressDetails();
    const br = details.find((d) => d.address === topo.bridgeIp);
    assert.deepEqual(br, { address: topo.bridgeIp, prefixLen: 24, ifname: topo.bridge, ifindex: topo.bridgeIfindex, scope: 'global' });
  });
});
