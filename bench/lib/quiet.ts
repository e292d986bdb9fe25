/**
 * How busy the machine is with work that is not ours. On a 2-core machine
 * another process using one core halves what a scenario can get, so each
 * measurement records the CPU that was busy just before it started and can
 * wait (bounded) for the machine to calm down.
 */
import { readFileSync } from 'node:fs';
import { sleep } from './exec.js';

function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** percent of all CPUs busy over windowMs (while we run nothing ourselves) */
export async function busyPercent(windowMs = 300): Promise<number> {
  const a = cpuTimes();
  await sleep(windowMs);
  const b = cpuTimes();
  const dt = b.total - a.total;
  return dt > 0 ? (100 * (b.busy - a.busy)) / dt : 0;
}

let budgetMs = Infinity;

/** the most all waits of a run may add up to */
export function setQuietBudget(ms: number): void {
  budgetMs = ms;
}

/**
 * Wait until the machine is below thresholdPct busy (measured over 300 ms
 * windows), at most maxWaitMs. Returns the last reading and the time waited.
 */
export async function waitQuiet(thresholdPct: number, maxWaitMs: number): Promise<{ busyPct: number; waitedMs: number }> {
  const t0 = Date.now();
  const limit = Math.min(maxWaitMs, budgetMs);
  let busy = await busyPercent();
  while (busy > thresholdPct && Date.now() - t0 < limit) {
    await sleep(500);
    busy = await busyPercent();
  }
  const waited = Date.now() - t0;
  budgetMs = Math.max(0, budgetMs - waited);
  return { busyPct: Math.round(busy * 10) / 10, waitedMs: waited };
}
