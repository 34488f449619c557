/**
 * `meshkit/plugin`: everything a plugin author needs, and the only import of a built-in plugin.
 *
 * ```ts
 * import { definePlugin, z } from 'meshkit/plugin'
 * ```
 *
 * - the plugin definition: `definePlugin`, its hooks and the `PluginContext` they get (config, logger,
 *   event bus, datastore, identity, libp2p, `use`/`useOptional`/`useAll` for declared capabilities);
 * - open coded errors: `defineErrors` for the plugin's own codes, `meshError` for core's;
 * - the security API: per-peer budgets, reputation, the address policy for peers' addresses, bounded
 *   per-peer state (`LruMap`, `TokenBucket`);
 * - option schemas (`z`, `durationSchema`, `multiaddrSchema`), ports a plugin binds, bootstrap sources;
 * - the shared contracts (src/contracts): slot APIs the tools read, NAT types, connection methods;
 * - a few helpers the built-ins use (`sleep`, `decodeJsonObject`, `coalescePerKey`, `backoffDelay`, ...).
 *
 * Apps (a config, a tool on a node) import `meshkit`.
 */

export * from './contracts/index.js'
export {
  type AddressScope,
  type AddressScopeMode,
  type BootstrapSource,
  type Budget,
  type BudgetInit,
  type BudgetRefusal,
  type BudgetRefusalReason,
  type BudgetStats,
  type BudgetTicket,
  backoffDelay,
  type Capability,
  type ConfigEnv,
  classifyIp,
  coalescePerKey,
  createAddressScope,
  createPeerAddressPolicy,
  type Duration,
  decodeJsonObject,
  defineErrors,
  definePlugin,
  describeConnection,
  durationSchema,
  type ErrorCode,
  type ErrorSpec,
  type ErrorsOf,
  type IpClass,
  isErrorCode,
  isMeshError,
  type Libp2pContribution,
  type Logger,
  LruMap,
  type MeshConfig,
  MeshError,
  type MeshEvent,
  type MeshEventBus,
  type MeshEventListener,
  type MeshPlugin,
  makeDir,
  meshError,
  multiaddrSchema,
  type NamedBootstrapSource,
  type Offence,
  type PeerAddressPolicy,
  type PeerReputation,
  type PluginApply,
  type PluginContext,
  type PluginDefinition,
  type PluginFactory,
  type PluginHooks,
  type PortUse,
  parseDuration,
  portsOfListen,
  type ResolvedMeshConfig,
  type ResolvedPlugin,
  type Slot,
  sleep,
  sweepTempFiles,
  type ThrottledLog,
  type ThrottleLogOptions,
  TokenBucket,
  tempFileFor,
  throttleLog,
  unmapIp,
  z,
} from './core/index.js'
