/**
 * The `PluginContext` a node gives each plugin: kernel services, the libp2p node (from `start()` on),
 * budgets that penalize peers, and the APIs of the capabilities the plugin declared.
 */
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { DependencyContainer } from 'tsyringe'
import { type Budget, type BudgetInit, createBudget } from './budget.js'
import type { ConfigEnv, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { meshError } from './errors.js'
import type { MeshEventBus } from './events.js'
import type { Logger } from './logger.js'
import type { PeerAddressPolicy } from './peer-addresses.js'
import { type Capability, MULTI_PROVIDER_CAPABILITIES, type PluginContext } from './plugin.js'
import { providersOf } from './plugin-graph.js'
import type { ApiBox } from './plugin-slot.js'
import type { Reputation } from './reputation.js'
import { capabilityToken } from './tokens.js'

/** What a plugin context reads of its node; the getters follow the node (config, libp2p, signal). */
export interface PluginContextHost {
  readonly config: ResolvedMeshConfig
  readonly env: ConfigEnv
  /** The node's logger (each plugin gets a child named after it). */
  readonly logger: Logger
  readonly events: MeshEventBus
  readonly datastore: Datastore
  readonly peerId: PeerId
  readonly privateKey: PrivateKey
  readonly reputation: Reputation
  readonly container: DependencyContainer
  /** The libp2p node, once created. */
  readonly libp2p: Libp2p | undefined
  /** Aborted when the node stops (a new one for each start). */
  readonly signal: AbortSignal
  readonly peerAddresses: PeerAddressPolicy
  /** Whether `peer` is one of the seeds the bootstrapper reached (false while it has none). */
  isSeed(peer: string): boolean
}

/** The context of the plugin `resolved` on the node `host`. */
export function createPluginContext(resolved: ResolvedPlugin, host: PluginContextHost): PluginContext {
  const { plugin } = resolved
  const declared = new Set<string>([
    plugin.name,
    ...plugin.provides,
    ...plugin.dependencies,
    ...(plugin.optionalDependencies ?? []),
  ])
  const check = (cap: string) => {
    if (!declared.has(cap)) throw meshError('MESH_ERR_UNDECLARED_DEPENDENCY', [plugin.name, cap])
  }
  const logger = host.logger.child(plugin.name)
  return {
    name: plugin.name,
    get config() {
      return host.config
    },
    env: host.env,
    logger,
    events: host.events,
    datastore: host.datastore,
    peerId: host.peerId,
    privateKey: host.privateKey,
    get libp2p() {
      const libp2p = host.libp2p
      if (!libp2p) throw meshError('MESH_ERR_NODE_NOT_CREATED', [plugin.name])
      return libp2p
    },
    get signal() {
      return host.signal
    },
    reputation: host.reputation,
    get peerAddresses() {
      return host.peerAddresses
    },
    isSeed: (peer: string) => host.isSeed(peer),
    budget(name: string, init?: BudgetInit): Budget {
      return createBudget(`${plugin.name}/${name}`, init, (peer, refusal) => {
        if (refusal.peerFault)
          host.reputation.penalize(peer, 'budget', `${plugin.name}/${name}: ${refusal.reason}`)
      })
    },
    use<T>(cap: Capability): T {
      check(cap)
      const providers = providersOf(host.config.plugins).get(cap) ?? []
      if (providers.length > 1 || MULTI_PROVIDER_CAPABILITIES.has(cap)) {
        if (providers.length !== 1)
          throw meshError('MESH_ERR_NOT_EXCLUSIVE', [plugin.name, cap, providers.length])
      }
      return host.container.resolve<ApiBox>(capabilityToken<ApiBox>(cap)).api as T
    },
    useOptional<T>(cap: Capability): T | undefined {
      check(cap)
      const providers = providersOf(host.config.plugins).get(cap) ?? []
      if (providers.length === 0) return undefined
      if (providers.length > 1 || MULTI_PROVIDER_CAPABILITIES.has(cap))
        throw meshError('MESH_ERR_NOT_EXCLUSIVE', [plugin.name, cap, providers.length])
      return host.container.resolve<ApiBox>(capabilityToken<ApiBox>(cap)).api as T
    },
    useAll<T>(cap: Capability): T[] {
      check(cap)
      const token = capabilityToken<ApiBox>(cap)
      return host.container.isRegistered(token, true)
        ? host.container.resolveAll<ApiBox>(token).map((b) => b.api as T)
        : []
    },
  }
}
