/**
 * Followers of /v1/flows?follow=1 under a flood of denied traffic.
 *
 * A client that stops reading must not grow the daemon: each follower has a
 * bounded buffer; one that falls behind skips records and is told how many
 * ({"type":"lost","count":N} in the stream), and one that stays stalled is
 * disconnected; both are counted in the metrics. Before this, six stalled
 * followers and 8 s of denied SYNs from a container grew the daemon by about
 * 200 MB (issue 13: 110 MB to 4.1 GB in 25 s under a full flood).
 *
 * The SYNs are hping3 from the lab's attacker to api:8080 (denied), one
 * every 100 µs (about 5,000 flow events a second: a rate the daemon keeps up
 * with, so what grows is the followers' buffers, not the log's), bounded in
 * time, inside the test's own namespaces; they stop early if the daemon's
 * RSS runs away, so a failing run does not take the machine.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { CoreLab, bastionStatus, type BastionDaemon } from '../helpers/bastion-daemon.js';
import { connectAll, expectAllConnect, sleep, startBackground, startTcpEcho, waitFor } from '../helpers/probes.js';
import { socketPathFor } from '../../src/api/paths.js';

const MB = 1024 * 1024;
/** how long the flood runs */
const FLOOD_MS = 8000;
/** when the paused follower reads again (it must not be stalled long enough to be dropped) */
const RESUME_MS = 5000;
/** stalled followers (each one grew the daemon by about 900 bytes per flow before the fix) */
const STALLED = 6;
/** the daemon's RSS may grow this much over its level before the flood (measured with the fix: +11 to +17 MB) */
const RSS_GROWTH_LIMIT = 48 * MB;
/** the flood stops at once beyond this: the test has failed and the machine is shared */
const RSS_RUNAWAY = 600 * MB;
/** the flood is only a test if the datapath reported at least this many flows during it (6 stalled: 135 MB before the fix) */
const MIN_FLOWS = 25_000;
/** the daemon drops a follower stalled longer than this (src/api/flow-stream.ts) plus a margin */
const STALL_WAIT_MS = 10_000 + 8_000;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** A raw HTTP follower on the daemon's socket; `reading` false: it never reads, its socket buffers fill. */
class Follower {
  readonly socket: Socket;
  lines: string[] = [];
  bytes = 0;
  closed = false;
  private buf = '';
  private headerDone = false;

  constructor(path: string, reading: boolean) {
    this.socket = connect(path);
    this.socket.setEncoding('utf8');
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => undefined);
    // Connection: close, no chunked framing to parse: HTTP/1.0
    this.socket.write('GET /v1/flows?follow=1&limit=0 HTTP/1.0\r\nHost: bastion\r\n\r\n');
    this.socket.on('data', (d: string) => this.onData(d));
    if (!reading) this.socket.pause();
  }

  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }

  private onData(d: string): void {
    this.bytes += d.length;
    this.buf += d;
    if (!this.headerDone) {
      const i = this.buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      this.headerDone = true;
      this.buf = this.buf.slice(i + 4);
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      this.lines.push(this.buf.slice(0, nl));
      this.buf = this.buf.slice(nl + 1);
    }
  }

  parsed(): Array<Record<string, any>> {
    return this.lines.filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
  }

  close(): void {
    this.socket.destroy();
  }
}

