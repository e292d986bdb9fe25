/**
 * The API's contract: the daemon's services answer typed outcomes, the HTTP
 * layer (src/api/app.ts) alone turns them into status codes with one error
 * body, and the client reads that body. The services run on their real code
 * path (config reloader, runtime policies, manager) over a recording
 * datapath; the HTTP layer is checked both through hono's request() and
 * over a real unix socket.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, type Server } from 'node:http';
import { connect } from 'node:net';
import pino from 'pino';
import { createApiApp, MAX_BODY, type DaemonApi } from '../../src/api/app.js';
import { startApiServer } from '../../src/api/server.js';
import { apiCall, apiRequest, DaemonUnreachable, errorsOf } from '../../src/api/client.js';
import { fail, succeed, type ErrorBody, type FailureCode, type StatusReport } from '../../src/api/types.js';
import { FlowStore, type FlowRecord } from '../../src/agent/flow-log.js';
import { FlowFollowers } from '../../src/api/flow-stream.js';
import { ConfigReloader } from '../../src/daemon/config-reloader.js';
import { RuntimePolicies } from '../../src/daemon/runtime-policies.js';
import { RuntimePolicyService } from '../../src/daemon/policy-service.js';
import { recordingManager, TableNode } from '../helpers/recording-datapath.js';
import { monotonicMs } from '../../src/sys/clock.js';

function flow(i: number, verdict: string, src: string): FlowRecord {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
    verdict,
    reason: verdict === 'DROPPED' ? 'policy-denied' : 'new',
    direction: 'egress',
    protocol: 'tcp',
    src: { identity: 300, name: src, labels: { app: src }, ip: '10.0.0.2', port: 40000 + i },
    dst: { identity: 301, name: 'api', labels: { app: 'api' }, ip: '10.0.0.3', port: 8080 },
    policies: {},
    interface: `veth-${src}`,
    isReply: false,
    endpoint: src,
    bytes: 60,
  };
}

/** A DaemonApi whose parts a test replaces; the calls it got are recorded. */
function stubApi(over: Partial<DaemonApi> = {}): DaemonApi & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  const flows = over.flows ?? new FlowStore(100);
  return {
    calls,
    status: () => ({ ok: true, daemon: { pid: 1 }, big: 12345678901234n }) as unknown as StatusReport,
    reload: async () => succeed({}),
    policies: {
      list: () => [{ name: 'a', source: 'file', from: 'app=web', to: 'app=api', ports: 'any', spec: { name: 'a', from: { matchLabels: { app: 'web' } }, to: { matchLabels: { app: 'api' } } } }],
      add: async (text, source, opts) => {
        calls.push(['add', text, source, opts]);
        return succeed({ dryRun: true, policies: [] });
      },
      delete: async (names) => {
        calls.push(['delete', names]);
        return succeed({ deleted: names, entries: 0, ms: 0 });
      },
    },
    metrics: { text: async () => 'bastion_endpoints 4\n', contentType: 'text/plain; version=0.0.4' },
    flows,
    followers: new FlowFollowers(flows),
    graph: () => ({ generation: 3, endpoints: [], externals: [], edges: [{ from: 'web', to: 'api', ports: ['8080/tcp'], rules: ['web-to-api'] }], rules: [], truncated: false }),
    ...over,
  };
}

const STATUS_OF: Record<FailureCode, number> = {
  invalid: 422,
  conflict: 409,
  'not-found': 404,
  'bad-request': 400,
  'too-large': 413,
  stopping: 503,
  failed: 500,
};

