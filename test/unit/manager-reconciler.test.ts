/**
 * The daemon's update path, walked for real: the Manager with the recording
 * datapath port (every map write in order), not a twin of it. Random
 * sequences of changes (whole-policy replacements as a config reload makes
 * them, runtime policy additions and deletions, containers arriving and
 * leaving, an address passing to a new container, labels changing, a
 * container restarting on a new interface, host addresses changing, CIDR
 * rules with excepts, and in cluster mode other nodes' endpoints coming,
 * changing labels or address, and going, and other nodes' underlay
 * addresses); after every single write of every change, each
 * connection check is judged over what the maps hold at that moment, with
 * the evaluator that reads maps as the datapath does (CompiledEvaluator):
 *   allowed before and after the change ⇒ allowed now (no transient denial)
 *   allowed now ⇒ allowed before or after        (no transient allowance)
 * as in test/unit/policy-diff.test.ts (same probes, same notion of a stable
 * address). After every change the maps hold exactly what the manager wants.
 *
 * Then what happens when a write fails: the state is dirty, the failure is
 * loud, and the resync with back-off brings the maps back to what is wanted.
 * And drift: entries and stacks changed by hand are found and put right.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import pino from 'pino';
import { Writable } from 'node:stream';
import type { Rule } from '../../src/policy/model.js';
import { BUILTIN_LABELS } from '../../src/policy/model.js';
import { CompiledEvaluator, type L4Protocol } from '../../src/policy/evaluate.js';
import { rekeyedIdentities, type EntrySets } from '../../src/policy/diff.js';
import type { IpcacheEntry, PolicyEntry } from '../../src/policy/compile.js';
import {
  MAP_NAMES,
  decodeEndpointInfo,
  decodeIpKey,
  decodeIpcacheKey,
  decodeIpcacheVal,
  decodeNeighKey,
  decodePolicyKey,
  decodePolicyVal,
  decodeRemoteEndpoint,
  type EndpointInfo,
  type NeighKey,
} from '../../src/datapath/layout.js';
import { STORE_MAPS, type MapOp } from '../../src/manager/entries.js';
import type { Manager } from '../../src/manager/manager.js';
import { RuleNumbers } from '../../src/manager/identity.js';
import type { Repair } from '../../src/manager/reconciler.js';
import type { Discovered } from '../../src/manager/ports.js';
import type { RemoteEndpoint } from '../../src/manager/remote.js';
import { RecordingDatapath, endpointSpec, recordingManager, type TableNode } from '../helpers/recording-datapath.js';
import { IP_POOL, rulesArb } from './policy-world.test.js';

// ------------------------------------------------------------ the maps as the datapath reads them

/** What the recorded writes put in the maps, decoded, keyed by the key's hex (a canonical string for diff.ts). */
class KernelView {
  policy = new Map<string, PolicyEntry>();
  neigh = new Map<string, NeighKey>();
  ipcache = new Map<string, IpcacheEntry>();
  endpointsByIp = new Map<string, { key: string; val: EndpointInfo }>();
  endpoints = new Map<string, { key: number; val: EndpointInfo }>();
  /** bastion_remote: another node's endpoint address → its identity */
  remote = new Map<string, { ip: string; identity: number }>();

  write(op: MapOp): void {
    const k = op.key.toString('hex');
    const up = op.op === 'upsert';
    switch (op.map) {
      case MAP_NAMES.policy:
        if (up) this.policy.set(k, { key: decodePolicyKey(op.key), val: decodePolicyVal(op.value) });
        else this.policy.delete(k);
        return;
      case MAP_NAMES.neigh:
        if (up) this.neigh.set(k, decodeNeighKey(op.key));
        else this.neigh.delete(k);
        return;
      case MAP_NAMES.ipcache:
        if (up) this.ipcache.set(k, { key: decodeIpcacheKey(op.key), val: decodeIpcacheVal(op.value) });
        else this.ipcache.delete(k);
        return;
      case MAP_NAMES.endpointsByIp:
        if (up) this.endpointsByIp.set(k, { key: decodeIpKey(op.key), val: decodeEndpointInfo(op.value) });
        else this.endpointsByIp.delete(k);
        return;
      case MAP_NAMES.endpoints:
        if (up) this.endpoints.set(k, { key: op.key.readUInt32LE(0), val: decodeEndpointInfo(op.value) });
        else this.endpoints.delete(k);
        return;
      case MAP_NAMES.remote:
        if (up) this.remote.set(k, { ip: decodeIpKey(op.key), identity: decodeRemoteEndpoint(op.value).identity });
        else this.remote.delete(k);
        return;
      default:
    }
  }

  sets(): EntrySets {
    return { policy: new Map(this.policy), neigh: new Map(this.neigh), ipcache: new Map(this.ipcache), endpointsByIp: new Map(this.endpointsByIp), endpoints: new Map(this.endpoints) };
  }

  evaluator(): CompiledEvaluator {
    return new CompiledEvaluator({
      policy: this.policy.values(),
      ipcache: this.ipcache.values(),
      neigh: this.neigh.values(),
      endpointsByIp: new Map([...this.endpointsByIp.values()].map((e) => [e.key, e.val.identity])),
      remoteByIp: new Map([...this.remote.values()].map((r) => [r.ip, r.identity])),
    });
  }
}

