/**
 * Jaccard similarity search over sets of string tags.
 *
 * - {@link SimilarityIndex}: exact threshold search without a pairwise scan: prefix filtering over a global
 *   token order (rarest tokens first), length filtering and positional filtering (AllPairs / PPJoin), with
 *   an inverted index over prefixes. Results are exactly what a brute-force scan returns.
 * - {@link MinHashIndex}: approximate search with MinHash LSH (`bands` x `rows`), for very large sets of
 *   clusters. Candidates are verified exactly, so it has no false positives, only (rare) false negatives.
 *
 * ## Similarity and the threshold rule
 *
 * `J(a, b) = |a ∩ b| / |a ∪ b|` over the *distinct* tags of each side (duplicates are ignored). An empty set
 * is similar to nothing: `J(∅, x) = 0`, including `J(∅, ∅)`. Thresholds must lie in (0, 1].
 *
 * A pair matches when `inter / union >= threshold` with IEEE-754 double division ({@link meetsThreshold}).
 * Division is correctly rounded and rounding is monotone, so whenever the exact rational `inter/union` is
 * >= the threshold, the test holds: `7/10 >= 0.7` is true (both sides are the same double). For a decimal
 * threshold with few digits (such as 0.7) and sets of fewer than millions of tags, the rule is the same as
 * comparing the exact fractions, because two different such rationals are far more than one ulp apart.
 * Every filter below derives its bounds from this same rule (the least overlap `o` for which the division
 * passes), never from `Math.ceil(t * n)` alone, so the filters can never reject a pair the rule accepts.
 */
import { invalidOption } from './errors.js'
import { type MinHashOptions, minHashOptions, resolveOptions } from './options.js'

export type { MinHashOptions } from './options.js'

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

/** The least overlap a set of `n` tags needs with any set to reach `t`: least `o` with `o / n >= t`. */
function minOverlapOne(n: number, t: number): number {
  let o = Math.max(1, Math.ceil(n * t))
  while (o > 1 && (o - 1) / n >= t) o--
  while (o <= n && o / n < t) o++
  return o
}

/** Size of the probe prefix of a set of `n` tags for threshold `t` (prefix filtering). */
function probePrefix(n: number, t: number): number {
  return Math.max(0, n - minOverlapOne(n, t) + 1)
}

/** Ordering of results: similarity descending, then ids ascending (code-unit order). */
function byMatch(x: SimilarityMatch, y: SimilarityMatch): number {
  return y.similarity - x.similarity || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)
}

function byPair(x: SimilarPair, y: SimilarPair): number {
  return (
    y.similarity - x.similarity ||
    (x.a < y.a ? -1 : x.a > y.a ? 1 : 0) ||
    (x.b < y.b ? -1 : x.b > y.b ? 1 : 0)
  )
}

function orderedPair(a: string, b: string, similarity: number): SimilarPair {
  return a < b ? { a, b, similarity } : { a: b, b: a, similarity }
}

/** Size of the intersection of two ascending arrays. */
function intersectSorted(x: Int32Array, y: Int32Array): number {
  let i = 0
  let j = 0
  let n = 0
  while (i < x.length && j < y.length) {
    const a = x[i]
    const b = y[j]
    if (a === b) {
      n++
      i++
      j++
    } else if (a < b) i++
    else j++
  }
  return n
}

/** Intersection size of two ascending runs of one flat array. */
function intersectFlat(flat: Int32Array, xo: number, n: number, yo: number, m: number): number {
  const xe = xo + n
  const ye = yo + m
  let i = xo
  let j = yo
  let c = 0
  while (i < xe && j < ye) {
    const a = flat[i]
    const b = flat[j]
    if (a === b) {
      c++
      i++
      j++
    } else if (a < b) i++
    else j++
  }
  return c
}

/** Set sizes up to this get their `minOverlap` from a table; larger ones compute it. */
const TABLE_MAX = 127
const TABLE_W = TABLE_MAX + 1
let lastTable: { t: number; table: Int32Array } | undefined

