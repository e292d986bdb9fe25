/**
 * The daemon's HTTP API, as a hono app. Routes:
 *
 *   GET  /v1/status            the status report (`bastion status`)
 *   GET  /v1/graph             the dependency graph policy describes (the console's map)
 *   GET  /v1/flows             flows (src/flows/filter.ts): last=N (default 100; all), since, until, from, to,
 *                              container, fromLabel, toLabel, port, protocol, verdict, reason (repeatable);
 *                              a bare array of FlowRecord; the recent flows in memory, or with since/until
 *                              the history on disk; &follow=1 streams NDJSON, with {"type":"lost","count":N}
 *                              where a slow client missed records (src/api/flow-stream.ts)
 *   GET  /v1/modes             every container's mode and where it comes from
 *   PUT  /v1/containers/NAME/mode   {"mode":"audit"|"enforce"}: set a container's mode (kept across restarts)
 *   POST /v1/learn             {select?, containers?, since?, mergePorts?}: the policies the recorded flows imply
 *   POST /v1/verify            {candidate, since?, containers?}: replay the recorded flows against a candidate
 *   POST /v1/reload            re-read the config (same as SIGHUP); containers whose interface vanished are found again
 *   POST /v1/status/verify     read every managed map and stack back now, repair what differs (`bastion status --verify`)
 *   POST /v1/shutdown          stop the daemon (same as SIGTERM; `bastion down` uses it): enforcement stays
 *   GET  /v1/policies          every policy: the config file's and the runtime ones
 *   POST /v1/policies          add or replace runtime policies (a `policies:` document, YAML or JSON);
 *                              ?dryRun=1 validates and reports what would change, changes nothing;
 *                              ?source= names the document in error messages
 *   DELETE /v1/policies/NAME   delete a runtime policy (several: DELETE /v1/policies?name=a&name=b)
 *   GET  /v1/audit?maxAge=S    the posture audit (`bastion audit`) over the daemon's own state, at most S seconds old (default 10)
 *   GET  /metrics              Prometheus metrics
 *
 * The web console is not served here: `bastion ui` serves it on a loopback
 * TCP port and forwards its API requests to this socket (src/ui/server.ts).
 *
 * The services answer typed outcomes (src/api/types.ts); this file alone
 * turns them into status codes, and every error has one body shape:
 * { ok: false, error: { code, message }, errors: [...] }.
 */
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { FlowStore } from '../agent/flow-log.js';
import type { FlowRecord } from '../flows/record.js';
import { filterInputFromQuery, flowPredicate, parseFlowFilter, FlowFilterError, type FlowFilterInput } from '../flows/filter.js';
import type { FlowFollowers } from './flow-stream.js';
import type { AuditReport } from '../audit/findings.js';
import { errorBody } from './types.js';
import { monotonicMs } from '../sys/clock.js';
import type {
  ErrorCode,
  LearnAnswer,
  ModeChange,
  ModesAnswer,
  Outcome,
  VerifyAnswer,
  PolicyAddResult,
  PolicyDeleteResult,
  PolicyRow,
  ReloadResult,
  ShutdownResult,
  StatusReport,
  VerifyResult,
  GraphReport,
} from './types.js';

/** What the API serves; the daemon (src/daemon/daemon.ts) provides it. */
export interface DaemonApi {
  status(): StatusReport;
  /** the dependency graph (undefined until the manager exists) */
  graph?(): GraphReport | undefined;
  reload(): Promise<Outcome<ReloadResult>>;
  /** a drift check now: maps and stacks read back and repaired */
  verify?(): Promise<Outcome<VerifyResult>>;
  policies: {
    list(): PolicyRow[];
    /** receivedAt: when the request reached its handler (monotonicMs), for the daemon's log */
    add(text: string, source: string, opts: { dryRun?: boolean; receivedAt?: number }): Promise<Outcome<PolicyAddResult>>;
    delete(names: string[]): Promise<Outcome<PolicyDeleteResult>>;
  };
  metrics: { text(): Promise<string>; contentType: string };
  flows: FlowStore;
  /** the live streams of /v1/flows?follow=1, bounded per client */
  followers: FlowFollowers;
  /** the posture audit report, at most maxAgeMs old */
  audit?(maxAgeMs: number): Promise<AuditReport>;
  /** audit per workload (src/daemon/modes.ts) */
  modes?: {
    list(): ModesAnswer;
    set(name: string, mode: unknown): Promise<Outcome<ModeChange>>;
  };
  /** flow queries over the history, learning, replay (src/daemon/learning-service.ts) */
  learning?: {
    query(q: { input: FlowFilterInput; last?: string }): Promise<Outcome<FlowRecord[]>>;
    learn(body: unknown): Promise<Outcome<LearnAnswer>>;
    verify(body: unknown): Promise<Outcome<VerifyAnswer>>;
  };
  /** whether the daemon will stop, and the stop to run once the answer has left (enforcement stays in place) */
  shutdown?(): { outcome: Outcome<ShutdownResult>; stop(): void };
}

