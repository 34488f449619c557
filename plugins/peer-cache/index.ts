import { isAbsolute, join } from 'node:path'
import type { Connection, IdentifyResult, PeerId } from '@libp2p/interface'
import { type BootstrapSource, createAddressScope, definePlugin, durationSchema, z } from 'meshkit/plugin'
import { type CachedPeer, ipOfAddress } from './cached-peer.js'
import { PeerCache } from './peer-cache.js'
import { cappedPerNetwork } from './ranking.js'

// The machinery beside this file: cached-peer.ts (an entry and its addresses), ranking.ts (usefulness,
// order, retry backoff, spread across networks), cache-file.ts (the file's format, atomic writes,
// backups) and peer-cache.ts (the cache: what connections and dials teach it, what it offers).
export { MAX_CACHE_FILE_BYTES, parseCacheFile } from './cache-file.js'
export type { CachedPeer } from './cached-peer.js'
export { MAX_TOLD_PER_NETWORK } from './peer-cache.js'
export {
  cappedPerNetwork,
  comparePeers,
  FORGET_AFTER_FAILURES,
  networkOf,
  RETRY_INITIAL_MS,
  RETRY_MAX_MS,
  retryAt,
  spreadAcrossNetworks,
  usefulness,
} from './ranking.js'

/** The priority of the peer cache among bootstrap sources: first, before static peers (20) and DNS seeds (30). */
export const PEER_CACHE_PRIORITY = 10

/** The cache file's name inside the data dir when `file` is not set. */
export const PEER_CACHE_FILE = 'peer-cache.json'

const options = z
  .strictObject({
    /** The cache file; a relative path is taken from the data dir. @default '<dataDir>/peer-cache.json' */
    file: z.string().min(1).optional(),
    /** The most peers kept; the most useful stay (see `comparePeers`). @default 100 */
    maxPeers: z.number().int().positive().max(10_000).default(100),
    /** The most addresses kept per peer, the last one that worked first. @default 8 */
    maxAddressesPerPeer: z.number().int().positive().max(64).default(8),
    /** The file is written at most once per this interval (and on stop). @default '1s' */
    flushInterval: durationSchema("'1s'").default(1_000),
  })
  .prefault({})

/** The peer cache's API (`node.api('peer-cache')`): a bootstrap source plus a look at the cache. */
export interface PeerCacheApi extends BootstrapSource {
  /** The cached peers, best first. */
  peers(): CachedPeer[]
  /** Writes the cache now if it changed (it is written on its own at most once per `flushInterval`). */
  flush(): Promise<void>
  /** The cache file's path. */
  readonly file: string
}

/**
 * Remembers the peers this node dialled successfully (the addresses that worked, successes, failures,
 * time connected) in `<dataDir>/peer-cache.json`, and offers them first when bootstrapping, so a
 * restarted node rejoins the mesh without its seeds. A peer that only ever connected to this node (the
 * first node of a mesh is dialled by everyone) is remembered by the listen addresses it told (identify),
 * so that such a node too can rejoin when its seeds are gone. Hostile peers: such told addresses count
 * only on the IP the peer's connection came from (it can point this node at nothing but itself), inside
 * `network.addressScope`, never relayed ones, at most `maxAddressesPerPeer`, for at most half
 * of `maxPeers`, and those peers are offered after every peer a dial of ours reached (a dial that
 * reaches one makes it a verified entry); peers rank by usefulness (time
 * connected, dials that worked), not by how recently they showed up; candidates are spread across
 * networks; a failing peer is offered again only after a backoff (30 s doubling up to 6 h) and forgotten
 * after 8 failures in a row and a week unseen. The kernel keeps a seed connection as well
 * (`bootstrap.seedConnections`). Writes are atomic (temp file + rename, mode 0600) and at most once per
 * `flushInterval`; an unusable file is moved aside to `<file>.corrupt` with a warning, never lost.
 */
export const peerCache = definePlugin({
  name: 'peer-cache',
  provides: ['bootstrap'],
  options,
  create: (opts) => {
    let cache: PeerCache | undefined
    let unsubscribe: Array<() => void> = []
    return {
      setup: (ctx): PeerCacheApi => {
        const file = !opts.file
          ? join(ctx.config.dataDir, PEER_CACHE_FILE)
          : isAbsolute(opts.file)
            ? opts.file
            : join(ctx.config.dataDir, opts.file)
        const scope = createAddressScope(ctx.config.network.publicCidrs)
        const current = new PeerCache(
          file,
          opts,
          ctx.logger,
          ctx.peerId.toString(),
          ctx.config.connections.dialTimeout,
          {
            inScope: (addrs) => ctx.peerAddresses.filter(addrs),
            isPublic: (address) => cappedPerNetwork(address, scope),
          },
        )
        cache = current
        return {
          priority: PEER_CACHE_PRIORITY,
          file,
          candidates: () => current.candidates(),
          peers: () => current.ranked().map((p) => ({ ...p, addrs: [...p.addrs] })),
          flush: () => current.flush(),
        }
      },
      libp2p: () => ({
        connectionGater: {
          // never denies: it only notes the dial, so a dial that does not connect counts as a failure
          denyDialPeer: (peerId: PeerId) => {
            cache?.dialling(peerId)
            return false
          },
        },
      }),
      start: async (ctx) => {
        if (!cache) return
        const current = cache
        await current.start()
        const on = <E extends 'peer:disconnect' | 'connection:open' | 'peer:identify'>(
          name: E,
          handle: (detail: never) => void,
        ) => {
          const listener = (evt: CustomEvent) => {
            try {
              handle(evt.detail as never)
            } catch (err) {
              ctx.logger.debug(`peer cache: ${name}: ${(err as Error).message}`)
            }
          }
          ctx.libp2p.addEventListener(name, listener as never)
          unsubscribe.push(() => ctx.libp2p.removeEventListener(name, listener as never))
        }
        on('connection:open', (connection: Connection) => current.connectionOpened(connection))
        on('peer:disconnect', (peerId: PeerId) => current.disconnected(peerId))
        on('peer:identify', (result: IdentifyResult) =>
          current.identified(
            result.peerId.toString(),
            result.listenAddrs.map((a) => a.toString()),
            result.connection.remoteAddr.toString().includes('/p2p-circuit')
              ? undefined
              : ipOfAddress(result.connection.remoteAddr.toString()),
          ),
        )
      },
      stop: async () => {
        for (const off of unsubscribe) off()
        unsubscribe = []
        await cache?.stop()
      },
    }
  },
})