/** `minOverlap(a, b, t)` for every `a, b <= TABLE_MAX`, at `table[a * TABLE_W + b]` (the last one is cached). */
function overlapTable(t: number): Int32Array {
  if (lastTable?.t === t) return lastTable.table
  const table = new Int32Array(TABLE_W * TABLE_W)
  for (let a = 1; a <= TABLE_MAX; a++)
    for (let b = 1; b <= TABLE_MAX; b++) table[a * TABLE_W + b] = minOverlap(a, b, t)
  lastTable = { t, table }
  return table
}

/** Dense array slot for a rank that may be negative (zigzag). */
const slot = (rank: number) => (rank >= 0 ? rank * 2 : -rank * 2 - 1)

interface Entry {
  readonly id: string
  /** Distinct tags as ranks in the global order, ascending. */
  ranks: Int32Array
  tags: string[]
  alive: boolean
  /** Scratch space for a query: the query stamp that last touched it, and its overlap count (-1: pruned). */
  stamp: number
  acc: number
}

interface Posting {
  entries: Entry[]
  /** Position of the token in each entry's rank array. */
  pos: number[]
}

export interface SimilarityIndexOptions {
  /**
   * Lowest threshold the prefix index serves; sets are indexed with their prefix for this threshold.
   * Lower-threshold queries stay exact but fall back to a length-filtered scan. @default 0.5
   */
  minThreshold?: number
  /**
   * Re-derive the token order from current frequencies (and drop dead postings) once this many adds and
   * removes happened since the last build, relative to the size (`max(rebuildMin, size * rebuildRatio)`).
   * The results are exact either way; this only keeps the order close to the real frequencies. @default 0.5
   */
  rebuildRatio?: number
  /** Floor of that count. @default 1024 */
  rebuildMin?: number
}

/**
 * Exact Jaccard threshold search (AllPairs / PPJoin).
 *
 * **Token order.** Every token has a rank; sets are stored as rank arrays sorted ascending. `build()` (run
 * lazily, see `rebuildRatio`) ranks the known tokens by ascending document frequency (rarest first).
 * Between builds the order is frozen: a token never seen before gets a rank below every existing rank
 * (new tokens are presumed rare) and a set added later is indexed under the frozen order. Prefix filtering
 * is correct for *any* total order used consistently on both sides, so exactness never depends on the
 * order matching the current frequencies; only the speed does. A query's unknown tokens are placed first
 * (they occur in no stored set, so that is a consistent extension of the order).
 *
 * **Query** `(x, t)` with `t >= minThreshold`: probe the first `|x| - o1(|x|) + 1` tokens of `x`
 * (`o1(n)`: least overlap with `o / n >= t`) against the inverted index, which holds each stored set's
 * prefix for `minThreshold`; a length filter drops sets whose size alone rules `t` out; a positional
 * filter drops a candidate when the overlap counted so far plus what remains after the matched positions
 * cannot reach `minOverlap(|x|, |y|, t)`; survivors are verified by merging the full rank arrays.
 *
 * **allPairs** `(t)`: a PPJoin self-join over the stored sets, by ascending size, with its own inverted
 * index of mid-prefixes (`|y| - minOverlap(|y|, |y|, t) + 1`), any `t` in (0, 1].
 */
export class SimilarityIndex implements SetIndex {
  readonly minThreshold: number
  private readonly rebuildRatio: number
  private readonly rebuildMin: number
  private readonly entries = new Map<string, Entry>()
  private readonly rankOf = new Map<string, number>()
  /** Inverted index over prefixes, by slot(rank). */
  private postings: (Posting | undefined)[] = []
  private nextNewRank = -1
  private mutations = 0
  private stamp = 0
  private built = false

  constructor(options: SimilarityIndexOptions = {}) {
    this.minThreshold = options.minThreshold ?? 0.5
    checkThreshold(this.minThreshold)
    this.rebuildRatio = options.rebuildRatio ?? 0.5
    this.rebuildMin = options.rebuildMin ?? 1024
  }

  get size(): number {
    return this.entries.size
  }

  has(id: string): boolean {
    return this.entries.has(id)
  }

  get(id: string): string[] | undefined {
    return this.entries.get(id)?.tags.slice()
  }

  ids(): IterableIterator<string> {
    return this.entries.keys()
  }

