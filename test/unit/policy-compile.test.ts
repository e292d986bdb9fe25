/**
 * Compilation to map entries: the exact entries for small policies, the
 * shape of every key (masked past its prefix length), the ipcache, and the
 * incremental context (its caches and its "affected endpoints" answers)
 * against a from-scratch compilation after random changes.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Rule } from '../../src/policy/model.js';
import {
  CompileContext,
  compileAll,
  compileEndpointSlice,
  createCompileContext,
  ipcacheKeyString,
  neighKeyString,
  policyKeyString,
  readCidrPeer,
  type CompileEndpoint,
  type CompileInput,
  type EndpointSlice,
  type PolicyEntry,
} from '../../src/policy/compile.js';
import { canonicalCidr4, cidr4Contains, cidr4Covers, mustParseCidr4, parseCidr4 } from '../../src/net/ip.js';
import {
  DIR_EGRESS,
  DIR_INGRESS,
  ID_ANY,
  ID_HOST,
  ID_WORLD,
  IPC_F_HOST,
  encodePolicyKey,
  type NeighKey,
} from '../../src/datapath/layout.js';
import { allocators, endpointsAndHostsArb, rulesArb, selectorArb, worldArb, LABEL_KEYS, LABEL_VALUES } from './policy-world.test.js';

const WEB: CompileEndpoint = { key: 'web', identity: 300, ipv4: '10.0.0.2', labels: { app: 'web' } };
const API: CompileEndpoint = { key: 'api', identity: 301, ipv4: '10.0.0.3', labels: { app: 'api' }, namedPorts: { http: { port: 8080, protocol: 'tcp' } } };
const DB: CompileEndpoint = { key: 'db', identity: 302, ipv4: '10.0.0.4', labels: { app: 'db' } };

const sel = (app: string) => ({ matchLabels: { app } });

function input(rules: Rule[], endpoints = [WEB, API, DB], hostAddrs = ['10.0.0.1']): CompileInput {
  const alloc = allocators();
  rules.forEach((r) => alloc.ruleNumber(r.id));
  return { endpoints, rules, hostAddrs, cidrIdentity: alloc.cidrIdentity, ruleNumber: alloc.ruleNumber };
}

/** "ep>peer dir proto dport/len #rule", sorted: readable expectations */
function show(entries: Iterable<PolicyEntry>): string[] {
  return [...entries]
    .map((e) => `${e.key.epId}>${e.key.peerId} ${e.key.direction === DIR_EGRESS ? 'eg' : 'in'} ${e.key.proto}:${e.key.dport}/${e.key.prefixlen} #${e.val.ruleId}`)
    .sort();
}
const showN = (ns: Iterable<NeighKey>) => [...ns].map((n) => `${n.epId}~${n.peerId}`).sort();

