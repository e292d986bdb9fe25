/**
 * 5,000 containers on another host must not cost a node 5,000 containers'
 * state. Two real hosts (a: web, b: api; web may reach api) and a third
 * node, x, that is only records: its node record and 5,000 endpoints (with
 * their write-once identity records) written straight into the real etcd
 * under one lease of its own, in transactions of 64 endpoints, as a node
 * with 5,000 containers would have published them. Three of them (app=dep)
 * are web's dependencies.
 *
 * Measured on a: the time until its daemon knows all 5,001 remote endpoints,
 * the entries of every pinned map (bpftool, from the kernel), its resident
 * memory. Asserted: its maps gain exactly web's three new peers and their
 * rules; the stack answers ARP for a dependency on x and for nothing else
 * of x's; when x's lease goes, its endpoints leave a's view and maps.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type { Lease } from 'etcd3';
import { TestCluster } from '../helpers/cluster.js';
import { bastionMetrics } from '../helpers/bastion-daemon.js';
import { run } from '../helpers/netns.js';
import { arping, startTcpEcho, tcpConnectQuick, waitFor } from '../helpers/probes.js';
import { MAP_NAMES } from '../../src/datapath/layout.js';
import { endpointKey, identityRecordKey, nodeKey, type EndpointRecord, type IdentityRecord, type NodeRecord } from '../../src/cluster/keys.js';

const REMOTE = 5000;
/** endpoints per transaction: two puts each, under etcd's default --max-txn-ops of 128 */
const PER_TXN = 64;
/** identities of x's endpoints: far above what the counter grants a and b */
const ID_BASE = 5_000_000;
const DEPS = [17, 2500, 4999];

/** The maps the control plane writes (the others follow traffic: conntrack, counters, flow summaries). */
const STATE_MAPS = new Set<string>([MAP_NAMES.endpoints, MAP_NAMES.endpointsByIp, MAP_NAMES.ipcache, MAP_NAMES.policy, MAP_NAMES.neigh, MAP_NAMES.remote, MAP_NAMES.tunnel, MAP_NAMES.config, MAP_NAMES.state]);

/** Entries of every state map pinned under a pin path, from the kernel. */
async function mapEntries(pin: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of readdirSync(pin).sort()) {
    if (!STATE_MAPS.has(name)) continue;
    const d = await run('bpftool', ['-j', 'map', 'dump', 'pinned', `${pin}/${name}`], { allowFail: true });
    try {
      out[name] = (JSON.parse(d.stdout) as unknown[]).length;
    } catch {
      // not a map bpftool can dump (a program, a ring buffer): no entries to count
    }
  }
  return out;
}

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