  /** Adds many sets, then builds the order and the index once (faster than one `add` at a time). */
  addAll(sets: Iterable<readonly [string, Iterable<string>]>): void {
    for (const [id, tags] of sets) this.insert(id, tags, false)
    this.build()
  }

  add(id: string, tags: Iterable<string>): void {
    this.insert(id, tags, this.built)
    this.mutations++
  }

  remove(id: string): boolean {
    const e = this.entries.get(id)
    if (!e) return false
    e.alive = false // its postings die lazily; the next build drops them
    this.entries.delete(id)
    this.mutations++
    return true
  }

  /** Re-ranks tokens by current frequency (rarest first) and rebuilds the prefix index. */
  build(): void {
    const df = new Map<string, number>()
    for (const e of this.entries.values()) for (const t of e.tags) df.set(t, (df.get(t) ?? 0) + 1)
    const tokens = [...df.keys()].sort((a, b) => df.get(a)! - df.get(b)! || (a < b ? -1 : a > b ? 1 : 0))
    this.rankOf.clear()
    for (let i = 0; i < tokens.length; i++) this.rankOf.set(tokens[i], i)
    this.nextNewRank = -1
    this.postings = []
    for (const e of this.entries.values()) {
      e.ranks = this.ranksOf(e.tags)
      this.indexEntry(e)
    }
    this.mutations = 0
    this.built = true
  }

  query(tags: Iterable<string>, threshold: number): SimilarityMatch[] {
    checkThreshold(threshold)
    this.maybeRebuild()
    const distinct = [...new Set(tags)]
    const n = distinct.length
    if (n === 0) return []
    // Unknown tokens first (consistent extension of the order), then known ranks ascending.
    const known: number[] = []
    for (const t of distinct) {
      const r = this.rankOf.get(t)
      if (r !== undefined) known.push(r)
    }
    const ranks = Int32Array.from(known).sort()
    const unknown = n - ranks.length
    if (threshold < this.minThreshold) return this.scan(ranks, n, threshold)

    const stamp = ++this.stamp
    const need = overlapTable(threshold)
    const candidates: Entry[] = []
    const prefix = probePrefix(n, threshold)
    const minSize = minOverlapOne(n, threshold) // |y| >= o >= o1(|x|)
    for (let i = unknown; i < prefix; i++) {
      const posting = this.postings[slot(ranks[i - unknown])]
      if (!posting) continue
      const { entries, pos } = posting
      for (let k = 0; k < entries.length; k++) {
        const y = entries[k]
        if (!y.alive) continue
        if (y.stamp !== stamp) {
          y.stamp = stamp
          const m = y.ranks.length
          // Length filter: the smaller-over-larger ratio bounds J.
          if (m < minSize || Math.min(m, n) / Math.max(m, n) < threshold) {
            y.acc = -1
            continue
          }
          y.acc = 0
          candidates.push(y)
        } else if (y.acc < 0) continue
        const m = y.ranks.length
        const o = n <= TABLE_MAX && m <= TABLE_MAX ? need[n * TABLE_W + m] : minOverlap(n, m, threshold)
        // Positional filter: overlap so far + this match + what can still match after both positions.
        if (y.acc + 1 + Math.min(n - i - 1, m - pos[k] - 1) < o) y.acc = -1
        else y.acc++
      }
    }
    const out: SimilarityMatch[] = []
    for (const y of candidates) {
      if (y.acc <= 0) continue
      const inter = intersectSorted(ranks, y.ranks)
      const union = n + y.ranks.length - inter
      if (meetsThreshold(inter, union, threshold)) out.push({ id: y.id, similarity: inter / union })
    }
    return out.sort(byMatch)
  }

