/**
 * Reading flow records back from a file: what `bastion flows -o json` wrote
 * (one record per line), a file of the flow history (the same, gzip
 * compressed), or the daemon's own log (pino lines; the flow lines are those
 * with msg "flow"). Compression is recognised by its magic bytes, not the
 * name. `-` reads standard input.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { FlowRecordError, readFlowRecord, type FlowRecord } from './record.js';

export class FlowFileError extends Error {}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(2);
    const { bytesRead } = await fh.read(b, 0, 2, 0);
    return bytesRead === 2 && b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/** The lines of a file (gunzipped when it is gzip), or of standard input for "-". */
export async function openLines(path: string): Promise<AsyncIterable<string>> {
  let stream: Readable;
  if (path === '-') stream = process.stdin;
  else {
    try {
      stream = (await isGzip(path)) ? createReadStream(path).pipe(createGunzip()) : createReadStream(path);
    } catch (err) {
      throw new FlowFileError(`${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return createInterface({ input: stream, crlfDelay: Infinity });
}

/** One line of text as a flow record, or undefined for a line that is not one (a blank line, a "lost" line, another log line). */
export function parseFlowLine(line: string): FlowRecord | undefined {
  const t = line.trim();
  if (t === '') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    throw new FlowRecordError('not JSON');
  }
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    // {"type":"lost","count":N} of a followed stream
    if (o.type === 'lost') return undefined;
    // the daemon's log: flow lines carry the flow's own time as flowTime
    if (typeof o.msg === 'string') {
      if (o.msg !== 'flow') return undefined;
      const { flowTime, time: _logTime, level: _level, msg: _msg, ...rest } = o;
      return readFlowRecord({ ...rest, time: flowTime });
    }
  }
  return readFlowRecord(v);
}

/**
 * Every flow record of a file, in file order. A line that is not a flow
 * record fails the whole read, naming the file, the line and the field:
 * a learning or a replay over half a file would give a wrong answer.
 */
export async function* readFlowFile(path: string): AsyncGenerator<FlowRecord> {
  const name = path === '-' ? 'stdin' : path;
  let n = 0;
  try {
    for await (const line of await openLines(path)) {
      n++;
      let r: FlowRecord | undefined;
      try {
        r = parseFlowLine(line);
      } catch (err) {
        throw new FlowFileError(`${name}: line ${n}: ${(err as Error).message}`);
      }
      if (r) yield r;
    }
  } catch (err) {
    if (err instanceof FlowFileError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new FlowFileError(`${name}: ${n ? `after line ${n}: ` : ''}cannot read: ${e.code === 'Z_DATA_ERROR' || e.code === 'Z_BUF_ERROR' ? 'damaged gzip data' : (e.code ?? e.message)}`);
  }
}

/** All records of a file (small files, tests). */
export async function readFlowFileAll(path: string): Promise<FlowRecord[]> {
  const out: FlowRecord[] = [];
  for await (const r of readFlowFile(path)) out.push(r);
  return out;
}
