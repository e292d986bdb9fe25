/**
 * The cluster's key layout and the view's decisions, without etcd: which
 * endpoint records a node believes (node alive, identity granted to it,
 * address not held by an earlier record), in any order of events, and the
 * roles' grants.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ClusterView, type KeyEvent } from '../../src/cluster/view.js';
import {
  CLUSTER_ID_MAX,
  endpointKey,
  identityRecordKey,
  nodeKey,
  parseKey,
  policyKey,
  checkNodeName,
  type EndpointRecord,
} from '../../src/cluster/keys.js';
import { nodeGrants } from '../../src/cluster/roles.js';

let rev = 100;
function put(key: string, value: unknown, version = 1): KeyEvent {
  rev++;
  return { type: 'put', key, value: JSON.stringify(value), meta: { createRevision: rev, modRevision: rev, version, lease: '7' } };
}
const node = (name: string, ip: string) => put(nodeKey(name), { name, underlay: ip, underlayInterface: 'eth0', subnets: [], tunnelPort: 4789, startedAt: 'x', version: 'v' });
const epRec = (key: string, identity: number, ipv4: string): EndpointRecord => ({ key, name: key, identity, ipv4, mac: '02:00:00:00:00:0a', labels: { app: key } });
const endpoint = (n: string, key: string, identity: number, ip: string) => put(endpointKey(n, key), epRec(key, identity, ip));
const grant = (view: ClusterView, id: number, n: string, key: string) => view.claims.set(id, { record: { node: n, endpoint: key, allocatedAt: 'x' }, version: 1 });

describe('cluster keys', () => {
  it('every key parses back to what made it (endpoint keys with slashes included)', () => {
    fc.assert(
      fc.property(fc.constantFrom('a', 'node-1', 'b2'), fc.string({ minLength: 1, maxLength: 30 }), (n, key) => {
        assert.deepEqual(parseKey(endpointKey(n, key)), { kind: 'endpoint', node: n, endpoint: key });
        assert.deepEqual(parseKey(policyKey(key)), { kind: 'policy', name: key });
      }),
    );
    assert.deepEqual(parseKey(nodeKey('a')), { kind: 'node', node: 'a' });
    assert.deepEqual(parseKey(identityRecordKey(300)), { kind: 'identity', id: 300 });
    assert.equal(parseKey('/bastion/endpoints/a').kind, 'other');
    assert.equal(parseKey('/bastion/nodes/A_b').kind, 'other');
  });

  it('node names are DNS labels: no slash, so one node prefix never covers another', () => {
    assert.equal(checkNodeName('web-1'), undefined);
    for (const bad of ['', 'A', 'a/b', '-a', 'a-', 'a_b', 'x'.repeat(64)]) assert.ok(checkNodeName(bad), bad);
  });

  it("a node's role writes its node key, its endpoints' prefix with the slash, and the identities", () => {
    const g = nodeGrants('a');
    assert.deepEqual(
      g.map((x) => [x.permission, x.key, x.prefix]),
      [
        ['Read', '/bastion/', true],
        ['Readwrite', '/bastion/nodes/a', false],
        ['Readwrite', '/bastion/endpoints/a/', true],
        ['Readwrite', '/bastion/identities/', true],
      ],
    );
  });
});

describe('cluster view', () => {
  it('believes an endpoint once its node is alive and its identity granted to it; its node going takes it away', () => {
    const v = new ClusterView('self');
    grant(v, 300, 'a', 'web');
    let d = v.apply([endpoint('a', 'web', 300, '10.1.0.2')]);
    assert.equal(d.upserted.length, 0);
    assert.equal(v.verdict('a/web')?.state, 'pending');
    d = v.apply([node('a', '192.168.0.1')]);
    assert.deepEqual(d.upserted.map((e) => [e.id, e.nodeIp, e.identity]), [['a/web', '192.168.0.1', 300]]);
    assert.ok(d.nodesChanged);
    d = v.apply([{ type: 'delete', key: nodeKey('a') }]);
    assert.deepEqual(d.removed, ['a/web']);
    assert.deepEqual(v.remoteNodeAddresses(), []);
  });

  it('refuses an identity that was never granted, granted to another endpoint, or whose record was tampered with', () => {
    const v = new ClusterView('self');
    v.apply([node('a', '192.168.0.1'), node('b', '192.168.0.2')]);
    v.claims.set(301, { version: 0 });
    grant(v, 302, 'a', 'db');
    v.apply([endpoint('a', 'x', 301, '10.1.0.3'), endpoint('b', 'y', 302, '10.1.0.4'), endpoint('a', 'db', 302, '10.1.0.5')]);
    assert.match((v.verdict('a/x') as { reason: string }).reason, /301 was never granted/);
    assert.match((v.verdict('b/y') as { reason: string }).reason, /302 was granted to a\/db, not to b\/y/);
    assert.equal(v.verdict('a/db')?.state, 'ok');
    const d = v.apply([put(identityRecordKey(302), { node: 'b', endpoint: 'y', allocatedAt: 'x' }, 2)]);
    assert.deepEqual(d.tampered.map((t) => t.what), ['rewritten (version 2)']);
    assert.deepEqual(d.removed, ['a/db']);
    assert.equal(v.verdict('b/y')?.state, 'refused');
  });

  it('an address belongs to the earliest record: the later one is refused until the holder leaves, and the node that holds it is told', () => {
    const v = new ClusterView('b');
    v.apply([node('a', '192.168.0.1'), node('b', '192.168.0.2')]);
    grant(v, 400, 'a', 'one');
    grant(v, 401, 'b', 'two');
    v.apply([endpoint('a', 'one', 400, '10.9.0.9')]);
    let d = v.apply([endpoint('b', 'two', 401, '10.9.0.9')]);
    assert.deepEqual(d.own.map((o) => [o.key, o.verdict.state]), [['two', 'refused']]);
    assert.match((d.own[0]!.verdict as { reason: string }).reason, /already held by node a \(endpoint one\); b\/two is refused/);
    assert.equal(v.holderOf('10.9.0.9')?.id, 'a/one');
    d = v.apply([{ type: 'delete', key: endpointKey('a', 'one') }]);
    assert.deepEqual(d.removed, ['a/one']);
    assert.deepEqual(d.own.map((o) => [o.key, o.verdict.state]), [['two', 'ok']]);
    assert.equal(v.holderOf('10.9.0.9')?.id, 'b/two');
    assert.deepEqual(v.remoteEndpoints(), [], "the node's own endpoints are not remote");
  });

  it('any order of the same events gives the same believed endpoints (property)', () => {
    const events = (): KeyEvent[] => {
      rev = 1000;
      return [
        node('a', '192.168.0.1'),
        node('b', '192.168.0.2'),
        endpoint('a', 'p', 500, '10.7.0.1'),
        endpoint('b', 'q', 501, '10.7.0.1'),
        endpoint('b', 'r', 502, '10.7.0.2'),
        endpoint('a', 's', 503, '10.7.0.3'),
      ];
    };
    const fresh = () => {
      const v = new ClusterView('z');
      grant(v, 500, 'a', 'p');
      grant(v, 501, 'b', 'q');
      grant(v, 502, 'b', 'r');
      grant(v, 503, 'a', 's');
      return v;
    };
    const all = fresh();
    all.apply(events());
    const want = all.remoteEndpoints().map((e) => e.id).sort();
    assert.deepEqual(want, ['a/p', 'a/s', 'b/r']);
    fc.assert(
      fc.property(fc.shuffledSubarray(events().map((_, i) => i), { minLength: 6, maxLength: 6 }), fc.integer({ min: 1, max: 6 }), (order, chunk) => {
        const evs = events();
        const v = fresh();
        const seen = new Set<string>();
        for (let i = 0; i < order.length; i += chunk) {
          const d = v.apply(order.slice(i, i + chunk).map((j) => evs[j]!));
          for (const e of d.upserted) seen.add(e.id);
          for (const id of d.removed) seen.delete(id);
        }
        assert.deepEqual(v.remoteEndpoints().map((e) => e.id).sort(), want);
        assert.deepEqual([...seen].sort(), want, 'the deltas add up to the view');
      }),
    );
  });

  it('policies: validated, one per key, the name must be the key; a resync of the same revision reports nothing', () => {
    const v = new ClusterView('self');
    const ok = put(policyKey('web-db'), { name: 'web-db', from: { app: 'web' }, to: { app: 'db' }, ports: ['5432/tcp'] });
    let d = v.apply([ok, put(policyKey('bad'), { name: 'bad', from: { app: 'x' }, to: { app: 'y' }, ports: ['70000/tcp'] }), put(policyKey('other'), { name: 'x', from: 'host', to: { app: 'y' } })]);
    assert.deepEqual(d.policiesSet.map((p) => p.name), ['web-db']);
    assert.equal(d.invalid.length, 2);
    assert.match(d.invalid.map((i) => i.error).join('\n'), /ports/);
    assert.match(d.invalid.map((i) => i.error).join('\n'), /not the policy of this key/);
    d = v.apply([ok]);
    assert.deepEqual(d.policiesSet, []);
    d = v.apply([{ type: 'delete', key: policyKey('web-db') }]);
    assert.deepEqual(d.policiesDeleted, ['web-db']);
  });

  it('records that do not validate are ignored with the key and field named', () => {
    const v = new ClusterView('self');
    const d = v.apply([put(endpointKey('a', 'x'), { ...epRec('x', CLUSTER_ID_MAX + 1, '10.0.0.1') })]);
    assert.match(d.invalid[0]!.error, /\/bastion\/endpoints\/a\/x: identity/);
    assert.equal(v.endpoints.size, 0);
  });
});
