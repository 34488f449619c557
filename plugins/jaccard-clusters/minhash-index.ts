import {
  byMatch,
  byPair,
  checkThreshold,
  matchSets,
  orderedPair,
  type SetIndex,
  type SimilarityMatch,
  type SimilarPair,
} from './jaccard.js'
import { type MinHashOptions, minHashOptions, resolveOptions } from './options.js'

export type { MinHashOptions } from './options.js'

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
