import type { PeerId } from '@libp2p/interface'
import { definePlugin, durationSchema, z } from 'meshkit/plugin'
import { ClusteringService, type ClusteringServiceOptions, TAGS_BUDGET } from './service.js'
import { TAG_LIMITS } from './wire.js'

type PingService = { ping(peer: PeerId, options?: { signal?: AbortSignal }): Promise<number> }

export {
  type Clock,
  type ClusterEventName,
  type ClusterEvents,
  ClusterManager,
  type ClusterManagerOptions,
  type ClusterManagerStats,
  type ClusterMember,
  type ConnectionMethod,
  compareMembers,
  type PeerCluster,
  type PeerMetrics,
  type SimilarCluster,
  systemClock,
} from './cluster-manager.js'
export {
  CLUSTER_PEER_TAG,
  ClusteringService,
  type ClusteringServiceOptions,
  methodOf,
  TAGS_BUDGET,
} from './service.js'
export {
  BruteForceIndex,
  jaccard,
  MinHashIndex,
  type MinHashOptions,
  meetsThreshold,
  type SetIndex,
  SimilarityIndex,
  type SimilarityIndexOptions,
  type SimilarityMatch,
  type SimilarPair,
} from './similarity-index.js'
export {
  checkTags,
  decodeLengthPrefix,
  decodeTags,
  encodeTags,
  TAG_LIMITS,
  TAGS_PROTOCOL,
  type TagsMessage,
  TagsWireError,
} from './wire.js'

const options = z
  .strictObject({
    /** Jaccard threshold for assignment and `findSimilarClusters`, in (0, 1]. @default 0.7 */
    threshold: z.number().gt(0).max(1).default(0.7),
    /** Members not seen for this long are removed; clusters empty this long too. @default '5m' */
    inactiveAfter: durationSchema("'5m'").default(300_000),
    /** How often cleanup runs. @default inactiveAfter / 5 (at least 1 s) */
    cleanupInterval: durationSchema("'1m'").optional(),
    /** `assignPeer` creates a cluster when none reaches the threshold. @default true */
    autoCreate: z.boolean().default(true),
    /** Remove clusters that stayed empty for `inactiveAfter`. @default true */
    removeEmptyClusters: z.boolean().default(true),
    /** `'exact'` (prefix-filtering index) or `{ minhash: { bands, rows } }` (approximate). @default 'exact' */
    index: z
      .union([
        z.literal('exact'),
        z.strictObject({
          minhash: z.strictObject({
            bands: z.number().int().min(1).max(512).default(20),
            rows: z.number().int().min(1).max(64).default(5),
            seed: z.number().int().optional(),
          }),
        }),
      ])
      .default('exact'),
    /** Lowest threshold the exact index serves without scanning (for `findSimilarClusters(id, lower)`). @default threshold */
    indexMinThreshold: z.number().gt(0).max(1).optional(),
    /** This node's own topic tags (sent to peers; `setTags()` changes them). @default [] */
    tags: z.array(z.string().min(1).max(TAG_LIMITS.maxTagLength)).max(TAG_LIMITS.maxTags).default([]),
    /** Best members of each own cluster protected from pruning (libp2p peer tag). @default 3 */
    protectBest: z.number().int().min(0).max(1000).default(3),
    /** Connected members wanted per own cluster; below it the best known are dialled. @default 4 */
    targetConnectionsPerCluster: z.number().int().min(0).max(1000).default(4),
    /** How often connected cluster members are pinged. @default '30s' */
    pingInterval: durationSchema("'30s'").default(30_000),
    /** How often protection and the per-cluster target are checked (also after every change). @default '5s' */
    maintainInterval: durationSchema("'5s'").default(5_000),
    /**
     * Clusters at most for a peer's tags to create one; at the cap the longest-empty auto-created
     * cluster gives way, or none is created. @default 1024
     */
    maxClusters: z.number().int().min(1).max(1_000_000).default(1024),
    /** Matching clusters one peer joins at most (the most similar). @default 8 */
    maxClustersPerPeer: z.number().int().min(1).max(1024).default(8),
    /** Member peers known at once; beyond, the least recently active one is forgotten. @default 2048 */
    maxPeers: z.number().int().min(1).max(1_000_000).default(2048),
    /** A member this node never dialled itself is dialled back only after it stayed connected this long. @default '1m' */
    trustAfter: durationSchema("'1m'").default(60_000),
    /** A member without that trust is forgotten this long after it left (not `inactiveAfter`). @default '30s' */
    forgetUntrustedAfter: durationSchema("'30s'").default(30_000),
  })
  .prefault({})

