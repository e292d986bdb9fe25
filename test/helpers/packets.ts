/**
 * Packet builder and parser for tests.
 *
 * Builds the frames the datapath must handle (and the forged ones it must
 * drop): Ethernet with an optional 802.1Q tag, ARP, IPv4 with options and
 * fragmentation fields, TCP, UDP, ICMP echo, SCTP, IPv6 with ICMPv6 neighbour
 * solicitation. Checksums are computed unless a test overrides them to
 * forge a bad one. The parser decodes a frame a program returned
 * (BPF_PROG_TEST_RUN data_out) and checks its checksums, so tests can assert
 * on, e.g., an ARP reply the stack built.
 *
 * Addresses are strings ('10.0.0.1', 'fe80::1', 'aa:bb:cc:dd:ee:ff'); ports
 * and identifiers are numbers in host order (encoded big-endian).
 */

export const ETH_P = { ipv4: 0x0800, arp: 0x0806, vlan: 0x8100, qinq: 0x88a8, ipv6: 0x86dd } as const;
export const IPPROTO = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 } as const;
export const ARP_OP = { request: 1, reply: 2 } as const;
export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';
export const ZERO_MAC = '00:00:00:00:00:00';
export const ETH_HLEN = 14;

// -------------------------------------------------------------- addresses

export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}
export function macString(b: Buffer, off = 0): string {
  return [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(parts.map(Number));
}
export function ipv4String(b: Buffer, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** '2001:db8::1' -> 16 bytes; '::ffff:1.2.3.4' accepted. */
export function ipv6Bytes(ip: string): Buffer {
  let s = ip;
  const out = Buffer.alloc(16);
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let tail4: Buffer | undefined;
  if (v4) {
    tail4 = ipv4Bytes(v4[1]!);
    s = s.slice(0, -v4[1]!.length) + '0:0';
  }
  const halves = s.split('::');
  if (halves.length > 2) throw new Error(`not an IPv6 address: ${ip}`);
  const parse = (h: string): number[] => (h === '' ? [] : h.split(':').map((g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`not an IPv6 address: ${ip}`);
    return parseInt(g, 16);
  }));
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  const groups = halves.length === 2 ? [...head, ...Array(8 - head.length - tail.length).fill(0), ...tail] : head;
  if (groups.length !== 8 || (halves.length === 2 && head.length + tail.length > 7)) throw new Error(`not an IPv6 address: ${ip}`);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  if (tail4) tail4.copy(out, 12);
  return out;
}
/** Compressed RFC 5952 text form. */
export function ipv6String(b: Buffer, off = 0): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(off + i * 2));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

const isV6 = (ip: string): boolean => ip.includes(':');

// -------------------------------------------------------------- checksums

/** RFC 1071 Internet checksum of the concatenated buffers (the value to store). */
export function internetChecksum(...parts: Buffer[]): number {
  let sum = 0;
  let odd: number | undefined;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) {
      if (odd === undefined) odd = p[i]!;
      else {
        sum += (odd << 8) | p[i]!;
        odd = undefined;
      }
    }
  }
  if (odd !== undefined) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoHeader(src: string, dst: string, proto: number, length: number): Buffer {
  if (isV6(src) !== isV6(dst)) throw new Error(`address families differ: ${src} ${dst}`);
  if (isV6(src)) {
    const b = Buffer.alloc(40);
    ipv6Bytes(src).copy(b, 0);
    ipv6Bytes(dst).copy(b, 16);
    b.writeUInt32BE(length, 32);
    b[39] = proto;
    return b;
  }
  const b = Buffer.alloc(12);
  ipv4Bytes(src).copy(b, 0);
  ipv4Bytes(dst).copy(b, 4);
  b[9] = proto;
  b.writeUInt16BE(length, 10);
  return b;
}

