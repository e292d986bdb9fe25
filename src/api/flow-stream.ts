/**
 * Followers of /v1/flows?follow=1: the live flows as NDJSON, one stream per
 * client, each with a bounded buffer.
 *
 * A record goes straight to the client's socket while the socket takes it.
 * Once the socket's buffer is full (res.write() returns false), records wait
 * in the follower's queue, up to MAX_QUEUED_BYTES; past that they are
 * skipped and counted, and when the client catches up it reads, at the
 * place of the gap, {"type":"lost","count":N}. A follower that took nothing
 * for STALL_MS while records were skipped for it is disconnected. The
 * daemon's memory is then bounded per follower (the queue, plus the socket's
 * buffer of one high-water mark) whatever the flow rate: without this, three
 * clients that stopped reading grew the daemon by 200 MB in 8 s of a SYN
 * flood (4.1 GB in 25 s in issue 13).
 *
 * Records are turned into JSON once, for all followers, and only when one
 * of them takes the record.
 */
import type { ServerResponse } from 'node:http';
import type { FlowRecord, FlowStore } from '../agent/flow-log.js';
import type { FlowsLost } from './types.js';

/** a follower's queue, beyond what its socket holds (about 600 records) */
export const MAX_QUEUED_BYTES = 256 * 1024;
/** a follower that took nothing this long while missing records is disconnected */
export const STALL_MS = 10_000;
/** bytes per write when a follower catches up */
const BATCH_BYTES = 64 * 1024;

export interface FlowStreamLimits {
  maxQueuedBytes: number;
  stallMs: number;
}

export interface FlowStreamStats {
  /** followers connected now */
  followers: number;
  /** records a follower fell too far behind to get (each follower counts its own) */
  skipped: number;
  /** followers disconnected for staying stalled */
  dropped: number;
}

/** One record's JSON line, made on first use and shared by the followers. */
class Line {
  private text?: string;
  constructor(
    readonly record: FlowRecord,
    /** the record's JSON, when the daemon made it already (it makes one for the log and the history) */
    private readonly made?: string,
  ) {}
  get json(): string {
    return (this.text ??= (this.made ?? JSON.stringify(this.record)) + '\n');
  }
}

class Follower {
  private readonly queue: string[] = [];
  private queuedBytes = 0;
  /** records skipped since the last lost line */
  private lost = 0;
  /** res.write() returned false; waiting for 'drain' */
  private blocked = false;
  /** last time the socket took something (or the follower was not behind) */
  progressAt = Date.now();

  constructor(
    private readonly res: ServerResponse,
    readonly filter: (r: FlowRecord) => boolean,
    private readonly stats: FlowStreamStats,
    private readonly limits: FlowStreamLimits,
    backlog: FlowRecord[],
  ) {
    res.on('drain', () => this.flush());
    res.on('error', () => undefined); // a client gone mid-write: 'close' follows and removes it
    for (const r of backlog) this.queueLine(JSON.stringify(r) + '\n', true);
    this.flush();
  }

  /** Behind (records skipped, or a backlog over the bound waiting) and its socket took nothing for STALL_MS. */
  stalled(now: number): boolean {
    return this.blocked && (this.lost > 0 || this.queuedBytes > this.limits.maxQueuedBytes) && now - this.progressAt > this.limits.stallMs;
  }

  offer(line: Line): void {
    if (this.res.destroyed || !this.filter(line.record)) return;
    if (!this.blocked && this.queue.length === 0 && this.lost === 0) {
      if (!this.res.write(line.json)) this.block();
      return;
    }
    this.queueLine(line.json, false);
  }

  private block(): void {
    this.blocked = true;
    this.progressAt = Date.now();
  }

  private queueLine(json: string, backlog: boolean): void {
    // The backlog (the last `limit` flows, at most the flow store's capacity) is what the client asked for: never skipped.
    if (!backlog && this.queuedBytes + json.length > this.limits.maxQueuedBytes) {
      this.lost++;
      this.stats.skipped++;
      return;
    }
    if (this.lost > 0) this.pushLost();
    this.queue.push(json);
    this.queuedBytes += json.length;
  }

  private pushLost(): void {
    const line: FlowsLost = { type: 'lost', count: this.lost };
    const json = JSON.stringify(line) + '\n';
    this.queue.push(json);
    this.queuedBytes += json.length;
    this.lost = 0;
  }

  /** The socket took what it had: write queued lines in batches until it is full again. */
  private flush(): void {
    this.blocked = false;
    this.progressAt = Date.now();
    while (!this.res.destroyed) {
      if (this.queue.length === 0) {
        if (this.lost === 0) return;
        this.pushLost();
      }
      let batch = '';
      while (this.queue.length && batch.length < BATCH_BYTES) batch += this.queue.shift()!;
      this.queuedBytes -= batch.length;
      if (!this.res.write(batch)) {
        this.block();
        return;
      }
    }
  }

  disconnect(): void {
    this.res.destroy();
  }
}

/** Every follower of one flow store; one listener on the store fans records out. */
export class FlowFollowers {
  readonly stats: FlowStreamStats = { followers: 0, skipped: 0, dropped: 0 };
  private readonly followers = new Set<Follower>();
  private timer?: NodeJS.Timeout;
  private readonly onFlow = (r: FlowRecord, json?: string): void => {
    const line = new Line(r, json);
    for (const f of this.followers) f.offer(line);
  };

  private readonly limits: FlowStreamLimits;

  constructor(
    private readonly flows: FlowStore,
    limits: Partial<FlowStreamLimits> = {},
  ) {
    this.limits = { maxQueuedBytes: limits.maxQueuedBytes ?? MAX_QUEUED_BYTES, stallMs: limits.stallMs ?? STALL_MS };
  }

  /** Serve one follower on this response: the last `limit` flows that pass the filter, then every new one. */
  follow(res: ServerResponse, limit: number, filter: (r: FlowRecord) => boolean): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.flushHeaders(); // the client knows it is following before the first flow comes
    const f = new Follower(res, filter, this.stats, this.limits, this.flows.recent(limit, filter));
    if (this.followers.size === 0) {
      this.flows.on('flow', this.onFlow);
      this.timer = setInterval(() => this.dropStalled(), Math.min(1000, this.limits.stallMs / 2));
      this.timer.unref();
    }
    this.followers.add(f);
    this.stats.followers = this.followers.size;
    res.on('close', () => this.remove(f));
  }

  private remove(f: Follower): void {
    if (!this.followers.delete(f)) return;
    this.stats.followers = this.followers.size;
    if (this.followers.size === 0) {
      this.flows.off('flow', this.onFlow);
      clearInterval(this.timer);
    }
  }

  private dropStalled(): void {
    const now = Date.now();
    for (const f of this.followers) {
      if (!f.stalled(now)) continue;
      this.stats.dropped++;
      this.remove(f);
      f.disconnect();
    }
  }
}
