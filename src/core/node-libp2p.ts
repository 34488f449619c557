/** A node's libp2p: created from the plugins' contributions (not started), and its configured dials. */
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Datastore } from 'interface-datastore'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import type { ResolvedMeshConfig } from './config-types.js'
import { meshError, reasonOf } from './errors.js'
import type { MeshEventBus } from './events.js'
import { libp2pComponentLogger, mergeContributions } from './libp2p-options.js'
import type { Logger } from './logger.js'
import { createNodeGater, exemptionOf } from './node-gater.js'
import type { PeerAddressPolicy } from './peer-addresses.js'
import type { Libp2pContribution } from './plugin.js'
import type { Reputation } from './reputation.js'

export interface NodeLibp2pInit {
  contributions: Array<{ plugin: string; contribution: Libp2pContribution }>
  config: ResolvedMeshConfig
  /** The node's current `connections.maxIncomingPendingPerHost` (read on every inbound connection). */
  maxPendingPerHost: () => number
  reputation: Reputation
  addresses: PeerAddressPolicy
  logger: Logger
  privateKey: PrivateKey
  datastore: Datastore
}

/**
 * Creates the libp2p node (not started) with the node's connection gater, and returns it with the
 * addresses it is configured to listen on. A transport tag used twice is MESH_ERR_TRANSPORT_CONFLICT,
 * any other failure MESH_ERR_NODE_CREATE_FAILED.
 */
export async function createNodeLibp2p(init: NodeLibp2pInit): Promise<{ libp2p: Libp2p; listen: string[] }> {
  const { config } = init
  const gater = createNodeGater({
    reputation: init.reputation,
    addresses: init.addresses,
    maxPendingPerHost: init.maxPendingPerHost,
    exempt: exemptionOf(config.connections.allow),
  })
  const options: Libp2pOptions = {
    ...mergeContributions(init.contributions, config, gater, libp2pComponentLogger(init.logger)),
    privateKey: init.privateKey,
    datastore: init.datastore,
    // the peer store keeps only addresses the node would dial (a peer's identify can list anything)
    peerStore: { addressFilter: (_peer, address) => init.addresses.refuse(address) === undefined },
    start: false,
  }
  const listen = [...(options.addresses?.listen ?? [])]
  try {
    return { libp2p: await createLibp2p(options), listen }
  } catch (err) {
    const tag = /already a transport with the tag (\S+)/.exec(reasonOf(err))?.[1]
    if (tag) throw meshError('MESH_ERR_TRANSPORT_CONFLICT', [tag], { cause: err })
    throw meshError('MESH_ERR_NODE_CREATE_FAILED', [reasonOf(err)], { cause: err })
  }
}

export interface DialConfiguredInit {
  /** Whether the node is started (checked before each dial). */
  started: () => boolean
  /** The node's libp2p (read only while started). */
  libp2p: () => Libp2p
  /** The node's current signal (aborted when it stops). */
  signal: () => AbortSignal
  logger: Logger
  events: MeshEventBus
}

/** Dials `addresses` (the config's `dial`), all at once; failures are logged and reported as events. */
export async function dialConfigured(addresses: readonly string[], init: DialConfiguredInit): Promise<void> {
  await Promise.all(
    addresses.map(async (address) => {
      if (!init.started()) return
      try {
        const connection = await init.libp2p().dial(multiaddr(address), { signal: init.signal() })
        init.logger.info(`dialled ${address} (${connection.remotePeer})`)
      } catch (err) {
        if (init.signal().aborted) return
        init.logger.warn(`could not dial ${address}: ${reasonOf(err)}`)
        init.events.emit('dial:failed', { address, error: reasonOf(err) })
      }
    }),
  )
}