let crc32cTable: Uint32Array | undefined;
/** CRC32c (Castagnoli), as SCTP uses it. */
export function crc32c(buf: Buffer): number {
  if (!crc32cTable) {
    crc32cTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crc32cTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < buf.length; i++) crc = crc32cTable[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// --------------------------------------------------------------- Ethernet

export interface VlanTag {
  id: number;
  pcp?: number;
  dei?: boolean;
  /** 0x8100 by default (0x88a8 for an outer QinQ tag) */
  tpid?: number;
}

export interface EthernetOptions {
  dst: string;
  src: string;
  type: number;
  vlan?: VlanTag;
  /** pad the frame to 60 bytes as a NIC would (default false: exact length) */
  pad?: boolean;
}

export function ethernet(o: EthernetOptions, payload: Buffer = Buffer.alloc(0)): Buffer {
  const hdr = Buffer.alloc(o.vlan ? 18 : 14);
  macBytes(o.dst).copy(hdr, 0);
  macBytes(o.src).copy(hdr, 6);
  let off = 12;
  if (o.vlan) {
    hdr.writeUInt16BE(o.vlan.tpid ?? ETH_P.vlan, 12);
    hdr.writeUInt16BE(((o.vlan.pcp ?? 0) << 13) | ((o.vlan.dei ? 1 : 0) << 12) | (o.vlan.id & 0xfff), 14);
    off = 16;
  }
  hdr.writeUInt16BE(o.type, off);
  const frame = Buffer.concat([hdr, payload]);
  return o.pad && frame.length < 60 ? Buffer.concat([frame, Buffer.alloc(60 - frame.length)]) : frame;
}

// -------------------------------------------------------------------- ARP

export interface ArpOptions {
  op: number;
  senderMac: string;
  senderIp: string;
  targetMac?: string;
  targetIp: string;
}

/** The 28-byte Ethernet/IPv4 ARP payload. */
export function arp(o: ArpOptions): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0); // htype Ethernet
  b.writeUInt16BE(ETH_P.ipv4, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(o.op, 6);
  macBytes(o.senderMac).copy(b, 8);
  ipv4Bytes(o.senderIp).copy(b, 14);
  macBytes(o.targetMac ?? ZERO_MAC).copy(b, 18);
  ipv4Bytes(o.targetIp).copy(b, 24);
  return b;
}

/** "Who has targetIp? Tell srcIp", broadcast unless dstMac says otherwise. */
export function arpRequest(o: { srcMac: string; srcIp: string; targetIp: string; dstMac?: string; vlan?: VlanTag }): Buffer {
  return ethernet(
    { dst: o.dstMac ?? BROADCAST_MAC, src: o.srcMac, type: ETH_P.arp, vlan: o.vlan },
    arp({ op: ARP_OP.request, senderMac: o.srcMac, senderIp: o.srcIp, targetIp: o.targetIp }),
  );
}

/** "srcIp is at srcMac", sent to dstMac/dstIp. */
export function arpReply(o: { srcMac: string; srcIp: string; dstMac: string; dstIp: string; vlan?: VlanTag }): Buffer {
  return ethernet(
    { dst: o.dstMac, src: o.srcMac, type: ETH_P.arp, vlan: o.vlan },
    arp({ op: ARP_OP.reply, senderMac: o.srcMac, senderIp: o.srcIp, targetMac: o.dstMac, targetIp: o.dstIp }),
  );
}

/** Gratuitous ARP: announce mac for ip to everyone (sender IP = target IP). */
export function gratuitousArp(o: { mac: string; ip: string; op?: 'request' | 'reply' }): Buffer {
  const op = o.op === 'reply' ? ARP_OP.reply : ARP_OP.request;
  return ethernet(
    { dst: BROADCAST_MAC, src: o.mac, type: ETH_P.arp },
    arp({ op, senderMac: o.mac, senderIp: o.ip, targetMac: op === ARP_OP.reply ? BROADCAST_MAC : ZERO_MAC, targetIp: o.ip }),
  );
}

// ------------------------------------------------------------------- IPv4

export interface Ipv4Options {
  src: string;
  dst: string;
  proto: number;
  ttl?: number;
  tos?: number;
  id?: number;
  /** don't fragment */
  df?: boolean;
  /** more fragments */
  mf?: boolean;
  /** fragment offset in bytes (a multiple of 8) */
  fragOffset?: number;
  /** raw options, padded with zeros (EOL) to a multiple of 4 bytes */
  options?: Buffer;
  /** overrides, to forge malformed headers */
  ihl?: number;
  totalLength?: number;
  checksum?: number;
}

export function ipv4(o: Ipv4Options, payload: Buffer = Buffer.alloc(0)): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const optLen = Math.ceil(opts.length / 4) * 4;
  if (optLen > 40) throw new Error(`IPv4 options are at most 40 bytes (got ${opts.length})`);
  const fragOffset = o.fragOffset ?? 0;
  if (fragOffset % 8 !== 0 || fragOffset > 0x1fff * 8) throw new Error(`fragment offset ${fragOffset}: a multiple of 8 up to 65528`);
  const h = Buffer.alloc(20 + optLen);
  h[0] = 0x40 | (o.ihl ?? h.length / 4);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(o.totalLength ?? h.length + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0, 4);
  h.writeUInt16BE((o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | (fragOffset / 8), 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.proto;
  ipv4Bytes(o.src).copy(h, 12);
  ipv4Bytes(o.dst).copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(o.checksum ?? internetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

/** Option bytes for tests: e.g. a Router Alert (RFC 2113). */
export const IPV4_OPT_ROUTER_ALERT = Buffer.from([0x94, 0x04, 0x00, 0x00]);

/**
 * Splits an L4 segment into IPv4 fragments carrying at most `mtuPayload`
 * bytes each (rounded down to a multiple of 8), the way a host would.
 */
export function ipv4Fragments(o: Ipv4Options, l4: Buffer, mtuPayload: number): Buffer[] {
  const step = Math.floor(mtuPayload / 8) * 8;
  if (step <= 0) throw new Error('mtuPayload must be at least 8');
  const out: Buffer[] = [];
  for (let off = 0; off < l4.length; off += step) {
    const chunk = l4.subarray(off, off + step);
    out.push(ipv4({ ...o, fragOffset: off, mf: off + step < l4.length }, chunk));
  }
  return out;
}

// ------------------------------------------------------------------- IPv6

export interface Ipv6Options {
  src: string;
  dst: string;
  nextHeader: number;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  payloadLength?: number;
}

export function ipv6(o: Ipv6Options, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | ((o.trafficClass ?? 0) << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(o.payloadLength ?? payload.length, 4);
  h[6] = o.nextHeader;
  h[7] = o.hopLimit ?? 64;
  ipv6Bytes(o.src).copy(h, 8);
  ipv6Bytes(o.dst).copy(h, 24);
  return Buffer.concat([h, payload]);
}

// --------------------------------------------------------------------- L4

export const TCP_FLAGS = { F: 0x01, S: 0x02, R: 0x04, P: 0x08, A: 0x10, U: 0x20, E: 0x40, C: 0x80 } as const;

/** 'S', 'SA', 'FA', 'R', 'PA'... (letters of TCP_FLAGS) or the raw byte. */
export function tcpFlags(flags: string | number): number {
  if (typeof flags === 'number') return flags;
  let v = 0;
  for (const ch of flags.toUpperCase()) {
    const bit = TCP_FLAGS[ch as keyof typeof TCP_FLAGS];
    if (bit === undefined) throw new Error(`unknown TCP flag ${ch} in ${flags}`);
    v |= bit;
  }
  return v;
}

/** IP addresses for the checksum pseudo-header. */
export interface PseudoAddrs {
  src: string;
  dst: string;
}

export interface TcpOptions {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** default 'S' */
  flags?: string | number;
  window?: number;
  urgent?: number;
  /** raw TCP options, padded with zeros to a multiple of 4 */
  options?: Buffer;
  payload?: Buffer;
  /** overrides, to forge malformed segments */
  dataOffset?: number;
  checksum?: number;
}

export function tcp(o: TcpOptions, ip: PseudoAddrs): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const optLen = Math.ceil(opts.length / 4) * 4;
  const payload = o.payload ?? Buffer.alloc(0);
  const h = Buffer.alloc(20 + optLen);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.seq ?? 1) >>> 0, 4);
  h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  h[12] = (o.dataOffset ?? h.length / 4) << 4;
  h[13] = tcpFlags(o.flags ?? 'S');
  h.writeUInt16BE(o.window ?? 65535, 14);
  h.writeUInt16BE(o.urgent ?? 0, 18);
  opts.copy(h, 20);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(o.checksum ?? internetChecksum(pseudoHeader(ip.src, ip.dst, IPPROTO.tcp, seg.length), seg), 16);
  return seg;
}

export interface UdpOptions {
  sport: number;
  dport: number;
  payload?: Buffer;
  length?: number;
  /** override; 0 means "no checksum" for IPv4 */
  checksum?: number;
}

export function udp(o: UdpOptions, ip: PseudoAddrs): Buffer {
  const payload = o.payload ?? Buffer.alloc(0);
  const seg = Buffer.alloc(8 + payload.length);
  seg.writeUInt16BE(o.sport, 0);
  seg.writeUInt16BE(o.dport, 2);
  seg.writeUInt16BE(o.length ?? seg.length, 4);
  payload.copy(seg, 8);
  let sum = o.checksum;
  if (sum === undefined) {
    sum = internetChecksum(pseudoHeader(ip.src, ip.dst, IPPROTO.udp, seg.length), seg);
    if (sum === 0) sum = 0xffff; // 0 would mean "no checksum"
  }
  seg.writeUInt16BE(sum, 6);
  return seg;
}

export interface IcmpOptions {
  type: number;
  code?: number;
  /** the 4 bytes after the checksum (identifier and sequence for echo) */
  rest?: Buffer;
  data?: Buffer;
  checksum?: number;
}

export function icmp(o: IcmpOptions): Buffer {
  const data = o.data ?? Buffer.alloc(0);
  const m = Buffer.alloc(8 + data.length);
  m[0] = o.type;
  m[1] = o.code ?? 0;
  (o.rest ?? Buffer.alloc(4)).copy(m, 4, 0, 4);
  data.copy(m, 8);
  m.writeUInt16BE(o.checksum ?? internetChecksum(m), 2);
  return m;
}

export const ICMP = { echoReply: 0, destUnreachable: 3, echoRequest: 8, timeExceeded: 11 } as const;

export interface IcmpEchoOptions {
  /** default 'request' */
  echo?: 'request' | 'reply';
  id: number;
  seq: number;
  data?: Buffer;
}

export function icmpEcho(o: IcmpEchoOptions): Buffer {
  const rest = Buffer.alloc(4);
  rest.writeUInt16BE(o.id, 0);
  rest.writeUInt16BE(o.seq, 2);
  return icmp({ type: o.echo === 'reply' ? ICMP.echoReply : ICMP.echoRequest, rest, data: o.data });
}

export interface SctpChunk {
  type: number;
  flags?: number;
  value?: Buffer;
}

export interface SctpOptions {
  sport: number;
  dport: number;
  /** verification tag (0 in a packet carrying INIT) */
  vtag?: number;
  /** default: one INIT chunk */
  chunks?: SctpChunk[];
  checksum?: number;
}

export const SCTP_CHUNK = { data: 0, init: 1, initAck: 2, abort: 6, shutdown: 7 } as const;

/** An INIT chunk (RFC 4960 3.3.2) with the mandatory fields. */
export function sctpInitChunk(o: { initiateTag?: number; arwnd?: number; outStreams?: number; inStreams?: number; tsn?: number } = {}): SctpChunk {
  const v = Buffer.alloc(16);
  v.writeUInt32BE((o.initiateTag ?? 0x1234abcd) >>> 0, 0);
  v.writeUInt32BE((o.arwnd ?? 65535) >>> 0, 4);
  v.writeUInt16BE(o.outStreams ?? 10, 8);
  v.writeUInt16BE(o.inStreams ?? 10, 10);
  v.writeUInt32BE((o.tsn ?? 1) >>> 0, 12);
  return { type: SCTP_CHUNK.init, value: v };
}

export function sctp(o: SctpOptions): Buffer {
  const chunks = (o.chunks ?? [sctpInitChunk()]).map((c) => {
    const value = c.value ?? Buffer.alloc(0);
    const len = 4 + value.length;
    const b = Buffer.alloc(Math.ceil(len / 4) * 4);
    b[0] = c.type;
    b[1] = c.flags ?? 0;
    b.writeUInt16BE(len, 2);
    value.copy(b, 4);
    return b;
  });
  const h = Buffer.alloc(12);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.vtag ?? 0) >>> 0, 4);
  const pkt = Buffer.concat([h, ...chunks]);
  // The CRC32c goes in as the little-endian bytes of the CRC (RFC 4960 appendix B, as Linux stores it).
  pkt.writeUInt32LE(o.checksum ?? crc32c(pkt), 8);
  return pkt;
}

