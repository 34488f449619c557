import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { ConfigEnv, ResolvedMeshConfig } from './config-types.js'
import type { MeshEventBus } from './events.js'
import type { Logger } from './logger.js'
import type { Reputation } from './reputation.js'

/** A typed DI token: a symbol that remembers the type it resolves to. */
export type Token<T> = symbol & { readonly __type?: T }

function token<T>(description: string): Token<T> {
  return Symbol.for(`meshkit.${description}`) as Token<T>
}

/**
 * The kernel's DI tokens for the services of a node's container (internal: plugins reach the services
 * through their `PluginContext`, apps through `MeshNode`).
 */
export const TOKENS = {
  config: token<ResolvedMeshConfig>('config'),
  env: token<ConfigEnv>('env'),
  logger: token<Logger>('logger'),
  events: token<MeshEventBus>('events'),
  datastore: token<Datastore>('datastore'),
  peerId: token<PeerId>('peer-id'),
  privateKey: token<PrivateKey>('private-key'),
  libp2p: token<Libp2p>('libp2p'),
  reputation: token<Reputation>('reputation'),
} as const

/** The token under which the API of the plugin(s) providing `capability` is registered. */
export function capabilityToken<T>(capability: string): Token<T> {
  return token<T>(`capability.${capability}`)
}
