/**
 * A built node's lifecycle: build (plugin setup and libp2p hooks, then libp2p), start, stop, dispose,
 * and the entry points of in-place reloads. The machinery is beside it: plugin-slot.ts (hook calls),
 * plugin-context.ts (what a plugin sees), in-place-reload.ts (applyInPlace, reconfigure, restart),
 * node-libp2p.ts (creating libp2p, configured dials), node-events.ts (libp2p events on the bus),
 * peer-guards.ts (bans, peer store hygiene), listen-failure.ts.
 */
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import { type DependencyContainer, inject, injectable } from 'tsyringe'
import { Bootstrapper } from './bootstrap.js'
import { type ConfigDiff, type DiffConfigOptions, diffConfig, type PluginHookInfo } from './config-diff.js'
import type { ConfigEnv, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import type { MeshEventBus } from './events.js'
import {
  applyInPlace,
  type ReloadHost,
  type ReloadStep,
  reconfigureSlot,
  restartSlot,
} from './in-place-reload.js'
import { listenFailure } from './listen-failure.js'
import type { Logger } from './logger.js'
import { forwardLibp2pEvents } from './node-events.js'
import { createNodeLibp2p, dialConfigured } from './node-libp2p.js'
import { createPeerAddressPolicy, type PeerAddressPolicy } from './peer-addresses.js'
import { guardPeers } from './peer-guards.js'
import type { Capability, Libp2pContribution, PluginContext } from './plugin.js'
import { createPluginContext, type PluginContextHost } from './plugin-context.js'
import {
  type ApiBox,
  bootstrapSourcesOf,
  callHook,
  createHooks,
  findSlot,
  hookInfoOf,
  type PluginSlot,
  registerApi,
  setupSlot,
  stopSlots,
} from './plugin-slot.js'
import type { PeerReputation, Reputation } from './reputation.js'
import { capabilityToken, TOKENS, type Token } from './tokens.js'

/** The DI token of a node build's own child container. */
export const NODE_CONTAINER: Token<DependencyContainer> = Symbol.for('meshkit.node-container')

export type NodeState = 'created' | 'starting' | 'started' | 'stopping' | 'stopped'

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
  #listen: string[] = []
  #config: ResolvedMeshConfig
  #peerAddresses: PeerAddressPolicy
  #host: PluginContextHost & ReloadHost

  constructor(
    @inject(TOKENS.config) config: ResolvedMeshConfig,
    @inject(TOKENS.env) readonly env: ConfigEnv,
    @inject(TOKENS.logger) private readonly logger: Logger,
    @inject(TOKENS.events) readonly events: MeshEventBus,
    @inject(TOKENS.datastore) readonly datastore: Datastore,
    @inject(TOKENS.peerId) readonly peerId: PeerId,
    @inject(TOKENS.privateKey) private readonly privateKey: PrivateKey,
    @inject(TOKENS.reputation) private readonly reputationService: Reputation,
    @inject(NODE_CONTAINER) private readonly container: DependencyContainer,
  ) {
    this.#config = config
    this.#peerAddresses = createPeerAddressPolicy({
      scope: config.network.addressScope,
      publicCidrs: config.network.publicCidrs,
      dialInterval: () => this.#config.security.peerDialInterval,
    })
    for (const address of config.dial) this.#peerAddresses.trust(address)
    this.#host = this.#makeHost()
  }

  /** Penalties and bans of remote peers (shared by the nodes built on this data dir). */
  get reputation(): PeerReputation {
    return this.reputationService
  }

  /** The node's rule for addresses that peers give it (`network.addressScope`). */
  get peerAddresses(): PeerAddressPolicy {
    return this.#peerAddresses
  }

  /** The config the node runs with (replaced when a new config is applied in place). */
  get config(): ResolvedMeshConfig {
    return this.#config
  }

  get state(): NodeState {
    return this.#state
  }

  /** The libp2p node (exists once the node is built). */
  get libp2p(): Libp2p {
    if (!this.#libp2p) throw meshError('MESH_ERR_NODE_NOT_CREATED', ['(kernel)'])
    return this.#libp2p
  }

  /** The addresses this node is configured to listen on (the config's, or else the plugins'). */
  get listenAddresses(): readonly string[] {
    return this.#listen
  }

  /** The plugins in start order. */
  get plugins(): readonly ResolvedPlugin[] {
    return this.#slots.map((s) => s.resolved)
  }

  /** Whether a plugin of this node provides `capability` (or is named so). */
  has(capability: Capability): boolean {
    return this.plugins.some((p) => p.plugin.name === capability || p.plugin.provides.includes(capability))
  }

  /**
   * The API of the plugin providing `capability` when the node has one and (if given) it has every method
   * in `methods`; undefined otherwise. For apps that work with or without a provider (the CLI, the
   * control API, a dashboard).
   */
  tryApi<T = unknown>(capability: Capability, ...methods: string[]): T | undefined {
    if (!this.has(capability)) return undefined
    let api: unknown
    try {
      api = this.api(capability)
    } catch {
      return undefined
    }
    if (methods.length === 0) return api as T
    return typeof api === 'object' &&
      api !== null &&
      methods.every((m) => typeof (api as Record<string, unknown>)[m] === 'function')
      ? (api as T)
      : undefined
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
      const hooks = createHooks(resolved)
      this.#slots.push({ resolved, hooks, ctx: this.#context(resolved), started: false, boxes: [] })
    }
    for (const slot of this.#slots) {
      slot.api = await setupSlot(slot)
      registerApi(slot, this.container)
    }
    const contributions: Array<{ plugin: string; contribution: Libp2pContribution }> = []
    for (const slot of this.#slots) {
      const contribution = (await callHook(slot, 'libp2p')) as Libp2pContribution | undefined
      if (contribution) contributions.push({ plugin: slot.resolved.plugin.name, contribution })
    }
    const created = await createNodeLibp2p({
      contributions,
      config: this.config,
      maxPendingPerHost: () => this.config.connections.maxIncomingPendingPerHost,
      reputation: this.reputationService,
      addresses: this.#peerAddresses,
      logger: this.logger,
      privateKey: this.privateKey,
      datastore: this.datastore,
    })
    this.#libp2p = created.libp2p
    this.#listen = created.listen
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
        this.#unsubscribe.push(...forwardLibp2pEvents(libp2p, this.events))
        this.#unsubscribe.push(...guardPeers(libp2p, this.reputationService, this.logger))
        try {
          await libp2p.start()
        } catch (err) {
          throw meshError('MESH_ERR_LISTEN_FAILED', [listenFailure(err)], { cause: err })
        }
        for (const slot of this.#slots) {
          await callHook(slot, 'start')
          slot.started = true
        }
        this.#startBootstrapper()
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
      this.#host.dialConfigured(this.config.dial)
    })
  }

  /** What the running plugins' hooks tell a config diff (see {@link diffConfig}). */
  hookInfo(): Map<string, PluginHookInfo> {
    return hookInfoOf(this.#slots)
  }

  /** The difference between the node's config and `next`, judged with what the running hooks can do. */
  diff(next: ResolvedMeshConfig, options: Omit<DiffConfigOptions, 'hooks'> = {}): ConfigDiff {
    return diffConfig(this.config, next, { ...options, hooks: this.hookInfo() })
  }

  /**
   * Applies a new config to the running node without a new libp2p node: core settings that allow it,
   * then each changed plugin in start order (its `reconfigure` hook, or a restart of that plugin alone
   * and of the plugins that depend on it). The libp2p node and its connections stay up.
   *
   * All or nothing: when a step fails, the steps already done are undone in reverse (best effort) and
   * MESH_ERR_RECONFIGURE_FAILED is thrown; the node then runs with its previous config (rollback
   * failures are attached as `errors`). Throws at once when `diff` needs a new node.
   */
  applyInPlace(next: ResolvedMeshConfig, diff: ConfigDiff = this.diff(next)): Promise<ReloadStep[]> {
    return this.#serialize(() => applyInPlace(this.#host, next, diff))
  }

  /**
   * Gives one running plugin new options through its `reconfigure` hook. Returns false when the plugin
   * has no such hook or declined (nothing changed then); throws when the hook failed (the plugin keeps
   * its previous options). The node's config is not changed: use `applyInPlace` for whole configs.
   */
  reconfigurePlugin(name: string, options: unknown): Promise<boolean> {
    return this.#serialize(async () => {
      const slot = this.#slot(name)
      return reconfigureSlot(this.#host, slot, { ...slot.resolved, options })
    })
  }

  /**
   * Restarts one running plugin alone: its `stop` hook, then new hooks from its definition with
   * `options` (default: its current ones), `setup` (its API is replaced in the node's container) and
   * `start`; the plugins that depend on it are stopped before and started after. libp2p and its
   * connections stay up, so this is for plugins that contribute nothing to libp2p (their contribution
   * would not be rebuilt). On failure the previous hooks are started again and the error is thrown.
   * Returns the dependents that were restarted with it.
   */
  restartPlugin(name: string, options?: unknown): Promise<string[]> {
    return this.#serialize(async () => {
      const slot = this.#slot(name)
      const next = options === undefined ? slot.resolved : { ...slot.resolved, options }
      return restartSlot(this.#host, slot, next)
    })
  }

  #slot(name: string): PluginSlot {
    return findSlot(this.#slots, name)
  }

  /** (Re)starts the bootstrapper with the current config and bootstrap sources. */
  #startBootstrapper(): void {
    const previous = this.#bootstrapper
    if (previous) void previous.stop().catch(() => {})
    this.#bootstrapper = new Bootstrapper(
      this.libp2p,
      bootstrapSourcesOf(this.#slots),
      { ...this.config.bootstrap, dialTimeout: this.config.connections.dialTimeout },
      this.logger.child('bootstrap'),
      this.events,
      (address) => this.#peerAddresses.trust(address),
    )
    this.#bootstrapper.start()
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
    errors.push(...(await stopSlots(this.#slots)))
    for (const off of this.#unsubscribe.splice(0)) off()
    try {
      await this.#libp2p?.stop()
    } catch (err) {
      errors.push(meshError('MESH_ERR_PLUGIN_HOOK_FAILED', ['libp2p', 'stop', reasonOf(err)], { cause: err }))
    }
    return errors
  }

  #serialize<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#transition.then(step, step)
    this.#transition = run.then(
      () => {},
      () => {},
    )
    return run
  }

  #context(resolved: ResolvedPlugin): PluginContext {
    return createPluginContext(resolved, this.#host)
  }

  /** What plugin contexts and in-place reloads reach of this node (live: the getters follow the node). */
  #makeHost(): PluginContextHost & ReloadHost {
    const node = this
    return {
      get state() {
        return node.#state
      },
      get config() {
        return node.#config
      },
      set config(next: ResolvedMeshConfig) {
        node.#config = next
        node.container.register(TOKENS.config, { useValue: next })
      },
      env: this.env,
      logger: this.logger,
      events: this.events,
      datastore: this.datastore,
      peerId: this.peerId,
      privateKey: this.privateKey,
      reputation: this.reputationService,
      container: this.container,
      get libp2p() {
        return node.#libp2p
      },
      get signal() {
        return node.#abort.signal
      },
      get peerAddresses() {
        return node.#peerAddresses
      },
      slots: this.#slots,
      context: (resolved) => this.#context(resolved),
      startBootstrapper: () => this.#startBootstrapper(),
      isSeed: (peer) => this.#bootstrapper?.isSeed(peer) ?? false,
      dialConfigured: (addresses) =>
        void dialConfigured(addresses, {
          started: () => this.#state === 'started',
          libp2p: () => this.libp2p,
          signal: () => this.#abort.signal,
          logger: this.logger,
          events: this.events,
        }),
      slot: (name) => this.#slot(name),
    }
  }
}