  allPairs(threshold: number): SimilarPair[] {
    checkThreshold(threshold)
    this.maybeRebuild()
    const sets = [...this.entries.values()].filter((e) => e.ranks.length > 0)
    sets.sort((x, y) => x.ranks.length - y.ranks.length)
    const count = sets.length
    // Flat, contiguous copies: every set's ranks in `flat` from off[k] to off[k + 1].
    const off = new Int32Array(count + 1)
    for (let k = 0; k < count; k++) off[k + 1] = off[k] + sets[k].ranks.length
    const flat = new Int32Array(off[count])
    for (let k = 0; k < count; k++) flat.set(sets[k].ranks, off[k])
    const need = overlapTable(threshold)
    // Temporary inverted index of mid-prefixes: per slot(rank), interleaved (set number, position) pairs.
    const lists: number[][] = []
    const listStart: number[] = []
    const acc = new Int32Array(count)
    const touched: number[] = []
    const out: SimilarPair[] = []
    for (let xi = 0; xi < count; xi++) {
      const xo = off[xi]
      const n = off[xi + 1] - xo
      const prefix = probePrefix(n, threshold)
      const minSize = minOverlapOne(n, threshold)
      for (let i = 0; i < prefix; i++) {
        const s = slot(flat[xo + i])
        const list = lists[s]
        if (!list) continue
        // Sets come by ascending size: drop once-and-for-all the list head too small for this x (AllPairs).
        let start = listStart[s]
        while (start < list.length && off[list[start] + 1] - off[list[start]] < minSize) start += 2
        listStart[s] = start
        for (let k = start; k < list.length; k += 2) {
          const yi = list[k]
          const a = acc[yi]
          if (a < 0) continue
          const m = off[yi + 1] - off[yi]
          if (a === 0) touched.push(yi)
          // Positional filter: overlap so far + this match + what can still match after both positions.
          const o = n <= TABLE_MAX && m <= TABLE_MAX ? need[n * TABLE_W + m] : minOverlap(n, m, threshold)
          if (a + 1 + Math.min(n - i - 1, m - list[k + 1] - 1) < o) acc[yi] = -1
          else acc[yi] = a + 1
        }
      }
      for (const yi of touched) {
        if (acc[yi] > 0) {
          const yo = off[yi]
          const m = off[yi + 1] - yo
          const inter = intersectFlat(flat, xo, n, yo, m)
          const union = n + m - inter
          if (meetsThreshold(inter, union, threshold))
            out.push(orderedPair(sets[xi].id, sets[yi].id, inter / union))
        }
        acc[yi] = 0
      }
      touched.length = 0
      // Index x's mid-prefix: later sets are at least as large, and J falls as the other set grows.
      const mid = Math.max(0, n - minOverlap(n, n, threshold) + 1)
      for (let i = 0; i < mid; i++) {
        const s = slot(flat[xo + i])
        let list = lists[s]
        if (!list) {
          list = []
          lists[s] = list
          listStart[s] = 0
        }
        list.push(xi, i)
      }
    }
    return out.sort(byPair)
  }
  private insert(id: string, tags: Iterable<string>, index: boolean): void {
    const old = this.entries.get(id)
    if (old) old.alive = false
    const distinct = [...new Set(tags)]
    const e: Entry = { id, tags: distinct, ranks: new Int32Array(0), alive: true, stamp: 0, acc: 0 }
    this.entries.set(id, e)
    if (index) {
      for (const t of distinct) if (!this.rankOf.has(t)) this.rankOf.set(t, this.nextNewRank--)
      e.ranks = this.ranksOf(distinct)
      this.indexEntry(e)
    }
  }

  private ranksOf(tags: string[]): Int32Array {
    return Int32Array.from(tags, (t) => this.rankOf.get(t)!).sort()
  }

  private indexEntry(e: Entry): void {
    const prefix = probePrefix(e.ranks.length, this.minThreshold)
    for (let i = 0; i < prefix; i++) {
      const s = slot(e.ranks[i])
      let p = this.postings[s]
      if (!p) {
        p = { entries: [], pos: [] }
        this.postings[s] = p
      }
      p.entries.push(e)
      p.pos.push(i)
    }
  }

  private maybeRebuild(): void {
    if (!this.built || this.mutations > Math.max(this.rebuildMin, this.entries.size * this.rebuildRatio))
      this.build()
  }

