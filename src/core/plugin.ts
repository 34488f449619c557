import type { ConnectionGater, ConnectionProtector, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { Libp2pInit } from 'libp2p'
import type { z } from 'zod'
import type { Budget, BudgetInit } from './budget.js'
import type { ConfigEnv, ResolvedMeshConfig } from './config-types.js'
import type { MeshEventBus } from './events.js'
import type { Logger } from './logger.js'
import type { PeerAddressPolicy } from './peer-addresses.js'
import type { PortUse } from './ports.js'
import type { PeerReputation } from './reputation.js'

/**
 * Slots every node understands. `transport` and `bootstrap` take any number of plugins; the others are
 * exclusive: one plugin provides them. Any other string is a free capability name (exclusive too, unless
 * it is one of {@link MULTI_PROVIDER_CAPABILITIES}). The kernel reads `transport` (one is required) and
 * `bootstrap` (`BootstrapSource`s); the APIs of `discovery` and `clustering` are shared contracts
 * between plugins and apps (src/contracts), which the kernel does not read.
 */
export type Slot = 'transport' | 'bootstrap' | 'discovery' | 'clustering'

/** A slot or a free capability name such as `'connection-encrypter'` or `'my-metrics'`. */
export type Capability = Slot | (string & {})

/** Capabilities that many plugins may provide at once; every other capability has one provider. */
export const MULTI_PROVIDER_CAPABILITIES: ReadonlySet<string> = new Set([
  'transport',
  'bootstrap',
  'connection-encrypter',
  'stream-muxer',
  'peer-discovery',
  // plugins that tell how connections were made (src/contracts/connection-method.ts)
  'connection-methods',
])

/** What a plugin adds to the libp2p options. Arrays are concatenated, services merged, gaters combined. */
export interface Libp2pContribution {
  transports?: NonNullable<Libp2pInit['transports']>
  connectionEncrypters?: NonNullable<Libp2pInit['connectionEncrypters']>
  streamMuxers?: NonNullable<Libp2pInit['streamMuxers']>
  peerDiscovery?: NonNullable<Libp2pInit['peerDiscovery']>
  services?: NonNullable<Libp2pInit['services']>
  /** Every gater's verdicts are combined: a connection is denied when any plugin denies it. */
  connectionGater?: ConnectionGater
  /** Listen addresses are used only when the config sets no `listen` of its own. */
  addresses?: { listen?: string[]; announce?: string[]; appendAnnounce?: string[]; noAnnounce?: string[] }
  /** Connection-manager settings (later plugins override earlier ones key by key). */
  connectionManager?: NonNullable<Libp2pInit['connectionManager']>
  /** libp2p's metrics implementation (e.g. `prometheusMetrics()`); one plugin at most may set it. */
  metrics?: NonNullable<Libp2pInit['metrics']>
  /**
   * A connection protector (e.g. a pre-shared-key private network, `@libp2p/pnet`): it wraps every
   * connection before encryption. One plugin at most may set it.
   */
  connectionProtector?: (components: never) => ConnectionProtector
}

/**
 * What a plugin's hooks can reach: the node's services, and the APIs of the capabilities the plugin
 * declared (`use`, `useOptional`, `useAll`). A plugin never sees the kernel's container.
 */
export interface PluginContext {
  /** The plugin's own name. */
  readonly name: string
  readonly config: ResolvedMeshConfig
  readonly env: ConfigEnv
  /** A logger whose lines carry the plugin's name. */
  readonly logger: Logger
  readonly events: MeshEventBus
  /** The node's datastore (persistent under the data dir unless the config says `datastore: 'memory'`). */
  readonly datastore: Datastore
  readonly peerId: PeerId
  readonly privateKey: PrivateKey
  /** The libp2p node. Available from `start()` on; earlier access throws MESH_ERR_NODE_NOT_CREATED. */
  readonly libp2p: Libp2p
  /** Aborted when the node stops: pass it to timers, loops and dials. */
  readonly signal: AbortSignal
  /**
   * Penalties and bans of remote peers: report what a peer did wrong with `penalize(peer, offence)`;
   * a peer whose penalty reaches `security.banThreshold` is disconnected and banned.
   */
  readonly reputation: PeerReputation
  /**
   * The rule for addresses a peer gave us (`network.addressScope`): check one with `refuse()` before
   * dialling or sending to it, and take `takeDial(peer)` before a dial made on a peer's word. Addresses
   * from the plugin's own options go through `trust()`.
   */
  readonly peerAddresses: PeerAddressPolicy
  /**
   * Whether `peer` (a peer id string) is one of the node's seeds: a bootstrap node the operator gave it
   * (static peers, DNS seeds) and that every node of the mesh keeps a connection to. A protocol can
   * spare seeds the work other peers can do: kad-topics tells them its members when it connects, and
   * its lookup rounds ask other peers first. `false` before the node started.
   */
  isSeed(peer: string): boolean
  /**
   * A per-peer and global budget for one protocol the plugin serves (rate, concurrency, bytes); a peer
   * that goes over its own budget is refused and penalized (`budget` offence). Make it in `start()`.
   */
  budget(name: string, init?: BudgetInit): Budget
  /** The API of the one plugin that provides `capability`; it must be listed in `dependencies`. */
  use<T = unknown>(capability: Capability): T
  /**
   * The API of the one plugin that provides `capability`, or undefined when the config has none; it
   * must be listed in `optionalDependencies` (or `dependencies`).
   */
  useOptional<T = unknown>(capability: Capability): T | undefined
  /**
   * The APIs of every plugin that provides `capability` ([] when none does); it must be listed in
   * `dependencies` (or `optionalDependencies`).
   */
  useAll<T = unknown>(capability: Capability): T[]
}

/** The lifecycle hooks a plugin implements; all optional. Called in dependency order (stop: reverse). */
export interface PluginHooks<Api = unknown, Options = unknown> {
  /** Before the libp2p node exists. The returned value is the plugin's API, reachable via `ctx.use()`. */
  setup?(ctx: PluginContext): Api | Promise<Api>
  /** Contribute to the libp2p options. Called after every `setup`. */
  libp2p?(ctx: PluginContext): Libp2pContribution | Promise<Libp2pContribution>
  /** After the libp2p node has started. A throw rolls back everything already started. */
  start?(ctx: PluginContext): void | Promise<void>
  /** Release what start() took. Must not throw for resources already released. */
  stop?(ctx: PluginContext): void | Promise<void>
  /**
   * Applies new options to the running plugin in place (`mesh dev`, `kernel.update()`), while the
   * libp2p node and its connections stay up. Called only while the node is started, with the options
   * already validated by the plugin's schema; `ctx.config` is the new config.
   *
   * - Return nothing (or `true`) once the new options are in effect. The plugin's API object must stay
   *   the same (other plugins hold it), so mutate it rather than replace it.
   * - Return `false` when these options cannot be applied in place (the kernel then builds a new node).
   *   Nothing may have changed in that case.
   * - Throw when applying failed. The plugin must then still run with its previous options; the kernel
   *   reports the error and falls back to a new node (or keeps the old config if that fails too).
   *
   * Options whose change alters the plugin's libp2p contribution belong in the definition's
   * `libp2pOptions`: a change to one of them builds a new node without asking this hook.
   * Without this hook, an options change restarts the plugin alone (stop, create, setup, start) when it
   * has no `libp2p` hook, and builds a new node otherwise.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: an async hook that applied its options returns Promise<void>
  reconfigure?(nextOptions: Options, ctx: PluginContext): void | boolean | Promise<void | boolean>
}

/** When a plugin takes part: only for `mesh start`, only for `mesh dev`, or as a function decides. */
export type PluginApply = 'start' | 'dev' | ((config: ResolvedMeshConfig, env: ConfigEnv) => boolean)

/** The static description of a plugin, given to {@link definePlugin}. */
export interface PluginDefinition<Schema extends z.ZodType | undefined, Api> {
  /** Unique name; also a capability other plugins can depend on. Kebab-case. */
  name: string
  /** Slots or capabilities this plugin provides. */
  provides?: readonly Capability[]
  /** Capabilities (or plugin names) that must be present; they start before this plugin. */
  dependencies?: readonly Capability[]
  /**
   * Capabilities used when present (`ctx.useOptional()`): when a provider is in the config it starts
   * before this plugin, as a dependency would; when none is, the config is still valid.
   */
  optionalDependencies?: readonly Capability[]
  /** Ordering among plugins without dependencies between them: `pre` first, `post` last. */
  enforce?: 'pre' | 'post'
  /** Restricts the plugin to a command. @default always */
  apply?: PluginApply
  /** A zod schema for the options; the kernel validates them with the rest of the config. */
  options?: Schema
  /**
   * Top-level option keys the plugin's `libp2p` contribution is built from. On a config reload, a
   * change to one of them needs a new libp2p node; a change to other keys is applied in place through
   * the `reconfigure` hook. When unset, any option change of a plugin that contributes to libp2p needs
   * a new node.
   */
  libp2pOptions?: readonly string[]
  /**
   * The keys of the libp2p services the plugin's contribution adds (`services: { dht: ... }` -> `['dht']`):
   * two plugins declaring one key are refused when the config is resolved (MESH_ERR_SERVICE_CONFLICT,
   * naming both) instead of when the node is built; a plugin that adds services it cannot name in advance
   * (see `libp2pModule()`) checks them in `validate`.
   */
  services?: readonly string[]
  /**
   * The fixed ports the plugin binds with these options (a STUN server's UDP port, a transport's
   * listen port when the config has no `listen`): two plugins binding one port are refused when the
   * config is resolved (MESH_ERR_PORT_CLASH, naming both) instead of failing the start with EADDRINUSE.
   */
  ports?(
    options: Schema extends z.ZodType ? z.output<Schema> : undefined,
    config: ResolvedMeshConfig,
  ): readonly PortUse[]
  /**
   * Checks this plugin's place in the whole config once it is resolved (e.g. transports it cannot work
   * with, ports another plugin also takes): returns the problems, each a sentence saying what is wrong
   * and how to fix it; the kernel reports them with the config's other problems (MESH_ERR_CONFIG_INVALID).
   */
  validate?(
    options: Schema extends z.ZodType ? z.output<Schema> : undefined,
    config: ResolvedMeshConfig,
  ): ReadonlyArray<string | { message: string; hint?: string }>
  /** Makes the hooks for one node from the validated options. */
  create(
    options: Schema extends z.ZodType ? z.output<Schema> : undefined,
  ): PluginHooks<Api, Schema extends z.ZodType ? z.output<Schema> : undefined>
}

/** A plugin as it sits in `config.plugins`: the definition plus the raw options it was given. */
export interface MeshPlugin<Api = unknown> {
  readonly kind: 'meshkit-plugin'
  readonly name: string
  readonly provides: readonly Capability[]
  readonly dependencies: readonly Capability[]
  /** Capabilities used when present; they start first when the config has them. */
  readonly optionalDependencies?: readonly Capability[]
  readonly enforce?: 'pre' | 'post'
  readonly apply?: PluginApply
  /** Options as written in the config, validated by the kernel. */
  readonly rawOptions: unknown
  readonly definition: PluginDefinition<z.ZodType | undefined, Api>
}

/** A plugin factory made by {@link definePlugin}: call it with options to get a plugin for the config. */
export interface PluginFactory<Schema extends z.ZodType | undefined, Api> {
  (
    ...args: Schema extends z.ZodType
      ? undefined extends z.input<Schema>
        ? [options?: z.input<Schema>]
        : [options: z.input<Schema>]
      : []
  ): MeshPlugin<Api>
  readonly pluginName: string
  readonly provides: readonly Capability[]
  readonly definition: PluginDefinition<Schema, Api>
}

/**
 * Defines a plugin. Built-in plugins use exactly this, so a user's plugin can replace any of them.
 *
 * @example
 * export const hello = definePlugin({
 *   name: 'hello',
 *   options: z.object({ greeting: z.string().default('hi') }).prefault({}),
 *   create: (opts) => ({ start: (ctx) => ctx.logger.info(opts.greeting) }),
 * })
 */
export function definePlugin<Schema extends z.ZodType | undefined = undefined, Api = void>(
  definition: PluginDefinition<Schema, Api>,
): PluginFactory<Schema, Api> {
  const factory = (options?: unknown): MeshPlugin<Api> => ({
    kind: 'meshkit-plugin',
    name: definition.name,
    provides: definition.provides ?? [],
    dependencies: definition.dependencies ?? [],
    optionalDependencies: definition.optionalDependencies ?? [],
    enforce: definition.enforce,
    apply: definition.apply,
    rawOptions: options,
    definition: definition as PluginDefinition<z.ZodType | undefined, Api>,
  })
  return Object.assign(factory, {
    pluginName: definition.name,
    provides: definition.provides ?? [],
    definition,
  }) as unknown as PluginFactory<Schema, Api>
}

export function isMeshPlugin(value: unknown): value is MeshPlugin {
  return typeof value === 'object' && value !== null && (value as MeshPlugin).kind === 'meshkit-plugin'
}
