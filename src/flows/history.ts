/**
 * The flow history on disk: every flow record the daemon sees, kept across
 * daemon restarts, so that a learning window can be days, not the minutes
 * the in-memory ring holds.
 *
 * Layout of the directory:
 *   active.ndjson                          the segment being written (plain NDJSON)
 *   flows-<firstMs>-<lastMs>-<seq>.ndjson.gz   closed segments, gzip-compressed
 * A segment is closed when it reaches `segmentBytes` (or when a daemon
 * starts and finds one a previous run left), compressed in the background,
 * and named after the earliest and latest record time it holds, so a query
 * over a time window opens only the segments that overlap it.
 *
 * The size cap: the whole directory (closed segments, the one being
 * compressed, the active one) stays under `maxBytes`; the oldest segments are
 * deleted to make room. An attack flood can therefore cost history (the
 * oldest flows go first) but never the disk. Writes are batched (one write
 * per 64 kB or 200 ms); when the disk cannot keep up, records are counted as
 * dropped rather than queued without bound.
 */
import { closeSync, createReadStream, createWriteStream, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createGunzip, createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { createInterface } from 'node:readline';
import type { FlowRecord } from './record.js';
import { parseFlowLine } from './ndjson.js';
import { matchesFlow, type FlowFilter } from './filter.js';

export const DEFAULT_HISTORY_MAX_BYTES = 256 * 1024 * 1024;
/** a closed segment's size before compression, at most */
const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;
const FLUSH_BYTES = 64 * 1024;
const FLUSH_MS = 200;
/**
 * bytes waiting for the disk beyond which new records are dropped (and
 * counted): the daemon's memory must not follow a flood (a local disk takes
 * a few MB/s of records without falling behind)
 */
const MAX_PENDING_BYTES = 1024 * 1024;

const ACTIVE = /^active-(\d+)\.ndjson$/;
const SEGMENT = /^flows-(\d+)-(\d+)-(\d+)\.ndjson(\.gz)?$/;

export interface FlowHistoryOptions {
  dir: string;
  maxBytes?: number;
  /** a segment is closed at this size (default: a quarter of maxBytes, at most 16 MB) */
  segmentBytes?: number;
  /** problems (a full disk, a damaged segment) are reported here */
  onError?: (message: string) => void;
}

export interface FlowHistoryStats {
  /** bytes on disk now */
  bytes: number;
  /** segments on disk (the active one included) */
  files: number;
  /** records written since start */
  written: number;
  /** records not written: the disk did not keep up, or writing failed */
  dropped: number;
  /** closed segments deleted to stay under the cap */
  rotatedOut: number;
  /** problems met (write or compression failures, damaged lines) */
  errors: number;
  /** time of the oldest record kept (ms), when there is one */
  oldestMs?: number;
  maxBytes: number;
}

interface Segment {
  seq: number;
  /** the file's current name (plain, then compressed) */
  name: string;
  firstMs: number;
  lastMs: number;
  bytes: number;
  compressed: boolean;
}

function segmentOf(name: string, bytes: number): Segment | undefined {
  const m = SEGMENT.exec(name);
  if (!m) return undefined;
  return { name, firstMs: Number(m[1]), lastMs: Number(m[2]), seq: Number(m[3]), bytes, compressed: m[4] !== undefined };
}

interface Active {
  seq: number;
  out: WriteStream;
  /** bytes handed to the stream */
  bytes: number;
  first: number;
  last: number;
}

export class FlowHistory {
  readonly dir: string;
  readonly maxBytes: number;
  readonly segmentBytes: number;
  /** closed segments, oldest first */
  private readonly segments: Segment[] = [];
  private seq = 0;
  private active?: Active;
  private buffer: string[] = [];
  private bufferBytes = 0;
  private timer?: NodeJS.Timeout;
  private compressing: Promise<void> = Promise.resolve();
  private closed = false;
  /** the first directory open() had to make (undefined: the directory was there) */
  private made?: string;
  readonly stats: FlowHistoryStats;

  constructor(private readonly o: FlowHistoryOptions) {
    this.dir = o.dir;
    this.maxBytes = o.maxBytes ?? DEFAULT_HISTORY_MAX_BYTES;
    if (!(this.maxBytes >= 64 * 1024)) throw new Error(`flow history: the size cap must be at least 64 kB, got ${this.maxBytes} bytes`);
    this.segmentBytes = o.segmentBytes ?? Math.min(MAX_SEGMENT_BYTES, Math.floor(this.maxBytes / 4));
    this.stats = { bytes: 0, files: 0, written: 0, dropped: 0, rotatedOut: 0, errors: 0, maxBytes: this.maxBytes };
  }

  /**
   * Open the directory: the segments of earlier runs are kept; an active
   * file a previous run left (it was stopped or killed) becomes a closed
   * segment of its own, so nothing it held is lost.
   */
  async open(): Promise<void> {
    this.made = mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const leftover: Array<{ seq: number; name: string; bytes: number }> = [];
    for (const name of readdirSync(this.dir)) {
      const full = join(this.dir, name);
      if (name.endsWith('.tmp')) {
        rmSync(full, { force: true }); // a compression cut short
        continue;
      }
      const a = ACTIVE.exec(name);
      if (a) {
        leftover.push({ seq: Number(a[1]), name, bytes: statSync(full).size });
        this.seq = Math.max(this.seq, Number(a[1]) + 1);
        continue;
      }
      const s = segmentOf(name, statSync(full).size);
      if (!s) continue;
      if (s.compressed && this.segments.some((x) => x.seq === s.seq)) {
        // compressed, but the plain file was not removed yet: keep the compressed one
        const plain = this.segments.find((x) => x.seq === s.seq)!;
        rmSync(join(this.dir, plain.name), { force: true });
        this.segments.splice(this.segments.indexOf(plain), 1);
      } else if (!s.compressed && this.segments.some((x) => x.seq === s.seq)) {
        rmSync(full, { force: true });
        continue;
      }
      this.segments.push(s);
      this.seq = Math.max(this.seq, s.seq + 1);
    }
    for (const l of leftover) {
      const full = join(this.dir, l.name);
      if (l.bytes === 0) {
        rmSync(full, { force: true });
        continue;
      }
      const { first, last } = timesOfFile(full);
      const seg = this.closeFile(l.seq, l.name, first, last, l.bytes);
      if (seg) this.segments.push(seg);
    }
    this.segments.sort((a, b) => a.seq - b.seq);
    for (const s of this.segments) if (!s.compressed) this.compress(s);
    this.active = this.startActive();
    this.enforceCap();
    await this.compressing;
  }

  private startActive(): Active {
    const seq = this.seq++;
    const path = join(this.dir, `active-${seq}.ndjson`);
    // opened now, not on the stream's first tick: the file exists from here on, so a
    // deletion by the cap removes it for good (writes then go to the unlinked file)
    const out = createWriteStream('', { fd: openSync(path, 'a', 0o600) });
    out.on('error', (err) => this.problem(`cannot write ${path}: ${err.message}`));
    return { seq, out, bytes: 0, first: Infinity, last: -Infinity };
  }

  private problem(message: string): void {
    this.stats.errors++;
    this.o.onError?.(message);
  }

  /** Add a record (batched; returns at once). `json`: its JSON text, when the caller made it already. */
  append(r: FlowRecord, json?: string): void {
    const a = this.active;
    if (this.closed || !a) return;
    if (a.out.writableLength + this.bufferBytes > MAX_PENDING_BYTES || a.out.destroyed) {
      this.stats.dropped++;
      return;
    }
    const line = (json ?? JSON.stringify(r)) + '\n';
    const t = Date.parse(r.time);
    if (t < a.first) a.first = t;
    if (t > a.last) a.last = t;
    this.buffer.push(line);
    this.bufferBytes += line.length;
    this.stats.written++;
    if (this.bufferBytes >= Math.min(FLUSH_BYTES, this.segmentBytes / 4)) this.flushBuffer();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flushBuffer(), FLUSH_MS);
      this.timer.unref();
    }
  }

  private flushBuffer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const a = this.active;
    if (!this.buffer.length || !a) return;
    const chunk = this.buffer.join('');
    this.buffer = [];
    this.bufferBytes = 0;
    a.out.write(chunk);
    a.bytes += Buffer.byteLength(chunk);
    if (a.bytes >= this.segmentBytes) this.rotate();
    else this.enforceCap();
  }

  /** Everything appended so far is in the file (for a reader). */
  async flush(): Promise<void> {
    this.flushBuffer();
    const out = this.active?.out;
    if (out && !out.destroyed && out.writableLength > 0) await new Promise<void>((resolve) => out.write('', () => resolve()));
  }

  /** Close the active segment (it is full) and start a new one; the full one is compressed in the background. */
  private rotate(): void {
    const old = this.active!;
    this.active = this.startActive();
    const seg: Segment = { seq: old.seq, name: `active-${old.seq}.ndjson`, firstMs: old.first, lastMs: old.last, bytes: old.bytes, compressed: false };
    this.segments.push(seg);
    this.compressing = this.compressing.then(async () => {
      await new Promise<void>((resolve) => old.out.end(() => resolve()));
      if (!this.segments.includes(seg)) {
        // the cap took it while it was still being written (its file may have been created after the deletion)
        rmSync(join(this.dir, seg.name), { force: true });
        return;
      }
      const closed = this.closeFile(old.seq, seg.name, old.first, old.last, old.bytes);
      if (closed) seg.name = closed.name;
    });
    this.compress(seg);
    this.enforceCap();
  }

  /** A finished active file gets its segment name (its time range and sequence number). */
  private closeFile(seq: number, name: string, first: number, last: number, bytes: number): Segment | undefined {
    const f = Number.isFinite(first) ? first : Date.now();
    const l = Number.isFinite(last) ? last : f;
    const to = `flows-${f}-${l}-${seq}.ndjson`;
    try {
      renameSync(join(this.dir, name), join(this.dir, to));
    } catch (err) {
      // deleted by the cap meanwhile: nothing to name
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.problem(`cannot close segment ${name}: ${(err as Error).message}`);
      return undefined;
    }
    return { seq, name: to, firstMs: f, lastMs: l, bytes, compressed: false };
  }

  /** Compress a closed segment in the background, one at a time. */
  private compress(seg: Segment): void {
    this.compressing = this.compressing.then(async () => {
      if (!this.segments.includes(seg) || seg.compressed) return; // deleted by the cap meanwhile
      const plain = join(this.dir, seg.name);
      const gzName = `${seg.name}.gz`;
      const tmp = join(this.dir, `${gzName}.tmp`);
      try {
        await pipeline(createReadStream(plain), createGzip({ level: 6 }), createWriteStream(tmp, { mode: 0o600 }));
        if (!this.segments.includes(seg)) {
          rmSync(tmp, { force: true });
          return;
        }
        renameSync(tmp, join(this.dir, gzName));
        seg.name = gzName;
        seg.compressed = true;
        seg.bytes = statSync(join(this.dir, gzName)).size;
        rmSync(plain, { force: true });
      } catch (err) {
        rmSync(tmp, { force: true });
        if (this.segments.includes(seg)) this.problem(`cannot compress ${plain}: ${(err as Error).message}`);
      }
      this.enforceCap();
    });
  }

  /** Delete the oldest closed segments while the directory is over the cap. */
  private enforceCap(): void {
    const activeBytes = (this.active?.bytes ?? 0) + this.bufferBytes;
    let total = activeBytes + this.segments.reduce((n, s) => n + s.bytes, 0);
    while (total > this.maxBytes && this.segments.length > 0) {
      const s = this.segments.shift()!;
      rmSync(join(this.dir, s.name), { force: true });
      total -= s.bytes;
      this.stats.rotatedOut++;
    }
    this.stats.bytes = total;
    this.stats.files = this.segments.length + 1;
    const firsts = this.segments.map((s) => s.firstMs);
    if (this.active && Number.isFinite(this.active.first)) firsts.push(this.active.first);
    this.stats.oldestMs = firsts.length ? Math.min(...firsts) : undefined;
  }

  /**
   * Open the current file of a segment (by its sequence number; it may have
   * been renamed or compressed since the caller listed it): the descriptor
   * keeps it readable even if the cap deletes it during the read.
   */
  private openSegment(seq: number): { fd: number; compressed: boolean; path: string } | undefined {
    const s = this.segments.find((x) => x.seq === seq);
    if (!s) return undefined;
    const path = join(this.dir, s.name);
    try {
      return { fd: openSync(path, 'r'), compressed: s.compressed, path };
    } catch {
      return undefined;
    }
  }

  /** The active file as it is now: its descriptor and the bytes written so far. */
  private openActive(f: FlowFilter): { fd: number; size: number; path: string } | undefined {
    const a = this.active;
    if (!a || a.bytes === 0 || !overlaps(a.first, a.last, f)) return undefined;
    const path = join(this.dir, `active-${a.seq}.ndjson`);
    try {
      return { fd: openSync(path, 'r'), size: a.bytes, path };
    } catch {
      return undefined;
    }
  }

  /**
   * Every record that passes the filter, oldest segment first (within a
   * segment, in the order written: the order the datapath's events were
   * read). Segments outside the filter's time window are not opened.
   */
  async *records(filter: FlowFilter = {}): AsyncGenerator<FlowRecord> {
    await this.flush();
    const seqs = this.segments.filter((s) => overlaps(s.firstMs, s.lastMs, filter)).map((s) => s.seq);
    const active = this.openActive(filter);
    try {
      for (const seq of seqs) {
        const f = this.openSegment(seq);
        if (f) yield* this.matching(linesOf(f.fd, f.compressed), filter, f.path);
      }
      if (active) {
        const fd = active.fd;
        active.fd = -1; // the reader owns it now
        yield* this.matching(linesOf(fd, false, active.size), filter, active.path);
      }
    } finally {
      if (active && active.fd >= 0) closeSync(active.fd);
    }
  }

  private async *matching(src: Lines, filter: FlowFilter, path: string): AsyncGenerator<FlowRecord> {
    let n = 0;
    try {
      for await (const line of src.lines) {
        n++;
        let r: FlowRecord | undefined;
        try {
          r = parseFlowLine(line);
        } catch (err) {
          // a line cut short by a crash: skipped, and said
          this.problem(`${path}: line ${n}: ${(err as Error).message}`);
          continue;
        }
        if (r && matchesFlow(filter, r)) yield r;
      }
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.problem(`${path}: ${e.code === 'Z_BUF_ERROR' || e.code === 'Z_DATA_ERROR' ? 'damaged gzip data' : e.message}`);
    } finally {
      src.destroy();
    }
  }

  /**
   * The last `limit` records that pass the filter, oldest first. Reads the
   * newest segments first and stops once it has enough, so the last few
   * flows of a large history cost only its end.
   */
  async recent(limit: number, filter: FlowFilter = {}): Promise<FlowRecord[]> {
    await this.flush();
    const chunks: FlowRecord[][] = [];
    let have = 0;
    const active = this.openActive(filter);
    if (active) {
      const got: FlowRecord[] = [];
      for await (const r of this.matching(linesOf(active.fd, false, active.size), filter, active.path)) got.push(r);
      chunks.unshift(got);
      have += got.length;
    }
    const seqs = this.segments.filter((s) => overlaps(s.firstMs, s.lastMs, filter)).map((s) => s.seq).reverse();
    for (const seq of seqs) {
      if (have >= limit) break;
      const f = this.openSegment(seq);
      if (!f) continue;
      const got: FlowRecord[] = [];
      for await (const r of this.matching(linesOf(f.fd, f.compressed), filter, f.path)) got.push(r);
      chunks.unshift(got);
      have += got.length;
    }
    const all = chunks.flat();
    return all.slice(Math.max(0, all.length - limit));
  }

  /** Write what is buffered and close the active file (the next start turns it into a segment). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flushBuffer();
    this.closed = true;
    const out = this.active?.out;
    if (out) await new Promise<void>((resolve) => out.end(() => resolve()));
    await this.compressing;
  }

  /**
   * Close, and take away what open() made if nothing was ever kept in it: a
   * daemon refused at start-up (its node name in use, a foreign credential)
   * leaves no directory behind.
   */
  async abandon(): Promise<void> {
    await this.close();
    if (this.made && this.segments.length === 0 && this.stats.written === 0) rmSync(this.made, { recursive: true, force: true });
  }
}

