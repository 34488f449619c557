/**
 * Jaccard similarity search over sets of string tags: the parts, re-exported from one place.
 *
 * - {@link SimilarityIndex}: exact threshold search without a pairwise scan: prefix filtering over a global
 *   token order (rarest tokens first), length filtering and positional filtering (AllPairs / PPJoin), with
 *   an inverted index over prefixes. Results are exactly what a brute-force scan returns.
 * - {@link MinHashIndex}: approximate search with MinHash LSH (`bands` x `rows`), for very large sets of
 *   clusters. Candidates are verified exactly, so it has no false positives, only (rare) false negatives.
 * - {@link BruteForceIndex}: the reference, a pairwise scan (tests and the benchmark).
 * - jaccard.ts: the similarity, the threshold rule every index shares ({@link meetsThreshold}) and why
 *   the filters can never reject a pair the rule accepts.
 */
export { BruteForceIndex } from './brute-force-index.js'
export { SimilarityIndex, type SimilarityIndexOptions } from './exact-index.js'
export {
  checkThreshold,
  jaccard,
  meetsThreshold,
  minOverlap,
  type SetIndex,
  type SimilarityMatch,
  type SimilarPair,
} from './jaccard.js'
export { MinHashIndex, type MinHashOptions } from './minhash-index.js'
