/**
 * Random "worlds" for the policy property tests: managed endpoints (labels,
 * unique IPs, named ports), host addresses, rules (selectors with every
 * operator, host/any/endpoint/cidr peers with excepts, port ranges, icmp,
 * 'any', named ports), and connection queries between all of them.
 *
 * Addresses and prefixes come mostly from small pools that nest and overlap
 * (10.0.0.0/8 ⊃ 10.0.0.0/16 ⊃ 10.0.0.0/24 ⊃ 10.0.0.0/30 ⊃ 10.0.0.2/31 …),
 * so that cidr peers, excepts, endpoints and host addresses collide often.
 *
 * Imported by the other policy-*.test.ts files; its own sanity tests run
 * only when this file is the one being run.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { LabelSelector, LabelSelectorRequirement, Peer, PortRange, Rule } from '../../src/policy/model.js';
import type { CompileEndpoint, CompileInput } from '../../src/policy/compile.js';
import type { FlowQuery, L4Protocol } from '../../src/policy/evaluate.js';
import { BUILTIN_LABELS } from '../../src/policy/model.js';

export const LABEL_KEYS = ['app', 'tier', 'env'] as const;
export const LABEL_VALUES = ['a', 'b', 'c'] as const;

export const IP_POOL = [
  '10.0.0.0',
  '10.0.0.1',
  '10.0.0.2',
  '10.0.0.3',
  '10.0.0.4',
  '10.0.1.1',
  '10.0.1.2',
  '10.1.0.1',
  '10.1.2.3',
  '10.255.255.255',
  '11.0.0.1',
  '172.16.0.1',
  '192.168.0.1',
  '192.168.1.1',
  '8.8.8.8',
  '255.255.255.255',
  '0.0.0.0',
];

export const PREFIX_POOL = [
  '0.0.0.0/0',
  '0.0.0.0/1',
  '8.0.0.0/8',
  '10.0.0.0/7',
  '10.0.0.0/8',
  '10.0.0.0/16',
  '10.0.0.0/24',
  '10.0.0.0/30',
  '10.0.0.2/31',
  '10.0.0.1/32',
  '10.0.0.4/32',
  '10.0.1.0/24',
  '10.1.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '192.168.0.0/24',
];

export const INTERESTING_PORTS = [0, 1, 52, 53, 54, 79, 80, 81, 443, 1023, 1024, 8080, 9090, 32768, 65534, 65535];

export const NAMED = ['http', 'dns', 'metrics'] as const;

const ipArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...IP_POOL) },
  { weight: 1, arbitrary: fc.ipV4() },
);

function maskText(ip: string, len: number): string {
  const n = ip.split('.').reduce((a, p) => a * 256 + Number(p), 0);
  const m = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const b = (n & m) >>> 0;
  return `${(b >>> 24) & 255}.${(b >>> 16) & 255}.${(b >>> 8) & 255}.${b & 255}/${len}`;
}

export const prefixArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...PREFIX_POOL) },
  { weight: 1, arbitrary: fc.tuple(ipArb, fc.integer({ min: 0, max: 32 })).map(([ip, len]) => maskText(ip, len)) },
);

const labelsArb = fc
  .dictionary(fc.constantFrom(...LABEL_KEYS), fc.constantFrom(...LABEL_VALUES), { maxKeys: 3 })
  .map((d) => ({ ...d }));

const requirementArb: fc.Arbitrary<LabelSelectorRequirement> = fc.oneof(
  fc.record({
    key: fc.constantFrom(...LABEL_KEYS),
    operator: fc.constantFrom('In' as const, 'NotIn' as const),
    values: fc.uniqueArray(fc.constantFrom(...LABEL_VALUES), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({ key: fc.constantFrom(...LABEL_KEYS), operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const) }),
);

export const selectorArb: fc.Arbitrary<LabelSelector> = fc
  .record({
    ml: fc.option(labelsArb, { nil: undefined }),
    me: fc.option(fc.array(requirementArb, { maxLength: 2 }), { nil: undefined }),
  })
  .map(({ ml, me }) => ({ ...(ml ? { matchLabels: ml } : {}), ...(me ? { matchExpressions: me } : {}) }));

export type PeerKind = Peer['kind'];

const peerArb = (nameCount: number, kinds?: readonly PeerKind[]): fc.Arbitrary<Peer> =>
  fc.oneof(
    ...peerArbs(nameCount).filter(([k]) => !kinds || kinds.includes(k)).map(([, a]) => a),
  );

const peerArbs = (nameCount: number): Array<[PeerKind, { weight: number; arbitrary: fc.Arbitrary<Peer> }]> =>
  ([
    ['endpoints', { weight: 4, arbitrary: selectorArb.map((selector): Peer => ({ kind: 'endpoints', selector })) }],
    ['endpoints', {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: Math.max(0, nameCount - 1) }).map(
        (i): Peer => ({ kind: 'endpoints', selector: { matchLabels: { [BUILTIN_LABELS.name]: `e${i}` } } }),
      ),
    }],
    ['host', { weight: 1, arbitrary: fc.constant<Peer>({ kind: 'host' }) }],
    ['any', { weight: 1, arbitrary: fc.constant<Peer>({ kind: 'any' }) }],
    ['cidr', {
      weight: 4,
      arbitrary: fc
        .record({ cidr: prefixArb, except: fc.option(fc.array(prefixArb, { minLength: 1, maxLength: 3 }), { nil: undefined }) })
        .map((r): Peer => ({ kind: 'cidr', cidr: r.cidr, ...(r.except ? { except: r.except } : {}) })),
    }],
  ]);

const portNumArb = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...INTERESTING_PORTS) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 65535 }) });

export const portRangeArb: fc.Arbitrary<PortRange> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc
      .record({ protocol: fc.constantFrom('tcp' as const, 'udp' as const, 'sctp' as const), a: portNumArb, b: portNumArb, single: fc.boolean() })
      .map(({ protocol, a, b, single }) => (single ? { protocol, from: a, to: a } : { protocol, from: Math.min(a, b), to: Math.max(a, b) })),
  },
  { weight: 1, arbitrary: fc.constantFrom('tcp' as const, 'udp' as const, 'sctp' as const).map((protocol) => ({ protocol, from: 0, to: 65535 })) },
  { weight: 1, arbitrary: fc.constant<PortRange>({ protocol: 'icmp', from: 0, to: 0 }) },
  { weight: 1, arbitrary: fc.constant<PortRange>({ protocol: 'any', from: 0, to: 65535 }) },
  {
    weight: 2,
    arbitrary: fc
      .record({ name: fc.constantFrom(...NAMED), protocol: fc.constantFrom('tcp' as const, 'udp' as const, 'any' as const) })
      .map(({ name, protocol }) => ({ protocol, from: 0, to: 0, name })),
  },
);

export interface WorldOptions {
  maxEndpoints?: number;
  maxRules?: number;
  idPrefix?: string;
  /** only these kinds of peers */
  peerKinds?: readonly PeerKind[];
}

