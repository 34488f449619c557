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
