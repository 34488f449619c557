/**
 * Peer clusters by topic tags: the state and rules of the default clustering strategy, without libp2p.
 * The plugin (index.ts) feeds it peers, tags and metrics; tests drive it directly with an injected clock.
 */

import { invalidOption } from './errors.js'
import {
  checkThreshold,
  jaccard,
  MinHashIndex,
  type MinHashOptions,
  type SetIndex,
  SimilarityIndex,
  type SimilarityMatch,
} from './similarity-index.js'

export type ConnectionMethod = 'direct' | 'hole-punched' | 'relayed'

/** What is measured about a member peer. Unknown values rank last. */
export interface PeerMetrics {
  /** Last measured round-trip time (ping), ms. */
  rttMs?: number
  method?: ConnectionMethod
  /** Since when (clock ms) the current connection is up; unset while not connected. */
  connectedSince?: number
  /** Failed dials / pings / streams so far. */
  failures: number
}

export interface ClusterMember {
  readonly peerId: string
  /** Clock ms of the last sign of life (added, touched, metrics updated). */
  lastSeen: number
  metrics: PeerMetrics
  /** True when `assignPeer` put it there (then a later `assignPeer` may take it out again). */
  assigned: boolean
}

export interface PeerCluster {
  readonly id: string
  readonly tags: ReadonlySet<string>
  readonly members: ReadonlyMap<string, ClusterMember>
  readonly createdAt: number
}

export interface SimilarCluster {
  id: string
  similarity: number
}

/** Events, each with the fields given here (also forwarded to the node's event bus by the plugin). */
export interface ClusterEvents {
  'cluster:created': { clusterId: string; tags: string[] }
  'cluster:removed': { clusterId: string; reason: 'removed' | 'empty' }
  'cluster:peer-added': { clusterId: string; peerId: string }
  'cluster:peer-removed': {
    clusterId: string
    peerId: string
    /** `evicted`: more than `maxPeers` peers were known and this one was the least recently active. */
    reason: 'removed' | 'inactive' | 'reassigned' | 'evicted'
  }
}
export type ClusterEventName = keyof ClusterEvents

