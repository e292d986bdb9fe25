/**
 * Diffing entry sets: the diff turns current into desired, and its order is
 * safe at every single step (checked by applying the operations one at a
 * time to a simulated datapath and evaluating connections in between).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Rule } from '../../src/policy/model.js';
import { compileAll, type CompileEndpoint, type CompiledState } from '../../src/policy/compile.js';
import { CompiledEvaluator, type L4Protocol } from '../../src/policy/evaluate.js';
import { applyOps, diffEntries, rekeyedIdentities, sameValue, type DiffOp, type EndpointAddrEntry, type EntrySets, MAP_KINDS } from '../../src/policy/diff.js';
import type { EndpointInfo } from '../../src/datapath/layout.js';
import { allocators, endpointsAndHostsArb, rulesArb } from './policy-world.test.js';

const info = (e: CompileEndpoint, i: number): EndpointInfo => ({
  identity: e.identity,
  ifindex: 100 + i,
  ipv4: e.ipv4,
  flags: 0,
  mac: '02:00:00:00:00:01',
  gwMac: '02:00:00:00:00:fe',
});

interface State {
  endpoints: CompileEndpoint[];
  hostAddrs: string[];
  rules: Rule[];
}

function entrySets(s: State, alloc: ReturnType<typeof allocators>): { sets: EntrySets; compiled: CompiledState } {
  const compiled = compileAll({ ...s, cidrIdentity: alloc.cidrIdentity, ruleNumber: alloc.ruleNumber });
  const byIp = new Map<string, EndpointAddrEntry>(s.endpoints.map((e, i) => [e.ipv4, { key: e.ipv4, val: info(e, i) }]));
  return { sets: { policy: compiled.policy, neigh: compiled.neigh, ipcache: compiled.ipcache, endpointsByIp: byIp }, compiled };
}

function simulator(sets: EntrySets): CompiledEvaluator {
  return new CompiledEvaluator({
    policy: sets.policy?.values() ?? [],
    ipcache: sets.ipcache?.values() ?? [],
    neigh: sets.neigh?.values() ?? [],
    endpointsByIp: new Map([...(sets.endpointsByIp?.values() ?? [])].map((e) => [e.key, e.val.identity])),
  });
}

function apply(ev: CompiledEvaluator, op: DiffOp): void {
  const up = op.op === 'upsert';
  switch (op.map) {
    case 'policy':
      return up ? ev.setPolicy(op.entry) : ev.deletePolicy(op.entry);
    case 'ipcache':
      return up ? ev.setIpcache(op.entry) : ev.deleteIpcache(op.entry);
    case 'neigh':
      return up ? ev.setNeigh(op.entry) : ev.deleteNeigh(op.entry);
    case 'endpointsByIp':
      return up ? ev.setEndpointAddr(op.entry.key, op.entry.val.identity) : ev.deleteEndpointAddr(op.entry.key);
    default:
      return;
  }
}

const PROBES: ReadonlyArray<[L4Protocol, number]> = [
  ['tcp', 80],
  ['udp', 53],
  ['icmp', 0],
];

/** Two states over a pool of endpoints: some leave, some arrive, an address may pass to a new endpoint; rules change a little or a lot. */
const transitionArb = endpointsAndHostsArb({ maxEndpoints: 5 }).chain(({ endpoints, hostAddrs }) =>
  fc
    .record({
      keepOld: fc.array(fc.boolean(), { minLength: endpoints.length, maxLength: endpoints.length }),
      keepNew: fc.array(fc.boolean(), { minLength: endpoints.length, maxLength: endpoints.length }),
      reuse: fc.boolean(),
      relabel: fc.option(fc.nat(), { nil: undefined }),
      hostsOld: fc.subarray(hostAddrs),
      hostsNew: fc.subarray(hostAddrs),
      oldRules: rulesArb(Math.max(1, endpoints.length), { maxRules: 6, idPrefix: 'o' }),
      newRules: rulesArb(Math.max(1, endpoints.length), { maxRules: 6, idPrefix: 'n' }),
      edit: fc.constantFrom('independent', 'add', 'drop', 'same'),
    })
    .map((r) => {
      const oldEps = endpoints.filter((_, i) => r.keepOld[i]);
      let newEps = endpoints.filter((_, i) => r.keepNew[i]);
      // an address of a departed endpoint taken by a new one (new key, new identity)
      const gone = oldEps.find((e) => !newEps.includes(e));
      if (r.reuse && gone) newEps = [...newEps, { ...gone, key: `${gone.key}-2`, identity: gone.identity + 1000, labels: { ...gone.labels, 'bastion.io/name': `${gone.key}-2` } }];
      if (r.relabel !== undefined && newEps.length) {
        const i = r.relabel % newEps.length;
        newEps = newEps.map((e, j) => (j === i ? { ...e, labels: { 'bastion.io/name': e.key } } : e));
      }
      let newRules: Rule[];
      if (r.edit === 'independent') newRules = r.newRules;
      else if (r.edit === 'add') newRules = [...r.oldRules, ...r.newRules.slice(0, 1)];
      else if (r.edit === 'drop') newRules = r.oldRules.slice(1);
      else newRules = r.oldRules;
      const oldState: State = { endpoints: oldEps, hostAddrs: r.hostsOld, rules: r.oldRules };
      const newState: State = { endpoints: newEps, hostAddrs: r.hostsNew, rules: newRules };
      return { oldState, newState };
    }),
);

