/**
 * The kernel's public API: what the two entry points, `meshkit` (src/index.ts, the app API) and
 * `meshkit/plugin` (src/plugin.ts, the plugin API), pick from. Kernel internals (the plugin graph's
 * order, the container's tokens, the config finder, port and gater plumbing) are not listed here; tests
 * import those from their files.
 */
export { z } from 'zod'
export { type AddressScope, createAddressScope } from './address-scope.js'
export { type BootstrapSource, backoffDelay, type NamedBootstrapSource } from './bootstrap.js'
export type {
  Budget,
  BudgetInit,
  BudgetRefusal,
  BudgetRefusalReason,
  BudgetStats,
  BudgetTicket,
} from './budget.js'
export { coalescePerKey } from './coalesce.js'
export {
  type ChangeAction,
  type ConfigDiff,
  type CoreChange,
  type DiffConfigOptions,
  definitionChanged,
  diffConfig,
  type PluginChange,
  type PluginHookInfo,
  type ValueChange,
} from './config-diff.js'
export type { ConfigProblem } from './config-problems.js'
export { durationSchema, multiaddrSchema } from './config-schema.js'
export type {
  ConfigEnv,
  Duration,
  LogLevel,
  MeshConfig,
  PluginReference,
  ResolvedMeshConfig,
  ResolvedPlugin,
  UserConfigExport,
} from './config-types.js'
export { defineConfig } from './config-types.js'
export { parseDuration } from './duration.js'
export {
  defineErrors,
  type ErrorCode,
  type ErrorSpec,
  type ErrorsOf,
  isErrorCode,
  isMeshError,
  MeshError,
  meshError,
} from './errors.js'
export { createEventBus, type MeshEvent, type MeshEventBus, type MeshEventListener } from './events.js'
export { CONFIG_SEARCH_PLACES } from './find-config.js'
export { type Identity, loadOrCreateIdentity } from './identity.js'
export type { ReloadStep } from './in-place-reload.js'
export { classifyIp, type IpClass, unmapIp } from './ip-class.js'
export { MeshKernel, type MeshKernelOptions, type UpdateResult } from './kernel.js'
export { type LoadConfigOptions, type LoadedConfig, loadConfig } from './load-config.js'
export { type ThrottledLog, type ThrottleLogOptions, throttleLog } from './log-throttle.js'
export {
  createLogger,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type Logger,
  type LoggerOptions,
} from './logger.js'
export { makeDir } from './make-dir.js'
export {
  type MemoryReclaim,
  type MemoryReclaimer,
  type MemoryReclaimerInit,
  startMemoryReclaimer,
} from './memory-reclaimer.js'
export { MeshNode, type NodeState } from './mesh-node.js'
export { describeConnection } from './node-events.js'
export { type AddressScopeMode, createPeerAddressPolicy, type PeerAddressPolicy } from './peer-addresses.js'
export {
  type Capability,
  definePlugin,
  type Libp2pContribution,
  type MeshPlugin,
  type PluginApply,
  type PluginContext,
  type PluginDefinition,
  type PluginFactory,
  type PluginHooks,
  type Slot,
} from './plugin.js'
export { type PortUse, portsOfListen } from './ports.js'
export { type ProcessIdentity, processLiveness, selfIdentity } from './process-identity.js'
export type {
  Offence,
  PeerBan,
  PeerReputation,
  ReputationSettings,
} from './reputation.js'
export { type PluginRegistry, resolveConfig } from './resolve-config.js'
export { type RunningMesh, type StartMeshOptions, startMesh } from './start-mesh.js'
export { sweepTempFiles, tempFileFor } from './temp-files.js'
export { LruMap, TokenBucket } from './token-bucket.js'
export { decodeJsonObject, sleep } from './wire-json.js'
