/**
 * The reference evaluator of the model, the datapath-mimicking evaluator of
 * compiled entries, and the property that they always agree (the proof that
 * compile.ts is right).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { PolicySet, Rule } from '../../src/policy/model.js';
import { compileAll, type CompileEndpoint } from '../../src/policy/compile.js';
import {
  CompiledEvaluator,
  LpmTable,
  UnknownEndpointError,
  addressOf,
  datapathView,
  evaluate,
  evaluateCompiled,
  type FlowQuery,
} from '../../src/policy/evaluate.js';
import { ID_ANY, ID_HOST, ID_WORLD, encodeIpcacheKey, encodePolicyKey } from '../../src/datapath/layout.js';
import { allocators, gridQueries, queryArb, worldArb, type World } from './policy-world.test.js';

const ep = (key: string, ipv4: string, labels: Record<string, string>, identity = 300, namedPorts?: CompileEndpoint['namedPorts']): CompileEndpoint => ({
  key,
  identity,
  ipv4,
  labels,
  ...(namedPorts ? { namedPorts } : {}),
});

const WEB = ep('web', '10.0.0.2', { app: 'web' }, 300);
const API = ep('api', '10.0.0.3', { app: 'api' }, 301, { http: { port: 8080, protocol: 'tcp' } });
const DB = ep('db', '10.0.0.4', { app: 'db' }, 302);
const EPS = [WEB, API, DB];
const HOST = ['10.0.0.1', '192.168.1.10'];

const rule = (r: Partial<Rule> & Pick<Rule, 'id' | 'direction'>): Rule => ({ subject: {}, peers: [], ports: [], ...r });

const q = (src: FlowQuery['src'], dst: FlowQuery['dst'], protocol: FlowQuery['protocol'] = 'tcp', port = 80): FlowQuery => ({ src, dst, protocol, port });

describe('evaluate (reference)', () => {
  const ps: PolicySet = {
    mode: 'enforce',
    rules: [
      rule({ id: 'web-to-api', direction: 'egress', subject: { matchLabels: { app: 'web' } }, peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'api' } } }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] }),
      rule({ id: 'web-to-api', direction: 'ingress', subject: { matchLabels: { app: 'api' } }, peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] }),
      rule({ id: 'api-egress-db', direction: 'egress', subject: { matchLabels: { app: 'api' } }, peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'db' } } }], ports: [] }),
      rule({ id: 'dns', direction: 'egress', subject: {}, peers: [{ kind: 'host' }], ports: [{ protocol: 'udp', from: 53, to: 53 }] }),
      rule({ id: 'out', direction: 'egress', subject: { matchLabels: { app: 'api' } }, peers: [{ kind: 'cidr', cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] }], ports: [] }),
      rule({ id: 'from-lan', direction: 'ingress', subject: { matchLabels: { app: 'web' } }, peers: [{ kind: 'cidr', cidr: '192.168.0.0/16' }], ports: [{ protocol: 'tcp', from: 80, to: 80 }] }),
      rule({ id: 'named', direction: 'ingress', subject: { matchLabels: { app: 'api' } }, peers: [{ kind: 'any' }], ports: [{ protocol: 'tcp', from: 0, to: 0, name: 'http' }] }),
    ],
  };

  it('managed → managed needs the source egress and the destination ingress', () => {
    const v = evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { endpoint: 'api' }, 'tcp', 8080));
    assert.equal(v.allowed, true);
    assert.equal(v.egressRule, 'web-to-api');
    assert.deepEqual(v.ingressRules, ['web-to-api', 'named']);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { endpoint: 'api' }, 'tcp', 8081)).allowed, false);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { endpoint: 'api' }, 'udp', 8080)).allowed, false);
    // the reverse direction is a new connection, not allowed
    const rev = evaluate(ps, EPS, HOST, q({ endpoint: 'api' }, { endpoint: 'web' }, 'tcp', 8080));
    assert.equal(rev.allowed, false);
    assert.equal(rev.reason, 'denied-both');
  });

  it('egress alone is not enough between managed endpoints', () => {
    const v = evaluate(ps, EPS, HOST, q({ endpoint: 'api' }, { endpoint: 'db' }, 'tcp', 5432));
    assert.equal(v.allowed, false);
    assert.equal(v.reason, 'ingress-denied');
    assert.deepEqual(v.egressRules, ['api-egress-db']);
  });

  it('to unmanaged: only the source egress; the host is not a CIDR', () => {
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { ip: '10.0.0.1' }, 'udp', 53)).allowed, true);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { ip: '192.168.1.10' }, 'udp', 53)).allowed, true);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { ip: '10.0.0.1' }, 'tcp', 53)).allowed, false);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'api' }, { ip: '8.8.8.8' }, 'tcp', 443)).allowed, true);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'api' }, { ip: '10.9.9.9' }, 'tcp', 443)).allowed, false);
    // 0.0.0.0/0 does not include the host: a host address is the host
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'api' }, { ip: '192.168.1.10' }, 'tcp', 443)).allowed, false);
  });

  it('from unmanaged: only the destination ingress', () => {
    assert.equal(evaluate(ps, EPS, HOST, q({ ip: '192.168.5.5' }, { endpoint: 'web' }, 'tcp', 80)).allowed, true);
    assert.equal(evaluate(ps, EPS, HOST, q({ ip: '192.168.1.10' }, { endpoint: 'web' }, 'tcp', 80)).allowed, false, 'the host is not in a cidr peer');
    assert.equal(evaluate(ps, EPS, HOST, q({ ip: '8.8.8.8' }, { endpoint: 'api' }, 'tcp', 8080)).allowed, true, 'named port, any peer');
    assert.equal(evaluate(ps, EPS, HOST, q({ ip: '8.8.8.8' }, { endpoint: 'web' }, 'tcp', 8080)).allowed, false);
  });

  it('an address of a managed endpoint is that endpoint; neither end managed is not judged', () => {
    assert.equal(evaluate(ps, EPS, HOST, q({ ip: '10.0.0.2' }, { ip: '10.0.0.3' }, 'tcp', 8080)).src.kind, 'endpoint');
    const v = evaluate(ps, EPS, HOST, q({ ip: '8.8.8.8' }, { ip: '10.0.0.1' }));
    assert.equal(v.allowed, true);
    assert.equal(v.reason, 'unmanaged');
  });

  it('rejects unknown endpoints and bad ports', () => {
    assert.throws(() => evaluate(ps, EPS, HOST, q({ endpoint: 'nope' }, { endpoint: 'api' })), UnknownEndpointError);
    assert.throws(() => evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { endpoint: 'api' }, 'tcp', 70000)), /out of range/);
    assert.equal(evaluate(ps, EPS, HOST, q({ endpoint: 'web' }, { ip: '10.0.0.1' }, 'icmp', 70000)).allowed, false, 'icmp ignores the port');
  });

  it('an unreadable except fails closed; IPv6 cidrs and excepts never match IPv4', () => {
    const r = (peers: Rule['peers']): PolicySet => ({ mode: 'enforce', rules: [rule({ id: 'x', direction: 'egress', peers })] });
    const to = (ip: string, p: PolicySet) => evaluate(p, [WEB], [], q({ endpoint: 'web' }, { ip })).allowed;
    assert.equal(to('8.8.8.8', r([{ kind: 'cidr', cidr: '0.0.0.0/0', except: ['bogus'] }])), false);
    assert.equal(to('8.8.8.8', r([{ kind: 'cidr', cidr: '0.0.0.0/0', except: ['2001:db8::/32'] }])), true);
    assert.equal(to('8.8.8.8', r([{ kind: 'cidr', cidr: '::/0' }])), false);
  });
});

describe('LpmTable (kernel LPM trie semantics)', () => {
  it('returns the longest matching prefix, replaces equal prefixes, ignores bits past the prefix', () => {
    const t = new LpmTable<string>(4);
    const k = (addr: string, prefixlen: number) => encodeIpcacheKey({ prefixlen, addr });
    t.set(k('0.0.0.0', 0), 'world');
    t.set(k('10.0.0.0', 8), 'ten');
    t.set(k('10.1.0.0', 16), 'ten-one');
    assert.equal(t.lookup(k('10.1.2.3', 32)), 'ten-one');
    assert.equal(t.lookup(k('10.2.2.3', 32)), 'ten');
    assert.equal(t.lookup(k('11.0.0.1', 32)), 'world');
    t.set(k('10.1.255.255', 16), 'replaced'); // same prefix: the same node
    assert.equal(t.size, 3);
    assert.equal(t.lookup(k('10.1.0.1', 32)), 'replaced');
    assert.equal(t.delete(k('10.1.0.0', 16)), true);
    assert.equal(t.lookup(k('10.1.0.1', 32)), 'ten');
  });

  it('matches policy port prefixes on the big-endian port (the high bits of the port number)', () => {
    const t = new LpmTable<number>(12);
    const key = (dport: number, prefixlen: number) => encodePolicyKey({ prefixlen, epId: 300, peerId: 301, direction: 0, proto: 6, dport });
    t.set(key(0x1f90, 96 - 4), 1); // 8080..8095
    assert.equal(t.lookup(key(8080, 96)), 1);
    assert.equal(t.lookup(key(8095, 96)), 1);
    assert.equal(t.lookup(key(8096, 96)), undefined);
    assert.equal(t.lookup(key(8079, 96)), undefined);
    t.set(encodePolicyKey({ prefixlen: 72, epId: 300, peerId: 301, direction: 0, proto: 0, dport: 0 }), 2);
    assert.equal(t.lookup(key(22, 96)), 2);
    assert.equal(t.lookup(encodePolicyKey({ prefixlen: 96, epId: 300, peerId: 301, direction: 1, proto: 6, dport: 22 })), undefined, 'other direction');
  });
});

// ------------------------------------------------------------ the property

function compileWorld(w: World) {
  const alloc = allocators();
  // number the rules in order, so that "lowest number" means "first rule"
  w.rules.forEach((r) => alloc.ruleNumber(r.id));
  const state = compileAll({ endpoints: w.endpoints, rules: w.rules, hostAddrs: w.hostAddrs, ...alloc });
  const ev = new CompiledEvaluator(datapathView(state, w.endpoints));
  return { alloc, state, ev };
}

function checkAgreement(w: World, ev: CompiledEvaluator, ruleNumber: (id: string) => number, query: FlowQuery): void {
  const ps: PolicySet = { mode: 'enforce', rules: w.rules };
  const ref = evaluate(ps, w.endpoints, w.hostAddrs, query);
  const got = evaluateCompiled(ev, w.endpoints, query);
  const ctx = () => JSON.stringify({ query, ref: { allowed: ref.allowed, e: ref.egressRules, i: ref.ingressRules }, got });
  assert.equal(got.allowed, ref.allowed, `verdicts differ: ${ctx()}`);
  assert.equal(got.egressChecked, ref.egressChecked, ctx());
  assert.equal(got.ingressChecked, ref.ingressChecked, ctx());
  // each direction on its own agrees too, and the rule the datapath reports truly allows it
  if (ref.egressChecked) {
    assert.equal(got.egressRuleId !== 0, ref.egressRules.length > 0, `egress differs: ${ctx()}`);
    if (got.egressRuleId) assert.ok(ref.egressRules.map(ruleNumber).includes(got.egressRuleId), `egress rule ${got.egressRuleId} does not allow: ${ctx()}`);
  }
  if (ref.ingressChecked) {
    assert.equal(got.ingressRuleId !== 0, ref.ingressRules.length > 0, `ingress differs: ${ctx()}`);
    if (got.ingressRuleId) assert.ok(ref.ingressRules.map(ruleNumber).includes(got.ingressRuleId), `ingress rule ${got.ingressRuleId} does not allow: ${ctx()}`);
  }
  // the identities are what the model says the ends are
  if (ref.src.kind === 'host') assert.equal(got.srcIdentity, ID_HOST);
  if (ref.dst.kind === 'host') assert.equal(got.dstIdentity, ID_HOST);
}

describe('compiled entries ≡ the model (property)', () => {
  it('random queries on random worlds: same verdict, per direction, with a rule that truly allows', () => {
    fc.assert(
      fc.property(
        worldArb().chain((w) => fc.tuple(fc.constant(w), fc.array(queryArb(w), { minLength: 1, maxLength: 40 }))),
        ([w, queries]) => {
          const { alloc, ev } = compileWorld(w);
          for (const query of queries) checkAgreement(w, ev, alloc.ruleNumber, query);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('every pair of parties on a grid of probes', () => {
    const probes: Array<[FlowQuery['protocol'], number]> = [
      ['tcp', 80],
      ['tcp', 8080],
      ['udp', 53],
      ['sctp', 9090],
      ['icmp', 0],
      ['tcp', 0],
      ['udp', 65535],
    ];
    fc.assert(
      fc.property(worldArb({ maxEndpoints: 5, maxRules: 10 }), (w) => {
        const { alloc, ev } = compileWorld(w);
        for (const query of gridQueries(w, probes)) checkAgreement(w, ev, alloc.ruleNumber, query);
      }),
      { numRuns: 150 },
    );
  });

  it('rules with one id in both directions (as the config file emits them) and many rules on one pair', () => {
    fc.assert(
      fc.property(
        worldArb({ maxRules: 12 }).map((w) => ({ ...w, rules: w.rules.map((r, i) => ({ ...r, id: `p${Math.floor(i / 2)}` })) })),
        (w) => {
          const { alloc, ev } = compileWorld(w);
          for (const query of gridQueries(w, [['tcp', 80], ['udp', 53], ['icmp', 0]])) checkAgreement(w, ev, alloc.ruleNumber, query);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('neighbour entries (property)', () => {
  for (const [title, arb] of [
    ['all kinds of peers', worldArb()],
    ['wildcard and host peers only', worldArb({ peerKinds: ['any', 'host'] })],
  ] as const)
  it(`an allowed connection lets both ends resolve each other (or the gateway); nothing else is revealed (${title})`, () => {
    fc.assert(
      fc.property(arb, (w) => {
        const { state, ev } = compileWorld(w);
        const ps: PolicySet = { mode: 'enforce', rules: w.rules };
        const idOf = new Map(w.endpoints.map((e) => [e.key, e.identity]));
        for (const query of gridQueries(w, [['tcp', 80], ['udp', 53], ['icmp', 0], ['tcp', 8080]])) {
          const ref = evaluate(ps, w.endpoints, w.hostAddrs, query);
          if (!ref.allowed || ref.reason === 'unmanaged') continue;
          const s = ref.src.kind === 'endpoint' ? idOf.get(ref.src.endpoint.key)! : undefined;
          const d = ref.dst.kind === 'endpoint' ? idOf.get(ref.dst.endpoint.key)! : undefined;
          const m = JSON.stringify(query);
          if (s !== undefined && d !== undefined) {
            assert.ok(ev.neighAllowed(s, d), `src cannot resolve dst: ${m}`);
            assert.ok(ev.neighAllowed(d, s), `dst cannot resolve src: ${m}`);
          } else if (s !== undefined) assert.ok(ev.neighAllowed(s, ID_HOST), `src cannot resolve the gateway: ${m}`);
          else if (d !== undefined) assert.ok(ev.neighAllowed(d, ID_HOST), `dst cannot resolve the gateway: ${m}`);
        }
        // least privilege: a pair of endpoints is neighbours only if one has a policy entry naming the other
        const named = new Set<string>();
        for (const e of state.policy.values()) {
          named.add(`${e.key.epId}:${e.key.peerId}`);
          named.add(`${e.key.peerId}:${e.key.epId}`);
        }
        const hasAny = new Set([...state.policy.values()].filter((e) => e.key.peerId === ID_ANY).map((e) => e.key.epId));
        for (const n of state.neigh.values()) {
          if (n.peerId === ID_HOST) continue;
          if (n.peerId === ID_ANY) assert.ok(hasAny.has(n.epId), `(${n.epId}, ANY) without a wildcard rule`);
          else assert.ok(named.has(`${n.epId}:${n.peerId}`), `neighbours ${n.epId}, ${n.peerId} without a dependency`);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('CompiledEvaluator details', () => {
  it('resolves endpoints exactly, the host by flag, unknown addresses to the world', () => {
    const w: World = { endpoints: EPS, hostAddrs: HOST, rules: [] };
    const { ev } = compileWorld(w);
    assert.deepEqual(ev.resolve('10.0.0.3'), { identity: 301, managed: true, host: false });
    assert.deepEqual(ev.resolve('10.0.0.1'), { identity: ID_HOST, managed: false, host: true });
    assert.deepEqual(ev.resolve('1.2.3.4'), { identity: ID_WORLD, managed: false, host: false });
    assert.equal(addressOf({ endpoint: 'db' }, EPS), '10.0.0.4');
    assert.throws(() => addressOf({ endpoint: 'x' }, EPS), UnknownEndpointError);
  });
});