describe('API: typed outcomes become status codes in one place, with one error body', () => {
  for (const [code, status] of Object.entries(STATUS_OF) as Array<[FailureCode, number]>) {
    it(`${code} → ${status}, { ok: false, error: { code, message }, errors }`, async () => {
      const app = createApiApp(stubApi({ reload: async () => fail(code, ['first problem', 'second problem']) }));
      const res = await app.request('/v1/reload', { method: 'POST' });
      assert.equal(res.status, status);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/);
      const body = (await res.json()) as ErrorBody;
      assert.deepEqual(body, { ok: false, error: { code, message: 'first problem\nsecond problem' }, errors: ['first problem', 'second problem'] });
      assert.deepEqual(errorsOf(res.status, body), ['first problem', 'second problem']);
    });
  }

  it('a success is { ok: true, ...value } with 200', async () => {
    const app = createApiApp(stubApi());
    const res = await app.request('/v1/reload', { method: 'POST' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
  });

  it('POST /v1/policies hands the body, ?source= and ?dryRun= to the service', async () => {
    const api = stubApi();
    const app = createApiApp(api);
    for (const [q, dryRun, source] of [
      ['?dryRun=1&source=f.yaml', true, 'f.yaml'],
      ['?dryRun=true', true, 'request'],
      ['?dryRun=0&source=', false, 'request'],
      ['', false, 'request'],
    ] as const) {
      const before = monotonicMs();
      const res = await app.request(`/v1/policies${q}`, { method: 'POST', body: 'policies: []' });
      assert.equal(res.status, 200);
      const [op, text, src, opts] = api.calls.pop() as [string, string, string, { dryRun: boolean; receivedAt: number }];
      assert.deepEqual([op, text, src, opts.dryRun], ['add', 'policies: []', source, dryRun]);
      // when the handler ran, on the clock a benchmark lines the daemon's log up with
      assert.ok(opts.receivedAt >= before && opts.receivedAt <= monotonicMs(), `receivedAt ${opts.receivedAt}`);
    }
  });

  it('DELETE takes one name in the path (decoded, slashes included) or several as ?name=', async () => {
    const api = stubApi();
    const app = createApiApp(api);
    for (const [path, names] of [
      ['/v1/policies/web-to-api', ['web-to-api']],
      ['/v1/policies/a%20b', ['a b']],
      ['/v1/policies/a/b', ['a/b']],
      ['/v1/policies/', ['']],
      ['/v1/policies?name=x&name=y', ['x', 'y']],
      ['/v1/policies', []],
    ] as const) {
      const res = await app.request(path, { method: 'DELETE' });
      assert.equal(res.status, 200, path);
      assert.deepEqual(api.calls.pop(), ['delete', names], path);
    }
  });

  it('an unknown route or method is 404 no-route; an exception is 500 internal; both with the error body', async () => {
    const app = createApiApp(
      stubApi({
        status: () => {
          throw new Error('boom');
        },
      }),
    );
    for (const [method, path] of [['GET', '/nope'], ['GET', '/v1/reload'], ['PUT', '/v1/policies']]) {
      const res = await app.request(path!, { method });
      assert.equal(res.status, 404);
      assert.deepEqual(await res.json(), { ok: false, error: { code: 'no-route', message: `no route ${method} ${path}` }, errors: [`no route ${method} ${path}`] });
    }
    const res = await app.request('/v1/status');
    assert.equal(res.status, 500);
    assert.deepEqual(await res.json(), { ok: false, error: { code: 'internal', message: 'boom' }, errors: ['boom'] });
  });

  it('status (64-bit counters as numbers), the dependency graph, policies, metrics; no page at /', async () => {
    const app = createApiApp(stubApi());
    const status = await app.request('/v1/status');
    assert.equal(status.status, 200);
    assert.deepEqual(await status.json(), { ok: true, daemon: { pid: 1 }, big: 12345678901234 });
    const list = await app.request('/v1/policies');
    assert.deepEqual(await list.json(), [{ name: 'a', source: 'file', from: 'app=web', to: 'app=api', ports: 'any', spec: { name: 'a', from: { matchLabels: { app: 'web' } }, to: { matchLabels: { app: 'api' } } } }]);
    const metrics = await app.request('/metrics');
    assert.equal(metrics.headers.get('content-type'), 'text/plain; version=0.0.4');
    assert.equal(await metrics.text(), 'bastion_endpoints 4\n');
    const graph = await app.request('/v1/graph');
    assert.equal(graph.status, 200);
    assert.deepEqual(((await graph.json()) as { edges: unknown[] }).edges, [{ from: 'web', to: 'api', ports: ['8080/tcp'], rules: ['web-to-api'] }]);
    // the console is `bastion ui`'s (src/ui/server.ts), not the daemon's
    const root = await app.request('/');
    assert.equal(root.status, 404);
    assert.equal(((await root.json()) as ErrorBody).error.code, 'no-route');
  });

  it('POST /v1/shutdown: ok with the pid, and the stop runs once the answer is out; without a shutdown, no route', async () => {
    let stopped = 0;
    const app = createApiApp(stubApi({ shutdown: () => ({ outcome: succeed({ pid: 4242 }), stop: () => stopped++ }) }));
    const r = await app.request('/v1/shutdown', { method: 'POST' });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ok: true, pid: 4242 });
    await new Promise((res) => setImmediate(res));
    assert.equal(stopped, 1);
    const none = await createApiApp(stubApi()).request('/v1/shutdown', { method: 'POST' });
    assert.equal(none.status, 404);
  });

  it('GET /v1/audit?maxAge=S: the report at most S seconds old (default 10); a bad maxAge is bad-request; without an audit, no route', async () => {
    const ages: number[] = [];
    const app = createApiApp(stubApi({ audit: async (ms) => (ages.push(ms), { generatedAt: 'now' }) as never }));
    assert.deepEqual(await (await app.request('/v1/audit')).json(), { generatedAt: 'now' });
    assert.equal((await app.request('/v1/audit?maxAge=0')).status, 200);
    assert.deepEqual(ages, [10_000, 0]);
    for (const bad of ['-1', 'x', 'Infinity']) {
      const res = await app.request(`/v1/audit?maxAge=${bad}`);
      assert.equal(res.status, 400, bad);
      assert.equal(((await res.json()) as ErrorBody).error.code, 'bad-request');
    }
    assert.equal((await createApiApp(stubApi()).request('/v1/audit')).status, 404);
  });

  it('GET /v1/flows: the last N, filtered by verdict (any case) and container', async () => {
    const api = stubApi();
    for (let i = 0; i < 10; i++) api.flows.push(flow(i, i % 2 ? 'DROPPED' : 'ALLOWED', i < 5 ? 'web' : 'attacker'));
    const app = createApiApp(api);
    const get = async (q: string) => ((await (await app.request(`/v1/flows${q}`)).json()) as FlowRecord[]).map((r) => r.src.port! - 40000);
    assert.deepEqual(await get(''), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(await get('?limit=3'), [7, 8, 9]);
    assert.deepEqual(await get('?verdict=dropped'), [1, 3, 5, 7, 9]);
    assert.deepEqual(await get('?container=web&verdict=ALLOWED'), [0, 2, 4]);
  });
});

