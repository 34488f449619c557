import type { ResolvedRules } from './cluster-rules.js'
import type {
  Clock,
  ClusterEventName,
  ClusterEvents,
  ClusterManagerStats,
  ClusterMember,
  PeerCluster,
  PeerMetrics,
} from './cluster-types.js'
import type { SetIndex } from './similarity-index.js'

export interface ClusterState {
  id: string
  tags: Set<string>
  members: Map<string, ClusterMember>
  createdAt: number
  /** Clock ms since when the cluster has had no member (undefined while it has some). */
  emptySince?: number
  /** Created by `assignPeer` from a peer's tags (not by `addCluster`). */
  auto: boolean
}

export type Listener<E extends ClusterEventName> = (fields: ClusterEvents[E], event: E) => void

/**
 * The clusters and memberships of a ClusterManager and the moves between them: join, leave, evict and
 * drop, each reported as an event. The manager (a subclass) decides which moves to make.
 */
export abstract class ClusterStore {
  protected readonly clustersById = new Map<string, ClusterState>()
  /** peer -> ids of the clusters it is a member of; in order of last activity (least recent first). */
  protected readonly peerClusters = new Map<string, Set<string>>()
  /** Auto-created clusters that are empty, in the order they became empty (the first gives way first). */
  protected readonly emptyAuto = new Map<string, ClusterState>()
  protected readonly counts = { creationsRefused: 0, clustersEvicted: 0, peersEvicted: 0 }
  /** Clusters being dropped now (their members leave first: no second drop from `leave`). */
  private readonly dropping = new Set<string>()
  private readonly listeners = new Map<string, Set<Listener<ClusterEventName>>>()

  constructor(
    protected rules: ResolvedRules,
    protected index: SetIndex,
    protected readonly clock: Clock,
  ) {}

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

  protected emit<E extends ClusterEventName>(event: E, fields: ClusterEvents[E]): void {
    for (const key of [event, '*'])
      for (const l of this.listeners.get(key) ?? []) {
        try {
          l(fields, event)
        } catch {
          // a throwing listener must not break the manager's state changes
        }
      }
  }

  protected createCluster(id: string, tags: Iterable<string>, auto: boolean): boolean {
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

  // ---- internals

  protected join(
    clusterId: string,
    peerId: string,
    metrics: Partial<PeerMetrics>,
    assigned: boolean,
  ): boolean {
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
      if (this.peerClusters.size > this.rules.maxPeers) this.evictPeer(peerId)
    } else this.refresh(peerId, set)
    set.add(clusterId)
    this.emit('cluster:peer-added', { clusterId, peerId })
    return true
  }

  /** Moves a peer to the most recently active end of `peerClusters`. */
  protected refresh(peerId: string, ids: Set<string>): void {
    this.peerClusters.delete(peerId)
    this.peerClusters.set(peerId, ids)
  }

  /** Removes the least recently active peer (not `except`) from every cluster; false when there is none. */
  protected evictPeer(except?: string): boolean {
    for (const peerId of this.peerClusters.keys()) {
      if (peerId === except) continue
      for (const id of this.clustersOf(peerId)) this.leave(id, peerId, 'evicted')
      this.counts.peersEvicted++
      return true
    }
    return false
  }

  /** Drops the auto-created cluster that has been empty longest; false when there is none. */
  protected evictEmpty(): boolean {
    const first = this.emptyAuto.keys().next()
    if (first.done) return false
    this.counts.clustersEvicted++
    return this.dropCluster(first.value, 'empty')
  }

  protected leave(
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
        if (this.rules.removeEmptyClusters && !this.dropping.has(clusterId) && !this.keepWhenEmpty(c.tags))
          this.dropCluster(clusterId, 'empty')
        else if (!this.dropping.has(clusterId)) this.emptyAuto.set(clusterId, c)
      }
    }
    return true
  }

  protected dropCluster(id: string, reason: 'removed' | 'empty'): boolean {
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

export function view(c: ClusterState): PeerCluster {
  const members = new Map<string, ClusterMember>()
  for (const [k, m] of c.members) members.set(k, { ...m, metrics: { ...m.metrics } })
  return { id: c.id, tags: new Set(c.tags), members, createdAt: c.createdAt }
}

export function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}