type Env = { Bindings: HttpBindings };

/** Largest request body accepted (a policies document). */
export const MAX_BODY = 4 << 20;

/** The one place where a kind of failure becomes an HTTP status (the console's server uses it too). */
export const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  'no-route': 404,
  conflict: 409,
  'too-large': 413,
  invalid: 422,
  internal: 500,
  failed: 500,
  unreachable: 502,
  stopping: 503,
};

/** JSON with a trailing newline (for curl); 64-bit counters as numbers. */
function json(c: Context<Env>, status: ContentfulStatusCode, body: unknown): Response {
  return c.body(jsonText(body) + '\n', status, { 'content-type': 'application/json' });
}

/**
 * JSON of an answer. Without a replacer first: a replacer is a call per
 * value, which made a status of 500,000 rules (50 MB) several times
 * slower; only an answer that holds a bigint (JSON.stringify throws on
 * one) pays for it.
 */
function jsonText(body: unknown): string {
  try {
    return JSON.stringify(body);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
  }
}

function failure(c: Context<Env>, code: ErrorCode, errors: string[]): Response {
  return json(c, STATUS[code], errorBody(code, errors));
}

/** A service's outcome as an answer: { ok: true, ...value }, or the error body. */
function answer<T extends object>(c: Context<Env>, outcome: Outcome<T>): Response {
  return outcome.ok ? json(c, 200, { ok: true, ...outcome.value }) : failure(c, outcome.code, outcome.errors);
}

function filterInput(c: Context<Env>): FlowFilterInput {
  return filterInputFromQuery(
    (k) => c.req.query(k),
    (k) => c.req.queries(k),
  );
}

/** A JSON body, or undefined when it is not JSON. */
async function jsonBody(c: Context<Env>): Promise<{ ok: true; value: unknown } | { ok: false }> {
  try {
    return { ok: true, value: JSON.parse(await c.req.text()) as unknown };
  } catch {
    return { ok: false };
  }
}

const tooLarge = (c: Context<Env>) => failure(c, 'too-large', [`request body over ${MAX_BODY} bytes`]);
const bodyLimited = bodyLimit({ maxSize: MAX_BODY, onError: tooLarge });

/**
 * A body with a Content-Length is judged by it (hono's bodyLimit does the
 * same) without touching the request's web stream: that keeps
 * @hono/node-server's direct read of the body, and a policy add 0.5 ms
 * faster (p50 0.9 -> 0.46 ms over 2,000 dry runs on the socket; the
 * hand-written server before hono: 0.41 ms). A chunked
 * body goes through bodyLimit, which counts as it reads.
 */
const limitBody: MiddlewareHandler<Env> = async (c, next) => {
  const length = c.req.header('content-length');
  if (length === undefined || c.req.header('transfer-encoding') !== undefined) return bodyLimited(c, next);
  if (Number(length) > MAX_BODY) return tooLarge(c);
  await next();
};

