/**
 * `bastion ui`: the web console's server. It listens on a loopback TCP
 * address (a browser cannot open the daemon's unix socket), lets in only
 * requests with the access token from the console's own page
 * (src/ui/guard.ts), serves the page and its bundle (built into dist/ui by
 * scripts/build-ui.mjs: no CDN, it works offline), and forwards /v1/* and
 * /metrics to the daemon's socket as they are: the console changes nothing
 * except through the API the CLI uses, validated by the daemon the same way.
 *
 *   GET /?token=T    trades the token for a cookie, redirects to /
 *   GET /            the page (src/ui/page.ts)
 *   GET /assets/F    the bundle (console.js, console.css)
 *   * /v1/..., GET /metrics   the daemon's API (streams pass through, with their back-pressure)
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { createAdaptorServer, type HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { STATUS } from '../api/app.js';
import { errorBody, type ErrorCode } from '../api/types.js';
import { checkRequest, cookieName, hostName, LOOPBACK_HOSTS, type Credential, type GuardConfig } from './guard.js';
import { renderPage } from './page.js';

/** dist/ui, where the bundle is built (this file runs from dist/src/ui). */
export const ASSETS_DIR = fileURLToPath(new URL('../../ui/', import.meta.url));

export interface ConsoleOptions {
  /** the daemon's API socket */
  socketPath: string;
  host: string;
  port: number;
  /** default: 32 random bytes */
  token?: string;
  assetsDir?: string;
}

export interface ConsoleServer {
  url: string;
  /** the URL with the token: what the user opens */
  openUrl: string;
  token: string;
  server: Server;
  close(): Promise<void>;
}

type Env = { Bindings: HttpBindings; Variables: { via: Credential } };

const ASSET_TYPES: Record<string, string> = {
  'console.js': 'text/javascript; charset=utf-8',
  'console.js.map': 'application/json',
  'console.css': 'text/css; charset=utf-8',
};

/** Headers of every answer: no framing (clickjacking), no sniffing, no referrer (the first URL carries the token), only our own scripts. */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

function refuse(c: Context<Env>, code: ErrorCode, errors: string[]): Response {
  return c.body(JSON.stringify(errorBody(code, errors)) + '\n', STATUS[code], { 'content-type': 'application/json', ...SECURITY_HEADERS });
}

/** The host names the console answers to: loopback, and the address it listens on. */
export function allowedHosts(listenHost: string): Set<string> {
  const hosts = new Set(LOOPBACK_HOSTS);
  const h = hostName(listenHost.includes(':') && !listenHost.startsWith('[') ? `[${listenHost}]` : listenHost);
  if (h && h !== '0.0.0.0' && h !== '::') hosts.add(h);
  return hosts;
}

/** Request headers the daemon gets: what describes the body, nothing that authenticates to the console. */
const FORWARDED_REQUEST_HEADERS = ['content-type', 'content-length', 'transfer-encoding', 'accept'];
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'content-length', 'transfer-encoding'];

/**
 * Hands one request to the daemon's socket and its answer back, streaming
 * both ways: a flow stream (/v1/flows?follow=1) keeps its back-pressure (the
 * daemon sees a slow browser as a slow follower), and a browser that goes
 * away closes the daemon's side too.
 */
function forward(socketPath: string, path: string, incoming: IncomingMessage, outgoing: ServerResponse): void {
  const headers: OutgoingHttpHeaders = {};
  for (const h of FORWARDED_REQUEST_HEADERS) if (incoming.headers[h] !== undefined) headers[h] = incoming.headers[h];
  const upstream = request({ socketPath, method: incoming.method, path, headers }, (res) => {
    const out: OutgoingHttpHeaders = { ...SECURITY_HEADERS };
    for (const h of FORWARDED_RESPONSE_HEADERS) if (res.headers[h] !== undefined) out[h] = res.headers[h];
    outgoing.writeHead(res.statusCode ?? 502, out);
    outgoing.flushHeaders();
    res.pipe(outgoing);
    res.on('error', () => outgoing.destroy());
  });
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    if (outgoing.headersSent) return void outgoing.destroy();
    const why =
      err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
        ? `no daemon is listening on ${socketPath}`
        : `the daemon at ${socketPath} did not answer: ${err.message}`;
    outgoing.writeHead(STATUS.unreachable, { 'content-type': 'application/json', ...SECURITY_HEADERS });
    outgoing.end(JSON.stringify(errorBody('unreachable', [why])) + '\n');
  });
  outgoing.on('close', () => upstream.destroy());
  incoming.pipe(upstream);
}

export function createConsoleApp(o: { socketPath: string; guard: GuardConfig; assetsDir: string }): Hono<Env> {
  const app = new Hono<Env>();
  const cookie = cookieName(o.guard.token);

  app.use('*', async (c, next) => {
    const v = checkRequest(o.guard, {
      method: c.req.method,
      host: c.req.header('host'),
      origin: c.req.header('origin'),
      secFetchSite: c.req.header('sec-fetch-site'),
      authorization: c.req.header('authorization'),
      cookie: c.req.header('cookie'),
      queryToken: c.req.query('token'),
    });
    if (!v.ok) return refuse(c, v.code, [v.message]);
    c.set('via', v.via);
    await next();
  });

  app.get('/', (c) => {
    if (c.get('via') === 'query') {
      // the token leaves the address bar (and the history) for an HttpOnly cookie that only this origin's requests carry
      return c.body(null, 303, {
        location: '/',
        'set-cookie': `${cookie}=${o.guard.token}; Path=/; HttpOnly; SameSite=Strict`,
        ...SECURITY_HEADERS,
      });
    }
    return c.body(renderPage(), 200, { 'content-type': 'text/html; charset=utf-8', ...SECURITY_HEADERS });
  });

  app.get('/assets/:name', (c) => {
    const name = c.req.param('name');
    const type = ASSET_TYPES[name];
    const file = join(o.assetsDir, name);
    if (!type || !existsSync(file)) return refuse(c, 'no-route', [`no asset ${name}`]);
    return c.body(readFileSync(file), 200, { 'content-type': type, ...SECURITY_HEADERS });
  });

  const proxy = (c: Context<Env>) => {
    const url = new URL(c.req.url);
    const q = new URLSearchParams(url.search);
    q.delete('token');
    const qs = q.toString();
    forward(o.socketPath, url.pathname + (qs ? `?${qs}` : ''), c.env.incoming, c.env.outgoing);
    return RESPONSE_ALREADY_SENT;
  };
  app.all('/v1/*', proxy);
  app.get('/metrics', proxy);

  app.notFound((c) => refuse(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]));
  app.onError((err, c) => refuse(c, 'internal', [err.message]));
  return app;
}

/** Starts the console; the caller prints `openUrl`. */
export async function startConsole(o: ConsoleOptions): Promise<ConsoleServer> {
  const assetsDir = o.assetsDir ?? ASSETS_DIR;
  if (!existsSync(join(assetsDir, 'console.js'))) {
    throw new Error(`the console's page is not built (${join(assetsDir, 'console.js')} is missing): run "npm run build" or scripts/setup`);
  }
  const token = o.token ?? randomBytes(32).toString('base64url');
  const app = createConsoleApp({ socketPath: o.socketPath, guard: { token, hosts: allowedHosts(o.host) }, assetsDir });
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}/`;
  return {
    url,
    openUrl: `${url}?token=${token}`,
    token,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
