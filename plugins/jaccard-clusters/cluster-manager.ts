/**
 * Peer clusters by topic tags: the state and rules of the default clustering strategy, without libp2p.
 * The plugin (index.ts) feeds it peers, tags and metrics; tests drive it directly with an injected clock.
 */

import { type ClusterManagerOptions, resolveRules } from './cluster-rules.js'
import { ClusterStore, definedOnly } from './cluster-store.js'
import {
  type ClusterMember,
  compareMembers,
  type PeerMetrics,
  type SimilarCluster,
  systemClock,
} from './cluster-types.js'
import { jaccard, type SimilarityMatch } from './similarity-index.js'

export type { ClusterManagerOptions } from './cluster-rules.js'
export {
  type Clock,
  type ClusterEventName,
  type ClusterEvents,
  type ClusterManagerStats,
  type ClusterMember,
  type ConnectionMethod,
  compareMembers,
  type PeerCluster,
  type PeerMetrics,
  type SimilarCluster,
  systemClock,
} from './cluster-types.js'

/**
 * Clusters of peers by topic tags (`ClusteringManager` of the old MVP): add/remove clusters and members,
 * automatic assignment by Jaccard similarity of tag sets, similar-cluster search through a
 * {@link SetIndex} (never a pairwise scan), cleanup of inactive members and empty clusters, best peers by
 * metrics, and an event for every change.
 */
export class ClusterManager extends ClusterStore {
  private readonly makeId: (sortedTags: string[]) => string
  private timer: unknown

  constructor(options: ClusterManagerOptions = {}) {
    const rules = resolveRules(options)
    super(rules, rules.makeIndex(), options.clock ?? systemClock)
    this.makeId = options.clusterId ?? ((tags) => `tags:${tags.join(',')}`)
  }

  /** Jaccard threshold for assignment and similar clusters. */
  get threshold(): number {
    return this.rules.threshold
  }

  /** A member not seen for this long (ms) is removed by cleanup. */
  get inactiveAfter(): number {
    return this.rules.inactiveAfter
  }

  /** Period of the automatic cleanup (ms). */
  get cleanupInterval(): number {
    return this.rules.cleanupInterval
  }

  /** Clusters at most for `assignPeer` to create one. */
  get maxClusters(): number {
    return this.rules.maxClusters
  }

  /** Matching clusters one `assignPeer` joins at most. */
  get maxClustersPerPeer(): number {
    return this.rules.maxClustersPerPeer
  }

  /** Member peers known at once. */
  get maxPeers(): number {
    return this.rules.maxPeers
  }

  /**
   * Changes the rules in place (options left out take their defaults, as in the constructor; `clock`
   * and `clusterId` cannot change). Everything is checked first: a bad option throws and changes
   * nothing. A new index (kind, MinHash parameters, or the exact index's minimum threshold) is rebuilt
   * from the current clusters; a running cleanup timer restarts with a new interval. Memberships are
   * not re-evaluated here (the manager does not keep peers' tags): call `assignPeer` again for that.
   * Returns true when the matching rules (threshold or index) changed.
   */
  reconfigure(options: Omit<ClusterManagerOptions, 'clock' | 'clusterId'>): boolean {
    const rules = resolveRules(options)
    const previous = this.rules
    const rulesChanged = rules.threshold !== previous.threshold || rules.indexKey !== previous.indexKey
    if (rules.indexKey !== previous.indexKey) {
      const index = rules.makeIndex()
      for (const c of this.clustersById.values()) index.add(c.id, c.tags)
      this.index = index
    }
    this.rules = rules
    // lower caps: the longest-empty auto-created clusters and the least recently active peers go now
    while (this.clustersById.size > rules.maxClusters && this.evictEmpty()) {}
    while (this.peerClusters.size > rules.maxPeers && this.evictPeer()) {}
    if (rules.cleanupInterval !== previous.cleanupInterval && this.timer !== undefined) {
      this.stop()
      this.start()
    }
    return rulesChanged
  }

  // ---- clusters

  /** Adds a cluster; returns false (and changes nothing) when the id exists. */
  addCluster(id: string, tags: Iterable<string>): boolean {
    return this.createCluster(id, tags, false)
  }

  /** Removes a cluster and its memberships (each reported as `cluster:peer-removed`). */
  removeCluster(id: string): boolean {
    return this.dropCluster(id, 'removed')
  }

  // ---- members

  /** Adds `peerId` to a cluster (or refreshes it); false when the cluster does not exist. */
  addPeerToCluster(clusterId: string, peerId: string, metrics: Partial<PeerMetrics> = {}): boolean {
    return this.join(clusterId, peerId, metrics, false)
  }

  removePeerFromCluster(clusterId: string, peerId: string): boolean {
    return this.leave(clusterId, peerId, 'removed')
  }

  /** Removes a peer from every cluster (`reason` goes into each `cluster:peer-removed`). */
  removePeer(peerId: string, reason: 'removed' | 'inactive' = 'removed'): number {
    let n = 0
    for (const id of this.clustersOf(peerId)) if (this.leave(id, peerId, reason)) n++
    return n
  }

  /** Marks a peer alive in every cluster it belongs to, optionally updating its metrics. */
  touchPeer(peerId: string, metrics: Partial<PeerMetrics> = {}): void {
    const now = this.clock.now()
    const ids = this.peerClusters.get(peerId)
    if (!ids) return
    this.refresh(peerId, ids)
    for (const id of ids) {
      const m = this.clustersById.get(id)?.members.get(peerId)
      if (!m) continue
      m.lastSeen = now
      Object.assign(m.metrics, definedOnly(metrics))
    }
  }