export function createApiApp(api: DaemonApi): Hono<Env> {
  const app = new Hono<Env>();

  app.get('/v1/status', (c) => json(c, 200, api.status()));
  app.get('/v1/graph', (c) => {
    const g = api.graph?.();
    return g ? json(c, 200, g) : failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
  });
  app.post('/v1/reload', async (c) => answer(c, await api.reload()));
  app.post('/v1/status/verify', async (c) => {
    if (!api.verify) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    return answer(c, await api.verify());
  });
  app.post('/v1/shutdown', (c) => {
    if (!api.shutdown) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    const { outcome, stop } = api.shutdown();
    // the server closes its connections when the daemon stops: only once this answer is out
    if (outcome.ok) c.env?.outgoing ? c.env.outgoing.once('finish', stop) : setImmediate(stop);
    return answer(c, outcome);
  });

  app.get('/v1/policies', (c) => json(c, 200, api.policies.list()));
  app.post(
    '/v1/policies',
    limitBody,
    async (c) => {
      const receivedAt = monotonicMs();
      const dryRun = ['1', 'true'].includes(c.req.query('dryRun') ?? '');
      return answer(c, await api.policies.add(await c.req.text(), c.req.query('source') || 'request', { dryRun, receivedAt }));
    },
  );
  app.delete('/v1/policies', async (c) => answer(c, await api.policies.delete(c.req.queries('name') ?? [])));
  // {.*}: a name with a slash is an unknown policy, not an unknown route
  app.delete('/v1/policies/:name{.*}', async (c) => answer(c, await api.policies.delete([c.req.param('name')])));

  app.get('/v1/audit', async (c) => {
    if (!api.audit) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    const maxAge = Number(c.req.query('maxAge') ?? '10');
    if (!Number.isFinite(maxAge) || maxAge < 0) return failure(c, 'bad-request', ['maxAge: a number of seconds, 0 or more']);
    return json(c, 200, await api.audit(maxAge * 1000));
  });

  app.get('/metrics', async (c) => c.body(await api.metrics.text(), 200, { 'content-type': api.metrics.contentType }));

  app.get('/v1/flows', async (c) => {
    const input = filterInput(c);
    // last=N, or limit=N (its name before issue 14)
    const last = c.req.query('last') ?? c.req.query('limit');
    if (c.req.query('follow') !== '1') {
      if (api.learning) {
        const r = await api.learning.query({ input, ...(last !== undefined ? { last } : {}) });
        return r.ok ? json(c, 200, r.value) : failure(c, r.code, r.errors);
      }
    }
    let filter: (r: FlowRecord) => boolean;
    try {
      filter = flowPredicate(parseFlowFilter(input, Date.now()));
    } catch (err) {
      if (err instanceof FlowFilterError) return failure(c, 'bad-request', [err.message]);
      throw err;
    }
    const limit = last === undefined ? 100 : last === 'all' ? Number.MAX_SAFE_INTEGER : Number(last);
    if (!Number.isInteger(limit) || limit < 0) return failure(c, 'bad-request', [`last "${last}": expected a number of flows, or all`]);
    if (c.req.query('follow') !== '1') return json(c, 200, api.flows.recent(limit, filter));
    // the follower writes to the socket itself: it must see res.write() return false
    api.followers.follow(c.env.outgoing, limit, filter);
    return RESPONSE_ALREADY_SENT;
  });

  app.get('/v1/modes', (c) => (api.modes ? json(c, 200, api.modes.list()) : failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`])));
  app.put('/v1/containers/:name/mode', limitBody, async (c) => {
    if (!api.modes) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    const body = await jsonBody(c);
    if (!body.ok) return failure(c, 'bad-request', ['expected a JSON body such as {"mode":"audit"}']);
    const mode = typeof body.value === 'object' && body.value !== null ? (body.value as { mode?: unknown }).mode : undefined;
    return answer(c, await api.modes.set(c.req.param('name'), mode));
  });
  app.post('/v1/learn', limitBody, async (c) => {
    if (!api.learning) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    const text = await c.req.text();
    let body: unknown = {};
    if (text.trim() !== '') {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        return failure(c, 'bad-request', ['expected a JSON body such as {"select":{"app":"web"},"since":"24h"}']);
      }
    }
    return answer(c, await api.learning.learn(body));
  });
  app.post('/v1/verify', limitBody, async (c) => {
    if (!api.learning) return failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]);
    const body = await jsonBody(c);
    if (!body.ok) return failure(c, 'bad-request', ['expected a JSON body such as {"candidate":"policies: ..."}']);
    return answer(c, await api.learning.verify(body.value));
  });

  app.notFound((c) => failure(c, 'no-route', [`no route ${c.req.method} ${c.req.path}`]));
  app.onError((err, c) => failure(c, 'internal', [err.message]));
  return app;
}