describe('5,000 containers on another node', () => {
  let k: TestCluster;
  let lease: Lease | undefined;
  const ipOf = (net: string, i: number) => `${net}.${100 + (i >> 8)}.${i & 255}`;

  before(async () => {
    k = await TestCluster.create({ hosts: { a: [{ name: 'web' }], b: [{ name: 'api' }] }, leaseTtlS: 10 });
    await k.startAll();
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    await k.policyAdd('web-to-dep', 'app=web', 'app=dep', ['9000/tcp']);
    await startTcpEcho(k.container('api').netns, k.container('api').ip, 8080);
    assert.ok(await waitFor(async () => (await tcpConnectQuick(k.container('web').netns, k.container('api').ip, 8080, 400)).ok, 15_000, 200), 'web -> api');
  });
  after(async () => {
    await lease?.revoke().catch(() => undefined);
    await k?.destroy();
  });

  it('a holds in its maps only its own containers\' peers: 5,000 remote endpoints cost it three entries and their rules', async () => {
    const a = k.host('a');
    const pid = a.daemon!.pid!;
    assert.match(readFileSync(`/proc/${pid}/comm`, 'utf8'), /node/, 'the daemon pid is node itself');
    const mapsBefore = await mapEntries(a.pin);
    const rssBefore = rssKiB(pid);
    assert.equal(mapsBefore['bastion_remote'], 1, JSON.stringify(mapsBefore));

    // x: a node record, its 5,000 endpoints and their identity records, under one lease
    const root = k.etcd.client('root');
    lease = root.lease(30);
    const leaseId = await lease.grant();
    const node: NodeRecord = { name: 'x', underlay: `${k.underlay.base}.50`, underlayInterface: 'eth0', subnets: [`${k.net}.0.0/16`], tunnelPort: 4789, startedAt: new Date().toISOString(), version: 'test' };
    const t0 = Date.now();
    await root.put(nodeKey('x')).value(JSON.stringify(node)).lease(leaseId).exec();
    const now = new Date().toISOString();
    for (let first = 0; first < REMOTE; first += PER_TXN) {
      const ops = [];
      for (let i = first; i < Math.min(first + PER_TXN, REMOTE); i++) {
        const key = `svc${i}`;
        const id: IdentityRecord = { node: 'x', endpoint: key, allocatedAt: now };
        const mac = `02:${randomBytes(5).toString('hex').match(/../g)!.join(':')}`;
        const ep: EndpointRecord = { key, name: key, identity: ID_BASE + i, ipv4: ipOf(k.net, i), mac, labels: { app: DEPS.includes(i) ? 'dep' : `svc${i}` } };
        ops.push(root.put(identityRecordKey(ID_BASE + i)).value(JSON.stringify(id)));
        ops.push(root.put(endpointKey('x', key)).value(JSON.stringify(ep)).lease(leaseId));
      }
      const txn = await root.if(nodeKey('x'), 'Version', '>', 0).then(...ops).commit();
      assert.ok(txn.succeeded);
    }
    const writtenMs = Date.now() - t0;
    const afterWrites = a.daemon!.mark();

    // the daemon's own count, from its socket (a status command per poll would cost a second of start-up each)
    const known = async () => Number(/^bastion_cluster_remote_endpoints (\d+)$/m.exec(await bastionMetrics(a.pin))?.[1]);
    assert.ok(await waitFor(async () => (await known()) === REMOTE + 1, 60_000, 50), `a knows ${await known()} remote endpoints, not ${REMOTE + 1}`);
    const convergedMs = Date.now() - t0;
    // the release after the last burst (an earlier one may have come between two slow writes)
    const isRelease = (r: { msg?: string }) => r.msg === 'memory released after a burst of cluster changes';
    const released = (await a.daemon!.waitForRecord(isRelease, 10_000, afterWrites)) ?? a.daemon!.records.filter(isRelease).at(-1);
    assert.ok(released, 'a gave the burst\'s garbage back');
    const s = await k.status('a');
    const peers = (s.cluster.peers as Array<{ name: string }>).map((p) => p.name).sort();
    assert.deepEqual(peers, ['b/api', ...DEPS.map((i) => `x/svc${i}`)].sort());
    assert.equal(s.entries.remote, 4);

    const mapsAfter = await mapEntries(a.pin);
    const rssAfter = rssKiB(pid);
    const grew = Object.fromEntries(Object.keys(mapsAfter).filter((m) => mapsAfter[m] !== mapsBefore[m]).map((m) => [m, (mapsAfter[m] ?? 0) - (mapsBefore[m] ?? 0)]));
    console.log(
      JSON.stringify({
        remoteEndpoints: REMOTE,
        writtenMs,
        convergedMs,
        rssBeforeMiB: +(rssBefore / 1024).toFixed(1),
        rssAfterMiB: +(rssAfter / 1024).toFixed(1),
        heapUsedAfterMiB: released.memory.heapUsedMb,
        mapEntriesGrown: grew,
      }),
    );
    // the kernel's view: three more remote entries (web's new peers), no more
    assert.equal(mapsAfter['bastion_remote'], 4, JSON.stringify(grew));
    // and nothing else grows with x's 5,000: a few entries per new peer (its rule, ipcache, neighbour)
    const totalGrowth = Object.values(grew).reduce((n, v) => n + v, 0);
    assert.ok(totalGrowth <= 4 * DEPS.length, `a's maps grew by ${totalGrowth} entries: ${JSON.stringify(grew)}`);
    // a's memory: the 5,000 records it reads (it checks each address against
    // its own), not 5,000 endpoints' state. Bound: 40 MiB, 8 KiB a record.
    assert.ok(rssAfter - rssBefore < 40 * 1024, `a's RSS grew by ${((rssAfter - rssBefore) / 1024).toFixed(1)} MiB`);
    assert.ok(convergedMs < 60_000, `${convergedMs} ms to converge`);

    // the datapath: web's ARP for a dependency on x is answered with its MAC; for another of x's, nothing
    const web = k.container('web');
    const dep = (await root.get(endpointKey('x', `svc${DEPS[0]}`)).json()) as EndpointRecord;
    const reply = await arping(web.netns, 'eth0', dep.ipv4);
    assert.deepEqual(reply.macs, [dep.mac], `ARP for x/svc${DEPS[0]}`);
    assert.equal((await arping(web.netns, 'eth0', ipOf(k.net, 18), 2, 2)).replies, 0, 'ARP for x/svc18 (no dependency)');
  });

  it("x's lease revoked: its 5,000 endpoints leave a's view and its three peers leave a's maps", async () => {
    const t0 = Date.now();
    await lease!.revoke();
    lease = undefined;
    const a = k.host('a');
    const known = async () => Number(/^bastion_cluster_remote_endpoints (\d+)$/m.exec(await bastionMetrics(a.pin))?.[1]);
    assert.ok(await waitFor(async () => (await known()) === 1, 30_000, 50), 'a still knows x\'s endpoints');
    assert.ok(await waitFor(async () => (await mapEntries(a.pin))['bastion_remote'] === 1, 10_000, 250), "x's peers still in a's bastion_remote");
    console.log(JSON.stringify({ removedMs: Date.now() - t0 }));
    assert.ok((await tcpConnectQuick(k.container('web').netns, k.container('api').ip, 8080, 1000)).ok, 'web -> api still');
  });
});
