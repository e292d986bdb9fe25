import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FlowStore, type FlowRecord } from '../../src/agent/flow-log.js';

const LABELS: Array<Record<string, string>> = [{ app: 'web' }, { app: 'api', tier: 'back' }, {}];

function rec(i: number, verdict = i % 3 === 0 ? 'DROPPED' : 'ALLOWED'): FlowRecord {
  // the shapes describeFlow and the summaries make: names known or not, ports only for tcp/udp/sctp, policies or not, optional parts
  const icmp = i % 4 === 1;
  const r: FlowRecord = {
    time: new Date(1_700_000_000_000 + i * 7).toISOString(),
    verdict,
    reason: i % 2 ? 'policy-denied' : 'x',
    direction: i % 5 === 3 ? 'ingress' : 'egress',
    protocol: icmp ? 'icmp' : 'tcp',
    src: {
      identity: 256 + (i % 7),
      ...(i % 5 ? { name: i % 5 === 1 ? undefined : `c${i % 9}` } : {}),
      labels: LABELS[i % 3]!,
      ip: `10.${i % 256}.0.2`,
      ...(icmp ? {} : { port: 1000 + (i % 60000) }),
      ...(i % 13 === 4 ? { node: 'node-a' } : {}),
    },
    dst: { identity: 257, name: 'server', labels: LABELS[(i + 1) % 3]!, ip: i % 11 === 3 ? '255.255.255.255' : '10.0.0.3', ...(icmp ? {} : { port: 80 }), ...(i % 7 === 2 ? { node: 'node-b' } : {}) },
    policies: i % 4 === 2 ? { egress: `rule-${i % 3}` } : i % 4 === 3 ? { egress: 'e', ingress: 'i' } : {},
    interface: `veth${i % 5}`,
    isReply: i % 6 === 5,
    ...(i % 3 ? { endpoint: i % 6 === 1 ? undefined : 'server' } : {}),
  };
  if (i % 8 !== 7) r.bytes = i;
  if (!icmp && i % 3 === 1) r.tcpFlags = 'SYN';
  if (i % 10 === 9) {
    r.summary = true;
    r.count = 1000 + i;
    r.firstSeen = new Date(1_600_000_000_000 + i).toISOString();
    r.lastSeen = r.time;
  }
  return r;
}

describe('FlowStore', () => {
  it('keeps the last `capacity` flows in order, with filters and limits, like a plain array (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 150 }), fc.integer({ min: 0, max: 60 }), fc.boolean(), (cap, n, limit, filtered) => {
        const store = new FlowStore(cap);
        const all: FlowRecord[] = [];
        for (let i = 0; i < n; i++) {
          const r = rec(i);
          store.push(r);
          all.push(r);
        }
        const filter = filtered ? (r: FlowRecord) => r.verdict === 'DROPPED' : undefined;
        const expected = all.slice(-cap).filter(filter ?? (() => true)).slice(-limit);
        assert.deepEqual(limit === 0 ? [] : store.recent(limit, filter), limit === 0 ? [] : expected);
        assert.equal(store.count, n);
      }),
    );
  });

  it('tells followers about each flow', () => {
    const store = new FlowStore(2);
    const seen: number[] = [];
    store.on('flow', (r: FlowRecord) => seen.push(Date.parse(r.time)));
    for (let i = 0; i < 5; i++) store.push(rec(i));
    assert.deepEqual(seen, [0, 1, 2, 3, 4].map((i) => 1_700_000_000_000 + i * 7));
  });

  it('gives back what a record held, field for field, including an address it could not pack', () => {
    const store = new FlowStore(4);
    const odd = { ...rec(3), src: { identity: 9, labels: {}, ip: 'fe80::1' } };
    store.push(odd);
    store.push(rec(6));
    assert.deepEqual(store.recent(10), [odd, rec(6)]);
  });

  it('refuses a capacity that is not a positive integer', () => {
    assert.throws(() => new FlowStore(0), /positive integer/);
  });
});