function serviceOptions(opts: z.output<typeof options>): ClusteringServiceOptions {
  return {
    threshold: opts.threshold,
    inactiveAfter: opts.inactiveAfter,
    cleanupInterval: opts.cleanupInterval,
    autoCreate: opts.autoCreate,
    removeEmptyClusters: opts.removeEmptyClusters,
    index: opts.index,
    indexMinThreshold: opts.indexMinThreshold,
    tags: opts.tags,
    protectBest: opts.protectBest,
    targetConnectionsPerCluster: opts.targetConnectionsPerCluster,
    pingInterval: opts.pingInterval,
    maintainInterval: opts.maintainInterval,
    maxClusters: opts.maxClusters,
    maxClustersPerPeer: opts.maxClustersPerPeer,
    maxPeers: opts.maxPeers,
    trustAfter: opts.trustAfter,
    forgetUntrustedAfter: opts.forgetUntrustedAfter,
  }
}

/**
 * The default clustering strategy: peers grouped into clusters by their topic tags with Jaccard similarity
 * (see ClusterManager). Its API (`ctx.use('clustering')`, `node.api('clustering')`) is a
 * {@link ClusteringService}: the manager plus this node's own tags (`setTags`) and clusters.
 * While the node runs:
 * - peers exchange their tags over `/mesh/tags/1.0.0` (see wire.ts) when a connection opens (the dialling
 *   side asks) and whenever `setTags` changes them; each peer is assigned to clusters by its tags. The
 *   exchange runs on a direct or hole-punched connection: a peer reached only through a relay (a limited
 *   connection) is asked once an unlimited connection to it opens. Exchanges and pings never dial;
 * - a connection marks its peer alive and records the connection method and since when it is up; a peer
 *   that disconnects keeps its last-seen time and is removed `inactiveAfter` later;
 * - connected cluster members are pinged every `pingInterval` (RTT, failures);
 * - the `protectBest` best members of each cluster this node belongs to carry the `meshkit-cluster` peer
 *   tag, and a cluster with fewer than `targetConnectionsPerCluster` connected members gets its best
 *   known members dialled by peer id (a few at a time, with backoff, at most one a second overall, one
 *   per peer per `security.peerDialInterval`), but only members this node has a reason to trust: it
 *   reached them itself, or they stayed connected for `trustAfter`; a member without that trust is
 *   forgotten `forgetUntrustedAfter` after it disconnected;
 * - bounds (see docs/clustering.md): a peer's exchanges take from a per-peer budget (`TAGS_BUDGET`),
 *   malformed ones cost it reputation; a peer holds at most the cluster of its latest tag set (an
 *   auto-created cluster left empty goes at once unless it is one of this node's own), at most
 *   `maxClustersPerPeer` memberships; `maxClusters` and `maxPeers` cap the whole.
 * Every change is a node event (`cluster:created`, `cluster:removed`, `cluster:peer-added`,
 * `cluster:peer-removed`); bad tag messages reset the stream and emit `clustering:protocol-error`.
 * On a config reload (`mesh dev`) every option is applied in place (`ClusteringService.reconfigure`):
 * new tags are sent to connected peers, a new threshold or index re-assigns known peers, connections stay.
 */
export const jaccardClusters = definePlugin({
  name: 'jaccard-clusters',
  provides: ['clustering'],
  dependencies: ['ping'],
  options,
  create: (opts) => {
    const service = new ClusteringService(serviceOptions(opts))
    return {
      // every option applies in place (ClusteringService.reconfigure); the API object stays the same
      reconfigure: (next) => {
        service.reconfigure(serviceOptions(next))
      },
      setup: (ctx) => {
        service.on('*', (fields, event) => ctx.events.emit(event, { ...fields }))
        return service
      },
      start: async (ctx) => {
        const services = ctx.libp2p.services as { ping?: PingService }
        await service.startService({
          libp2p: ctx.libp2p,
          logger: ctx.logger,
          events: ctx.events,
          signal: ctx.signal,
          ping: services.ping,
          budget: ctx.budget('tags', TAGS_BUDGET),
          reputation: ctx.reputation,
          peerAddresses: ctx.peerAddresses,
        })
      },
      stop: () => service.stopService(),
    }
  },
})