export const rulesArb = (nameCount: number, opts: WorldOptions = {}): fc.Arbitrary<Rule[]> =>
  fc
    .array(
      fc.record({
        subject: fc.oneof({ weight: 4, arbitrary: selectorArb }, { weight: 1, arbitrary: fc.constant<LabelSelector>({}) }),
        direction: fc.constantFrom('egress' as const, 'ingress' as const),
        peers: fc.array(peerArb(nameCount, opts.peerKinds), { minLength: 0, maxLength: 3 }),
        ports: fc.oneof({ weight: 1, arbitrary: fc.constant<PortRange[]>([]) }, { weight: 3, arbitrary: fc.array(portRangeArb, { minLength: 1, maxLength: 3 }) }),
      }),
      { maxLength: opts.maxRules ?? 8 },
    )
    .map((rs) => rs.map((r, i): Rule => ({ id: `${opts.idPrefix ?? 'r'}${i}`, ...r })));

const namedPortsArb = fc
  .record(
    {
      http: fc.record({ port: fc.constantFrom(80, 8080, 81), protocol: fc.constantFrom('tcp' as const, 'udp' as const) }),
      dns: fc.record({ port: fc.constantFrom(53, 5353), protocol: fc.constantFrom('udp' as const, 'tcp' as const) }),
      metrics: fc.record({ port: fc.constantFrom(9090, 80), protocol: fc.constantFrom('tcp' as const, 'sctp' as const) }),
    },
    { requiredKeys: [] },
  )
  .map((r) => ({ ...r }));

export interface World {
  endpoints: CompileEndpoint[];
  hostAddrs: string[];
  rules: Rule[];
}

/** Endpoints e0..en with unique IPs, host addresses distinct from them. */
export const endpointsAndHostsArb = (opts: { maxEndpoints?: number } = {}) =>
  fc
    .uniqueArray(ipArb, { minLength: 1, maxLength: (opts.maxEndpoints ?? 6) + 3 })
    .chain((ips) =>
      fc.record({
        nEp: fc.integer({ min: 0, max: Math.min(ips.length, opts.maxEndpoints ?? 6) }),
        nHost: fc.integer({ min: 0, max: 2 }),
        labels: fc.array(labelsArb, { minLength: ips.length, maxLength: ips.length }),
        named: fc.array(fc.option(namedPortsArb, { nil: undefined }), { minLength: ips.length, maxLength: ips.length }),
      }).map(({ nEp, nHost, labels, named }) => {
        const endpoints: CompileEndpoint[] = ips.slice(0, nEp).map((ip, i) => ({
          key: `e${i}`,
          identity: 256 + i,
          ipv4: ip,
          labels: { ...labels[i]!, [BUILTIN_LABELS.name]: `e${i}` },
          ...(named[i] ? { namedPorts: named[i] } : {}),
        }));
        const hostAddrs = ips.slice(nEp, nEp + nHost);
        return { endpoints, hostAddrs };
      }),
    );

