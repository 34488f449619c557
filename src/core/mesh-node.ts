import type { Connection, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Datastore } from 'interface-datastore'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { type DependencyContainer, inject, injectable } from 'tsyringe'
import { Bootstrapper, type BootstrapSource } from './bootstrap.js'
import { type Budget, type BudgetInit, createBudget } from './budget.js'
import { type ConfigDiff, type DiffConfigOptions, diffConfig, type PluginHookInfo } from './config-diff.js'
import type { ConfigEnv, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import type { MeshEventBus } from './events.js'
import { libp2pComponentLogger, mergeContributions } from './libp2p-options.js'
import type { Logger } from './logger.js'
import { createNodeGater, exemptionOf, ipOf } from './node-gater.js'
import { createPeerAddressPolicy, type PeerAddressPolicy } from './peer-addresses.js'
import {
  type Capability,
  type Libp2pContribution,
  MULTI_PROVIDER_CAPABILITIES,
  type PluginContext,
  type PluginHooks,
} from './plugin.js'
import { providersOf } from './plugin-graph.js'
import type { PeerReputation, Reputation } from './reputation.js'
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
  /** The container entries holding the plugin's API (one per capability), updated on a restart. */
  boxes: ApiBox[]
}

/** One thing done to a running node by {@link MeshNode.applyInPlace} (or a rebuild, by the kernel). */
export interface ReloadStep {
  /** `core`, `node`, or a plugin name. */
  target: string
  action: 'applied' | 'reconfigured' | 'restarted' | 'rebuilt'
  /** What was applied, e.g. `logLevel, dial` or `restarted as a dependent of 'x'`. */
  detail?: string
  ms: number
}

/** How a connection was made, judged from its address and limits. */
export function describeConnection(connection: Connection) {
  const addr = connection.remoteAddr.toString()
  const relayed = connection.limits !== undefined
  // a relayed connection's address names the relay's own transport first (…/tcp/…/p2p-circuit/…);
  // a WebRTC connection signalled through a relay ends in /webrtc
  const transport = addr.includes('/webrtc')
    ? 'webrtc'
    : addr.includes('/p2p-circuit')
      ? 'relay'
      : addr.includes('/quic-v1')
        ? 'quic'
        : addr.includes('/tcp/')
          ? 'tcp'
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

const SOCKET_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the port is in use by another process',
  EADDRNOTAVAIL: 'this host has no such address',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  ECONNREFUSED: 'connection refused',
}

/**
 * A listen failure in one line per address (`/ip4/127.0.0.1/tcp/4001: the port is in use by another
 * process (EADDRINUSE)`), from libp2p's multi-line error with stack traces and advice about libp2p
 * settings that a Meshkit config does not have.
 */
