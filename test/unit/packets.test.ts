/**
 * The test packet builder must be right before any datapath test can rely
 * on it: known checksum vectors, build/parse round trips, and (when tcpdump
 * is installed) an independent decoder's verdict on every checksum.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ARP_OP,
  BROADCAST_MAC,
  ETH_P,
  IPPROTO,
  IPV4_OPT_ROUTER_ALERT,
  ICMPV6,
  arpReply,
  arpRequest,
  crc32c,
  gratuitousArp,
  icmpEchoFrame,
  internetChecksum,
  ipv4,
  ipv4Fragments,
  ipv4Frame,
  ipv6Bytes,
  ipv6String,
  neighborSolicitation,
  parseFrame,
  sctpFrame,
  sctpInitChunk,
  solicitedNodeMulticast,
  tcp,
  tcpFlags,
  tcpFrame,
  udpFrame,
} from '../helpers/packets.js';

const A = { srcMac: '02:00:00:00:00:0a', src: '10.77.0.2' };
const B = { dstMac: '02:00:00:00:00:0b', dst: '10.77.0.3' };

describe('checksums', () => {
  it('matches the RFC 1071 example and a known IPv4 header', () => {
    // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
    assert.equal(internetChecksum(Buffer.from('0001f203f4f5f6f7', 'hex')), 0x220d);
    // A classic IPv4 header (checksum field zeroed) whose checksum is b861.
    const hdr = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    assert.equal(internetChecksum(hdr), 0xb861);
  });

  it('handles odd lengths and split buffers like one buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(64), (bytes, cut) => {
        const b = Buffer.from(bytes);
        const k = Math.min(cut, b.length) & ~1; // a split at an even offset keeps word alignment
        assert.equal(internetChecksum(b.subarray(0, k), b.subarray(k)), internetChecksum(b));
      }),
    );
  });

  it('crc32c matches the standard check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  });
});

describe('ARP', () => {
  it('builds a broadcast request and parses it back', () => {
    const f = arpRequest({ srcMac: A.srcMac, srcIp: A.src, targetIp: B.dst });
    assert.equal(f.length, 42);
    const p = parseFrame(f);
    assert.equal(p.eth.dst, BROADCAST_MAC);
    assert.equal(p.eth.type, ETH_P.arp);
    assert.deepEqual(p.arp, {
      htype: 1,
      ptype: ETH_P.ipv4,
      op: ARP_OP.request,
      senderMac: A.srcMac,
      senderIp: A.src,
      targetMac: '00:00:00:00:00:00',
      targetIp: B.dst,
    });
  });

  it('builds a reply addressed to the requester', () => {
    const p = parseFrame(arpReply({ srcMac: B.dstMac, srcIp: B.dst, dstMac: A.srcMac, dstIp: A.src }));
    assert.equal(p.eth.dst, A.srcMac);
    assert.equal(p.arp?.op, ARP_OP.reply);
    assert.equal(p.arp?.senderMac, B.dstMac);
    assert.equal(p.arp?.targetIp, A.src);
  });

  it('builds gratuitous ARP (sender IP = target IP) and VLAN-tagged requests', () => {
    const g = parseFrame(gratuitousArp({ mac: A.srcMac, ip: A.src }));
    assert.equal(g.arp?.senderIp, g.arp?.targetIp);
    const v = parseFrame(arpRequest({ srcMac: A.srcMac, srcIp: A.src, targetIp: B.dst, vlan: { id: 42, pcp: 3 } }));
    assert.deepEqual(v.eth.vlan, { tpid: ETH_P.vlan, pcp: 3, dei: false, id: 42 });
    assert.equal(v.eth.type, ETH_P.arp);
    assert.equal(v.arp?.targetIp, B.dst);
  });
});

describe('IPv4 and L4', () => {
  it('round-trips TCP with flags, options and payload', () => {
    const payload = Buffer.from('hello');
    const f = tcpFrame({ ...A, ...B, sport: 40000, dport: 80, seq: 0xdeadbeef, ack: 7, flags: 'PA', payload, options: Buffer.from([2, 4, 5, 0xb4]) });
    const p = parseFrame(f);
    assert.equal(p.ipv4?.proto, IPPROTO.tcp);
    assert.ok(p.ipv4?.checksumOk);
    assert.equal(p.ipv4?.totalLength, f.length - 14);
    assert.equal(p.tcp?.sport, 40000);
    assert.equal(p.tcp?.dport, 80);
    assert.equal(p.tcp?.seq, 0xdeadbeef);
    assert.equal(p.tcp?.flagNames, 'PA');
    assert.equal(p.tcp?.dataOffset, 6);
    assert.ok(p.tcp?.checksumOk);
    assert.deepEqual(p.payload, payload);
  });

  it('parses TCP flag strings', () => {
    assert.equal(tcpFlags('S'), 0x02);
    assert.equal(tcpFlags('SA'), 0x12);
    assert.equal(tcpFlags('FA'), 0x11);
    assert.equal(tcpFlags('R'), 0x04);
    assert.throws(() => tcpFlags('X'), /unknown TCP flag/);
  });

  it('round-trips UDP, ICMP echo and SCTP INIT with valid checksums', () => {
    const u = parseFrame(udpFrame({ ...A, ...B, sport: 5353, dport: 53, payload: Buffer.from([1, 2, 3]) }));
    assert.equal(u.udp?.dport, 53);
    assert.equal(u.udp?.length, 11);
    assert.ok(u.udp?.checksumOk);

    const i = parseFrame(icmpEchoFrame({ ...A, ...B, id: 0x1234, seq: 9, data: Buffer.alloc(16, 0xab) }));
    assert.equal(i.icmp?.type, 8);
    assert.equal(i.icmp?.id, 0x1234);
    assert.equal(i.icmp?.seq, 9);
    assert.ok(i.icmp?.checksumOk);

    const s = parseFrame(sctpFrame({ ...A, ...B, sport: 5000, dport: 38412, chunks: [sctpInitChunk({ initiateTag: 77 })] }));
    assert.equal(s.sctp?.dport, 38412);
    assert.equal(s.sctp?.chunks[0]?.type, 1);
    assert.equal(s.sctp?.chunks[0]?.value.readUInt32BE(0), 77);
    assert.ok(s.sctp?.checksumOk);
  });

  it('detects a corrupted checksum', () => {
    const f = tcpFrame({ ...A, ...B, sport: 1, dport: 2 });
    f[f.length - 1]! ^= 0xff; // flip bits in the TCP urgent pointer
    assert.equal(parseFrame(f).tcp?.checksumOk, false);
    const bad = parseFrame(tcpFrame({ ...A, ...B, sport: 1, dport: 2, ip: { checksum: 0x1234 } }));
    assert.equal(bad.ipv4?.checksumOk, false);
  });

  it('carries IPv4 options (IHL > 5) and still finds L4', () => {
    const p = parseFrame(udpFrame({ ...A, ...B, sport: 1, dport: 2, ip: { options: IPV4_OPT_ROUTER_ALERT, ttl: 1, tos: 0x10 } }));
    assert.equal(p.ipv4?.ihl, 6);
    assert.deepEqual(p.ipv4?.options, IPV4_OPT_ROUTER_ALERT);
    assert.equal(p.ipv4?.ttl, 1);
    assert.ok(p.ipv4?.checksumOk);
    assert.equal(p.udp?.dport, 2);
    assert.ok(p.udp?.checksumOk);
  });

  it('fragments: offsets, MF, and the L4 header only in the first fragment', () => {
    const seg = tcp({ sport: 1234, dport: 443, payload: Buffer.alloc(100, 7) }, { src: A.src, dst: B.dst });
    const frags = ipv4Fragments({ src: A.src, dst: B.dst, proto: IPPROTO.tcp, id: 0xbeef }, seg, 48);
    assert.equal(frags.length, 3); // 120 bytes in 48-byte pieces
    const parsed = frags.map((f) => parseFrame(ipv4Frame({ srcMac: A.srcMac, dstMac: B.dstMac }, f)));
    assert.deepEqual(parsed.map((p) => [p.ipv4?.fragOffset, p.ipv4?.mf, p.ipv4?.id]), [
      [0, true, 0xbeef],
      [48, true, 0xbeef],
      [96, false, 0xbeef],
    ]);
    assert.equal(parsed[0]?.tcp?.dport, 443);
    assert.equal(parsed[0]?.tcp?.checksumOk, false, 'a first fragment alone cannot be checksummed');
    assert.equal(parsed[1]?.tcp, undefined);
    assert.ok(parsed.every((p) => p.ipv4?.checksumOk));
    // First fragment: TCP payload after the header; later ones: raw continuation.
    assert.deepEqual(Buffer.concat(parsed.map((p) => p.payload)), seg.subarray(20));
  });

  it('ignores Ethernet padding after the datagram', () => {
    const f = tcpFrame({ ...A, ...B, sport: 1, dport: 2 });
    const padded = Buffer.concat([f, Buffer.alloc(10)]);
    assert.ok(parseFrame(padded).tcp?.checksumOk);
  });

  it('throws on truncated headers', () => {
    const f = tcpFrame({ ...A, ...B, sport: 1, dport: 2 });
    assert.throws(() => parseFrame(f.subarray(0, 30)), /truncated IPv4/);
    assert.throws(() => parseFrame(f.subarray(0, 40)), /truncated TCP/);
    assert.throws(() => parseFrame(Buffer.alloc(10)), /truncated Ethernet/);
  });

  it('rejects fragment offsets that are not multiples of 8', () => {
    assert.throws(() => ipv4({ src: A.src, dst: B.dst, proto: 6, fragOffset: 12 }), /multiple of 8/);
  });
});

describe('IPv6', () => {
  it('parses and prints addresses', () => {
    assert.equal(ipv6String(ipv6Bytes('2001:db8::1')), '2001:db8::1');
    assert.equal(ipv6String(ipv6Bytes('fe80:0:0:0:1:2:3:4')), 'fe80::1:2:3:4');
    assert.equal(ipv6String(ipv6Bytes('::')), '::');
    assert.equal(ipv6String(ipv6Bytes('::ffff:10.0.0.1')), '::ffff:a00:1');
    assert.equal(solicitedNodeMulticast('fe80::aabb:ccdd'), 'ff02::1:ffbb:ccdd');
    assert.throws(() => ipv6Bytes('1::2::3'));
  });

  it('builds a neighbour solicitation with a valid ICMPv6 checksum', () => {
    const p = parseFrame(neighborSolicitation({ srcMac: A.srcMac, srcIp: 'fe80::a', targetIp: 'fe80::b' }));
    assert.equal(p.eth.type, ETH_P.ipv6);
    assert.equal(p.eth.dst, '33:33:ff:00:00:0b');
    assert.equal(p.ipv6?.hopLimit, 255);
    assert.equal(p.ipv6?.dst, 'ff02::1:ff00:b');
    assert.equal(p.icmpv6?.type, ICMPV6.neighSolicit);
    assert.ok(p.icmpv6?.checksumOk);
  });

  it('builds TCP over IPv6 with the IPv6 pseudo-header', () => {
    const p = parseFrame(tcpFrame({ srcMac: A.srcMac, dstMac: B.dstMac, src: 'fd00::2', dst: 'fd00::3', sport: 1, dport: 22 }));
    assert.equal(p.ipv6?.nextHeader, IPPROTO.tcp);
    assert.ok(p.tcp?.checksumOk);
  });
});

describe('property: build then parse', () => {
  const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((t) => t.join('.'));
  const mac = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':'));
  const port = fc.integer({ min: 0, max: 65535 });

  it('TCP and UDP frames keep their fields and checksums', () => {
    fc.assert(
      fc.property(mac, mac, ip, ip, port, port, fc.uint8Array({ maxLength: 200 }), fc.boolean(), (sm, dm, s, d, sp, dp, data, isTcp) => {
        const o = { srcMac: sm, dstMac: dm, src: s, dst: d, sport: sp, dport: dp, payload: Buffer.from(data) };
        const p = parseFrame(isTcp ? tcpFrame(o) : udpFrame(o));
        assert.equal(p.eth.src, sm);
        assert.equal(p.eth.dst, dm);
        assert.equal(p.ipv4?.src, s);
        assert.equal(p.ipv4?.dst, d);
        assert.ok(p.ipv4?.checksumOk);
        const l4 = isTcp ? p.tcp : p.udp;
        assert.equal(l4?.sport, sp);
        assert.equal(l4?.dport, dp);
        assert.ok(l4?.checksumOk);
        assert.deepEqual(p.payload, Buffer.from(data));
      }),
      { numRuns: 300 },
    );
  });
});

/** tcpdump as an independent checksum oracle, when installed. */
const TCPDUMP = ['/usr/bin/tcpdump', '/usr/sbin/tcpdump'].find((p) => existsSync(p));

