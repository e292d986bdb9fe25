/** Small statistics helpers (pure). */

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
  values: number[];
}

function sorted(xs: number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

/**
 * Percentile with linear interpolation between closest ranks (the common
 * "type 7" definition: p50 of [1,2,3,4] is 2.5, p99 of 20 samples lies
 * between the two largest).
 */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = sorted(xs);
  const h = (s.length - 1) * (p / 100);
  const lo = Math.floor(h);
  const hi = Math.ceil(h);
  return s[lo]! + (h - lo) * (s[hi]! - s[lo]!);
}

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

export function summarize(xs: number[]): Summary {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0, values: [] };
  const s = sorted(v);
  return { median: median(s), min: s[0]!, max: s[s.length - 1]!, n: s.length, values: v };
}

/** a / b, or null when either is missing or b is 0 */
export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined) return null;
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/** round to a number of significant-ish decimals for reports */
export function round(x: number | null | undefined, decimals = 3): number | null {
  if (x === null || x === undefined || !Number.isFinite(x)) return null;
  const f = 10 ** decimals;
  return Math.round(x * f) / f;
}
