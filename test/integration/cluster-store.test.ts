/**
 * The cluster store against a real etcd (TLS, client-certificate users,
 * the roles `bastion cluster init` creates): certificates, permissions
 * (a node's credential writes only its own keys), identity allocation under
 * contention, sessions that publish and watch, lease expiry, address
 * conflicts, tampered identity records, and etcd stopped and restarted.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { createUnderlay, startTestEtcd, uniqueClusterPrefix, type TestEtcd, type Underlay } from '../helpers/etcd.js';
import { ClusterSession } from '../../src/cluster/session.js';
import { allocateIdentity, readIdentity } from '../../src/cluster/identities.js';
import { IDENTITY_COUNTER_KEY, endpointKey, identityRecordKey, nodeKey, policyKey, type EndpointRecord, type NodeRecord } from '../../src/cluster/keys.js';
import { isPermissionDenied } from '../../src/cluster/etcd.js';
import { addClusterPolicies, deleteClusterPolicies, listClusterPolicies } from '../../src/cluster/policies.js';
import type { ViewDelta } from '../../src/cluster/view.js';
import { waitFor } from '../helpers/probes.js';
import { bastion } from '../helpers/bastion-daemon.js';

const log = pino({ level: 'silent' });
const NODES = ['a', 'b', 'c'];

function nodeRecord(name: string, ip: string): NodeRecord {
  return { name, underlay: ip, underlayInterface: 'ul0', subnets: ['10.200.0.0/16'], tunnelPort: 4789, startedAt: new Date().toISOString(), version: 'test' };
}

function ep(key: string, identity: number, ip: string, labels: Record<string, string> = { app: key }): EndpointRecord {
  return { key, name: key, identity, ipv4: ip, mac: '02:00:00:00:00:01', labels };
}

async function denied(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (err) {
    if (isPermissionDenied(err)) return true;
    throw err;
  }
}

describe('cluster store on a real etcd', () => {
  let u: Underlay;
  let etcd: TestEtcd;
  const sessions: ClusterSession[] = [];

  const session = (node: string, ttl = 2) => {
    const s = new ClusterSession({ client: etcd.client(`node-${node}`), node, nodeRecord: nodeRecord(node, `10.0.0.${node.charCodeAt(0)}`), leaseTtlS: ttl, log });
    sessions.push(s);
    return s;
  };

  before(async () => {
    u = await createUnderlay(uniqueClusterPrefix());
    etcd = await startTestEtcd(u, NODES, { attachSelf: true });
  });
  after(async () => {
    for (const s of sessions) await s.close().catch(() => undefined);
    await etcd?.destroy();
    await u?.destroy();
  });

  it('cluster certs: a CA, etcd, root, admin and one client certificate per node, CN = etcd user, keys 0600', () => {
    for (const [file, cn] of [['node-a', 'bastion-node-a'], ['admin', 'bastion-admin'], ['root', 'root'], ['etcd-server', 'etcd-server']] as const) {
      const pem = join(etcd.certs, `${file}.pem`);
      execFileSync('openssl', ['verify', '-CAfile', join(etcd.certs, 'ca.pem'), pem]);
      const subject = execFileSync('openssl', ['x509', '-in', pem, '-noout', '-subject']).toString();
      assert.match(subject, new RegExp(`CN ?= ?${cn}\\b`));
      assert.equal(statSync(join(etcd.certs, `${file}-key.pem`)).mode & 0o777, 0o600);
    }
    const san = execFileSync('openssl', ['x509', '-in', join(etcd.certs, 'etcd-server.pem'), '-noout', '-ext', 'subjectAltName']).toString();
    assert.ok(san.includes(etcd.ip), san);
  });

  it("a node's credential writes its own keys and nothing else: no other node's endpoints or node record, no policy", async () => {
    const a = etcd.client('node-a');
    await a.put(nodeKey('a')).value('{}').exec();
    await a.put(endpointKey('a', 'x')).value('{}').exec();
    assert.ok(await denied(a.put(endpointKey('b', 'x')).value('{}').exec()), 'wrote node b endpoint');
    assert.ok(await denied(a.put(nodeKey('b')).value('{}').exec()), 'wrote node b record');
    assert.ok(await denied(a.put(policyKey('evil')).value('{}').exec()), 'wrote a policy');
    // node "a" must not cover node "ab" through a prefix without its slash
    assert.ok(await denied(a.put('/bastion/endpoints/ab/x').value('{}').exec()), 'prefix of a covers ab');
    assert.ok(await denied(a.put('/bastion/nodesx').value('{}').exec()), 'wrote outside its keys');
    // every node reads everything
    const b = etcd.client('node-b');
    assert.equal(await b.get(endpointKey('a', 'x')).string(), '{}');
    // and the admin writes policies
    const admin = etcd.client('admin');
    await admin.put(policyKey('ok')).value('{}').exec();
    await admin.delete().key(policyKey('ok')).exec();
    await a.delete().key(endpointKey('a', 'x')).exec();
    await a.delete().key(nodeKey('a')).exec();
  });

  it("a node's credential cannot revoke another node's lease", async () => {
    const a = etcd.client('node-a');
    const lease = a.lease(30);
    await lease.put(endpointKey('a', 'leased')).value('{}').exec();
    const id = await lease.grant();
    const b = etcd.client('node-b');
    assert.ok(await denied(b.leaseClient.leaseRevoke({ ID: id })), "b revoked a's lease");
    assert.equal(await a.get(endpointKey('a', 'leased')).string(), '{}');
    await lease.revoke();
  });

  it('identities: concurrent allocations from two nodes are all different, each with a write-once record', async () => {
    const a = etcd.client('node-a');
    const b = etcd.client('node-b');
    const ids = await Promise.all([
      ...Array.from({ length: 15 }, (_, i) => allocateIdentity(a, 'a', `ep${i}`)),
      ...Array.from({ length: 15 }, (_, i) => allocateIdentity(b, 'b', `ep${i}`)),
    ]);
    assert.equal(new Set(ids).size, ids.length, `duplicates in ${ids.join(',')}`);
    assert.ok(ids.every((id) => id >= 256 && id <= 0xffffff));
    const next = Number(await a.get(IDENTITY_COUNTER_KEY).string());
    assert.equal(next, Math.max(...ids) + 1);
    const rec = await readIdentity(a, ids[0]!);
    assert.equal(rec.version, 1);
    assert.equal(rec.record?.node, 'a');
  });

  it('a rewound counter never grants a number twice: allocation skips held records', async () => {
    const root = etcd.client('root');
    const a = etcd.client('node-a');
    const first = await allocateIdentity(a, 'a', 'rewind-1');
    await root.put(IDENTITY_COUNTER_KEY).value(String(first)).exec(); // as if rewound
    const second = await allocateIdentity(a, 'a', 'rewind-2');
    assert.ok(second > first, `${second} after ${first}`);
    assert.equal((await readIdentity(a, first)).record?.endpoint, 'rewind-1');
  });

  it('sessions: endpoints one node publishes reach the others, and go when its lease expires', async () => {
    const deltasB: ViewDelta[] = [];
    const sa = session('a');
    const sb = session('b');
    await sa.start(() => undefined);
    await sb.start((d) => void deltasB.push(d));
    const idWeb = await sa.allocateIdentity('web');
    sa.setEndpoint(ep('web', idWeb, '10.200.1.2'));
    sa.beginPublishing();
    sb.beginPublishing();
    assert.ok(await sa.settled());
    assert.ok(await waitFor(() => sb.view.remoteEndpoints().some((e) => e.key === 'web' && e.identity === idWeb), 5000), 'b never saw a/web');
    const seen = sb.view.remoteEndpoints().find((e) => e.key === 'web')!;
    assert.equal(seen.nodeIp, '10.0.0.97');
    assert.ok(deltasB.some((d) => d.upserted.some((e) => e.id === 'a/web')));

    // a dies without a word (no revoke): its lease runs out, b drops its endpoints
    const t0 = Date.now();
    await sa.close();
    assert.ok(await waitFor(() => !sb.view.remoteEndpoints().some((e) => e.key === 'web'), 10_000), 'a/web outlived its lease');
    assert.ok(Date.now() - t0 >= 1000, 'removed before the lease could expire');
    assert.ok(deltasB.some((d) => d.removed.includes('a/web')));
    assert.ok(!sb.view.nodes.has('a'));
    // and its identity is never granted again
    const again = await sb.allocateIdentity('web');
    assert.notEqual(again, idWeb);
  });

  it('an address another node already holds is refused, naming both nodes; the holder keeps it', async () => {
    const sc = session('c', 5);
    const sb = sessions.find((s) => s.node === 'b')!;
    await sc.start(() => undefined);
    sc.beginPublishing();
    const idB = await sb.allocateIdentity('db');
    sb.setEndpoint(ep('db', idB, '10.200.2.2'));
    assert.ok(await sb.settled());
    assert.ok(await waitFor(() => sc.view.remoteEndpoints().some((e) => e.key === 'db'), 5000));
    const idC = await sc.allocateIdentity('db2');
    sc.setEndpoint(ep('db2', idC, '10.200.2.2'));
    assert.ok(await sc.settled());
    assert.ok(await waitFor(() => sc.view.verdict('c/db2')?.state === 'refused', 5000), 'c/db2 not refused');
    const v = sc.view.verdict('c/db2') as { reason: string };
    assert.match(v.reason, /already held by node b/);
    assert.match(v.reason, /c\/db2/);
    assert.ok(await waitFor(() => sb.view.verdict('c/db2')?.state === 'refused', 5000), 'b believes c/db2');
    assert.equal(sb.view.verdict('b/db')?.state, 'ok');
    sc.deleteEndpoint('db2');
    assert.ok(await sc.settled());
  });

  it("an endpoint claiming another endpoint's identity is refused, and a rewritten identity record is reported as tampering", async () => {
    const sb = sessions.find((s) => s.node === 'b')!;
    const sc = sessions.find((s) => s.node === 'c')!;
    const idB = sb.view.resolved('b/db')!.identity;
    // c claims b's identity for a container of its own
    sc.setEndpoint(ep('thief', idB, '10.200.3.3', { app: 'db' }));
    assert.ok(await sc.settled());
    assert.ok(await waitFor(() => sb.view.verdict('c/thief')?.state === 'refused', 5000), 'c/thief believed');
    assert.match((sb.view.verdict('c/thief') as { reason: string }).reason, new RegExp(`identity ${idB} was granted to b/db`));
    // a stolen credential rewrites the record to hand b's identity to c
    const deltas: ViewDelta[] = [];
    sb.on('delta', (d: ViewDelta) => deltas.push(d));
    const c = etcd.client('node-c');
    await c.put(identityRecordKey(idB)).value(JSON.stringify({ node: 'c', endpoint: 'thief', allocatedAt: new Date().toISOString() })).exec();
    assert.ok(await waitFor(() => deltas.some((d) => d.tampered.some((t) => t.key === identityRecordKey(idB))), 5000), 'tampering not reported');
    assert.equal(sb.view.verdict('c/thief')?.state, 'refused', 'the rewritten record was believed');
    sc.deleteEndpoint('thief');
    assert.ok(await sc.settled());
  });

  it('etcd stopped and started again: changes made meanwhile are published once it is back, in order', async () => {
    const sb = sessions.find((s) => s.node === 'b')!;
    const sc = sessions.find((s) => s.node === 'c')!;
    const idX = await sc.allocateIdentity('later');
    const idCache = await sb.allocateIdentity('cache');
    sb.setEndpoint(ep('cache', idCache, '10.200.5.5'));
    assert.ok(await sb.settled());
    assert.ok(await waitFor(() => sc.view.resolved('b/cache') !== undefined, 5000));
    await etcd.stop();
    sc.setEndpoint(ep('later', idX, '10.200.4.4'));
    sc.setEndpoint(ep('later', idX, '10.200.4.5')); // changed again while the store is away
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await sc.settled(100), false, 'claims to have published with etcd down');
    await etcd.start();
    assert.ok(await waitFor(() => sb.view.resolved('c/later')?.ipv4 === '10.200.4.5', 15_000), `b never saw c/later at its last address; c: ${JSON.stringify(sc.status())}`);
    // b's endpoint is there for c again (its lease survived the restart, or b granted a new one and wrote it again)
    assert.ok(await waitFor(() => sc.view.resolved('b/cache') !== undefined, 15_000), `c lost b/cache: ${JSON.stringify(sb.status())} ${JSON.stringify(sc.view.verdict('b/cache'))}`);
  });

  it('cluster policies: validated, stored one key each, listed and deleted all or nothing', async () => {
    const admin = etcd.client('admin');
    const bad = await addClusterPolicies(admin, JSON.stringify({ policies: [{ name: 'x', from: { app: 'a' }, to: { app: 'b' }, ports: ['99999/tcp'] }] }), 'cli');
    assert.equal(bad.ok, false);
    const ok = await addClusterPolicies(admin, JSON.stringify({ policies: [{ name: 'web-to-db', from: { app: 'web' }, to: { app: 'db' }, ports: ['5432/tcp'] }] }), 'cli');
    assert.ok(ok.ok);
    const sb = sessions.find((s) => s.node === 'b')!;
    assert.ok(await waitFor(() => sb.view.policies.has('web-to-db'), 5000));
    const rows = await listClusterPolicies(admin);
    assert.deepEqual(rows.map((r) => [r.name, r.ports]), [['web-to-db', '5432/tcp']]);
    const del = await deleteClusterPolicies(admin, ['web-to-db', 'nope']);
    assert.deepEqual(del, { ok: false, missing: ['nope'] });
    assert.equal((await listClusterPolicies(admin)).length, 1);
    assert.deepEqual(await deleteClusterPolicies(admin, ['web-to-db']), { ok: true });
    assert.ok(await waitFor(() => !sb.view.policies.has('web-to-db'), 5000));
  });
});

describe('cluster commands', () => {
  let u: Underlay;
  let etcd: TestEtcd;
  before(async () => {
    u = await createUnderlay(uniqueClusterPrefix());
    etcd = await startTestEtcd(u, ['a', 'b'], { attachSelf: true });
  });
  after(async () => {
    await etcd?.destroy();
    await u?.destroy();
  });

  it('policy add|list|delete --cluster with the admin credential; a node credential is refused with exit 1', async () => {
    const add = await bastion(['policy', 'add', 'web-to-db', '--from', 'app=web', '--to', 'app=db', '--ports', '5432/tcp', ...etcd.flags('admin')]);
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /policy web-to-db created in the cluster/);
    const list = await bastion(['policy', 'list', '--json', ...etcd.flags('node-a')]);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout).map((p: { name: string; source: string }) => [p.name, p.source]), [['web-to-db', 'cluster']]);
    const stolen = await bastion(['policy', 'add', 'evil', '--from', 'all', '--to', 'all', ...etcd.flags('node-a')]);
    assert.equal(stolen.code, 1);
    assert.match(stolen.stderr, /permission denied/);
    const invalid = await bastion(['policy', 'add', 'bad', '--from', 'app=x', '--to', 'app=y', '--ports', '99999/tcp', ...etcd.flags('admin')]);
    assert.equal(invalid.code, 3, invalid.stderr);
    const del = await bastion(['policy', 'delete', 'web-to-db', ...etcd.flags('admin')]);
    assert.equal(del.code, 0, del.stderr);
    const usage = await bastion(['policy', 'list', '--cluster', 'https://10.0.0.1', '--cluster-ca', '/nonexistent']);
    assert.equal(usage.code, 2, usage.stderr);
  });

  it('status --cluster lists the nodes with their lease; cluster certs adds a node to an existing CA', async () => {
    const s = new ClusterSession({ client: etcd.client('node-a'), node: 'a', nodeRecord: nodeRecord('a', '10.0.0.1'), leaseTtlS: 5, log });
    await s.start(() => undefined);
    s.beginPublishing();
    assert.ok(await s.settled());
    const st = await bastion(['status', '--json', ...etcd.flags('admin')]);
    assert.equal(st.code, 0, st.stderr);
    const j = JSON.parse(st.stdout);
    assert.deepEqual(j.nodes.map((n: { name: string; healthy: boolean }) => [n.name, n.healthy]), [['a', true]]);
    assert.equal(j.nodes[0].lease.grantedTtlS, 5);
    await s.close({ revoke: true });
    const more = await bastion(['cluster', 'certs', '--nodes', 'c', '-o', etcd.certs, '--json']);
    assert.equal(more.code, 0, more.stderr);
    const r = JSON.parse(more.stdout);
    assert.equal(r.reusedCa, true);
    assert.deepEqual(r.written, ['node-c.pem', 'node-c-key.pem']);
    execFileSync('openssl', ['verify', '-CAfile', join(etcd.certs, 'ca.pem'), join(etcd.certs, 'node-c.pem')]);
  });
});
