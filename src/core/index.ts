/** Meshkit's public core API: everything a plugin (built-in or yours) and an app may use. */
export { z } from 'zod'
export { type AddressScope, checkCidr, createAddressScope } from './address-scope.js'
export { type BootstrapSource, backoffDelay, type NamedBootstrapSource } from './bootstrap.js'
export {
  BUDGET_DEFAULTS,
  type Budget,
  type BudgetInit,
  type BudgetRefusal,
  type BudgetRefusalReason,
  type BudgetStats,
  type BudgetTicket,
  createBudget,
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
export { cidrSchema, durationSchema, multiaddrSchema } from './config-schema.js'
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
  ERRORS,
  type ErrorCode,
  type ErrorSpec,
  type ErrorsOf,
  isErrorCode,
  isMeshError,
  MeshError,
  meshError,
} from './errors.js'
export { createEventBus, type MeshEvent, type MeshEventBus, type MeshEventListener } from './events.js'
export { CONFIG_SEARCH_PLACES, findConfigModule } from './find-config.js'
export { IDENTITY_FILE, type Identity, loadOrCreateIdentity } from './identity.js'
export { type ConfigModule, importConfigModule } from './import-config-module.js'
export type { ReloadStep } from './in-place-reload.js'
export { classifyIp, type IpClass, unmapIp } from './ip-class.js'
export { MeshKernel, type MeshKernelOptions, type UpdateResult } from './kernel.js'
export { combineGaters } from './libp2p-options.js'
export { type LoadConfigOptions, type LoadedConfig, loadConfig } from './load-config.js'
export { type ThrottledLog, type ThrottleLogOptions, throttleLog } from './log-throttle.js'
export {
  createLogger,
  debugMatcher,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type Logger,
  type LoggerOptions,
} from './logger.js'
export { makeDir } from './make-dir.js'
export { MeshNode, type NodeState } from './mesh-node.js'
export { describeConnection } from './node-events.js'
export { type AddressScopeMode, createPeerAddressPolicy, type PeerAddressPolicy } from './peer-addresses.js'
export {
  type Capability,
  definePlugin,
  isMeshPlugin,
  type Libp2pContribution,
  type MeshPlugin,
  MULTI_PROVIDER_CAPABILITIES,
  type PluginApply,
  type PluginContext,
  type PluginDefinition,
  type PluginFactory,
  type PluginHooks,
  type Slot,
} from './plugin.js'
export { orderPlugins, REQUIRED_CAPABILITIES } from './plugin-graph.js'
export { checkPortClashes, type PortUse, portsOfListen } from './ports.js'
export { type ProcessIdentity, processLiveness, selfIdentity } from './process-identity.js'
export {
  OFFENCE_POINTS,
  type Offence,
  type PeerBan,
  type PeerReputation,
  type ReputationSettings,
} from './reputation.js'
export { type PluginRegistry, resolveConfig } from './resolve-config.js'
export {
  type ClusteringSlotApi,
  type ClusterMemberView,
  type ClusterView,
  type ConnectionMethod,
  type ConnectionMethodSource,
  type DiscoverySlotApi,
  hasMethods,
  isNatType,
  type MetricsSlotApi,
  NAT_TYPES,
  type NatClassificationSlotApi,
  type NatProtocolVerdictView,
  type NatReportView,
  type NatType,
  optionalApi,
  requireDiscovery,
  SLOT_CAPABILITIES,
} from './slot-contracts.js'
export { type RunningMesh, type StartMeshOptions, startMesh } from './start-mesh.js'
export { sweepTempFiles, tempFileFor } from './temp-files.js'
export { LruMap, TokenBucket } from './token-bucket.js'
export { capabilityToken, TOKENS, type Token } from './tokens.js'
export { decodeJsonObject, sleep } from './wire-json.js'