const PROBES: ReadonlyArray<[L4Protocol, number]> = [
  ['tcp', 80],
  ['udp', 53],
  ['icmp', 0],
];

type Dirs = [boolean, boolean, boolean];
function dirs(ev: CompiledEvaluator, srcIp: string, dstIp: string, protocol: L4Protocol, port: number): Dirs {
  const v = ev.evaluate({ srcIp, dstIp, protocol, port });
  return [!v.egressChecked || v.egressRuleId !== 0, !v.ingressChecked || v.ingressRuleId !== 0, v.allowed];
}

/**
 * Runs one change through the manager, judging every intermediate state of
 * the maps (see the header). Returns the first violation.
 */
async function walkChange(view: KernelView, datapath: RecordingDatapath, ips: string[], change: () => Promise<unknown>, label: string): Promise<string | undefined> {
  const beforeSets = view.sets();
  const before = view.evaluator();
  const probes: Array<{ s: string; d: string; p: L4Protocol; port: number; o: Dirs }> = [];
  for (const s of ips) for (const d of ips) for (const [p, port] of PROBES) probes.push({ s, d, p, port, o: dirs(before, s, d, p, port) });
  // every intermediate state, judged once the state after is known
  const seen: Array<{ op: MapOp; m: Dirs[] }> = [];
  const live = view.evaluator();
  const outer = datapath.onWrite;
  datapath.onWrite = (op) => {
    view.write(op);
    applyToEvaluator(live, op);
    seen.push({ op, m: probes.map((q) => dirs(live, q.s, q.d, q.p, q.port)) });
  };
  try {
    await change();
  } finally {
    datapath.onWrite = outer;
  }
  const afterSets = view.sets();
  const after = view.evaluator();
  const rekeyed = rekeyedIdentities(beforeSets, afterSets);
  const stable = new Set(
    ips.filter((ip) => {
      const a = before.resolve(ip);
      const b = after.resolve(ip);
      return a.managed === b.managed && (!a.managed || a.identity === b.identity) && !rekeyed.has(a.identity) && !rekeyed.has(b.identity);
    }),
  );
  const names = ['egress', 'ingress', 'verdict'];
  for (let i = 0; i < seen.length; i++) {
    const { op, m } = seen[i]!;
    for (let j = 0; j < probes.length; j++) {
      const q = probes[j]!;
      const n = dirs(after, q.s, q.d, q.p, q.port);
      const isStable = stable.has(q.s) && stable.has(q.d);
      for (let k = 0; k < 3; k++) {
        const where = () => `${label}: ${names[k]} of ${q.s} → ${q.d} ${q.p}/${q.port} after write ${i} of ${seen.length} (${op.op} ${op.map} ${op.key.toString('hex')})`;
        if (k < 2 && m[j]![k] && !q.o[k] && !n[k]) return `transient allowance: ${where()}`;
        if (isStable && q.o[k] && n[k] && !m[j]![k]) return `transient denial: ${where()}`;
      }
    }
  }
  return undefined;
}

function applyToEvaluator(ev: CompiledEvaluator, op: MapOp): void {
  const up = op.op === 'upsert';
  switch (op.map) {
    case MAP_NAMES.policy:
      return up ? ev.setPolicy({ key: decodePolicyKey(op.key), val: decodePolicyVal(op.value) }) : ev.deletePolicy({ key: decodePolicyKey(op.key), val: { ruleId: 0, flags: 0 } });
    case MAP_NAMES.ipcache:
      return up ? ev.setIpcache({ key: decodeIpcacheKey(op.key), val: decodeIpcacheVal(op.value) }) : ev.deleteIpcache({ key: decodeIpcacheKey(op.key), val: { identity: 0, flags: 0 } });
    case MAP_NAMES.neigh:
      return up ? ev.setNeigh(decodeNeighKey(op.key)) : ev.deleteNeigh(decodeNeighKey(op.key));
    case MAP_NAMES.endpointsByIp:
      return up ? ev.setEndpointAddr(decodeIpKey(op.key), decodeEndpointInfo(op.value).identity) : ev.deleteEndpointAddr(decodeIpKey(op.key));
    case MAP_NAMES.remote:
      return up ? ev.setRemoteAddr(decodeIpKey(op.key), decodeRemoteEndpoint(op.value).identity) : ev.deleteRemoteAddr(decodeIpKey(op.key));
    default:
  }
}

/** The maps hold exactly what the manager wants (stats: the keys). */
function assertInSync(manager: Manager, datapath: RecordingDatapath, label: string): void {
  for (const map of STORE_MAPS) {
    const want = new Map(manager.reconciler.store.entries(map));
    const have = datapath.table(map);
    if (map === MAP_NAMES.epStats) {
      assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort(), `${label}: ${map} keys`);
      continue;
    }
    assert.equal(have.size, want.size, `${label}: ${map} holds ${have.size} entries, the manager wants ${want.size}`);
    for (const [k, v] of want) assert.equal(have.get(k), v, `${label}: ${map} entry ${Buffer.from(k, 'latin1').toString('hex')}`);
  }
}

// ------------------------------------------------------------ random changes

const CONTAINERS = 5;
const LABELS: Array<Record<string, string>> = [{ app: 'a' }, { app: 'b' }, { app: 'a', tier: 'b' }, { tier: 'c' }, {}];

