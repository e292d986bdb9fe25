/**
 * Objects the daemon keeps one of per container share one V8 hidden class.
 * Built from spreads followed by more fields (or from conditional spreads),
 * each got a class of its own: about 400 bytes per endpoint, 4,987 classes
 * for 5,000 endpoints and 5,000 for the host's veths in a heap snapshot of
 * the benchmark's daemon. V8's own test function tells.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import { endpointSpec, recordingManager, TableNode } from '../helpers/recording-datapath.js';
import { slimLink } from '../../src/agent/netns.js';

v8.setFlagsFromString('--allow-natives-syntax');
const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;

function classes(objects: object[]): number {
  const reps: object[] = [];
  for (const o of objects) if (!reps.some((r) => sameMap(r, o))) reps.push(o);
  return reps.length;
}

describe('one hidden class per kind of per-container object', () => {
  it("the manager's endpoints", async () => {
    const { manager, node } = recordingManager();
    for (let i = 0; i < 40; i++) {
      const spec = endpointSpec(`c${i}`);
      node.interfaces.set(spec.name, TableNode.iface(i));
      await manager.upsertEndpoint(spec);
    }
    assert.equal(manager.endpoints.size, 40);
    assert.equal(classes([...manager.endpoints.values()]), 1);
  });

  it('the host links discovery keeps', () => {
    const links = Array.from({ length: 40 }, (_, i) =>
      slimLink({ ifindex: 10 + i, ifname: `v${i}`, address: '02:00:00:00:00:01', link_index: 2, link_netnsid: i, master: 'br0', flags: ['UP'], linkinfo: { info_kind: 'veth', info_slave_kind: 'bridge' } }),
    );
    assert.equal(classes(links), 1);
    assert.equal(classes(links.map((l) => l.linkinfo!)), 1);
    assert.deepEqual(links[0], { ifindex: 10, ifname: 'v0', address: '02:00:00:00:00:01', link_index: 2, link_netnsid: 0, master: 'br0', linkinfo: { info_kind: 'veth', info_slave_kind: 'bridge' } });
  });
});
