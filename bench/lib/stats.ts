/** Small statistics helpers shared by the benchmarks. */

/** Rounds to `digits` decimals (benchmark output stays readable). */
export function round(value: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** The median (mean of the two middle values for an even count); NaN for an empty list. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  return values.reduce((a, b) => a + b, 0) / values.length
}

/** Sample standard deviation (n - 1); 0 for fewer than two values. */
export function stdev(values: readonly number[]): number {
  if (values.length < 2) return 0
  const m = mean(values)
  return Math.sqrt(values.reduce((a, v) => a + (v - m) ** 2, 0) / (values.length - 1))
}

export interface Summary {
  median: number
  mean: number
  min: number
  max: number
  stdev: number
}

export function summarize(values: readonly number[], digits = 1): Summary {
  return {
    median: round(median(values), digits),
    mean: round(mean(values), digits),
    min: round(Math.min(...values), digits),
    max: round(Math.max(...values), digits),
    stdev: round(stdev(values), digits),
  }
}
