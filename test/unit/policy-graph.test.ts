/**
 * The dependency graph (src/policy/graph.ts) against the reference evaluator:
 * every connection evaluate() allows lies on an edge whose ports cover it,
 * and no edge covers a connection it refuses. Plus port sets and examples.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Rule } from '../../src/policy/model.js';
import { dependencyGraph, externalEndId, rulePorts, type GraphEdge } from '../../src/policy/graph.js';
import { evaluate, peerMatches, type FlowQuery, type L4Protocol } from '../../src/policy/evaluate.js';
import { ALL_PORTS, NO_PORTS, covers, intersect, portRange, portSetText, union } from '../../src/policy/port-set.js';
import { INTERESTING_PORTS, worldArb, type World } from './policy-world.test.js';

const PROBES: Array<[L4Protocol, number]> = [
  ['icmp', 0],
  ...INTERESTING_PORTS.flatMap((p): Array<[L4Protocol, number]> => [
    ['tcp', p],
    ['udp', p],
  ]),
  ['sctp', 80],
  ['sctp', 9090],
];
const OUTSIDE = ['10.0.0.1', '10.0.0.3', '10.1.2.3', '8.8.8.8', '192.168.1.1', '172.16.0.1'];

/** Does the graph say this connection is allowed? */
function graphAllows(w: World, edges: GraphEdge[], q: FlowQuery): boolean {
  const ep = (a: FlowQuery['src']) => ('endpoint' in a ? w.endpoints.find((e) => e.key === a.endpoint) : w.endpoints.find((e) => e.ipv4 === a.ip));
  const end = (a: FlowQuery['src']): { id?: string; ip: string; kind: 'endpoint' | 'host' | 'external' } => {
    const e = ep(a);
    if (e) return { id: e.key, ip: e.ipv4, kind: 'endpoint' };
    const ip = (a as { ip: string }).ip;
    return w.hostAddrs.includes(ip) ? { id: 'host', ip, kind: 'host' } : { ip, kind: 'external' };
  };
  const s = end(q.src);
  const d = end(q.dst);
  const port = q.protocol === 'icmp' ? 0 : q.port;
  const onEdge = (from: (e: GraphEdge) => boolean, to: (e: GraphEdge) => boolean) =>
    edges.some((e) => from(e) && to(e) && covers(e.ports, q.protocol, port));
  const matchesExternal = (e: GraphEdge['fromEnd'], ip: string) =>
    e.kind === 'world' || (e.kind === 'cidr' && peerMatches(e.peer, { kind: 'external', ip }));
  if (s.kind === 'endpoint' && d.kind === 'endpoint') return onEdge((e) => e.from === s.id, (e) => e.to === d.id);
  if (s.kind === 'endpoint' && d.kind === 'host') return onEdge((e) => e.from === s.id, (e) => e.to === 'host');
  if (s.kind === 'host' && d.kind === 'endpoint') return onEdge((e) => e.from === 'host', (e) => e.to === d.id);
  if (s.kind === 'endpoint' && d.kind === 'external') return onEdge((e) => e.from === s.id, (e) => matchesExternal(e.toEnd, d.ip));
  if (s.kind === 'external' && d.kind === 'endpoint') return onEdge((e) => matchesExternal(e.fromEnd, s.ip), (e) => e.to === d.id);
  return true; // between two unmanaged ends: not Bastion's to judge
}

