import type { z } from 'meshkit/plugin'
import type { Clock } from './cluster-types.js'
import { invalidOption } from './errors.js'
import { type ClusterRules, clusterRules, resolveOptions } from './options.js'
import { checkThreshold, MinHashIndex, type SetIndex, SimilarityIndex } from './similarity-index.js'

/** What a ClusterManager is made with: its rules (see options.ts for each default), a clock and ids. */
export type ClusterManagerOptions = z.input<typeof clusterRules> & {
  /** Time source and timers. @default systemClock */
  clock?: Clock
  /** Makes the id of an auto-created cluster from its sorted tags. @default `tags:` + tags joined by ',' */
  clusterId?: (sortedTags: string[]) => string
}

/** The rules a manager runs with: the options resolved, derived values computed, the index to make. */
export interface ResolvedRules extends Omit<ClusterRules, 'cleanupInterval' | 'indexMinThreshold'> {
  /** `cleanupInterval`, or `inactiveAfter / 5` (at least 1 s). */
  cleanupInterval: number
  /** The index settings (compared on reconfigure: a new key means a new index). */
  indexKey: string
  makeIndex(): SetIndex
}

/** Checks and completes the rule options; the index is made on demand. */
export function resolveRules(options: Omit<ClusterManagerOptions, 'clock' | 'clusterId'>): ResolvedRules {
  const rules = resolveOptions(clusterRules, options)
  checkThreshold(rules.threshold)
  const { inactiveAfter } = rules
  if (!(inactiveAfter > 0)) throw invalidOption(`inactiveAfter must be > 0 ms (got ${inactiveAfter})`)
  const cleanupInterval = rules.cleanupInterval ?? Math.max(1000, Math.floor(inactiveAfter / 5))
  if (!(cleanupInterval > 0)) throw invalidOption(`cleanupInterval must be > 0 ms (got ${cleanupInterval})`)
  const idx = rules.index
  const minThreshold = rules.indexMinThreshold ?? rules.threshold
  if (idx === 'exact') checkThreshold(minThreshold)
  const makeIndex = (): SetIndex =>
    idx === 'exact' ? new SimilarityIndex({ minThreshold }) : new MinHashIndex(idx.minhash)
  // built once here, so that bad MinHash parameters throw before anything changes
  makeIndex()
  return {
    threshold: rules.threshold,
    inactiveAfter,
    cleanupInterval,
    autoCreate: rules.autoCreate,
    removeEmptyClusters: rules.removeEmptyClusters,
    index: idx,
    maxClusters: rules.maxClusters,
    maxClustersPerPeer: rules.maxClustersPerPeer,
    maxPeers: rules.maxPeers,
    indexKey: JSON.stringify(idx === 'exact' ? { exact: minThreshold } : idx),
    makeIndex,
  }
}
