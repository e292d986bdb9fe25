/**
 * Proof by replay (src/learn/replay.ts) and reachability diffs
 * (src/learn/reachability.ts), both on the real compiler and evaluator.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { replay } from '../../src/learn/replay.js';
import { parseCandidate } from '../../src/learn/candidate.js';
import { diffReachability } from '../../src/learn/reachability.js';
import type { Rule } from '../../src/policy/model.js';
import { flow, HOST, world, ws } from '../helpers/flows.js';

const web = ws('web', 300, '10.9.0.10');
const api = ws('api', 301, '10.9.0.11');
const db = ws('db', 302, '10.9.0.12');

function rules(yaml: string): Rule[] {
  const c = parseCandidate(yaml, 'candidate.yaml');
  assert.ok(c.ok, !c.ok ? c.errors.join('\n') : '');
  return c.rules;
}

const CANDIDATE = `
policies:
  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }
  - { name: api-to-db, from: { app: api }, to: { app: db }, ports: ["5432/tcp"] }
  - { name: web-dns, from: { app: web }, to: host, ports: ["53/udp"] }
  - { name: api-out, from: { app: api }, to: { cidr: 93.184.216.0/24 }, ports: ["443/tcp"] }
`;

describe('replay: recorded flows against a candidate', () => {
  const recording = [
    flow(web, api, 8080),
    flow(web, api, 8080),
    flow(api, db, 5432, { verdict: 'AUDIT', reason: 'policy-denied' }),
    flow(web, HOST, 53, { protocol: 'udp' }),
    flow(api, world('93.184.216.34'), 443),
    flow(web, db, 5432, { verdict: 'DROPPED' }),
  ];

  it('passes when every flow that went through is allowed', async () => {
    const r = await replay(recording, rules(CANDIDATE));
    assert.equal(r.ok, true);
    assert.equal(r.replayed, 6);
    assert.deepEqual(r.wouldDrop, []);
    assert.deepEqual(r.newlyAllowed, []);
  });

  it('fails with one extra flow, and names it (with which side refuses it)', async () => {
    const extra = flow(web, db, 6379, { verdict: 'AUDIT', reason: 'policy-denied' });
    // two connections of that kind (another source port), one of them reported by both of its checks
    const again = { ...extra, time: new Date(Date.parse(extra.time) + 1000).toISOString(), src: { ...extra.src, port: extra.src.port! + 1 } };
    const r = await replay([...recording, extra, { ...extra, direction: 'ingress' as const }, again], rules(CANDIDATE));
    assert.equal(r.ok, false);
    assert.equal(r.wouldDrop.length, 1);
    const f = r.wouldDrop[0]!;
    assert.equal(f.src.name, 'web');
    assert.equal(f.dst.name, 'db');
    assert.equal(f.dst.port, 6379);
    assert.equal(f.count, 2);
    assert.equal(f.deniedBy, 'egress and ingress');
  });

  it('says which check refuses: the sender\'s egress or the receiver\'s ingress', async () => {
    const oneSided = rules(`
policies:
  - { name: web-egress, from: { app: web }, to: { cidr: 10.9.0.0/24 }, ports: ["8080/tcp"] }
  - { name: web-out, from: { app: web }, to: { cidr: 0.0.0.0/0 }, ports: ["443/tcp"] }
`);
    const r = await replay([flow(web, api, 8080), flow(api, world('1.2.3.4'), 443)], oneSided);
    assert.deepEqual(
      r.wouldDrop.map((f) => [f.src.name, f.dst.port, f.deniedBy]),
      [
        ['web', 8080, 'ingress'],
        ['api', 443, 'egress'],
      ],
    );
  });

  it('reports flows dropped before that the candidate would allow (they do not fail it)', async () => {
    const r = await replay(recording, rules(CANDIDATE + `  - { name: web-to-db, from: { app: web }, to: { app: db }, ports: ["5432/tcp"] }\n`));
    assert.equal(r.ok, true);
    assert.deepEqual(r.newlyAllowed.map((f) => [f.src.name, f.dst.name, f.dst.port, f.verdict]), [['web', 'db', 5432, 'DROPPED']]);
  });

  it('judges selectors, host and CIDR peers as the datapath would (a /24 allows the /32 seen, the host is never a CIDR)', async () => {
    const r = await replay([flow(web, HOST, 8443)], rules(`policies:\n  - { name: all-out, from: { app: web }, to: { cidr: 0.0.0.0/0 } }\n`));
    assert.equal(r.ok, false, 'the host is not the world');
  });

  it('replays only the selected workloads\' flows', async () => {
    const r = await replay([flow(web, api, 8080), flow(api, db, 5432)], rules(`policies:\n  - { name: w, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }\n`), { select: { app: 'web' } });
    assert.equal(r.ok, true);
    assert.equal(r.skipped['not selected'], 1);
  });

  it('leaves out what no policy can allow or refuse, and says so', async () => {
    const r = await replay(
      [flow(web, api, 8080, { verdict: 'AUDIT', reason: 'spoofed-ip' }), flow(web, api, 8080, { isReply: true }), { ...flow(web, api, 1), protocol: 'arp' }],
      [],
    );
    assert.equal(r.ok, true);
    assert.deepEqual(r.skipped, { 'audit spoofed-ip': 1, reply: 1, 'protocol arp': 1 });
  });

  it('judges an address that changed hands in its own world (a recreated container inherits nothing)', async () => {
    const oldDb = ws('db', 302, '10.9.0.50');
    const newCache = ws('cache', 350, '10.9.0.50', { app: 'cache' });
    const cand = rules(`policies:\n  - { name: web-db, from: { app: web }, to: { app: db }, ports: ["5432/tcp"] }\n`);
    const ok = await replay([flow(web, oldDb, 5432)], cand);
    assert.equal(ok.ok, true);
    const r = await replay([flow(web, oldDb, 5432), flow(web, newCache, 5432)], cand);
    assert.deepEqual(r.wouldDrop.map((f) => f.dst.name), ['cache']);
  });

  it('counts what a summary stands for', async () => {
    const s = { ...flow(web, api, 8080), summary: true, count: 1200 };
    const r = await replay([s], []);
    assert.equal(r.replayed, 1200);
    assert.equal(r.wouldDrop[0]!.count, 1200);
  });

  it('refuses an invalid candidate with the parser\'s errors (file, policy, field)', () => {
    const c = parseCandidate('policies:\n  - { name: x, from: { app: web }, to: { app: api }, ports: ["80/tcpx"] }\n', 'cand.yaml');
    assert.equal(c.ok, false);
    assert.match(!c.ok ? c.errors[0]! : '', /^cand\.yaml: policies\[0\] \(x\)\.ports\[0\]: "80\/tcpx" is not a port/);
  });
});

describe('policy diff: reachability', () => {
  const containers = [web, api, db].map((w) => ({ name: w.name, ipv4: w.ip, labels: w.labels }));

  it('lists what B adds and what it removes, by pair and port', () => {
    const a = rules(`policies:\n  - { name: wa, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }\n  - { name: ad, from: { app: api }, to: { app: db }, ports: ["5432/tcp"] }\n`);
    const b = rules(`policies:\n  - { name: wa, from: { app: web }, to: { app: api }, ports: ["8080-8090/tcp", "icmp"] }\n  - { name: wh, from: { app: web }, to: host, ports: ["53/udp"] }\n`);
    const d = diffReachability(a, b, containers, ['10.9.0.1']);
    assert.deepEqual(d.added, [
      { from: 'web', to: 'api', ports: ['8081-8090/tcp', 'icmp'] },
      { from: 'web', to: 'host', ports: ['53/udp'] },
    ]);
    assert.deepEqual(d.removed, [{ from: 'api', to: 'db', ports: ['5432/tcp'] }]);
  });

  it('sees no difference between two ways of writing the same thing', () => {
    const a = rules(`policies:\n  - { name: a, from: { app: web }, to: { app: api }, ports: ["8080/tcp", "8081/tcp"] }\n`);
    const b = rules(`policies:\n  - { name: b1, from: { app: web }, to: { app: api }, ports: ["8080-8081/tcp"] }\n  - { name: b2, from: { app: web }, to: { bastion.io/name: api }, ports: ["8080/tcp"] }\n`);
    const d = diffReachability(a, b, containers, []);
    assert.deepEqual([d.added, d.removed], [[], []]);
  });

  it('names outside ends by the most specific prefix either set names, else world', () => {
    const a = rules(`policies:\n  - { name: o, from: { app: web }, to: { cidr: 10.0.0.0/8, except: [10.9.0.0/16] }, ports: ["443/tcp"] }\n`);
    const b = rules(`policies:\n  - { name: o, from: { app: web }, to: { cidr: 0.0.0.0/0 }, ports: ["443/tcp"] }\n`);
    const d = diffReachability(a, b, containers, []);
    assert.deepEqual(d.removed, []);
    assert.deepEqual(
      d.added.map((p) => p.to),
      ['10.9.0.0/16', 'world'],
    );
  });
});