export const ICMPV6 = { echoRequest: 128, echoReply: 129, routerSolicit: 133, routerAdvert: 134, neighSolicit: 135, neighAdvert: 136 } as const;

export function icmpv6(o: IcmpOptions, ip: PseudoAddrs): Buffer {
  const data = o.data ?? Buffer.alloc(0);
  const m = Buffer.alloc(8 + data.length);
  m[0] = o.type;
  m[1] = o.code ?? 0;
  (o.rest ?? Buffer.alloc(4)).copy(m, 4, 0, 4);
  data.copy(m, 8);
  m.writeUInt16BE(o.checksum ?? internetChecksum(pseudoHeader(ip.src, ip.dst, IPPROTO.icmpv6, m.length), m), 2);
  return m;
}

/** ff02::1:ffXX:XXXX for an IPv6 address. */
export function solicitedNodeMulticast(ip: string): string {
  const b = ipv6Bytes(ip);
  const m = ipv6Bytes('ff02::1:ff00:0');
  b.copy(m, 13, 13, 16);
  return ipv6String(m);
}

/** 33:33 + the low 32 bits of a multicast IPv6 address. */
export function ipv6MulticastMac(ip: string): string {
  const b = ipv6Bytes(ip);
  return macString(Buffer.from([0x33, 0x33, b[12]!, b[13]!, b[14]!, b[15]!]));
}

