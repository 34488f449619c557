/** The vocabulary of the clusters: members and their metrics, clusters, events, the clock. */
import type { ConnectionMethod } from 'meshkit/plugin'

/** How a member is connected: the shared contract's methods (`meshkit/plugin`). */
export type { ConnectionMethod }

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
