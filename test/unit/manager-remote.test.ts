/**
 * The manager with other nodes' endpoints (cluster mode), on a datapath
 * double that keeps the maps the writes build: a remote endpoint reaches
 * this node's maps only as the peer of a local endpoint (and goes when the
 * last local endpoint that needs it does), a wildcard rule brings every one,
 * remote nodes' addresses are never world, identities come from the cluster
 * (or a refusal guards the port), and 1,000 remote endpoints nobody here
 * depends on cost nothing in the maps.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Manager, type EndpointIdentities } from '../../src/manager/manager.js';
import type { Discovered, NodePort } from '../../src/manager/ports.js';
import { RecordingDatapath } from '../helpers/recording-datapath.js';
import type { EndpointSpec } from '../../src/manager/endpoint.js';
import type { RemoteEndpoint } from '../../src/manager/remote.js';
import type { Rule } from '../../src/policy/model.js';
import { ID_REMOTE_NODE, MAP_NAMES, decodeIpKey, decodeIpcacheKey, decodeIpcacheVal, decodeNeighKey, decodePolicyKey, decodeRemoteEndpoint } from '../../src/datapath/layout.js';
import { LOCAL_ID_FLOOR } from '../../src/cluster/keys.js';

/** The maps as the recorded writes leave them: map → hex key → value. */
function mapsOf(dp: RecordingDatapath): Map<string, Map<string, Buffer>> {
  const maps = new Map<string, Map<string, Buffer>>();
  for (const op of dp.ops) {
    let m = maps.get(op.map);
    if (!m) maps.set(op.map, (m = new Map()));
    if (op.op === 'delete') m.delete(op.key.toString('hex'));
    else m.set(op.key.toString('hex'), op.value);
  }
  return maps;
}
const keysOf = (dp: RecordingDatapath, map: string): Buffer[] => [...(mapsOf(dp).get(map)?.keys() ?? [])].map((k) => Buffer.from(k, 'hex'));
const remoteIps = (dp: RecordingDatapath): string[] => keysOf(dp, MAP_NAMES.remote).map((k) => decodeIpKey(k)).sort();
const entries = (dp: RecordingDatapath): number => [...mapsOf(dp).values()].reduce((n, m) => n + m.size, 0);

const locals: Record<string, Discovered> = {
  web: { ipv4: '10.50.1.2', prefixLen: 16, mac: '02:00:00:00:01:02', hostIfindex: 12, hostIfname: 'v12', gwMac: '02:00:00:00:00:01' },
  cache: { ipv4: '10.50.1.3', prefixLen: 16, mac: '02:00:00:00:01:03', hostIfindex: 13, hostIfname: 'v13', gwMac: '02:00:00:00:00:01' },
};
const node: NodePort = { discover: async (s) => locals[s.key]!, hostAddresses: async () => ['10.50.1.1', '192.168.7.11'] };
const spec = (name: string, labels: Record<string, string>): EndpointSpec => ({ key: name, name, netns: { kind: 'name', name }, interface: 'eth0', labels });
const remote = (name: string, identity: number, ip: string, labels: Record<string, string>): RemoteEndpoint => ({
  id: `b/${name}`,
  node: 'b',
  nodeIp: '192.168.7.12',
  name,
  identity,
  ipv4: ip,
  mac: '02:00:00:00:02:02',
  labels,
});
const rule = (id: string, direction: Rule['direction'], subject: Record<string, string>, peer: Rule['peers'][number], ports: Rule['ports'] = [{ protocol: 'tcp', from: 5432, to: 5432 }]): Rule => ({
  id,
  direction,
  subject: { matchLabels: subject },
  peers: [peer],
  ports,
});

function setup(identities?: EndpointIdentities) {
  const dp = new RecordingDatapath();
  const m = new Manager({ datapath: dp, node, log: pino({ level: 'silent' }), identities, localIdentityFloor: LOCAL_ID_FLOOR });
  return { dp, m };
}

let nextId = 1000;
const cluster: EndpointIdentities = { identify: async () => ({ identity: nextId++ }) };