  /** Counts a failure against a peer (in every cluster it belongs to). Not a sign of life. */
  recordFailure(peerId: string): void {
    for (const id of this.peerClusters.get(peerId) ?? []) {
      const m = this.clustersById.get(id)?.members.get(peerId)
      if (m) m.metrics.failures++
    }
  }

  /** Marks a peer disconnected (keeps RTT and failures; uptime restarts at the next connection). */
  peerDisconnected(peerId: string): void {
    for (const id of this.peerClusters.get(peerId) ?? []) {
      const m = this.clustersById.get(id)?.members.get(peerId)
      if (m) m.metrics.connectedSince = undefined
    }
  }

  /**
   * Puts `peerId` into the clusters whose tags reach the threshold with `tags` (the
   * `maxClustersPerPeer` most similar); when none does and `autoCreate` is on, creates a cluster with
   * exactly these tags (unless `maxClusters` clusters exist and none of them can give way). Clusters it
   * was put in by an earlier `assignPeer` that no longer match are left (`reason: 'reassigned'`);
   * memberships added by hand stay. An auto-created cluster left empty goes at once unless it is kept
   * (see `keepWhenEmpty`; with `removeEmptyClusters` off every cluster is kept): a peer that sends set
   * after set holds one cluster, its latest. A peer with no tags matches nothing and creates nothing.
   * Returns the ids of the clusters it was put in. Work: one index query, then O(maxClustersPerPeer).
   */
  assignPeer(peerId: string, tags: Iterable<string>, metrics: Partial<PeerMetrics> = {}): string[] {
    const set = new Set(tags)
    const matches =
      set.size === 0
        ? []
        : this.index
            .query(set, this.threshold)
            .slice(0, this.rules.maxClustersPerPeer)
            .map((m) => m.id)
    const keep = new Set(matches)
    const leaveStale = () => {
      for (const id of this.clustersOf(peerId)) {
        const m = this.clustersById.get(id)?.members.get(peerId)
        if (m?.assigned && !keep.has(id)) this.leave(id, peerId, 'reassigned')
      }
    }
    let left = false
    if (matches.length === 0 && set.size > 0 && this.rules.autoCreate) {
      if (this.clustersById.size >= this.rules.maxClusters) {
        // what the peer leaves may make room, then the longest-empty auto-created cluster gives way
        leaveStale()
        left = true
        while (this.clustersById.size >= this.rules.maxClusters && this.evictEmpty()) {}
      }
      if (this.clustersById.size < this.rules.maxClusters) {
        const sorted = [...set].sort()
        let id = this.makeId(sorted)
        for (let k = 2; this.clustersById.has(id); k++) id = `${this.makeId(sorted)}#${k}`
        this.createCluster(id, sorted, true)
        matches.push(id)
        keep.add(id)
      } else {
        this.counts.creationsRefused++
      }
    }
    if (!left) leaveStale()
    // (a join that evicts another peer may drop a cluster not joined yet: it is then left out)
    return matches.filter((id) => this.join(id, peerId, metrics, true))
  }

  /** Clusters whose tags reach `threshold` (default: the manager's) with cluster `id`'s, most similar first. */
  findSimilarClusters(id: string, threshold = this.threshold): SimilarCluster[] {
    const c = this.clustersById.get(id)
    if (!c) return []
    return this.index.query(c.tags, threshold).filter((m) => m.id !== id)
  }

  /** Clusters whose tags reach `threshold` with `tags`, most similar first. */
  findClustersForTags(tags: Iterable<string>, threshold = this.threshold): SimilarityMatch[] {
    return this.index.query(tags, threshold)
  }

  /** Jaccard similarity of two clusters' tags (0 when either is unknown). */
  similarity(a: string, b: string): number {
    const ca = this.clustersById.get(a)
    const cb = this.clustersById.get(b)
    return ca && cb ? jaccard(ca.tags, cb.tags) : 0
  }

  /** The `k` best members of a cluster, best first (see {@link compareMembers} for the ranking). */
  bestPeers(clusterId: string, k: number): ClusterMember[] {
    const c = this.clustersById.get(clusterId)
    if (!c || k <= 0) return []
    return [...c.members.values()]
      .sort(compareMembers)
      .slice(0, k)
      .map((m) => ({ ...m, metrics: { ...m.metrics } }))
  }

  // ---- cleanup

  /**
   * Removes members not seen for `inactiveAfter` (`lastSeen <= now - inactiveAfter`), then clusters empty
   * for `inactiveAfter` (when `removeEmptyClusters`; auto-created clusters not kept go as soon as they
   * are empty). Runs every `cleanupInterval` once started.
   */
  cleanup(): { peersRemoved: number; clustersRemoved: number } {
    const now = this.clock.now()
    const cutoff = now - this.inactiveAfter
    let peersRemoved = 0
    let clustersRemoved = 0
    for (const c of [...this.clustersById.values()]) {
      for (const m of [...c.members.values()])
        if (m.lastSeen <= cutoff && this.leave(c.id, m.peerId, 'inactive')) peersRemoved++
      if (!this.clustersById.has(c.id))
        clustersRemoved++ // an auto-created one, gone once empty
      else if (
        this.rules.removeEmptyClusters &&
        c.members.size === 0 &&
        c.emptySince !== undefined &&
        c.emptySince <= cutoff
      )
        if (this.dropCluster(c.id, 'empty')) clustersRemoved++
    }
    return { peersRemoved, clustersRemoved }
  }

  /** Starts the periodic cleanup. */
  start(): void {
    if (this.timer !== undefined) return
    this.timer = this.clock.setInterval(() => this.cleanup(), this.cleanupInterval)
  }

  stop(): void {
    if (this.timer === undefined) return
    this.clock.clearInterval(this.timer)
    this.timer = undefined
  }
}
