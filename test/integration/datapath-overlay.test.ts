/**
 * The datapath between nodes, with the map entries written by hand (no
 * manager, no etcd): the sender's side under BPF_PROG_TEST_RUN, then two
 * "hosts" (network namespaces) joined by an underlay, each with a VXLAN
 * device in external mode and from_overlay on it, and real traffic: allowed
 * connections cross, the receiver's ingress decides, and VXLAN forged from
 * the underlay (a foreign identity, the wrong identity from the right node,
 * an unknown source) is dropped with its reason.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadObject, type BpfObject } from '../../src/datapath/bpf-object.js';
import { openBastionMaps, type BastionMaps } from '../../src/datapath/bpf-map.js';
import { ensurePinRoot, removePinDir } from '../../src/datapath/bpffs.js';
import { testRun } from '../../src/datapath/prog-test-run.js';
import {
  CFG_F_TRACE_ALLOWED,
  DIR_EGRESS,
  DIR_INGRESS,
  ID_REMOTE_NODE,
  ID_WORLD,
  IPPROTO as P,
  MODE_ENFORCE,
  POLICY_PREFIX_ANY_PROTO,
  POLICY_PREFIX_FULL,
  REASON,
  type EndpointInfo,
} from '../../src/datapath/layout.js';
import { ETH_P, arpRequest, ethernet, ipv4, parseFrame, tcpFrame, udp, udpFrame, type Ipv4Options } from '../helpers/packets.js';
import { ifindexIn, interfaceStat, run } from '../helpers/netns.js';
import { createUnderlay, uniqueClusterPrefix, type Underlay } from '../helpers/etcd.js';
import { arping, isListening, nsRun, ping, startBackground, startTcpEcho, stopBackground, tcpConnect, waitFor, type Background } from '../helpers/probes.js';
import type { NodeSpec } from '../helpers/datapath-node.js';

const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const BPF_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bpf');
const NODE_SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), '../helpers/datapath-node.js');

function ifindexOf(name: string): number {
  return Number(execFileSync('cat', [`/sys/class/net/${name}/ifindex`]).toString().trim());
}

describe('sender side under BPF_PROG_TEST_RUN', () => {
  const tag = randomBytes(3).toString('hex');
  const PIN = `/sys/fs/bpf/bastion-ov-${tag}`;
  const VA = `bov${tag}a`;
  const VB = `bov${tag}b`;
  const A = { ip: '10.67.1.2', mac: '02:00:00:00:1a:0a', id: 700 };
  const R = { ip: '10.67.2.2', mac: '02:00:00:00:2b:0b', id: 701, node: '192.0.2.12' };
  const OTHER_NODE = '192.0.2.13';
  let objs: BpfObject[] = [];
  let maps: BastionMaps;
  let from: number;
  let to: number;
  let overlay: number;
  let ifA: number;

  const count = (reason: number) => Number(maps.counters.get(reason).packets);
  const allow = (ep: number, peer: number, dir: number, proto: number, port: number) =>
    maps.policy.set({ prefixlen: POLICY_PREFIX_FULL, epId: ep, peerId: peer, direction: dir, proto, dport: port }, { ruleId: 3, flags: 0 });
  const fromA = (frame: Buffer) => testRun(from, frame, { ifindex: ifA });
  const syn = (dport: number, sport = randomInt(20000, 60000)) => tcpFrame({ srcMac: A.mac, dstMac: R.mac, src: A.ip, dst: R.ip, sport, dport, flags: 'S' });

  before(() => {
    execFileSync('ip', ['link', 'add', VA, 'type', 'veth', 'peer', 'name', VB]);
    ifA = ifindexOf(VA);
    ensurePinRoot(PIN);
    objs = ['from_container', 'to_container', 'from_overlay'].map((n) => loadObject(join(BPF_DIR, `${n}.o`), { pinRoot: PIN }));
    [from, to, overlay] = objs.map((o, i) => o.program(['from_container', 'to_container', 'from_overlay'][i]!)) as [number, number, number];
    maps = openBastionMaps(PIN);
    maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    const info: EndpointInfo = { identity: A.id, ifindex: ifA, ipv4: A.ip, flags: 0, mac: A.mac, gwMac: '02:00:00:00:00:01' };
    maps.endpoints.set(ifA, info);
    maps.endpointsByIp.set(A.ip, info);
    maps.ipcache.set({ prefixlen: 0, addr: '0.0.0.0' }, { identity: ID_WORLD, flags: 0 });
    maps.ipcache.set({ prefixlen: 32, addr: OTHER_NODE }, { identity: ID_REMOTE_NODE, flags: 0 });
    maps.remote.set(R.ip, { identity: R.id, nodeIpv4: R.node, mac: R.mac, flags: 0 });
    allow(A.id, R.id, DIR_EGRESS, P.tcp, 8080);
    // A may send anything to the world: still not to another node's underlay address
    maps.policy.set({ prefixlen: POLICY_PREFIX_ANY_PROTO, epId: A.id, peerId: ID_WORLD, direction: DIR_EGRESS, proto: 0, dport: 0 }, { ruleId: 4, flags: 0 });
  });

  after(() => {
    maps?.close();
    for (const o of objs) o.close();
    removePinDir(PIN);
    execFileSync('ip', ['link', 'del', VA], { stdio: 'ignore' });
  });

  it('without a tunnel device, a packet for another node is dropped (no-tunnel), never sent in the clear', () => {
    const before = count(REASON.noTunnel);
    assert.equal(fromA(syn(8080)).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.noTunnel), before + 1);
  });

  it("with one, an allowed connection to another node's endpoint is redirected to the tunnel, frame untouched", () => {
    maps.tunnel.set({ ifindex: ifindexOf(VB), localIpv4: '192.0.2.11', flags: 0 });
    const before = count(REASON.encapsulated);
    const frame = syn(8080);
    const r = fromA(frame);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.deepEqual(r.dataOut.subarray(0, frame.length), frame);
    assert.equal(count(REASON.encapsulated), before + 1);
  });

  it('with the underlay interface given, the program builds the VXLAN packet itself: outer IPv4/UDP to the peer\'s node, VNI = the sender\'s identity, the frame inside untouched', () => {
    maps.tunnel.set({ ifindex: ifindexOf(VB), localIpv4: '192.0.2.11', underlayIfindex: ifindexOf(VB), port: 4789, flags: 0 });
    try {
      const before = count(REASON.encapsulated);
      // ECN-capable (ECT(1)): the codepoint is copied outside, as the device does
      const frame = tcpFrame({ srcMac: A.mac, dstMac: R.mac, src: A.ip, dst: R.ip, sport: randomInt(20000, 60000), dport: 8080, flags: 'S', ip: { tos: 0x01 } });
      const r = fromA(frame);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(count(REASON.encapsulated), before + 1);
      const out = r.dataOut;
      assert.equal(out.length, frame.length + 50, 'VXLAN adds 50 bytes');
      assert.equal(out.readUInt16BE(12), 0x0800);
      const ip = out.subarray(14, 34);
      assert.equal(ip[0], 0x45);
      assert.equal(ip.readUInt16BE(2), frame.length - 14 + 50, 'outer total length');
      assert.equal(ip[9], 17, 'UDP');
      assert.equal(ip[1]! & 3, 0x01, "the inner packet's ECN codepoint outside");
      assert.deepEqual([...ip.subarray(12, 16)], [192, 0, 2, 11], 'from this node');
      assert.deepEqual([...ip.subarray(16, 20)], [192, 0, 2, 12], "to the peer's node");
      let sum = 0;
      for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
      assert.equal(sum, 0xffff, 'outer IPv4 checksum');
      const udp = out.subarray(34, 42);
      assert.equal(udp.readUInt16BE(2), 4789);
      assert.ok(udp.readUInt16BE(0) >= 49152, 'source port from the dynamic range');
      assert.equal(udp.readUInt16BE(4), frame.length - 14 + 50 - 20, 'UDP length');
      assert.equal(udp.readUInt16BE(6), 0, 'UDP checksum zero, as through the device');
      assert.equal(out.readUInt32BE(42), 0x08000000, 'VXLAN flags: VNI valid');
      assert.equal(out.readUInt32BE(46) >>> 8, A.id, "VNI = the sender's identity");
      assert.deepEqual(out.subarray(50), frame, 'the inner frame is the one the container sent');
    } finally {
      maps.tunnel.set({ ifindex: ifindexOf(VB), localIpv4: '192.0.2.11', flags: 0 });
    }
  });

  it('a packet that would not fit the underlay once encapsulated goes through the VXLAN device instead (which answers with fragmentation-needed), never dropped by the underlay', () => {
    execFileSync('ip', ['link', 'set', VB, 'mtu', '1000']);
    maps.tunnel.set({ ifindex: ifindexOf(VB), localIpv4: '192.0.2.11', underlayIfindex: ifindexOf(VB), port: 4789, flags: 0 });
    try {
      const sport = randomInt(20000, 60000);
      const first = fromA(syn(8080, sport));
      assert.equal(first.retval, TC_ACT_REDIRECT);
      assert.equal(first.dataOut.length, syn(8080, sport).length + 50, 'a small packet is built in the program');
      // 960 bytes of IPv4 fit 1000 alone, not with the 50 bytes of VXLAN
      const big = tcpFrame({ srcMac: A.mac, dstMac: R.mac, src: A.ip, dst: R.ip, sport, dport: 8080, flags: 'A', payload: Buffer.alloc(960 - 40) });
      const r = fromA(big);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.deepEqual(r.dataOut.subarray(0, big.length), big, 'handed to the device unchanged');
      assert.equal(r.dataOut.length, big.length);
    } finally {
      execFileSync('ip', ['link', 'set', VB, 'mtu', '1500']);
      maps.tunnel.set({ ifindex: ifindexOf(VB), localIpv4: '192.0.2.11', flags: 0 });
    }
  });

  it("the sender's egress decides first: a port the policy does not name is dropped before the tunnel", () => {
    const before = count(REASON.policyDenied);
    assert.equal(fromA(syn(9090)).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.policyDenied), before + 1);
  });

  it("another node's underlay address is not world: a container may not send to it (no VXLAN of its own making)", () => {
    const vxlan = udpFrame({ srcMac: A.mac, dstMac: '02:00:00:00:00:01', src: A.ip, dst: OTHER_NODE, sport: 40000, dport: 4789, payload: Buffer.alloc(50) });
    const before = count(REASON.policyDenied);
    assert.equal(fromA(vxlan).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.policyDenied), before + 1);
    // while the world itself is allowed
    assert.notEqual(fromA(udpFrame({ srcMac: A.mac, dstMac: '02:00:00:00:00:01', src: A.ip, dst: '198.51.100.7', sport: 40000, dport: 53 })).retval, TC_ACT_SHOT);
  });

  it("ARP for another node's endpoint is answered with its own MAC when it is a dependency, and dropped otherwise", () => {
    maps.neigh.set({ epId: A.id, peerId: R.id }, 1);
    const r = fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: R.ip }));
    assert.equal(r.retval, TC_ACT_REDIRECT);
    const reply = parseFrame(r.dataOut);
    assert.equal(reply.arp?.senderMac, R.mac);
    assert.equal(reply.arp?.senderIp, R.ip);
    maps.neigh.delete({ epId: A.id, peerId: R.id });
    assert.equal(fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: R.ip })).retval, TC_ACT_SHOT);
  });

  it("another node's endpoint address arriving from the bridge is forged (spoofed-ifindex)", () => {
    const before = count(REASON.spoofedIfindex);
    const forged = tcpFrame({ srcMac: '02:00:00:00:00:01', dstMac: A.mac, src: R.ip, dst: A.ip, sport: 8080, dport: 40000, flags: 'SA' });
    assert.equal(testRun(to, forged, { ifindex: ifA }).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.spoofedIfindex), before + 1);
  });

  it('from_overlay drops what did not come through the VXLAN receive path (no tunnel metadata)', () => {
    const before = count(REASON.malformed);
    const frame = tcpFrame({ srcMac: R.mac, dstMac: A.mac, src: R.ip, dst: A.ip, sport: 8080, dport: 40000, flags: 'S' });
    assert.equal(testRun(overlay, frame, { ifindex: ifA }).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.malformed), before + 1);
  });
});

describe('from_underlay under BPF_PROG_TEST_RUN: takes exactly the VXLAN the device would decapsulate the same way', () => {
  const tag = randomBytes(3).toString('hex');
  const PIN = `/sys/fs/bpf/bastion-ul-${tag}`;
  const VU = `bul${tag}u`;
  const VP = `bul${tag}p`;
  const LOCAL = '192.0.2.21';
  const A = { ip: '10.68.1.2', mac: '02:00:00:00:3a:0a', id: 800 };
  const R = { ip: '10.68.2.2', mac: '02:00:00:00:4b:0b', id: 801, node: '192.0.2.22' };
  const NODE_MAC = '02:00:00:00:5c:0c';
  const TC_ACT_UNSPEC = 0xffffffff; // -1, as the run's u32 retval
  let obj: BpfObject;
  let maps: BastionMaps;
  let prog: number;
  let ifU: number;
  let ifA: number;
  let ourMac: string;

  const count = (reason: number) => Number(maps.counters.get(reason).packets);
  const inner = (dport = 9090) => tcpFrame({ srcMac: R.mac, dstMac: A.mac, src: R.ip, dst: A.ip, sport: 41000, dport, flags: 'S' });
  /** A VXLAN packet from R's node to this one, as Linux's VXLAN (and Bastion) send it, with overrides. */
  const vxlan = (o: { frame?: Buffer; vni?: number; flags?: number; dport?: number; checksum?: number; dstMac?: string; dst?: string; ip?: Partial<Ipv4Options> } = {}) => {
    const vx = Buffer.alloc(8);
    vx.writeUInt32BE((o.flags ?? 0x08) << 24, 0);
    vx.writeUInt32BE((o.vni ?? R.id) << 8, 4);
    const addrs = { src: R.node, dst: o.dst ?? LOCAL };
    const u = udp({ sport: 50123, dport: o.dport ?? 4789, payload: Buffer.concat([vx, o.frame ?? inner()]), checksum: o.checksum ?? 0 }, addrs);
    return ethernet({ dst: o.dstMac ?? ourMac, src: NODE_MAC, type: ETH_P.ipv4 }, ipv4({ ...addrs, proto: 17, ...o.ip }, u));
  };
  const runU = (frame: Buffer) => testRun(prog, frame, { ifindex: ifU });

  before(() => {
    execFileSync('ip', ['link', 'add', VU, 'type', 'veth', 'peer', 'name', VP]);
    ifU = ifindexOf(VU);
    ifA = ifindexOf(VP);
    ourMac = readFileSync(`/sys/class/net/${VU}/address`, 'utf8').trim();
    ensurePinRoot(PIN);
    obj = loadObject(join(BPF_DIR, 'from_underlay.o'), { pinRoot: PIN });
    prog = obj.program('from_underlay');
    maps = openBastionMaps(PIN);
    maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    const info: EndpointInfo = { identity: A.id, ifindex: ifA, ipv4: A.ip, flags: 0, mac: A.mac, gwMac: '02:00:00:00:00:01' };
    maps.endpoints.set(ifA, info);
    maps.endpointsByIp.set(A.ip, info);
    maps.ipcache.set({ prefixlen: 0, addr: '0.0.0.0' }, { identity: ID_WORLD, flags: 0 });
    maps.remote.set(R.ip, { identity: R.id, nodeIpv4: R.node, mac: R.mac, flags: 0 });
    maps.policy.set({ prefixlen: POLICY_PREFIX_FULL, epId: A.id, peerId: R.id, direction: DIR_INGRESS, proto: P.tcp, dport: 9090 }, { ruleId: 5, flags: 0 });
    // the device's ifindex only has to be non-zero here: what is tested is what this program takes
    maps.tunnel.set({ ifindex: ifA, localIpv4: LOCAL, underlayIfindex: ifU, port: 4789, flags: 0 });
  });

  after(() => {
    maps?.close();
    obj?.close();
    removePinDir(PIN);
    execFileSync('ip', ['link', 'del', VU], { stdio: 'ignore' });
  });

  it('an allowed connection from the node that holds its sender: decapsulated to the inner frame and redirected to the receiver', () => {
    const before = count(REASON.decapsulated);
    const r = runU(vxlan());
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.deepEqual(r.dataOut, inner(), 'the frame handed on is the inner one, byte for byte');
    assert.equal(count(REASON.decapsulated), before + 1);
  });

  it("the receiver's policy and the identity check are from_overlay's: a port it does not accept, a claim from the wrong node or of the wrong identity, an unknown sender", () => {
    let before = count(REASON.policyDenied);
    assert.equal(runU(vxlan({ frame: inner(9091) })).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.policyDenied), before + 1);
    before = count(REASON.tunnelSpoofed);
    assert.equal(runU(vxlan({ vni: 999 })).retval, TC_ACT_SHOT, 'another identity');
    const fromElsewhere = vxlan({ ip: { src: '192.0.2.99' } });
    assert.equal(runU(fromElsewhere).retval, TC_ACT_SHOT, 'another node');
    assert.equal(count(REASON.tunnelSpoofed), before + 2);
    before = count(REASON.tunnelUnknownSource);
    const stranger = tcpFrame({ srcMac: R.mac, dstMac: A.mac, src: '10.68.9.9', dst: A.ip, sport: 41000, dport: 9090, flags: 'S' });
    assert.equal(runU(vxlan({ frame: stranger })).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.tunnelUnknownSource), before + 1);
  });

  it('everything else goes on untouched (TC_ACT_UNSPEC), for the device or the host', () => {
    const arp = arpRequest({ srcMac: R.mac, srcIp: R.ip, targetIp: A.ip });
    const cases: Array<[string, Buffer]> = [
      ['a UDP checksum to verify', vxlan({ checksum: 0x1234 })],
      ['another UDP port', vxlan({ dport: 8472 })],
      ['another destination address', vxlan({ dst: '192.0.2.23' })],
      ['a frame for another host (PACKET_OTHERHOST)', vxlan({ dstMac: '02:00:00:00:6d:0d' })],
      ['outer IPv4 options', vxlan({ ip: { options: Buffer.from([1, 1, 1, 1]) } })],
      ['an outer fragment', vxlan({ ip: { mf: true } })],
      ['a bad outer header checksum', (() => { const f = vxlan(); f.writeUInt16BE(f.readUInt16BE(24) ^ 0xffff, 24); return f; })()],
      ['VXLAN flags other than VNI-valid', vxlan({ flags: 0x0c })],
      ['an inner ARP frame', vxlan({ frame: arp })],
      ["the host's own traffic", udpFrame({ srcMac: NODE_MAC, dstMac: ourMac, src: R.node, dst: LOCAL, sport: 53, dport: 40000 })],
    ];
    const decap = count(REASON.decapsulated);
    for (const [what, frame] of cases) {
      const r = runU(frame);
      assert.equal(r.retval, TC_ACT_UNSPEC, what);
      assert.deepEqual(r.dataOut, frame, `${what}: untouched`);
    }
    assert.equal(count(REASON.decapsulated), decap);
    // on another interface than the underlay the tunnel entry names: not taken either
    assert.equal(testRun(prog, vxlan(), { ifindex: ifA }).retval, TC_ACT_UNSPEC);
  });
});