type Change =
  | { kind: 'policy'; rules: Rule[] }
  | { kind: 'runtime-add'; rules: Rule[] }
  | { kind: 'runtime-delete'; pick: number }
  | { kind: 'arrive'; c: number; ip: number; labels: number }
  | { kind: 'depart'; c: number }
  | { kind: 'relabel'; c: number; labels: number }
  | { kind: 'restart'; c: number }
  | { kind: 'hosts'; hosts: string[] }
  | { kind: 'remote-up'; r: number; ip: number; labels: number }
  | { kind: 'remote-down'; r: number }
  | { kind: 'remote-nodes'; nodes: string[] };

/** other nodes' endpoints (cluster mode) */
const REMOTES = 3;

const ipIndex = fc.integer({ min: 0, max: 9 });
/** the addresses containers and host take: from the pool, where CIDR rules and excepts collide */
const ADDRS = IP_POOL.filter((ip) => ip !== '0.0.0.0' && ip !== '255.255.255.255').slice(0, 10);

/** Nested prefixes around the containers' addresses and the probes: a rule naming one often splits another's. */
const NESTED = ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/16', '10.0.0.0/30', '10.1.0.0/16', '10.0.1.0/24'];
const cidrRuleArb = fc
  .record({
    subject: fc.constantFrom<Rule['subject']>({}, { matchLabels: { app: 'a' } }, { matchLabels: { app: 'b' } }, { matchLabels: { tier: 'c' } }),
    direction: fc.constantFrom('egress' as const, 'ingress' as const),
    cidr: fc.constantFrom(...NESTED),
    except: fc.option(fc.subarray(NESTED.slice(1), { minLength: 1, maxLength: 2 }), { nil: undefined }),
    ports: fc.constantFrom<Rule['ports']>([], [{ protocol: 'tcp', from: 80, to: 80 }], [{ protocol: 'icmp', from: 0, to: 0 }]),
  })
  .map(({ subject, direction, cidr, except, ports }) => ({ subject, direction, peers: [{ kind: 'cidr' as const, cidr, ...(except ? { except } : {}) }], ports }));

const changeArb = (idBase: fc.Arbitrary<number>): fc.Arbitrary<Change> =>
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.tuple(fc.array(cidrRuleArb, { minLength: 1, maxLength: 2 }), idBase).map(([rules, n]): Change => ({ kind: 'runtime-add', rules: rules.map((r, i) => ({ ...r, id: `cidr-${n}-${i}` })) })),
    },
    { weight: 2, arbitrary: rulesArb(CONTAINERS, { maxRules: 5, idPrefix: 'f' }).map((rules): Change => ({ kind: 'policy', rules })) },
    {
      weight: 3,
      arbitrary: fc.tuple(rulesArb(CONTAINERS, { maxRules: 2, idPrefix: 'x' }), idBase).map(([rules, n]): Change => ({ kind: 'runtime-add', rules: rules.map((r, i) => ({ ...r, id: `api-${n}-${i}` })) })),
    },
    { weight: 2, arbitrary: fc.nat().map((pick): Change => ({ kind: 'runtime-delete', pick })) },
    {
      weight: 3,
      arbitrary: fc
        .record({ c: fc.integer({ min: 0, max: CONTAINERS - 1 }), ip: ipIndex, labels: fc.integer({ min: 0, max: LABELS.length - 1 }) })
        .map((r): Change => ({ kind: 'arrive', ...r })),
    },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: CONTAINERS - 1 }).map((c): Change => ({ kind: 'depart', c })) },
    {
      weight: 1,
      arbitrary: fc.record({ c: fc.integer({ min: 0, max: CONTAINERS - 1 }), labels: fc.integer({ min: 0, max: LABELS.length - 1 }) }).map((r): Change => ({ kind: 'relabel', ...r })),
    },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: CONTAINERS - 1 }).map((c): Change => ({ kind: 'restart', c })) },
    { weight: 1, arbitrary: fc.subarray(ADDRS.slice(6), { maxLength: 2 }).map((hosts): Change => ({ kind: 'hosts', hosts })) },
    {
      weight: 2,
      arbitrary: fc
        .record({ r: fc.integer({ min: 0, max: REMOTES - 1 }), ip: ipIndex, labels: fc.integer({ min: 0, max: LABELS.length - 1 }) })
        .map((r): Change => ({ kind: 'remote-up', ...r })),
    },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: REMOTES - 1 }).map((r): Change => ({ kind: 'remote-down', r })) },
    { weight: 1, arbitrary: fc.subarray(ADDRS.slice(4), { maxLength: 2 }).map((nodes): Change => ({ kind: 'remote-nodes', nodes })) },
  );

/** The containers' state on the node: which are up, on which interface, with which address and labels. */
class Model {
  private nextIfindex = 1;
  readonly up = new Map<number, { d: Discovered; labels: Record<string, string> }>();
  runtime: Rule[] = [];
  fileRules: Rule[] = [];
  hosts: string[] = [];
  /** other nodes' endpoints, by number; their identities are the cluster's (never a local one) */
  readonly remotes = new Map<number, RemoteEndpoint>();
  private nextRemoteIdentity = 50_000;
  remoteNodes: string[] = [];

  constructor(private readonly node: TableNode) {}

  iface(ip: string): Discovered {
    const i = this.nextIfindex++;
    return { ipv4: ip, prefixLen: 8, mac: `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`, hostIfindex: 2000 + i, hostIfname: `veth${i}`, gwMac: '02:00:00:00:00:01', bridge: 'br0' };
  }

