/**
 * Milliseconds on CLOCK_MONOTONIC, the clock of process.hrtime: comparable
 * across processes of one machine (a benchmark lines the daemon's log up
 * with its own and a probe's times), never set back.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