/** An IPv6 neighbour solicitation for targetIp, from srcMac/srcIp (the IPv6 analogue of an ARP request). */
export function neighborSolicitation(o: { srcMac: string; srcIp: string; targetIp: string }): Buffer {
  const dst = solicitedNodeMulticast(o.targetIp);
  const data = Buffer.concat([ipv6Bytes(o.targetIp), Buffer.from([1, 1]), macBytes(o.srcMac)]); // + source link-layer address option
  const msg = icmpv6({ type: ICMPV6.neighSolicit, data }, { src: o.srcIp, dst });
  return ethernet(
    { dst: ipv6MulticastMac(dst), src: o.srcMac, type: ETH_P.ipv6 },
    ipv6({ src: o.srcIp, dst, nextHeader: IPPROTO.icmpv6, hopLimit: 255 }, msg),
  );
}

// ----------------------------------------------------------- whole frames

/** Ethernet and IP fields for the frame builders; `ip` overrides IPv4 header fields. */
export interface FrameAddrs {
  srcMac: string;
  dstMac: string;
  vlan?: VlanTag;
  src: string;
  dst: string;
  ip?: Partial<Omit<Ipv4Options, 'src' | 'dst' | 'proto'>>;
  /** IPv6 only */
  hopLimit?: number;
}

