/**
 * Packet-level tests of the real datapath programs through
 * BPF_PROG_TEST_RUN: every verdict is the kernel's, on frames built here.
 * Covers the edge cases a live network rarely produces on demand:
 * truncated headers, VLAN tags, unknown protocols, IPv6, fragments in and
 * out of order, IP options, forged sources, ARP answers, reverse SYNs,
 * unprovisioned interfaces, audit mode, and the events they emit.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadObject, type BpfObject } from '../../src/datapath/bpf-object.js';
import { openBastionMaps, type BastionMaps } from '../../src/datapath/bpf-map.js';
import { ensurePinRoot, removePinDir } from '../../src/datapath/bpffs.js';
import { testRun, testRunAsync } from '../../src/datapath/prog-test-run.js';
import { RingBufReader } from '../../src/datapath/ringbuf.js';
import {
  CFG_F_TRACE_ALLOWED,
  CT_F_CLOSING,
  EP_F_AUDIT,
  FLOW_F_INGRESS,
  FLOW_F_REPLY,
  FLOW_SUM_F_AUDIT,
  CT_F_SEEN_REPLY,
  DIR_EGRESS,
  DIR_INGRESS,
  ID_HOST,
  ID_WORLD,
  FRAG_VERDICT_ALLOWED,
  FRAG_VERDICT_DROPPED,
  TRACE_FROM_CONTAINER,
  IPC_F_HOST,
  IPPROTO as P,
  MODE_AUDIT,
  MODE_ENFORCE,
  POLICY_PREFIX_FULL,
  REASON,
  VERDICT,
  decodeFlowEvent,
  type EndpointInfo,
  type FlowEvent,
} from '../../src/datapath/layout.js';
import {
  ETH_P,
  arpRequest,
  ethernet,
  gratuitousArp,
  icmpEchoFrame,
  ipv4,
  ipv4Fragments,
  ipv4Frame,
  neighborSolicitation,
  parseFrame,
  tcpFrame,
  udp,
  udpFrame,
  IPV4_OPT_ROUTER_ALERT,
  ICMP,
  icmp,
} from '../helpers/packets.js';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const BPF_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bpf');
const tag = randomBytes(3).toString('hex');
const PIN = `/sys/fs/bpf/bastion-pt-${tag}`;
const VA = `bpt${tag}a`;
const VB = `bpt${tag}b`;
const VC = `bpt${tag}c`;
const VD = `bpt${tag}d`;

const GW_MAC = '02:00:00:00:00:01';
const A = { ip: '10.66.0.10', mac: '02:00:00:00:0a:0a', id: 300 };
const B = { ip: '10.66.0.20', mac: '02:00:00:00:0b:0b', id: 301 };
const C = { ip: '10.66.0.30', mac: '02:00:00:00:0c:0c', id: 302 };
const HOST = '10.66.0.1';
const WORLD_IP = '10.99.1.1';

function ifindexOf(name: string): number {
  return Number(execFileSync('cat', [`/sys/class/net/${name}/ifindex`]).toString().trim());
}

describe('datapath programs under BPF_PROG_TEST_RUN', () => {
  let objs: BpfObject[] = [];
  let maps: BastionMaps;
  let from: number;
  let to: number;
  let gc: number;
  let ifA: number, ifB: number, ifC: number, ifNone: number;
  const events: FlowEvent[] = [];
  let reader: RingBufReader;

  const info = (e: typeof A, ifindex: number): EndpointInfo => ({ identity: e.id, ifindex, ipv4: e.ip, flags: 0, mac: e.mac, gwMac: GW_MAC });
  const allow = (ep: number, peer: number, dir: number, proto: number, port: number, ruleId = 7) =>
    maps.policy.set({ prefixlen: POLICY_PREFIX_FULL, epId: ep, peerId: peer, direction: dir, proto, dport: port }, { ruleId, flags: 0 });
  const count = (reason: number) => Number(maps.counters.get(reason).packets);
  const fromA = (frame: Buffer) => testRun(from, frame, { ifindex: ifA });
  const drain = () => {
    reader.consume();
    return events.splice(0);
  };

  before(() => {
    execFileSync('ip', ['link', 'add', VA, 'type', 'veth', 'peer', 'name', VB]);
    execFileSync('ip', ['link', 'add', VC, 'type', 'veth', 'peer', 'name', VD]);
    [ifA, ifB, ifC, ifNone] = [VA, VB, VC, VD].map(ifindexOf) as [number, number, number, number];
    ensurePinRoot(PIN);
    objs = [
      loadObject(join(BPF_DIR, 'from_container.o'), { pinRoot: PIN }),
      loadObject(join(BPF_DIR, 'to_container.o'), { pinRoot: PIN }),
      loadObject(join(BPF_DIR, 'ct_gc.o'), { pinRoot: PIN }),
    ];
    from = objs[0]!.program('from_container');
    to = objs[1]!.program('to_container');
    gc = objs[2]!.program('ct_gc');
    maps = openBastionMaps(PIN);
    maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    for (const [e, ifi] of [[A, ifA], [B, ifB], [C, ifC]] as const) {
      maps.endpoints.set(ifi, info(e, ifi));
      maps.endpointsByIp.set(e.ip, info(e, ifi));
      maps.ipcache.set({ prefixlen: 32, addr: e.ip }, { identity: e.id, flags: 0 });
    }
    maps.ipcache.set({ prefixlen: 32, addr: HOST }, { identity: ID_HOST, flags: IPC_F_HOST });
    maps.ipcache.set({ prefixlen: 0, addr: '0.0.0.0' }, { identity: ID_WORLD, flags: 0 });
    // A → B on 8080/tcp and 5353/udp, both sides; A may resolve B and B may resolve A.
    allow(A.id, B.id, DIR_EGRESS, P.tcp, 8080);
    allow(B.id, A.id, DIR_INGRESS, P.tcp, 8080);
    allow(A.id, B.id, DIR_EGRESS, P.udp, 5353);
    allow(B.id, A.id, DIR_INGRESS, P.udp, 5353);
    // A may send to B on 6000/tcp but B's ingress does not allow it.
    allow(A.id, B.id, DIR_EGRESS, P.tcp, 6000);
    maps.neigh.set({ epId: A.id, peerId: B.id }, 1);
    maps.neigh.set({ epId: B.id, peerId: A.id }, 1);
    reader = new RingBufReader(maps.events.fd, (b: Buffer) => events.push(decodeFlowEvent(b)), { wakeup: 'interval', intervalMs: 1_000_000 });
  });

  after(() => {
    reader?.close();
    maps?.close();
    for (const o of objs) o.close();
    removePinDir(PIN);
    for (const l of [VA, VC]) {
      try {
        execFileSync('ip', ['link', 'del', l]);
      } catch {
        // already gone
      }
    }
  });

  const syn = (src: typeof A, dst: typeof A, sport: number, dport: number, extra: Record<string, unknown> = {}) =>
    tcpFrame({ srcMac: src.mac, dstMac: dst.mac, src: src.ip, dst: dst.ip, sport, dport, flags: 'S', ...extra });

  it('allows a declared dependency and hands it straight to the peer (redirect), with an ALLOWED event naming the rule', () => {
    drain();
    const before = count(REASON.allowedNew);
    assert.equal(fromA(syn(A, B, 40000, 8080)).retval, TC_ACT_REDIRECT);
    assert.equal(count(REASON.allowedNew), before + 1);
    const ev = drain().find((e) => e.verdict === VERDICT.allowed);
    assert.ok(ev, 'an ALLOWED event');
    assert.equal(ev.srcId, A.id);
    assert.equal(ev.dstId, B.id);
    assert.equal(ev.dport, 8080);
    assert.equal(ev.ruleId, 7);
  });

  it('drops a port the policy does not name, and one the receiver does not accept', () => {
    const before = count(REASON.policyDenied);
    assert.equal(fromA(syn(A, B, 40001, 9090)).retval, TC_ACT_SHOT);
    assert.equal(fromA(syn(A, B, 40002, 6000)).retval, TC_ACT_SHOT, 'egress alone is not enough');
    assert.equal(count(REASON.policyDenied), before + 2);
    const ev = drain().filter((e) => e.verdict === VERDICT.dropped && e.reason === REASON.policyDenied);
    assert.equal(ev.length, 2);
  });

  it('lets replies through but not a SYN in the reply direction', () => {
    assert.equal(fromA(syn(A, B, 40010, 8080)).retval, TC_ACT_REDIRECT);
    const reply = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 8080, dport: 40010, flags: 'SA' });
    assert.equal(testRun(from, reply, { ifindex: ifB }).retval, TC_ACT_REDIRECT);
    const reverseSyn = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 8080, dport: 40010, flags: 'S' });
    assert.equal(testRun(from, reverseSyn, { ifindex: ifB }).retval, TC_ACT_SHOT);
    const newReverse = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 5555, dport: 8080, flags: 'S' });
    assert.equal(testRun(from, newReverse, { ifindex: ifB }).retval, TC_ACT_SHOT);
  });

  it('keeps one conntrack entry per connection for both directions; a SYN reusing a closed tuple gets a fresh verdict', () => {
    const entriesOf = (port: number) => [...maps.ct.entries()].filter(([k]) => k.sport === port || k.dport === port);
    const fromB = (frame: Buffer) => testRun(from, frame, { ifindex: ifB });
    const aToB = (flags: string) => tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 44000, dport: 8080, flags });
    const bToA = (flags: string) => tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 8080, dport: 44000, flags });
    assert.equal(fromA(aToB('S')).retval, TC_ACT_REDIRECT);
    assert.equal(fromB(bToA('SA')).retval, TC_ACT_REDIRECT);
    assert.equal(fromA(aToB('A')).retval, TC_ACT_REDIRECT);
    let ct = entriesOf(44000);
    assert.equal(ct.length, 1, 'one entry, whichever way the packets go');
    assert.equal(ct[0]![1].srcId, A.id, 'the opener');
    assert.ok(ct[0]![1].flags & CT_F_SEEN_REPLY);
    assert.equal(fromA(aToB('FA')).retval, TC_ACT_REDIRECT);
    assert.ok(entriesOf(44000)[0]![1].flags & CT_F_CLOSING);
    // The port is reused at once (tcp_tw_reuse): a new connection, with its own verdict, counted
    // in the key's summary (A → B 8080/tcp had its event with the key's first connection).
    drain();
    const new0 = count(REASON.allowedNew);
    const key = { srcId: A.id, dstId: B.id, dport: 8080, proto: P.tcp, flags: 0 };
    const sum0 = maps.flowSum.get(key)!.count;
    assert.equal(fromA(aToB('S')).retval, TC_ACT_REDIRECT);
    assert.equal(count(REASON.allowedNew), new0 + 1);
    assert.equal(maps.flowSum.get(key)!.count, sum0 + 1n);
    assert.equal(maps.flowSum.get(key)!.sport, 44000, 'the last connection\'s port');
    ct = entriesOf(44000);
    assert.equal(ct.length, 1);
    assert.equal(ct[0]![1].flags & CT_F_CLOSING, 0, 'a fresh entry');
    // Closed again; now B reuses the tuple the other way round: B's policy decides, not the old entry.
    assert.equal(fromA(aToB('R')).retval, TC_ACT_REDIRECT);
    const denied0 = count(REASON.policyDenied);
    assert.equal(fromB(bToA('S')).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.policyDenied), denied0 + 1);
  });

  it('drops forged source IP, forged source MAC, and both', () => {
    const ip0 = count(REASON.spoofedIp);
    const mac0 = count(REASON.spoofedMac);
    assert.equal(fromA(tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: C.ip, dst: B.ip, sport: 1, dport: 8080 })).retval, TC_ACT_SHOT);
    assert.equal(fromA(tcpFrame({ srcMac: C.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 1, dport: 8080 })).retval, TC_ACT_SHOT);
    assert.equal(fromA(tcpFrame({ srcMac: C.mac, dstMac: B.mac, src: C.ip, dst: B.ip, sport: 1, dport: 8080 })).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.spoofedIp), ip0 + 1);
    assert.equal(count(REASON.spoofedMac), mac0 + 2);
  });

  it("answers A's ARP for B itself, with B's true MAC, and never floods it", () => {
    const r = fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip }));
    assert.equal(r.retval, TC_ACT_REDIRECT);
    const f = parseFrame(r.dataOut);
    assert.ok(f.arp);
    assert.equal(f.arp.op, 2);
    assert.equal(f.arp.senderMac, B.mac);
    assert.equal(f.arp.senderIp, B.ip);
    assert.equal(f.arp.targetMac, A.mac);
    assert.equal(f.arp.targetIp, A.ip);
    assert.equal(f.eth.dst, A.mac);
  });

  it('drops ARP for a non-dependency, gratuitous ARP, forged ARP senders and ARP replies to containers', () => {
    assert.equal(fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: C.ip })).retval, TC_ACT_SHOT);
    assert.equal(fromA(gratuitousArp({ mac: A.mac, ip: A.ip })).retval, TC_ACT_SHOT);
    assert.equal(fromA(arpRequest({ srcMac: A.mac, srcIp: B.ip, targetIp: C.ip })).retval, TC_ACT_SHOT, 'forged sender IP');
    const poison = ethernet(
      { dst: B.mac, src: A.mac, type: ETH_P.arp },
      Buffer.concat([Buffer.from([0, 1, 8, 0, 6, 4, 0, 2]), Buffer.from(A.mac.split(':').map((h) => parseInt(h, 16))), Buffer.from([10, 66, 0, 30]), Buffer.from(B.mac.split(':').map((h) => parseInt(h, 16))), Buffer.from([10, 66, 0, 20])]),
    );
    assert.equal(fromA(poison).retval, TC_ACT_SHOT, 'arpspoof-style reply claiming C');
  });

  it('drops truncated headers: Ethernet only, short IPv4, short TCP, bad IHL', () => {
    const m0 = count(REASON.malformed);
    const full = syn(A, B, 40020, 8080);
    // (A frame whose IPv4 header is incomplete is refused by the kernel's
    // test runner itself, before any program sees it.)
    for (const len of [14 + 20, 14 + 20 + 8]) {
      let r;
      try {
        r = fromA(full.subarray(0, len));
      } catch (e) {
        throw new Error(`length ${len}: ${(e as Error).message}`);
      }
      assert.equal(r.retval, TC_ACT_SHOT, `length ${len}`);
    }
    const badIhl = ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, ipv4({ src: A.ip, dst: B.ip, proto: P.tcp, ihl: 4 }, Buffer.alloc(20)));
    assert.equal(fromA(badIhl).retval, TC_ACT_SHOT);
    const shortTotal = ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, ipv4({ src: A.ip, dst: B.ip, proto: P.tcp, totalLength: 12 }, Buffer.alloc(20)));
    assert.equal(fromA(shortTotal).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.malformed), m0 + 4);
  });

  it('parses past IPv4 options', () => {
    const withOpts = tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 40030, dport: 8080, ip: { options: IPV4_OPT_ROUTER_ALERT } });
    assert.equal(parseFrame(withOpts).ipv4?.ihl, 6);
    assert.equal(fromA(withOpts).retval, TC_ACT_REDIRECT);
  });

  it('drops VLAN-tagged frames, IPv6 (neighbour discovery included) and unknown IP protocols', () => {
    const l3 = count(REASON.unsupportedL3);
    const v6 = count(REASON.ipv6);
    const l4 = count(REASON.unsupportedL4);
    assert.equal(fromA(tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 1, dport: 8080, vlan: { id: 42 } })).retval, TC_ACT_SHOT);
    assert.equal(fromA(tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 1, dport: 8080, vlan: { id: 42, tpid: 0x88a8 } })).retval, TC_ACT_SHOT);
    assert.equal(fromA(neighborSolicitation({ srcMac: A.mac, srcIp: 'fe80::a', targetIp: 'fe80::b' })).retval, TC_ACT_SHOT);
    const gre = ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, ipv4({ src: A.ip, dst: B.ip, proto: 47 }, Buffer.alloc(24)));
    assert.equal(fromA(gre).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.unsupportedL3), l3 + 2);
    assert.equal(count(REASON.ipv6), v6 + 1);
    assert.equal(count(REASON.unsupportedL4), l4 + 1);
  });

  it('fragments: a later fragment before its first is dropped; after an allowed first it passes; a denied first keeps the rest out', () => {
    const ipOf = (id: number, dport: number) => ({ src: A.ip, dst: B.ip, proto: P.udp, id });
    const datagram = (dport: number) => udp({ sport: 5000, dport, payload: Buffer.alloc(3000, 7) }, { src: A.ip, dst: B.ip });
    const frames = (id: number, dport: number) => ipv4Fragments(ipOf(id, dport), datagram(dport), 1400).map((p) => ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, p));

    const orphan = frames(77, 5353);
    const f0 = count(REASON.fragment);
    assert.equal(fromA(orphan[1]!).retval, TC_ACT_SHOT, 'later fragment with no first');
    assert.equal(count(REASON.fragment), f0 + 1);

    const ok = frames(78, 5353);
    assert.equal(ok.length, 3);
    for (const f of ok) assert.equal(fromA(f).retval, TC_ACT_REDIRECT);

    const denied = frames(79, 9999);
    assert.equal(fromA(denied[0]!).retval, TC_ACT_SHOT);
    assert.equal(fromA(denied[1]!).retval, TC_ACT_SHOT);
    assert.equal(fromA(denied[2]!).retval, TC_ACT_SHOT);
  });

  it('drops broadcast and multicast IP from a container', () => {
    const b0 = count(REASON.broadcast);
    assert.equal(fromA(udpFrame({ srcMac: A.mac, dstMac: 'ff:ff:ff:ff:ff:ff', src: A.ip, dst: '255.255.255.255', sport: 68, dport: 67 })).retval, TC_ACT_SHOT);
    assert.equal(fromA(udpFrame({ srcMac: A.mac, dstMac: '01:00:5e:00:00:fb', src: A.ip, dst: '224.0.0.251', sport: 5353, dport: 5353 })).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.broadcast), b0 + 2);
  });

  it('isolates the host: host ports only when a rule names them', () => {
    const host = { ip: HOST, mac: GW_MAC, id: ID_HOST };
    const h0 = count(REASON.hostDenied);
    assert.equal(fromA(syn(A, host, 41000, 53)).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.hostDenied), h0 + 1);
    allow(A.id, ID_HOST, DIR_EGRESS, P.tcp, 53);
    assert.equal(fromA(syn(A, host, 41001, 53)).retval, TC_ACT_OK, 'to the bridge, towards the host stack');
    assert.equal(fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: HOST })).retval, TC_ACT_SHOT, 'no neighbour entry for the host yet');
    maps.neigh.set({ epId: A.id, peerId: ID_HOST }, 1);
    const r = fromA(arpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: HOST }));
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(parseFrame(r.dataOut).arp?.senderMac, GW_MAC);
  });

  it('ICMP echo only when allowed; unsolicited echo replies never open anything', () => {
    assert.equal(fromA(icmpEchoFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, echo: 'request', id: 9, seq: 1 })).retval, TC_ACT_SHOT);
    allow(A.id, B.id, DIR_EGRESS, P.icmp, 0);
    allow(B.id, A.id, DIR_INGRESS, P.icmp, 0);
    assert.equal(fromA(icmpEchoFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, echo: 'request', id: 9, seq: 2 })).retval, TC_ACT_REDIRECT);
    assert.equal(testRun(from, icmpEchoFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, echo: 'reply', id: 9, seq: 2 }), { ifindex: ifB }).retval, TC_ACT_REDIRECT);
    assert.equal(testRun(from, icmpEchoFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, echo: 'reply', id: 4242, seq: 1 }), { ifindex: ifB }).retval, TC_ACT_SHOT);
  });

  it('drops everything on an interface whose endpoint is not provisioned yet', () => {
    const n0 = count(REASON.noEndpoint);
    assert.equal(testRun(from, syn(A, B, 1, 8080), { ifindex: ifNone }).retval, TC_ACT_SHOT);
    assert.equal(testRun(to, syn(B, A, 1, 8080), { ifindex: ifNone }).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.noEndpoint), n0 + 2);
  });

  it('to_container: flooded frames, forged managed sources and unrequested world traffic stay out; allowed ingress passes', () => {
    const world = { ip: WORLD_IP, mac: GW_MAC, id: ID_WORLD };
    const n0 = count(REASON.notForEndpoint);
    assert.equal(testRun(to, tcpFrame({ srcMac: GW_MAC, dstMac: C.mac, src: WORLD_IP, dst: C.ip, sport: 1, dport: 80 }), { ifindex: ifA }).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.notForEndpoint), n0 + 1);
    const s0 = count(REASON.spoofedIfindex);
    assert.equal(testRun(to, syn(B, A, 2, 80), { ifindex: ifA }).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.spoofedIfindex), s0 + 1);
    assert.equal(testRun(to, syn(world, A, 3, 80), { ifindex: ifA }).retval, TC_ACT_SHOT);
    allow(A.id, ID_WORLD, DIR_INGRESS, P.tcp, 80);
    assert.equal(testRun(to, syn(world, A, 4, 80), { ifindex: ifA }).retval, TC_ACT_OK);
    const hostArp = arpRequest({ srcMac: GW_MAC, srcIp: HOST, targetIp: A.ip });
    assert.equal(testRun(to, hostArp, { ifindex: ifA }).retval, TC_ACT_OK, 'the host may resolve the container');
    assert.equal(testRun(to, arpRequest({ srcMac: GW_MAC, srcIp: HOST, targetIp: C.ip }), { ifindex: ifA }).retval, TC_ACT_SHOT);
  });

  it('audit mode passes what it would drop and records it as AUDIT', () => {
    drain();
    maps.config.set({ mode: MODE_AUDIT, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    try {
      const a0 = count(REASON.audited);
      // passed on, and since C is local, handed to it directly
      assert.equal(fromA(syn(A, C, 42000, 22)).retval, TC_ACT_REDIRECT);
      assert.equal(fromA(syn(A, { ip: WORLD_IP, mac: GW_MAC, id: ID_WORLD }, 42001, 22)).retval, TC_ACT_OK);
      assert.equal(count(REASON.audited), a0 + 3, "A→C is denied twice (A egress, C ingress), both counted");
      const ev = drain().filter((e) => e.verdict === VERDICT.audit);
      // one event per connection (the key's first), with the first check's reason
      assert.deepEqual(ev.map((e) => [e.dstId, e.dport, e.reason, e.flags & FLOW_F_INGRESS]), [
        [C.id, 22, REASON.policyDenied, 0],
        [ID_WORLD, 22, REASON.policyDenied, 0],
      ]);
      assert.equal(maps.flowSum.get({ srcId: A.id, dstId: C.id, dport: 22, proto: P.tcp, flags: FLOW_SUM_F_AUDIT })!.count, 0n, 'the first one was the event');
      assert.equal(fromA(syn(A, C, 42002, 22)).retval, TC_ACT_REDIRECT);
      assert.deepEqual(drain().filter((e) => e.verdict === VERDICT.audit), [], 'the next one of the key is counted, not an event');
      const sum = maps.flowSum.get({ srcId: A.id, dstId: C.id, dport: 22, proto: P.tcp, flags: FLOW_SUM_F_AUDIT })!;
      assert.equal(sum.count, 1n);
      assert.equal(sum.reason, REASON.policyDenied);
    } finally {
      maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    }
  });

  it('audit per endpoint: an audited end has its own policy audited, never the other end\'s', () => {
    drain();
    const setFlags = (e: typeof A, ifi: number, flags: number) => {
      maps.endpoints.set(ifi, { ...info(e, ifi), flags });
      maps.endpointsByIp.set(e.ip, { ...info(e, ifi), flags });
    };
    try {
      // A audited, B enforced: A's egress has nothing for 7000, B's ingress neither: B's refusal holds
      setFlags(A, ifA, EP_F_AUDIT);
      assert.equal(fromA(syn(A, B, 45000, 7000)).retval, TC_ACT_SHOT, 'an audited sender is no way into an enforced receiver');
      let ev = drain().find((e) => e.verdict === VERDICT.dropped && e.dport === 7000);
      assert.ok(ev, 'a DROPPED event');
      assert.equal(ev.flags & FLOW_F_INGRESS, FLOW_F_INGRESS, "decided by B's ingress");
      // A's egress allows 6000 but B's ingress does not: still refused, B is enforced
      assert.equal(fromA(syn(A, B, 45001, 6000)).retval, TC_ACT_SHOT);
      drain();
      // A audited, to the world on a port its egress does not name: A's own policy, audited
      assert.equal(fromA(syn(A, { ip: WORLD_IP, mac: GW_MAC, id: ID_WORLD }, 45002, 7001)).retval, TC_ACT_OK);
      ev = drain().find((e) => e.verdict === VERDICT.audit);
      assert.ok(ev && ev.dport === 7001 && (ev.flags & FLOW_F_INGRESS) === 0, 'AUDIT on A\'s egress');
      setFlags(A, ifA, 0);
      // B audited, A enforced: A's egress allows 6000, B's ingress (audited) does not: passes, AUDIT on B's ingress
      setFlags(B, ifB, EP_F_AUDIT);
      assert.equal(fromA(syn(A, B, 45003, 6000)).retval, TC_ACT_REDIRECT);
      ev = drain().find((e) => e.verdict === VERDICT.audit && e.dport === 6000);
      assert.ok(ev, 'an AUDIT event');
      assert.equal(ev.flags & FLOW_F_INGRESS, FLOW_F_INGRESS, "B's ingress was audited");
      assert.equal(ev.ruleId, 7, "A's egress rule allowed it");
      // but A's own egress (enforced) still refuses what it does not name
      assert.equal(fromA(syn(A, B, 45004, 7002)).retval, TC_ACT_SHOT);
    } finally {
      setFlags(A, ifA, 0);
      setFlags(B, ifB, 0);
    }
  });

  it('events carry both sides\' rules, the TCP flags, and whether the packet was a reply', () => {
    drain();
    allow(A.id, B.id, DIR_EGRESS, P.udp, 5454, 11);
    allow(B.id, A.id, DIR_INGRESS, P.udp, 5454, 12);
    assert.equal(fromA(udpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 46000, dport: 5454 })).retval, TC_ACT_REDIRECT);
    const ev = drain().find((e) => e.verdict === VERDICT.allowed && e.dport === 5454);
    assert.ok(ev, 'the key\'s first connection is an event');
    assert.equal(ev.ruleId, 11, "A's egress rule");
    assert.equal(ev.ingressRuleId, 12, "B's ingress rule");
    const sum = maps.flowSum.get({ srcId: A.id, dstId: B.id, dport: 5454, proto: P.udp, flags: 0 })!;
    assert.deepEqual([sum.count, sum.ruleId, sum.ingressRuleId], [0n, 11, 12]);
    // a SYN in the reply direction of a live connection: dropped, an event with the flags and the reply bit
    assert.equal(fromA(syn(A, B, 46001, 8080)).retval, TC_ACT_REDIRECT);
    const reverse = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 8080, dport: 46001, flags: 'S' });
    assert.equal(testRun(from, reverse, { ifindex: ifB }).retval, TC_ACT_SHOT);
    const bad = drain().find((e) => e.verdict === VERDICT.dropped && e.reason === REASON.ctInvalid);
    assert.ok(bad);
    assert.equal(bad.tcpFlags, 0x02, 'SYN');
    assert.equal(bad.flags & FLOW_F_REPLY, FLOW_F_REPLY);
  });

  it('a connection does not survive its address changing hands', () => {
    assert.equal(fromA(syn(A, B, 43000, 8080)).retval, TC_ACT_REDIRECT);
    const data = tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 43000, dport: 8080, flags: 'A' });
    assert.equal(fromA(data).retval, TC_ACT_REDIRECT);
    // B's address now belongs to a new identity without any policy.
    const B2 = { ...B, id: 999 };
    maps.endpointsByIp.set(B.ip, info(B2, ifB));
    try {
      assert.equal(fromA(data).retval, TC_ACT_SHOT, 'the old conntrack entry names the old identity');
    } finally {
      maps.endpointsByIp.set(B.ip, info(B, ifB));
    }
  });
  it('an established connection meets the policy again after a change (policy epoch): cut at its next packet when denied, kept when allowed', () => {
    const config = (policyEpoch: number, mode = MODE_ENFORCE) => maps.config.set({ mode, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0, policyEpoch });
    const key = (ep: number, peer: number, dir: number, port: number) => ({ prefixlen: POLICY_PREFIX_FULL, epId: ep, peerId: peer, direction: dir, proto: P.tcp, dport: port });
    const data = (sport: number, dport: number) => tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport, dport, flags: 'A' });
    const reply = (sport: number, dport: number) => tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: dport, dport: sport, flags: 'A' });
    const fromB = (frame: Buffer) => testRun(from, frame, { ifindex: ifB });
    const entryOf = (sport: number) => [...maps.ct.entries()].find(([k]) => k.sport === sport || k.dport === sport)?.[1];
    config(10);
    try {
      allow(A.id, B.id, DIR_EGRESS, P.tcp, 7070, 9);
      allow(B.id, A.id, DIR_INGRESS, P.tcp, 7070, 9);
      // x: A→B:7070, whose policy goes; y: A→B:8080, whose policy stays; z: A→B:7070 again, judged on a reply
      assert.equal(fromA(syn(A, B, 45000, 7070)).retval, TC_ACT_REDIRECT);
      assert.equal(fromA(syn(A, B, 45001, 8080)).retval, TC_ACT_REDIRECT);
      assert.equal(fromA(syn(A, B, 45002, 7070)).retval, TC_ACT_REDIRECT);
      assert.equal(entryOf(45000)?.policyEpoch, 10, 'a new entry carries the epoch that allowed it');
      maps.policy.delete(key(A.id, B.id, DIR_EGRESS, 7070));
      maps.policy.delete(key(B.id, A.id, DIR_INGRESS, 7070));
      // the epoch is what says a change is whole: until it moves, nothing is judged again
      assert.equal(fromA(data(45000, 7070)).retval, TC_ACT_REDIRECT);
      drain();
      const denied0 = count(REASON.policyDenied);
      config(11);
      assert.equal(fromA(data(45000, 7070)).retval, TC_ACT_SHOT, 'x is cut at its next packet');
      assert.equal(entryOf(45000), undefined, "x's entry is gone");
      assert.equal(fromB(reply(45000, 7070)).retval, TC_ACT_SHOT, "and x's replies find nothing to belong to");
      assert.equal(fromA(data(45001, 8080)).retval, TC_ACT_REDIRECT, 'y is still allowed');
      assert.equal(entryOf(45001)?.policyEpoch, 11, "y's entry takes the current epoch");
      assert.equal(fromB(reply(45002, 7070)).retval, TC_ACT_SHOT, 'z is cut on a reply too (B may no longer accept it)');
      assert.equal(count(REASON.policyDenied), denied0 + 3);
      assert.ok(drain().some((e) => e.verdict === VERDICT.dropped && e.reason === REASON.policyDenied && e.sport === 45000));
      // audit mode lets a connection the policy denies go on, as it would have let it open
      allow(A.id, B.id, DIR_EGRESS, P.tcp, 7070, 9);
      allow(B.id, A.id, DIR_INGRESS, P.tcp, 7070, 9);
      assert.equal(fromA(syn(A, B, 45003, 7070)).retval, TC_ACT_REDIRECT);
      maps.policy.delete(key(A.id, B.id, DIR_EGRESS, 7070));
      maps.policy.delete(key(B.id, A.id, DIR_INGRESS, 7070));
      config(12, MODE_AUDIT);
      assert.equal(fromA(data(45003, 7070)).retval, TC_ACT_REDIRECT, 'audit mode: not cut');
      config(13);
      assert.equal(fromA(data(45003, 7070)).retval, TC_ACT_SHOT, 'enforce again: cut');
    } finally {
      config(0);
    }
  });

  // ---------------------------------------------------------------- ICMP errors (issue 13)

  /** An ICMP error from `src` to `dst` about a UDP packet inner.src:isport -> inner.dst:idport. */
  const icmpError = (
    o: { srcMac: string; dstMac: string; src: string; dst: string; type?: number; code?: number },
    inner: { src: string; dst: string; sport: number; dport: number },
  ) => {
    const innerPkt = ipv4({ src: inner.src, dst: inner.dst, proto: P.udp }, udp({ sport: inner.sport, dport: inner.dport, payload: Buffer.alloc(400, 0x41) }, inner));
    const rest = Buffer.alloc(4);
    if ((o.code ?? 3) === 4) rest.writeUInt16BE(552, 2); // next-hop MTU
    return ipv4Frame({ srcMac: o.srcMac, dstMac: o.dstMac }, ipv4({ src: o.src, dst: o.dst, proto: P.icmp }, icmp({ type: o.type ?? ICMP.destUnreachable, code: o.code ?? 3, rest, data: innerPkt })));
  };

  it('ICMP errors about a live connection pass only from its far end (or a router on its path), never from a third party', () => {
    // A has a live UDP flow to B:5353.
    assert.equal(fromA(udpFrame({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip, sport: 5000, dport: 5353 })).retval, TC_ACT_REDIRECT);
    const tuple = { src: A.ip, dst: B.ip, sport: 5000, dport: 5353 };
    drain();
    const u0 = count(REASON.icmpUnrelated);
    // C, a third container, forges port-unreachable, time-exceeded and frag-needed about it, to A.
    const fromC = (f: Buffer) => testRun(from, f, { ifindex: ifC });
    for (const [type, code] of [[ICMP.destUnreachable, 3], [ICMP.timeExceeded, 0], [ICMP.destUnreachable, 4]] as const) {
      assert.equal(fromC(icmpError({ srcMac: C.mac, dstMac: A.mac, src: C.ip, dst: A.ip, type, code }, tuple)).retval, TC_ACT_SHOT, `type ${type} code ${code} from C`);
    }
    // ... and towards the host and the world, where it has no rule either.
    assert.equal(fromC(icmpError({ srcMac: C.mac, dstMac: GW_MAC, src: C.ip, dst: HOST }, tuple)).retval, TC_ACT_SHOT, 'to the host');
    assert.equal(fromC(icmpError({ srcMac: C.mac, dstMac: GW_MAC, src: C.ip, dst: WORLD_IP }, tuple)).retval, TC_ACT_SHOT, 'to the world');
    // A error that goes to the far end instead of the sender: B gets an "error" from A about A's own packet.
    assert.equal(fromA(icmpError({ srcMac: A.mac, dstMac: B.mac, src: A.ip, dst: B.ip }, tuple)).retval, TC_ACT_SHOT, 'error sent to the wrong end');
    assert.equal(count(REASON.icmpUnrelated), u0 + 6);
    const evs = drain().filter((e) => e.reason === REASON.icmpUnrelated);
    assert.equal(evs.length, 6, 'each one is a flow event with its own reason');
    assert.ok(evs.every((e) => e.verdict === VERDICT.dropped));
    // B, the far end, may say the port is closed: that one is related.
    assert.equal(testRun(from, icmpError({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip }, tuple), { ifindex: ifB }).retval, TC_ACT_REDIRECT);
  });

  it('path errors (frag-needed, time-exceeded) reach a container only through the gateway, and only for connections that leave the host', () => {
    allow(A.id, ID_WORLD, DIR_EGRESS, P.udp, 53);
    assert.equal(fromA(udpFrame({ srcMac: A.mac, dstMac: GW_MAC, src: A.ip, dst: WORLD_IP, sport: 5001, dport: 53 })).retval, TC_ACT_OK);
    const worldTuple = { src: A.ip, dst: WORLD_IP, sport: 5001, dport: 53 };
    const toA = (f: Buffer) => testRun(to, f, { ifindex: ifA });
    // a router on the way (here the host, through the gateway) says the datagram was too big
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: HOST, dst: A.ip, code: 4 }, worldTuple)).retval, TC_ACT_OK, 'frag-needed from the gateway');
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: '10.99.7.7', dst: A.ip, type: ICMP.timeExceeded, code: 0 }, worldTuple)).retval, TC_ACT_OK, 'time-exceeded from a world router');
    // the far end itself
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: WORLD_IP, dst: A.ip }, worldTuple)).retval, TC_ACT_OK, 'port unreachable from the far end');
    const u0 = count(REASON.icmpUnrelated);
    // port unreachable is no router's business
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: '10.99.7.7', dst: A.ip }, worldTuple)).retval, TC_ACT_SHOT, 'port unreachable from a router');
    // an unmanaged neighbour on the bridge is not the gateway
    assert.equal(toA(icmpError({ srcMac: '02:00:00:00:ee:ee', dstMac: A.mac, src: '10.99.7.7', dst: A.ip, code: 4 }, worldTuple)).retval, TC_ACT_SHOT, 'frag-needed from a bridge neighbour');
    // a connection between two local containers has no router on its path
    const localTuple = { src: A.ip, dst: B.ip, sport: 5000, dport: 5353 };
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: HOST, dst: A.ip, code: 4 }, localTuple)).retval, TC_ACT_SHOT, 'frag-needed about a local connection');
    // no live connection at all
    assert.equal(toA(icmpError({ srcMac: GW_MAC, dstMac: A.mac, src: HOST, dst: A.ip, code: 4 }, { ...worldTuple, sport: 5999 })).retval, TC_ACT_SHOT, 'no such connection');
    assert.equal(count(REASON.icmpUnrelated), u0 + 4);
  });

  // ---------------------------------------------------------------- fragments (issue 13)

  it('fragments: a denied first fragment is remembered, so a later fragment cannot borrow an earlier allowed datagram with the same IP id', () => {
    const datagram = (dport: number) => udp({ sport: 5000, dport, payload: Buffer.alloc(3000, 7) }, { src: A.ip, dst: B.ip });
    const frames = (id: number, dport: number) =>
      ipv4Fragments({ src: A.ip, dst: B.ip, proto: P.udp, id }, datagram(dport), 1400).map((p) => ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, p));
    const allowed = frames(4242, 5353);
    for (const f of allowed) assert.equal(fromA(f).retval, TC_ACT_REDIRECT);
    const key = { saddr: A.ip, daddr: B.ip, id: 4242, proto: P.udp, trace: TRACE_FROM_CONTAINER, ifindex: ifA };
    assert.equal(maps.frags.get(key)?.verdict, FRAG_VERDICT_ALLOWED);
    // the same IP id, to a denied port: its first fragment is dropped, and so are its later ones
    const denied = frames(4242, 9999);
    assert.equal(fromA(denied[0]!).retval, TC_ACT_SHOT);
    assert.equal(maps.frags.get(key)?.verdict, FRAG_VERDICT_DROPPED, 'the denied first fragment overwrote the verdict');
    const f0 = count(REASON.fragment);
    assert.equal(fromA(denied[1]!).retval, TC_ACT_SHOT);
    assert.equal(fromA(denied[2]!).retval, TC_ACT_SHOT);
    assert.equal(count(REASON.fragment), f0 + 2);
  });

  it('fragments: entries expire; out-of-order later fragments are dropped every time; another hook never borrows an entry', () => {
    const datagram = udp({ sport: 5000, dport: 5353, payload: Buffer.alloc(3000, 7) }, { src: A.ip, dst: B.ip });
    const frames = ipv4Fragments({ src: A.ip, dst: B.ip, proto: P.udp, id: 777 }, datagram, 1400).map((p) => ipv4Frame({ srcMac: A.mac, dstMac: B.mac }, p));
    // out of order, ten times over: the same verdict each time
    for (let i = 0; i < 10; i++) assert.equal(fromA(frames[2]!).retval, TC_ACT_SHOT, `run ${i}: a later fragment before its first`);
    assert.equal(fromA(frames[0]!).retval, TC_ACT_REDIRECT);
    assert.equal(fromA(frames[2]!).retval, TC_ACT_REDIRECT);
    assert.equal(fromA(frames[1]!).retval, TC_ACT_REDIRECT);
    // the entry says how long it lives: about FRAG_LIFETIME_S
    const key = { saddr: A.ip, daddr: B.ip, id: 777, proto: P.udp, trace: TRACE_FROM_CONTAINER, ifindex: ifA };
    const v = maps.frags.get(key)!;
    const nowNs = process.hrtime.bigint();
    assert.ok(v.expires > nowNs && v.expires <= nowNs + 31n * 1_000_000_000n, `expires ${v.expires} vs now ${nowNs}`);
    // an expired entry serves nobody
    maps.frags.set(key, { ...v, expires: 1n });
    assert.equal(fromA(frames[1]!).retval, TC_ACT_SHOT, 'expired entry');
    maps.frags.set(key, v);
    // the entry belongs to the hook that saw the first fragment: no other interface or direction finds it
    assert.equal(maps.frags.get({ ...key, ifindex: ifB }), undefined);
    assert.equal(maps.frags.get({ ...key, trace: 1 }), undefined);
  });

  // ---------------------------------------------------------------- conntrack limits (issue 13)

  it('conntrack: an endpoint over its share gets ct-limit; the others keep their entries and open new ones; the collector gives charges back', async () => {
    const limit = 50;
    maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0, ctPerEndpoint: limit });
    try {
      // B's one idle connection towards A (B may send to A on 7000)
      allow(B.id, A.id, DIR_EGRESS, P.tcp, 7000);
      allow(A.id, B.id, DIR_INGRESS, P.tcp, 7000);
      const bSyn = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 33000, dport: 7000, flags: 'S' });
      assert.equal(testRun(from, bSyn, { ifindex: ifB }).retval, TC_ACT_REDIRECT);
      const used0 = Number(maps.ctUse.get(A.id) ?? 0n);
      const l0 = count(REASON.ctLimit);
      // A floods new allowed connections to B:8080
      let refused = 0;
      for (let i = 0; i < limit + 30; i++) {
        if (fromA(syn(A, B, 20000 + i, 8080)).retval === TC_ACT_SHOT) refused++;
      }
      assert.equal(Number(maps.ctUse.get(A.id)), limit, "A holds exactly its share");
      assert.equal(refused, used0 + 30, 'every connection over the share is refused');
      assert.equal(count(REASON.ctLimit), l0 + used0 + 30);
      // B's idle connection is still there and still carries data; B may open more
      const bData = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 33000, dport: 7000, flags: 'A' });
      assert.equal(testRun(from, bData, { ifindex: ifB }).retval, TC_ACT_REDIRECT, "B's idle connection survived A's flood");
      const bSyn2 = tcpFrame({ srcMac: B.mac, dstMac: A.mac, src: B.ip, dst: A.ip, sport: 33001, dport: 7000, flags: 'S' });
      assert.equal(testRun(from, bSyn2, { ifindex: ifB }).retval, TC_ACT_REDIRECT, 'B opens a new one');
      // expire A's entries: the collector deletes them and A's count goes back down
      for (const [k, e] of [...maps.ct.entries()]) if (e.ownerId === A.id) maps.ct.set(k, { ...e, expires: 1n });
      // as the daemon's collector runs it: on a libuv worker thread
      const deleted = await testRunAsync(gc, Buffer.alloc(64));
      assert.ok(deleted >= limit, `the collector deleted ${deleted}`);
      assert.equal(Number(maps.ctUse.get(A.id)), 0);
      assert.equal(fromA(syn(A, B, 29999, 8080)).retval, TC_ACT_REDIRECT, 'A may open connections again');
    } finally {
      maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    }
  });

  // ---------------------------------------------------------------- event rate limit (issue 13)

  it('events: a flood of drops is reported in full up to the budget, then counted; the next window says how many were held back', async () => {
    const budget = 20;
    maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0, eventsPerSec: budget });
    try {
      // a fresh window for (A, DROPPED, policy-denied): earlier tests spent some of the last one
      await new Promise((r) => setTimeout(r, 1100));
      drain();
      const s0 = count(REASON.eventsSuppressed);
      const d0 = count(REASON.policyDenied);
      for (let i = 0; i < 500; i++) fromA(syn(A, B, 50000 + (i % 1000), 9191));
      assert.equal(count(REASON.policyDenied), d0 + 500, 'every packet is counted');
      const evs = drain().filter((e) => e.reason === REASON.policyDenied);
      assert.ok(evs.length <= budget + 2, `${evs.length} events for 500 drops (budget ${budget}/s)`);
      assert.ok(evs.length >= budget - 2, `${evs.length} events: the start of the burst is reported`);
      assert.ok(count(REASON.eventsSuppressed) - s0 >= 500 - budget - 2);
      // the next window: the first event carries the count of those held back
      await new Promise((r) => setTimeout(r, 1100));
      fromA(syn(A, B, 51000, 9191));
      const next = drain().filter((e) => e.reason === REASON.policyDenied);
      assert.equal(next.length, 1);
      assert.ok(next[0]!.suppressed >= 500 - budget - 2, `suppressed=${next[0]!.suppressed}`);
      // another reason of the same endpoint has its own budget
      const ev2 = fromA(tcpFrame({ srcMac: A.mac, dstMac: B.mac, src: C.ip, dst: B.ip, sport: 1, dport: 1 }));
      assert.equal(ev2.retval, TC_ACT_SHOT);
      assert.ok(drain().some((e) => e.reason === REASON.spoofedIp));
    } finally {
      maps.config.set({ mode: MODE_ENFORCE, flags: CFG_F_TRACE_ALLOWED, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0 });
    }
  });
});
