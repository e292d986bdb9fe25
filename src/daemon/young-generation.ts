/**
 * Young-generation collections between changes, not inside them.
 *
 * At 5,000 containers a young collection (a scavenge) costs the daemon 1.8 to
 * 3 ms, and V8 starts one whenever its new space is full, which is as likely
 * inside a policy change (about 0.5 MB allocated by the commit) as anywhere
 * else: under the benchmark's load that was one change in six, and those
 * decided the update p99 (docs/benchmarks.md, 3 December). So when the
 * manager's queue has just gone idle, the daemon looks at the new space and,
 * if less than `minFreeBytes` is left, collects it there and then: the next
 * change then starts with room for itself, and the collection that would have
 * fallen into it runs while nothing waits for the daemon. It is the same
 * collection V8 would have made a little later, earlier; it costs a little
 * more collecting (the space is collected before it is full), never a change.
 *
 * V8 offers a collection of the young generation only through its `gc`
 * extension; the daemon enables it for a context of its own, so the global
 * `gc` of a daemon started without --expose-gc stays absent.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

/** Left free in the young generation after a change: room for a few changes (about 0.5 MB each at 5,000 containers) and what runs between them. */
export const DEFAULT_MIN_FREE_BYTES = 1.5 * 1024 * 1024;

let gcFn: GcFunction | null | undefined;

function v8Gc(): GcFunction | null {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as GcFunction;
    } catch {
      gcFn = null;
    }
  }
  return gcFn;
}

/** What the young generation has left before V8 must collect it (bytes), or undefined when V8 does not say. */
export function youngFreeBytes(): number | undefined {
  for (const s of v8.getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_available_size;
  return undefined;
}

export interface YoungCollector {
  /** The daemon is between changes: collect the young generation soon if it is nearly full. */
  idle(): void;
  /** collections made by idle() since start */
  readonly collections: number;
}

/**
 * `minFreeBytes` 0 turns it off. The check runs on the next turn of the event
 * loop (after what the change's caller still does with its result), once for
 * any number of idle() calls before it.
 */
export function youngCollector(minFreeBytes = DEFAULT_MIN_FREE_BYTES): YoungCollector {
  const gc = minFreeBytes > 0 ? v8Gc() : null;
  let pending = false;
  let collections = 0;
  const check = () => {
    pending = false;
    const free = youngFreeBytes();
    if (free === undefined || free >= minFreeBytes) return;
    gc!({ type: 'minor' });
    collections++;
  };
  return {
    idle() {
      if (!gc || pending) return;
      pending = true;
      setImmediate(check);
    },
    get collections() {
      return collections;
    },
  };
}
