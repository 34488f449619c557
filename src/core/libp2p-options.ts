import type { ComponentLogger, ConnectionGater, Logger as Libp2pLogger } from '@libp2p/interface'
import type { Libp2pOptions } from 'libp2p'
import type { ResolvedMeshConfig } from './config-types.js'
import { meshError } from './errors.js'
import type { Logger } from './logger.js'
import type { Libp2pContribution } from './plugin.js'

type GaterMethod = keyof ConnectionGater

/** Combines gaters: a connection is denied as soon as any gater denies it. */
export function combineGaters(gaters: readonly ConnectionGater[]): ConnectionGater | undefined {
  if (gaters.length === 0) return undefined
  if (gaters.length === 1) return gaters[0]
  const methods = new Set(gaters.flatMap((g) => Object.keys(g) as GaterMethod[]))
  const combined: Record<string, (...args: unknown[]) => Promise<boolean>> = {}
  for (const method of methods) {
    // every `deny*` method: true denies; `filterMultiaddrForPeer` is the other way round (true keeps)
    const deny = method !== 'filterMultiaddrForPeer'
    combined[method] = async (...args: unknown[]) => {
      for (const gater of gaters) {
        const fn = gater[method] as ((...a: unknown[]) => boolean | Promise<boolean>) | undefined
        if (fn && (await fn.apply(gater, args)) === deny) return deny
      }
      return !deny
    }
  }
  return combined as ConnectionGater
}

const unique = (items: readonly string[]) => [...new Set(items)]

/** A wildcard listen address bound to loopback instead (`network.local`). */
function loopbackOf(address: string): string {
  return address.replace(/^\/ip4\/0\.0\.0\.0\//, '/ip4/127.0.0.1/').replace(/^\/ip6\/::\//, '/ip6/::1/')
}

/** libp2p's `%` formatters (see @libp2p/logger): peer ids, multiaddrs, CIDs, keys, bytes, errors. */
function formatLibp2p(format: unknown, args: unknown[]): string {
  if (typeof format !== 'string') return [format, ...args].map((a) => describe(a)).join(' ')
  let i = 0
  const text = format.replace(/%([a-zA-Z%])/g, (whole, f: string) => {
    if (f === '%') return '%'
    if (i >= args.length) return whole
    const arg = args[i++]
    if (f === 'e') return arg instanceof Error ? (arg.stack ?? arg.message) : describe(arg)
    if ((f === 'b' || f === 't') && arg instanceof Uint8Array) return Buffer.from(arg).toString('hex')
    return describe(arg)
  })
  return i < args.length ? `${text} ${args.slice(i).map(describe).join(' ')}` : text
}

function describe(value: unknown): string {
  if (typeof value === 'string') return value
  if (value instanceof Error) return value.message
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`
  if (value !== null && typeof value === 'object' && typeof (value as object).toString === 'function') {
    const text = String(value)
    if (text !== '[object Object]') return text
    try {
      return JSON.stringify(value)
    } catch {
      return text
    }
  }
  return String(value)
}

/**
 * libp2p's component logs, through Meshkit's logger: scope `libp2p:<component>`, libp2p's errors at
 * `debug` and the rest at `trace`, so `--log-level debug` shows what failed inside libp2p and `trace`
 * everything; `DEBUG=libp2p:<component>*` lifts chosen components to `trace`. Lines go where Meshkit's
 * go (the CLI keeps its live status line intact; `--log-format json` applies). Cheap when off: each call
 * checks the level first, and `enabled` tells libp2p not to build the message at all.
 */
export function libp2pComponentLogger(logger: Logger): ComponentLogger {
  const make = (name: string): Libp2pLogger => {
    const scoped = logger.child(name)
    const fn = ((format: unknown, ...args: unknown[]) => {
      if (scoped.enabled('trace')) scoped.trace(formatLibp2p(format, args))
    }) as Libp2pLogger
    Object.defineProperty(fn, 'enabled', { get: () => scoped.enabled('trace') })
    fn.error = (format: unknown, ...args: unknown[]) => {
      if (scoped.enabled('debug')) scoped.debug(formatLibp2p(format, args))
    }
    fn.trace = (format: unknown, ...args: unknown[]) => {
      if (scoped.enabled('trace')) scoped.trace(formatLibp2p(format, args))
    }
    fn.newScope = (scope: string) => make(`${name}:${scope}`)
    return fn
  }
  return { forComponent: (name: string) => make(`libp2p:${name.replace(/^libp2p:/, '')}`) }
}

/** Merges every plugin's libp2p contribution, in plugin order, with the config's own settings. */
export function mergeContributions(
  contributions: ReadonlyArray<{ plugin: string; contribution: Libp2pContribution }>,
  config: ResolvedMeshConfig,
  coreGater?: ConnectionGater,
  componentLogger?: ComponentLogger,
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
  return {
    ...(componentLogger ? { logger: componentLogger } : {}),
    ...options,
    services: services as Libp2pOptions['services'],
    ...(metrics ? { metrics: metrics.factory } : {}),
    ...(protector ? { connectionProtector: protector.factory as Libp2pOptions['connectionProtector'] } : {}),
    ...(gater ? { connectionGater: gater } : {}),
    addresses: {
      listen: unique((config.listen ?? listen).map((a) => (config.network.local ? loopbackOf(a) : a))),
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