describe('compile: policy entries', () => {
  it('a policy between two endpoints: egress on one, ingress on the other, both neighbour directions', () => {
    const out = compileAll(
      input([
        { id: 'web-to-api', subject: sel('web'), direction: 'egress', peers: [{ kind: 'endpoints', selector: sel('api') }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] },
        { id: 'web-to-api', subject: sel('api'), direction: 'ingress', peers: [{ kind: 'endpoints', selector: sel('web') }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] },
      ]),
    );
    assert.deepEqual(show(out.policy.values()), ['300>301 eg 6:8080/96 #1', '301>300 in 6:8080/96 #1']);
    assert.deepEqual(showN(out.neigh.values()), ['300~301', '301~300']);
  });

  it('one side of a dependency is enough for both neighbour entries', () => {
    const out = compileAll(input([{ id: 'e', subject: sel('web'), direction: 'egress', peers: [{ kind: 'endpoints', selector: sel('db') }], ports: [] }]));
    assert.deepEqual(show(out.policy.values()), ['300>302 eg 0:0/72 #1']);
    assert.deepEqual(showN(out.neigh.values()), ['300~302', '302~300']);
  });

  it('ports: none → 72; any → 72; icmp → 80; a full range → 80; a range → its prefixes; sctp and udp', () => {
    const rules: Rule[] = [
      { id: 'a', subject: sel('web'), direction: 'egress', peers: [{ kind: 'host' }], ports: [] },
      { id: 'b', subject: sel('api'), direction: 'egress', peers: [{ kind: 'host' }], ports: [{ protocol: 'any', from: 5, to: 6 }, { protocol: 'icmp', from: 0, to: 0 }] },
      { id: 'c', subject: sel('db'), direction: 'egress', peers: [{ kind: 'host' }], ports: [{ protocol: 'udp', from: 0, to: 65535 }, { protocol: 'tcp', from: 9000, to: 9010 }, { protocol: 'sctp', from: 7, to: 7 }] },
    ];
    assert.deepEqual(show(compileAll(input(rules)).policy.values()), [
      '300>1 eg 0:0/72 #1',
      '301>1 eg 0:0/72 #2',
      '301>1 eg 1:0/80 #2',
      '302>1 eg 132:7/96 #3',
      '302>1 eg 17:0/80 #3',
      '302>1 eg 6:9000/93 #3', // 9000-9007
      '302>1 eg 6:9008/95 #3', // 9008-9009
      '302>1 eg 6:9010/96 #3',
    ]);
  });

  it('host, any and world peers: one entry each, the gateway as neighbour, (E, ANY) for the wildcard', () => {
    const out = compileAll(
      input([
        { id: 'h', subject: sel('web'), direction: 'egress', peers: [{ kind: 'host' }, { kind: 'any' }], ports: [{ protocol: 'udp', from: 53, to: 53 }] },
        { id: 'w', subject: sel('web'), direction: 'ingress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [{ protocol: 'tcp', from: 80, to: 80 }] },
      ]),
    );
    assert.deepEqual(show(out.policy.values()), [
      `300>${ID_ANY} eg 17:53/96 #1`,
      `300>${ID_HOST} eg 17:53/96 #1`,
      // 0.0.0.0/0 covers every managed endpoint (the host excepted) and the world
      '300>2 in 6:80/96 #2',
      '300>300 in 6:80/96 #2',
      '300>301 in 6:80/96 #2',
      '300>302 in 6:80/96 #2',
    ]);
    assert.deepEqual(showN(out.neigh.values()), ['300~0', '300~1', '300~300', '300~301', '300~302', '301~300', '302~300']);
  });

  it('cidr with excepts: endpoints inside, and every registered prefix inside and not excepted', () => {
    const rules: Rule[] = [
      { id: 'out', subject: sel('web'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.0/8', except: ['10.0.0.0/30'] }], ports: [] },
      { id: 'other', subject: sel('db'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.1.0.0/16' }, { kind: 'cidr', cidr: '10.0.0.0/31' }], ports: [] },
    ];
    const inp = input(rules);
    const out = compileAll(inp);
    const id = (c: string) => inp.cidrIdentity(c);
    const web = show(out.policy.values()).filter((s) => s.startsWith('300>'));
    // 10.0.0.2 (web) and 10.0.0.3 (api) are in 10.0.0.0/30: excepted; db 10.0.0.4 is in
    assert.deepEqual(web, [`300>${id('10.0.0.0/8')} eg 0:0/72 #1`, `300>${id('10.1.0.0/16')} eg 0:0/72 #1`, '300>302 eg 0:0/72 #1'].sort());
    // the ipcache has every registered prefix, the world, the host and the endpoints
    assert.deepEqual([...out.ipcache.keys()].sort(), [
      '0.0.0.0/0',
      '10.0.0.0/30',
      '10.0.0.0/31',
      '10.0.0.0/8',
      '10.0.0.1/32',
      '10.0.0.2/32',
      '10.0.0.3/32',
      '10.0.0.4/32',
      '10.1.0.0/16',
    ]);
    assert.deepEqual(out.ipcache.get('10.0.0.1/32')!.val, { identity: ID_HOST, flags: IPC_F_HOST });
    assert.deepEqual(out.ipcache.get('0.0.0.0/0')!.val, { identity: ID_WORLD, flags: 0 });
    assert.deepEqual(out.ipcache.get('10.0.0.3/32')!.val, { identity: 301, flags: 0 });
  });

  it('ipcache precedence on one /32: host over prefix over endpoint (endpoints are found by exact address first)', () => {
    const rules: Rule[] = [{ id: 'x', subject: sel('web'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.3/32' }, { kind: 'cidr', cidr: '10.0.0.1/32' }], ports: [] }];
    const inp = input(rules, [WEB, API, DB, { key: 'odd', identity: 399, ipv4: '10.0.0.1', labels: {} }]);
    const out = compileAll(inp);
    assert.equal(out.ipcache.get('10.0.0.3/32')!.val.identity, inp.cidrIdentity('10.0.0.3/32'));
    assert.equal(out.ipcache.get('10.0.0.1/32')!.val.identity, ID_HOST);
    assert.equal(out.ipcache.get('10.0.0.4/32')!.val.identity, 302);
    // the peer still resolves api by its address: both api's identity and the prefix's are allowed
    assert.deepEqual(show(out.policy.values()).filter((x) => x.startsWith('300>')), [
      `300>${inp.cidrIdentity('10.0.0.1/32')} eg 0:0/72 #1`, // shadowed by the host: inert
      `300>${inp.cidrIdentity('10.0.0.3/32')} eg 0:0/72 #1`,
      '300>301 eg 0:0/72 #1',
      '300>399 eg 0:0/72 #1',
    ].sort());
  });

  it('named ports: ingress on the endpoint itself; egress per peer endpoint; unresolvable → nothing', () => {
    const named = { protocol: 'tcp' as const, from: 0, to: 0, name: 'http' };
    const out = compileAll(
      input([
        { id: 'in', subject: {}, direction: 'ingress', peers: [{ kind: 'any' }], ports: [named] },
        { id: 'eg', subject: sel('web'), direction: 'egress', peers: [{ kind: 'any' }, { kind: 'host' }, { kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [named] },
        { id: 'udp', subject: sel('web'), direction: 'egress', peers: [{ kind: 'any' }], ports: [{ ...named, protocol: 'udp' }] },
        { id: 'any', subject: sel('db'), direction: 'egress', peers: [{ kind: 'endpoints', selector: {} }], ports: [{ ...named, protocol: 'any' }] },
      ]),
    );
    assert.deepEqual(show(out.policy.values()), ['300>301 eg 6:8080/96 #2', `301>${ID_ANY} in 6:8080/96 #1`, '302>301 eg 6:8080/96 #4']);
  });

  it('identical keys keep the lowest rule number; a rule with no peers allows nothing', () => {
    const p = { kind: 'endpoints' as const, selector: sel('api') };
    const out = compileAll(
      input([
        { id: 'first', subject: sel('web'), direction: 'egress', peers: [], ports: [] },
        { id: 'second', subject: sel('web'), direction: 'egress', peers: [p], ports: [{ protocol: 'tcp', from: 80, to: 80 }] },
        { id: 'third', subject: sel('web'), direction: 'egress', peers: [p], ports: [{ protocol: 'tcp', from: 80, to: 81 }] },
      ]),
    );
    assert.deepEqual(show(out.policy.values()), ['300>301 eg 6:80/95 #3', '300>301 eg 6:80/96 #2']);
    // the same in reverse rule order
    const out2 = compileAll(
      input([
        { id: 'third', subject: sel('web'), direction: 'egress', peers: [p], ports: [{ protocol: 'tcp', from: 80, to: 80 }] },
        { id: 'second', subject: sel('web'), direction: 'egress', peers: [p], ports: [{ protocol: 'tcp', from: 80, to: 80 }] },
      ]),
    );
    assert.deepEqual(show(out2.policy.values()), ['300>301 eg 6:80/96 #1']);
  });

  it('IPv6 and unreadable cidrs match nothing and register nothing; an unreadable except fails closed', () => {
    const out = compileAll(
      input([
        { id: 'v6', subject: sel('web'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '2001:db8::/32' }, { kind: 'cidr', cidr: 'nope' }], ports: [] },
        { id: 'bad-except', subject: sel('web'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0', except: ['10.0.0.0/33'] }], ports: [] },
        { id: 'v6-except', subject: sel('db'), direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.2/32', except: ['::/0'] }], ports: [] },
      ]),
    );
    // db → web by its address (and the prefix's own identity, shadowed in the ipcache by web's /32: inert)
    assert.deepEqual(show(out.policy.values()), ['302>100000 eg 0:0/72 #3', '302>300 eg 0:0/72 #3']);
    assert.deepEqual([...out.ipcache.keys()].filter((k) => k !== '0.0.0.0/0' && !k.endsWith('/32')), []);
    assert.equal(readCidrPeer({ cidr: '10.0.0.0/8', except: ['x'] }), null);
  });

  it('every key is masked past its prefix length and fits its fields (property)', () => {
    fc.assert(
      fc.property(worldArb(), (w) => {
        const out = compileAll({ ...w, ...allocators() });
        for (const [k, e] of out.policy) {
          assert.equal(k, policyKeyString(e.key));
          const b = encodePolicyKey(e.key);
          assert.ok(e.key.prefixlen >= 72 && e.key.prefixlen <= 96);
          for (let bit = 32 + e.key.prefixlen; bit < 128; bit++) assert.equal((b[bit >> 3]! >> (7 - (bit & 7))) & 1, 0, `bit ${bit} of ${k}`);
          assert.ok(e.key.direction === DIR_EGRESS || e.key.direction === DIR_INGRESS);
          assert.ok(e.val.ruleId >= 1);
        }
        for (const [k, n] of out.neigh) assert.equal(k, neighKeyString(n));
        for (const [k, e] of out.ipcache) {
          assert.equal(k, ipcacheKeyString(e.key));
          assert.equal(canonicalCidr4(k), k, 'ipcache prefixes are canonical');
        }
      }),
      { numRuns: 300 },
    );
  });

  it('is deterministic: the same input gives the same entries in the same order', () => {
    fc.assert(
      fc.property(worldArb(), (w) => {
        const a = compileAll({ ...w, ...allocators() });
        const b = compileAll({ ...w, ...allocators() });
        assert.deepEqual([...a.policy], [...b.policy]);
        assert.deepEqual([...a.neigh], [...b.neigh]);
        assert.deepEqual([...a.ipcache], [...b.ipcache]);
      }),
      { numRuns: 100 },
    );
  });
});

describe('compile: CIDR helpers', () => {
  it('parses strictly, clears host bits, compares', () => {
    assert.deepEqual(parseCidr4('10.1.2.3/8'), { base: 0x0a000000, prefixLen: 8, addr: '10.0.0.0' });
    assert.deepEqual(mustParseCidr4('10.1.2.3'), { base: 0x0a010203, prefixLen: 32, addr: '10.1.2.3' });
    assert.equal(parseCidr4('0.0.0.0/0')!.base, 0);
    assert.equal(parseCidr4('255.255.255.255/32')!.base, 0xffffffff);
    for (const bad of ['10.0.0/8', '10.0.0.256/8', '10.0.0.01/8', '10.0.0.0/33', '10.0.0.0/08', '::/0', '', '10.0.0.0/']) assert.equal(parseCidr4(bad), undefined, bad);
    assert.throws(() => mustParseCidr4('nope'));
    assert.equal(cidr4Contains('10.0.0.0/8', '10.255.0.1'), true);
    assert.equal(cidr4Contains('10.0.0.0/8', '11.0.0.0'), false);
    assert.equal(cidr4Contains('0.0.0.0/0', '255.255.255.255'), true);
    assert.equal(cidr4Contains('nope', '1.1.1.1'), false);
    assert.equal(cidr4Covers(mustParseCidr4('10.0.0.0/8'), mustParseCidr4('10.1.0.0/16')), true);
    assert.equal(cidr4Covers(mustParseCidr4('10.1.0.0/16'), mustParseCidr4('10.0.0.0/8')), false);
    assert.equal(cidr4Covers(mustParseCidr4('128.0.0.0/1'), mustParseCidr4('200.0.0.0/8')), true);
  });
});

// ------------------------------------------------------------ incremental

type Mutation =
  | { kind: 'rules'; rules: Rule[] }
  | { kind: 'add-rule'; rule: Rule }
  | { kind: 'drop-rule'; index: number }
  | { kind: 'upsert'; ep: CompileEndpoint }
  | { kind: 'relabel'; index: number; labels: Record<string, string> }
  | { kind: 'remove'; index: number };

const labelsArb = fc.dictionary(fc.constantFrom(...LABEL_KEYS), fc.constantFrom(...LABEL_VALUES), { maxKeys: 3 }).map((d) => ({ ...d }));

function sliceMap(s: EndpointSlice): { policy: Map<string, PolicyEntry>; neigh: Set<string> } {
  return {
    policy: new Map(s.policy.map((e) => [policyKeyString(e.key), e])),
    neigh: new Set(s.neigh.map(neighKeyString)),
  };
}

describe('compile: incremental context', () => {
  for (const peerKinds of [undefined, ['any', 'cidr'] as const])
  it(`after random changes, recompiling only the affected endpoints gives what a full compilation gives (property${peerKinds ? `, peers ${peerKinds.join('/')}` : ''})`, () => {
    let ruleSeq = 0;
    const freshRules = (rs: Rule[]) => rs.map((r) => ({ ...r, id: `q${ruleSeq++}` }));
    const mutationArb = fc.oneof(
      rulesArb(6, { maxRules: 4, ...(peerKinds ? { peerKinds } : {}) }).map((rules): Mutation => ({ kind: 'rules', rules })),
      rulesArb(6, { maxRules: 1, ...(peerKinds ? { peerKinds } : {}) }).filter((r) => r.length === 1).map((r): Mutation => ({ kind: 'add-rule', rule: r[0]! })),
      fc.nat().map((index): Mutation => ({ kind: 'drop-rule', index })),
      fc.record({ ip: fc.constantFrom('10.0.0.2', '10.0.0.9', '10.1.0.1', '10.0.1.7', '192.168.0.1', '10.0.0.4'), labels: labelsArb, named: fc.boolean(), id: fc.nat(3) }).map(
        ({ ip, labels, named, id }): Mutation => ({
          kind: 'upsert',
          ep: { key: `n${id}`, identity: 5000 + id, ipv4: ip, labels: { ...labels, 'bastion.io/name': `n${id}` }, ...(named ? { namedPorts: { http: { port: 80, protocol: 'tcp' as const } } } : {}) },
        }),
      ),
      fc.record({ index: fc.nat(), labels: labelsArb }).map(({ index, labels }): Mutation => ({ kind: 'relabel', index, labels })),
      fc.nat().map((index): Mutation => ({ kind: 'remove', index })),
    );
    fc.assert(
      fc.property(worldArb({ maxEndpoints: 5, maxRules: 6, ...(peerKinds ? { peerKinds } : {}) }), fc.array(mutationArb, { minLength: 1, maxLength: 8 }), (w0, muts) => {
        const alloc = allocators();
        let endpoints = [...w0.endpoints];
        let rules = freshRules(w0.rules);
        const ctx = createCompileContext({ endpoints, rules, hostAddrs: w0.hostAddrs, ...alloc });
        const slices = new Map(endpoints.map((e) => [e.key, sliceMap(compileEndpointSlice(e, ctx))]));
        for (const m of muts) {
          let affected: Set<string>;
          switch (m.kind) {
            case 'rules':
              rules = freshRules(m.rules);
              affected = ctx.setRules(rules);
              break;
            case 'add-rule': {
              const added = freshRules([m.rule]);
              rules = [...rules, ...added];
              affected = m.rule.direction === 'egress' ? ctx.addRules(added) : ctx.setRules(rules);
              break;
            }
            case 'drop-rule': {
              if (rules.length === 0) continue;
              const dropped = rules[m.index % rules.length]!;
              rules = rules.filter((r) => r !== dropped);
              // by an equal copy, to remove by value
              affected = m.index % 2 ? ctx.removeRules([{ ...dropped }]) : ctx.setRules([...rules]);
              break;
            }
            case 'upsert': {
              // keep addresses unique: drop whoever has the address (another key) first
              const clash = endpoints.find((e) => e.ipv4 === m.ep.ipv4 && e.key !== m.ep.key);
              affected = new Set();
              if (clash) {
                for (const k of ctx.removeEndpoint(clash.key)) affected.add(k);
                endpoints = endpoints.filter((e) => e !== clash);
                slices.delete(clash.key);
              }
              for (const k of ctx.upsertEndpoint(m.ep)) affected.add(k);
              endpoints = [...endpoints.filter((e) => e.key !== m.ep.key), m.ep];
              break;
            }
            case 'relabel': {
              if (endpoints.length === 0) continue;
              const old = endpoints[m.index % endpoints.length]!;
              const ep = { ...old, labels: { ...m.labels, 'bastion.io/name': old.key } };
              affected = ctx.upsertEndpoint(ep);
              endpoints = endpoints.map((e) => (e === old ? ep : e));
              break;
            }
            case 'remove': {
              if (endpoints.length === 0) continue;
              const old = endpoints[m.index % endpoints.length]!;
              affected = ctx.removeEndpoint(old.key);
              assert.ok(!affected.has(old.key));
              endpoints = endpoints.filter((e) => e !== old);
              slices.delete(old.key);
              break;
            }
          }
          for (const k of affected) {
            const ep = endpoints.find((e) => e.key === k);
            assert.ok(ep, `affected ${k} is not an endpoint`);
            slices.set(k, sliceMap(compileEndpointSlice(ep, ctx)));
          }
          // what a from-scratch compilation wants, slice by slice
          const fresh = createCompileContext({ endpoints, rules, hostAddrs: w0.hostAddrs, ...alloc });
          assert.deepEqual([...slices.keys()].sort(), endpoints.map((e) => e.key).sort());
          for (const ep of endpoints) {
            const want = sliceMap(compileEndpointSlice(ep, fresh));
            const got = slices.get(ep.key)!;
            assert.deepEqual(new Map([...got.policy].sort()), new Map([...want.policy].sort()), `policy of ${ep.key} after ${m.kind}`);
            assert.deepEqual([...got.neigh].sort(), [...want.neigh].sort(), `neighbours of ${ep.key} after ${m.kind}`);
          }
          assert.deepEqual(new Map([...ctx.ipcacheEntries()].sort()), new Map([...fresh.ipcacheEntries()].sort()));
          assert.deepEqual(ctx.registeredPrefixes(), fresh.registeredPrefixes());
          assert.deepEqual(ctx.rules(), rules);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a large rule list set at once (its selectors\' rule lists compacted after) then changed gives what a full compilation gives', () => {
    const eps: CompileEndpoint[] = Array.from({ length: 60 }, (_, i) => ({ key: `e${i}`, identity: 400 + i, ipv4: `10.2.0.${i + 1}`, labels: { app: `a${i % 30}` } }));
    // 1,200 rules over 30 selectors: 40 lists per selector side (past the small-list size for some, under it for others)
    const rule = (i: number): Rule => ({
      id: `big${i}`,
      subject: { matchLabels: { app: `a${i % 30}` } },
      direction: i % 2 ? 'ingress' : 'egress',
      peers: i % 7 === 0 ? [{ kind: 'cidr', cidr: `10.3.${i % 5}.0/24` }] : [{ kind: 'endpoints', selector: { matchLabels: { app: `a${(i * 7) % 30}` } } }],
      ports: [{ protocol: 'tcp', from: 1000 + (i % 50), to: 1000 + (i % 50) }],
    });
    let rules = Array.from({ length: 1200 }, (_, i) => rule(i));
    const alloc = allocators();
    const ctx = createCompileContext({ endpoints: eps, rules: [], hostAddrs: [], ...alloc });
    ctx.setRules(rules);
    let endpoints = eps;
    const check = (what: string) => {
      const fresh = createCompileContext({ endpoints, rules, hostAddrs: [], ...alloc });
      for (const ep of endpoints) {
        const got = sliceMap(compileEndpointSlice(ep, ctx));
        const want = sliceMap(compileEndpointSlice(ep, fresh));
        assert.deepEqual(new Map([...got.policy].sort()), new Map([...want.policy].sort()), `policy of ${ep.key} after ${what}`);
        assert.deepEqual([...got.neigh].sort(), [...want.neigh].sort(), `neighbours of ${ep.key} after ${what}`);
      }
      assert.deepEqual(ctx.rules(), rules);
    };
    check('the first set');
    const more = [rule(5000), rule(5001), rule(5007)];
    ctx.addRules(more);
    rules = [...rules, ...more];
    check('adding rules');
    const gone = [rules[3]!, rules[14]!, rules[700]!];
    ctx.removeRules(gone.map((r) => ({ ...r })));
    rules = rules.filter((r) => !gone.includes(r));
    check('removing rules');
    const ep: CompileEndpoint = { key: 'late', identity: 999, ipv4: '10.2.1.1', labels: { app: 'a4' } };
    ctx.upsertEndpoint(ep);
    endpoints = [...endpoints, ep];
    check('a new endpoint');
    rules = [...rules.slice(0, 600), ...Array.from({ length: 1100 }, (_, i) => rule(2000 + i))];
    ctx.setRules(rules);
    check('a second large set');
  });

  it('rules are filed by number: a number out of range is refused before anything changes', () => {
    const eps: CompileEndpoint[] = [{ key: 'a', identity: 400, ipv4: '10.2.0.1', labels: { app: 'a' } }];
    const numbers = new Map<string, number>([['ok', 1], ['huge', 2 ** 30], ['zero', 0]]);
    const ctx = createCompileContext({ endpoints: eps, rules: [], hostAddrs: [], cidrIdentity: () => 100000, ruleNumber: (id) => numbers.get(id)! });
    const rule = (id: string): Rule => ({ id, subject: { matchLabels: { app: 'a' } }, direction: 'egress', peers: [{ kind: 'any' }], ports: [] });
    ctx.setRules([rule('ok')]);
    const before = sliceMap(compileEndpointSlice(eps[0]!, ctx));
    assert.throws(() => ctx.addRules([rule('huge')]), /rule huge: rule number 1073741824 is out of range/);
    assert.throws(() => ctx.addRules([rule('ok'), rule('zero')]), /rule zero: rule number 0 is out of range/);
    assert.deepEqual(ctx.rules(), [rule('ok')]);
    assert.deepEqual(sliceMap(compileEndpointSlice(eps[0]!, ctx)), before);
  });

  it('affected sets are tight: adding a rule touches exactly its subjects; an unrelated endpoint touches only itself', () => {
    const eps: CompileEndpoint[] = Array.from({ length: 50 }, (_, i) => ({
      key: `e${i}`,
      identity: 300 + i,
      ipv4: `10.0.${i >> 8}.${i & 255}`,
      labels: { app: `a${i % 10}` },
    }));
    const base: Rule[] = eps.slice(0, 10).map((e, i) => ({
      id: `r${i}`,
      subject: { matchLabels: { app: `a${i}` } },
      direction: 'egress' as const,
      peers: [{ kind: 'endpoints' as const, selector: { matchLabels: { app: `a${(i + 1) % 10}` } } }],
      ports: [{ protocol: 'tcp' as const, from: 80, to: 80 }],
    }));
    const ctx = createCompileContext({ endpoints: eps, rules: base, hostAddrs: [], ...allocators() });
    const added: Rule = { id: 'new', subject: { matchLabels: { app: 'a3' } }, direction: 'ingress', peers: [{ kind: 'host' }], ports: [] };
    assert.deepEqual([...ctx.setRules([...base, added])].sort(), ['e13', 'e23', 'e3', 'e33', 'e43']);
    assert.deepEqual([...ctx.setRules([...base, added])], [], 'the same rules again: nothing');
    assert.deepEqual([...ctx.setRules(base)].sort(), ['e13', 'e23', 'e3', 'e33', 'e43']);
    // a new endpoint with labels no rule mentions
    assert.deepEqual([...ctx.upsertEndpoint({ key: 'x', identity: 999, ipv4: '10.9.9.9', labels: { app: 'zzz' } })], ['x']);
    // a new a5 endpoint: itself, and the subjects of the rule whose peer is a5 (the a4s)
    assert.deepEqual([...ctx.upsertEndpoint({ key: 'y', identity: 998, ipv4: '10.9.9.8', labels: { app: 'a5' } })].sort(), ['e14', 'e24', 'e34', 'e4', 'e44', 'y']);
  });

  it('rules are kept as their parts: a reload of equal copies changes nothing, rules() gives each rule its own parts back', () => {
    const eps: CompileEndpoint[] = Array.from({ length: 6 }, (_, i) => ({ key: `e${i}`, identity: 300 + i, ipv4: `10.0.0.${i + 1}`, labels: { app: `a${i % 3}`, tier: 't' } }));
    // r1 and r2 have one subject written two ways (one selector state in the compiler)
    const r1: Rule = { id: 'r1', subject: { matchLabels: { app: 'a0', tier: 't' } }, direction: 'egress', peers: [{ kind: 'endpoints', selector: sel('a1') }], ports: [{ protocol: 'tcp', from: 80, to: 80 }] };
    const r2: Rule = { id: 'r2', subject: { matchLabels: { tier: 't', app: 'a0' } }, direction: 'ingress', peers: [{ kind: 'cidr', cidr: '10.9.0.0/16' }], ports: [] };
    const r3: Rule = { id: 'r3', subject: sel('a2'), direction: 'egress', peers: [{ kind: 'host' }], ports: [{ protocol: 'udp', from: 53, to: 53, name: undefined }] };
    const rules = [r1, r2, r3];
    const ctx = createCompileContext({ endpoints: eps, rules, hostAddrs: [], ...allocators() });
    const got = ctx.rules();
    assert.deepEqual(got, rules);
    got.forEach((r, i) => {
      assert.equal(r.subject, rules[i]!.subject, `rule ${r.id}: its own subject object`);
      assert.equal(r.peers, rules[i]!.peers);
      assert.equal(r.ports, rules[i]!.ports);
    });
    // the config read again: equal rules in new objects
    const copies = structuredClone(rules);
    assert.deepEqual([...ctx.setRules(copies)], [], 'equal copies: nothing to recompile');
    // one port changed: the subjects of that rule only
    const changed = structuredClone(rules);
    changed[2]!.ports = [{ protocol: 'udp', from: 54, to: 54 }];
    assert.deepEqual([...ctx.setRules(changed)].sort(), ['e2', 'e5']);
    // an equal copy removes the rule it equals
    assert.deepEqual([...ctx.removeRules([structuredClone(r2)])].sort(), ['e0', 'e3']);
    assert.deepEqual(ctx.rules(), [r1, changed[2]]);
    assert.deepEqual(ctx.takeGoneRuleIds(), ['r2']);
  });

  it('a slice for an endpoint the context does not know (or knows with other labels) still uses the right rules', () => {
    const rules: Rule[] = [{ id: 'r', subject: sel('web'), direction: 'egress', peers: [{ kind: 'host' }], ports: [] }];
    const ctx = createCompileContext(input(rules));
    assert.equal(compileEndpointSlice({ ...DB, labels: { app: 'web' } }, ctx).policy.length, 1);
    assert.equal(compileEndpointSlice({ key: 'other', identity: 9, ipv4: '1.1.1.1', labels: { app: 'web' } }, ctx).policy.length, 1);
    assert.equal(compileEndpointSlice({ ...WEB, labels: {} }, ctx).policy.length, 0);
    assert.ok(ctx instanceof CompileContext);
    assert.deepEqual(ctx.rulesFor(WEB), rules);
    assert.deepEqual(ctx.select(sel('api')), ['api']);
  });

  it('selector index answers equal a scan (property)', () => {
    fc.assert(
      fc.property(endpointsAndHostsArb({ maxEndpoints: 8 }), fc.array(selectorArb, { maxLength: 5 }), ({ endpoints }, sels) => {
        const ctx = createCompileContext({ endpoints, rules: [], hostAddrs: [], ...allocators() });
        for (const s of sels) {
          const want = endpoints.filter((e) => Object.entries(s.matchLabels ?? {}).every(([k, v]) => e.labels[k] === v)).map((e) => e.key);
          const got = ctx.select(s);
          for (const k of want) if (!(s.matchExpressions ?? []).length) assert.ok(got.includes(k));
          for (const k of got) assert.ok(want.includes(k));
        }
      }),
      { numRuns: 200 },
    );
  });
});
