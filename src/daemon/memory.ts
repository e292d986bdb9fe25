/**
 * Giving memory back after a peak. Start-up at 5,000 containers reads and
 * validates a config of 50,000 policies and the output of 5,000 discoveries:
 * hundreds of MB that are garbage a moment later. Neither V8 nor glibc's
 * malloc return all of it to the system on their own, so the daemon's
 * resident size would stay near its start-up peak until V8's memory reducer
 * notices the daemon is idle, which a busy daemon never is.
 *
 * After start-up and after a config reload the daemon asks V8 for a
 * low-memory collection (the inspector's HeapProfiler.collectGarbage, which
 * is V8's LowMemoryNotification: it compacts and gives back the pages it
 * frees, where a plain full collection kept 200 MB committed) and asks malloc
 * to trim its free lists (native memory of Buffers, child-process output,
 * libbpf), once more a moment later for what V8's sweeper frees after the
 * collection.
 */
import inspector from 'node:inspector';
import { libcFunction } from '../sys/libc.js';

/** when the sweeper has freed what the collection found */
const LATE_TRIM_MS = 2000;

type MallocTrim = ((pad: number) => number) & { async(pad: number, done: (err: unknown, res: number) => void): void };
let mallocTrim: MallocTrim | null | undefined;

function mallocTrimFn(): MallocTrim | null {
  if (mallocTrim === undefined) {
    try {
      mallocTrim = libcFunction<MallocTrim>('int malloc_trim(size_t pad)');
    } catch {
      mallocTrim = null; // not glibc
    }
  }
  return mallocTrim;
}

function trim(): void {
  mallocTrimFn()?.(0);
}

/** How often a running daemon gives malloc's free pages back. */
export const TRIM_INTERVAL_MS = 10_000;

/**
 * While the daemon runs, its Buffers (the drift check's map batches, flow
 * reads, request bodies) are malloc'd, and freed when V8 collects them;
 * glibc keeps the pages they leave free, scattered between live blocks. At
 * 5,000 containers under the benchmark's load that was a 17 MB malloc heap
 * of which a trim gave 10 MB back (bench memory_parts). So the daemon trims
 * every TRIM_INTERVAL_MS, on a libuv worker thread (koffi's asynchronous
 * call): a trim walks every free chunk, 7-40 ms on a fragmented heap, which
 * the event loop must not wait for (glibc's arena locks make it safe next to
 * the other threads' allocations). Returns the function that stops it.
 */
export function trimPeriodically(ms = TRIM_INTERVAL_MS): () => void {
  const f = mallocTrimFn();
  if (!f || ms <= 0) return () => {};
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    f.async(0, () => {
      running = false;
    });
  }, ms);
  timer.unref();
  return () => clearInterval(timer);
}

/** mallopt's M_MMAP_THRESHOLD (malloc.h) */
const M_MMAP_THRESHOLD = -3;
let mmapThresholdFixed = false;

/**
 * Keep large allocations (1 MiB and up) mapped on their own, so that
 * freeing one gives its pages back at once. glibc starts so, but after
 * freeing a mapped block it raises the threshold to that block's size (up
 * to 32 MB): the tens of MB of the config parser thread's answer, once
 * freed, sent later large allocations into the heap, where they fragment
 * it and malloc_trim cannot return them (at 5,000 containers: 159-163 MB
 * resident at the end of bench/tools/daemon-heap.ts instead of 135 MB).
 * Setting the threshold explicitly turns that adjustment off. Idempotent.
 */
export function keepLargeAllocationsMapped(): void {
  if (mmapThresholdFixed) return;
  mmapThresholdFixed = true;
  try {
    const mallopt = libcFunction<(param: number, value: number) => number>('int mallopt(int param, int value)');
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  } catch {
    // not glibc: nothing to adjust
  }
}

/**
 * V8's low-memory collection, through an in-process inspector session (no
 * port is opened). The session stays connected: disconnecting it from the
 * collection's callback deadlocks in V8's heap profiler agent.
 */
let session: inspector.Session | undefined;
function lowMemoryCollection(): Promise<void> {
  if (!session) {
    session = new inspector.Session();
    session.connect();
  }
  const s = session;
  return new Promise<void>((resolve) => s.post('HeapProfiler.collectGarbage', () => resolve()));
}

/** MB: resident before and after, and V8's heap (used, reserved) and memory outside it (Buffers, native) */
export interface MemoryReport {
  rssPeakMb: number;
  rssMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
}

/** Collect, trim, and trim again a moment later. Costs tens of ms on a large heap: only after a peak. */
export async function releaseMemory(): Promise<MemoryReport> {
  const before = process.memoryUsage.rss();
  await lowMemoryCollection();
  trim();
  setTimeout(trim, LATE_TRIM_MS).unref();
  const m = process.memoryUsage();
  const mb = (b: number) => Math.round(b / 1048576);
  return { rssPeakMb: mb(before), rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), heapTotalMb: mb(m.heapTotal), externalMb: mb(m.external) };
}
