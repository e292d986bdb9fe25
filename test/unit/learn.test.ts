/**
 * Learning rules (src/learn): stable labels only, one policy per port or
 * merged, host and world, DNS, what counts as observed, the evidence, and
 * the document is valid input for `bastion policy add -f`. A property test
 * closes the loop: whatever the recording, the learned policies pass the
 * replay of that recording (the real compiler and evaluator) and allow no
 * (workload, workload, port) the recording did not show.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parse as parseYaml } from 'yaml';
import { isVolatileLabel, isVolatileName, stableLabels, workloadSelector } from '../../src/learn/labels.js';
import { Learner, learnFrom, type LearnedPolicy } from '../../src/learn/learn.js';
import { replay } from '../../src/learn/replay.js';
import { parseConfigText, policyToRules } from '../../src/policy/bastion-config.js';
import { compileAll } from '../../src/policy/compile.js';
import { CompiledEvaluator, datapathView } from '../../src/policy/evaluate.js';
import type { FlowRecord } from '../../src/flows/record.js';
import { flow, HOST, world, ws } from '../helpers/flows.js';

const web = ws('web', 300, '10.9.0.10');
const api = ws('api', 301, '10.9.0.11');
const db = ws('db', 302, '10.9.0.12');

function learned(records: FlowRecord[], o: ConstructorParameters<typeof Learner>[0] = {}) {
  const l = new Learner(o);
  for (const r of records) l.add(r);
  return l.result();
}

function byName(ps: LearnedPolicy[]): Record<string, LearnedPolicy> {
  return Object.fromEntries(ps.map((p) => [p.name, p]));
}

describe('learning: which labels name a workload', () => {
  it('never uses container ids, replica numbers, hashes, versions or timestamps', () => {
    for (const [k, v] of [
      ['com.docker.compose.container-number', '1'],
      ['com.docker.compose.config-hash', 'f1e2d3c4b5a6'],
      ['com.docker.compose.version', '2.24.0'],
      ['pod-template-hash', '7d4b9c8f6d'],
      ['controller-revision-hash', 'db-5d8f7b9c4'],
      ['org.opencontainers.image.revision', 'abc'],
      ['org.opencontainers.image.created', '2024-05-01T10:00:00Z'],
      ['build-id', 'x'],
      ['git-commit', 'deadbeef'],
      ['app.kubernetes.io/version', '1.2.3'],
      ['container', 'a1b2c3d4e5f6'],
      ['instance', '3f2504e0-4f89-11d3-9a0c-0305e82c3301'],
      ['deployed-at', '2024-05-01T10:00:00Z'],
      ['started', '1714557600'],
    ] as const) {
      assert.equal(isVolatileLabel(k, v), true, `${k}=${v} is volatile`);
    }
    for (const [k, v] of [
      ['app', 'web'],
      ['tier', 'front'],
      ['app.kubernetes.io/name', 'checkout'],
      ['bastion.io/compose-service', 'web'],
      ['com.docker.compose.project', 'shop'],
      ['team', 'payments'],
      ['bastion.io/name', 'web'],
      ['env', 'prod'],
    ] as const) {
      assert.equal(isVolatileLabel(k, v), false, `${k}=${v} is stable`);
    }
  });

  it('tells an instance\'s name from a workload\'s', () => {
    for (const n of ['shop-web-1', 'shop_web_2', 'web-7d4b9c8f6d-x2kqp', 'db-0', 'eager_turing', 'a1b2c3d4e5f6']) assert.equal(isVolatileName(n), true, n);
    for (const n of ['web', 'api', 'demo-web', 'payments-db', 'bt1a2b3c-web']) assert.equal(isVolatileName(n), false, n);
  });

  it('selects a Compose service by service and project, else the user\'s stable labels, else the name', () => {
    const compose = {
      'com.docker.compose.project': 'shop',
      'com.docker.compose.service': 'web',
      'com.docker.compose.container-number': '2',
      'com.docker.compose.config-hash': 'a1b2c3d4e5f60718',
      'bastion.io/compose-service': 'web',
      'bastion.io/name': 'shop-web-2',
      'bastion.io/network': 'shop_default',
    };
    assert.deepEqual(workloadSelector(compose), {
      labels: { 'bastion.io/compose-service': 'web', 'com.docker.compose.project': 'shop' },
      short: 'web',
      basis: 'compose',
    });
    const user = { app: 'api', tier: 'back', 'pod-template-hash': '7d4b9c8f6d', 'bastion.io/name': 'api-7d4b9c8f6d-x2kqp' };
    assert.deepEqual(workloadSelector(user), { labels: { app: 'api', tier: 'back' }, short: 'api', basis: 'labels' });
    assert.deepEqual(workloadSelector({ 'bastion.io/name': 'cache' }), { labels: { 'bastion.io/name': 'cache' }, short: 'cache', basis: 'name' });
    assert.equal(workloadSelector({ 'bastion.io/name': 'cache-3' }).basis, 'instance');
    assert.deepEqual(stableLabels(user), { app: 'api', tier: 'back' });
  });
});

describe('learning: policies from flows', () => {
  it('gives one policy per (source, destination, protocol, port), allowing exactly those', () => {
    const r = learned([flow(web, api, 8080), flow(web, api, 8080), flow(web, api, 9090), flow(api, db, 5432), flow(web, api, 'icmp')]);
    const p = byName(r.document.policies);
    assert.deepEqual(Object.keys(p).sort(), ['learned-api-to-db-5432-tcp', 'learned-web-to-api-8080-tcp', 'learned-web-to-api-9090-tcp', 'learned-web-to-api-icmp']);
    assert.deepEqual(p['learned-web-to-api-8080-tcp']!.from, { app: 'web' });
    assert.deepEqual(p['learned-web-to-api-8080-tcp']!.to, { app: 'api' });
    assert.deepEqual(p['learned-web-to-api-8080-tcp']!.ports, ['8080/tcp']);
    assert.equal(p['learned-web-to-api-8080-tcp']!.evidence.flows, 2);
    assert.deepEqual(p['learned-web-to-api-icmp']!.ports, ['icmp']);
    assert.equal(r.flows, 5);
  });

  it('with --merge-ports gives one policy per pair of workloads, its ports in order', () => {
    const r = learned([flow(web, api, 9090), flow(web, api, 8080), flow(web, api, 53, { protocol: 'udp' }), flow(api, db, 5432)], { mergePorts: true });
    const p = byName(r.document.policies);
    assert.deepEqual(Object.keys(p).sort(), ['learned-api-to-db', 'learned-web-to-api']);
    assert.deepEqual(p['learned-web-to-api']!.ports, ['8080/tcp', '9090/tcp', '53/tcp', '53/udp'].sort(sortPorts));
  });

  it('names replicas of one service by the service, never by the instance', () => {
    const labels = (n: number) => ({
      'com.docker.compose.project': 'shop',
      'com.docker.compose.service': 'web',
      'com.docker.compose.container-number': String(n),
      'bastion.io/compose-service': 'web',
    });
    const web1 = ws('shop-web-1', 400, '10.9.0.21', labels(1));
    const web2 = ws('shop-web-2', 401, '10.9.0.22', labels(2));
    const r = learned([flow(web1, api, 8080), flow(web2, api, 8080)]);
    assert.equal(r.document.policies.length, 1);
    const p = r.document.policies[0]!;
    assert.deepEqual(p.from, { 'bastion.io/compose-service': 'web', 'com.docker.compose.project': 'shop' });
    assert.equal(p.evidence.flows, 2);
    assert.doesNotMatch(r.yaml, /container-number|shop-web-1:|bastion.io\/name/);
    assert.match(r.yaml, /shop-web-1, shop-web-2/, 'the evidence names the containers seen');
    assert.deepEqual(r.warnings, []);
  });

  it('warns about a container with nothing stable to select it by', () => {
    const r = learned([flow(ws('worker-3', 500, '10.9.0.30', {}), api, 8080)]);
    assert.deepEqual(r.document.policies[0]!.from, { 'bastion.io/name': 'worker-3' });
    assert.match(r.warnings.join('\n'), /worker-3 has no stable label/);
  });

  it('writes the host as host and outside addresses as /32 CIDR rules, in both directions', () => {
    const r = learned([flow(web, HOST, 8443), flow(HOST, web, 80), flow(api, world('93.184.216.34'), 443)]);
    const p = byName(r.document.policies);
    assert.equal(p['learned-web-to-host-8443-tcp']!.to, 'host');
    assert.equal(p['learned-host-to-web-80-tcp']!.from, 'host');
    assert.deepEqual(p['learned-api-to-93.184.216.34-443-tcp']!.to, { cidr: '93.184.216.34/32' });
  });

  it('keeps DNS to the resolver working: 53/udp seen gives 53/udp and 53/tcp', () => {
    const r = learned([flow(web, HOST, 53, { protocol: 'udp' }), flow(api, world('1.1.1.1'), 53, { protocol: 'udp' })]);
    const p = byName(r.document.policies);
    assert.deepEqual(p['learned-web-to-host-dns']!.ports, ['53/tcp', '53/udp']);
    assert.deepEqual(p['learned-api-to-1.1.1.1-dns']!.ports, ['53/tcp', '53/udp']);
    assert.match(r.yaml, /DNS: 53\/udp and 53\/tcp/);
  });

  it('learns what went through (ALLOWED, AUDIT for a policy reason) and nothing else', () => {
    const r = learned([
      flow(web, api, 8080),
      flow(web, db, 5432, { verdict: 'AUDIT', reason: 'policy-denied' }),
      flow(web, HOST, 22, { verdict: 'AUDIT', reason: 'host-denied' }),
      flow(web, db, 6379, { verdict: 'DROPPED' }),
      flow(web, db, 7000, { verdict: 'AUDIT', reason: 'spoofed-ip' }),
      flow(web, db, 7001, { isReply: true }),
      { ...flow(web, db, 7002), protocol: 'arp' },
    ]);
    assert.deepEqual(r.document.policies.map((p) => p.name).sort(), ['learned-web-to-api-8080-tcp', 'learned-web-to-db-5432-tcp', 'learned-web-to-host-22-tcp']);
    assert.deepEqual(r.skipped, { 'verdict DROPPED': 1, 'audited spoofed-ip': 1, reply: 1, 'protocol arp': 1 });
  });

  it('counts one audited connection once, though both of its checks reported it', () => {
    const a = flow(web, db, 5432, { verdict: 'AUDIT' });
    const r = learned([a, { ...a, direction: 'ingress' }]);
    assert.equal(r.document.policies[0]!.evidence.flows, 1);
  });

  it('carries the evidence: flows (summaries counted whole), first and last seen', () => {
    const t0 = Date.parse('2024-05-02T00:00:00Z');
    const s: FlowRecord = { ...flow(web, api, 8080, { time: t0 + 60_000 }), summary: true, count: 500, firstSeen: new Date(t0).toISOString(), lastSeen: new Date(t0 + 60_000).toISOString() };
    const r = learned([flow(web, api, 8080, { time: t0 + 5_000 }), s, flow(web, api, 8080, { time: t0 + 120_000 })]);
    assert.deepEqual(r.document.policies[0]!.evidence, { flows: 502, firstSeen: new Date(t0).toISOString(), lastSeen: new Date(t0 + 120_000).toISOString() });
    assert.match(r.yaml, /evidence: 502 flows, first 2024-05-02T00:00:00.000Z, last 2024-05-02T00:02:00.000Z/);
  });

  it('learns only for the selected workloads (at either end)', () => {
    const records = [flow(web, api, 8080), flow(api, db, 5432), flow(HOST, api, 9000)];
    assert.deepEqual(learned(records, { select: { app: 'web' } }).document.policies.map((p) => p.name), ['learned-web-to-api-8080-tcp']);
    assert.deepEqual(learned(records, { containers: ['db'] }).document.policies.map((p) => p.name), ['learned-api-to-db-5432-tcp']);
    assert.deepEqual(
      learned(records, { select: { app: 'api' } }).document.policies.map((p) => p.name).sort(),
      ['learned-api-to-db-5432-tcp', 'learned-host-to-api-9000-tcp', 'learned-web-to-api-8080-tcp'],
    );
  });

  it('writes YAML that bastion policy add -f takes as it is, and JSON whose evidence field the parser accepts', () => {
    const r = learned([flow(web, api, 8080), flow(web, HOST, 53, { protocol: 'udp' }), flow(api, world('8.8.8.8'), 443)]);
    const fromYaml = parseConfigText(r.yaml, 'learned.yaml', { policiesOnly: true });
    assert.ok(fromYaml.ok, JSON.stringify(!fromYaml.ok && fromYaml.errors));
    const fromJson = parseConfigText(JSON.stringify(r.document), 'learned.json', { policiesOnly: true });
    assert.ok(fromJson.ok, JSON.stringify(!fromJson.ok && fromJson.errors));
    assert.deepEqual(fromJson.config.policies, fromYaml.config.policies);
    assert.match(r.yaml, /^# Learned by bastion learn from 3 flow records/);
    assert.deepEqual(parseYaml(r.yaml).policies.map((p: { name: string }) => p.name), r.document.policies.map((p) => p.name));
  });

  it('gives an empty document, still valid, when nothing was observed', async () => {
    const r = await learnFrom([flow(web, db, 1, { verdict: 'DROPPED' })]);
    assert.deepEqual(r.document.policies, []);
    assert.match(r.yaml, /nothing to learn/);
    assert.ok(parseConfigText(r.yaml, 'empty.yaml').ok);
  });
});

function sortPorts(a: string, b: string): number {
  const [pa, na] = a.split('/').reverse();
  const [pb, nb] = b.split('/').reverse();
  return pa!.localeCompare(pb!) || Number(na) - Number(nb);
}

describe('learning: property (learn, then replay the same recording)', () => {
  const workloads = [ws('w0', 300, '10.8.0.10'), ws('w1', 301, '10.8.0.11'), ws('w2', 302, '10.8.0.12'), ws('w3', 303, '10.8.0.13', { app: 'w3', tier: 'x' })];
  const ends = [...workloads, HOST, world('203.0.113.9'), world('198.51.100.7')];
  const arbFlow = fc
    .record({
      src: fc.integer({ min: 0, max: ends.length - 1 }),
      dst: fc.integer({ min: 0, max: ends.length - 1 }),
      port: fc.constantFrom(22, 53, 80, 443, 5432, 8080, 'icmp' as const),
      protocol: fc.constantFrom('tcp', 'udp', 'sctp'),
      verdict: fc.constantFrom('ALLOWED', 'ALLOWED', 'AUDIT', 'DROPPED'),
    })
    .filter((f) => f.src < workloads.length || f.dst < workloads.length);

  it('the learned policies allow every flow that went through, and no other (workload, workload, port)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbFlow, { minLength: 1, maxLength: 25 }), fc.boolean(), async (spec, mergePorts) => {
        const records = spec.map((f) => flow(ends[f.src]!, ends[f.dst]!, f.port, { protocol: f.protocol, verdict: f.verdict }));
        const res = await learnFrom(records, { mergePorts });
        if (res.document.policies.length === 0) {
          assert.ok(records.every((r) => r.verdict === 'DROPPED'), 'nothing learned although flows went through');
          return;
        }
        const parsed = parseConfigText(res.yaml, 'learned.yaml', { policiesOnly: true });
        assert.ok(parsed.ok, !parsed.ok ? JSON.stringify(parsed.errors) : '');
        const rules = parsed.config.policies.flatMap(policyToRules);
        const v = await replay(records, rules);
        assert.equal(v.ok, true, `would drop: ${JSON.stringify(v.wouldDrop.map((f) => [f.src.name, f.dst.name, f.protocol, f.dst.port]))}`);
        if (mergePorts) return;
        // nothing more between workloads than observed (DNS: both protocols)
        const seen = new Set(
          records
            .filter((r) => r.verdict !== 'DROPPED')
            .map((r) => `${r.src.ip}>${r.dst.ip}>${r.protocol}>${r.dst.port ?? ''}`),
        );
        const endpoints = workloads.map((w) => ({ key: w.name, identity: w.identity, ipv4: w.ip, labels: w.labels }));
        const state = compileAll({ endpoints, rules, hostAddrs: [HOST.ip], cidrIdentity: (() => { let n = 1 << 20; const m = new Map<string, number>(); return (c: string) => m.get(c) ?? (m.set(c, n++), n - 1); })(), ruleNumber: () => 1 });
        const ev = new CompiledEvaluator(datapathView(state, endpoints));
        for (const a of workloads) {
          for (const b of workloads) {
            for (const [protocol, port] of [['tcp', 22], ['tcp', 80], ['udp', 53], ['tcp', 53], ['sctp', 5432], ['tcp', 8080], ['icmp', 0]] as const) {
              const allowed = ev.evaluate({ srcIp: a.ip, dstIp: b.ip, protocol, port }).allowed;
              const observed = seen.has(`${a.ip}>${b.ip}>${protocol}>${protocol === 'icmp' ? '' : port}`) || (port === 53 && (seen.has(`${a.ip}>${b.ip}>udp>53`) || seen.has(`${a.ip}>${b.ip}>tcp>53`)));
              if (allowed) assert.ok(observed, `${a.name} -> ${b.name} ${port}/${protocol} allowed but never observed`);
            }
          }
        }
      }),
      { numRuns: 150 },
    );
  });
});
