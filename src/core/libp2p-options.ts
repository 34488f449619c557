import type { ComponentLogger, ConnectionGater, Logger } from '@libp2p/interface'
import type { Libp2pOptions } from 'libp2p'
import type { ResolvedMeshConfig } from './config-types.js'
import { meshError } from './errors.js'
import type { Libp2pContribution } from './plugin.js'

type GaterMethod = keyof ConnectionGater

/** Combines gaters: a connection is denied as soon as any gater denies it. */
export function combineGaters(gaters: readonly ConnectionGater[]): ConnectionGater | undefined {
  if (gaters.length === 0) return undefined
  if (gaters.length === 1) return gaters[0]
  const methods = new Set(gaters.flatMap((g) => Object.keys(g) as GaterMethod[]))
  const combined: Record<string, (...args: unknown[]) => Promise<boolean>> = {}
  for (const method of methods) {
    combined[method] = async (...args: unknown[]) => {
      for (const gater of gaters) {
        const fn = gater[method] as ((...a: unknown[]) => boolean | Promise<boolean>) | undefined
        if (fn && (await fn.apply(gater, args))) return true
      }
      return false
    }
  }
  return combined as ConnectionGater
}

const unique = (items: readonly string[]) => [...new Set(items)]

/**
 * libp2p's debug logging is off unless DEBUG is set, yet its default logger still builds a `debug`
 * instance (with a TTY check) for every component of every connection. When DEBUG is unset, a shared
 * no-op logger saves that work; with DEBUG set, libp2p's own logger is used.
 */
export function quietComponentLogger(env: NodeJS.ProcessEnv = process.env): ComponentLogger | undefined {
  if (env.DEBUG) return undefined
  const noop = Object.assign(() => {}, {
    enabled: false,
    error: () => {},
    trace: () => {},
    newScope: (): Logger => noop,
  }) as Logger
  return { forComponent: () => noop }
}

/** Merges every plugin's libp2p contribution, in plugin order, with the config's own settings. */
export function mergeContributions(
  contributions: ReadonlyArray<{ plugin: string; contribution: Libp2pContribution }>,
  config: ResolvedMeshConfig,
  coreGater?: ConnectionGater,
): Libp2pOptions {
  const services: Record<string, unknown> = {}
  const serviceOwner = new Map<string, string>()
  const listen: string[] = []
  const announce: string[] = []
  const appendAnnounce: string[] = []
  const noAnnounce: string[] = []
  const gaters: ConnectionGater[] = coreGater ? [coreGater] : []
  const options: Required<
    Pick<Libp2pOptions, 'transports' | 'connectionEncrypters' | 'streamMuxers' | 'peerDiscovery'>
  > = {
    transports: [],
    connectionEncrypters: [],
    streamMuxers: [],
    peerDiscovery: [],
  }
  let connectionManager: NonNullable<Libp2pOptions['connectionManager']> = {}
  let metrics: { plugin: string; factory: NonNullable<Libp2pOptions['metrics']> } | undefined
  let protector:
    | { plugin: string; factory: NonNullable<Libp2pContribution['connectionProtector']> }
    | undefined
  for (const { plugin, contribution: c } of contributions) {
    options.transports.push(...(c.transports ?? []))
    options.connectionEncrypters.push(...(c.connectionEncrypters ?? []))
    options.streamMuxers.push(...(c.streamMuxers ?? []))
    options.peerDiscovery.push(...(c.peerDiscovery ?? []))
    for (const [key, factory] of Object.entries(c.services ?? {})) {
      const owner = serviceOwner.get(key)
      if (owner) throw meshError('MESH_ERR_SERVICE_CONFLICT', [key, owner, plugin])
      serviceOwner.set(key, plugin)
      services[key] = factory
    }
    if (c.connectionGater) gaters.push(c.connectionGater)
    listen.push(...(c.addresses?.listen ?? []))
    announce.push(...(c.addresses?.announce ?? []))
    appendAnnounce.push(...(c.addresses?.appendAnnounce ?? []))
    noAnnounce.push(...(c.addresses?.noAnnounce ?? []))
    connectionManager = { ...connectionManager, ...c.connectionManager }
    if (c.metrics) {
      if (metrics) throw meshError('MESH_ERR_SERVICE_CONFLICT', ['metrics', metrics.plugin, plugin])
      metrics = { plugin, factory: c.metrics }
    }
    if (c.connectionProtector) {
      if (protector)
        throw meshError('MESH_ERR_SERVICE_CONFLICT', ['connectionProtector', protector.plugin, plugin])
      protector = { plugin, factory: c.connectionProtector }
    }
  }
  const gater = combineGaters(gaters)
  const logger = quietComponentLogger()
  return {
    ...(logger ? { logger } : {}),
    ...options,
    services: services as Libp2pOptions['services'],
    ...(metrics ? { metrics: metrics.factory } : {}),
    ...(protector ? { connectionProtector: protector.factory as Libp2pOptions['connectionProtector'] } : {}),
    ...(gater ? { connectionGater: gater } : {}),
    addresses: {
      listen: unique(config.listen ?? listen),
      announce: unique(config.announce ?? announce),
      appendAnnounce: unique(appendAnnounce),
      noAnnounce: unique(noAnnounce),
    },
    connectionManager: {
      maxConnections: config.connections.maxConnections,
      dialTimeout: config.connections.dialTimeout,
      allow: config.connections.allow,
      inboundConnectionThreshold: config.connections.inboundConnectionThreshold,
      maxIncomingPendingConnections: config.connections.maxIncomingPendingConnections,
      ...connectionManager,
    },
  }
}
