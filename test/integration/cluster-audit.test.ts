/**
 * Audit mode across hosts. web (a) may reach api (b) on 8080/tcp only; api
 * also listens on 9999. A connection web -> api:9999 is what the policy in
 * force would drop. In audit mode it goes through, and the receiving node
 * records it as AUDIT (policy-denied) with the tunnel it came through; in
 * enforce mode it is dropped. Each node's mode is its own: with the sender
 * in audit and the receiver enforcing, the sender lets it out and the
 * receiver drops it (DROPPED on b, naming node a). Both ways to audit: a
 * container's mode (`bastion mode audit NAME` on its node) and a cluster
 * policy with `mode: audit` (which selects its ends on every node), tried
 * on a second pair (client on a, store on b): a mode set with `bastion
 * mode` wins over a policy's, as on one host.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, type ClusterContainer } from '../helpers/cluster.js';
import { startTcpEcho, tcpConnect, tcpConnectQuick, waitFor } from '../helpers/probes.js';
import type { LogRecord } from '../helpers/bastion-daemon.js';

describe('audit mode across hosts', () => {
  let k: TestCluster;
  let web: ClusterContainer, api: ClusterContainer, client: ClusterContainer, store: ClusterContainer;

  const mode = async (host: string, m: 'audit' | 'enforce', name: string) => {
    const r = await k.bastionOn(host, ['mode', m, name, '--pin-path', k.host(host).pin]);
    assert.equal(r.code, 0, r.stderr);
  };
  const modeOf = async (host: string, name: string) => {
    const r = await k.bastionOn(host, ['mode', '--json', '--pin-path', k.host(host).pin]);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout).containers as Array<{ name: string; mode: string; source: string; policy?: string }>).find((c) => c.name === name);
  };
  /** the first flow record on a host, after `from`, of (web, or `src`) -> :9999 */
  const flowTo9999 = async (host: string, from: number, verdict: string, src = web): Promise<LogRecord | undefined> => {
    const d = k.host(host).daemon!;
    return d.waitForRecord((r) => r.verdict === verdict && r.dst?.port === 9999 && r.src?.ip === src.ip && !r.isReply, 5000, from);
  };

  before(async () => {
    k = await TestCluster.create({ hosts: { a: [{ name: 'web' }, { name: 'client' }], b: [{ name: 'api' }, { name: 'store' }] } });
    [web, api, client, store] = ['web', 'api', 'client', 'store'].map((n) => k.container(n)) as [ClusterContainer, ClusterContainer, ClusterContainer, ClusterContainer];
    await k.startAll();
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    await k.policyAdd('client-to-store', 'app=client', 'app=store', ['8080/tcp']);
    for (const c of [api, store]) for (const port of [8080, 9999]) await startTcpEcho(c.netns, c.ip, port);
    assert.ok(await waitFor(async () => (await tcpConnectQuick(web.netns, api.ip, 8080, 400)).ok, 15_000, 200), 'web -> api:8080');
    assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok, 'web -> api:9999 while both enforce');
  });
  after(async () => {
    await k?.destroy();
  });

  it('both ends in audit mode (bastion mode): web -> api:9999 goes through, and b records it as AUDIT from node a', async () => {
    await mode('a', 'audit', 'web');
    await mode('b', 'audit', 'api');
    const [ma, mb] = [k.host('a').daemon!.mark(), k.host('b').daemon!.mark()];
    assert.ok((await tcpConnect(web.netns, api.ip, 9999, 2)).ok, 'web -> api:9999 in audit mode');
    const onB = await flowTo9999('b', mb, 'AUDIT');
    assert.ok(onB, 'no AUDIT flow on b');
    assert.equal(onB.reason, 'policy-denied');
    assert.equal(onB.direction, 'ingress');
    assert.deepEqual([onB.src.name, onB.src.node, onB.dst.name, onB.dst.node], ['a/web', 'a', 'api', 'b']);
    assert.deepEqual(onB.tunnel, { protocol: 'vxlan', source: k.host('a').ip, node: 'a' });
    assert.ok(await flowTo9999('a', ma, 'AUDIT'), "no AUDIT flow on a (web's egress)");
  });

  it("the receiver enforcing: web (audit, a) lets it out, b drops it (DROPPED, policy-denied, from node a); web enforcing: dropped on a", async () => {
    await mode('b', 'enforce', 'api');
    const mb = k.host('b').daemon!.mark();
    assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok, 'web -> api:9999 with api enforcing');
    const onB = await flowTo9999('b', mb, 'DROPPED');
    assert.ok(onB, 'no DROPPED flow on b');
    assert.equal(onB.reason, 'policy-denied');
    assert.deepEqual(onB.tunnel, { protocol: 'vxlan', source: k.host('a').ip, node: 'a' });
    await mode('a', 'enforce', 'web');
    const [ma, mb2] = [k.host('a').daemon!.mark(), k.host('b').daemon!.mark()];
    assert.ok(!(await tcpConnect(web.netns, api.ip, 9999, 1)).ok, 'web -> api:9999 with both enforcing');
    const onA = await flowTo9999('a', ma, 'DROPPED');
    assert.ok(onA, 'no DROPPED flow on a');
    assert.equal(onA.reason, 'policy-denied');
    assert.equal(k.host('b').daemon!.flows(mb2).filter((r) => r.dst?.port === 9999).length, 0, 'the packet reached b');
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok, 'web -> api:8080 still');
  });

  it('a cluster policy in audit mode puts its ends in audit mode on both nodes: AUDIT on b; deleted, enforced again', async () => {
    assert.ok(!(await tcpConnect(client.netns, store.ip, 9999, 1)).ok, 'client -> store:9999 before');
    const file = join(k.dir, 'observe.yaml');
    writeFileSync(file, 'policies:\n  - name: observe-client-store\n    from: { app: client }\n    to: { app: store }\n    ports: [8080/tcp]\n    mode: audit\n');
    const add = await k.admin(['policy', 'add', '-f', file]);
    assert.equal(add.code, 0, add.stderr);
    assert.ok(await waitFor(async () => (await modeOf('b', 'store'))?.mode === 'audit', 10_000, 200), 'store not in audit mode on b');
    assert.ok(await waitFor(async () => (await modeOf('a', 'client'))?.mode === 'audit', 10_000, 200), 'client not in audit mode on a');
    assert.equal((await modeOf('b', 'store'))?.policy, 'observe-client-store');
    const mb = k.host('b').daemon!.mark();
    assert.ok((await tcpConnect(client.netns, store.ip, 9999, 2)).ok, 'client -> store:9999 under the audit policy');
    const onB = await flowTo9999('b', mb, 'AUDIT', client);
    assert.ok(onB, 'no AUDIT flow on b');
    assert.deepEqual([onB.reason, onB.src.name, onB.dst.name, onB.tunnel?.node], ['policy-denied', 'a/client', 'store', 'a']);

    await k.policyDelete('observe-client-store');
    assert.ok(await waitFor(async () => (await modeOf('b', 'store'))?.mode === 'enforce', 10_000, 200), 'store still in audit mode on b');
    assert.ok(await waitFor(async () => (await modeOf('a', 'client'))?.mode === 'enforce', 10_000, 200), 'client still in audit mode on a');
    assert.ok(!(await tcpConnect(client.netns, store.ip, 9999, 1)).ok, 'client -> store:9999 after the audit policy went');
    assert.ok((await tcpConnect(client.netns, store.ip, 8080, 2)).ok, 'client -> store:8080 still');
  });
});