function l3Frame(o: FrameAddrs, proto: number, l4: Buffer): Buffer {
  if (isV6(o.src)) {
    return ethernet(
      { dst: o.dstMac, src: o.srcMac, type: ETH_P.ipv6, vlan: o.vlan },
      ipv6({ src: o.src, dst: o.dst, nextHeader: proto, hopLimit: o.hopLimit }, l4),
    );
  }
  return ethernet({ dst: o.dstMac, src: o.srcMac, type: ETH_P.ipv4, vlan: o.vlan }, ipv4({ ...o.ip, src: o.src, dst: o.dst, proto }, l4));
}

export function tcpFrame(o: FrameAddrs & TcpOptions): Buffer {
  return l3Frame(o, IPPROTO.tcp, tcp(o, o));
}
export function udpFrame(o: FrameAddrs & UdpOptions): Buffer {
  return l3Frame(o, IPPROTO.udp, udp(o, o));
}
export function icmpEchoFrame(o: FrameAddrs & IcmpEchoOptions): Buffer {
  return l3Frame(o, IPPROTO.icmp, icmpEcho(o));
}
export function sctpFrame(o: FrameAddrs & SctpOptions): Buffer {
  return l3Frame(o, IPPROTO.sctp, sctp(o));
}
/** An IPv4 frame around any payload (e.g. a fragment from ipv4Fragments). */
export function ipv4Frame(o: { srcMac: string; dstMac: string; vlan?: VlanTag }, packet: Buffer): Buffer {
  return ethernet({ dst: o.dstMac, src: o.srcMac, type: ETH_P.ipv4, vlan: o.vlan }, packet);
}

// ----------------------------------------------------------------- parser

export interface ParsedEthernet {
  dst: string;
  src: string;
  /** the ethertype after any VLAN tags */
  type: number;
  vlan?: { tpid: number; pcp: number; dei: boolean; id: number };
}
export interface ParsedArp {
  htype: number;
  ptype: number;
  op: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}
