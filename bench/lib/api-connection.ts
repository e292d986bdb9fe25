/**
 * The benchmark's client for timed API updates: one HTTP/1.1 connection to
 * the daemon's socket, held open between requests (as a controller that
 * drives the API holds one), each request written whole in one write(2).
 *
 * Why not node:http. Its client hands the request to the socket a tick or
 * more after request() returns, and says so ('finish') only when this
 * process's event loop comes round again: with the harness busy at 5,000
 * containers that was 1.0 ms at the median and up to 8.4 ms (measured, a
 * 'finish' timestamp next to the start of 60 updates), all of it counted as
 * the update's. Here `sentMs` is taken when write(2) has returned with the
 * whole request in the daemon's receive queue: an update's time starts when
 * the request reaches the daemon's socket, not when this process's client
 * gets round to sending it.
 */
import { connect, type Socket } from 'node:net';
import { hrMs } from './exec.js';

export interface ApiAnswer {
  status: number;
  text: string;
  /** hrMs() when the whole request had been written to the socket */
  sentMs: number;
}

interface Pending {
  resolve(a: ApiAnswer): void;
  reject(e: Error): void;
  sentMs: number;
  timer: NodeJS.Timeout;
}

const HEADER_END = Buffer.from('\r\n\r\n');

export class ApiConnection {
  private sock?: Socket;
  private opening?: Promise<Socket>;
  private buf: Buffer = Buffer.alloc(0);
  private pending?: Pending;

  constructor(private readonly socketPath: string) {}

  /** One request at a time (the benchmark's updates are one after another). */
  async request(method: 'GET' | 'POST', path: string, body?: string, timeoutMs = 30_000): Promise<ApiAnswer> {
    if (this.pending) throw new Error('ApiConnection: one request at a time');
    const sock = await this.open();
    const bytes = body === undefined ? Buffer.alloc(0) : Buffer.from(body, 'utf8');
    const head = `${method} ${path} HTTP/1.1\r\nHost: bastion\r\nConnection: keep-alive\r\n` + (body === undefined ? '' : `Content-Type: application/json\r\nContent-Length: ${bytes.length}\r\n`) + '\r\n';
    const request = Buffer.concat([Buffer.from(head, 'latin1'), bytes]);
    return new Promise<ApiAnswer>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`no answer from ${this.socketPath} in ${timeoutMs / 1000} s`)), timeoutMs);
      const p: Pending = { resolve, reject, sentMs: 0, timer };
      this.pending = p;
      let queued = false;
      sock.write(request, (err) => {
        if (err) this.fail(err);
        // written later (the socket had no room): in the daemon's receive queue now
        else if (queued) p.sentMs = hrMs();
      });
      // libuv writes at once when the socket has room (uv_try_write): the
      // request is then in the daemon's receive queue as write() returns
      // (the callback of such a write comes on the next tick, after this)
      queued = sock.writableLength > 0;
      if (!queued) p.sentMs = hrMs();
    });
  }

  close(): void {
    this.fail(new Error('connection closed'));
    this.sock?.destroy();
    this.sock = undefined;
  }

  private open(): Promise<Socket> {
    if (this.sock && !this.sock.destroyed) return Promise.resolve(this.sock);
    this.opening ??= new Promise<Socket>((resolve, reject) => {
      const s = connect(this.socketPath);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        s.setNoDelay(true);
        s.on('data', (d: Buffer) => this.onData(d));
        s.on('error', (e) => this.fail(e));
        s.on('close', () => {
          if (this.sock === s) this.sock = undefined;
          this.fail(new Error(`the daemon closed the connection on ${this.socketPath}`));
        });
        this.sock = s;
        this.buf = Buffer.alloc(0);
        resolve(s);
      });
    }).finally(() => (this.opening = undefined));
    return this.opening;
  }

  private fail(e: Error): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.reject(e);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const answer = parseResponse(this.buf);
    if (!answer) return;
    this.buf = this.buf.subarray(answer.consumed);
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve({ status: answer.status, text: answer.body.toString('utf8'), sentMs: p.sentMs });
  }
}

/** One HTTP/1.1 response from the start of buf (Content-Length or chunked body), or undefined while incomplete. */
export function parseResponse(buf: Buffer): { status: number; body: Buffer; consumed: number } | undefined {
  const end = buf.indexOf(HEADER_END);
  if (end < 0) return undefined;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers = new Map<string, string>();
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
  }
  let pos = end + HEADER_END.length;
  const length = headers.get('content-length');
  if (length !== undefined) {
    const n = Number(length);
    if (buf.length < pos + n) return undefined;
    return { status: Number(m[1]), body: buf.subarray(pos, pos + n), consumed: pos + n };
  }
  if (!/chunked/i.test(headers.get('transfer-encoding') ?? '')) return { status: Number(m[1]), body: Buffer.alloc(0), consumed: pos };
  const parts: Buffer[] = [];
  for (;;) {
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return undefined;
    const size = parseInt(buf.toString('latin1', pos, eol), 16);
    if (Number.isNaN(size)) throw new Error('bad chunk size in an HTTP response');
    const start = eol + 2;
    if (buf.length < start + size + 2) return undefined;
    if (size === 0) return { status: Number(m[1]), body: Buffer.concat(parts), consumed: start + 2 };
    parts.push(buf.subarray(start, start + size));
    pos = start + size + 2;
  }
}