describe('manager with remote endpoints (cluster mode)', () => {
  it('a remote endpoint reaches the maps only as the peer of a local endpoint, and leaves with the last one that needs it', async () => {
    const { dp, m } = setup(cluster);
    await m.setHostAddresses(['10.50.1.1']);
    await m.setPolicy({ mode: 'enforce', rules: [rule('web-db', 'egress', { app: 'web' }, { kind: 'endpoints', selector: { matchLabels: { app: 'db' } } })] });
    await m.upsertEndpoints([{ spec: spec('web', { app: 'web' }), known: locals.web! }, { spec: spec('cache', { app: 'cache' }), known: locals.cache! }]);
    const db = remote('db', 2001, '10.50.2.2', { app: 'db' });
    const other = remote('other', 2002, '10.50.2.3', { app: 'other' });
    await m.setRemoteEndpoints([db, other], []);
    assert.deepEqual(remoteIps(dp), ['10.50.2.2']);
    const val = decodeRemoteEndpoint(mapsOf(dp).get(MAP_NAMES.remote)!.values().next().value!);
    assert.deepEqual(val, { identity: 2001, nodeIpv4: '192.168.7.12', mac: '02:00:00:00:02:02', flags: 0 });
    const webId = m.endpoints.get('web')!.identity;
    const pol = keysOf(dp, MAP_NAMES.policy).map(decodePolicyKey);
    assert.ok(pol.some((k) => k.epId === webId && k.peerId === 2001 && k.dport === 5432));
    const neigh = keysOf(dp, MAP_NAMES.neigh).map(decodeNeighKey);
    assert.ok(neigh.some((k) => k.epId === webId && k.peerId === 2001), 'web may resolve db');
    assert.ok(!neigh.some((k) => k.epId === 2001), 'no pair keyed by the remote endpoint');
    // the remote endpoint's labels change so that no rule names it any more
    await m.setRemoteEndpoints([{ ...db, labels: { app: 'nothing' } }], []);
    assert.deepEqual(remoteIps(dp), []);
    assert.ok(!keysOf(dp, MAP_NAMES.policy).map(decodePolicyKey).some((k) => k.peerId === 2001));
    await m.setRemoteEndpoints([db], []);
    assert.deepEqual(remoteIps(dp), ['10.50.2.2']);
    await m.removeEndpoint('web');
    assert.deepEqual(remoteIps(dp), [], 'web was the only local endpoint that needed db');
    await m.upsertEndpoint(spec('web', { app: 'web' }));
    await m.setRemoteEndpoints([], ['b/db']);
    assert.deepEqual(remoteIps(dp), []);
    assert.equal(m.identityName(2002), 'b/other');
  });

  it('ingress rules bring the remote senders in; a wildcard peer brings every remote endpoint', async () => {
    const { dp, m } = setup(cluster);
    await m.setPolicy({ mode: 'enforce', rules: [rule('to-cache', 'ingress', { app: 'cache' }, { kind: 'endpoints', selector: { matchLabels: { app: 'api' } } })] });
    await m.upsertEndpoints([{ spec: spec('cache', { app: 'cache' }), known: locals.cache! }]);
    await m.setRemoteEndpoints([remote('api', 3001, '10.50.3.1', { app: 'api' }), remote('x', 3002, '10.50.3.2', { app: 'x' })], []);
    assert.deepEqual(remoteIps(dp), ['10.50.3.1']);
    await m.changeRules([rule('cache-out', 'egress', { app: 'cache' }, { kind: 'any' }, [])], []);
    assert.deepEqual(remoteIps(dp), ['10.50.3.1', '10.50.3.2']);
    await m.setRemoteEndpoints([remote('y', 3003, '10.50.3.3', { app: 'y' })], []);
    assert.deepEqual(remoteIps(dp), ['10.50.3.1', '10.50.3.2', '10.50.3.3'], 'a new remote endpoint reaches a wildcard subject');
  });

  it("other nodes' underlay addresses are remote-node in the ipcache, never world", async () => {
    const { dp, m } = setup(cluster);
    await m.setHostAddresses(['192.168.7.11']);
    await m.setRemoteNodes(['192.168.7.12', '192.168.7.13', '192.168.7.11']);
    const ipc = [...mapsOf(dp).get(MAP_NAMES.ipcache)!.entries()].map(([k, v]) => [decodeIpcacheKey(Buffer.from(k, 'hex')), decodeIpcacheVal(v)] as const);
    const remoteNode = ipc.filter(([, v]) => v.identity === ID_REMOTE_NODE).map(([k]) => k.addr).sort();
    assert.deepEqual(remoteNode, ['192.168.7.12', '192.168.7.13'], "this node's own address stays host");
    assert.equal(m.identityName(ID_REMOTE_NODE), 'remote-node');
  });

  it('identities come from the cluster (CIDR identities stay above them); a refused endpoint keeps a guarded port and is listed unprotected', async () => {
    const refusing: EndpointIdentities = {
      identify: async (s) => (s.key === 'cache' ? { refused: 'address 10.50.1.3 is already held by node b (endpoint x)' } : { identity: 777 }),
    };
    const { dp, m } = setup(refusing);
    await m.setPolicy({ mode: 'enforce', rules: [rule('web-out', 'egress', { app: 'web' }, { kind: 'cidr', cidr: '172.16.0.0/12' })] });
    await m.upsertEndpoints([{ spec: spec('web', { app: 'web' }), known: locals.web! }, { spec: spec('cache', { app: 'cache' }), known: locals.cache! }]);
    assert.equal(m.endpoints.get('web')!.identity, 777);
    assert.ok(!m.endpoints.has('cache'));
    assert.match(m.unprotected.get('cache')!.reason, /held by node b/);
    assert.ok(dp.attached.has(13), 'the refused port drops everything');
    const cidrIds = [...mapsOf(dp).get(MAP_NAMES.ipcache)!.values()].map((v) => decodeIpcacheVal(v).identity).filter((id) => id > 2 && id !== 777);
    assert.ok(cidrIds.length > 0 && cidrIds.every((id) => id >= LOCAL_ID_FLOOR), `CIDR identities ${cidrIds}`);
    await m.refuseEndpoint('web', 'lost a race');
    assert.ok(!m.endpoints.has('web'));
    assert.equal(m.unprotected.get('web')!.reason, 'lost a race');
  });

  it('1,000 remote endpoints nobody here depends on cost no map entry', async () => {
    const { dp, m } = setup(cluster);
    await m.setPolicy({ mode: 'enforce', rules: [rule('web-db', 'egress', { app: 'web' }, { kind: 'endpoints', selector: { matchLabels: { app: 'db' } } })] });
    await m.upsertEndpoints([{ spec: spec('web', { app: 'web' }), known: locals.web! }]);
    const before = entries(dp);
    const many = Array.from({ length: 1000 }, (_, i) => remote(`svc${i}`, 5000 + i, `10.51.${i >> 8}.${i & 255}`, { app: `svc${i}` }));
    const t0 = performance.now();
    await m.setRemoteEndpoints(many, []);
    const ms = performance.now() - t0;
    assert.equal(entries(dp), before);
    assert.ok(ms < 2000, `${ms} ms for 1,000 remote endpoints`);
    await m.setRemoteEndpoints([remote('db', 4999, '10.52.0.1', { app: 'db' })], []);
    assert.deepEqual(remoteIps(dp), ['10.52.0.1']);
  });
});
