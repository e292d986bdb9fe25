/** A client for the daemon's API over its unix socket (the contract: src/api/types.ts). */
import { request } from 'node:http';
import { isErrorBody, type ErrorBody } from './types.js';

export class DaemonUnreachable extends Error {}

/** The messages of an error answer (whatever the daemon's version, something readable). */
export function errorsOf(status: number, body: unknown): string[] {
  if (isErrorBody(body)) return body.errors?.length ? body.errors : [body.error.message];
  const old = body as { errors?: string[]; error?: string } | undefined;
  return old?.errors ?? [typeof old?.error === 'string' ? old.error : `HTTP ${status}`];
}

/** A request whose error statuses (but 422, a rejected input with its `errors`) become exceptions. */
export async function apiRequest<T>(socketPath: string, method: string, path: string, timeoutMs = 5000): Promise<T> {
  const r = await apiCall<T>(socketPath, method, path, undefined, timeoutMs);
  if (r.status >= 400 && r.status !== 422) throw new Error(errorsOf(r.status, r.body).join('\n'));
  return r.body as T;
}

/** A request whose answer is wanted whatever its status: T when it succeeded, the error body otherwise. */
export function apiCall<T>(socketPath: string, method: string, path: string, body?: string, timeoutMs = 30_000): Promise<{ status: number; body: T | ErrorBody }> {
  return new Promise((resolve, reject) => {
    const headers = body !== undefined ? { 'content-type': 'application/yaml', 'content-length': Buffer.byteLength(body) } : undefined;
    const req = request({ socketPath, method, path, timeout: timeoutMs, ...(headers ? { headers } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 500, body: JSON.parse(text) as T | ErrorBody });
        } catch {
          reject(new Error(`bad answer from daemon: ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new DaemonUnreachable(`daemon at ${socketPath} did not answer in ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof DaemonUnreachable) reject(err);
      else if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new DaemonUnreachable(`no daemon is listening on ${socketPath}`));
      else reject(err);
    });
    req.end(body);
  });
}

/** Stream NDJSON lines (flows --follow). Resolves when the stream ends. */
export function apiStream(socketPath: string, path: string, onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: 'GET', path }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line) onLine(line);
        }
      });
      res.on('end', () => resolve());
    });
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new DaemonUnreachable(`no daemon is listening on ${socketPath}`) : err),
    );
    req.end();
  });
}
