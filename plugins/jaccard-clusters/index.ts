import type { PeerId } from '@libp2p/interface'
import {
  CONNECTION_METHODS_CAPABILITY,
  type ConnectionMethodSource,
  definePlugin,
  hasMethods,
  z,
} from 'meshkit/plugin'
import { clusteringServiceShape, clusterRulesShape } from './options.js'
import { ClusteringService, TAGS_BUDGET } from './service.js'

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

/**
 * The options: the matching rules (threshold, index, cleanup, caps), then this node's tags, protection,
 * dialling and timers. Each is written once, with its bounds, JSDoc and `@default`, in options.ts
 * (ClusterManager, ClusteringService and MinHashIndex resolve theirs with the same schemas).
 */
const options = z.strictObject({ ...clusterRulesShape, ...clusteringServiceShape }).prefault({})

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
  // how members are connected (cluster views rank direct > hole-punched > relayed) comes from these
  optionalDependencies: [CONNECTION_METHODS_CAPABILITY],
  options,
  create: (opts) => {
    const service = new ClusteringService(opts)
    return {
      // every option applies in place (ClusteringService.reconfigure); the API object stays the same
      reconfigure: (next) => {
        service.reconfigure(next)
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
          methodSources: () =>
            ctx
              .useAll(CONNECTION_METHODS_CAPABILITY)
              .filter((api) => hasMethods<ConnectionMethodSource>(api, 'methodOf')),
        })
      },
      stop: () => service.stopService(),
    }
  },
})