/** Time source and timers, injectable for tests. */
export interface Clock {
  now(): number
  setInterval(fn: () => void, ms: number): unknown
  clearInterval(handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setInterval: (fn, ms) => {
    const t = setInterval(fn, ms)
    t.unref?.()
    return t
  },
  clearInterval: (h) => clearInterval(h as ReturnType<typeof setInterval>),
}

export interface ClusterManagerOptions {
  /** Jaccard threshold for assignment and similar clusters. @default 0.7 */
  threshold?: number
  /** A member not seen for this long (ms) is removed by cleanup. @default 300000 (5 min) */
  inactiveAfter?: number
  /** Period of the automatic cleanup (ms), once `start()`ed. @default inactiveAfter / 5, at least 1 s */
  cleanupInterval?: number
  /** `assignPeer` creates a cluster from the peer's tags when no cluster reaches the threshold. @default true */
  autoCreate?: boolean
  /** A cluster empty for `inactiveAfter` is removed by cleanup. @default true */
  removeEmptyClusters?: boolean
  /** `exact` (prefix-filtering index) or MinHash LSH for very many clusters. @default 'exact' */
  index?: 'exact' | { minhash: MinHashOptions }
  /**
   * Lowest threshold the exact index is built for (its prefixes grow as it falls). Searches below it stay
   * exact but scan every cluster. @default threshold
   */
  indexMinThreshold?: number
  /**
   * Clusters at most, for `assignPeer` to create one: at the cap, the auto-created cluster that has been
   * empty longest gives way; when none is empty, no cluster is created (the peer joins only existing
   * matches). `addCluster` (the app's own clusters) is not refused. @default 1024
   */
  maxClusters?: number
  /** Matching clusters one `assignPeer` joins at most, the most similar first. @default 8 */
  maxClustersPerPeer?: number
  /**
   * Member peers known at once; when one more joins, the least recently active peer (joined or touched
   * longest ago) is removed from every cluster (`reason: 'evicted'`). @default 2048
   */
  maxPeers?: number
  clock?: Clock
  /** Makes the id of an auto-created cluster from its sorted tags. @default `tags:` + tags joined by ',' */
  clusterId?: (sortedTags: string[]) => string
}

interface ClusterState {
  id: string
  tags: Set<string>
  members: Map<string, ClusterMember>
  createdAt: number
  /** Clock ms since when the cluster has had no member (undefined while it has some). */
  emptySince?: number
  /** Created by `assignPeer` from a peer's tags (not by `addCluster`). */
  auto: boolean
}

/** What the manager holds and what its caps refused, for metrics and tests. */
export interface ClusterManagerStats {
  clusters: number
  /** Peers that are a member of at least one cluster. */
  peers: number
  /** Auto-created clusters that are empty now (kept: this node's own, or `removeEmptyClusters` off). */
  emptyAuto: number
  /** Clusters `assignPeer` did not create because `maxClusters` clusters existed, none of them empty. */
  creationsRefused: number
  /** Empty auto-created clusters removed to make room under `maxClusters`. */
  clustersEvicted: number
  /** Peers removed because `maxPeers` peers were known. */
  peersEvicted: number
}

const METHOD_RANK: Record<ConnectionMethod, number> = { direct: 0, 'hole-punched': 1, relayed: 2 }

/**
 * Orders members best first:
 * 1. connection method: direct, then hole-punched, then relayed, then unknown;
 * 2. RTT ascending (unknown last);
 * 3. uptime descending: the earlier `connectedSince`, the better (not connected last);
 * 4. failures ascending;
 * 5. peer id (so the order is total and stable).
 */
export function compareMembers(a: ClusterMember, b: ClusterMember): number {
  const ma = a.metrics.method === undefined ? 3 : METHOD_RANK[a.metrics.method]
  const mb = b.metrics.method === undefined ? 3 : METHOD_RANK[b.metrics.method]
  if (ma !== mb) return ma - mb
  const ra = a.metrics.rttMs ?? Number.POSITIVE_INFINITY
  const rb = b.metrics.rttMs ?? Number.POSITIVE_INFINITY
  if (ra !== rb) return ra < rb ? -1 : 1
  const ca = a.metrics.connectedSince ?? Number.POSITIVE_INFINITY
  const cb = b.metrics.connectedSince ?? Number.POSITIVE_INFINITY
  if (ca !== cb) return ca < cb ? -1 : 1
  if (a.metrics.failures !== b.metrics.failures) return a.metrics.failures - b.metrics.failures
  return a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0
}

type Listener<E extends ClusterEventName> = (fields: ClusterEvents[E], event: E) => void

/**
 * Clusters of peers by topic tags (`ClusteringManager` of the old MVP): add/remove clusters and members,
 * automatic assignment by Jaccard similarity of tag sets, similar-cluster search through a
 * {@link SetIndex} (never a pairwise scan), cleanup of inactive members and empty clusters, best peers by
 * metrics, and an event for every change.
 */
export class ClusterManager {
  #threshold: number
  #inactiveAfter: number
  #cleanupInterval: number
  private autoCreate: boolean
  private removeEmpty: boolean
  #maxClusters: number
  #maxClustersPerPeer: number
  #maxPeers: number
  private readonly clock: Clock
  private readonly makeId: (sortedTags: string[]) => string
  private index: SetIndex
  /** The index settings the current index was built with (compared on reconfigure). */
  private indexKey: string
  private readonly clustersById = new Map<string, ClusterState>()
  /** peer -> ids of the clusters it is a member of; in order of last activity (least recent first). */
  private readonly peerClusters = new Map<string, Set<string>>()
  /** Auto-created clusters that are empty, in the order they became empty (the first gives way first). */
  private readonly emptyAuto = new Map<string, ClusterState>()
  private readonly counts = { creationsRefused: 0, clustersEvicted: 0, peersEvicted: 0 }
  /** Clusters being dropped now (their members leave first: no second drop from `leave`). */
  private readonly dropping = new Set<string>()
  private readonly listeners = new Map<string, Set<Listener<ClusterEventName>>>()
  private timer: unknown

