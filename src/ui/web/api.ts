/**
 * The console's only way to the daemon: its API, through `bastion ui`,
 * which forwards /v1/* to the daemon's socket. The session cookie goes with
 * every same-origin request; errors arrive as the API's one error body.
 */
import type { ErrorBody } from '../../api/types.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly errors: string[],
  ) {
    super(errors.join('\n') || `HTTP ${status}`);
  }
}

async function check<T>(res: Response): Promise<T> {
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError(res.status, 'bad-answer', [`${res.status}: ${text.slice(0, 200)}`]);
  }
  if (!res.ok) {
    const e = body as Partial<ErrorBody> | undefined;
    throw new ApiError(res.status, e?.error?.code ?? String(res.status), e?.errors?.length ? e.errors : [e?.error?.message ?? `HTTP ${res.status}`]);
  }
  return body as T;
}

export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  return check<T>(await fetch(path, { headers: { accept: 'application/json' }, ...(signal ? { signal } : {}) }));
}

/** A change: JSON in (or a document as text), JSON out; 4xx/5xx become ApiError with the daemon's messages. */
export async function send<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
  const init: RequestInit = { method, headers: { accept: 'application/json' } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers = { ...init.headers, 'content-type': contentType };
  }
  return check<T>(await fetch(path, init));
}

/**
 * Reads an NDJSON stream line by line until it ends or `signal` aborts.
 * Resolves when the stream ends (the daemon stopped, the console restarted).
 */
export async function streamLines(path: string, onLine: (line: unknown) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(path, { signal, headers: { accept: 'application/x-ndjson' } });
  if (!res.ok || !res.body) await check(res);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) onLine(JSON.parse(line));
    }
  }
}
