/**
 * layout.ts is the TypeScript half of the contract in bpf/lib/maps.h.
 *
 * 1. Every codec round-trips (property tests over the whole value range).
 * 2. Every field lands where the C compiler puts it: a small C program
 *    built against maps.h reports sizeof/offsetof of every struct and field,
 *    and each field, encoded alone with a distinctive value, must occupy
 *    exactly those bytes, in the byte order maps.h documents (addresses and
 *    ports big-endian, everything else little-endian).
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { arch, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as L from '../../src/datapath/layout.js';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const ip = fc.tuple(u8, u8, u8, u8).map((t) => t.join('.'));
const mac = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':'));

/** encode(decode(encode(v))) is encode(v) and decode(encode(v)) is v, at the declared size. */
function roundTrip<T>(name: string, arb: fc.Arbitrary<T>, size: number, enc: (v: T) => Buffer, dec: (b: Buffer) => T): void {
  it(`${name} round-trips (${size} bytes)`, () => {
    fc.assert(
      fc.property(arb, (v) => {
        const b = enc(v);
        assert.equal(b.length, size);
        // fast-check records have a null prototype; compare plain objects.
        assert.deepEqual(dec(b), typeof v === 'object' && v !== null ? { ...v } : v);
        assert.deepEqual(enc(dec(b)), b);
      }),
      { numRuns: 500 },
    );
  });
}

const endpointInfo = fc.record({ identity: u32, ifindex: u32, ipv4: ip, flags: u32, mac, gwMac: mac });
const ipcacheKey = fc.record({ prefixlen: fc.integer({ min: 0, max: 32 }), addr: ip });
const ipcacheVal = fc.record({ identity: u32, flags: u32 });
const policyKey = fc.record({ prefixlen: fc.integer({ min: 0, max: 96 }), epId: u32, peerId: u32, direction: u8, proto: u8, dport: u16 });
const policyVal = fc.record({ ruleId: u32, flags: u32 });
const neighKey = fc.record({ epId: u32, peerId: u32 });
const ctKey = fc.record({ saddr: ip, daddr: ip, sport: u16, dport: u16, proto: u8 });
const ctEntry = fc.record({ expires: u64, srcId: u32, dstId: u32, ruleId: u32, flags: u32, ownerId: u32, policyEpoch: u32 });
const fragKey = fc.record({ saddr: ip, daddr: ip, id: u16, proto: u8, trace: u8, ifindex: u32 });
const fragVal = fc.record({ expires: u64, sport: u16, dport: u16, verdict: u32 });
const eventRlKey = fc.record({ ifindex: u32, verdict: u8, reason: u8 });
const eventRl = fc.record({ windowStart: u64, emitted: u32, suppressed: u32, srcId: u32, dstId: u32, saddr: ip, daddr: ip, sport: u16, dport: u16, proto: u8, trace: u8, ethertype: u16 });
const s64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
const flowEvent = fc.record({
  tsNs: u64,
  srcId: u32,
  dstId: u32,
  saddr: ip,
  daddr: ip,
  sport: u16,
  dport: u16,
  proto: u8,
  verdict: u8,
  reason: u8,
  trace: u8,
  ifindex: u32,
  ruleId: u32,
  pktLen: u16,
  ethertype: u16,
  suppressed: u32,
  ingressRuleId: u32,
  tcpFlags: u8,
  flags: u8,
  tunnelSaddr: ip,
});
const flowSumKey = fc.record({ srcId: u32, dstId: u32, dport: u16, proto: u8, flags: u8 });
const flowSum = fc.record({ firstNs: u64, lastNs: u64, count: u64, saddr: ip, daddr: ip, sport: u16, reason: u8, trace: u8, ifindex: u32, ruleId: u32, ingressRuleId: u32 });
const flowSumSeen = fc.record({ firstNs: u64, count: u64, lastNs: u64 });
const epStats = fc.record({ txPackets: u64, txBytes: u64, rxPackets: u64, rxBytes: u64, drops: u64 });
const config = fc.record({ mode: u32, flags: u32, ctTcpLifetimeS: u32, ctOtherLifetimeS: u32, ctPerEndpoint: u32, eventsPerSec: u32, policyEpoch: u32 });
const state = fc.record({ nextIdentity: u64, generation: u64 });
const remoteEndpoint = fc.record({ identity: u32, nodeIpv4: ip, mac, flags: u16 });
const tunnelInfo = fc.record({ ifindex: u32, localIpv4: ip, underlayIfindex: u32, port: fc.integer({ min: 0, max: 0xffff }), flags: fc.integer({ min: 0, max: 0xffff }) });

function encodeCounter(c: L.Counter): Buffer {
  const b = Buffer.alloc(L.COUNTER_SIZE);
  b.writeBigUInt64LE(c.packets, 0);
  b.writeBigUInt64LE(c.bytes, 8);
  return b;
}