function getText(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** A metric's value (the sum over its label sets); undefined when the daemon does not export it. */
function metric(text: string, name: string): number | undefined {
  const values = text
    .split('\n')
    .filter((l) => l.startsWith(name) && (l[name.length] === ' ' || l[name.length] === '{'))
    .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
  return values.length ? values.reduce((a, b) => a + b, 0) : undefined;
}

describe('core: flow followers under a flood (bounded buffers, lost counts, stalled followers dropped)', () => {
  let lab: CoreLab;
  let daemon: BastionDaemon;
  const followers: Follower[] = [];

  before(async () => {
    lab = await CoreLab.create();
    await startTcpEcho(lab.api.netns, lab.api.ip, 8080);
    // The datapath reports 100 events a second per container and reason by
    // default (issue 13): this test needs the flood's every event to load the
    // followers, so the limit is lifted.
    daemon = await lab.startDaemon(lab.config(), ['--events-per-second', '1000000']);
    daemon.keepFlowLines = false;
    // the attacker knows api's MAC: its SYNs reach the policy check, not the ARP handler
    await lab.pinNeighbours(['attacker', 'web']);
  });

  after(async () => {
    for (const f of followers) f.close();
    await lab?.cleanup();
  });

  it('stalled followers and a SYN flood: RSS stays bounded, a paused follower gets a lost count, a reading one gets records, stalled ones are dropped', { timeout: 120_000 }, async () => {
    lab.requireDaemon();
    const pid = daemon.pid!;
    const socket = socketPathFor(lab.pinPath);
    const flowsBefore = (await bastionStatus(lab.pinPath)).json?.daemon?.flowsSeen as number;

    const stalled = Array.from({ length: STALLED }, () => new Follower(socket, false));
    const paused = new Follower(socket, true);
    const reading = new Follower(socket, true);
    followers.push(...stalled, paused, reading);
    // connected once their first bytes (the headers) arrive; the stalled ones do not read them
    assert.ok(await waitFor(() => paused.bytes > 0 && reading.bytes > 0, 5000), 'the followers are connected');
    // Flows the daemon saw once they are connected: a flow of their connecting moment (an IPv6
    // packet of a container, dropped) is counted before and may or may not reach them, so what
    // they account for lies between the counts since before and since after they connected.
    const flowsConnected = (await bastionStatus(lab.pinPath)).json?.daemon?.flowsSeen as number;
    paused.pause();
    await sleep(500);
    const base = rssBytes(pid);

    const flood = startBackground(lab.attacker.netns, 'hping3', ['-I', 'eth0', '-S', '-p', '8080', '-i', 'u100', lab.api.ip]);
    let peak = base;
    let runaway = false;
    const t0 = Date.now();
    while (Date.now() - t0 < FLOOD_MS && flood.running) {
      await sleep(200);
      if (Date.now() - t0 >= RESUME_MS) paused.resume();
      peak = Math.max(peak, rssBytes(pid));
      if (peak - base > RSS_RUNAWAY) {
        runaway = true;
        break;
      }
    }
    await flood.stop('SIGINT');
    for (let i = 0; i < 10; i++) {
      await sleep(200);
      peak = Math.max(peak, rssBytes(pid));
    }
    const flowsAfter = (await bastionStatus(lab.pinPath)).json?.daemon?.flowsSeen as number;
    const flows = flowsAfter - flowsBefore;
    const report = `RSS ${Math.round(base / MB)} MB before, peak ${Math.round(peak / MB)} MB (+${Math.round((peak - base) / MB)} MB) over ${flows} flows in ${FLOOD_MS / 1000} s${runaway ? ' (flood stopped early: runaway)' : ''}`;
    console.log(`# ${report}; the reading follower got ${reading.lines.length} lines`);
    assert.ok(peak - base <= RSS_GROWTH_LIMIT, `the daemon grew too much under the flood with stalled followers: ${report}`);
    assert.ok(flows >= MIN_FLOWS, `the flood produced ${flows} flows, fewer than the ${MIN_FLOWS} that make this a test (hping3: ${flood.stderr.slice(-300)})`);

    // a reading follower gets records
    assert.ok(reading.parsed().some((r) => r.verdict === 'DROPPED' && r.dst?.port === 8080), 'the reading follower got the drops');

    // the paused follower read again during the flood: what fitted in its buffers, then a lost count, then the rest;
    // every flow since it connected was either received or counted lost
    const tally = () => {
      const lines = paused.parsed();
      const lost = lines.filter((r) => r.type === 'lost');
      return { lines, lost, received: lines.length - lost.length, skipped: lost.reduce((a, r) => a + (r.count as number), 0) };
    };
    let t = tally();
    let seen = 0;
    let seenConnected = 0;
    const accounted = await waitFor(async () => {
      const now = (await bastionStatus(lab.pinPath)).json?.daemon?.flowsSeen as number;
      seen = now - flowsBefore;
      seenConnected = now - flowsConnected;
      t = tally();
      return t.received + t.skipped <= seen && t.received + t.skipped >= seenConnected;
    }, 15_000, 500);
    assert.ok(t.lost.length > 0, `the paused follower got no "lost" line (${t.lines.length} lines)`);
    assert.ok(t.lost.every((r) => Number.isInteger(r.count) && r.count > 0 && Object.keys(r).length === 2), `lost lines are {"type":"lost","count":N}: ${JSON.stringify(t.lost.slice(0, 3))}`);
    assert.ok(accounted, `the paused follower received ${t.received} and was told of ${t.skipped} lost: not the ${seenConnected} to ${seen} flows since it connected`);
    const firstLost = t.lines.findIndex((r) => r.type === 'lost');
    assert.ok(firstLost > 0 && t.lines.slice(firstLost).some((r) => r.verdict), 'records before the first gap and after it');
    const skipped = t.skipped;

    // the stalled ones are dropped and counted; the paused one is not
    let text = '';
    const dropped = await waitFor(async () => (metric((text = await getText(socket, '/metrics')), 'bastion_flow_followers_dropped_total') ?? 0) >= 3, STALL_WAIT_MS, 500);
    assert.ok(dropped, `the three stalled followers were not dropped:\n${text.split('\n').filter((l) => l.startsWith('bastion_flow')).join('\n')}`);
    assert.ok((metric(text, 'bastion_flow_follower_records_skipped_total') ?? 0) >= skipped, 'skipped records are counted');
    assert.equal(metric(text, 'bastion_flow_followers'), 2, 'the paused and the reading follower are still connected');
    assert.ok(!paused.closed && !reading.closed);

    // and the daemon is fine
    const status = await bastionStatus(lab.pinPath);
    assert.equal(status.code, 0, status.raw.stderr);
    expectAllConnect(await connectAll([['web→api:8080 after the flood', lab.web.netns, lab.api.ip, 8080]]));
  });
});
