/**
 * mulberry32: a small, fast, seeded PRNG for benchmarks, so that a run (scenario, kill order, topic
 * sizes) can be repeated with the same seed. Returns numbers in [0, 1), like Math.random().
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A seed for a run that was given none (printed by the benchmark so that the run can be repeated). */
export const randomSeed = (): number => Math.floor(Math.random() * 2 ** 31)