describe('flow log lines', () => {
  it('made from the record\'s JSON, they are what pino writes (but its time)', async () => {
    const { recordFlow } = await import('../../src/daemon/flow-logger.js');
    const pino = (await import('pino')).default;
    const { Writable } = await import('node:stream');
    const lines: string[] = [];
    const sink = new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) });
    const log = pino({ level: 'info', base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, sink);
    for (let i = 0; i < 40; i++) {
      const r = rec(i);
      recordFlow(r, new FlowStore(4), { log });
      const made: string[] = [];
      recordFlow(r, new FlowStore(4), { log, writeLogLine: (l) => made.push(l) });
      await new Promise((res) => setImmediate(res));
      const viaPino = JSON.parse(lines.pop()!);
      const direct = JSON.parse(made[0]!);
      assert.match(made[0]!, /\n$/);
      assert.ok(Math.abs(Date.parse(direct.time) - Date.parse(viaPino.time)) < 5000);
      delete viaPino.time;
      delete direct.time;
      assert.deepEqual(direct, viaPino);
      assert.deepEqual(Object.keys(direct), Object.keys(viaPino), 'same field order');
    }
  });
});

describe('describeFlow', () => {
  const names = {
    identityName: (id: number) => ({ 300: 'web', 301: 'api', 1: 'host' })[id],
    identityLabels: (id: number) => ({ 300: { app: 'web' }, 301: { app: 'api' } })[id],
    ruleName: (n: number) => ({ 7: 'web-to-api', 8: 'api-from-web' })[n],
    endpointName: () => 'web',
    interfaceName: () => 'veth-web',
  };
  const base = {
    tsNs: 1_000_000_000n, srcId: 300, dstId: 301, saddr: '10.0.0.2', daddr: '10.0.0.3', sport: 40000, dport: 8080, proto: 6,
    verdict: 1, reason: 1, trace: 0, ifindex: 9, ruleId: 7, pktLen: 74, ethertype: 0x0800, suppressed: 0, ingressRuleId: 8, tcpFlags: 0x02, flags: 0, tunnelSaddr: '0.0.0.0',
  };
  it('names both sides\' policies, the flags, the labels and the interface', async () => {
    const { describeFlow } = await import('../../src/agent/flow-log.js');
    const r = describeFlow(base, names, Date.parse('2024-05-01T10:00:00Z'));
    assert.deepEqual(r, {
      time: '2024-05-01T10:00:00.000Z',
      verdict: 'ALLOWED',
      reason: 'allowed-new',
      direction: 'egress',
      protocol: 'tcp',
      src: { identity: 300, name: 'web', labels: { app: 'web' }, ip: '10.0.0.2', port: 40000 },
      dst: { identity: 301, name: 'api', labels: { app: 'api' }, ip: '10.0.0.3', port: 8080 },
      policies: { egress: 'web-to-api', ingress: 'api-from-web' },
      interface: 'veth-web',
      isReply: false,
      endpoint: 'web',
      tcpFlags: 'SYN',
      bytes: 74,
    });
    const denied = describeFlow({ ...base, verdict: 2, reason: 23, ruleId: 7, ingressRuleId: 0, flags: 2 }, names, 0);
    assert.equal(denied.direction, 'ingress', 'the receiver\'s ingress decided');
    assert.deepEqual(denied.policies, { egress: 'web-to-api' });
    const reply = describeFlow({ ...base, verdict: 2, reason: 30, tcpFlags: 0x12, flags: 1 }, names, 0);
    assert.equal(reply.isReply, true);
    assert.equal(reply.tcpFlags, 'SYN,ACK');
    const inbound = describeFlow({ ...base, srcId: 1, trace: 1, ruleId: 9, ingressRuleId: 0 }, { ...names, ruleName: () => 'host-to-api' }, 0);
    assert.deepEqual([inbound.direction, inbound.policies], ['ingress', { ingress: 'host-to-api' }]);
    assert.deepEqual(inbound.src.labels, {}, 'the host has no labels');
  });

  it('from another node (from_overlay): seen on the way in, the receiver\'s rule is its ingress, each end names its node', async () => {
    const { describeFlow } = await import('../../src/agent/flow-log.js');
    const nodes = { ...names, identityNode: (id: number) => ({ 300: 'b', 301: 'a' })[id] };
    // b/web -> a/api through the tunnel: from_overlay decided with api's ingress rule 8 (in rule_id, as to_container)
    const r = describeFlow({ ...base, trace: 2, ruleId: 8, ingressRuleId: 0 }, nodes, 0);
    assert.equal(r.direction, 'ingress');
    assert.deepEqual(r.policies, { ingress: 'api-from-web' });
    assert.deepEqual([r.src.node, r.dst.node], ['b', 'a']);
    assert.deepEqual(r.src.labels, { app: 'web' });
    const denied = describeFlow({ ...base, trace: 2, verdict: 2, reason: 23, ruleId: 0, ingressRuleId: 0, flags: 2 }, nodes, 0);
    assert.deepEqual([denied.direction, denied.policies], ['ingress', {}]);
  });

  it('dropped from the tunnel before the receiver is known: the device, the sending node (or its bare address) and the claimed identity, not ifN', async () => {
    const { describeFlow, FlowStore, formatFlowLine } = await import('../../src/agent/flow-log.js');
    const cluster = {
      ...names,
      endpointName: () => undefined,
      interfaceName: (ifindex: number) => (ifindex === 5 ? 'bvx0' : undefined),
      identityNode: (id: number) => ({ 300: 'b' })[id],
      nodeByUnderlay: (ip: string) => ({ '192.168.7.12': 'b' })[ip],
    };
    // tunnel-spoofed (41) from an underlay host that is no node, claiming web's identity
    const spoofed = describeFlow({ ...base, trace: 2, verdict: 2, reason: 41, ifindex: 5, dstId: 0, ruleId: 0, ingressRuleId: 0, tunnelSaddr: '192.168.7.99' }, cluster, 0);
    assert.equal(spoofed.interface, 'bvx0');
    assert.deepEqual(spoofed.tunnel, { protocol: 'vxlan', source: '192.168.7.99' });
    assert.deepEqual([spoofed.src.identity, spoofed.src.name, spoofed.reason], [300, 'web', 'tunnel-spoofed']);
    assert.match(formatFlowLine(spoofed), /DROPPED \(tunnel-spoofed\).* via vxlan from 192\.168\.7\.99 \(no node\) on bvx0$/);
    // from a node: named
    const known = describeFlow({ ...base, trace: 2, verdict: 2, reason: 40, ifindex: 5, ruleId: 0, ingressRuleId: 0, tunnelSaddr: '192.168.7.12' }, cluster, 0);
    assert.deepEqual(known.tunnel, { protocol: 'vxlan', source: '192.168.7.12', node: 'b' });
    assert.match(formatFlowLine(known), /via vxlan from node b \(192\.168\.7\.12\) on bvx0$/);
    // not from the tunnel: no tunnel field
    assert.equal(describeFlow(base, cluster, 0).tunnel, undefined);
    // the store gives it back as it was
    const store = new FlowStore(4);
    store.push(spoofed);
    store.push(known);
    assert.deepEqual(store.recent(2), [spoofed, known]);
  });

  it('turns a summary of the kernel\'s counts into a record with count, first and last seen', async () => {
    const { describeFlow } = await import('../../src/agent/flow-log.js');
    const r = describeFlow({ ...base, tsNs: 10_000_000_000n, pktLen: 0, tcpFlags: 0, flowSummary: { count: 1200, firstNs: 4_000_000_000n } }, names, Date.parse('2024-05-01T10:00:10Z'));
    assert.equal(r.summary, true);
    assert.equal(r.count, 1200);
    assert.equal(r.firstSeen, '2024-05-01T10:00:04.000Z');
    assert.equal(r.lastSeen, '2024-05-01T10:00:10.000Z');
    assert.equal(r.bytes, undefined);
    assert.equal(r.tcpFlags, undefined);
  });
});
