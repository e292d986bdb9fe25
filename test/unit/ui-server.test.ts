/**
 * The console's server (`bastion ui`): who gets in (token, Host, Origin,
 * Sec-Fetch-Site), the cookie trade, and the forwarding to the daemon's
 * socket, streams included. The daemon side is the real API app
 * (src/api/app.ts) over a stub daemon, on a real unix socket; the console
 * is the real server on a real loopback port.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import { createApiApp, type DaemonApi } from '../../src/api/app.js';
import { FlowStore, type FlowRecord } from '../../src/agent/flow-log.js';
import { FlowFollowers } from '../../src/api/flow-stream.js';
import { succeed, type ErrorBody, type StatusReport } from '../../src/api/types.js';
import { checkRequest, cookieName, hostName, type GuardConfig } from '../../src/ui/guard.js';
import { allowedHosts, startConsole, type ConsoleServer } from '../../src/ui/server.js';
import { parseListen } from '../../src/cli/commands/ui.js';
import { CliError } from '../../src/cli/errors.js';

const TOKEN = 'tok-0123456789abcdef';
const cfg: GuardConfig = { token: TOKEN, hosts: allowedHosts('127.0.0.1') };
const H = '127.0.0.1:9474';

describe('console guard (pure)', () => {
  it('needs the token: Bearer, ?token= on a GET, or the cookie', () => {
    const none = checkRequest(cfg, { method: 'GET', host: H });
    assert.equal(none.ok, false);
    assert.equal((none as { status: number; code: string }).status, 401);
    assert.equal((none as { code: string }).code, 'unauthorized');
    assert.deepEqual(checkRequest(cfg, { method: 'GET', host: H, authorization: `Bearer ${TOKEN}` }), { ok: true, via: 'bearer' });
    assert.deepEqual(checkRequest(cfg, { method: 'GET', host: H, queryToken: TOKEN }), { ok: true, via: 'query' });
    assert.deepEqual(checkRequest(cfg, { method: 'GET', host: H, cookie: `a=b; ${cookieName(TOKEN)}=${TOKEN}` }), { ok: true, via: 'cookie' });
    for (const bad of [
      { authorization: 'Bearer nope' },
      { queryToken: 'nope' },
      { cookie: `${cookieName(TOKEN)}=nope` },
      { cookie: `${cookieName('other')}=${TOKEN}` },
      { authorization: `Basic ${TOKEN}` },
    ]) {
      const v = checkRequest(cfg, { method: 'GET', host: H, ...bad });
      assert.equal(v.ok, false, JSON.stringify(bad));
      assert.equal((v as { status: number }).status, 401, JSON.stringify(bad));
    }
  });

  it('a token in the query string opens the page, never a change', () => {
    const v = checkRequest(cfg, { method: 'POST', host: H, queryToken: TOKEN });
    assert.equal(v.ok, false);
    assert.equal((v as { status: number }).status, 401);
  });

  it('refuses a foreign Host (DNS rebinding), whatever the token', () => {
    for (const host of ['evil.test:9474', 'evil.test', '10.0.0.1:9474', '127.0.0.1.evil.test:1', '', 'a b']) {
      const v = checkRequest(cfg, { method: 'GET', host, authorization: `Bearer ${TOKEN}` });
      assert.equal(v.ok, false, host);
      assert.equal((v as { status: number }).status, 403, host);
    }
    assert.equal(checkRequest(cfg, { method: 'GET', authorization: `Bearer ${TOKEN}` }).ok, false, 'no Host at all');
    // loopback names on any port (an SSH tunnel may forward another local port)
    for (const host of ['127.0.0.1:1', 'localhost:8080', '[::1]:9474', 'LOCALHOST:9474']) {
      assert.equal(checkRequest(cfg, { method: 'GET', host, authorization: `Bearer ${TOKEN}` }).ok, true, host);
    }
    // a named listen address is its own host too
    const named: GuardConfig = { token: TOKEN, hosts: allowedHosts('192.0.2.7') };
    assert.equal(checkRequest(named, { method: 'GET', host: '192.0.2.7:9474', authorization: `Bearer ${TOKEN}` }).ok, true);
  });

  it("refuses another origin (another port of localhost included) and cross-site fetches, even with the token or the cookie", () => {
    const cookie = `${cookieName(TOKEN)}=${TOKEN}`;
    for (const origin of ['http://evil.test', 'http://127.0.0.1:3000', 'null', 'https://127.0.0.1:9474']) {
      for (const cred of [{ cookie }, { authorization: `Bearer ${TOKEN}` }]) {
        const v = checkRequest(cfg, { method: 'POST', host: H, origin, ...cred });
        assert.equal(v.ok, false, origin);
        assert.equal((v as { status: number }).status, 403, origin);
      }
    }
    for (const site of ['cross-site', 'same-site']) {
      const v = checkRequest(cfg, { method: 'GET', host: H, secFetchSite: site, cookie });
      assert.equal((v as { status: number }).status, 403, site);
    }
    assert.deepEqual(checkRequest(cfg, { method: 'POST', host: H, origin: `http://${H}`, secFetchSite: 'same-origin', cookie }), { ok: true, via: 'cookie' });
    assert.deepEqual(checkRequest(cfg, { method: 'GET', host: H, secFetchSite: 'none', queryToken: TOKEN }), { ok: true, via: 'query' });
    // a change on the cookie alone must say where it comes from
    assert.equal((checkRequest(cfg, { method: 'DELETE', host: H, cookie }) as { status: number }).status, 403);
    // scripts: Bearer, no Origin
    assert.deepEqual(checkRequest(cfg, { method: 'POST', host: H, authorization: `Bearer ${TOKEN}` }), { ok: true, via: 'bearer' });
  });

  it('reads host names', () => {
    assert.equal(hostName('127.0.0.1:9474'), '127.0.0.1');
    assert.equal(hostName('[::1]:80'), '::1');
    assert.equal(hostName('Example.COM'), 'example.com');
    assert.equal(hostName('a b'), undefined);
    assert.equal(hostName('[::1'), undefined);
  });

  it('--listen: host:port, a port alone, no wildcard', () => {
    assert.deepEqual(parseListen('127.0.0.1:9474'), { host: '127.0.0.1', port: 9474 });
    assert.deepEqual(parseListen('9000'), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
    assert.deepEqual(parseListen('localhost:8080'), { host: 'localhost', port: 8080 });
    for (const bad of ['0.0.0.0:9474', '[::]:1', 'x', '127.0.0.1:99999', '127.0.0.1:']) {
      assert.throws(() => parseListen(bad), (e: unknown) => e instanceof CliError && e.exitCode === 2, bad);
    }
  });
});

/** A flow record (with the fields of the record before and after the learning work: the proxy reads neither). */
function flow(i: number): FlowRecord {
  return {
    time: new Date(1_700_000_000_000 + i).toISOString(),
    verdict: 'DROPPED',
    reason: 'policy-denied',
    trace: 'from-container',
    direction: 'egress',
    protocol: 'tcp',
    src: { identity: 300, name: 'attacker', labels: {}, ip: '10.0.0.9', port: 40000 + i },
    dst: { identity: 301, name: 'db', labels: {}, ip: '10.0.0.4', port: 5432 },
    policies: {},
    interface: 'if1',
    isReply: false,
    endpoint: 'attacker',
    bytes: 60,
  } as unknown as FlowRecord;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function http(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('console server: the page, the cookie, and the daemon behind it', () => {
  let dir: string;
  let daemon: Server;
  let ui: ConsoleServer;
  const flows = new FlowStore(100);
  const added: string[] = [];
  const bearer = () => ({ authorization: `Bearer ${ui.token}` });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-ui-test-'));
    const assets = join(dir, 'assets');
    mkdirSync(assets);
    writeFileSync(join(assets, 'console.js'), 'console.log("bundle")');
    writeFileSync(join(assets, 'console.css'), 'body{}');
    const api: DaemonApi = {
      status: () => ({ ok: true, endpoints: [] }) as unknown as StatusReport,
      reload: async () => succeed({}),
      policies: {
        list: () => [],
        add: async (text, _source, opts) => {
          if (!opts.dryRun) added.push(text);
          return succeed(opts.dryRun ? { dryRun: true as const, policies: [] } : { policies: [{ name: 'x', action: 'created' as const }], entries: 2, ms: 1 });
        },
        delete: async (names) => succeed({ deleted: names, entries: 0, ms: 0 }),
      },
      metrics: { text: async () => 'm 1\n', contentType: 'text/plain' },
      flows,
      followers: new FlowFollowers(flows),
    };
    const socketPath = join(dir, 'api.sock');
    daemon = createAdaptorServer({ fetch: createApiApp(api).fetch }) as Server;
    await new Promise<void>((r) => daemon.listen(socketPath, r));
    ui = await startConsole({ socketPath, host: '127.0.0.1', port: 0, assetsDir: assets });
  });

  after(async () => {
    await ui?.close();
    await new Promise<void>((r) => (daemon ? daemon.close(() => r()) : r()));
    daemon?.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints a loopback URL with a long random token', () => {
    assert.match(ui.openUrl, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]{43}$/);
  });

  it('refuses every path without the token, with the one error body', async () => {
    const port = Number(new URL(ui.url).port);
    for (const [m, p] of [['GET', '/'], ['GET', '/assets/console.js'], ['GET', '/v1/status'], ['POST', '/v1/policies'], ['GET', '/metrics'], ['GET', '/nope']]) {
      const r = await http(port, m!, p!);
      assert.equal(r.status, 401, `${m} ${p}`);
      assert.equal((JSON.parse(r.body) as ErrorBody).error.code, 'unauthorized');
    }
  });

  it('trades ?token= for an HttpOnly SameSite=Strict cookie and a clean URL; the cookie then opens the page', async () => {
    const port = Number(new URL(ui.url).port);
    const r = await http(port, 'GET', `/?token=${ui.token}`);
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, '/');
    const set = String(r.headers['set-cookie']);
    assert.match(set, new RegExp(`^${cookieName(ui.token)}=${ui.token}; Path=/; HttpOnly; SameSite=Strict`));
    const page = await http(port, 'GET', '/', { cookie: set.split(';')[0]! });
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="module" src="\/assets\/console.js">/);
    assert.match(String(page.headers['content-security-policy']), /frame-ancestors 'none'/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.equal(page.headers['referrer-policy'], 'no-referrer');
    const js = await http(port, 'GET', '/assets/console.js', { cookie: set.split(';')[0]! });
    assert.equal(js.status, 200);
    assert.match(String(js.headers['content-type']), /javascript/);
    assert.equal((await http(port, 'GET', '/assets/..%2Fapi.sock', bearer())).status, 404);
  });

  it('forwards the API: answers, error bodies and changes go to the daemon as they are', async () => {
    const port = Number(new URL(ui.url).port);
    const s = await http(port, 'GET', '/v1/status', bearer());
    assert.equal(s.status, 200);
    assert.deepEqual(JSON.parse(s.body), { ok: true, endpoints: [] });
    const missing = await http(port, 'GET', '/v1/nope', bearer());
    assert.equal(missing.status, 404);
    assert.equal((JSON.parse(missing.body) as ErrorBody).error.code, 'no-route');
    const doc = 'policies:\n  - { name: x, from: { app: a }, to: { app: b } }\n';
    const add = await http(port, 'POST', '/v1/policies?source=console', { ...bearer(), 'content-type': 'application/yaml', 'content-length': String(doc.length) }, doc);
    assert.equal(add.status, 200, add.body);
    assert.deepEqual(added, [doc]);
    // the token never reaches the daemon's query string
    const q = await http(port, 'GET', `/v1/flows?token=${ui.token}&limit=1`, {});
    assert.equal(q.status, 200);
  });

  it('a cross-origin text/plain POST (no preflight) is refused before it reaches the daemon, cookie or not', async () => {
    const port = Number(new URL(ui.url).port);
    const before = added.length;
    const doc = 'policies:\n  - { name: evil, from: {}, to: {} }\n';
    for (const origin of ['http://evil.test', `http://127.0.0.1:${port + 1}`]) {
      const r = await http(port, 'POST', '/v1/policies', { origin, 'content-type': 'text/plain', cookie: `${cookieName(ui.token)}=${ui.token}` }, doc);
      assert.equal(r.status, 403, origin);
      assert.equal((JSON.parse(r.body) as ErrorBody).error.code, 'forbidden');
    }
    const rebound = await http(port, 'POST', '/v1/policies', { host: `evil.test:${port}`, origin: `http://evil.test:${port}`, ...bearer() }, doc);
    assert.equal(rebound.status, 403);
    assert.equal(added.length, before, 'nothing reached the daemon');
  });

  it('streams /v1/flows?follow=1 through, live', async () => {
    const port = Number(new URL(ui.url).port);
    flows.push(flow(1));
    const lines: string[] = [];
    const got = new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/v1/flows?follow=1&limit=5', headers: { host: `127.0.0.1:${port}`, ...bearer() } }, (res) => {
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (d: string) => {
          buf += d;
          for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(buf.slice(0, i));
          if (lines.length === 1) flows.push(flow(2)); // live, after the history
          if (lines.length >= 2) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on('error', (e) => (lines.length >= 2 ? undefined : reject(e)));
      req.end();
    });
    await got;
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as FlowRecord).src.port),
      [40001, 40002],
    );
  });

  it('says the daemon is unreachable when its socket is gone (502, the one error body)', async () => {
    const alone = await startConsole({ socketPath: join(dir, 'no.sock'), host: '127.0.0.1', port: 0, assetsDir: join(dir, 'assets') });
    try {
      const r = await http(Number(new URL(alone.url).port), 'GET', '/v1/status', { authorization: `Bearer ${alone.token}` });
      assert.equal(r.status, 502);
      const b = JSON.parse(r.body) as ErrorBody;
      assert.equal(b.error.code, 'unreachable');
      assert.match(b.errors[0]!, /no daemon is listening on .*no\.sock/);
    } finally {
      await alone.close();
    }
  });
});
