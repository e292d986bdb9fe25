/**
 * The console's map as data (src/ui/model): groups, policy edges used and
 * unused, drops and audits as edges of their own, attacked and attacking
 * nodes, noise that is counted but not drawn, search, and the flow filters
 * as `bastion flows` takes them.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { EndpointStatus, FlowRecord, GraphReport, StatusReport } from '../../src/api/types.js';
import { TrafficAggregate, peerNodeId } from '../../src/ui/model/traffic.js';
import { buildMap, cidrIdsOf, networkOf, searchEndpoints } from '../../src/ui/model/map-model.js';
import { flowQuery } from '../../src/ui/model/flow-query.js';

function ep(name: string, o: Partial<EndpointStatus> = {}): EndpointStatus {
  return {
    name,
    key: name,
    identity: 300,
    ipv4: '10.0.0.2',
    mac: '02:00:00:00:00:01',
    interface: 'eth0',
    hostInterface: `h-${name}`,
    hostIfindex: 10,
    bridge: 'br0',
    mode: 'enforce',
    labels: { app: name },
    stack: { ok: true, ingress: 1, egress: 2 },
    counters: { txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, drops: 0 },
    ...o,
  };
}

function status(endpoints: EndpointStatus[]): StatusReport {
  return {
    ok: true,
    daemon: { pid: 1, pinPath: '/x', mode: 'enforce', startedAt: '', generation: 1, flowsSeen: 0 },
    endpoints,
    unprotected: [],
    rules: [],
    entries: {},
    counters: {},
    events: { suppressed: 0, lost: 0 },
    problems: [],
    runtimePolicies: { count: 0, unreadable: [] },
  };
}

const graph: GraphReport = {
  generation: 1,
  endpoints: [],
  externals: [
    { id: 'host', kind: 'host', label: 'host' },
    { id: 'cidr:192.168.0.0/16|', kind: 'cidr', label: '192.168.0.0/16', cidr: '192.168.0.0/16' },
  ],
  edges: [
    { from: 'web', to: 'api', ports: ['8080/tcp'], rules: ['web-to-api'] },
    { from: 'api', to: 'db', ports: ['5432/tcp'], rules: ['api-to-db'] },
    { from: 'web', to: 'host', ports: ['53/udp'], rules: ['dns'] },
    { from: 'db', to: 'cidr:192.168.0.0/16|', ports: ['any'], rules: ['out'] },
  ],
  rules: [],
  truncated: false,
};

/** A flow record (with the fields of the record before and after the learning work: the map reads neither). */
function flow(src: string | undefined, dst: string | undefined, verdict: string, port?: number, o: Partial<FlowRecord> = {}): FlowRecord {
  return {
    time: '2024-01-01T00:00:00.000Z',
    verdict,
    reason: verdict === 'DROPPED' ? 'policy-denied' : 'new',
    trace: 'from-container',
    direction: 'egress',
    protocol: 'tcp',
    src: { identity: 1, labels: {}, ip: src ? '10.0.0.9' : '0.0.0.0', ...(src ? { name: src } : {}) },
    dst: { identity: 2, labels: {}, ip: '10.0.0.4', ...(dst ? { name: dst } : {}), ...(port !== undefined ? { port } : {}) },
    policies: {},
    interface: 'if1',
    isReply: false,
    bytes: 60,
    ...o,
  } as unknown as FlowRecord;
}

const end = (e: { identity: number; ip: string; name?: string; port?: number }): FlowRecord['dst'] => ({ labels: {}, ...e }) as unknown as FlowRecord['dst'];