describe('codecs round-trip', () => {
  roundTrip('u32', u32, 4, L.encodeU32, L.decodeU32);
  roundTrip('ip key', ip, 4, L.encodeIpKey, L.decodeIpKey);
  roundTrip('endpoint_info', endpointInfo, L.ENDPOINT_INFO_SIZE, L.encodeEndpointInfo, L.decodeEndpointInfo);
  roundTrip('ipcache_key', ipcacheKey, L.IPCACHE_KEY_SIZE, L.encodeIpcacheKey, L.decodeIpcacheKey);
  roundTrip('ipcache_val', ipcacheVal, L.IPCACHE_VAL_SIZE, L.encodeIpcacheVal, L.decodeIpcacheVal);
  roundTrip('policy_key', policyKey, L.POLICY_KEY_SIZE, L.encodePolicyKey, L.decodePolicyKey);
  roundTrip('policy_val', policyVal, L.POLICY_VAL_SIZE, L.encodePolicyVal, L.decodePolicyVal);
  roundTrip('neigh_key', neighKey, L.NEIGH_KEY_SIZE, L.encodeNeighKey, L.decodeNeighKey);
  roundTrip('ct_key', ctKey, L.CT_KEY_SIZE, L.encodeCtKey, L.decodeCtKey);
  roundTrip('ct_entry', ctEntry, L.CT_ENTRY_SIZE, L.encodeCtEntry, L.decodeCtEntry);
  roundTrip('frag_key', fragKey, L.FRAG_KEY_SIZE, L.encodeFragKey, L.decodeFragKey);
  roundTrip('frag_val', fragVal, L.FRAG_VAL_SIZE, L.encodeFragVal, L.decodeFragVal);
  roundTrip('event_rl_key', eventRlKey, L.EVENT_RL_KEY_SIZE, L.encodeEventRlKey, L.decodeEventRlKey);
  roundTrip('event_rl', eventRl, L.EVENT_RL_SIZE, L.encodeEventRl, L.decodeEventRl);
  roundTrip('ct_use', s64, L.CT_USE_SIZE, L.encodeCtUse, L.decodeCtUse);
  roundTrip('flow_event', flowEvent, L.FLOW_EVENT_SIZE, L.encodeFlowEvent, L.decodeFlowEvent);
  roundTrip('flow_sum_key', flowSumKey, L.FLOW_SUM_KEY_SIZE, L.encodeFlowSumKey, L.decodeFlowSumKey);
  roundTrip('flow_sum', flowSum, L.FLOW_SUM_SIZE, L.encodeFlowSum, L.decodeFlowSum);
  roundTrip('flow_sum_seen', flowSumSeen, L.FLOW_SUM_SEEN_SIZE, L.encodeFlowSumSeen, L.decodeFlowSumSeen);
  roundTrip('counter', fc.record({ packets: u64, bytes: u64 }), L.COUNTER_SIZE, encodeCounter, (b) => L.decodeCounter(b));
  roundTrip('ep_stats', epStats, L.EP_STATS_SIZE, L.encodeEpStats, (b) => L.decodeEpStats(b));
  roundTrip('bastion_config', config, L.CONFIG_SIZE, L.encodeConfig, L.decodeConfig);
  roundTrip('bastion_state', state, L.STATE_SIZE, L.encodeState, L.decodeState);
  roundTrip('remote_endpoint', remoteEndpoint, L.REMOTE_ENDPOINT_SIZE, L.encodeRemoteEndpoint, L.decodeRemoteEndpoint);
  roundTrip('tunnel_info', tunnelInfo, L.TUNNEL_INFO_SIZE, L.encodeTunnelInfo, L.decodeTunnelInfo);

  it('decoders honour an offset (per-CPU values are read from one big buffer)', () => {
    const c = { packets: 5n, bytes: 1500n };
    assert.deepEqual(L.decodeCounter(Buffer.concat([Buffer.alloc(16), encodeCounter(c)]), 16), c);
    const s = { txPackets: 1n, txBytes: 2n, rxPackets: 3n, rxBytes: 4n, drops: 5n };
    assert.deepEqual(L.decodeEpStats(Buffer.concat([Buffer.alloc(40), L.encodeEpStats(s)]), 40), s);
  });

  it('ct_key padding stays zero (the kernel hashes all 16 bytes)', () => {
    fc.assert(
      fc.property(ctKey, (k) => {
        assert.deepEqual([...L.encodeCtKey(k).subarray(13, 16)], [0, 0, 0]);
      }),
    );
  });

  it('address helpers reject malformed input', () => {
    for (const bad of ['1.2.3', '1.2.3.4.5', '256.0.0.1', 'a.b.c.d', '1.2.3.-1', '']) assert.throws(() => L.ipv4ToBytes(bad), /not an IPv4/);
    for (const bad of ['aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:fg', 'aabbccddeeff']) assert.throws(() => L.macToBytes(bad), /not a MAC/);
  });

  it('reason names cover every reason', () => {
    for (const v of Object.values(L.REASON)) assert.ok(L.REASON_NAMES[v], `no name for reason ${v}`);
    for (const v of Object.values(L.REASON)) assert.ok(v < L.NR_COUNTERS, `reason ${v} beyond the counter array`);
  });
});