  constructor(options: ClusterManagerOptions = {}) {
    const rules = resolveRules(options)
    this.#threshold = rules.threshold
    this.#inactiveAfter = rules.inactiveAfter
    this.#cleanupInterval = rules.cleanupInterval
    this.autoCreate = rules.autoCreate
    this.removeEmpty = rules.removeEmptyClusters
    this.#maxClusters = rules.maxClusters
    this.#maxClustersPerPeer = rules.maxClustersPerPeer
    this.#maxPeers = rules.maxPeers
    this.clock = options.clock ?? systemClock
    this.makeId = options.clusterId ?? ((tags) => `tags:${tags.join(',')}`)
    this.indexKey = rules.indexKey
    this.index = rules.makeIndex()
  }

  /** Jaccard threshold for assignment and similar clusters. */
  get threshold(): number {
    return this.#threshold
  }

  /** A member not seen for this long (ms) is removed by cleanup. */
  get inactiveAfter(): number {
    return this.#inactiveAfter
  }

  /** Period of the automatic cleanup (ms). */
  get cleanupInterval(): number {
    return this.#cleanupInterval
  }

  /** Clusters at most for `assignPeer` to create one. */
  get maxClusters(): number {
    return this.#maxClusters
  }

  /** Matching clusters one `assignPeer` joins at most. */
  get maxClustersPerPeer(): number {
    return this.#maxClustersPerPeer
  }

  /** Member peers known at once. */
  get maxPeers(): number {
    return this.#maxPeers
  }

  stats(): ClusterManagerStats {
    return {
      clusters: this.clustersById.size,
      peers: this.peerClusters.size,
      emptyAuto: this.emptyAuto.size,
      ...this.counts,
    }
  }