describe('API over its unix socket', () => {
  let dir: string;
  let socket: string;
  let server: Server;
  const api = stubApi();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-api-'));
    socket = join(dir, 'run', 'bastion-t.sock');
    server = await startApiServer(socket, api);
  });
  after(() => {
    server?.closeAllConnections();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the socket is 0600 in a 0700 directory', () => {
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'run')).mode & 0o777, 0o700);
  });

  it(`a body over ${MAX_BODY} bytes is refused with 413 and the error body, and never reaches the service`, async () => {
    const before = api.calls.length;
    const r = await apiCall(socket, 'POST', '/v1/policies', 'x'.repeat(MAX_BODY + 1));
    assert.equal(r.status, 413);
    assert.deepEqual(r.body, { ok: false, error: { code: 'too-large', message: `request body over ${MAX_BODY} bytes` }, errors: [`request body over ${MAX_BODY} bytes`] });
    assert.equal(api.calls.length, before);
    const fits = await apiCall(socket, 'POST', '/v1/policies', 'x'.repeat(MAX_BODY));
    assert.equal(fits.status, 200);
  });

  it('a chunked body (no Content-Length) is counted as it is read: over the limit 413, under it reaches the service whole', async () => {
    const chunked = (size: number) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ socketPath: socket, method: 'POST', path: '/v1/policies?source=chunked' }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        for (let sent = 0; sent < size; sent += 65536) req.write('y'.repeat(Math.min(65536, size - sent)));
        req.end();
      });
    const big = await chunked(MAX_BODY + 65536);
    assert.equal(big.status, 413);
    assert.equal((JSON.parse(big.body) as ErrorBody).error.code, 'too-large');
    const small = await chunked(200_000);
    assert.equal(small.status, 200);
    const call = api.calls.pop() as [string, string, string];
    assert.deepEqual([call[0], call[1].length, call[2]], ['add', 200_000, 'chunked']);
  });

  it('a request without a Host header (HTTP/1.0) is served, as before hono', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const s = connect(socket);
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.on('end', () => resolve(text));
      s.on('error', reject);
      s.write('GET /v1/policies HTTP/1.0\r\n\r\n');
    });
    assert.match(answer, /^HTTP\/1\.[01] 200 /);
    assert.match(answer, /"name":"a"/);
  });

  it('the client: apiRequest throws the error messages; a missing socket is DaemonUnreachable', async () => {
    await assert.rejects(apiRequest(socket, 'GET', '/nope'), /no route GET \/nope/);
    await assert.rejects(apiRequest(join(dir, 'none.sock'), 'GET', '/v1/status'), DaemonUnreachable);
  });
});