describe('policy: dependency graph', () => {
  it('agrees with the reference evaluator on every pair and port (property)', () => {
    fc.assert(
      fc.property(worldArb({ maxEndpoints: 5, maxRules: 8 }), (w) => {
        const g = dependencyGraph(w.rules, w.endpoints);
        assert.equal(g.truncated, false);
        const parties: FlowQuery['src'][] = [
          ...w.endpoints.map((e) => ({ endpoint: e.key })),
          ...w.hostAddrs.map((ip) => ({ ip })),
          ...OUTSIDE.filter((ip) => !w.endpoints.some((e) => e.ipv4 === ip) && !w.hostAddrs.includes(ip)).map((ip) => ({ ip })),
        ];
        for (const src of parties) {
          for (const dst of parties) {
            if (JSON.stringify(src) === JSON.stringify(dst)) continue; // to itself: never on the wire
            for (const [protocol, port] of PROBES) {
              const q: FlowQuery = { src, dst, protocol, port };
              const want = evaluate({ mode: 'enforce', rules: w.rules }, w.endpoints, w.hostAddrs, q).allowed;
              const got = graphAllows(w, g.edges, q);
              if (want !== got) {
                assert.fail(`${JSON.stringify(q)}: evaluate says ${want}, the graph ${got}\nedges: ${JSON.stringify(g.edges.map((e) => [e.from, e.to, portSetText(e.ports)]))}`);
              }
            }
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('names the rules of each edge and of each endpoint, and the ports both sides allow', () => {
    const eps = [
      { key: 'web', ipv4: '10.0.0.2', labels: { app: 'web' } },
      { key: 'api', ipv4: '10.0.0.3', labels: { app: 'api' }, namedPorts: { http: { port: 8080, protocol: 'tcp' as const } } },
      { key: 'db', ipv4: '10.0.0.4', labels: { app: 'db' } },
    ];
    const rules: Rule[] = [
      { id: 'web-to-api', direction: 'egress', subject: { matchLabels: { app: 'web' } }, peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'api' } } }], ports: [{ protocol: 'tcp', from: 8000, to: 9000 }] },
      { id: 'web-to-api', direction: 'ingress', subject: { matchLabels: { app: 'api' } }, peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 0, to: 0, name: 'http' }] },
      { id: 'dns', direction: 'egress', subject: {}, peers: [{ kind: 'host' }], ports: [{ protocol: 'udp', from: 53, to: 53 }] },
      { id: 'out', direction: 'egress', subject: { matchLabels: { app: 'db' } }, peers: [{ kind: 'cidr', cidr: '192.168.0.0/16', except: ['192.168.1.0/24'] }], ports: [] },
    ];
    const g = dependencyGraph(rules, eps);
    const byId = new Map(g.edges.map((e) => [`${e.from}>${e.to}`, e]));
    assert.deepEqual(portSetText(byId.get('web>api')!.ports), ['8080/tcp']);
    assert.deepEqual(byId.get('web>api')!.rules, ['web-to-api']);
    for (const k of ['web', 'api', 'db']) assert.deepEqual(portSetText(byId.get(`${k}>host`)!.ports), ['53/udp']);
    const cidrId = externalEndId({ kind: 'cidr', peer: rules[3]!.peers[0] as never });
    assert.deepEqual(portSetText(byId.get(`db>${cidrId}`)!.ports), ['any']);
    assert.equal(byId.get(`db>${cidrId}`)!.toEnd.kind, 'cidr');
    assert.equal(g.edges.length, 5);
    assert.deepEqual(g.rulesOf.get('api'), { egress: [2], ingress: [1] });
    assert.deepEqual(g.rulesOf.get('web'), { egress: [0, 2], ingress: [] });
  });

  it('stops at maxPairs and says so', () => {
    const eps = Array.from({ length: 50 }, (_, i) => ({ key: `e${i}`, ipv4: `10.0.${i >> 8}.${i & 255}`, labels: {} }));
    const rules: Rule[] = [
      { id: 'all-out', direction: 'egress', subject: {}, peers: [{ kind: 'any' }], ports: [] },
      { id: 'all-in', direction: 'ingress', subject: {}, peers: [{ kind: 'any' }], ports: [] },
    ];
    assert.equal(dependencyGraph(rules, eps).edges.filter((e) => e.fromEnd.kind === 'endpoint' && e.toEnd.kind === 'endpoint').length, 50 * 49);
    assert.equal(dependencyGraph(rules, eps, { maxPairs: 1000 }).truncated, true);
  });
});

describe('policy: port sets', () => {
  it('union and intersection of ranges', () => {
    const a = union(portRange('tcp', 80, 90), portRange('tcp', 91, 100));
    assert.deepEqual(portSetText(a), ['80-100/tcp']);
    assert.deepEqual(portSetText(intersect(a, portRange('tcp', 95, 200))), ['95-100/tcp']);
    assert.deepEqual(portSetText(intersect(a, portRange('udp', 80, 100))), []);
    assert.deepEqual(portSetText(ALL_PORTS), ['any']);
    assert.deepEqual(portSetText(rulePorts([{ protocol: 'tcp', from: 0, to: 65535 }, { protocol: 'icmp', from: 0, to: 0 }])), ['*/tcp', 'icmp']);
    assert.deepEqual(portSetText(NO_PORTS), []);
  });

  it('covers exactly what its ranges hold (property)', () => {
    const rangeArb = fc.tuple(fc.constantFrom('tcp' as const, 'udp' as const), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }));
    fc.assert(
      fc.property(fc.array(rangeArb, { maxLength: 5 }), fc.array(rangeArb, { maxLength: 5 }), fc.integer({ min: 0, max: 65535 }), (xs, ys, port) => {
        const set = (rs: typeof xs) => rs.reduce((s, [p, a, b]) => union(s, portRange(p, Math.min(a, b), Math.max(a, b))), NO_PORTS);
        const inAny = (rs: typeof xs, proto: string) => rs.some(([p, a, b]) => p === proto && Math.min(a, b) <= port && port <= Math.max(a, b));
        for (const proto of ['tcp', 'udp'] as const) {
          assert.equal(covers(set(xs), proto, port), inAny(xs, proto));
          assert.equal(covers(union(set(xs), set(ys)), proto, port), inAny(xs, proto) || inAny(ys, proto));
          assert.equal(covers(intersect(set(xs), set(ys)), proto, port), inAny(xs, proto) && inAny(ys, proto));
        }
      }),
    );
  });
});