for (const mode of ['device', 'direct'] as const) describe(`two hosts over a real VXLAN underlay (senders encapsulate ${mode === 'direct' ? 'in the program, onto the underlay' : 'through the VXLAN device'})`, () => {
  let u: Underlay;
  const p = uniqueClusterPrefix();
  const pins = [`/sys/fs/bpf/bastion-ovh1-${p}`, `/sys/fs/bpf/bastion-ovh2-${p}`];
  const h1 = `${p}-h1`;
  const h2 = `${p}-h2`;
  const ev = `${p}-ev`;
  const c1 = `${p}-c1`;
  const c2 = `${p}-c2`;
  const c3 = `${p}-c3`;
  const net = `10.${randomInt(100, 250)}`;
  const C1 = { ip: `${net}.1.2`, mac: '02:00:00:01:01:02', id: 1001 };
  const C2 = { ip: `${net}.2.2`, mac: '02:00:00:01:02:02', id: 1002 };
  const C3 = { ip: `${net}.2.3`, mac: '02:00:00:01:02:03', id: 1003 };
  const GW = '02:00:00:00:00:fe';
  let ip1: string, ip2: string, ipEv: string;
  const maps: BastionMaps[] = [];
  let echo: Background[] = [];

  const container = async (host: string, ns: string, hostIf: string, c: { ip: string; mac: string }) => {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['-n', host, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'address', c.mac, 'mtu', '1450']);
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    await run('ip', ['-n', ns, 'addr', 'add', `${c.ip}/16`, 'dev', 'eth0']);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', host, 'link', 'set', hostIf, 'up']);
  };
  const applyNode = async (host: string, spec: NodeSpec) => {
    const r = await nsRun(null, 'nsenter', [`--net=/run/netns/${host}`, process.execPath, NODE_SCRIPT], { input: JSON.stringify(spec), timeoutMs: 30_000 });
    assert.equal(r.code, 0, `datapath setup in ${host}: ${r.stderr}`);
  };
  const count = (m: BastionMaps, reason: number) => Number(m.counters.get(reason).packets);
  /** scapy VXLAN from the underlay namespace `ns`: outer src/dst, VNI, inner ICMP echo src→dst */
  const forge = async (ns: string, o: { outerSrc: string; outerDst: string; vni: number; inner: { ip: string; mac: string }; to: { ip: string; mac: string } }) => {
    const script = `
from scapy.all import IP, UDP, Ether, ICMP, send, conf
from scapy.layers.vxlan import VXLAN
conf.verb = 0
pkt = IP(src="${o.outerSrc}", dst="${o.outerDst}")/UDP(sport=55555, dport=4789)/VXLAN(vni=${o.vni}, flags=0x08)/Ether(src="${o.inner.mac}", dst="${o.to.mac}")/IP(src="${o.inner.ip}", dst="${o.to.ip}")/ICMP(id=4242)
send(pkt, count=3, inter=0.05)
print("sent")
`;
    const r = await nsRun(ns, '/usr/bin/python3', ['-c', script], { timeoutMs: 20_000 });
    assert.match(r.stdout, /sent/, r.stderr);
  };

  before(async () => {
    u = await createUnderlay(p);
    for (const ns of [h1, h2, ev]) await run('ip', ['netns', 'add', ns]);
    await u.attach(h1, 11);
    await u.attach(h2, 12);
    await u.attach(ev, 13);
    [ip1, ip2, ipEv] = [`${u.base}.11`, `${u.base}.12`, `${u.base}.13`];
    await container(h1, c1, 'hc1', C1);
    await container(h2, c2, 'hc2', C2);
    await container(h2, c3, 'hc3', C3);
    const world = { addr: '0.0.0.0', prefixlen: 0, identity: ID_WORLD, flags: 0 };
    const tunnel = { device: 'bvx0', underlay: 'ul0', direct: mode === 'direct' };
    await applyNode(h1, {
      pin: pins[0]!,
      tunnel,
      endpoints: [{ hostIf: 'hc1', identity: C1.id, ip: C1.ip, mac: C1.mac, gwMac: GW }],
      remote: [{ ip: C2.ip, identity: C2.id, nodeIp: ip2, mac: C2.mac }],
      policy: [
        { ep: C1.id, peer: C2.id, dir: DIR_EGRESS, proto: P.tcp, port: 8080 },
        { ep: C1.id, peer: C2.id, dir: DIR_EGRESS, proto: P.tcp, port: 7070 },
        { ep: C1.id, peer: C2.id, dir: DIR_EGRESS, proto: P.tcp, port: 5201 },
        { ep: C1.id, peer: C2.id, dir: DIR_EGRESS, proto: P.icmp, port: 0 },
      ],
      neigh: [{ ep: C1.id, peer: C2.id }],
      ipcache: [world],
    });
    await applyNode(h2, {
      pin: pins[1]!,
      tunnel,
      endpoints: [
        { hostIf: 'hc2', identity: C2.id, ip: C2.ip, mac: C2.mac, gwMac: GW },
        { hostIf: 'hc3', identity: C3.id, ip: C3.ip, mac: C3.mac, gwMac: GW },
      ],
      remote: [{ ip: C1.ip, identity: C1.id, nodeIp: ip1, mac: C1.mac }],
      // c2 accepts c1 on 8080 and ICMP, not on 7070 (which c1's egress allows)
      policy: [
        { ep: C2.id, peer: C1.id, dir: DIR_INGRESS, proto: P.tcp, port: 8080 },
        { ep: C2.id, peer: C1.id, dir: DIR_INGRESS, proto: P.tcp, port: 5201 },
        { ep: C2.id, peer: C1.id, dir: DIR_INGRESS, proto: P.icmp, port: 0 },
      ],
      neigh: [{ ep: C2.id, peer: C1.id }],
      ipcache: [world],
    });
    for (const pin of pins) maps.push(openBastionMaps(pin));
    echo = [await startTcpEcho(c2, C2.ip, 8080), await startTcpEcho(c2, C2.ip, 7070)];
  });

  after(async () => {
    await stopBackground();
    for (const m of maps) m.close();
    for (const ns of [c1, c2, c3, h1, h2, ev]) await run('ip', ['netns', 'del', ns], { allowFail: true });
    await u?.destroy();
    for (const pin of pins) removePinDir(pin);
  });

  it('a dependency on another host: ARP answered locally, ping and TCP through the tunnel, both ways', async () => {
    const a = await arping(c1, 'eth0', C2.ip);
    assert.ok(a.replies > 0, a.output);
    assert.ok(a.macs.includes(C2.mac), `answered with ${a.macs.join(',')}`);
    const enc0 = count(maps[0]!, REASON.encapsulated);
    const dec0 = count(maps[1]!, REASON.decapsulated);
    assert.ok(await ping(c1, C2.ip, 3), 'ping c1 -> c2 across hosts');
    const t = await tcpConnect(c1, C2.ip, 8080);
    assert.ok(t.ok, t.detail);
    assert.ok(count(maps[0]!, REASON.encapsulated) > enc0, 'h1 encapsulated');
    assert.ok(count(maps[1]!, REASON.decapsulated) > dec0, 'h2 decapsulated');
    // replies went back through h2's from_container and h1's from_overlay
    assert.ok(count(maps[1]!, REASON.encapsulated) > 0);
    assert.ok(count(maps[0]!, REASON.decapsulated) > 0);
    // which way they left: the VXLAN device sent them, or the program built them and the device sent nothing
    const sent = interfaceStat(h1, 'bvx0', 'tx_packets');
    if (mode === 'direct') assert.equal(sent, 0, 'built in the program, yet the VXLAN device transmitted');
    else assert.ok(sent > 0, 'the VXLAN device transmitted nothing');
  });

  it('a bulk TCP transfer crosses whole (segments stay large through the encapsulation, every byte arrives unchanged)', async () => {
    // 32 MiB of random bytes sent by socat and written out by the receiver: the same length and the
    // same digest prove the whole stream crossed with its checksums right. (iperf3's receiver total
    // stops at the client's end-of-test message and may lag the sender by what sits in socket buffers.)
    const tx = join(tmpdir(), `${p}-bulk-tx`);
    const rxFile = join(tmpdir(), `${p}-bulk-rx`);
    try {
      const data = randomBytes(32 * 1024 * 1024);
      writeFileSync(tx, data);
      const srv = startBackground(c2, 'socat', ['-u', `TCP-LISTEN:5201,bind=${C2.ip},reuseaddr`, `CREATE:${rxFile}`]);
      assert.ok(await waitFor(() => isListening(c2, 'tcp', C2.ip, 5201), 5000), `socat server: ${srv.stderr}`);
      const r = await nsRun(c1, 'socat', ['-u', `OPEN:${tx},rdonly`, `TCP:${C2.ip}:5201,connect-timeout=3`], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      const end = await Promise.race([srv.exited, new Promise<null>((res) => setTimeout(() => res(null), 20_000))]);
      assert.ok(end && end.code === 0, `receiver did not finish: ${JSON.stringify(end)} ${srv.stderr}`);
      const got = readFileSync(rxFile);
      assert.equal(got.length, data.length, `received ${got.length} of ${data.length} bytes`);
      assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'), 'the bytes changed on the way');
    } finally {
      rmSync(tx, { force: true });
      rmSync(rxFile, { force: true });
    }
    // GSO kept: far fewer packets than 1,400-byte segments on h2's underlay leg
    const rx = { packets: interfaceStat(h2, 'ul0', 'rx_packets'), bytes: interfaceStat(h2, 'ul0', 'rx_bytes') };
    assert.ok(rx.bytes / rx.packets > 3000, `h2's underlay received ${rx.packets} packets for ${rx.bytes} bytes: segmented on the way`);
  });

  it("the receiver's ingress decides on its own node; a new connection the other way is the receiver's egress to decide", async () => {
    const denied0 = count(maps[1]!, REASON.policyDenied);
    const t = await tcpConnect(c1, C2.ip, 7070, 1);
    assert.ok(!t.ok, `c1 reached c2:7070 without c2's ingress: ${t.detail}`);
    assert.ok(count(maps[1]!, REASON.policyDenied) > denied0, 'dropped by from_overlay on h2');
    const rev0 = count(maps[1]!, REASON.policyDenied);
    const back = await tcpConnect(c2, C1.ip, 8080, 1);
    assert.ok(!back.ok, back.detail);
    assert.ok(count(maps[1]!, REASON.policyDenied) > rev0, "dropped at c2's egress on h2");
    // c3, on the same host as c2, is nobody's dependency: no ARP, no ping
    assert.equal((await arping(c1, 'eth0', C3.ip, 2, 2)).replies, 0);
    assert.ok(!(await ping(c1, C3.ip, 1, 1)));
  });

  it("VXLAN forged from the underlay is dropped: a foreign node's identity, the wrong identity from the right node, an unknown source", async () => {
    const rx0 = maps[1]!.epStats.get(ifindexIn(h2, 'hc2'))?.rxPackets ?? 0n;
    let spoofed = count(maps[1]!, REASON.tunnelSpoofed);
    // an underlay host that is no node claims c1's identity (VNI 1001, inner source c1)
    await forge(ev, { outerSrc: ipEv, outerDst: ip2, vni: C1.id, inner: C1, to: C2 });
    assert.equal(count(maps[1]!, REASON.tunnelSpoofed), spoofed + 3);
    // h1's address, but the VNI claims c3's identity for c1's address
    spoofed = count(maps[1]!, REASON.tunnelSpoofed);
    await forge(ev, { outerSrc: ip1, outerDst: ip2, vni: C3.id, inner: C1, to: C2 });
    assert.equal(count(maps[1]!, REASON.tunnelSpoofed), spoofed + 3);
    // a source no node holds
    const unknown = count(maps[1]!, REASON.tunnelUnknownSource);
    await forge(ev, { outerSrc: ip1, outerDst: ip2, vni: 4242, inner: { ip: `${net}.9.9`, mac: '02:00:00:09:09:09' }, to: C2 });
    assert.equal(count(maps[1]!, REASON.tunnelUnknownSource), unknown + 3);
    const rx1 = maps[1]!.epStats.get(ifindexIn(h2, 'hc2'))?.rxPackets ?? 0n;
    assert.equal(rx1, rx0, 'c2 was handed a forged packet');
  });
});