  /**
   * Whether an auto-created cluster that became empty stays (until `removeEmptyClusters` removes it
   * `inactiveAfter` later) rather than going at once. The manager keeps none; a subclass keeps those it
   * cares about (the clustering service: this node's own clusters).
   */
  protected keepWhenEmpty(_tags: ReadonlySet<string>): boolean {
    return false
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
    const rulesChanged = rules.threshold !== this.#threshold || rules.indexKey !== this.indexKey
    if (rules.indexKey !== this.indexKey) {
      const index = rules.makeIndex()
      for (const c of this.clustersById.values()) index.add(c.id, c.tags)
      this.index = index
      this.indexKey = rules.indexKey
    }
    this.#threshold = rules.threshold
    this.#inactiveAfter = rules.inactiveAfter
    this.autoCreate = rules.autoCreate
    this.removeEmpty = rules.removeEmptyClusters
    this.#maxClusters = rules.maxClusters
    this.#maxClustersPerPeer = rules.maxClustersPerPeer
    this.#maxPeers = rules.maxPeers
    // lower caps: the longest-empty auto-created clusters and the least recently active peers go now
    while (this.clustersById.size > this.#maxClusters && this.evictEmpty()) {}
    while (this.peerClusters.size > this.#maxPeers && this.evictPeer()) {}
    if (rules.cleanupInterval !== this.#cleanupInterval) {
      this.#cleanupInterval = rules.cleanupInterval
      if (this.timer !== undefined) {
        this.stop()
        this.start()
      }
    }
    return rulesChanged
  }

  // ---- events

  on<E extends ClusterEventName>(event: E | '*', listener: Listener<E>): () => void {
    let set = this.listeners.get(event)
    if (!set) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener as Listener<ClusterEventName>)
    return () => set.delete(listener as Listener<ClusterEventName>)
  }

  private emit<E extends ClusterEventName>(event: E, fields: ClusterEvents[E]): void {
    for (const key of [event, '*'])
      for (const l of this.listeners.get(key) ?? []) {
        try {
          l(fields, event)
        } catch {
          // a throwing listener must not break the manager's state changes
        }
      }
  }

  // ---- clusters

  /** Adds a cluster; returns false (and changes nothing) when the id exists. */
  addCluster(id: string, tags: Iterable<string>): boolean {
    return this.createCluster(id, tags, false)
  }

  private createCluster(id: string, tags: Iterable<string>, auto: boolean): boolean {
    if (this.clustersById.has(id)) return false
    const now = this.clock.now()
    const state: ClusterState = {
      id,
      tags: new Set(tags),
      members: new Map(),
      createdAt: now,
      emptySince: now,
      auto,
    }
    this.clustersById.set(id, state)
    this.index.add(id, state.tags)
    this.emit('cluster:created', { clusterId: id, tags: [...state.tags] })
    return true
  }

  /** Removes a cluster and its memberships (each reported as `cluster:peer-removed`). */
  removeCluster(id: string): boolean {
    return this.dropCluster(id, 'removed')
  }

  getCluster(id: string): PeerCluster | undefined {
    const c = this.clustersById.get(id)
    return c && view(c)
  }

  clusters(): PeerCluster[] {
    return [...this.clustersById.values()].map(view)
  }

  get size(): number {
    return this.clustersById.size
  }

  /** Ids of the clusters `peerId` belongs to. */
  clustersOf(peerId: string): string[] {
    return [...(this.peerClusters.get(peerId) ?? [])]
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
            .slice(0, this.#maxClustersPerPeer)
            .map((m) => m.id)
    const keep = new Set(matches)
    const leaveStale = () => {
      for (const id of this.clustersOf(peerId)) {
        const m = this.clustersById.get(id)?.members.get(peerId)
        if (m?.assigned && !keep.has(id)) this.leave(id, peerId, 'reassigned')
      }
    }
    let left = false
    if (matches.length === 0 && set.size > 0 && this.autoCreate) {
      if (this.clustersById.size >= this.#maxClusters) {
        // what the peer leaves may make room, then the longest-empty auto-created cluster gives way
        leaveStale()
        left = true
        while (this.clustersById.size >= this.#maxClusters && this.evictEmpty()) {}
      }
      if (this.clustersById.size < this.#maxClusters) {
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
        this.removeEmpty &&
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

  // ---- internals

  private join(clusterId: string, peerId: string, metrics: Partial<PeerMetrics>, assigned: boolean): boolean {
    const c = this.clustersById.get(clusterId)
    if (!c) return false
    const now = this.clock.now()
    const existing = c.members.get(peerId)
    if (existing) {
      existing.lastSeen = now
      existing.assigned &&= assigned
      Object.assign(existing.metrics, definedOnly(metrics))
      return true
    }
    c.members.set(peerId, {
      peerId,
      lastSeen: now,
      metrics: { failures: 0, ...definedOnly(metrics) },
      assigned,
    })
    c.emptySince = undefined
    this.emptyAuto.delete(clusterId)
    let set = this.peerClusters.get(peerId)
    if (!set) {
      set = new Set()
      this.peerClusters.set(peerId, set)
      if (this.peerClusters.size > this.#maxPeers) this.evictPeer(peerId)
    } else this.refresh(peerId, set)
    set.add(clusterId)
    this.emit('cluster:peer-added', { clusterId, peerId })
    return true
  }

  /** Moves a peer to the most recently active end of `peerClusters`. */
  private refresh(peerId: string, ids: Set<string>): void {
    this.peerClusters.delete(peerId)
    this.peerClusters.set(peerId, ids)
  }

  /** Removes the least recently active peer (not `except`) from every cluster; false when there is none. */
  private evictPeer(except?: string): boolean {
    for (const peerId of this.peerClusters.keys()) {
      if (peerId === except) continue
      for (const id of this.clustersOf(peerId)) this.leave(id, peerId, 'evicted')
      this.counts.peersEvicted++
      return true
    }
    return false
  }

  /** Drops the auto-created cluster that has been empty longest; false when there is none. */
  private evictEmpty(): boolean {
    const first = this.emptyAuto.keys().next()
    if (first.done) return false
    this.counts.clustersEvicted++
    return this.dropCluster(first.value, 'empty')
  }

  private leave(
    clusterId: string,
    peerId: string,
    reason: ClusterEvents['cluster:peer-removed']['reason'],
  ): boolean {
    const c = this.clustersById.get(clusterId)
    if (!c?.members.delete(peerId)) return false
    const set = this.peerClusters.get(peerId)
    set?.delete(clusterId)
    if (set?.size === 0) this.peerClusters.delete(peerId)
    this.emit('cluster:peer-removed', { clusterId, peerId, reason })
    if (c.members.size === 0 && this.clustersById.get(clusterId) === c) {
      c.emptySince = this.clock.now()
      if (c.auto) {
        // a remote peer's cluster that nobody uses any more goes at once, unless it is kept
        if (this.removeEmpty && !this.dropping.has(clusterId) && !this.keepWhenEmpty(c.tags))
          this.dropCluster(clusterId, 'empty')
        else if (!this.dropping.has(clusterId)) this.emptyAuto.set(clusterId, c)
      }
    }
    return true
  }

  private dropCluster(id: string, reason: 'removed' | 'empty'): boolean {
    const c = this.clustersById.get(id)
    if (!c || this.dropping.has(id)) return false
    this.dropping.add(id)
    try {
      for (const peerId of [...c.members.keys()]) this.leave(id, peerId, 'removed')
    } finally {
      this.dropping.delete(id)
    }
    this.clustersById.delete(id)
    this.emptyAuto.delete(id)
    this.index.remove(id)
    this.emit('cluster:removed', { clusterId: id, reason })
    return true
  }
}

/** Checks and completes the rule options; the index is made on demand. */
function resolveRules(options: Omit<ClusterManagerOptions, 'clock' | 'clusterId'>) {
  const threshold = options.threshold ?? 0.7
  checkThreshold(threshold)
  const inactiveAfter = options.inactiveAfter ?? 300_000
  if (!(inactiveAfter > 0)) throw invalidOption(`inactiveAfter must be > 0 ms (got ${inactiveAfter})`)
  const cleanupInterval = options.cleanupInterval ?? Math.max(1000, Math.floor(inactiveAfter / 5))
  if (!(cleanupInterval > 0)) throw invalidOption(`cleanupInterval must be > 0 ms (got ${cleanupInterval})`)
  const maxClusters = options.maxClusters ?? 1024
  const maxClustersPerPeer = options.maxClustersPerPeer ?? 8
  const maxPeers = options.maxPeers ?? 2048
  for (const [name, value] of Object.entries({ maxClusters, maxClustersPerPeer, maxPeers }))
    if (!(Number.isInteger(value) && value >= 1))
      throw invalidOption(`${name} must be a whole number >= 1 (got ${value})`)
  const idx = options.index ?? 'exact'
  const minThreshold = options.indexMinThreshold ?? threshold
  if (idx === 'exact') checkThreshold(minThreshold)
  const makeIndex = (): SetIndex =>
    idx === 'exact' ? new SimilarityIndex({ minThreshold }) : new MinHashIndex(idx.minhash)
  // built once here, so that bad MinHash parameters throw before anything changes
  makeIndex()
  return {
    threshold,
    inactiveAfter,
    cleanupInterval,
    autoCreate: options.autoCreate ?? true,
    removeEmptyClusters: options.removeEmptyClusters ?? true,
    maxClusters,
    maxClustersPerPeer,
    maxPeers,
    indexKey: JSON.stringify(idx === 'exact' ? { exact: minThreshold } : idx),
    makeIndex,
  }
}

function view(c: ClusterState): PeerCluster {
  const members = new Map<string, ClusterMember>()
  for (const [k, m] of c.members) members.set(k, { ...m, metrics: { ...m.metrics } })
  return { id: c.id, tags: new Set(c.tags), members, createdAt: c.createdAt }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}