export interface ParsedIpv4 {
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  df: boolean;
  mf: boolean;
  /** in bytes */
  fragOffset: number;
  ttl: number;
  proto: number;
  checksum: number;
  checksumOk: boolean;
  src: string;
  dst: string;
  options: Buffer;
}
export interface ParsedIpv6 {
  trafficClass: number;
  flowLabel: number;
  payloadLength: number;
  nextHeader: number;
  hopLimit: number;
  src: string;
  dst: string;
}
export interface ParsedTcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  dataOffset: number;
  flags: number;
  /** letters, e.g. 'SA' */
  flagNames: string;
  window: number;
  checksum: number;
  checksumOk: boolean;
  options: Buffer;
}
export interface ParsedUdp {
  sport: number;
  dport: number;
  length: number;
  checksum: number;
  /** true as well when the checksum is 0 (none) over IPv4 */
  checksumOk: boolean;
}
export interface ParsedIcmp {
  type: number;
  code: number;
  checksum: number;
  checksumOk: boolean;
  /** echo identifier and sequence (meaningful for echo messages) */
  id: number;
  seq: number;
}
export interface ParsedSctp {
  sport: number;
  dport: number;
  vtag: number;
  checksum: number;
  checksumOk: boolean;
  chunks: Array<{ type: number; flags: number; length: number; value: Buffer }>;
}
export interface ParsedFrame {
  eth: ParsedEthernet;
  arp?: ParsedArp;
  ipv4?: ParsedIpv4;
  ipv6?: ParsedIpv6;
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
  icmpv6?: ParsedIcmp;
  sctp?: ParsedSctp;
  /** what follows the last parsed header (L4 payload, or L3 payload of a non-first fragment) */
  payload: Buffer;
}

function need(b: Buffer, off: number, len: number, what: string): void {
  if (b.length < off + len) throw new Error(`truncated ${what}: need ${off + len} bytes, frame has ${b.length}`);
}