  /** every address a container (here or on another node), the host or another node holds */
  usedAddresses(): Set<string> {
    return new Set([...[...this.up.values()].map((u) => u.d.ipv4), ...[...this.remotes.values()].map((r) => r.ipv4), ...this.hosts, ...this.remoteNodes]);
  }

  spec(c: number, labels: Record<string, string>) {
    return endpointSpec(`e${c}`, { ...labels, [BUILTIN_LABELS.name]: `e${c}` });
  }

  /** The manager call a change makes (undefined: nothing to do in this state). */
  call(manager: Manager, ch: Change): (() => Promise<unknown>) | undefined {
    switch (ch.kind) {
      case 'policy':
        this.fileRules = ch.rules;
        return () => manager.setPolicy({ mode: 'enforce', rules: [...this.fileRules, ...this.runtime] });
      case 'runtime-add':
        if (!ch.rules.length) return undefined;
        this.runtime = [...this.runtime, ...ch.rules];
        return () => manager.changeRules(ch.rules, []);
      case 'runtime-delete': {
        if (!this.runtime.length) return undefined;
        const gone = this.runtime[ch.pick % this.runtime.length]!;
        this.runtime = this.runtime.filter((r) => r !== gone);
        return () => manager.changeRules([], [gone]);
      }
      case 'arrive': {
        if (this.up.has(ch.c)) return undefined;
        const used = this.usedAddresses();
        // an address in use goes to the next free one; a departed container's address is taken again often
        const ip = ADDRS.map((_, i) => ADDRS[(ch.ip + i) % ADDRS.length]!).find((a) => !used.has(a));
        if (!ip) return undefined;
        const u = { d: this.iface(ip), labels: LABELS[ch.labels]! };
        this.up.set(ch.c, u);
        this.node.interfaces.set(`e${ch.c}`, u.d);
        return () => manager.upsertEndpoint(this.spec(ch.c, u.labels));
      }
      case 'depart':
        if (!this.up.delete(ch.c)) return undefined;
        this.node.interfaces.delete(`e${ch.c}`);
        return () => manager.removeEndpoint(`file:e${ch.c}`);
      case 'relabel': {
        const u = this.up.get(ch.c);
        if (!u) return undefined;
        u.labels = LABELS[ch.labels]!;
        return () => manager.upsertEndpoint(this.spec(ch.c, u.labels));
      }
      case 'restart': {
        // same container, same address, a new veth: a new identity
        const u = this.up.get(ch.c);
        if (!u) return undefined;
        u.d = this.iface(u.d.ipv4);
        this.node.interfaces.set(`e${ch.c}`, u.d);
        return () => manager.upsertEndpoint(this.spec(ch.c, u.labels));
      }
      case 'remote-up': {
        // an address is one endpoint's in the whole cluster: a free one (its own, if it keeps it)
        const old = this.remotes.get(ch.r);
        const used = this.usedAddresses();
        if (old) used.delete(old.ipv4);
        const ip = ADDRS.map((_, i) => ADDRS[(ch.ip + i) % ADDRS.length]!).find((a) => !used.has(a));
        if (!ip) return undefined;
        const labels = { ...LABELS[ch.labels]!, [BUILTIN_LABELS.name]: `r${ch.r}` };
        // the same endpoint with new labels keeps its identity; at a new address it is a new one (as a local restart)
        const identity = old && old.ipv4 === ip ? old.identity : this.nextRemoteIdentity++;
        const r: RemoteEndpoint = { id: `n2/r${ch.r}`, node: 'n2', nodeIp: '192.0.2.2', name: `r${ch.r}`, identity, ipv4: ip, mac: '02:00:00:00:09:09', labels };
        this.remotes.set(ch.r, r);
        return () => manager.setRemoteEndpoints([r], []);
      }
      case 'remote-down': {
        const r = this.remotes.get(ch.r);
        if (!r) return undefined;
        this.remotes.delete(ch.r);
        return () => manager.setRemoteEndpoints([], [r.id]);
      }
      case 'remote-nodes': {
        const used = this.usedAddresses();
        this.remoteNodes = ch.nodes.filter((a) => !used.has(a) || this.remoteNodes.includes(a));
        const nodes = this.remoteNodes;
        return () => manager.setRemoteNodes(nodes);
      }
      case 'hosts': {
        const taken = new Set([...[...this.up.values()].map((u) => u.d.ipv4), ...[...this.remotes.values()].map((r) => r.ipv4), ...this.remoteNodes]);
        this.hosts = ch.hosts.filter((h) => !taken.has(h));
        const hosts = this.hosts;
        return () => manager.setHostAddresses(hosts);
      }
    }
  }
}

/** The addresses probed: the containers' (local and remote), the host's, other nodes', and a few outside ones inside and around the prefixes rules name. */
function parties(model: Model): string[] {
  return [
    ...new Set([
      ...[...model.up.values()].map((u) => u.d.ipv4),
      ...[...model.remotes.values()].map((r) => r.ipv4),
      ...model.hosts,
      ...model.remoteNodes,
      '10.1.2.3',
      '10.0.1.1',
      '8.8.8.8',
      '192.168.1.1',
    ]),
  ];
}

