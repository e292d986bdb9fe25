/**
 * Faults of a three-host cluster: a node's daemon killed (its enforcement
 * holds, the restarted daemon adopts its identities and connections
 * survive), etcd stopped and restarted (enforcement holds; local changes
 * made meanwhile are published once it is back), a node that dies (its
 * endpoints go with its lease everywhere; its identities are never granted
 * to anyone else), an address reused on another host (refused while held;
 * then a new identity that inherits nothing), a partitioned node that
 * rejoins and converges.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, type ClusterContainer } from '../helpers/cluster.js';
import { run } from '../helpers/netns.js';
import { echoTransfer, ping, sleep, startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';

describe('cluster faults', () => {
  let k: TestCluster;
  let web: ClusterContainer, api: ClusterContainer, other: ClusterContainer, db: ClusterContainer;
  const identityOf = async (host: string, name: string) => ((await k.status(host)).endpoints as Array<{ name: string; identity: number }>).find((e) => e.name === name)?.identity;
  const peersOf = async (host: string) => ((await k.status(host)).cluster.peers as Array<{ name: string }>).map((p) => p.name).sort();
  const knownOn = async (host: string) => (await k.status(host)).cluster.remoteEndpoints.known as number;
  const reaches = (from: ClusterContainer, to: ClusterContainer, port: number) => waitFor(async () => (await tcpConnectQuick(from.netns, to.ip, port, 400)).ok, 15_000, 200);
  const blocked = async (from: ClusterContainer, to: ClusterContainer, port: number) => !(await tcpConnect(from.netns, to.ip, port, 1)).ok;

  before(async () => {
    k = await TestCluster.create({
      hosts: {
        a: [{ name: 'web' }],
        b: [{ name: 'api' }, { name: 'other' }],
        c: [{ name: 'db' }],
      },
      leaseTtlS: 6,
    });
    [web, api, other, db] = ['web', 'api', 'other', 'db'].map((n) => k.container(n)) as [ClusterContainer, ClusterContainer, ClusterContainer, ClusterContainer];
    await k.start('a');
    await k.start('b', ['--lease-ttl', '30']); // restarted in place below, within its lease
    await k.start('c');
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    await k.policyAdd('api-to-db', 'app=api', 'app=db', ['5432/tcp']);
    await startTcpEcho(api.netns, api.ip, 8080);
    await startTcpEcho(db.netns, db.ip, 5432);
    assert.ok(await reaches(web, api, 8080), 'web -> api');
    assert.ok(await reaches(api, db, 5432), 'api -> db');
  });
  after(async () => {
    await k?.destroy();
  });

  it("a node's daemon killed: its enforcement holds; restarted, it keeps its identities and the connections through it survive", async () => {
    const apiId = await identityOf('b', 'api');
    const transfer = echoTransfer(web.netns, api.ip, 8080, { bytes: 160 * 1024, chunk: 2048, intervalMs: 100, idleS: 30, timeoutMs: 90_000 });
    await transfer.firstEcho;
    await k.host('b').daemon!.kill9();
    // b's stacks and maps go on without the daemon
    assert.ok(await blocked(other, api, 8080), 'other -> api with b\'s daemon dead');
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok, 'web -> api, a new connection, with b\'s daemon dead');
    await k.start('b', ['--lease-ttl', '30']);
    assert.equal(await identityOf('b', 'api'), apiId, 'api kept its identity');
    const t = await transfer.done;
    assert.ok(t.ok, `the transfer across the restart: ${t.stderr} (received ${t.received} of ${t.sent})`);
    assert.equal((await k.status('b')).ok, true);
  });

  it('etcd stopped and started again: enforcement holds; containers added and removed meanwhile are published once it is back', async () => {
    await k.etcd.stop();
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok, 'web -> api with etcd down');
    assert.ok(await blocked(other, api, 8080), 'other -> api with etcd down');
    const refusedAdd = await k.admin(['policy', 'add', 'x', '--from', 'app=web', '--to', 'app=db'], 20_000);
    assert.equal(refusedAdd.code, 1, 'policy add with the store down fails, and says so');
    // local changes while the store is away
    const cache = await k.addContainer('c', 'cache', { app: 'cache' });
    await k.removeContainer('other');
    await sleep(2000);
    const cacheOnC = (await k.status('c')).endpoints.find((e: { name: string }) => e.name === 'cache');
    assert.equal(cacheOnC, undefined, 'cache has an identity with the store down');
    await k.etcd.start();
    assert.ok(await waitFor(async () => (await knownOn('a')) === 3, 30_000), 'a should know api, db, cache (and no longer other)');
    const names = ((await k.status('a')).cluster.remoteEndpoints.known as number);
    assert.equal(names, 3);
    await k.policyAdd('web-to-cache', 'app=web', 'app=cache', ['6379/tcp']);
    await startTcpEcho(cache.netns, cache.ip, 6379);
    assert.ok(await reaches(web, cache, 6379), 'web -> cache after the store came back');
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok);
  });

  it('a node that dies: its endpoints expire with its lease on every other node; its identities are never granted to anyone else', async () => {
    const dbId = (await identityOf('c', 'db'))!;
    assert.ok((await peersOf('b')).includes('c/db'));
    await k.host('c').daemon!.kill9();
    assert.ok(await waitFor(async () => !(await peersOf('b')).includes('c/db'), 20_000), 'b still has c/db');
    assert.ok(await waitFor(async () => (await knownOn('a')) === 1, 10_000), 'a still knows c\'s endpoints');
    assert.ok(await blocked(api, db, 5432), 'api -> db once c is gone from the cluster');
    const fresh = await k.addContainer('a', 'fresh', { app: 'fresh' });
    assert.ok(await waitFor(async () => (await identityOf('a', 'fresh')) !== undefined, 15_000), 'fresh placed');
    const freshId = (await identityOf('a', 'fresh'))!;
    assert.ok(freshId > dbId, `fresh got ${freshId}, db had ${dbId}`);
    void fresh;
    // c comes back: it converges, its endpoints are everyone's again
    await k.start('c');
    assert.ok(await waitFor(async () => (await peersOf('b')).includes('c/db'), 20_000), 'c/db back on b');
    assert.ok(await reaches(api, db, 5432), 'api -> db after c is back');
  });

  it('an address another host holds is refused (both nodes named); once free it gets a new identity and inherits nothing', async () => {
    const dbId = (await identityOf('c', 'db'))!;
    await k.addContainer('a', 'squatter', { app: 'squatter' }, db.ip);
    assert.ok(
      await waitFor(async () => ((await k.status('a')).unprotected as Array<{ name: string; reason: string }>).some((u) => u.name === 'squatter' && /held by node c/.test(u.reason)), 15_000),
      'squatter not refused',
    );
    const un = ((await k.status('a')).unprotected as Array<{ name: string; reason: string }>).find((u) => u.name === 'squatter')!;
    assert.match(un.reason, /a\/squatter is refused/);
    const squatter = k.container('squatter');
    assert.ok(!(await ping(squatter.netns, api.ip, 1, 1)), 'a refused container sends nothing');
    // db goes; the address is free: the squatter is admitted, with an identity of its own
    await k.removeContainer('db');
    assert.ok(await waitFor(async () => (await identityOf('a', 'squatter')) !== undefined, 20_000), 'squatter admitted once db left');
    const id = (await identityOf('a', 'squatter'))!;
    assert.notEqual(id, dbId);
    await startTcpEcho(squatter.netns, squatter.ip, 5432);
    await sleep(1000);
    assert.ok(await blocked(api, squatter, 5432), "api reaches db's old address: the new holder inherited db's rights");
  });

  it('a partitioned node rejoins and converges: its endpoints come back, and it learns what changed meanwhile', async () => {
    await run('ip', ['-n', k.host('a').netns, 'link', 'set', 'ul0', 'down']);
    assert.ok(await waitFor(async () => !(await peersOf('b')).includes('a/web'), 25_000), "b still has a's web after a's lease ran out");
    await k.policyAdd('api-to-web', 'app=api', 'app=web', ['7070/tcp']); // a cannot see this yet
    await startTcpEcho(web.netns, web.ip, 7070);
    await run('ip', ['-n', k.host('a').netns, 'link', 'set', 'ul0', 'up']);
    assert.ok(await waitFor(async () => (await peersOf('b')).includes('a/web'), 30_000), 'a/web not back on b');
    assert.ok(await reaches(web, api, 8080), 'web -> api after the partition');
    assert.ok(await reaches(api, web, 7070), 'api -> web:7070, the policy added during the partition');
    const s = await k.status('a');
    assert.equal(s.cluster.session.connected, true);
    assert.equal(s.ok, true);
  });
});