/** Parses a frame; throws on truncated headers. L4 is parsed for unfragmented packets and first fragments. */
export function parseFrame(frame: Buffer): ParsedFrame {
  need(frame, 0, 14, 'Ethernet header');
  const eth: ParsedEthernet = { dst: macString(frame, 0), src: macString(frame, 6), type: frame.readUInt16BE(12) };
  let off = 14;
  if (eth.type === ETH_P.vlan || eth.type === ETH_P.qinq) {
    need(frame, off, 4, '802.1Q tag');
    const tci = frame.readUInt16BE(off);
    eth.vlan = { tpid: eth.type, pcp: tci >> 13, dei: (tci & 0x1000) !== 0, id: tci & 0xfff };
    eth.type = frame.readUInt16BE(off + 2);
    off += 4;
  }
  const out: ParsedFrame = { eth, payload: frame.subarray(off) };

  if (eth.type === ETH_P.arp) {
    need(frame, off, 28, 'ARP');
    out.arp = {
      htype: frame.readUInt16BE(off),
      ptype: frame.readUInt16BE(off + 2),
      op: frame.readUInt16BE(off + 6),
      senderMac: macString(frame, off + 8),
      senderIp: ipv4String(frame, off + 14),
      targetMac: macString(frame, off + 18),
      targetIp: ipv4String(frame, off + 24),
    };
    out.payload = frame.subarray(off + 28);
    return out;
  }

  let proto: number;
  let l4: Buffer;
  let pseudo: PseudoAddrs;
  let firstFragment = true;
  let complete = true;
  if (eth.type === ETH_P.ipv4) {
    need(frame, off, 20, 'IPv4 header');
    const ihl = frame[off]! & 0x0f;
    if (frame[off]! >> 4 !== 4) throw new Error(`IPv4 version is ${frame[off]! >> 4}`);
    need(frame, off, ihl * 4, 'IPv4 header (with options)');
    const hdr = frame.subarray(off, off + ihl * 4);
    const totalLength = frame.readUInt16BE(off + 2);
    const fragField = frame.readUInt16BE(off + 6);
    out.ipv4 = {
      ihl,
      tos: frame[off + 1]!,
      totalLength,
      id: frame.readUInt16BE(off + 4),
      df: (fragField & 0x4000) !== 0,
      mf: (fragField & 0x2000) !== 0,
      fragOffset: (fragField & 0x1fff) * 8,
      ttl: frame[off + 8]!,
      proto: frame[off + 9]!,
      checksum: frame.readUInt16BE(off + 10),
      checksumOk: ihl >= 5 && internetChecksum(hdr) === 0,
      src: ipv4String(frame, off + 12),
      dst: ipv4String(frame, off + 16),
      options: Buffer.from(hdr.subarray(20)),
    };
    proto = out.ipv4.proto;
    // Trailing Ethernet padding is not part of the datagram.
    l4 = frame.subarray(off + ihl * 4, Math.min(frame.length, off + Math.max(totalLength, ihl * 4)));
    pseudo = { src: out.ipv4.src, dst: out.ipv4.dst };
    firstFragment = out.ipv4.fragOffset === 0;
    complete = firstFragment && !out.ipv4.mf;
  } else if (eth.type === ETH_P.ipv6) {
    need(frame, off, 40, 'IPv6 header');
    const w = frame.readUInt32BE(off);
    out.ipv6 = {
      trafficClass: (w >>> 20) & 0xff,
      flowLabel: w & 0xfffff,
      payloadLength: frame.readUInt16BE(off + 4),
      nextHeader: frame[off + 6]!,
      hopLimit: frame[off + 7]!,
      src: ipv6String(frame, off + 8),
      dst: ipv6String(frame, off + 24),
    };
    proto = out.ipv6.nextHeader; // extension headers are not walked
    l4 = frame.subarray(off + 40, Math.min(frame.length, off + 40 + out.ipv6.payloadLength));
    pseudo = { src: out.ipv6.src, dst: out.ipv6.dst };
  } else {
    return out;
  }
  out.payload = l4;
  if (!firstFragment) return out;

  const sumOk = (p: number): boolean => complete && internetChecksum(pseudoHeader(pseudo.src, pseudo.dst, p, l4.length), l4) === 0;
  if (proto === IPPROTO.tcp) {
    need(l4, 0, 20, 'TCP header');
    const dataOffset = l4[12]! >> 4;
    const flags = l4[13]!;
    out.tcp = {
      sport: l4.readUInt16BE(0),
      dport: l4.readUInt16BE(2),
      seq: l4.readUInt32BE(4),
      ack: l4.readUInt32BE(8),
      dataOffset,
      flags,
      flagNames: Object.entries(TCP_FLAGS).filter(([, bit]) => flags & bit).map(([n]) => n).join(''),
      window: l4.readUInt16BE(14),
      checksum: l4.readUInt16BE(16),
      checksumOk: sumOk(IPPROTO.tcp),
      options: Buffer.from(l4.subarray(20, Math.max(20, dataOffset * 4))),
    };
    out.payload = l4.subarray(Math.max(20, dataOffset * 4));
  } else if (proto === IPPROTO.udp) {
    need(l4, 0, 8, 'UDP header');
    const checksum = l4.readUInt16BE(6);
    out.udp = {
      sport: l4.readUInt16BE(0),
      dport: l4.readUInt16BE(2),
      length: l4.readUInt16BE(4),
      checksum,
      checksumOk: (checksum === 0 && !out.ipv6) || sumOk(IPPROTO.udp),
    };
    out.payload = l4.subarray(8);
  } else if (proto === IPPROTO.icmp || proto === IPPROTO.icmpv6) {
    need(l4, 0, 8, 'ICMP header');
    const parsed: ParsedIcmp = {
      type: l4[0]!,
      code: l4[1]!,
      checksum: l4.readUInt16BE(2),
      checksumOk: proto === IPPROTO.icmp ? complete && internetChecksum(l4) === 0 : sumOk(IPPROTO.icmpv6),
      id: l4.readUInt16BE(4),
      seq: l4.readUInt16BE(6),
    };
    if (proto === IPPROTO.icmp) out.icmp = parsed;
    else out.icmpv6 = parsed;
    out.payload = l4.subarray(8);
  } else if (proto === IPPROTO.sctp) {
    need(l4, 0, 12, 'SCTP common header');
    const zeroed = Buffer.from(l4);
    zeroed.writeUInt32LE(0, 8);
    const chunks: ParsedSctp['chunks'] = [];
    for (let c = 12; c + 4 <= l4.length; ) {
      const length = l4.readUInt16BE(c + 2);
      if (length < 4) break;
      chunks.push({ type: l4[c]!, flags: l4[c + 1]!, length, value: Buffer.from(l4.subarray(c + 4, c + length)) });
      c += Math.ceil(length / 4) * 4;
    }
    out.sctp = {
      sport: l4.readUInt16BE(0),
      dport: l4.readUInt16BE(2),
      vtag: l4.readUInt32BE(4),
      checksum: l4.readUInt32LE(8),
      checksumOk: complete && crc32c(zeroed) === l4.readUInt32LE(8),
      chunks,
    };
    out.payload = Buffer.alloc(0);
  }
  return out;
}