describe('manager: the update path the daemon runs', () => {
  it('every intermediate map state of every change keeps what both sides allow and allows nothing neither does; the maps end as wanted (property)', async () => {
    let ids = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(changeArb(fc.constant(0).map(() => ids++)), { minLength: 1, maxLength: 12 }), async (changes) => {
        const { manager, datapath, node } = recordingManager();
        const model = new Model(node);
        const view = new KernelView();
        try {
          await manager.setHostAddresses([]);
          for (const [i, ch] of changes.entries()) {
            const before = parties(model);
            const call = model.call(manager, ch);
            if (!call) continue;
            const ips = [...new Set([...before, ...parties(model)])];
            const v = await walkChange(view, datapath, ips, call, `change ${i} (${ch.kind})`);
            assert.equal(v, undefined, v);
            assertInSync(manager, datapath, `after change ${i} (${ch.kind})`);
            assert.equal(manager.health().dirty, false);
          }
        } finally {
          manager.close();
        }
      }),
      { numRuns: Number(process.env.MANAGER_RUNS ?? 100), verbose: process.env.VERBOSE ? 2 : 0 },
    );
  });

  it('the property is not vacuous: the same writes in the "addresses first" order deny, for a moment, what both sides allow', async () => {
    // e0 may reach the world; a rule for e1 names 10.1.0.0/16 as an except: a new prefix, and e0 needs a policy entry for it
    const r = (id: string, app: string, except?: string[]): Rule => ({ id, subject: { matchLabels: { app } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '0.0.0.0/0', ...(except ? { except } : {}) }], ports: [] });
    const setup = async () => {
      const rec = recordingManager();
      const model = new Model(rec.node);
      const view = new KernelView();
      rec.datapath.onWrite = (op) => view.write(op);
      await rec.manager.setHostAddresses([]);
      await model.call(rec.manager, { kind: 'arrive', c: 0, ip: 2, labels: 0 })!();
      await model.call(rec.manager, { kind: 'arrive', c: 1, ip: 3, labels: 1 })!();
      await rec.manager.setPolicy({ mode: 'enforce', rules: [r('r', 'a')] });
      return { ...rec, model, view, ips: [...parties(model), '10.1.2.3'] };
    };
    const real = await setup();
    const ok = await walkChange(real.view, real.datapath, real.ips, () => real.manager.changeRules([r('s', 'b', ['10.1.0.0/16'])], []), 'the real order');
    assert.equal(ok, undefined, ok);
    const twisted = await setup();
    const apply = twisted.datapath.apply.bind(twisted.datapath);
    const addresses = (o: MapOp) => o.map === MAP_NAMES.ipcache || o.map === MAP_NAMES.endpointsByIp;
    twisted.datapath.apply = (ops) => apply([...ops.filter(addresses), ...ops.filter((o) => !addresses(o))]);
    const bad = await walkChange(twisted.view, twisted.datapath, twisted.ips, () => twisted.manager.changeRules([r('s', 'b', ['10.1.0.0/16'])], []), 'addresses first');
    assert.match(bad ?? 'no violation', /transient denial: addresses first: egress of 10\.0\.0\.2 → 10\.1\.2\.3/);
    real.manager.close();
    twisted.manager.close();
  });
});

// ------------------------------------------------------------ failures and drift