function overlaps(first: number, last: number, f: FlowFilter): boolean {
  if (!Number.isFinite(first)) return false;
  if (f.since !== undefined && last < f.since) return false;
  if (f.until !== undefined && first > f.until) return false;
  return true;
}

interface Lines {
  lines: AsyncIterable<string>;
  /** stop reading (closes the descriptor) */
  destroy(): void;
}

/** Lines of an open file (gunzipped), up to `size` bytes; the descriptor is closed at the end or on destroy(). */
function linesOf(fd: number, compressed: boolean, size?: number): Lines {
  const raw = createReadStream('', { fd, autoClose: true, ...(size !== undefined ? { start: 0, end: Math.max(0, size - 1) } : {}) });
  if (!compressed) return { lines: createInterface({ input: raw, crlfDelay: Infinity }), destroy: () => raw.destroy() };
  const input = raw.pipe(createGunzip());
  raw.on('error', (err) => input.destroy(err));
  return {
    lines: createInterface({ input, crlfDelay: Infinity }),
    destroy: () => {
      input.destroy();
      raw.destroy();
    },
  };
}

/** The earliest and latest record time in a plain NDJSON file (a previous run's active file). */
function timesOfFile(path: string): { first: number; last: number } {
  let first = Infinity;
  let last = -Infinity;
  try {
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      const m = /"time":"([^"]+)"/.exec(line);
      if (!m) continue;
      const t = Date.parse(m[1]!);
      if (Number.isNaN(t)) continue;
      if (t < first) first = t;
      if (t > last) last = t;
    }
  } catch {
    // unreadable: named by the time it was found
  }
  return { first, last };
}