describe('console map model', () => {
  const eps = [ep('web'), ep('api'), ep('db'), ep('attacker', { bridge: 'br1' }), ep('legacy', { mode: 'audit', stack: { ok: false } })];

  it('groups containers by network and draws the policy graph, every edge unused before traffic', () => {
    const t = new TrafficAggregate();
    const m = buildMap({ status: status(eps), graph, traffic: t });
    const byId = new Map(m.nodes.map((n) => [n.id, n]));
    assert.equal(byId.get('e:web')!.parent, 'n:br0');
    assert.equal(byId.get('e:attacker')!.parent, 'n:br1');
    assert.equal(byId.get('n:br0')!.label, 'br0 · 4 containers');
    assert.deepEqual(byId.get('e:legacy')!.classes, ['endpoint', 'stack-missing', 'audit-mode']);
    assert.equal(byId.get('x:host')!.kind, 'external');
    const edges = new Map(m.edges.map((e) => [e.id, e]));
    assert.deepEqual([...edges.keys()].sort(), ['p:e:api>e:db', 'p:e:db>x:cidr:192.168.0.0/16|', 'p:e:web>e:api', 'p:e:web>x:host']);
    assert.equal(edges.get('p:e:web>e:api')!.label, '8080/tcp');
    for (const e of m.edges) assert.deepEqual(e.classes, ['policy', 'unused']);
  });

  it('allowed traffic uses its policy edge; drops and audits get edges of their own; who attacks whom', () => {
    const t = new TrafficAggregate(new Set(eps.map((e) => e.name)), cidrIdsOf(graph));
    for (let i = 0; i < 3; i++) t.add(flow('web', 'api', 'ALLOWED', 8080));
    t.add(flow('attacker', 'db', 'DROPPED', 5432));
    t.add(flow('attacker', 'db', 'DROPPED', 22));
    t.add(flow('legacy', 'api', 'AUDIT', 9000));
    t.add(flow('db', '192.168.0.0/16', 'ALLOWED', 443));
    t.add(flow('web', 'world', 'ALLOWED', 443)); // no policy edge: drawn as allowed traffic of its own
    assert.equal(t.add(flow('web', 'api', 'ARP_REPLY')), undefined, 'ARP answers are not connections');
    const m = buildMap({ status: status(eps), graph, traffic: t });
    const edges = new Map(m.edges.map((e) => [e.id, e]));
    assert.deepEqual(edges.get('p:e:web>e:api')!.classes, ['policy', 'used']);
    assert.equal(edges.get('p:e:web>e:api')!.count, 3);
    assert.deepEqual(edges.get('p:e:api>e:db')!.classes, ['policy', 'unused']);
    assert.deepEqual(edges.get('p:e:db>x:cidr:192.168.0.0/16|')!.classes, ['policy', 'used']);
    const drop = edges.get('drop:e:attacker>e:db')!;
    assert.equal(drop.kind, 'dropped');
    assert.equal(drop.count, 2);
    assert.deepEqual(drop.ports, ['5432/tcp', '22/tcp']);
    assert.equal(edges.get('audit:e:legacy>e:api')!.kind, 'audit');
    assert.equal(edges.get('ok:e:web>x:world')!.classes[0], 'allowed-unlisted');
    assert.ok(m.nodes.some((n) => n.id === 'x:world'), 'the world node exists once traffic names it');
    const nodes = new Map(m.nodes.map((n) => [n.id, n]));
    assert.ok(nodes.get('e:db')!.classes.includes('attacked'));
    assert.ok(nodes.get('e:attacker')!.classes.includes('attacker'));
    assert.ok(!nodes.get('e:web')!.classes.includes('attacked'));
  });

  it('an aggregated record counts for every flow it stands for (count, and what the rate limit held back)', () => {
    const t = new TrafficAggregate(new Set(eps.map((e) => e.name)));
    t.add(flow('web', 'api', 'ALLOWED', 8080, { count: 40 } as Partial<FlowRecord>));
    t.add(flow('attacker', 'db', 'DROPPED', 5432, { suppressed: 99 } as Partial<FlowRecord>));
    assert.equal(t.edges.get('ok:e:web>e:api')!.count, 40);
    assert.equal(t.edges.get('drop:e:attacker>e:db')!.count, 100);
    assert.equal(t.nodes.get('e:db')!.dropsIn, 100);
  });

  it('frames with no IPv4 sender are counted on their receiver, not drawn as an attack', () => {
    const t = new TrafficAggregate(new Set(eps.map((e) => e.name)));
    const c = t.add(flow(undefined, 'db', 'DROPPED', undefined, { protocol: 'ethertype-0x86dd', reason: 'ipv6' }));
    assert.deepEqual(c, { nodes: ['e:db'] });
    const m = buildMap({ status: status(eps), graph, traffic: t });
    assert.ok(!m.nodes.find((n) => n.id === 'e:db')!.classes.includes('attacked'));
    assert.equal(t.nodes.get('e:db')!.unattributedIn, 1);
    assert.ok(!m.edges.some((e) => e.kind === 'dropped'));
  });

  it('a traffic end the status does not list still gets a node (a removed container, an unknown address)', () => {
    const t = new TrafficAggregate(new Set(eps.map((e) => e.name)));
    t.add(flow('gone', 'db', 'DROPPED', 5432));
    t.add({ ...flow('attacker', undefined, 'DROPPED', 80), dst: end({ identity: 2, ip: '10.9.9.9', port: 80 }) });
    const m = buildMap({ status: status(eps), graph, traffic: t });
    const nodes = new Map(m.nodes.map((n) => [n.id, n]));
    assert.deepEqual(nodes.get('e:gone')!.classes, ['endpoint', 'unknown', 'attacker']);
    assert.equal(nodes.get('x:unknown')!.label, 'unknown address');
    for (const e of m.edges) assert.ok(nodes.has(e.source) && nodes.has(e.target), e.id);
  });

  it('every edge joins two nodes, and is built the same from the same inputs (property)', () => {
    const names = ['a', 'b', 'c', 'd', 'host', 'world', '10.0.0.0/8'];
    const flowArb = fc.record({
      src: fc.option(fc.constantFrom(...names), { nil: undefined }),
      dst: fc.option(fc.constantFrom(...names), { nil: undefined }),
      verdict: fc.constantFrom('ALLOWED', 'DROPPED', 'AUDIT', 'ARP_REPLY'),
      port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(flowArb, { maxLength: 40 }), (fs) => {
        const st = status([ep('a'), ep('b', { bridge: 'br9' }), ep('c')]);
        const t = new TrafficAggregate(new Set(['a', 'b', 'c']));
        for (const f of fs) t.add(flow(f.src, f.dst, f.verdict, f.port));
        const m = buildMap({ status: st, graph: { ...graph, edges: graph.edges.filter((e) => ['a', 'b', 'c'].includes(e.from)) }, traffic: t });
        const ids = new Set(m.nodes.map((n) => n.id));
        assert.equal(ids.size, m.nodes.length, 'node ids are unique');
        assert.equal(new Set(m.edges.map((e) => e.id)).size, m.edges.length, 'edge ids are unique');
        for (const e of m.edges) assert.ok(ids.has(e.source) && ids.has(e.target));
        for (const n of m.nodes) if (n.parent) assert.ok(ids.has(n.parent));
        assert.deepEqual(buildMap({ status: st, graph: { ...graph, edges: [] }, traffic: t }).edges.length, m.edges.filter((e) => e.kind !== 'policy').length);
      }),
    );
  });

  it('cluster mode: a group per host, other nodes\' endpoints in theirs', () => {
    const st = { ...status([ep('web')]), cluster: { node: 'n1', peers: [{ name: 'api', node: 'n2', ipv4: '10.1.0.5' }] } } as StatusReport;
    const m = buildMap({ status: st, graph, traffic: new TrafficAggregate() });
    const byId = new Map(m.nodes.map((n) => [n.id, n]));
    assert.equal(byId.get('e:web')!.parent, 'n:n1/br0');
    assert.equal(byId.get('n:n1/br0')!.parent, 'h:n1');
    assert.equal(byId.get('e:api')!.parent, 'n:n2/10.1.0.0/24');
    assert.ok(byId.get('e:api')!.classes.includes('remote'));
  });

  it('networks, peers and search', () => {
    assert.equal(networkOf(ep('x', { labels: { 'bastion.io/network': 'shop' } })), 'shop');
    assert.equal(networkOf(ep('x', { bridge: undefined, ipv4: '10.1.2.3' })), '10.1.2.0/24');
    assert.equal(peerNodeId(end({ identity: 1, ip: '1.2.3.4', name: 'host' }), new Set(), new Map()), 'x:host');
    const found = searchEndpoints([ep('web-1'), ep('web'), ep('db', { labels: { tier: 'web' } })], 'web');
    assert.deepEqual(found.map((e) => e.name), ['web', 'web-1', 'db']);
    assert.deepEqual(searchEndpoints([ep('db', { ipv4: '10.9.8.7' })], '10.9.8').map((e) => e.name), ['db']);
  });

  it('flow filters become the query `bastion flows` sends', () => {
    const q = flowQuery({ last: 50, container: 'db', verdict: 'dropped', fromLabel: 'app=web, tier=a', port: '5432', since: '' }, true);
    assert.equal(q.toString(), 'last=50&limit=50&container=db&fromLabel=app%3Dweb&fromLabel=tier%3Da&port=5432&verdict=DROPPED&follow=1');
  });
});