export const worldArb = (opts: WorldOptions = {}): fc.Arbitrary<World> =>
  endpointsAndHostsArb(opts).chain(({ endpoints, hostAddrs }) =>
    rulesArb(Math.max(1, endpoints.length), opts).map((rules) => ({ endpoints, hostAddrs, rules })),
  );

export const protocolArb = fc.constantFrom<L4Protocol>('tcp', 'udp', 'sctp', 'icmp');

/** A query end: an endpoint (by key or by address), a host address, or any address. */
export function partyArb(w: Pick<World, 'endpoints' | 'hostAddrs'>): fc.Arbitrary<FlowQuery['src']> {
  const arbs: fc.Arbitrary<FlowQuery['src']>[] = [ipArb.map((ip) => ({ ip }))];
  if (w.endpoints.length) {
    arbs.push(fc.constantFrom(...w.endpoints).map((e) => ({ endpoint: e.key })));
    arbs.push(fc.constantFrom(...w.endpoints).map((e) => ({ ip: e.ipv4 })));
  }
  if (w.hostAddrs.length) arbs.push(fc.constantFrom(...w.hostAddrs).map((ip) => ({ ip })));
  return fc.oneof(...arbs);
}

export function queryArb(w: Pick<World, 'endpoints' | 'hostAddrs'>): fc.Arbitrary<FlowQuery> {
  return fc.record({ src: partyArb(w), dst: partyArb(w), protocol: protocolArb, port: portNumArb });
}

/** Every ordered pair of (endpoints, host addresses, a few outside addresses), each with a few protocol/port probes. */
export function gridQueries(w: Pick<World, 'endpoints' | 'hostAddrs'>, probes: ReadonlyArray<[L4Protocol, number]>): FlowQuery[] {
  const used = new Set([...w.endpoints.map((e) => e.ipv4), ...w.hostAddrs]);
  const outside = ['10.0.0.1', '10.0.0.3', '10.1.2.3', '8.8.8.8', '192.168.1.1'].filter((ip) => !used.has(ip)).slice(0, 3);
  const parties: FlowQuery['src'][] = [
    ...w.endpoints.map((e) => ({ endpoint: e.key })),
    ...w.hostAddrs.map((ip) => ({ ip })),
    ...outside.map((ip) => ({ ip })),
  ];
  const out: FlowQuery[] = [];
  for (const src of parties) for (const dst of parties) for (const [protocol, port] of probes) out.push({ src, dst, protocol, port });
  return out;
}

/** A stable allocator for cidr identities and the rule numbers of a world, as the manager would supply them. */
export function allocators(): Pick<CompileInput, "cidrIdentity" | "ruleNumber"> & { cidrMap: Map<string, number>; ruleMap: Map<string, number> } {
  const cidrs = new Map<string, number>();
  const rules = new Map<string, number>();
  return {
    cidrMap: cidrs,
    ruleMap: rules,
    cidrIdentity: (c: string) => {
      let id = cidrs.get(c);
      if (id === undefined) cidrs.set(c, (id = 100000 + cidrs.size));
      return id;
    },
    ruleNumber: (id: string) => {
      let n = rules.get(id);
      if (n === undefined) rules.set(id, (n = rules.size + 1));
      return n;
    },
  };
}

if (process.argv[1]?.endsWith('policy-world.test.js')) {
  describe('policy test worlds', () => {
    it('endpoints have unique keys, identities and IPs; host addresses are not endpoint IPs', () => {
      fc.assert(
        fc.property(worldArb(), (w) => {
          const ips = w.endpoints.map((e) => e.ipv4);
          assert.equal(new Set(ips).size, ips.length);
          assert.equal(new Set(w.endpoints.map((e) => e.identity)).size, w.endpoints.length);
          for (const h of w.hostAddrs) assert.ok(!ips.includes(h));
        }),
        { numRuns: 300 },
      );
    });

    it('generates every kind of peer and port, and rules that select something', () => {
      const kinds = new Set<string>();
      fc.assert(
        fc.property(worldArb(), (w) => {
          for (const r of w.rules) {
            for (const p of r.peers) kinds.add(`peer:${p.kind}${p.kind === 'cidr' && p.except ? '+except' : ''}`);
            for (const p of r.ports) kinds.add(`port:${p.name ? 'named' : p.protocol}`);
            if (r.ports.length === 0) kinds.add('port:none');
          }
        }),
        { numRuns: 300 },
      );
      for (const k of ['peer:endpoints', 'peer:host', 'peer:any', 'peer:cidr', 'peer:cidr+except', 'port:tcp', 'port:icmp', 'port:any', 'port:named', 'port:none'])
        assert.ok(kinds.has(k), k);
    });
  });
}
