/**
 * Flow followers (src/api/flow-stream.ts) over a real unix socket: a client
 * that stops reading makes the daemon queue at most a bounded amount, then
 * skip; when it reads again it gets every record it was not told it lost,
 * in order, with {"type":"lost","count":N} at the place of each gap; one
 * that stays stalled is disconnected. (The flood end to end, with the
 * daemon's RSS: test/integration/core-flow-stream.test.ts.)
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowStore, type FlowRecord } from '../../src/agent/flow-log.js';
import { FlowFollowers, type FlowStreamLimits } from '../../src/api/flow-stream.js';

/** record number `seq` (in `bytes`: the store keeps it exactly) */
function rec(seq: number, verdict = 'DROPPED'): FlowRecord {
  return {
    time: new Date(1_700_000_000_000 + seq).toISOString(),
    verdict,
    reason: 'policy-denied',
    direction: 'egress',
    protocol: 'tcp',
    src: { identity: 300, name: 'attacker', labels: { app: 'attacker' }, ip: '10.0.0.2', port: 1024 + (seq % 60000) },
    dst: { identity: 301, name: 'api', labels: { app: 'api' }, ip: '10.0.0.3', port: 8080 },
    policies: {},
    interface: 'veth-attacker',
    isReply: false,
    endpoint: 'attacker',
    bytes: seq,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A follower client: raw HTTP/1.0 on the socket, its lines parsed as they come. */
class Client {
  readonly socket: Socket;
  readonly lines: Array<Record<string, any>> = [];
  private buf = '';
  private body = false;
  constructor(path: string, query = '', reading = true) {
    this.socket = connect(path);
    this.socket.setEncoding('utf8');
    this.socket.on('error', () => undefined);
    this.socket.on('data', (d: string) => {
      this.buf += d;
      if (!this.body) {
        const i = this.buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        this.body = true;
        this.buf = this.buf.slice(i + 4);
      }
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(this.buf.slice(0, nl)) as Record<string, any>);
        this.buf = this.buf.slice(nl + 1);
      }
    });
    this.socket.write(`GET /?${query} HTTP/1.0\r\n\r\n`);
    if (!reading) this.socket.pause();
  }
  /** Waits until no line arrived for `quietMs`. */
  async settle(quietMs = 300, maxMs = 10_000): Promise<void> {
    const end = Date.now() + maxMs;
    let n = -1;
    while (n !== this.lines.length && Date.now() < end) {
      n = this.lines.length;
      await sleep(quietMs);
    }
  }
  records(): FlowRecord[] {
    return this.lines.filter((l) => !('type' in l)) as FlowRecord[];
  }
}