  /** Exact fallback below `minThreshold`: a scan with the length filter. */
  private scan(ranks: Int32Array, n: number, threshold: number): SimilarityMatch[] {
    const out: SimilarityMatch[] = []
    for (const y of this.entries.values()) {
      const m = y.ranks.length
      if (m === 0 || Math.min(m, n) / Math.max(m, n) < threshold) continue
      const inter = intersectSorted(ranks, y.ranks)
      const union = n + m - inter
      if (meetsThreshold(inter, union, threshold)) out.push({ id: y.id, similarity: inter / union })
    }
    return out.sort(byMatch)
  }
}

/** Reference implementation: a pairwise scan. Used by tests and the benchmark. */
export class BruteForceIndex implements SetIndex {
  private readonly sets = new Map<string, Set<string>>()

  get size(): number {
    return this.sets.size
  }
  add(id: string, tags: Iterable<string>): void {
    this.sets.set(id, new Set(tags))
  }
  remove(id: string): boolean {
    return this.sets.delete(id)
  }
  has(id: string): boolean {
    return this.sets.has(id)
  }
  get(id: string): string[] | undefined {
    const s = this.sets.get(id)
    return s ? [...s] : undefined
  }
  ids(): IterableIterator<string> {
    return this.sets.keys()
  }
  query(tags: Iterable<string>, threshold: number): SimilarityMatch[] {
    checkThreshold(threshold)
    const x = new Set(tags)
    const out: SimilarityMatch[] = []
    for (const [id, y] of this.sets) {
      const m = matchSets(x, y, threshold)
      if (m !== undefined) out.push({ id, similarity: m })
    }
    return out.sort(byMatch)
  }
  allPairs(threshold: number): SimilarPair[] {
    checkThreshold(threshold)
    const list = [...this.sets]
    const out: SimilarPair[] = []
    for (let i = 0; i < list.length; i++)
      for (let j = i + 1; j < list.length; j++) {
        const m = matchSets(list[i][1], list[j][1], threshold)
        if (m !== undefined) out.push(orderedPair(list[i][0], list[j][0], m))
      }
    return out.sort(byPair)
  }
}

function matchSets(x: Set<string>, y: Set<string>, threshold: number): number | undefined {
  if (x.size === 0 || y.size === 0) return undefined
  let inter = 0
  for (const t of x) if (y.has(t)) inter++
  const union = x.size + y.size - inter
  return meetsThreshold(inter, union, threshold) ? inter / union : undefined
}

// ---------------------------------------------------------------------------------------------------------
// MinHash LSH

/** 32-bit FNV-1a of a string, then a murmur3 finalizer. */
function hashString(s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return fmix(h)
}

