import type { Libp2p, PeerId } from '@libp2p/interface'
import type {
  Budget,
  ConnectionMethodSource,
  Logger,
  LruMap,
  MeshEventBus,
  PeerAddressPolicy,
  PeerReputation,
} from 'meshkit/plugin'
import type { ClusterManager } from './cluster-manager.js'

/** Bound on one exchange, ping or dial. */
export const OP_TIMEOUT_MS = 10_000

/** What the service runs on while the node runs (the plugin gives it from its context). */
export interface ServiceRuntime {
  libp2p: Libp2p
  logger: Logger
  events: MeshEventBus
  signal: AbortSignal
  ping?: { ping(peer: PeerId, options?: { signal?: AbortSignal }): Promise<number> }
  /** The per-peer budget of tag exchanges remote peers start (the plugin makes it with `ctx.budget`). */
  budget?: Budget
  /** Where malformed messages are reported. */
  reputation?: Pick<PeerReputation, 'penalize'>
  /** One dial on a peer's word per `security.peerDialInterval`. */
  peerAddresses?: Pick<PeerAddressPolicy, 'takeDial'>
  /** The node's 'connection-methods' providers (holePunch()), read when a member's method is judged. */
  methodSources?: () => readonly ConnectionMethodSource[]
}

/**
 * What the parts of one ClusteringService share: the cluster manager it is, the node while it runs,
 * this node's tags and the settings (`reconfigure()` changes them in place), and what it knows of the
 * peers it is or was connected to.
 */
export interface ServiceState {
  /** The service itself, as a cluster manager that knows its own clusters. */
  readonly manager: ClusterManager & { ownClusters(): string[] }
  /** The node, from `startService()` to `stopService()`. */
  rt?: ServiceRuntime
  /** This node's own tags. */
  tags: string[]
  /** Best peers per own cluster that get the `meshkit-cluster` peer tag. */
  protectBest: number
  /** Connected members wanted per own cluster. */
  targetConnectionsPerCluster: number
  /** How long (ms) a member this node never dialled must stay connected before it is dialled back. */
  trustAfter: number
  /** How long (ms) after it disconnected a member without trust is forgotten. */
  forgetUntrustedAfter: number
  /** The last tags each peer sent (to re-assign peers when the rules change), while it is known. */
  peerTags: LruMap<string, string[]>
  /** Peers this node has a reason to dial: it reached them itself, or they stayed `trustAfter` connected. */
  readonly trusted: LruMap<string, true>
  /** Members without trust that disconnected, and when (oldest first). */
  readonly leftUntrusted: LruMap<string, number>
  /** Since when (ms) each connected peer is connected. */
  readonly connectedSince: Map<string, number>
}
