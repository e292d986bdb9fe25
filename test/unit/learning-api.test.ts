/**
 * The learning side of the API contract (/work CONTRACT-learn-console:
 * GET /v1/flows filters, POST /v1/learn, POST /v1/verify) through the hono
 * app and the daemon's LearningService, on a flow store and a history on disk.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiApp, type DaemonApi } from '../../src/api/app.js';
import { FlowStore } from '../../src/agent/flow-log.js';
import { FlowFollowers } from '../../src/api/flow-stream.js';
import { LearningService } from '../../src/daemon/learning-service.js';
import { FlowHistory } from '../../src/flows/history.js';
import type { FlowRecord } from '../../src/flows/record.js';
import type { LearnAnswer, VerifyAnswer } from '../../src/api/types.js';
import { parseConfigText } from '../../src/policy/bastion-config.js';
import { flow, HOST, ws } from '../helpers/flows.js';

const dir = mkdtempSync(join(tmpdir(), 'bastion-learn-api-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const web = ws('web', 300, '10.9.0.10');
const api = ws('api', 301, '10.9.0.11');
const db = ws('db', 302, '10.9.0.12');

async function app(records: FlowRecord[], withHistory: boolean) {
  const flows = new FlowStore(1000);
  let history: FlowHistory | undefined;
  if (withHistory) {
    history = new FlowHistory({ dir: mkdtempSync(join(dir, 'h-')), maxBytes: 1 << 20 });
    await history.open();
  }
  for (const r of records) {
    flows.push(r);
    history?.append(r);
  }
  const learning = new LearningService(flows, history);
  const d: DaemonApi = {
    status: () => ({}) as never,
    reload: async () => ({ ok: true, value: {} }),
    policies: { list: () => [], add: async () => ({ ok: true, value: { dryRun: true, policies: [] } }), delete: async () => ({ ok: true, value: { deleted: [], entries: 0, ms: 0 } }) },
    metrics: { text: async () => '', contentType: 'text/plain' },
    flows,
    followers: new FlowFollowers(flows),
    learning,
  };
  return { app: createApiApp(d), history };
}

const now = Date.now();
const recording = [
  flow(web, api, 8080, { time: now - 3 * 3600_000 }),
  flow(web, api, 8080, { time: now - 600_000 }),
  flow(api, db, 5432, { verdict: 'AUDIT', reason: 'policy-denied', time: now - 500_000 }),
  flow(web, HOST, 53, { protocol: 'udp', time: now - 400_000 }),
  flow(web, db, 5432, { verdict: 'DROPPED', time: now - 300_000 }),
];

describe('API: flows, learn, verify', () => {
  for (const withHistory of [true, false]) {
    const what = withHistory ? 'with a history on disk' : 'with the recent flows only';
    it(`GET /v1/flows filters as documented (${what})`, async () => {
      const { app: a, history } = await app(recording, withHistory);
      const get = async (q: string) => {
        const res = await a.request(`/v1/flows?${q}`);
        assert.equal(res.status, 200, q);
        return ((await res.json()) as FlowRecord[]).map((r) => `${r.src.name}>${r.dst.name}:${r.dst.port}`);
      };
      assert.deepEqual(await get('since=1h'), ['web>api:8080', 'api>db:5432', 'web>host:53', 'web>db:5432']);
      assert.deepEqual(await get('last=2'), ['web>host:53', 'web>db:5432']);
      assert.deepEqual(await get('limit=1'), ['web>db:5432']);
      assert.deepEqual(await get('from=web&verdict=ALLOWED&verdict=DROPPED&since=2h'), ['web>api:8080', 'web>host:53', 'web>db:5432']);
      assert.deepEqual(await get('toLabel=app=db&reason=policy-denied'), ['api>db:5432', 'web>db:5432']);
      assert.deepEqual(await get('port=53&protocol=udp'), ['web>host:53']);
      assert.deepEqual(await get('container=api&until=8m'), ['web>api:8080', 'web>api:8080', 'api>db:5432']);
      const bad = await a.request('/v1/flows?port=http');
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { errors: string[] }).errors[0]!, /port "http"/);
      await history?.close();
    });
  }

  it('POST /v1/learn gives the document, its YAML (valid for POST /v1/policies) and the count', async () => {
    const { app: a, history } = await app(recording, true);
    const res = await a.request('/v1/learn', { method: 'POST', body: JSON.stringify({ select: { app: 'web' }, since: '24h' }) });
    assert.equal(res.status, 200);
    const body = (await res.json()) as LearnAnswer & { ok: boolean };
    assert.equal(body.ok, true);
    assert.deepEqual(body.document.policies.map((p) => p.name), ['learned-web-to-api-8080-tcp', 'learned-web-to-host-dns']);
    assert.deepEqual(body.document.policies[0]!.evidence.flows, 2);
    assert.equal(body.flows, 3);
    assert.ok(parseConfigText(body.yaml, 'learned', { policiesOnly: true }).ok);
    const since = await (await a.request('/v1/learn', { method: 'POST', body: JSON.stringify({ select: { app: 'web' }, since: '1h' }) })).json();
    assert.equal((since as LearnAnswer).document.policies[0]!.evidence.flows, 1);
    for (const [body, status] of [
      ['not json', 400],
      ['{"select":"app=web"}', 422],
      ['{"since":"yesterday"}', 422],
      ['{"mergePorts":"yes"}', 422],
    ] as const) {
      const r = await a.request('/v1/learn', { method: 'POST', body });
      assert.equal(r.status, status, body);
    }
    await history?.close();
  });

  it('POST /v1/verify: 200 ok:true, 200 ok:false naming the flows, 422 for an invalid candidate', async () => {
    const { app: a, history } = await app(recording, true);
    const learned = (await (await a.request('/v1/learn', { method: 'POST', body: '{}' })).json()) as LearnAnswer;
    let res = await a.request('/v1/verify', { method: 'POST', body: JSON.stringify({ candidate: learned.yaml }) });
    assert.equal(res.status, 200);
    let v = (await res.json()) as VerifyAnswer;
    assert.equal(v.ok, true);
    assert.equal(v.replayed, 5);
    const narrower = learned.yaml.replace(/\n  # evidence[^\n]*\n  - name: learned-api-to-db-5432-tcp\n(    [^\n]*\n)+/, '\n');
    assert.notEqual(narrower, learned.yaml);
    res = await a.request('/v1/verify', { method: 'POST', body: JSON.stringify({ candidate: narrower }) });
    v = (await res.json()) as VerifyAnswer;
    assert.equal(res.status, 200);
    assert.equal(v.ok, false);
    assert.deepEqual(v.wouldDrop.map((f) => [f.src.name, f.dst.name, f.dst.port, f.verdict]), [['api', 'db', 5432, 'AUDIT']]);
    res = await a.request('/v1/verify', { method: 'POST', body: JSON.stringify({ candidate: narrower, containers: ['web'] }) });
    assert.equal(((await res.json()) as VerifyAnswer).ok, true, 'only web\'s flows replayed');
    res = await a.request('/v1/verify', { method: 'POST', body: JSON.stringify({ candidate: 'policies:\n  - { name: x, from: { app: web }, to: { app: api }, ports: ["80/tcpx"] }\n' }) });
    assert.equal(res.status, 422);
    assert.match(((await res.json()) as { errors: string[] }).errors[0]!, /candidate: policies\[0\] \(x\)\.ports\[0\]/);
    res = await a.request('/v1/verify', { method: 'POST', body: '{}' });
    assert.equal(res.status, 422);
    await history?.close();
  });
});