describe('daemon services answer typed outcomes (real reloader, runtime policies and manager, recording datapath)', () => {
  let dir: string;
  let configPath: string;
  let reloader: ConfigReloader;
  let service: RuntimePolicyService;
  let rec: ReturnType<typeof recordingManager>;
  const logLines: string[] = [];
  const config = (extra = '') =>
    [
      'containers:',
      '  - { name: web, netns: web, labels: { app: web } }',
      '  - { name: api, netns: api, labels: { app: api } }',
      'policies:',
      '  - { name: web-to-api, from: { app: web }, to: { app: api }, ports: ["8080/tcp"] }',
      extra,
    ].join('\n');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-services-'));
    configPath = join(dir, 'bastion.yaml');
    writeFileSync(configPath, config());
    rec = recordingManager();
    rec.node.interfaces.set('web', TableNode.iface(1));
    rec.node.interfaces.set('api', TableNode.iface(2));
    const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
    const runtime = new RuntimePolicies(join(dir, 'policies.json'));
    reloader = new ConfigReloader({ configPath, platform: false, node: rec.node, runtime, log });
    service = new RuntimePolicyService(runtime, reloader, log);
    const loaded = await reloader.load();
    service.restore(loaded);
    await reloader.applyFirst(rec.manager, { config: loaded, found: await reloader.discover(loaded.containers) });
    service.attach(rec.manager);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const doc = (name: string, ports = '["9090/tcp"]') => `policies:\n  - { name: ${name}, from: { app: web }, to: { app: api }, ports: ${ports} }\n`;

  it('add: invalid (naming the document, policy and field), conflict with a file policy, dry run writes nothing, then created and replaced', async () => {
    const bad = await service.add(doc('broken', '["80/tcpx"]'), 'extra.yaml');
    assert.equal(bad.ok, false);
    assert.equal(!bad.ok && bad.code, 'invalid');
    assert.match(!bad.ok ? bad.errors.join() : '', /extra\.yaml.*policies\[0\] \(broken\)\.ports\[0\]/);

    const clash = await service.add(doc('web-to-api'), 'cli');
    assert.deepEqual(clash.ok ? undefined : [clash.code, clash.errors.length], ['conflict', 1]);

    const writes = rec.datapath.ops.length;
    const dry = await service.add(doc('web-to-api-9090'), 'cli', { dryRun: true });
    assert.deepEqual(dry, succeed({ dryRun: true, policies: [{ name: 'web-to-api-9090', action: 'created' }] }));
    assert.equal(rec.datapath.ops.length, writes, 'a dry run writes nothing');

    const created = await service.add(doc('web-to-api-9090'), 'cli');
    assert.ok(created.ok && 'entries' in created.value && created.value.entries > 0, JSON.stringify(created));
    assert.ok(rec.datapath.ops.length > writes);
    const replaced = await service.add(doc('web-to-api-9090', '["9091/tcp"]'), 'cli');
    assert.deepEqual(replaced.ok && replaced.value.policies, [{ name: 'web-to-api-9090', action: 'replaced' }]);
    assert.deepEqual(
      service.list().map((r) => [r.name, r.source, r.ports]),
      [
        ['web-to-api', 'file', '8080/tcp'],
        ['web-to-api-9090', 'api', '9091/tcp'],
      ],
    );
  });

  it('the "policies applied" line says when the request reached the daemon and when its writes were in (mono: the clock of process.hrtime)', async () => {
    const receivedAt = monotonicMs();
    const r = await service.add(doc('timed'), 'request', { receivedAt });
    assert.equal(r.ok, true);
    const line = logLines.map((l) => JSON.parse(l) as { msg: string; policies?: Array<{ name: string }>; mono?: { received: number; written: number } }).filter((l) => l.msg === 'policies applied').pop();
    assert.deepEqual(line?.policies?.map((p) => p.name), ['timed']);
    assert.equal(line?.mono?.received, +receivedAt.toFixed(3));
    assert.ok(line!.mono!.written >= line!.mono!.received && line!.mono!.written <= monotonicMs(), JSON.stringify(line?.mono));
  });

  it('delete: not-found, conflict for a file policy, bad-request without names; all or nothing', async () => {
    const unknown = await service.delete(['web-to-api-9090', 'nope']);
    assert.deepEqual(unknown.ok ? undefined : [unknown.code, unknown.errors], ['not-found', ['no runtime policy "nope"']]);
    const file = await service.delete(['web-to-api']);
    assert.equal(!file.ok && file.code, 'conflict');
    assert.match(!file.ok ? file.errors[0]! : '', /comes from the config file/);
    assert.deepEqual(await service.delete([]), fail('bad-request', ['give the names of the policies to delete']));
    assert.deepEqual(await service.delete(['']), fail('bad-request', ['give the names of the policies to delete']));
    assert.ok(service.list().some((r) => r.name === 'web-to-api-9090'), 'nothing was deleted');
    const done = await service.delete(['web-to-api-9090']);
    assert.deepEqual(done.ok && done.value.deleted, ['web-to-api-9090']);
  });

  it('reload: invalid (previous config stays), a clash with a runtime policy is invalid, a good file applies', async () => {
    assert.ok((await service.add(doc('runtime-one'), 'cli')).ok);
    writeFileSync(configPath, config('  - { name: x, from: { app: web }, to: { app: api }, ports: ["80/tcpx"] }'));
    const bad = await reloader.reload();
    assert.equal(!bad.ok && bad.code, 'invalid');
    assert.match(!bad.ok ? bad.errors.join() : '', /policies\[1\] \(x\)\.ports\[0\]/);
    writeFileSync(configPath, config('  - { name: runtime-one, from: { app: api }, to: { app: web } }'));
    const clash = await reloader.reload();
    assert.equal(!clash.ok && clash.code, 'invalid');
    assert.match(!clash.ok ? clash.errors.join() : '', /policy "runtime-one" is also a runtime policy/);
    assert.deepEqual(reloader.config?.policies.map((p) => p.name), ['web-to-api'], 'the previous config is still in force');
    writeFileSync(configPath, config('  - { name: api-to-web, from: { app: api }, to: { app: web } }'));
    assert.deepEqual(await reloader.reload(), succeed({}));
    assert.deepEqual(reloader.config?.policies.map((p) => p.name), ['web-to-api', 'api-to-web']);
  });

  it('a stopping daemon starts no change: stopping', async () => {
    reloader.close();
    service.close();
    for (const o of [await reloader.reload(), await service.add(doc('late'), 'cli'), await service.delete(['runtime-one'])]) {
      assert.deepEqual(o, fail('stopping', ['daemon is stopping']));
    }
  });
});