describe('flow followers: bounded buffers, lost counts at the gaps, stalled clients dropped', () => {
  let dir: string;
  let path: string;
  let server: Server;
  let store: FlowStore;
  let followers: FlowFollowers;
  const clients: Client[] = [];

  /** A server that serves every request as a follower (?limit=N, ?verdict=V). */
  async function serve(limits: Partial<FlowStreamLimits>): Promise<void> {
    store = new FlowStore(1000);
    followers = new FlowFollowers(store, limits);
    server = createServer((req, res) => {
      const q = new URL(req.url ?? '/', 'http://x').searchParams;
      const verdict = q.get('verdict');
      followers.follow(res, Number(q.get('limit') ?? '0'), (r) => !verdict || r.verdict === verdict);
    });
    await new Promise<void>((r) => server.listen(path, r));
  }
  function client(query = '', reading = true): Client {
    const c = new Client(path, query, reading);
    clients.push(c);
    return c;
  }
  async function connected(n: number): Promise<void> {
    for (let i = 0; i < 100 && followers.stats.followers < n; i++) await sleep(20);
    assert.equal(followers.stats.followers, n);
  }
  /** Push records `from`..`to`-1, yielding to the event loop now and then (drains happen there). */
  async function push(from: number, to: number, verdict?: (seq: number) => string): Promise<void> {
    for (let s = from; s < to; s++) {
      store.push(rec(s, verdict?.(s)));
      if (s % 500 === 0) await new Promise((r) => setImmediate(r));
    }
  }

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'bastion-follow-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a paused client: the queue stops at its bound, the rest is skipped and counted; read again, every record is either received or counted lost, in order', async () => {
    path = join(dir, 'a.sock');
    await serve({ maxQueuedBytes: 8192, stallMs: 60_000 });
    const c = client('', false);
    await connected(1);
    const N = 30_000;
    await push(0, N);
    assert.ok(followers.stats.skipped > 0, 'records were skipped for the paused client');
    c.socket.resume();
    await c.settle();
    let expect = 0;
    let lostTotal = 0;
    for (const line of c.lines) {
      if (line.type === 'lost') {
        assert.deepEqual(Object.keys(line), ['type', 'count']);
        assert.ok(Number.isInteger(line.count) && line.count > 0);
        expect += line.count;
        lostTotal += line.count;
      } else {
        assert.equal(line.bytes, expect, 'records arrive in order, and a gap is exactly the lost count before it');
        expect++;
      }
    }
    assert.equal(expect, N, 'every record was received or counted lost');
    assert.equal(lostTotal, followers.stats.skipped);
    assert.ok(c.records().length < N / 2, `the paused client got only what fitted in the buffers (${c.records().length} of ${N})`);
  });

  it('a client that keeps reading at a modest rate gets everything, without lost lines; the filter applies', async () => {
    path = join(dir, 'b.sock');
    await serve({});
    const all = client();
    const drops = client('verdict=DROPPED');
    await connected(2);
    for (let s = 0; s < 3000; s++) {
      store.push(rec(s, s % 3 ? 'ALLOWED' : 'DROPPED'));
      if (s % 100 === 0) await sleep(2);
    }
    await all.settle();
    await drops.settle();
    assert.deepEqual(
      all.lines.map((l) => l.bytes),
      Array.from({ length: 3000 }, (_, i) => i),
    );
    assert.deepEqual(
      drops.lines.map((l) => l.bytes),
      Array.from({ length: 1000 }, (_, i) => 3 * i),
    );
    assert.equal(followers.stats.skipped, 0);
  });

  it('the backlog (?limit=N) comes first, whole, then the live records', async () => {
    path = join(dir, 'c.sock');
    await serve({ maxQueuedBytes: 4096 });
    await push(0, 800);
    const c = client('limit=500');
    await connected(1);
    await push(800, 810);
    await c.settle();
    assert.deepEqual(
      c.lines.map((l) => l.bytes),
      Array.from({ length: 510 }, (_, i) => 300 + i),
    );
  });

  it('a client stalled while missing records is disconnected and counted; a blocked client that misses nothing is not', async () => {
    path = join(dir, 'd.sock');
    await serve({ maxQueuedBytes: 1 << 20, stallMs: 300 });
    const stalled = client('verdict=DROPPED', false);
    const quiet = client('verdict=ALLOWED', false);
    await connected(2);
    // 1,000 ALLOWED records (330 kB) fill that client's socket but not its queue; the DROPPED one overflows both
    await push(0, 20_000, (s) => (s < 19_000 ? 'DROPPED' : 'ALLOWED'));
    for (let i = 0; i < 50 && followers.stats.dropped === 0; i++) await sleep(50);
    assert.equal(followers.stats.dropped, 1, 'the stalled follower was dropped');
    await sleep(600);
    assert.equal(followers.stats.followers, 1, 'the follower that misses nothing is still there');
    quiet.socket.resume();
    await quiet.settle();
    assert.deepEqual(
      quiet.lines.map((l) => l.bytes),
      Array.from({ length: 1000 }, (_, i) => 19_000 + i),
    );
    assert.ok(stalled.lines.every((l) => l.type === 'lost' || l.verdict === 'DROPPED'));
  });

  it('a client that disconnects is forgotten (no listener left on the store)', async () => {
    path = join(dir, 'e.sock');
    await serve({});
    const c = client();
    await connected(1);
    assert.equal(store.listenerCount('flow'), 1);
    c.socket.destroy();
    for (let i = 0; i < 50 && followers.stats.followers > 0; i++) await sleep(20);
    assert.equal(followers.stats.followers, 0);
    assert.equal(store.listenerCount('flow'), 0);
  });
});
