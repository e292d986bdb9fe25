/**
 * Two long-lived TCP connections, for tests of what policy changes do to
 * established connections. Run in a network namespace:
 *
 *   node conn-probe.js server IP BULK_PORT RR_PORT
 *   node conn-probe.js client IP BULK_PORT RR_PORT
 *
 * The client opens one bulk connection (a steady stream, 64 kB every 20 ms
 * while the socket takes it) and one request/response connection (a line
 * every 50 ms, echoed by the server). Both ends print a JSON line every
 * 100 ms with what they saw: bytes, requests answered, the longest pause
 * between two arrivals (bulk, at the server) and the longest wait for an
 * answer (request/response, at the client, the one still waiting included),
 * and any error or close. Neither end reconnects: a reset or a close is the
 * end of that connection, and is reported.
 */
import { createServer, connect, type Socket } from 'node:net';

const [mode, ip, bulkPortText, rrPortText] = process.argv.slice(2);
const bulkPort = Number(bulkPortText);
const rrPort = Number(rrPortText);
const t0 = Date.now();
const now = () => Date.now() - t0;
const report = (o: object) => process.stdout.write(JSON.stringify({ t: now(), ...o }) + '\n');

if (mode === 'server') {
  const bulk = { conns: 0, bytes: 0, lastAt: -1, maxGapMs: 0, events: [] as string[] };
  createServer((s) => {
    bulk.conns++;
    s.on('data', (d: Buffer) => {
      const t = now();
      if (bulk.lastAt >= 0) bulk.maxGapMs = Math.max(bulk.maxGapMs, t - bulk.lastAt);
      bulk.lastAt = t;
      bulk.bytes += d.length;
    });
    s.on('error', (e) => bulk.events.push(`bulk error ${e.message} at ${now()}`));
    s.on('close', () => bulk.events.push(`bulk closed at ${now()}`));
  }).listen(bulkPort, ip);
  const rr = { conns: 0, lines: 0, events: [] as string[] };
  createServer((s) => {
    rr.conns++;
    s.on('data', (d: Buffer) => {
      rr.lines += d.toString().split('\n').length - 1;
      s.write(d);
    });
    s.on('error', (e) => rr.events.push(`rr error ${e.message} at ${now()}`));
    s.on('close', () => rr.events.push(`rr closed at ${now()}`));
  }).listen(rrPort, ip, () => report({ listening: true }));
  setInterval(() => report({ bulk: { ...bulk, sinceLastMs: bulk.lastAt < 0 ? -1 : now() - bulk.lastAt }, rr }), 100);
} else if (mode === 'client') {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const bulk = { written: 0, events: [] as string[], open: false };
  const b: Socket = connect({ host: ip, port: bulkPort }, () => {
    bulk.open = true;
    setInterval(() => {
      // only what the socket takes: a stalled connection stops the stream, it does not fill memory
      if (b.writableLength < chunk.length * 4 && b.write(chunk)) bulk.written += chunk.length;
    }, 20);
  });
  b.on('error', (e) => bulk.events.push(`bulk error ${e.message} at ${now()}`));
  b.on('close', () => {
    bulk.open = false;
    bulk.events.push(`bulk closed at ${now()}`);
  });
  const rr = { sent: 0, answered: 0, maxWaitMs: 0, waitingSinceMs: -1, events: [] as string[], open: false };
  const sentAt: number[] = [];
  let pending = '';
  const r: Socket = connect({ host: ip, port: rrPort }, () => {
    rr.open = true;
    setInterval(() => {
      sentAt.push(now());
      r.write(`${rr.sent++}\n`);
    }, 50);
  });
  r.on('data', (d: Buffer) => {
    pending += d.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      pending = pending.slice(nl + 1);
      const at = sentAt.shift();
      if (at !== undefined) rr.maxWaitMs = Math.max(rr.maxWaitMs, now() - at);
      rr.answered++;
    }
  });
  r.on('error', (e) => rr.events.push(`rr error ${e.message} at ${now()}`));
  r.on('close', () => {
    rr.open = false;
    rr.events.push(`rr closed at ${now()}`);
  });
  setInterval(() => {
    // the oldest unanswered request counts as a wait already
    const oldest = sentAt[0];
    const waiting = oldest === undefined ? 0 : now() - oldest;
    report({ bulk, rr: { ...rr, waitingMs: waiting, maxWaitMs: Math.max(rr.maxWaitMs, waiting) } });
  }, 100);
} else {
  process.stderr.write('usage: conn-probe.js server|client IP BULK_PORT RR_PORT\n');
  process.exit(2);
}
