/**
 * Jaccard similarity of tag sets and the threshold rule every index (and the brute-force reference)
 * shares.
 *
 * `J(a, b) = |a ∩ b| / |a ∪ b|` over the *distinct* tags of each side (duplicates are ignored). An empty set
 * is similar to nothing: `J(∅, x) = 0`, including `J(∅, ∅)`. Thresholds must lie in (0, 1].
 *
 * A pair matches when `inter / union >= threshold` with IEEE-754 double division ({@link meetsThreshold}).
 * Division is correctly rounded and rounding is monotone, so whenever the exact rational `inter/union` is
 * >= the threshold, the test holds: `7/10 >= 0.7` is true (both sides are the same double). For a decimal
 * threshold with few digits (such as 0.7) and sets of fewer than millions of tags, the rule is the same as
 * comparing the exact fractions, because two different such rationals are far more than one ulp apart.
 * Every filter of the indexes derives its bounds from this same rule (the least overlap `o` for which the
 * division passes), never from `Math.ceil(t * n)` alone, so the filters can never reject a pair the rule
 * accepts.
 */
import { invalidOption } from './errors.js'

/** Anything that behaves like an index of tag sets. */
export interface SetIndex {
  readonly size: number
  /** Adds or replaces the set stored under `id`. */
  add(id: string, tags: Iterable<string>): void
  /** Removes `id`; false when it was not there. */
  remove(id: string): boolean
  has(id: string): boolean
  /** The distinct tags stored under `id`. */
  get(id: string): string[] | undefined
  ids(): IterableIterator<string>
  /** Ids whose set has `J >= threshold` with `tags`, most similar first (ties: id ascending). */
  query(tags: Iterable<string>, threshold: number): SimilarityMatch[]
  /** Every pair of stored sets with `J >= threshold` (`a < b`), most similar first, then by `a`, `b`. */
  allPairs(threshold: number): SimilarPair[]
}

export interface SimilarityMatch {
  id: string
  similarity: number
}

export interface SimilarPair {
  a: string
  b: string
  similarity: number
}

/** Jaccard similarity of two tag collections (distinct tags; 0 when either is empty). */
export function jaccard(a: Iterable<string>, b: Iterable<string>): number {
  const sa = a instanceof Set ? (a as Set<string>) : new Set(a)
  const sb = b instanceof Set ? (b as Set<string>) : new Set(b)
  if (sa.size === 0 || sb.size === 0) return 0
  const [small, large] = sa.size <= sb.size ? [sa, sb] : [sb, sa]
  let inter = 0
  for (const t of small) if (large.has(t)) inter++
  return inter / (sa.size + sb.size - inter)
}

/** The threshold rule shared by every index and by the brute-force reference: `inter / union >= t`. */
export function meetsThreshold(inter: number, union: number, threshold: number): boolean {
  return inter > 0 && inter / union >= threshold
}

export function checkThreshold(threshold: number): void {
  if (!(threshold > 0 && threshold <= 1))
    throw invalidOption(`threshold must be in (0, 1] (got ${threshold}); with 0 every set would match`)
}

/**
 * The least overlap `o` with `o / (a + b - o) >= t` (division rule), for sets of `a` and `b` distinct tags;
 * `min(a, b) + 1` when no overlap reaches it.
 */
export function minOverlap(a: number, b: number, t: number): number {
  const limit = Math.min(a, b)
  let o = Math.max(1, Math.ceil(((a + b) * t) / (1 + t)))
  // Floating point may put the estimate one off either way: settle it with the rule itself.
  while (o > 1 && (o - 1) / (a + b - o + 1) >= t) o--
  while (o <= limit && o / (a + b - o) < t) o++
  return o
}

/** Ordering of results: similarity descending, then ids ascending (code-unit order). */
export function byMatch(x: SimilarityMatch, y: SimilarityMatch): number {
  return y.similarity - x.similarity || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)
}

export function byPair(x: SimilarPair, y: SimilarPair): number {
  return (
    y.similarity - x.similarity ||
    (x.a < y.a ? -1 : x.a > y.a ? 1 : 0) ||
    (x.b < y.b ? -1 : x.b > y.b ? 1 : 0)
  )
}

export function orderedPair(a: string, b: string, similarity: number): SimilarPair {
  return a < b ? { a, b, similarity } : { a: b, b: a, similarity }
}

/** The similarity of two sets when it reaches `threshold` (see {@link meetsThreshold}), else undefined. */
export function matchSets(x: Set<string>, y: Set<string>, threshold: number): number | undefined {
  if (x.size === 0 || y.size === 0) return undefined
  let inter = 0
  for (const t of x) if (y.has(t)) inter++
  const union = x.size + y.size - inter
  return meetsThreshold(inter, union, threshold) ? inter / union : undefined
}
