/**
 * The attack set across hosts. Three hosts, one cluster; web (a) may reach
 * api (b) on 8080/tcp, api may reach db (c) on 5432/tcp, and nothing else
 * is allowed. An intruder on a, a sniffer on b, and an attacker on the
 * underlay try: ARP discovery, spoofed IP and MAC, port scans, the reverse
 * direction, sniffing (on the bridge and on the underlay), VXLAN forged from
 * the underlay with a foreign identity, VXLAN made inside a container, and a
 * stolen node credential. Each probe first shows the allowed path working,
 * so its failure means "blocked".
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster, type ClusterContainer } from '../helpers/cluster.js';
import { run } from '../helpers/netns.js';
import { arping, echoTransfer, nmapPingScan, nsRun, startCapture, startTcpEcho, tcpConnect, waitFor } from '../helpers/probes.js';
import { hping3Spoof, injectFrames, pinNeighbour, synFrame } from '../helpers/attacks.js';
import { endpointKey, nodeKey, policyKey } from '../../src/cluster/keys.js';
import { isPermissionDenied } from '../../src/cluster/etcd.js';

async function denied(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (err) {
    return isPermissionDenied(err);
  }
}

describe('attacks across hosts', () => {
  let k: TestCluster;
  let web: ClusterContainer, intruder: ClusterContainer, api: ClusterContainer, sniffer: ClusterContainer, db: ClusterContainer;
  let evNs: string;
  let evIp: string;
  const counter = async (host: string, reason: string) => ((await k.status(host)).counters[reason]?.packets ?? 0) as number;
  const identityOf = async (host: string, name: string) => ((await k.status(host)).endpoints as Array<{ name: string; identity: number }>).find((e) => e.name === name)!.identity;

  before(async () => {
    k = await TestCluster.create({
      hosts: {
        a: [{ name: 'web' }, { name: 'intruder' }],
        b: [{ name: 'api' }, { name: 'sniffer' }],
        c: [{ name: 'db' }],
      },
      leaseTtlS: 10,
    });
    [web, intruder, api, sniffer, db] = ['web', 'intruder', 'api', 'sniffer', 'db'].map((n) => k.container(n)) as [ClusterContainer, ClusterContainer, ClusterContainer, ClusterContainer, ClusterContainer];
    await k.startAll();
    await k.policyAdd('web-to-api', 'app=web', 'app=api', ['8080/tcp']);
    await k.policyAdd('api-to-db', 'app=api', 'app=db', ['5432/tcp']);
    for (const port of [8080, 22, 443, 5432]) await startTcpEcho(api.netns, api.ip, port);
    await startTcpEcho(db.netns, db.ip, 5432);
    await startTcpEcho(intruder.netns, intruder.ip, 8080);
    // an underlay host that is no node
    evNs = `${k.prefix}-ev`;
    await run('ip', ['netns', 'add', evNs]);
    await k.underlay.attach(evNs, 99);
    evIp = `${k.underlay.base}.99`;
    assert.ok(await waitFor(async () => (await tcpConnect(web.netns, api.ip, 8080, 1)).ok, 15_000), 'the allowed path works: web -> api:8080');
  });
  after(async () => {
    await run('ip', ['netns', 'del', evNs], { allowFail: true });
    await k?.destroy();
  });

  it('ARP discovery: a scan of the other hosts finds exactly the dependencies (web: api), and nothing for the intruder', async () => {
    const bNet = `${k.net}.2.0/24`;
    const cNet = `${k.net}.3.0/24`;
    const fromWeb = [...(await nmapPingScan(web.netns, 'eth0', bNet)).up, ...(await nmapPingScan(web.netns, 'eth0', cNet)).up];
    assert.deepEqual(fromWeb.sort(), [api.ip]);
    const fromIntruder = [...(await nmapPingScan(intruder.netns, 'eth0', bNet)).up, ...(await nmapPingScan(intruder.netns, 'eth0', cNet)).up];
    assert.deepEqual(fromIntruder, []);
  });

  it("spoofed IP and MAC: the intruder posing as web (its address, then its MAC too) never reaches api", async () => {
    const spoofedIp0 = await counter('a', 'spoofed-ip');
    const spoofedMac0 = await counter('a', 'spoofed-mac');
    const cap = await startCapture(api.netns, 'eth0', `tcp and src host ${web.ip} and src port 31337`);
    await pinNeighbour(intruder.netns, 'eth0', api.ip, api.mac);
    await hping3Spoof(intruder.netns, { iface: 'eth0', spoofIp: web.ip, dstIp: api.ip, dport: 8080, sport: 31337, count: 5 });
    await injectFrames(intruder.netns, 'eth0', [synFrame({ srcMac: web.mac, dstMac: api.mac, src: web.ip, dst: api.ip, sport: 31337, dport: 8080 })], 5);
    const seen = await cap.stop();
    assert.equal(seen.packets.length, 0, `api saw forged packets:\n${seen.packets.join('\n')}`);
    assert.ok((await counter('a', 'spoofed-ip')) >= spoofedIp0 + 5, 'spoofed-ip on a');
    assert.ok((await counter('a', 'spoofed-mac')) >= spoofedMac0 + 5, 'spoofed-mac on a');
  });

  it('port scans: web sees only 8080 open on api; the intruder sees nothing at all', async () => {
    const ports = '22,443,5432,8080,9999';
    const scan = async (ns: string) => {
      const r = await nsRun(ns, 'nmap', ['-sT', '-Pn', '-n', '-p', ports, '--max-retries', '1', '--host-timeout', '20s', '-oG', '-', api.ip], { timeoutMs: 60_000 });
      return [...r.stdout.matchAll(/(\d+)\/open\//g)].map((m) => Number(m[1]));
    };
    assert.deepEqual(await scan(web.netns), [8080]);
    assert.deepEqual(await scan(intruder.netns), []);
  });

  it('the reverse direction: api may not open a connection to web, nor db to api', async () => {
    await startTcpEcho(web.netns, web.ip, 8080);
    assert.ok(!(await tcpConnect(api.netns, web.ip, 8080, 1)).ok, 'api -> web');
    assert.ok(!(await tcpConnect(db.netns, api.ip, 8080, 1)).ok, 'db -> api');
    assert.ok((await tcpConnect(api.netns, db.ip, 5432, 2)).ok, 'api -> db, the allowed direction');
  });

  it('sniffing: a transfer between web (a) and api (b) is invisible on b\'s bridge, and the underlay carries only theirs', async () => {
    const snif = await startCapture(sniffer.netns, 'eth0', `host ${web.ip} or host ${api.ip}`);
    const bridge = await startCapture(k.host('b').netns, 'br0', `host ${web.ip}`);
    const wire = await startCapture(k.underlay.netns, 'ul', 'udp port 4789');
    // meanwhile the intruder keeps trying api
    const noise = tcpConnect(intruder.netns, api.ip, 8080, 2);
    const t = await echoTransfer(web.netns, api.ip, 8080, { bytes: 2 * 1024 * 1024 }).done;
    await noise;
    const [s, br, w] = [await snif.stop(), await bridge.stop(), await wire.stop()];
    assert.ok(t.ok, `transfer failed: ${t.stderr}`);
    assert.equal(s.packets.length, 0, `the sniffer saw:\n${s.packets.slice(0, 5).join('\n')}`);
    assert.equal(br.packets.length, 0, `b's bridge carried:\n${br.packets.slice(0, 5).join('\n')}`);
    assert.ok(w.packets.length > 100, `${w.packets.length} VXLAN packets on the underlay`);
    // every container address in the encapsulated traffic is web's or api's
    const inner = new Set([...w.packets.join('\n').matchAll(new RegExp(`(${k.net.replace('.', '\\.')}\\.\\d+\\.\\d+)\\.\\d+ >`, 'g'))].map((m) => m[1]!));
    inner.delete(web.ip);
    inner.delete(api.ip);
    assert.deepEqual([...inner], [], 'another container\'s traffic on the underlay');
  });

  /**
   * Five VXLAN packets from the eavesdropper on the underlay to b, claiming web's
   * identity for a SYN to api; the UDP checksum computed (as scapy does: the
   * device decapsulates it) or zero (as VXLAN senders send: from_underlay does).
   * api must see none of them; each is dropped by b as tunnel-spoofed. Returns
   * the flow record of one.
   */
  const forgeFromUnderlay = async (sport: number, udpChecksum: boolean) => {
    const webId = await identityOf('a', 'web');
    const before = await counter('b', 'tunnel-spoofed');
    const mark = k.host('b').daemon!.mark();
    const cap = await startCapture(api.netns, 'eth0', `tcp port 8080 and tcp[tcpflags] & tcp-syn != 0 and src port ${sport}`);
    const script = `
from scapy.all import IP, UDP, Ether, TCP, send, conf
from scapy.layers.vxlan import VXLAN
conf.verb = 0
inner = Ether(src="${web.mac}", dst="${api.mac}")/IP(src="${web.ip}", dst="${api.ip}")/TCP(sport=${sport}, dport=8080, flags="S")
send(IP(src="${evIp}", dst="${k.host('b').ip}")/UDP(sport=40000, dport=4789${udpChecksum ? '' : ', chksum=0'})/VXLAN(vni=${webId}, flags=0x08)/inner, count=5, inter=0.05)
print("sent")
`;
    const r = await nsRun(evNs, '/usr/bin/python3', ['-c', script], { timeoutMs: 20_000 });
    assert.match(r.stdout, /sent/, r.stderr);
    const seen = await cap.stop();
    assert.equal(seen.packets.length, 0, `api saw: ${seen.packets.join('\n')}`);
    assert.ok(await waitFor(async () => (await counter('b', 'tunnel-spoofed')) >= before + 5, 5000), 'tunnel-spoofed on b');
    const d = k.host('b').daemon!;
    assert.ok(await d.waitForRecord((r) => r.reason === 'tunnel-spoofed', 5000, mark), 'no tunnel-spoofed flow on b');
    const f = d.flows(mark).find((r) => r.reason === 'tunnel-spoofed')!;
    // Hubble-like: not "ifN", but the interface, the outer source (no node's) and the identity it claimed
    assert.deepEqual(f.tunnel, { protocol: 'vxlan', source: evIp });
    assert.deepEqual([f.src.identity, f.src.name, f.src.node, f.dst.ip], [webId, 'a/web', 'a', api.ip]);
    return f;
  };

  it("VXLAN forged on the underlay claiming web's identity is dropped by b (tunnel-spoofed); api never sees it; the flow names the device, the sender's address and the claim", async () => {
    const f = await forgeFromUnderlay(41414, true);
    assert.equal(f.interface, 'bvx0', JSON.stringify(f));
    const line = await k.bastionOn('b', ['flows', '--pin-path', k.host('b').pin, '--verdict', 'DROPPED']);
    assert.match(line.stdout, new RegExp(`tunnel-spoofed.* via vxlan from ${evIp.replace(/\./g, '\\.')} \\(no node\\) on bvx0`), line.stdout.slice(-2000));
  });

  it('the same forgery as VXLAN senders make it (UDP checksum zero), which from_underlay decapsulates itself: dropped by the same check, named on the underlay', async () => {
    const f = await forgeFromUnderlay(41415, false);
    assert.equal(f.interface, 'ul0', `dropped by from_underlay, before the device: ${JSON.stringify(f)}`);
  });

  it('VXLAN made inside a container (even one allowed to reach the world) never leaves its host', async () => {
    await k.policyAdd('intruder-out', 'app=intruder', '0.0.0.0/0');
    const webId = await identityOf('a', 'web');
    const denied0 = await counter('a', 'policy-denied');
    const hostDenied0 = await counter('a', 'host-denied');
    const wire = await startCapture(k.underlay.netns, 'ul', `udp port 4789 and src host ${k.host('a').ip} and udp[8:4] = 0x08000000 and udp[12:4] = ${webId * 256}`);
    const script = `
from scapy.all import IP, UDP, Ether, TCP, send, conf
from scapy.layers.vxlan import VXLAN
conf.verb = 0
inner = Ether(src="${web.mac}", dst="${api.mac}")/IP(src="${web.ip}", dst="${api.ip}")/TCP(sport=42424, dport=8080, flags="S")
for dst in ["${k.host('b').ip}", "${k.host('a').ip}"]:
    send(IP(dst=dst)/UDP(sport=40001, dport=4789)/VXLAN(vni=${webId}, flags=0x08)/inner, count=3, inter=0.05)
print("sent")
`;
    const r = await nsRun(intruder.netns, '/usr/bin/python3', ['-c', script], { timeoutMs: 20_000 });
    assert.match(r.stdout, /sent/, r.stderr);
    const w = await wire.stop();
    assert.ok(await waitFor(async () => (await counter('a', 'policy-denied')) >= denied0 + 3, 5000), "to another node's address: policy-denied (remote-node is not world)");
    assert.ok((await counter('a', 'host-denied')) >= hostDenied0 + 3, 'to its own node: host-denied');
    // the only VXLAN with web's identity from a is web's own (none here: web sent nothing meanwhile)
    assert.equal(w.packets.length, 0, w.packets.join('\n'));
    await k.policyDelete('intruder-out');
  });

  it("a stolen node credential (c's) cannot add or rewrite another node's endpoints, its node record, a policy, or its lease", async () => {
    const stolen = k.etcd.client('node-c');
    const webKey = endpointKey('a', 'file:web');
    const real = await stolen.get(webKey).string();
    assert.ok(real, 'a/web is published');
    const forged = { ...JSON.parse(real!), ipv4: intruder.ip, mac: intruder.mac };
    assert.ok(await denied(stolen.put(webKey).value(JSON.stringify(forged)).exec()), "rewrote a's web");
    assert.ok(await denied(stolen.put(endpointKey('a', 'extra')).value(real!).exec()), 'added an endpoint to a');
    assert.ok(await denied(stolen.delete().key(webKey).exec()), "deleted a's web");
    assert.ok(await denied(stolen.put(nodeKey('b')).value('{}').exec()), "rewrote b's node record");
    assert.ok(await denied(stolen.put(policyKey('open')).value(JSON.stringify({ name: 'open', from: {}, to: {} })).exec()), 'wrote a policy');
    const lease = (await stolen.get(webKey).exec()).kvs[0]!.lease;
    assert.ok(await denied(stolen.leaseClient.leaseRevoke({ ID: lease })), "revoked a's lease");
    // what it may write, its own endpoints, cannot borrow web's identity either
    const webId = await identityOf('a', 'web');
    await stolen.put(endpointKey('c', 'thief')).value(JSON.stringify({ key: 'thief', name: 'thief', identity: webId, ipv4: `${k.net}.3.99`, mac: '02:00:00:00:99:99', labels: { app: 'web' } })).exec();
    await new Promise((r) => setTimeout(r, 1500));
    const b = await k.status('b');
    assert.equal(b.cluster.remoteEndpoints.known, 3, 'b believes the thief (it knows web, intruder and db, no more)');
    assert.deepEqual((b.cluster.peers as Array<{ name: string }>).map((p) => p.name).sort(), ['a/web', 'c/db']);
    await stolen.delete().key(endpointKey('c', 'thief')).exec();
    // and web still works, intruder still does not
    assert.ok((await tcpConnect(web.netns, api.ip, 8080, 2)).ok);
    assert.ok(!(await tcpConnect(intruder.netns, api.ip, 8080, 1)).ok);
  });
});
