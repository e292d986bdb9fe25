/**
 * The manager's HTTP API. It listens on a unix socket only reachable by root
 * (mode 0600 in a 0700 directory): the file system is the authentication, as
 * for the Docker socket. Routes:
 *
 *   GET  /v1/status            the status report (`bastion status`)
 *   GET  /v1/flows?limit=N     recent flows; &follow=1 streams NDJSON
 *   POST /v1/reload            re-read the config (same as SIGHUP)
 *   GET  /v1/policies          every policy: the config file's and the runtime ones
 *   POST /v1/policies          add or replace runtime policies (a `policies:` document, YAML or JSON);
 *                              ?dryRun=1 validates and reports what would change, changes nothing
 *   DELETE /v1/policies/NAME   delete a runtime policy (several: ?name=a&name=b)
 *   GET  /v1/audit?maxAge=S    the posture audit (`bastion audit`) over the daemon's own state, at most S seconds old (default 10)
 *   GET  /metrics              Prometheus metrics
 *   GET  /                     the web UI (network map and live flows)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { FlowRecord, FlowStore } from '../agent/flow-log.js';

/** An answer with its HTTP status. */
export interface ApiResult {
  code: number;
  body: unknown;
}

export interface ApiHandlers {
  status(): Promise<unknown> | unknown;
  reload(): Promise<{ ok: boolean; errors?: string[] }>;
  policies?: {
    list(): unknown;
    add(text: string, source: string, opts?: { dryRun?: boolean }): Promise<ApiResult>;
    delete(names: string[]): Promise<ApiResult>;
  };
  metrics(): Promise<string>;
  metricsContentType: string;
  flows: FlowStore;
  ui?(): string;
  /** the posture audit report, at most maxAgeMs old */
  audit?(maxAgeMs: number): Promise<unknown>;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(text + '\n');
}

/** Largest request body accepted (a policies document). */
const MAX_BODY = 4 << 20;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new BodyTooLarge(`request body over ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

class BodyTooLarge extends Error {}

function flowFilter(url: URL): (r: FlowRecord) => boolean {
  const verdict = url.searchParams.get('verdict')?.toUpperCase();
  const container = url.searchParams.get('container');
  return (r) =>
    (!verdict || r.verdict === verdict) &&
    (!container || r.src.name === container || r.dst.name === container || r.endpoint === container);
}

export async function startApiServer(socketPath: string, h: ApiHandlers): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  if (existsSync(socketPath)) unlinkSync(socketPath);

  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://bastion');
    try {
      if (req.method === 'GET' && url.pathname === '/v1/status') return sendJson(res, 200, await h.status());
      if (req.method === 'POST' && url.pathname === '/v1/reload') {
        const r = await h.reload();
        return sendJson(res, r.ok ? 200 : 422, r);
      }
      if (h.policies && url.pathname === '/v1/policies' && req.method === 'GET') return sendJson(res, 200, h.policies.list());
      if (h.policies && url.pathname === '/v1/policies' && req.method === 'POST') {
        const body = await readBody(req);
        const dryRun = ['1', 'true'].includes(url.searchParams.get('dryRun') ?? '');
        const r = await h.policies.add(body, url.searchParams.get('source') || 'request', { dryRun });
        return sendJson(res, r.code, r.body);
      }
      if (h.policies && req.method === 'DELETE' && (url.pathname === '/v1/policies' || url.pathname.startsWith('/v1/policies/'))) {
        const names = url.pathname === '/v1/policies' ? url.searchParams.getAll('name') : [decodeURIComponent(url.pathname.slice('/v1/policies/'.length))];
        if (names.length === 0 || names.some((n) => !n)) return sendJson(res, 400, { ok: false, errors: ['give the names of the policies to delete'] });
        const r = await h.policies.delete(names);
        return sendJson(res, r.code, r.body);
      }
      if (h.audit && req.method === 'GET' && url.pathname === '/v1/audit') {
        const maxAge = Number(url.searchParams.get('maxAge') ?? '10');
        if (!Number.isFinite(maxAge) || maxAge < 0) return sendJson(res, 400, { error: 'maxAge: a number of seconds, 0 or more' });
        return sendJson(res, 200, await h.audit(maxAge * 1000));
      }
      if (req.method === 'GET' && url.pathname === '/metrics') {
        res.writeHead(200, { 'content-type': h.metricsContentType });
        return res.end(await h.metrics());
      }
      if (req.method === 'GET' && url.pathname === '/v1/flows') {
        const filter = flowFilter(url);
        const limit = Number(url.searchParams.get('limit') ?? '100');
        if (url.searchParams.get('follow') !== '1') return sendJson(res, 200, h.flows.recent(limit, filter));
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        for (const r of h.flows.recent(limit, filter)) res.write(JSON.stringify(r) + '\n');
        const onFlow = (r: FlowRecord) => {
          if (filter(r)) res.write(JSON.stringify(r) + '\n');
        };
        h.flows.on('flow', onFlow);
        req.on('close', () => h.flows.off('flow', onFlow));
        return;
      }
      if (req.method === 'GET' && url.pathname === '/' && h.ui) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return res.end(h.ui());
      }
      sendJson(res, 404, { error: `no route ${req.method} ${url.pathname}` });
    } catch (err) {
      if (err instanceof BodyTooLarge) return sendJson(res, 413, { ok: false, errors: [err.message] });
      sendJson(res, 500, { error: (err as Error).message });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  return server;
}