function pcap(frames: Buffer[]): Buffer {
  const hdr = Buffer.alloc(24);
  hdr.writeUInt32LE(0xa1b2c3d4, 0);
  hdr.writeUInt16LE(2, 4);
  hdr.writeUInt16LE(4, 6);
  hdr.writeUInt32LE(65535, 16);
  hdr.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  const recs = frames.map((f) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    return Buffer.concat([r, f]);
  });
  return Buffer.concat([hdr, ...recs]);
}

describe('tcpdump agrees', { skip: TCPDUMP ? false : 'tcpdump not installed' }, () => {
  it('finds every checksum correct', () => {
    const frames = [
      tcpFrame({ ...A, ...B, sport: 40000, dport: 80, flags: 'S', payload: Buffer.from('x') }),
      udpFrame({ ...A, ...B, sport: 1000, dport: 2000, payload: Buffer.from('abc') }),
      udpFrame({ ...A, ...B, sport: 1000, dport: 2000, ip: { options: IPV4_OPT_ROUTER_ALERT } }),
      icmpEchoFrame({ ...A, ...B, id: 1, seq: 1, data: Buffer.alloc(7, 1) }),
      sctpFrame({ ...A, ...B, sport: 5000, dport: 5001 }),
      tcpFrame({ srcMac: A.srcMac, dstMac: B.dstMac, src: 'fd00::2', dst: 'fd00::3', sport: 1, dport: 22 }),
      neighborSolicitation({ srcMac: A.srcMac, srcIp: 'fe80::a', targetIp: 'fe80::b' }),
    ];
    const dir = mkdtempSync(join(tmpdir(), 'bastion-pcap-'));
    try {
      const file = join(dir, 'frames.pcap');
      writeFileSync(file, pcap(frames));
      const out = execFileSync(TCPDUMP!, ['-r', file, '-nn', '-vv'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      assert.doesNotMatch(out, /incorrect|bad cksum|wrong|bad sctp/i, out);
      // TCP (v4, v6), UDP (x2) and ICMPv6 report their verdict when -vv is given.
      assert.equal((out.match(/\(correct\)|sum ok/g) ?? []).length, 5, out);

      // And the oracle does notice a bad one.
      const bad = tcpFrame({ ...A, ...B, sport: 1, dport: 2, checksum: 0x1234, ip: { checksum: 0x4321 } });
      writeFileSync(file, pcap([bad]));
      const badOut = execFileSync(TCPDUMP!, ['-r', file, '-nn', '-vv'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      assert.match(badOut, /bad cksum/, badOut);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