function fmix(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

interface LshEntry {
  tags: Set<string>
  keys: Uint32Array
}

/**
 * Approximate Jaccard search with MinHash LSH: `bands * rows` min-hashes per set, one bucket per band.
 * Two sets become candidates when all rows of at least one band agree, which happens with probability
 * `1 - (1 - J^rows)^bands` (for the defaults 20 x 5: ~0.975 at J = 0.7, ~0.47 at 0.5, ~0.2 at 0.4): an
 * S-curve around `(1/bands)^(1/rows)` (~0.55). Candidates are verified with the exact similarity, so every
 * result is true (no false positives); a true match can be missed (false negative) with the probability
 * above. Pick `bands`/`rows` so the curve's knee sits below your threshold.
 *
 * Hashes: a tag is hashed once (FNV-1a + murmur3 finalizer); hash function `i` is `a_i * h + b_i` (mod 2^32,
 * odd `a_i`) of that value. A band's rows are folded into a 32-bit bucket key; a key collision only adds
 * candidates, which the exact check removes.
 */
export class MinHashIndex implements SetIndex {
  readonly bands: number
  readonly rows: number
  private readonly mul: Uint32Array
  private readonly add_: Uint32Array
  private readonly entries = new Map<string, LshEntry>()
  /** One bucket map per band: band key -> ids. */
  private readonly buckets: Map<number, string[]>[]

  constructor(options: MinHashOptions = {}) {
    const resolved = resolveOptions(minHashOptions, options)
    this.bands = resolved.bands
    this.rows = resolved.rows
    const seed = resolved.seed ?? 0x9e3779b9
    const k = this.bands * this.rows
    this.mul = new Uint32Array(k)
    this.add_ = new Uint32Array(k)
    for (let i = 0; i < k; i++) {
      this.mul[i] = fmix((seed ^ Math.imul(2 * i + 1, 0x27d4eb2f)) >>> 0) | 1
      this.add_[i] = fmix((seed ^ Math.imul(2 * i + 2, 0x165667b1)) >>> 0)
    }
    this.buckets = Array.from({ length: this.bands }, () => new Map())
  }

  get size(): number {
    return this.entries.size
  }
  has(id: string): boolean {
    return this.entries.has(id)
  }
  get(id: string): string[] | undefined {
    const e = this.entries.get(id)
    return e ? [...e.tags] : undefined
  }
  ids(): IterableIterator<string> {
    return this.entries.keys()
  }

  /** The MinHash signature of a tag set (`bands * rows` values); empty for an empty set. */
  signature(tags: Iterable<string>): Uint32Array {
    const distinct = tags instanceof Set ? (tags as Set<string>) : new Set(tags)
    if (distinct.size === 0) return new Uint32Array(0)
    const sig = new Uint32Array(this.mul.length).fill(0xffffffff)
    const { mul, add_ } = this
    for (const t of distinct) {
      const h = hashString(t)
      for (let i = 0; i < sig.length; i++) {
        const v = (Math.imul(h, mul[i]) + add_[i]) >>> 0
        if (v < sig[i]) sig[i] = v
      }
    }
    return sig
  }

  add(id: string, tags: Iterable<string>): void {
    this.remove(id)
    const set = new Set(tags)
    const keys = this.bandKeys(set)
    this.entries.set(id, { tags: set, keys })
    for (let b = 0; b < keys.length; b++) {
      const bucket = this.buckets[b].get(keys[b])
      if (bucket) bucket.push(id)
      else this.buckets[b].set(keys[b], [id])
    }
  }

  remove(id: string): boolean {
    const e = this.entries.get(id)
    if (!e) return false
    for (let b = 0; b < e.keys.length; b++) {
      const bucket = this.buckets[b].get(e.keys[b])
      if (!bucket) continue
      const at = bucket.indexOf(id)
      if (at >= 0) bucket.splice(at, 1)
      if (bucket.length === 0) this.buckets[b].delete(e.keys[b])
    }
    this.entries.delete(id)
    return true
  }

  query(tags: Iterable<string>, threshold: number): SimilarityMatch[] {
    checkThreshold(threshold)
    const x = new Set(tags)
    const seen = new Set<string>()
    const out: SimilarityMatch[] = []
    const keys = this.bandKeys(x)
    for (let b = 0; b < keys.length; b++) {
      for (const id of this.buckets[b].get(keys[b]) ?? []) {
        if (seen.has(id)) continue
        seen.add(id)
        const m = matchSets(x, this.entries.get(id)!.tags, threshold)
        if (m !== undefined) out.push({ id, similarity: m })
      }
    }
    return out.sort(byMatch)
  }

  allPairs(threshold: number): SimilarPair[] {
    checkThreshold(threshold)
    const seen = new Set<string>()
    const out: SimilarPair[] = []
    for (const band of this.buckets)
      for (const ids of band.values()) {
        if (ids.length < 2) continue
        for (let i = 0; i < ids.length; i++)
          for (let j = i + 1; j < ids.length; j++) {
            const p = orderedPair(ids[i], ids[j], 0)
            const key = `${p.a}\u0000${p.b}`
            if (seen.has(key)) continue
            seen.add(key)
            const m = matchSets(this.entries.get(p.a)!.tags, this.entries.get(p.b)!.tags, threshold)
            if (m !== undefined) out.push({ ...p, similarity: m })
          }
      }
    return out.sort(byPair)
  }

  private bandKeys(tags: Set<string>): Uint32Array {
    const sig = this.signature(tags)
    if (sig.length === 0) return sig
    const keys = new Uint32Array(this.bands)
    for (let b = 0; b < this.bands; b++) {
      let h = 0x811c9dc5 ^ b
      for (let r = b * this.rows; r < (b + 1) * this.rows; r++) h = fmix((h ^ sig[r]) >>> 0)
      keys[b] = h
    }
    return keys
  }
}
