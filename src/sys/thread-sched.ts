/**
 * How the scheduler treated the calling thread (Linux's
 * /proc/thread-self/schedstat: time on a CPU, time runnable but waiting for
 * one, and how many times it was put on a CPU). Taken before and after a
 * piece of work, it tells whether a slow run was the work itself or the
 * thread waiting for a CPU that other processes held: on a small host a
 * policy change that takes 3 ms instead of 1 usually spent the difference
 * preempted (docs/benchmarks.md, 3 December 2026, fourth session).
 */
import { readFileSync } from 'node:fs';

export interface ThreadSched {
  /** ns on a CPU (advanced at scheduler events: a short run may read 0) */
  runNs: number;
  /** ns runnable but waiting for a CPU */
  waitNs: number;
  /** times put on a CPU */
  slices: number;
}

let unavailable = false;

/** The calling thread's counters, or undefined where the kernel does not offer them. */
export function threadSched(): ThreadSched | undefined {
  if (unavailable) return undefined;
  try {
    const [run, wait, slices] = readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ');
    return { runNs: Number(run), waitNs: Number(wait), slices: Number(slices) };
  } catch {
    unavailable = true;
    return undefined;
  }
}

/** Between two readings: ms waited for a CPU and times taken off one (undefined unless both were read). */
export function schedBetween(a: ThreadSched | undefined, b: ThreadSched | undefined): { runqueue: number; switches: number } | undefined {
  if (!a || !b) return undefined;
  return { runqueue: +((b.waitNs - a.waitNs) / 1e6).toFixed(3), switches: b.slices - a.slices };
}