// ------------------------------------------------------------------------
// The C side: offsets and sizes from the compiler, against maps.h.

type Kind = 'le' | 'be' | 'bytes';
/** [C struct, C field, byte order, how to set that field alone in a TS value] */
interface FieldSpec {
  field: string;
  kind: Kind;
  set: (v: bigint) => object | bigint;
}
interface StructSpec {
  struct: string;
  size: number;
  zero: object | bigint;
  encode: (v: never) => Buffer;
  fields: FieldSpec[];
}

const ZERO_MAC = '00:00:00:00:00:00';
const ipOf = (v: bigint): string => L.bytesToIpv4(Buffer.from(v.toString(16).padStart(8, '0'), 'hex'));
const macOf = (v: bigint): string => L.bytesToMac(Buffer.from(v.toString(16).padStart(12, '0'), 'hex'));
const n = (v: bigint): number => Number(v);

// ct_use is a one-field struct: its "value" is the bigint itself.
const structs: StructSpec[] = [
  {
    struct: 'endpoint_info',
    size: L.ENDPOINT_INFO_SIZE,
    zero: { identity: 0, ifindex: 0, ipv4: '0.0.0.0', flags: 0, mac: ZERO_MAC, gwMac: ZERO_MAC },
    encode: L.encodeEndpointInfo as (v: never) => Buffer,
    fields: [
      { field: 'identity', kind: 'le', set: (v) => ({ identity: n(v) }) },
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
      { field: 'ipv4', kind: 'be', set: (v) => ({ ipv4: ipOf(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
      { field: 'mac', kind: 'bytes', set: (v) => ({ mac: macOf(v) }) },
      { field: 'gw_mac', kind: 'bytes', set: (v) => ({ gwMac: macOf(v) }) },
    ],
  },
  {
    struct: 'ipcache_key',
    size: L.IPCACHE_KEY_SIZE,
    zero: { prefixlen: 0, addr: '0.0.0.0' },
    encode: L.encodeIpcacheKey as (v: never) => Buffer,
    fields: [
      { field: 'prefixlen', kind: 'le', set: (v) => ({ prefixlen: n(v) }) },
      { field: 'addr', kind: 'be', set: (v) => ({ addr: ipOf(v) }) },
    ],
  },
  {
    struct: 'ipcache_val',
    size: L.IPCACHE_VAL_SIZE,
    zero: { identity: 0, flags: 0 },
    encode: L.encodeIpcacheVal as (v: never) => Buffer,
    fields: [
      { field: 'identity', kind: 'le', set: (v) => ({ identity: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
    ],
  },
  {
    struct: 'policy_key',
    size: L.POLICY_KEY_SIZE,
    zero: { prefixlen: 0, epId: 0, peerId: 0, direction: 0, proto: 0, dport: 0 },
    encode: L.encodePolicyKey as (v: never) => Buffer,
    fields: [
      { field: 'prefixlen', kind: 'le', set: (v) => ({ prefixlen: n(v) }) },
      // ep_id and peer_id are host order in C; the LPM trie compares them
      // byte by byte, which is fine since only full-width prefixes cover them.
      { field: 'ep_id', kind: 'le', set: (v) => ({ epId: n(v) }) },
      { field: 'peer_id', kind: 'le', set: (v) => ({ peerId: n(v) }) },
      { field: 'direction', kind: 'le', set: (v) => ({ direction: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
    ],
  },
  {
    struct: 'policy_val',
    size: L.POLICY_VAL_SIZE,
    zero: { ruleId: 0, flags: 0 },
    encode: L.encodePolicyVal as (v: never) => Buffer,
    fields: [
      { field: 'rule_id', kind: 'le', set: (v) => ({ ruleId: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
    ],
  },
  {
    struct: 'neigh_key',
    size: L.NEIGH_KEY_SIZE,
    zero: { epId: 0, peerId: 0 },
    encode: L.encodeNeighKey as (v: never) => Buffer,
    fields: [
      { field: 'ep_id', kind: 'le', set: (v) => ({ epId: n(v) }) },
      { field: 'peer_id', kind: 'le', set: (v) => ({ peerId: n(v) }) },
    ],
  },
  {
    struct: 'ct_key',
    size: L.CT_KEY_SIZE,
    zero: { saddr: '0.0.0.0', daddr: '0.0.0.0', sport: 0, dport: 0, proto: 0 },
    encode: L.encodeCtKey as (v: never) => Buffer,
    fields: [
      { field: 'saddr', kind: 'be', set: (v) => ({ saddr: ipOf(v) }) },
      { field: 'daddr', kind: 'be', set: (v) => ({ daddr: ipOf(v) }) },
      { field: 'sport', kind: 'be', set: (v) => ({ sport: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
    ],
  },
  {
    struct: 'ct_entry',
    size: L.CT_ENTRY_SIZE,
    zero: { expires: 0n, srcId: 0, dstId: 0, ruleId: 0, flags: 0, ownerId: 0, policyEpoch: 0 },
    encode: L.encodeCtEntry as (v: never) => Buffer,
    fields: [
      { field: 'expires', kind: 'le', set: (v) => ({ expires: v }) },
      { field: 'src_id', kind: 'le', set: (v) => ({ srcId: n(v) }) },
      { field: 'dst_id', kind: 'le', set: (v) => ({ dstId: n(v) }) },
      { field: 'rule_id', kind: 'le', set: (v) => ({ ruleId: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
      { field: 'owner_id', kind: 'le', set: (v) => ({ ownerId: n(v) }) },
      { field: 'policy_epoch', kind: 'le', set: (v) => ({ policyEpoch: n(v) }) },
    ],
  },
  {
    struct: 'ct_use',
    size: L.CT_USE_SIZE,
    zero: 0n as never,
    encode: ((v: bigint) => L.encodeCtUse(v)) as (v: never) => Buffer,
    fields: [{ field: 'entries', kind: 'le', set: (v) => v as never }],
  },
  {
    struct: 'event_rl_key',
    size: L.EVENT_RL_KEY_SIZE,
    zero: { ifindex: 0, verdict: 0, reason: 0 },
    encode: L.encodeEventRlKey as (v: never) => Buffer,
    fields: [
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
      { field: 'verdict', kind: 'le', set: (v) => ({ verdict: n(v) }) },
      { field: 'reason', kind: 'le', set: (v) => ({ reason: n(v) }) },
    ],
  },
  {
    struct: 'event_rl',
    size: L.EVENT_RL_SIZE,
    zero: { windowStart: 0n, emitted: 0, suppressed: 0, srcId: 0, dstId: 0, saddr: '0.0.0.0', daddr: '0.0.0.0', sport: 0, dport: 0, proto: 0, trace: 0, ethertype: 0 },
    encode: L.encodeEventRl as (v: never) => Buffer,
    fields: [
      { field: 'window_start', kind: 'le', set: (v) => ({ windowStart: v }) },
      { field: 'emitted', kind: 'le', set: (v) => ({ emitted: n(v) }) },
      { field: 'suppressed', kind: 'le', set: (v) => ({ suppressed: n(v) }) },
      { field: 'src_id', kind: 'le', set: (v) => ({ srcId: n(v) }) },
      { field: 'dst_id', kind: 'le', set: (v) => ({ dstId: n(v) }) },
      { field: 'saddr', kind: 'be', set: (v) => ({ saddr: ipOf(v) }) },
      { field: 'daddr', kind: 'be', set: (v) => ({ daddr: ipOf(v) }) },
      { field: 'sport', kind: 'be', set: (v) => ({ sport: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
      { field: 'trace', kind: 'le', set: (v) => ({ trace: n(v) }) },
      { field: 'ethertype', kind: 'be', set: (v) => ({ ethertype: n(v) }) },
    ],
  },
  {
    struct: 'frag_key',
    size: L.FRAG_KEY_SIZE,
    zero: { saddr: '0.0.0.0', daddr: '0.0.0.0', id: 0, proto: 0, trace: 0, ifindex: 0 },
    encode: L.encodeFragKey as (v: never) => Buffer,
    fields: [
      { field: 'saddr', kind: 'be', set: (v) => ({ saddr: ipOf(v) }) },
      { field: 'daddr', kind: 'be', set: (v) => ({ daddr: ipOf(v) }) },
      { field: 'id', kind: 'be', set: (v) => ({ id: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
      { field: 'trace', kind: 'le', set: (v) => ({ trace: n(v) }) },
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
    ],
  },
  {
    struct: 'frag_val',
    size: L.FRAG_VAL_SIZE,
    zero: { expires: 0n, sport: 0, dport: 0, verdict: 0 },
    encode: L.encodeFragVal as (v: never) => Buffer,
    fields: [
      { field: 'expires', kind: 'le', set: (v) => ({ expires: v }) },
      { field: 'sport', kind: 'be', set: (v) => ({ sport: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
      { field: 'verdict', kind: 'le', set: (v) => ({ verdict: n(v) }) },
    ],
  },
  {
    struct: 'flow_event',
    size: L.FLOW_EVENT_SIZE,
    zero: {
      tsNs: 0n, srcId: 0, dstId: 0, saddr: '0.0.0.0', daddr: '0.0.0.0', sport: 0, dport: 0,
      proto: 0, verdict: 0, reason: 0, trace: 0, ifindex: 0, ruleId: 0, pktLen: 0, ethertype: 0, suppressed: 0,
      ingressRuleId: 0, tcpFlags: 0, flags: 0, tunnelSaddr: '0.0.0.0',
    },
    encode: L.encodeFlowEvent as (v: never) => Buffer,
    fields: [
      { field: 'ts_ns', kind: 'le', set: (v) => ({ tsNs: v }) },
      { field: 'src_id', kind: 'le', set: (v) => ({ srcId: n(v) }) },
      { field: 'dst_id', kind: 'le', set: (v) => ({ dstId: n(v) }) },
      { field: 'saddr', kind: 'be', set: (v) => ({ saddr: ipOf(v) }) },
      { field: 'daddr', kind: 'be', set: (v) => ({ daddr: ipOf(v) }) },
      { field: 'sport', kind: 'be', set: (v) => ({ sport: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
      { field: 'verdict', kind: 'le', set: (v) => ({ verdict: n(v) }) },
      { field: 'reason', kind: 'le', set: (v) => ({ reason: n(v) }) },
      { field: 'trace', kind: 'le', set: (v) => ({ trace: n(v) }) },
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
      { field: 'rule_id', kind: 'le', set: (v) => ({ ruleId: n(v) }) },
      { field: 'pkt_len', kind: 'le', set: (v) => ({ pktLen: n(v) }) },
      { field: 'ethertype', kind: 'be', set: (v) => ({ ethertype: n(v) }) },
      { field: 'suppressed', kind: 'le', set: (v) => ({ suppressed: n(v) }) },
      { field: 'ingress_rule_id', kind: 'le', set: (v) => ({ ingressRuleId: n(v) }) },
      { field: 'tcp_flags', kind: 'le', set: (v) => ({ tcpFlags: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
      { field: 'tunnel_saddr', kind: 'be', set: (v) => ({ tunnelSaddr: ipOf(v) }) },
    ],
  },
  {
    struct: 'flow_sum_key',
    size: L.FLOW_SUM_KEY_SIZE,
    zero: { srcId: 0, dstId: 0, dport: 0, proto: 0, flags: 0 },
    encode: L.encodeFlowSumKey as (v: never) => Buffer,
    fields: [
      { field: 'src_id', kind: 'le', set: (v) => ({ srcId: n(v) }) },
      { field: 'dst_id', kind: 'le', set: (v) => ({ dstId: n(v) }) },
      { field: 'dport', kind: 'be', set: (v) => ({ dport: n(v) }) },
      { field: 'proto', kind: 'le', set: (v) => ({ proto: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
    ],
  },
  {
    struct: 'flow_sum',
    size: L.FLOW_SUM_SIZE,
    zero: { firstNs: 0n, lastNs: 0n, count: 0n, saddr: '0.0.0.0', daddr: '0.0.0.0', sport: 0, reason: 0, trace: 0, ifindex: 0, ruleId: 0, ingressRuleId: 0 },
    encode: L.encodeFlowSum as (v: never) => Buffer,
    fields: [
      { field: 'first_ns', kind: 'le', set: (v) => ({ firstNs: v }) },
      { field: 'last_ns', kind: 'le', set: (v) => ({ lastNs: v }) },
      { field: 'count', kind: 'le', set: (v) => ({ count: v }) },
      { field: 'saddr', kind: 'be', set: (v) => ({ saddr: ipOf(v) }) },
      { field: 'daddr', kind: 'be', set: (v) => ({ daddr: ipOf(v) }) },
      { field: 'sport', kind: 'be', set: (v) => ({ sport: n(v) }) },
      { field: 'reason', kind: 'le', set: (v) => ({ reason: n(v) }) },
      { field: 'trace', kind: 'le', set: (v) => ({ trace: n(v) }) },
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
      { field: 'rule_id', kind: 'le', set: (v) => ({ ruleId: n(v) }) },
      { field: 'ingress_rule_id', kind: 'le', set: (v) => ({ ingressRuleId: n(v) }) },
    ],
  },
  {
    struct: 'flow_sum_seen',
    size: L.FLOW_SUM_SEEN_SIZE,
    zero: { firstNs: 0n, count: 0n, lastNs: 0n },
    encode: L.encodeFlowSumSeen as (v: never) => Buffer,
    fields: [
      { field: 'first_ns', kind: 'le', set: (v) => ({ firstNs: v }) },
      { field: 'count', kind: 'le', set: (v) => ({ count: v }) },
      { field: 'last_ns', kind: 'le', set: (v) => ({ lastNs: v }) },
    ],
  },
  {
    struct: 'counter',
    size: L.COUNTER_SIZE,
    zero: { packets: 0n, bytes: 0n },
    encode: encodeCounter as (v: never) => Buffer,
    fields: [
      { field: 'packets', kind: 'le', set: (v) => ({ packets: v }) },
      { field: 'bytes', kind: 'le', set: (v) => ({ bytes: v }) },
    ],
  },
  {
    struct: 'ep_stats',
    size: L.EP_STATS_SIZE,
    zero: { txPackets: 0n, txBytes: 0n, rxPackets: 0n, rxBytes: 0n, drops: 0n },
    encode: L.encodeEpStats as (v: never) => Buffer,
    fields: [
      { field: 'tx_packets', kind: 'le', set: (v) => ({ txPackets: v }) },
      { field: 'tx_bytes', kind: 'le', set: (v) => ({ txBytes: v }) },
      { field: 'rx_packets', kind: 'le', set: (v) => ({ rxPackets: v }) },
      { field: 'rx_bytes', kind: 'le', set: (v) => ({ rxBytes: v }) },
      { field: 'drops', kind: 'le', set: (v) => ({ drops: v }) },
    ],
  },
  {
    struct: 'bastion_config',
    size: L.CONFIG_SIZE,
    zero: { mode: 0, flags: 0, ctTcpLifetimeS: 0, ctOtherLifetimeS: 0, ctPerEndpoint: 0, eventsPerSec: 0, policyEpoch: 0 },
    encode: L.encodeConfig as (v: never) => Buffer,
    fields: [
      { field: 'mode', kind: 'le', set: (v) => ({ mode: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
      { field: 'ct_tcp_lifetime_s', kind: 'le', set: (v) => ({ ctTcpLifetimeS: n(v) }) },
      { field: 'ct_other_lifetime_s', kind: 'le', set: (v) => ({ ctOtherLifetimeS: n(v) }) },
      { field: 'ct_per_endpoint', kind: 'le', set: (v) => ({ ctPerEndpoint: n(v) }) },
      { field: 'events_per_sec', kind: 'le', set: (v) => ({ eventsPerSec: n(v) }) },
      { field: 'policy_epoch', kind: 'le', set: (v) => ({ policyEpoch: n(v) }) },
    ],
  },
  {
    struct: 'bastion_state',
    size: L.STATE_SIZE,
    zero: { nextIdentity: 0n, generation: 0n },
    encode: L.encodeState as (v: never) => Buffer,
    fields: [
      { field: 'next_identity', kind: 'le', set: (v) => ({ nextIdentity: v }) },
      { field: 'generation', kind: 'le', set: (v) => ({ generation: v }) },
    ],
  },
  {
    struct: 'remote_endpoint',
    size: L.REMOTE_ENDPOINT_SIZE,
    zero: { identity: 0, nodeIpv4: '0.0.0.0', mac: ZERO_MAC, flags: 0 },
    encode: L.encodeRemoteEndpoint as (v: never) => Buffer,
    fields: [
      { field: 'identity', kind: 'le', set: (v) => ({ identity: n(v) }) },
      { field: 'node_ipv4', kind: 'be', set: (v) => ({ nodeIpv4: ipOf(v) }) },
      { field: 'mac', kind: 'bytes', set: (v) => ({ mac: macOf(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
    ],
  },
  {
    struct: 'tunnel_info',
    size: L.TUNNEL_INFO_SIZE,
    zero: { ifindex: 0, localIpv4: '0.0.0.0', underlayIfindex: 0, port: 0, flags: 0 },
    encode: L.encodeTunnelInfo as (v: never) => Buffer,
    fields: [
      { field: 'ifindex', kind: 'le', set: (v) => ({ ifindex: n(v) }) },
      { field: 'local_ipv4', kind: 'be', set: (v) => ({ localIpv4: ipOf(v) }) },
      { field: 'underlay_ifindex', kind: 'le', set: (v) => ({ underlayIfindex: n(v) }) },
      { field: 'port', kind: 'be', set: (v) => ({ port: n(v) }) },
      { field: 'flags', kind: 'le', set: (v) => ({ flags: n(v) }) },
    ],
  },
];

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const mapsH = join(repoRoot, 'bpf/lib/maps.h');
const clang = ['/usr/bin/clang', '/usr/local/bin/clang'].find((p) => existsSync(p));

/** { "struct": size, "struct.field": [offset, size] } as the C compiler sees maps.h. */
function cLayout(): Record<string, number | [number, number]> {
  const lines: string[] = [];
  for (const s of structs) {
    lines.push(`S(${s.struct});`);
    for (const f of s.fields) lines.push(`F(${s.struct}, ${f.field});`);
  }
  const src = `#include <stdio.h>
#include <stddef.h>
#include "maps.h"
#define S(s) printf("\\"%s\\":%zu,", #s, sizeof(struct s))
#define F(s, f) printf("\\"%s.%s\\":[%zu,%zu],", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
int main(void) { printf("{"); ${lines.join(' ')} printf("\\"\\":0}"); return 0; }
`;
  const dir = mkdtempSync(join(tmpdir(), 'bastion-layout-'));
  try {
    writeFileSync(join(dir, 'layout.c'), src);
    const archInc = `/usr/include/${arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
    execFileSync(clang!, ['-Wall', '-I', dirname(mapsH), '-I', archInc, '-o', join(dir, 'layout'), join(dir, 'layout.c')], { stdio: 'pipe' });
    return JSON.parse(execFileSync(join(dir, 'layout'), { encoding: 'utf8' })) as Record<string, number | [number, number]>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('layout.ts matches the C structs of maps.h', { skip: clang && existsSync(mapsH) ? false : 'clang or bpf/lib/maps.h missing' }, () => {
  const c = clang && existsSync(mapsH) ? cLayout() : {};

  for (const s of structs) {
    it(`struct ${s.struct}: size and every field's offset, width and byte order`, () => {
      assert.equal(c[s.struct], s.size, `sizeof(struct ${s.struct})`);
      const zero = typeof s.zero === 'object' ? { ...s.zero } : s.zero;
      assert.equal(s.encode(zero as never).length, s.size);
      assert.ok(s.encode(zero as never).every((x) => x === 0), 'the zero value encodes to zeros');
      for (const f of s.fields) {
        const [off, width] = c[`${s.struct}.${f.field}`] as [number, number];
        // A distinctive value as wide as the field: 0x0102..., so byte order shows.
        let v = 0n;
        for (let i = 1; i <= width; i++) v = (v << 8n) | BigInt(i);
        const b = s.encode((typeof s.zero === 'object' ? { ...s.zero, ...(f.set(v) as object) } : f.set(v)) as never);
        const expected = Buffer.alloc(s.size);
        const bytes = Array.from({ length: width }, (_, i) => i + 1); // big-endian order
        (f.kind === 'le' ? bytes.reverse() : bytes).forEach((x, i) => (expected[off + i] = x));
        assert.deepEqual(b, expected, `${s.struct}.${f.field}: C puts ${width} bytes at offset ${off} (${f.kind})`);
      }
    });
  }

  it('every C field of these structs is covered (no field added to maps.h without a codec)', () => {
    for (const s of structs) {
      const covered = s.fields.reduce((acc, f) => acc + (c[`${s.struct}.${f.field}`] as [number, number])[1], 0);
      // What is left is explicit padding (ct_key.pad, flow_event.pad).
      const padding: Record<string, number> = { ct_key: 3, event_rl_key: 2, flow_event: 6 };
      assert.equal(covered + (padding[s.struct] ?? 0), s.size, `struct ${s.struct} has bytes no codec field covers`);
    }
  });
});

// ------------------------------------------------------------------------
// The constants: layout.ts is the one table on the TypeScript side; every
// value must be what the compiled headers say, and every reason, verdict and
// flag the headers define must be in the table.

/** C name -> the value layout.ts gives it */
function tsConstants(): Record<string, number> {
  const out: Record<string, number> = {};
  const plain = [
    'ID_ANY', 'ID_HOST', 'ID_WORLD', 'ID_FIRST_DYNAMIC', 'EP_F_AUDIT', 'IPC_F_HOST', 'DIR_EGRESS', 'DIR_INGRESS', 'PROTO_ANY',
    'POLICY_PREFIX_ANY_PROTO', 'POLICY_PREFIX_ANY_PORT', 'POLICY_PREFIX_FULL', 'IPCACHE_PREFIX_HOST',
    'CT_F_AUDIT', 'CT_F_SEEN_REPLY', 'CT_F_CLOSING', 'CT_F_KEY_SWAPPED', 'MODE_ENFORCE', 'MODE_AUDIT', 'CFG_F_TRACE_ALLOWED',
    'FRAG_VERDICT_DROPPED', 'FRAG_VERDICT_ALLOWED', 'FRAG_LIFETIME_S', 'BASTION_MAX_CT', 'CT_DEFAULT_PER_ENDPOINT',
    'EVENTS_DEFAULT_PER_SEC', 'TRACE_FROM_CONTAINER', 'TRACE_TO_CONTAINER', 'TRACE_FROM_OVERLAY', 'ID_REMOTE_NODE', 'BASTION_MAX_REMOTE',
    'FLOW_F_REPLY', 'FLOW_F_INGRESS', 'FLOW_SUM_F_AUDIT', 'BASTION_MAX_FLOW_SUM',
  ] as const;
  const lib = L as unknown as Record<string, number>;
  for (const k of plain) out[k] = lib[k]!;
  out.BASTION_NR_COUNTERS = L.NR_COUNTERS;
  for (const [k, v] of Object.entries(L.VERDICT)) out[`VERDICT_${L.upperSnake(k)}`] = v;
  for (const [k, v] of Object.entries(L.REASON)) out[`REASON_${L.upperSnake(k)}`] = v;
  for (const [k, v] of Object.entries(L.IPPROTO)) out[`IPPROTO_${k.toUpperCase()}`] = v;
  return out;
}

/** The same names, valued by the C compiler. */
function cConstants(names: string[]): Record<string, number> {
  const src = `#include <stdio.h>
#include <linux/in.h>
#include "maps.h"
#define C(x) printf("\\"%s\\":%lld,", #x, (long long)(x))
int main(void) { printf("{"); ${names.map((n) => `C(${n});`).join(' ')} printf("\\"\\":0}"); return 0; }
`;
  const dir = mkdtempSync(join(tmpdir(), 'bastion-consts-'));
  try {
    writeFileSync(join(dir, 'consts.c'), src);
    const archInc = `/usr/include/${arch() === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
    execFileSync(clang!, ['-Wall', '-I', dirname(mapsH), '-I', archInc, '-o', join(dir, 'consts'), join(dir, 'consts.c')], { stdio: 'pipe' });
    return JSON.parse(execFileSync(join(dir, 'consts'), { encoding: 'utf8' })) as Record<string, number>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('layout.ts constants match the C headers', { skip: clang && existsSync(mapsH) ? false : 'clang or bpf/lib/maps.h missing' }, () => {
  const ts = tsConstants();

  it('every constant of the table has the value the compiled headers give it', () => {
    const c = cConstants(Object.keys(ts));
    for (const [name, v] of Object.entries(ts)) assert.equal(c[name], v, `${name}: C says ${c[name]}, layout.ts ${v}`);
  });

  it('the headers define no reason, verdict, flag, mode, direction or identity the table lacks', () => {
    const text = readdirSync(dirname(mapsH))
      .filter((f) => f.endsWith('.h'))
      .map((f) => readFileSync(join(dirname(mapsH), f), 'utf8'))
      .join('\n');
    const defined = [...text.matchAll(/^#define\s+((?:REASON|VERDICT|CT_F|EP_F|IPC_F|CFG_F|MODE|DIR|ID|TRACE|FRAG_VERDICT|POLICY_PREFIX|FLOW_F|FLOW_SUM_F)_\w+)\s/gm)].map((m) => m[1]!);
    assert.ok(defined.length > 40, `found only ${defined.length} constants in the headers`);
    const missing = defined.filter((d) => !(d in ts));
    assert.deepEqual(missing, [], `defined in bpf/lib but not in layout.ts: ${missing.join(', ')}`);
  });

  it('reason names are the keys in kebab case, and unique', () => {
    assert.equal(L.REASON_NAMES[L.REASON.unsupportedL3], 'unsupported-l3');
    assert.equal(L.REASON_NAMES[L.REASON.icmpUnrelated], 'icmp-unrelated');
    assert.equal(new Set(Object.values(L.REASON_NAMES)).size, Object.keys(L.REASON).length);
    assert.equal(new Set(Object.values(L.REASON)).size, Object.keys(L.REASON).length, 'two reasons share a number');
  });

  it('prefix lengths follow from the key sizes', () => {
    assert.equal(L.POLICY_PREFIX_FULL, 96);
    assert.equal(L.POLICY_PREFIX_ANY_PORT, 80);
    assert.equal(L.POLICY_PREFIX_ANY_PROTO, 72);
    assert.equal(L.IPCACHE_PREFIX_HOST, 32);
  });
});

describe('latin1 encoders (the manager\'s slices)', () => {
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  it('write the same bytes as the Buffer encoders (property)', () => {
    fc.assert(
      fc.property(u32, u32, u32, fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 128 }), (a, b, c, direction, proto, dport, prefixlen) => {
        const key = { prefixlen, epId: a, peerId: b, direction, proto, dport };
        assert.equal(L.encodePolicyKeyLatin1(key), L.encodePolicyKey(key).toString('latin1'));
        assert.equal(L.encodePolicyValLatin1({ ruleId: c, flags: a }), L.encodePolicyVal({ ruleId: c, flags: a }).toString('latin1'));
        assert.equal(L.encodeNeighKeyLatin1({ epId: a, peerId: b }), L.encodeNeighKey({ epId: a, peerId: b }).toString('latin1'));
        assert.equal(L.u32Latin1(c), L.encodeU32(c).toString('latin1'));
      }),
    );
  });
});
