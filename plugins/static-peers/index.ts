import { type BootstrapSource, definePlugin, multiaddrSchema, z } from 'meshkit/plugin'

const options = z
  .strictObject({
    /**
     * Peers to keep in touch with, as multiaddrs. Give each its `/p2p/<peer id>`: the connection is then
     * checked against that id, and a peer already connected is not dialled again. @default []
     */
    peers: z.array(multiaddrSchema("'/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...'")).default([]),
  })
  .prefault({})

/** The priority of a static list among bootstrap sources: after the peer cache (10), before DNS seeds (30). */
export const STATIC_PEERS_PRIORITY = 20

/**
 * A fixed list of bootstrap peers. The kernel's bootstrapper dials them whenever the node has fewer than
 * `bootstrap.minConnections` peers, and retries with backoff while they are unreachable.
 */
export const staticPeers = definePlugin({
  name: 'static-peers',
  provides: ['bootstrap'],
  options,
  create: (opts) => {
    const peers = [...new Set(opts.peers)]
    return {
      setup: (ctx): BootstrapSource => {
        const anonymous = peers.filter((p) => !/\/p2p\/[^/]+$/.test(p))
        if (anonymous.length > 0) {
          ctx.logger.warn(
            `${anonymous.join(', ')} ${anonymous.length === 1 ? 'has' : 'have'} no /p2p/<peer id>: ` +
              'any peer answering there is accepted; add the peer id to make sure it is the one you mean',
          )
        }
        return { priority: STATIC_PEERS_PRIORITY, seed: true, candidates: () => peers }
      },
    }
  },
})