export function listenFailure(err: unknown): string {
  const text = reasonOf(err)
  const entries = [...text.matchAll(/^\s+(\/\S+): (.+)$/gm)].map(([, addr, line]) => {
    const code = /\b(E[A-Z]+)\b/.exec(line)?.[1]
    const why =
      code && SOCKET_ERRORS[code] ? `${SOCKET_ERRORS[code]} (${code})` : line.replace(/^Error: /, '')
    return `${addr}: ${why}`
  })
  if (entries.length > 0) return entries.join('; ')
  return text.split('\n')[0]
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
  #listen: string[] = []
  #config: ResolvedMeshConfig
  #peerAddresses: PeerAddressPolicy

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
      const hooks = (resolved.plugin.definition.create as (o: unknown) => PluginHooks)(resolved.options)
      this.#slots.push({ resolved, hooks, ctx: this.#context(resolved), started: false, boxes: [] })
    }
    for (const slot of this.#slots) {
      const api = await this.#setup(slot)
      slot.api = api
      for (const cap of new Set([slot.resolved.plugin.name, ...slot.resolved.plugin.provides])) {
        // boxed: tsyringe treats `useValue: undefined` as no value, and a plugin may have no API;
        // and a restart of the plugin replaces the API inside the box (tsyringe cannot unregister)
        const box: ApiBox = { api }
        slot.boxes.push(box)
        this.container.register(capabilityToken<ApiBox>(cap), { useValue: box })
      }
    }
    const contributions: Array<{ plugin: string; contribution: Libp2pContribution }> = []
    for (const slot of this.#slots) {
      const contribution = (await this.#hook(slot, 'libp2p')) as Libp2pContribution | undefined
      if (contribution) contributions.push({ plugin: slot.resolved.plugin.name, contribution })
    }
    const config = this.config
    const gater = createNodeGater({
      reputation: this.reputationService,
      addresses: this.#peerAddresses,
      maxPendingPerHost: () => this.config.connections.maxIncomingPendingPerHost,
      exempt: exemptionOf(config.connections.allow),
    })
    const options: Libp2pOptions = {
      ...mergeContributions(contributions, config, gater, libp2pComponentLogger(this.logger)),
      privateKey: this.privateKey,
      datastore: this.datastore,
      start: false,
    }
    this.#listen = [...(options.addresses?.listen ?? [])]
    try {
      this.#libp2p = await createLibp2p(options)
    } catch (err) {
      const tag = /already a transport with the tag (\S+)/.exec(reasonOf(err))?.[1]
      if (tag) throw meshError('MESH_ERR_TRANSPORT_CONFLICT', [tag], { cause: err })
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
        this.#enforceBans(libp2p)
        try {
          await libp2p.start()
        } catch (err) {
          throw meshError('MESH_ERR_LISTEN_FAILED', [listenFailure(err)], { cause: err })
        }
        for (const slot of this.#slots) {
          await this.#hook(slot, 'start')
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
      void this.#dialConfigured(this.config.dial)
    })
  }

  /** What the running plugins' hooks tell a config diff (see {@link diffConfig}). */
  hookInfo(): Map<string, PluginHookInfo> {
    return new Map(
      this.#slots.map((s) => [
        s.resolved.plugin.name,
        {
          libp2p: typeof s.hooks.libp2p === 'function',
          reconfigure: typeof s.hooks.reconfigure === 'function',
        },
      ]),
    )
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
    return this.#serializeValue(async () => {
      if (diff.rebuild)
        throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
          '(node)',
          `it needs a new node: ${diff.reasons.join('; ')}`,
        ])
      if (this.#state !== 'started')
        throw meshError('MESH_ERR_RECONFIGURE_FAILED', ['(node)', `the node is ${this.#state}, not started`])
      const previous = this.#config
      const steps: ReloadStep[] = []
      const undo: Array<() => Promise<void>> = []
      const nextByName = new Map(next.plugins.map((p) => [p.plugin.name, p]))
      try {
        const coreChanges = diff.core.filter((c) => c.action === 'reconfigure')
        const t0 = performance.now()
        this.#config = next
        this.container.register(TOKENS.config, { useValue: next })
        undo.push(async () => {
          this.#config = previous
          this.container.register(TOKENS.config, { useValue: previous })
        })
        if (coreChanges.length > 0) {
          undo.push(
            await this.#applyCore(
              previous,
              next,
              coreChanges.map((c) => c.path),
            ),
          )
          steps.push({
            target: 'core',
            action: 'applied',
            detail: [...new Set(coreChanges.map((c) => c.path.split('.')[0]))].join(', '),
            ms: performance.now() - t0,
          })
        }
        for (const change of diff.plugins.changed) {
          const slot = this.#slot(change.name)
          const resolved = nextByName.get(change.name)
          if (!resolved) continue
          const old = slot.resolved
          const started = performance.now()
          if (change.action === 'reconfigure') {
            const applied = await this.#reconfigureSlot(slot, resolved)
            if (!applied)
              throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
                change.name,
                'its reconfigure hook declined these options (they need a new node)',
              ])
            undo.push(async () => {
              await this.#reconfigureSlot(slot, old)
            })
            steps.push({
              target: change.name,
              action: 'reconfigured',
              detail: change.options.map((c) => c.path).join(', '),
              ms: performance.now() - started,
            })
          } else if (change.action === 'restart') {
            const dependents = await this.#restartSlot(slot, resolved)
            undo.push(async () => {
              await this.#restartSlot(slot, old)
            })
            steps.push({
              target: change.name,
              action: 'restarted',
              detail: [
                change.code ? 'code changed' : change.options.map((c) => c.path).join(', '),
                dependents.length > 0 ? `with its dependents ${dependents.join(', ')}` : '',
              ]
                .filter(Boolean)
                .join('; '),
              ms: performance.now() - started,
            })
          }
        }
      } catch (err) {
        const rollback: unknown[] = []
        for (const step of undo.reverse()) await step().catch((e: unknown) => rollback.push(e))
        const reason = reasonOf(err)
        const failure =
          err instanceof MeshError && err.code === 'MESH_ERR_RECONFIGURE_FAILED'
            ? err
            : meshError('MESH_ERR_RECONFIGURE_FAILED', ['(node)', reason], { cause: err })
        failure.errors.push(...rollback)
        throw failure
      }
      // every plugin now stands for its entry in the new config
      for (const slot of this.#slots)
        slot.resolved = nextByName.get(slot.resolved.plugin.name) ?? slot.resolved
      return steps
    })
  }

  /**
   * Gives one running plugin new options through its `reconfigure` hook. Returns false when the plugin
   * has no such hook or declined (nothing changed then); throws when the hook failed (the plugin keeps
   * its previous options). The node's config is not changed: use `applyInPlace` for whole configs.
   */
  reconfigurePlugin(name: string, options: unknown): Promise<boolean> {
    return this.#serializeValue(async () => {
      const slot = this.#slot(name)
      return this.#reconfigureSlot(slot, { ...slot.resolved, options })
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
    return this.#serializeValue(async () => {
      const slot = this.#slot(name)
      return this.#restartSlot(slot, options === undefined ? slot.resolved : { ...slot.resolved, options })
    })
  }

  #slot(name: string): PluginSlot {
    const slot = this.#slots.find((s) => s.resolved.plugin.name === name)
    if (!slot)
      throw meshError('MESH_ERR_UNKNOWN_PLUGIN', [name], {
        hint: `The node runs: ${this.#slots.map((s) => s.resolved.plugin.name).join(', ')}.`,
      })
    return slot
  }

  async #setup(slot: PluginSlot): Promise<unknown> {
    const api = await this.#hook(slot, 'setup')
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
    return api
  }

  /** Calls the plugin's reconfigure hook with `next.options`; on success the slot stands for `next`. */
  async #reconfigureSlot(slot: PluginSlot, next: ResolvedPlugin): Promise<boolean> {
    const fn = slot.hooks.reconfigure
    if (!fn) return false
    if (this.#state !== 'started' || !slot.started)
      throw meshError('MESH_ERR_RECONFIGURE_FAILED', [next.plugin.name, 'the plugin is not running'])
    const ctx = this.#context(next)
    let result: unknown
    try {
      result = await fn.call(slot.hooks, next.options, ctx)
    } catch (err) {
      throw meshError('MESH_ERR_RECONFIGURE_FAILED', [next.plugin.name, reasonOf(err)], { cause: err })
    }
    if (result === false) return false
    slot.resolved = next
    slot.ctx = ctx
    return true
  }

  /** Restarts one plugin (and its started dependents) with new hooks made for `next`. */
  async #restartSlot(slot: PluginSlot, next: ResolvedPlugin): Promise<string[]> {
    if (this.#state !== 'started')
      throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
        next.plugin.name,
        `the node is ${this.#state}, not started`,
      ])
    const index = this.#slots.indexOf(slot)
    const provided = new Set([slot.resolved.plugin.name, ...slot.resolved.plugin.provides])
    const dependents: PluginSlot[] = []
    for (const other of this.#slots.slice(index + 1)) {
      const deps = [
        ...other.resolved.plugin.dependencies,
        ...(other.resolved.plugin.optionalDependencies ?? []),
      ]
      if (deps.some((d) => provided.has(d))) {
        dependents.push(other)
        provided.add(other.resolved.plugin.name)
        for (const cap of other.resolved.plugin.provides) provided.add(cap)
      }
    }
    const running = dependents.filter((d) => d.started)
    for (const d of [...running].reverse()) {
      d.started = false
      await this.#hook(d, 'stop')
    }
    const old = { ...slot }
    if (slot.started) {
      slot.started = false
      await this.#hook(slot, 'stop').catch((err: unknown) =>
        this.logger.warn(`stopping ${slot.resolved.plugin.name} for a restart: ${reasonOf(err)}`),
      )
    }
    const fresh: PluginSlot = {
      resolved: next,
      hooks: (next.plugin.definition.create as (o: unknown) => PluginHooks)(next.options),
      ctx: this.#context(next),
      started: false,
      boxes: slot.boxes,
    }
    try {
      const api = await this.#setup(fresh)
      for (const box of slot.boxes) box.api = api
      Object.assign(slot, fresh, { api })
      await this.#hook(slot, 'start')
      slot.started = true
    } catch (err) {
      // back to the previous hooks, which ran until now
      if (slot.started) await this.#hook(slot, 'stop').catch(() => {})
      Object.assign(slot, old, { started: false })
      for (const box of slot.boxes) box.api = old.api
      const restoreErrors: unknown[] = []
      await this.#hook(slot, 'start').then(
        () => {
          slot.started = true
        },
        (e: unknown) => restoreErrors.push(e),
      )
      for (const d of running) {
        await this.#hook(d, 'start').then(
          () => {
            d.started = true
          },
          (e: unknown) => restoreErrors.push(e),
        )
      }
      throw meshError(
        'MESH_ERR_RECONFIGURE_FAILED',
        [
          next.plugin.name,
          `restarting it failed (${reasonOf(err)}); ${restoreErrors.length === 0 ? 'it runs again with its previous options' : 'restarting it with its previous options failed too'}`,
        ],
        { cause: err, errors: restoreErrors },
      )
    }
    for (const d of running) {
      await this.#hook(d, 'start')
      d.started = true
    }
    if (provided.has('bootstrap')) this.#startBootstrapper()
    return dependents.map((d) => d.resolved.plugin.name)
  }

  /** Applies in-place core settings; returns how to undo them. */
  async #applyCore(
    previous: ResolvedMeshConfig,
    next: ResolvedMeshConfig,
    paths: readonly string[],
  ): Promise<() => Promise<void>> {
    const top = new Set(paths.map((p) => p.split('.')[0]))
    const undo: Array<() => void> = []
    if (top.has('logLevel')) {
      this.logger.level = next.logLevel
      undo.push(() => {
        this.logger.level = previous.logLevel
      })
    }
    if (top.has('security')) {
      this.reputationService.settings = next.security
      undo.push(() => {
        this.reputationService.settings = previous.security
      })
    }
    if (top.has('bootstrap')) {
      this.#startBootstrapper()
      undo.push(() => this.#startBootstrapper())
    }
    if (top.has('dial')) {
      for (const address of next.dial) this.#peerAddresses.trust(address)
      const before = new Set(previous.dial)
      void this.#dialConfigured(next.dial.filter((a) => !before.has(a)))
    }
    return async () => {
      for (const step of undo.reverse()) step()
    }
  }

  /**
   * While the node runs, a ban hangs up on the peer (and, with `security.banIps`, on every direct
   * connection from its IPs); the reputation learns the IPs of a peer from its direct connections.
   */
  #enforceBans(libp2p: Libp2p): void {
    const reputation = this.reputationService
    reputation.ipsOf = (peer) => {
      const ips = new Set<string>()
      for (const c of libp2p.getConnections()) {
        if (c.remotePeer.toString() !== peer || c.limits !== undefined) continue
        const address = c.remoteAddr.toString()
        if (address.includes('/p2p-circuit')) continue
        const ip = ipOf(c.remoteAddr)
        if (ip !== undefined) ips.add(ip)
      }
      return [...ips]
    }
    const off = reputation.onBan((ban) => {
      const targets = libp2p.getConnections().filter((c) => {
        if (c.remotePeer.toString() === ban.peerId) return true
        if (ban.ips.length === 0 || c.remoteAddr.toString().includes('/p2p-circuit')) return false
        const ip = ipOf(c.remoteAddr)
        return ip !== undefined && ban.ips.includes(ip)
      })
      for (const c of targets) c.abort(new Error(`peer banned: ${ban.reason}`))
    })
    this.#unsubscribe.push(off)
  }

  /** (Re)starts the bootstrapper with the current config and bootstrap sources. */
  #startBootstrapper(): void {
    const previous = this.#bootstrapper
    if (previous) void previous.stop().catch(() => {})
    this.#bootstrapper = new Bootstrapper(
      this.libp2p,
      this.#slots
        .filter((s) => s.resolved.plugin.provides.includes('bootstrap'))
        .map((s) => ({ name: s.resolved.plugin.name, source: s.api as BootstrapSource })),
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
    return this.#serializeValue(step)
  }

  #serializeValue<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#transition.then(step, step)
    this.#transition = run.then(
      () => {},
      () => {},
    )
    return run
  }

  async #hook(slot: PluginSlot, name: 'setup' | 'libp2p' | 'start' | 'stop'): Promise<unknown> {
    const fn = slot.hooks[name]
    if (!fn) return undefined
    try {
      return await fn.call(slot.hooks, slot.ctx)
    } catch (err) {
      // a user's mistake a plugin found (a missing key file, a bad option value) stays a user error:
      // the CLI prints it with its hint and exits 2, without a stack trace
      if (err instanceof MeshError && (err.code === 'MESH_ERR_PLUGIN_HOOK_FAILED' || err.userError)) throw err
      throw meshError('MESH_ERR_PLUGIN_HOOK_FAILED', [slot.resolved.plugin.name, name, reasonOf(err)], {
        cause: err,
      })
    }
  }

  #context(resolved: ResolvedPlugin): PluginContext {
    const node = this
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
    const logger = this.logger.child(plugin.name)
    return {
      name: plugin.name,
      get config() {
        return node.config
      },
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
      reputation: this.reputationService,
      get peerAddresses() {
        return node.#peerAddresses
      },
      budget(name: string, init?: BudgetInit): Budget {
        return createBudget(`${plugin.name}/${name}`, init, (peer, refusal) => {
          if (refusal.peerFault)
            node.reputationService.penalize(peer, 'budget', `${plugin.name}/${name}: ${refusal.reason}`)
        })
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
      useOptional<T>(cap: Capability): T | undefined {
        check(cap)
        const providers = providersOf(node.config.plugins).get(cap) ?? []
        if (providers.length === 0) return undefined
        if (providers.length > 1 || MULTI_PROVIDER_CAPABILITIES.has(cap))
          throw meshError('MESH_ERR_NOT_EXCLUSIVE', [plugin.name, cap, providers.length])
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

  /** Dials `addresses` (the config's `dial`), all at once; failures are logged and reported as events. */
  async #dialConfigured(addresses: readonly string[]): Promise<void> {
    await Promise.all(
      addresses.map(async (address) => {
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
