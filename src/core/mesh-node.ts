import type { Connection, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Datastore } from 'interface-datastore'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { type DependencyContainer, inject, injectable } from 'tsyringe'
import { Bootstrapper, type BootstrapSource } from './bootstrap.js'
import type { ConfigEnv, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import type { MeshEventBus } from './events.js'
import { mergeContributions } from './libp2p-options.js'
import type { Logger } from './logger.js'
import {
  type Capability,
  type Libp2pContribution,
  MULTI_PROVIDER_CAPABILITIES,
  type PluginContext,
  type PluginHooks,
} from './plugin.js'
import { providersOf } from './plugin-graph.js'
import { capabilityToken, TOKENS, type Token } from './tokens.js'

/** The DI token of a node build's own child container. */
export const NODE_CONTAINER: Token<DependencyContainer> = Symbol.for('meshkit.node-container')

/** How a plugin's API sits in the container. */
interface ApiBox {
  api: unknown
}

export type NodeState = 'created' | 'starting' | 'started' | 'stopping' | 'stopped'

interface PluginSlot {
  resolved: ResolvedPlugin
  hooks: PluginHooks
  ctx: PluginContext
  started: boolean
  api?: unknown
}

/** How a connection was made, judged from its address and limits. */
export function describeConnection(connection: Connection) {
  const addr = connection.remoteAddr.toString()
  const relayed = connection.limits !== undefined
  const transport = addr.includes('/webrtc')
    ? 'webrtc'
    : addr.includes('/quic-v1')
      ? 'quic'
      : addr.includes('/tcp/')
        ? 'tcp'
        : addr.includes('/p2p-circuit')
          ? 'relay'
          : 'unknown'
  return {
    connectionId: connection.id,
    peerId: connection.remotePeer.toString(),
    remoteAddr: addr,
    direction: connection.direction,
    transport,
    relayed,
  }
}

/**
 * One built node: a libp2p instance plus its plugins, living in its own child container.
 * Built by `MeshKernel.build()`; `start()`/`stop()` are idempotent and serialized.
 */
@injectable()
export class MeshNode {
  #state: NodeState = 'created'
  #transition: Promise<void> = Promise.resolve()
  #libp2p?: Libp2p
  #slots: PluginSlot[] = []
  #abort = new AbortController()
  #unsubscribe: Array<() => void> = []
  #disposed = false
  #bootstrapper?: Bootstrapper

  constructor(
    @inject(TOKENS.config) readonly config: ResolvedMeshConfig,
    @inject(TOKENS.env) readonly env: ConfigEnv,
    @inject(TOKENS.logger) private readonly logger: Logger,
    @inject(TOKENS.events) readonly events: MeshEventBus,
    @inject(TOKENS.datastore) readonly datastore: Datastore,
    @inject(TOKENS.peerId) readonly peerId: PeerId,
    @inject(TOKENS.privateKey) private readonly privateKey: PrivateKey,
    @inject(NODE_CONTAINER) private readonly container: DependencyContainer,
  ) {}

  get state(): NodeState {
    return this.#state
  }

  /** The libp2p node (exists once the node is built). */
  get libp2p(): Libp2p {
    if (!this.#libp2p) throw meshError('MESH_ERR_NODE_NOT_CREATED', ['(kernel)'])
    return this.#libp2p
  }

  /** The plugins in start order. */
  get plugins(): readonly ResolvedPlugin[] {
    return this.#slots.map((s) => s.resolved)
  }

  /** The API of the plugin providing `capability` (for apps and tests, not plugins: they use ctx.use). */
  api<T = unknown>(capability: Capability): T {
    if (this.#disposed)
      throw new MeshError(
        'MESH_ERR_INVALID_ARGUMENT',
        "this node was disposed; use the kernel's current node",
      )
    return this.container.resolve<ApiBox>(capabilityToken<ApiBox>(capability)).api as T
  }

  /** Runs every plugin's `setup` and `libp2p` hooks in order, then creates the libp2p node (not started). */
  async init(): Promise<void> {
    for (const resolved of this.config.plugins) {
      const hooks = (resolved.plugin.definition.create as (o: unknown) => PluginHooks)(resolved.options)
      this.#slots.push({ resolved, hooks, ctx: this.#context(resolved), started: false })
    }
    for (const slot of this.#slots) {
      const api = await this.#hook(slot, 'setup')
      slot.api = api
      if (
        slot.resolved.plugin.provides.includes('bootstrap') &&
        typeof (api as BootstrapSource)?.candidates !== 'function'
      ) {
        throw meshError('MESH_ERR_PLUGIN_HOOK_FAILED', [
          slot.resolved.plugin.name,
          'setup',
          "it provides 'bootstrap' but returned no bootstrap source (an object with a candidates() method)",
        ])
      }
      for (const cap of new Set([slot.resolved.plugin.name, ...slot.resolved.plugin.provides])) {
        // boxed: tsyringe treats `useValue: undefined` as no value, and a plugin may have no API
        this.container.register(capabilityToken<ApiBox>(cap), { useValue: { api } })
      }
    }
    const contributions: Array<{ plugin: string; contribution: Libp2pContribution }> = []
    for (const slot of this.#slots) {
      const contribution = (await this.#hook(slot, 'libp2p')) as Libp2pContribution | undefined
      if (contribution) contributions.push({ plugin: slot.resolved.plugin.name, contribution })
    }
    const options: Libp2pOptions = {
      ...mergeContributions(contributions, this.config),
      privateKey: this.privateKey,
      datastore: this.datastore,
      start: false,
    }
    try {
      this.#libp2p = await createLibp2p(options)
    } catch (err) {
      throw meshError('MESH_ERR_NODE_CREATE_FAILED', [reasonOf(err)], { cause: err })
    }
    this.container.register(TOKENS.libp2p, { useValue: this.#libp2p })
  }

  /** Starts libp2p, then every plugin in dependency order. A failure stops what started, in reverse. */
  start(): Promise<void> {
    return this.#serialize(async () => {
      if (this.#state === 'started') return
      if (this.#disposed)
        throw new MeshError('MESH_ERR_INVALID_ARGUMENT', 'this node was disposed; build a new one')
      this.#state = 'starting'
      this.#abort = new AbortController()
      const libp2p = this.libp2p
      try {
        this.#forwardEvents(libp2p)
        try {
          await libp2p.start()
        } catch (err) {
          throw meshError('MESH_ERR_LISTEN_FAILED', [reasonOf(err)], { cause: err })
        }
        for (const slot of this.#slots) {
          await this.#hook(slot, 'start')
          slot.started = true
        }
        this.#bootstrapper = new Bootstrapper(
          libp2p,
          this.#slots
            .filter((s) => s.resolved.plugin.provides.includes('bootstrap'))
            .map((s) => ({ name: s.resolved.plugin.name, source: s.api as BootstrapSource })),
          { ...this.config.bootstrap, dialTimeout: this.config.connections.dialTimeout },
          this.logger.child('bootstrap'),
          this.events,
        )
        this.#bootstrapper.start()
      } catch (err) {
        const rollback = await this.#teardown()
        this.#state = 'stopped'
        if (err instanceof MeshError) {
          err.errors.push(...rollback)
          throw err
        }
        throw new MeshError('MESH_ERR_PLUGIN_HOOK_FAILED', reasonOf(err), { cause: err, errors: rollback })
      }
      this.#state = 'started'
      const addresses = libp2p.getMultiaddrs().map(String)
      this.logger.debug(`node ${this.peerId} started on ${addresses.join(', ')}`)
      this.events.emit('node:started', { peerId: this.peerId.toString(), addresses })
      void this.#dialConfigured()
    })
  }

  /** Stops plugins in reverse order, then libp2p. Runs every step even when some fail; then throws them all. */
  stop(): Promise<void> {
    return this.#serialize(async () => {
      if (this.#state !== 'started') return
      this.#state = 'stopping'
      const errors = await this.#teardown()
      this.#state = 'stopped'
      this.events.emit('node:stopped', { peerId: this.peerId.toString() })
      if (errors.length > 0) {
        throw meshError('MESH_ERR_STOP_FAILED', [errors.map((e) => `  - ${reasonOf(e)}`).join('\n')], {
          errors,
        })
      }
    })
  }

  /**
   * Stops the node (if needed) and marks it unusable. Called by the node's container when the kernel
   * disposes it (tsyringe disposes what it constructed), so the kernel never forgets a node's teardown.
   */
  async dispose(): Promise<void> {
    this.#disposed = true
    await this.stop()
  }

  async #teardown(): Promise<unknown[]> {
    const errors: unknown[] = []
    this.#abort.abort()
    await this.#bootstrapper?.stop().catch((err: unknown) => errors.push(err))
    this.#bootstrapper = undefined
    for (const slot of [...this.#slots].reverse()) {
      if (!slot.started) continue
      slot.started = false
      try {
        await this.#hook(slot, 'stop')
      } catch (err) {
        errors.push(err)
      }
    }
    for (const off of this.#unsubscribe.splice(0)) off()
    try {
      await this.#libp2p?.stop()
    } catch (err) {
      errors.push(meshError('MESH_ERR_PLUGIN_HOOK_FAILED', ['libp2p', 'stop', reasonOf(err)], { cause: err }))
    }
    return errors
  }

  #serialize(step: () => Promise<void>): Promise<void> {
    const run = this.#transition.then(step, step)
    this.#transition = run.catch(() => {})
    return run
  }

  async #hook(slot: PluginSlot, name: keyof PluginHooks): Promise<unknown> {
    const fn = slot.hooks[name]
    if (!fn) return undefined
    try {
      return await fn.call(slot.hooks, slot.ctx)
    } catch (err) {
      if (err instanceof MeshError && err.code === 'MESH_ERR_PLUGIN_HOOK_FAILED') throw err
      throw meshError('MESH_ERR_PLUGIN_HOOK_FAILED', [slot.resolved.plugin.name, name, reasonOf(err)], {
        cause: err,
      })
    }
  }

  #context(resolved: ResolvedPlugin): PluginContext {
    const node = this
    const { plugin } = resolved
    const declared = new Set<string>([plugin.name, ...plugin.provides, ...plugin.dependencies])
    const check = (cap: string) => {
      if (!declared.has(cap)) throw meshError('MESH_ERR_UNDECLARED_DEPENDENCY', [plugin.name, cap])
    }
    const logger = this.logger.child(plugin.name)
    return {
      name: plugin.name,
      config: this.config,
      env: this.env,
      logger,
      events: this.events,
      datastore: this.datastore,
      peerId: this.peerId,
      privateKey: this.privateKey,
      get libp2p() {
        if (!node.#libp2p) throw meshError('MESH_ERR_NODE_NOT_CREATED', [plugin.name])
        return node.#libp2p
      },
      get signal() {
        return node.#abort.signal
      },
      use<T>(cap: Capability): T {
        check(cap)
        const providers = providersOf(node.config.plugins).get(cap) ?? []
        if (providers.length > 1 || MULTI_PROVIDER_CAPABILITIES.has(cap)) {
          if (providers.length !== 1)
            throw meshError('MESH_ERR_NOT_EXCLUSIVE', [plugin.name, cap, providers.length])
        }
        return node.container.resolve<ApiBox>(capabilityToken<ApiBox>(cap)).api as T
      },
      useAll<T>(cap: Capability): T[] {
        check(cap)
        const token = capabilityToken<ApiBox>(cap)
        return node.container.isRegistered(token, true)
          ? node.container.resolveAll<ApiBox>(token).map((b) => b.api as T)
          : []
      },
      resolve<T>(token: Token<T>): T {
        return node.container.resolve(token)
      },
    }
  }

  #forwardEvents(libp2p: Libp2p): void {
    const on = <E extends 'peer:connect' | 'peer:disconnect' | 'connection:open' | 'connection:close'>(
      name: E,
      map: (detail: never) => Record<string, unknown>,
    ) => {
      const listener = (evt: CustomEvent) => this.events.emit(name, map(evt.detail as never))
      libp2p.addEventListener(name, listener as never)
      this.#unsubscribe.push(() => libp2p.removeEventListener(name, listener as never))
    }
    on('peer:connect', (peer: PeerId) => ({ peerId: peer.toString() }))
    on('peer:disconnect', (peer: PeerId) => ({ peerId: peer.toString() }))
    on('connection:open', (c: Connection) => describeConnection(c))
    on('connection:close', (c: Connection) => ({ connectionId: c.id, peerId: c.remotePeer.toString() }))
  }

  /** Dials the config's `dial` addresses, all at once; failures are logged and reported as events. */
  async #dialConfigured(): Promise<void> {
    await Promise.all(
      this.config.dial.map(async (address) => {
        if (this.#state !== 'started') return
        try {
          const connection = await this.libp2p.dial(multiaddr(address), { signal: this.#abort.signal })
          this.logger.info(`dialled ${address} (${connection.remotePeer})`)
        } catch (err) {
          if (this.#abort.signal.aborted) return
          this.logger.warn(`could not dial ${address}: ${reasonOf(err)}`)
          this.events.emit('dial:failed', { address, error: reasonOf(err) })
        }
      }),
    )
  }
}
