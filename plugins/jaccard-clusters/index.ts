import type { Connection, PeerId } from '@libp2p/interface'
import { definePlugin, durationSchema, z } from 'meshkit'
import { ClusterManager, type ConnectionMethod } from './cluster-manager.js'

export {
  type Clock,
  type ClusterEventName,
  type ClusterEvents,
  ClusterManager,
  type ClusterManagerOptions,
  type ClusterMember,
  type ConnectionMethod,
  compareMembers,
  type PeerCluster,
  type PeerMetrics,
  type SimilarCluster,
  systemClock,
} from './cluster-manager.js'
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
  })
  .default({
    threshold: 0.7,
    inactiveAfter: 300_000,
    autoCreate: true,
    removeEmptyClusters: true,
    index: 'exact',
  })

/** How a connection reached the peer: relayed through a circuit, direct, or direct while a relayed one was open. */
function methodOf(connection: Connection, others: Connection[]): ConnectionMethod {
  const relayed = (c: Connection) => c.remoteAddr.toString().includes('/p2p-circuit')
  if (relayed(connection)) return 'relayed'
  return others.some((c) => c !== connection && relayed(c)) ? 'hole-punched' : 'direct'
}

/**
 * The default clustering strategy: peers grouped into clusters by their topic tags with Jaccard similarity
 * (see ClusterManager). Its API (`ctx.use('clustering')`, `node.api('clustering')`) is the manager itself.
 * While the node runs: periodic cleanup; a connection marks its peer alive and records the connection
 * method and since when it is up; a disconnect ends the uptime. Every change is a node event
 * (`cluster:created`, `cluster:removed`, `cluster:peer-added`, `cluster:peer-removed`).
 * Not done yet: the tag exchange protocol and connection management by cluster (issue 5).
 */
export const jaccardClusters = definePlugin({
  name: 'jaccard-clusters',
  provides: ['clustering'],
  options,
  create: (opts) => {
    const manager = new ClusterManager({
      threshold: opts.threshold,
      inactiveAfter: opts.inactiveAfter,
      cleanupInterval: opts.cleanupInterval,
      autoCreate: opts.autoCreate,
      removeEmptyClusters: opts.removeEmptyClusters,
      index: opts.index,
      indexMinThreshold: opts.indexMinThreshold,
    })
    const off: (() => void)[] = []
    return {
      setup: (ctx) => {
        manager.on('*', (fields, event) => ctx.events.emit(event, { ...fields }))
        return manager
      },
      start: (ctx) => {
        const libp2p = ctx.libp2p
        const onOpen = (evt: CustomEvent<Connection>) => {
          const c = evt.detail
          const peer = c.remotePeer.toString()
          manager.touchPeer(peer, {
            method: methodOf(c, libp2p.getConnections(c.remotePeer)),
            connectedSince: Date.now(),
          })
        }
        const onDisconnect = (evt: CustomEvent<PeerId>) => manager.peerDisconnected(evt.detail.toString())
        libp2p.addEventListener('connection:open', onOpen)
        libp2p.addEventListener('peer:disconnect', onDisconnect)
        off.push(
          () => libp2p.removeEventListener('connection:open', onOpen),
          () => libp2p.removeEventListener('peer:disconnect', onDisconnect),
        )
        manager.start()
      },
      stop: () => {
        manager.stop()
        for (const f of off.splice(0)) f()
      },
    }
  },
})
