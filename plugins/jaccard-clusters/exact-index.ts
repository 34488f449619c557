/**
 * The exact index: Jaccard threshold search without a pairwise scan (prefix, length and positional
 * filtering over a global token order, AllPairs / PPJoin). Results are exactly what a brute-force scan returns.
 */
import {
  byMatch,
  byPair,
  checkThreshold,
  meetsThreshold,
  minOverlap,
  orderedPair,
  type SetIndex,
  type SimilarityMatch,
  type SimilarPair,
} from './jaccard.js'

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