function parties(a: State, b: State): string[] {
  const ips = new Set([...a.endpoints.map((e) => e.ipv4), ...b.endpoints.map((e) => e.ipv4), ...a.hostAddrs, ...b.hostAddrs]);
  for (const ip of ['10.0.0.1', '10.0.0.3', '10.1.2.3', '8.8.8.8']) if (ips.size < 9) ips.add(ip);
  return [...ips];
}

/**
 * Applies `ops` one by one; after each, every probe must satisfy the safety
 * invariants of diff.ts, for each direction's check on its own (a check that
 * a state does not make counts as allowing):
 *   now ⇒ old ∨ new                                  (no transient allowance)
 *   old ∧ new ⇒ now, between stable addresses         (no transient denial)
 * An address is stable when it is the same managed endpoint (or unmanaged)
 * in both states and resolves to identities that are not rekeyed: a
 * container that comes or goes has no connections to keep (its stack drops
 * everything until it is provisioned, or once it is removed).
 * Returns the first violation.
 */
function walk(oldSets: EntrySets, newSets: EntrySets, ops: readonly DiffOp[], ips: string[]): string | undefined {
  const before = simulator(oldSets);
  const after = simulator(newSets);
  const now = simulator(oldSets);
  const rekeyed = rekeyedIdentities(oldSets, newSets);
  const stable = new Set(
    ips.filter((ip) => {
      const a = before.resolve(ip);
      const b = after.resolve(ip);
      return a.managed === b.managed && (!a.managed || a.identity === b.identity) && !rekeyed.has(a.identity) && !rekeyed.has(b.identity);
    }),
  );
  type Dirs = [boolean, boolean, boolean];
  const dirs = (ev: CompiledEvaluator, srcIp: string, dstIp: string, protocol: L4Protocol, port: number): Dirs => {
    const v = ev.evaluate({ srcIp, dstIp, protocol, port });
    return [!v.egressChecked || v.egressRuleId !== 0, !v.ingressChecked || v.ingressRuleId !== 0, v.allowed];
  };
  const probes: Array<{ s: string; d: string; p: L4Protocol; port: number; o: Dirs; n: Dirs; stable: boolean }> = [];
  for (const s of ips)
    for (const d of ips)
      for (const [p, port] of PROBES)
        probes.push({ s, d, p, port, o: dirs(before, s, d, p, port), n: dirs(after, s, d, p, port), stable: stable.has(s) && stable.has(d) });
  const names = ['egress', 'ingress', 'verdict'];
  for (let i = 0; i < ops.length; i++) {
    apply(now, ops[i]!);
    for (const q of probes) {
      const m = dirs(now, q.s, q.d, q.p, q.port);
      for (let k = 0; k < 3; k++) {
        const where = () => `${names[k]} of ${q.s} → ${q.d} ${q.p}/${q.port} after op ${i} (${ops[i]!.op} ${ops[i]!.map} ${ops[i]!.key})`;
        if (k < 2 && m[k] && !q.o[k] && !q.n[k]) return `transient allowance: ${where()}`;
        if (q.stable && q.o[k] && q.n[k] && !m[k]) return `transient denial: ${where()}`;
      }
    }
  }
  return undefined;
}

