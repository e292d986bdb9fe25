/**
 * Who may use the console (`bastion ui`): every request must carry the
 * access token, and no other web page may drive it.
 *
 * - The token: `Authorization: Bearer TOKEN` (scripts), `?token=TOKEN` on a
 *   GET (the URL `bastion ui` prints; the page then trades it for a cookie
 *   and drops it from the address bar), or that cookie (HttpOnly,
 *   SameSite=Strict).
 * - The Host header must name this machine's loopback (127.0.0.1, localhost,
 *   [::1], any port: an SSH tunnel may forward another local port) or the
 *   address the user asked to listen on. A page on a name that an attacker
 *   points at 127.0.0.1 (DNS rebinding) sends its own name: refused.
 * - A request that says where it comes from (Origin) must come from the
 *   console itself: a page on any other origin, another port of localhost
 *   included, is refused even with the token (a cross-origin
 *   `text/plain` POST to /v1/policies needs no preflight, so the browser
 *   would otherwise send it). `Sec-Fetch-Site` other than same-origin or
 *   none (a typed URL) is refused for the same reason, GETs included.
 * - A change (any method but GET/HEAD) authenticated by the cookie alone must
 *   name its Origin (every browser sends it on such requests).
 *
 * Pure functions: the server (src/ui/server.ts) gives them the headers.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export interface GuardConfig {
  token: string;
  /** host names (no port, lower case; IPv6 without brackets) the console answers to */
  hosts: ReadonlySet<string>;
}

export interface RequestFacts {
  method: string;
  host?: string;
  origin?: string;
  secFetchSite?: string;
  authorization?: string;
  cookie?: string;
  /** the token in the query string, if any */
  queryToken?: string;
}

export type Credential = 'bearer' | 'query' | 'cookie';

export type GuardVerdict =
  | { ok: true; via: Credential }
  | { ok: false; status: 401 | 403; code: 'unauthorized' | 'forbidden'; message: string };

export const LOOPBACK_HOSTS: readonly string[] = ['127.0.0.1', 'localhost', '::1'];

/** The cookie that carries the token: one name per token, so consoles of several hosts forwarded to one browser do not overwrite each other's. */
export function cookieName(token: string): string {
  return `bastion-console-${createHash('sha256').update(token).digest('hex').slice(0, 12)}`;
}

/** "127.0.0.1:9474" → "127.0.0.1"; "[::1]:9474" → "::1"; undefined for something that is not host[:port]. */
export function hostName(hostHeader: string): string | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::(\d{1,5}))?$/i.exec(hostHeader.trim());
  if (!m) return undefined;
  return (m[1] ?? m[2]!).toLowerCase();
}

function sameSecret(a: string, b: string): boolean {
  // hashes of equal length: the comparison takes the same time whatever the input
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD']);
const forbidden = (message: string): GuardVerdict => ({ ok: false, status: 403, code: 'forbidden', message });

export function checkRequest(cfg: GuardConfig, req: RequestFacts): GuardVerdict {
  const method = req.method.toUpperCase();
  // Host first: a rebinding page must learn nothing, not even whether its token is right
  const host = req.host === undefined ? undefined : hostName(req.host);
  if (!host || !cfg.hosts.has(host)) {
    return forbidden(`Host "${req.host ?? ''}" is not this console's: open it as http://127.0.0.1:PORT/ (or the address given to --listen)`);
  }
  if (req.origin !== undefined && req.origin.toLowerCase() !== `http://${req.host!.trim().toLowerCase()}`) {
    return forbidden(`requests from ${req.origin} are refused: only the console's own page may use it`);
  }
  const site = req.secFetchSite?.toLowerCase();
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    return forbidden(`a ${site} request is refused: only the console's own page may use it`);
  }
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.authorization ?? '')?.[1];
  if (bearer !== undefined) {
    return sameSecret(bearer, cfg.token) ? { ok: true, via: 'bearer' } : { ok: false, status: 401, code: 'unauthorized', message: 'wrong access token' };
  }
  if (req.queryToken !== undefined && SAFE_METHODS.has(method)) {
    return sameSecret(req.queryToken, cfg.token) ? { ok: true, via: 'query' } : { ok: false, status: 401, code: 'unauthorized', message: 'wrong access token' };
  }
  const cookie = cookieValue(req.cookie, cookieName(cfg.token));
  if (cookie !== undefined && sameSecret(cookie, cfg.token)) {
    if (!SAFE_METHODS.has(method) && req.origin === undefined) return forbidden(`a ${method} without an Origin header needs the token as "Authorization: Bearer"`);
    return { ok: true, via: 'cookie' };
  }
  return {
    ok: false,
    status: 401,
    code: 'unauthorized',
    message: 'the access token is missing: open the URL `bastion ui` printed (it ends with ?token=...), or send "Authorization: Bearer TOKEN"',
  };
}
