/**
 * Two hosts whose containers have a /24 each (no shared link): a container
 * reaches its dependency on the other host through its gateway. The stack
 * answers the gateway's ARP (a container with a remote dependency may
 * resolve it), sends the packet through the tunnel, and the receiving stack
 * delivers it with the MACs of a routed hop; nothing else gets through.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../helpers/cluster.js';
import { arping, neighbour, ping, startTcpEcho, tcpConnect, usableMac, waitFor } from '../helpers/probes.js';
import { ifindexIn, interfaceStat, run } from '../helpers/netns.js';
import { openBastionMaps } from '../../src/datapath/bpf-map.js';

describe('two hosts, routed container subnets', () => {
  let k: TestCluster;

  before(async () => {
    k = await TestCluster.create({ hosts: { a: [{ name: 'web' }, { name: 'lonely' }], b: [{ name: 'api' }] }, routed: true });
    await k.startAll();
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp', 'icmp']);
    await startTcpEcho(k.container('api').netns, k.container('api').ip, 8080);
  });
  after(async () => {
    await k?.destroy();
  });

  it('web reaches api on the other host through its gateway; replies come back the same way', async () => {
    const web = k.container('web');
    const api = k.container('api');
    assert.ok(await waitFor(async () => (await tcpConnect(web.netns, api.ip, 8080, 1)).ok, 15_000), 'web -> api:8080, routed');
    assert.ok(await ping(web.netns, api.ip, 2), 'ping web -> api, routed');
    // web's next hop is its gateway, answered with its own bridge's MAC
    const gw = await neighbour(web.netns, `${k.net}.1.1`);
    assert.equal(usableMac(gw), k.host('a').bridgeMac);
  });

  it('nothing else: another port, the reverse direction, a container without a remote dependency cannot even resolve its gateway', async () => {
    const web = k.container('web');
    const api = k.container('api');
    const lonely = k.container('lonely');
    assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok);
    assert.ok(!(await tcpConnect(api.netns, web.ip, 8080, 1)).ok);
    assert.ok(!(await tcpConnect(lonely.netns, api.ip, 8080, 1)).ok);
    assert.equal((await arping(lonely.netns, 'eth0', `${k.net}.1.1`, 2, 2)).replies, 0);
  });

  it('the underlay interface made again (a new index): web still reaches api on the other host, on the fast path again, and nothing else', { timeout: 90_000 }, async () => {
    const web = k.container('web');
    const api = k.container('api');
    const a = k.host('a');
    const maps = openBastionMaps(a.pin);
    try {
      assert.ok(await waitFor(async () => (await tcpConnect(web.netns, api.ip, 8080, 1)).ok, 15_000), 'web -> api before');
      const old = maps.tunnel.get().underlayIfindex;
      assert.equal(old, ifindexIn(a.netns, 'ul0'), 'the tunnel entry names the underlay interface');
      await run('ip', ['-n', a.netns, 'link', 'del', 'ul0']);
      await k.underlay.attach(a.netns, 10 + a.index, 'ul0');
      const fresh = ifindexIn(a.netns, 'ul0');
      assert.notEqual(fresh, old);
      // the old index is gone: the program falls back to the device (its MTU check on that index
      // fails), and within a check interval the senders' entry names the new interface
      assert.ok(await waitFor(async () => (await tcpConnect(web.netns, api.ip, 8080, 1)).ok, 30_000), 'web -> api again');
      assert.ok(await waitFor(() => maps.tunnel.get().underlayIfindex === fresh, 15_000), `the tunnel entry names ${maps.tunnel.get().underlayIfindex}, not the new ${fresh}`);
      // on the fast path again: ten connections leave by the program onto ul0, none through the VXLAN device
      const tx0 = interfaceStat(a.netns, 'bvx0', 'tx_packets');
      const ul0 = interfaceStat(a.netns, 'ul0', 'tx_packets');
      for (let i = 0; i < 10; i++) assert.ok((await tcpConnect(web.netns, api.ip, 8080, 1)).ok);
      const viaDevice = interfaceStat(a.netns, 'bvx0', 'tx_packets') - tx0;
      const viaUnderlay = interfaceStat(a.netns, 'ul0', 'tx_packets') - ul0;
      assert.ok(viaUnderlay >= 30, `ul0 sent ${viaUnderlay} packets for ten connections`);
      assert.ok(viaDevice < 5, `the VXLAN device sent ${viaDevice} packets: the program no longer redirects onto the new underlay`);
      assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok, 'and still nothing else');
    } finally {
      maps.close();
    }
  });
});