describe('diffEntries', () => {
  it('applying the diff to current gives desired; nothing unchanged is written; each key once (property)', () => {
    fc.assert(
      fc.property(transitionArb, ({ oldState, newState }) => {
        const alloc = allocators();
        const cur = entrySets(oldState, alloc).sets;
        const want = entrySets(newState, alloc).sets;
        const d = diffEntries(cur, want);
        const got = applyOps(cur, d.ops);
        for (const m of MAP_KINDS) {
          if (!want[m]) continue;
          const sorted = (x: ReadonlyMap<string, unknown>) => new Map([...x].sort(([a], [b]) => (a < b ? -1 : 1)));
          assert.deepEqual(sorted(got[m]!), sorted(want[m]!), m);
        }
        const seen = new Set<string>();
        for (const op of d.ops) {
          const k = `${op.map}|${op.key}`;
          assert.ok(!seen.has(k), `${k} twice`);
          seen.add(k);
          const old = (cur[op.map] as Map<string, unknown> | undefined)?.get(op.key);
          if (op.op === 'upsert' && old !== undefined) assert.ok(!sameValue(old, op.entry) || op.map === 'neigh', `${k} rewritten unchanged`);
          if (op.op === 'delete') assert.ok(!(want[op.map] as Map<string, unknown>).has(op.key));
        }
        assert.equal(diffEntries(want, want).ops.length, 0);
        // per-map view = the ops
        const n = Object.values(d.maps).reduce((a, x) => a + x.upserts.length + x.deletes.length, 0);
        assert.equal(n, d.ops.length);
      }),
      { numRuns: 300 },
    );
  });

  it('leaves maps absent from desired alone, and creates maps absent from current', () => {
    const e = { key: { prefixlen: 8, addr: '10.0.0.0' }, val: { identity: 300, flags: 0 } };
    const d = diffEntries({ ipcache: new Map([['10.0.0.0/8', e]]) }, {});
    assert.deepEqual(d.ops, []);
    const d2 = diffEntries({}, { ipcache: new Map([['10.0.0.0/8', e]]) });
    assert.deepEqual(d2.ops, [{ op: 'upsert', map: 'ipcache', key: '10.0.0.0/8', entry: e }]);
    assert.deepEqual(applyOps({}, d2.ops).ipcache!.get('10.0.0.0/8'), e);
  });

  it('orders: inert policy, resolution (prefixes longest first, then endpoints), live policy, endpoints; then the mirror for deletes', () => {
    const alloc = allocators();
    const web: CompileEndpoint = { key: 'web', identity: 300, ipv4: '10.0.0.2', labels: { app: 'web' } };
    const api: CompileEndpoint = { key: 'api', identity: 301, ipv4: '10.0.0.3', labels: { app: 'api' } };
    const oldState: State = {
      endpoints: [web],
      hostAddrs: [],
      rules: [{ id: 'a', subject: {}, direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.0/8' }], ports: [] }],
    };
    const newState: State = {
      endpoints: [web, api],
      hostAddrs: [],
      rules: [{ id: 'b', subject: {}, direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }, { kind: 'cidr', cidr: '10.2.0.0/16' }], ports: [] }],
    };
    const cur = entrySets(oldState, alloc).sets;
    const want = entrySets(newState, alloc).sets;
    const ops = diffEntries(cur, want).ops.map((o) => `${o.op} ${o.map} ${o.key}`);
    const idx = (s: string) => {
      const i = ops.indexOf(s);
      assert.ok(i >= 0, `${s} missing from ${ops.join('; ')}`);
      return i;
    };
    const id16 = alloc.cidrIdentity('10.2.0.0/16');
    // the new endpoint's policy and the new prefix's policy come before they can resolve
    assert.ok(idx(`upsert policy 301:${id16}:0:0:0/72`) < idx('upsert ipcache 10.2.0.0/16'));
    assert.ok(idx(`upsert policy 300:301:0:0:0/72`) < idx('upsert ipcache 10.0.0.3/32'));
    assert.ok(idx('upsert endpointsByIp 10.0.0.3') < idx('upsert ipcache 10.0.0.3/32'), 'the exact address before the ipcache');
    assert.ok(idx('upsert ipcache 10.1.0.0/16') < idx('upsert endpointsByIp 10.0.0.3'), 'prefixes before endpoints');
    // a rule-number change of a live pair comes after the resolution changes
    assert.ok(idx('upsert ipcache 10.1.0.0/16') < idx(`upsert policy 300:${alloc.cidrIdentity('10.0.0.0/8')}:0:0:0/72`));
    // every upsert before every delete
    const lastUp = Math.max(...ops.map((o, i) => (o.startsWith('upsert') ? i : -1)));
    const firstDel = ops.findIndex((o) => o.startsWith('delete'));
    assert.ok(firstDel === -1 || lastUp < firstDel);
  });

  it('every intermediate state allows what both states allow, and no check allows what neither allows (property)', () => {
    fc.assert(
      fc.property(transitionArb, ({ oldState, newState }) => {
        const alloc = allocators();
        const cur = entrySets(oldState, alloc).sets;
        const want = entrySets(newState, alloc).sets;
        const v = walk(cur, want, diffEntries(cur, want).ops, parties(oldState, newState));
        assert.equal(v, undefined, v);
      }),
      { numRuns: Number(process.env.POLICY_RUNS ?? 200) },
    );
  });

  it('the property is not vacuous: naive orders violate it, the real order does not', () => {
    const e0: CompileEndpoint = { key: 'e0', identity: 300, ipv4: '10.0.0.2', labels: { app: 'a' } };
    const e1: CompileEndpoint = { key: 'e1', identity: 301, ipv4: '10.0.0.3', labels: { app: 'b' } };
    const cases: Array<{ name: string; reorder: (ops: DiffOp[]) => DiffOp[]; old: State; new: State; violation: RegExp }> = [
      {
        // a port becomes a range: the old /96 entry goes before the new /95 one is there
        name: 'deletes first',
        reorder: (ops) => [...ops.filter((o) => o.op === 'delete'), ...ops.filter((o) => o.op === 'upsert')],
        old: { endpoints: [e0], hostAddrs: [], rules: [{ id: 'r', subject: {}, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [{ protocol: 'tcp', from: 80, to: 80 }] }] },
        new: { endpoints: [e0], hostAddrs: [], rules: [{ id: 'r', subject: {}, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [{ protocol: 'tcp', from: 80, to: 81 }] }] },
        violation: /transient denial/,
      },
      {
        // a new prefix (an except elsewhere) captures addresses before its policy entries exist
        name: 'addresses first',
        reorder: (ops) => [...ops.filter((o) => o.map === 'ipcache' || o.map === 'endpointsByIp'), ...ops.filter((o) => o.map !== 'ipcache' && o.map !== 'endpointsByIp')],
        old: { endpoints: [e0, e1], hostAddrs: [], rules: [{ id: 'r', subject: { matchLabels: { app: 'a' } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [] }] },
        new: {
          endpoints: [e0, e1],
          hostAddrs: [],
          rules: [
            { id: 'r', subject: { matchLabels: { app: 'a' } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0' }], ports: [] },
            { id: 's', subject: { matchLabels: { app: 'b' } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0', except: ['10.1.0.0/16'] }], ports: [] },
          ],
        },
        violation: /transient denial: egress of 10\.0\.0\.2 → 10\.1\.2\.3/,
      },
      {
        // the host loses an address: a new host rule must not apply to it while it is still the host
        name: 'policy first',
        reorder: (ops) => [...ops.filter((o) => o.map === 'policy' && o.op === 'upsert'), ...ops.filter((o) => !(o.map === 'policy' && o.op === 'upsert'))],
        old: { endpoints: [e0], hostAddrs: ['10.0.0.1', '8.8.8.8'], rules: [] },
        new: { endpoints: [e0], hostAddrs: ['10.0.0.1'], rules: [{ id: 'r', subject: {}, direction: 'egress', peers: [{ kind: 'host' }], ports: [] }] },
        violation: /transient allowance: egress of 10\.0\.0\.2 → 8\.8\.8\.8/,
      },
    ];
    for (const c of cases) {
      const alloc = allocators();
      const cur = entrySets(c.old, alloc).sets;
      const want = entrySets(c.new, alloc).sets;
      const ops = diffEntries(cur, want).ops;
      const ips = [...parties(c.old, c.new), '10.1.2.3'];
      assert.equal(walk(cur, want, ops, ips), undefined, `${c.name}: the real order`);
      assert.match(walk(cur, want, c.reorder(ops), ips) ?? 'no violation', c.violation, c.name);
    }
  });
});