/** A logger whose lines a test can read. */
function capturingLog(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function populated(o: Parameters<typeof recordingManager>[0] = {}) {
  const rec = recordingManager({ resyncBackoff: { firstMs: 20, maxMs: 160 }, ...o });
  const { manager, node } = rec;
  await manager.setHostAddresses(['10.77.0.1']);
  const web = endpointSpec('web');
  const api = endpointSpec('api');
  const db = endpointSpec('db');
  node.interfaces.set('web', { ...ifaceOf(1) });
  node.interfaces.set('api', { ...ifaceOf(2) });
  node.interfaces.set('db', { ...ifaceOf(3) });
  await manager.setPolicy({
    mode: 'enforce',
    rules: [
      { id: 'web-api', subject: { matchLabels: { app: 'web' } }, direction: 'egress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'api' } } }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] },
      { id: 'web-api-in', subject: { matchLabels: { app: 'api' } }, direction: 'ingress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 8080, to: 8080 }] },
      { id: 'api-net', subject: { matchLabels: { app: 'api' } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }], ports: [] },
    ],
  });
  for (const s of [web, api, db]) await manager.upsertEndpoint(s);
  return { ...rec, web, api, db };
}

function ifaceOf(i: number): Discovered {
  return { ipv4: `10.77.0.${10 + i}`, prefixLen: 16, mac: `02:00:00:00:00:${(0x10 + i).toString(16)}`, hostIfindex: 3000 + i, hostIfname: `veth-${i}`, gwMac: '02:00:00:00:00:01', bridge: 'br0' };
}

describe('manager: failed writes and drift', () => {
  it('a write that fails part-way leaves the state dirty and loud; the resync with back-off brings the maps to what is wanted', async () => {
    const { log, lines } = capturingLog();
    const { manager, datapath } = await populated({ log });
    try {
      assertInSync(manager, datapath, 'before');
      const rule: Rule = { id: 'db-any', subject: { matchLabels: { app: 'db' } }, direction: 'ingress', peers: [{ kind: 'cidr', cidr: '192.168.0.0/16' }], ports: [] };
      // the third write of this change fails: two are made, the rest are not
      datapath.failOnWrite(3);
      const writesBefore = datapath.ops.length;
      await manager.changeRules([rule], []);
      assert.equal(datapath.ops.length, writesBefore + 2, 'the writes before the failing one were made');
      const h = manager.health();
      assert.equal(h.dirty, true);
      assert.equal(h.failedWrites, 1);
      assert.match(h.lastError ?? '', /injected failure/);
      assert.ok(lines.some((l) => l.level === 50 && /map write failed/.test(String(l.msg))), 'an error line says so');
      assert.throws(() => assertInSync(manager, datapath, 'half applied'));
      // keep failing for a while: the resync retries, each time later
      datapath.failing = true;
      await until('two resync attempts', () => manager.health().resyncAttempts >= 2);
      assert.equal(manager.health().dirty, true);
      assert.ok(manager.health().resyncing);
      datapath.failing = false;
      await until('the resync to converge', () => !manager.health().dirty);
      assertInSync(manager, datapath, 'after the resync');
      assert.equal(manager.health().lastCheck?.clean, true);
      assert.ok(lines.some((l) => /resync done/.test(String(l.msg))));
    } finally {
      manager.close();
    }
  });

  it('a failed write on any write of a random change converges after the resync (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 40 }), fc.array(changeArb(fc.nat()), { minLength: 1, maxLength: 4 }), async (n, changes) => {
        const { manager, datapath, node } = recordingManager({ resyncBackoff: { firstMs: 1, maxMs: 10 } });
        const model = new Model(node);
        try {
          await manager.setHostAddresses([]);
          datapath.failOnWrite(n);
          for (const ch of changes) await model.call(manager, ch)?.();
          await until('convergence', () => !manager.health().dirty);
          assertInSync(manager, datapath, 'after the resync');
        } finally {
          manager.close();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('entries deleted, added or rewritten by hand are found and put right, counted and reported', async () => {
    const repairs: Repair[] = [];
    const { manager, datapath } = await populated({ onRepair: (r) => repairs.push(r) });
    try {
      const policy = datapath.table(MAP_NAMES.policy);
      const [k1] = [...policy.keys()];
      policy.delete(k1!);
      const ep = datapath.table(MAP_NAMES.endpoints);
      const [k2, v2] = [...ep][0]!;
      ep.set(k2, v2.slice(0, -1) + String.fromCharCode(v2.charCodeAt(v2.length - 1) ^ 1));
      const neigh = datapath.table(MAP_NAMES.neigh);
      const stray = Buffer.from([9, 9, 0, 0, 8, 8, 0, 0]).toString('latin1');
      neigh.set(stray, '\x01\x00\x00\x00');
      const r = await manager.verify('request');
      assert.equal(r.maps.maps[MAP_NAMES.policy]?.missing, 1);
      assert.equal(r.maps.maps[MAP_NAMES.endpoints]?.changed, 1);
      assert.equal(r.maps.maps[MAP_NAMES.neigh]?.extra, 1);
      assert.equal(r.maps.maps[MAP_NAMES.ipcache]?.state, 'in-sync');
      assert.equal(r.maps.repaired, 3);
      assertInSync(manager, datapath, 'after the repair');
      assert.deepEqual(repairs.map((x) => `${x.map}:${x.kind}`).sort(), [`${MAP_NAMES.endpoints}:changed`, `${MAP_NAMES.neigh}:extra`, `${MAP_NAMES.policy}:missing`]);
      assert.deepEqual(manager.health().repairs[MAP_NAMES.policy], { missing: 1 });
      // nothing left to repair
      const again = await manager.verify('periodic');
      assert.equal(again.maps.repaired, 0);
      assert.equal(again.clean, true);
    } finally {
      manager.close();
    }
  });

  it("cluster mode: another node's endpoint entry and the tunnel entry, deleted, added or rewritten by hand, are found and put right", async () => {
    const repairs: Repair[] = [];
    const { manager, datapath } = await populated({ onRepair: (r) => repairs.push(r) });
    try {
      await manager.setTunnel({ ifindex: 77, localIpv4: '192.0.2.1', flags: 0 });
      // an api on another node: web's rule names it, so web's slice brings its entry
      const api2: RemoteEndpoint = { id: 'n2/api2', node: 'n2', nodeIp: '192.0.2.2', name: 'api2', identity: 60_000, ipv4: '10.78.0.5', mac: '02:00:00:00:07:05', labels: { app: 'api' } };
      await manager.setRemoteEndpoints([api2], []);
      const remote = datapath.table(MAP_NAMES.remote);
      assert.equal(remote.size, 1);
      assertInSync(manager, datapath, 'before the drift');
      // by hand: the entry deleted, a stray one added, the tunnel pointed elsewhere
      remote.clear();
      remote.set(Buffer.from([10, 78, 0, 9]).toString('latin1'), Buffer.alloc(16, 1).toString('latin1'));
      const tunnel = datapath.table(MAP_NAMES.tunnel);
      const [tk] = [...tunnel.keys()];
      tunnel.set(tk!, Buffer.alloc(16).toString('latin1'));
      const r = await manager.verify('request');
      assert.equal(r.maps.maps[MAP_NAMES.remote]?.missing, 1);
      assert.equal(r.maps.maps[MAP_NAMES.remote]?.extra, 1);
      assert.equal(r.maps.maps[MAP_NAMES.tunnel]?.changed, 1);
      assert.equal(r.maps.repaired, 3);
      assertInSync(manager, datapath, 'after the repair');
      assert.deepEqual(repairs.map((x) => `${x.map}:${x.kind}`).sort(), [`${MAP_NAMES.remote}:extra`, `${MAP_NAMES.remote}:missing`, `${MAP_NAMES.tunnel}:changed`]);
      const again = await manager.verify('periodic');
      assert.equal(again.maps.repaired, 0);
      assert.equal(again.clean, true);
    } finally {
      manager.close();
    }
  });

  it("start-up: a previous run's leftovers (entries, and stacks on interfaces no longer managed) go, counted as leftovers, not drift", async () => {
    const repairs: Repair[] = [];
    const { manager, datapath, node } = recordingManager({ onRepair: (r) => repairs.push(r) });
    try {
      // what a previous run left: a stack (and its stats record) on ifindex 4444, a policy entry of a dead identity
      datapath.attach(4444);
      datapath.table(MAP_NAMES.policy).set(Buffer.from([96, 0, 0, 0, 7, 7, 0, 0, 8, 8, 0, 0, 0, 6, 0, 80]).toString('latin1'), '\x01\x00\x00\x00\x00\x00\x00\x00');
      await manager.setHostAddresses(['10.77.0.1']);
      node.interfaces.set('web', ifaceOf(1));
      await manager.upsertEndpoint(endpointSpec('web'));
      const r = await manager.pruneLeftovers();
      assert.equal(r.stacks, 1);
      assert.equal(r.entries, 1);
      assert.ok(!datapath.attached.has(4444), 'the leftover stack is detached');
      assert.ok(datapath.attached.has(ifaceOf(1).hostIfindex), 'the managed one stays');
      assertInSync(manager, datapath, 'after the prune');
      assert.deepEqual(repairs, [], 'leftovers are not drift');
      assert.deepEqual(manager.health().repairs, {});
    } finally {
      manager.close();
    }
  });

  it('a check that runs while changes are written finds no drift in them, and still finds drift elsewhere in the same map', async () => {
    const repairs: Repair[] = [];
    const { manager, datapath } = await populated({ onRepair: (r) => repairs.push(r) });
    try {
      const policy = datapath.table(MAP_NAMES.policy);
      const [gone] = [...policy.keys()];
      policy.delete(gone!);
      const running = manager.verify('periodic');
      // written while the maps are read (the recording port yields between two halves of each map)
      for (let i = 0; i < 5; i++) {
        await manager.changeRules([{ id: `during-${i}`, subject: { matchLabels: { app: 'db' } }, direction: 'ingress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 7000 + i, to: 7000 + i }] }], []);
        await new Promise((r) => setImmediate(r));
      }
      const r = await running;
      assert.equal(r.maps.repaired, 1, JSON.stringify(r.maps.maps));
      assert.deepEqual(repairs.map((x) => `${x.map}:${x.kind}:${x.key}`), [`${MAP_NAMES.policy}:missing:${Buffer.from(gone!, 'latin1').toString('hex')}`]);
      assertInSync(manager, datapath, 'after');
      assert.equal((await manager.verify('periodic')).maps.repaired, 0);
    } finally {
      manager.close();
    }
  });

  it('a stack removed by hand is attached again; an interface that vanished is found again on its new veth, with a new identity', async () => {
    const repairs: Repair[] = [];
    const { manager, datapath, node, web, api } = await populated({ onRepair: (r) => repairs.push(r) });
    try {
      const w = manager.endpoints.get(web.key)!;
      datapath.attached.delete(w.hostIfindex);
      // api's namespace deleted and created again: its veth is gone, a new one has its address
      const a = manager.endpoints.get(api.key)!;
      datapath.gone.add(a.hostIfindex);
      const fresh = { ...ifaceOf(2), hostIfindex: 3100, hostIfname: 'veth-new' };
      node.interfaces.set('api', fresh);
      const r = await manager.verify('periodic');
      assert.equal(r.stacks.reattached, 1);
      assert.deepEqual(r.stacks.rediscovered, ['api']);
      assert.ok(datapath.attached.has(w.hostIfindex));
      const a2 = manager.endpoints.get(api.key)!;
      assert.equal(a2.hostIfindex, 3100);
      assert.notEqual(a2.identity, a.identity, 'a new interface is a new identity');
      assert.ok(datapath.attached.has(3100));
      assertInSync(manager, datapath, 'after');
      assert.deepEqual(repairs.map((x) => `${x.map}:${x.kind}`).sort(), ['stack:reattached', 'stack:rediscovered']);
      assert.equal(r.clean, true);
    } finally {
      manager.close();
    }
  });

  it("never guards, replaces or detaches another instance's stack; takes the container up once the other lets go", async () => {
    const { log, lines } = capturingLog();
    const { manager, datapath, node } = await populated({ log });
    try {
      // a port of a container the platform does not know yet, already guarded by another instance
      datapath.foreign.set(4001, '/sys/fs/bpf/other');
      await manager.guardPort(4001);
      assert.ok(!datapath.attached.has(4001));
      assert.ok(lines.some((l) => l.level === 40 && l.ownerPinPath === '/sys/fs/bpf/other'));
      // a container this instance is asked to protect, on an interface the other instance protects
      node.interfaces.set('cache', { ...ifaceOf(5), hostIfindex: 4002 });
      datapath.foreign.set(4002, '/sys/fs/bpf/other');
      const placed = await manager.upsertEndpoint(endpointSpec('cache'));
      assert.equal(placed, undefined);
      assert.match(manager.unprotected.get('file:cache')?.reason ?? '', /another Bastion instance.*\/sys\/fs\/bpf\/other/);
      const r = await manager.verify('request');
      assert.equal(r.clean, false, 'a container left to another instance is not protection in place');
      assert.ok(r.stacks.foreign.some((f) => f.endpoint === 'cache'));
      // the other instance goes away: this one takes the container up by itself
      datapath.foreign.delete(4002);
      await until('the blocked container to be protected', () => manager.endpoints.has('file:cache'));
      assert.ok(datapath.attached.has(4002));
      assert.equal(manager.unprotected.has('file:cache'), false);
      assertInSync(manager, datapath, 'after');
    } finally {
      manager.close();
    }
  });

  it('rule ids that come and go give their numbers back after the quarantine; every policy entry names a rule in force', async () => {
    const clock = { t: 0 };
    const ruleNumbers = new RuleNumbers(() => clock.t, 1000);
    const { manager, datapath } = await populated({ ruleNumbers });
    try {
      const pod = (i: number): Rule => ({ id: `default/web-${i}#ingress:not-isolated`, subject: { matchLabels: { app: 'db' } }, direction: 'ingress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 9000 + (i % 5), to: 9000 + (i % 5) }] });
      const base = ruleNumbers.size;
      const live: Rule[] = [];
      for (let i = 0; i < 300; i++) {
        const add = pod(i);
        const gone = live.length >= 3 ? live.shift()! : undefined;
        live.push(add);
        await manager.changeRules([add], gone ? [gone] : []);
        clock.t += 100;
        // every policy entry's rule number names a rule in force (a reused number names its new rule)
        const inForce = new Set(manager.ruleList().map((r) => r.id));
        for (const [, v] of datapath.table(MAP_NAMES.policy)) {
          const n = decodePolicyVal(Buffer.from(v, 'latin1')).ruleId;
          assert.ok(inForce.has(ruleNumbers.name(n) ?? ''), `policy entry names rule #${n} (${ruleNumbers.name(n)}), not in force, after change ${i}`);
        }
      }
      // 3 in force, about 10 in quarantine (1 s at a change every 100 ms)
      assert.ok(ruleNumbers.size <= base + 3 + 11, `${ruleNumbers.size} rule ids hold a number after 300 pods came and went`);
      // a rule changed under the same id keeps its number (never released while in force)
      const kept = live[live.length - 1]!;
      const n = ruleNumbers.number(kept.id);
      await manager.changeRules([{ ...kept, ports: [{ protocol: 'tcp', from: 9100, to: 9100 }] }], [kept]);
      clock.t += 5000;
      await manager.changeRules([pod(1000)], []);
      assert.equal(ruleNumbers.name(n), kept.id);
      // removing a rule that is not in force numbers nothing for good
      const size = ruleNumbers.size;
      await manager.changeRules([], [pod(5000)]);
      assert.equal(ruleNumbers.has(pod(5000).id), true, 'numbered by the lookup, released, in quarantine');
      clock.t += 5000;
      // its number goes round again: new ids take the released numbers, oldest first
      let added = 0;
      while (ruleNumbers.has(pod(5000).id) && added < 50) await manager.changeRules([pod(6000 + added++)], []);
      assert.equal(ruleNumbers.has(pod(5000).id), false, `still numbered after ${added} new ids`);
      assert.equal(ruleNumbers.size, size, 'the new ids took released numbers: the table did not grow');
      assertInSync(manager, datapath, 'after the churn');
    } finally {
      manager.close();
    }
  });

  it('a runtime rule change rebuilds the global slice (every registered prefix) only when it registers or drops a prefix', async () => {
    const { manager, datapath } = await populated({});
    try {
      const compiler = (manager as unknown as { compiler: { globalSlice: (...a: unknown[]) => unknown } }).compiler;
      let builds = 0;
      const globalSlice = compiler.globalSlice.bind(compiler);
      compiler.globalSlice = (...a: unknown[]) => {
        builds++;
        return globalSlice(...a);
      };
      const port: Rule = { id: 'web-db-9000', subject: { matchLabels: { app: 'db' } }, direction: 'ingress', peers: [{ kind: 'endpoints', selector: { matchLabels: { app: 'web' } } }], ports: [{ protocol: 'tcp', from: 9000, to: 9000 }] };
      await manager.changeRules([port], []);
      assert.equal(builds, 0, 'a rule between endpoints: no prefix, no global rebuild');
      const net: Rule = { id: 'db-net', subject: { matchLabels: { app: 'db' } }, direction: 'egress', peers: [{ kind: 'cidr', cidr: '172.20.0.0/16' }], ports: [] };
      await manager.changeRules([net], []);
      assert.equal(builds, 1, 'a new prefix: rebuilt');
      assertInSync(manager, datapath, 'the new prefix written');
      await manager.changeRules([], [port]);
      assert.equal(builds, 1);
      await manager.changeRules([], [net]);
      assert.equal(builds, 2, 'the prefix dropped: rebuilt');
      assertInSync(manager, datapath, 'the prefix gone');
    } finally {
      manager.close();
    }
  });
});
