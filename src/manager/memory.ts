/**
 * Giving memory back after a peak. Start-up at 5,000 containers reads and
 * validates a config of 50,000 policies and the output of 5,000 discoveries:
 * hundreds of MB that are garbage a moment later. Neither V8 nor glibc's
 * malloc return all of it to the system on their own, so the daemon's
 * resident size would stay at its start-up peak. After start-up and after a
 * config reload the daemon runs one full, compacting collection (bin/bastion
 * starts node with --expose-gc) and asks malloc to trim its free lists
 * (native memory of Buffers, child-process output, libbpf).
 */
import koffi from 'koffi';

/** when the sweeper has freed what the collection found */
const LATE_TRIM_MS = 2000;

let mallocTrim: ((pad: number) => number) | null | undefined;

function trim(): void {
  if (mallocTrim === undefined) {
    try {
      mallocTrim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as (pad: number) => number;
    } catch {
      mallocTrim = null; // not glibc
    }
  }
  mallocTrim?.(0);
}

/**
 * One full collection, then malloc_trim, now and once more a moment later:
 * the native memory of the Buffers that collection freed is released by V8's
 * sweeper after it returns (at 5,000 containers, 40 MB of malloc heap was
 * still held after the first trim and given back by the second). Costs tens
 * of ms on a large heap: only after a peak.
 */
export function releaseMemory(): MemoryReport {
  const before = process.memoryUsage.rss();
  (globalThis as { gc?: () => void }).gc?.();
  trim();
  setTimeout(trim, LATE_TRIM_MS).unref();
  const m = process.memoryUsage();
  const mb = (b: number) => Math.round(b / 1048576);
  return { rssPeakMb: mb(before), rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), heapTotalMb: mb(m.heapTotal), externalMb: mb(m.external) };
}

/** MB: resident before and after, and V8's heap (used, reserved) and memory outside it (Buffers, native) */
export interface MemoryReport {
  rssPeakMb: number;
  rssMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
}
