/**
 * `meshkit`: the app API. Configs and tools built on a node import it:
 *
 * ```ts
 * import { defineConfig, startMesh } from 'meshkit'
 * ```
 *
 * - the config: `defineConfig`, `loadConfig`, `resolveConfig`, its types;
 * - running a node: `startMesh` (one call), or `MeshKernel` (build, swap, update) and `MeshNode`
 *   (`api()`, `has()`, `tryApi()`, events);
 * - reloads (`diffConfig`), coded errors, logging, the event bus, the process helpers the CLI uses;
 * - the shared contracts (src/contracts): slot APIs to read a node's plugins with, NAT types,
 *   connection methods.
 *
 * Plugins are written with `meshkit/plugin`; the built-in ones are in `meshkit/plugins`.
 */

export * from './contracts/index.js'
export {
  type Capability,
  type ChangeAction,
  CONFIG_SEARCH_PLACES,
  type ConfigDiff,
  type ConfigEnv,
  type ConfigProblem,
  type CoreChange,
  createEventBus,
  createLogger,
  type DiffConfigOptions,
  type Duration,
  defineConfig,
  defineErrors,
  definitionChanged,
  describeConnection,
  diffConfig,
  type ErrorCode,
  type ErrorSpec,
  type ErrorsOf,
  type Identity,
  isErrorCode,
  isMeshError,
  LOG_FORMATS,
  LOG_LEVELS,
  type LoadConfigOptions,
  type LoadedConfig,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  loadConfig,
  loadOrCreateIdentity,
  type MemoryReclaim,
  type MemoryReclaimer,
  type MemoryReclaimerInit,
  type MeshConfig,
  MeshError,
  type MeshEvent,
  type MeshEventBus,
  type MeshEventListener,
  MeshKernel,
  type MeshKernelOptions,
  MeshNode,
  type MeshPlugin,
  meshError,
  multiaddrSchema,
  type NodeState,
  type PeerBan,
  type PluginChange,
  type PluginHookInfo,
  type PluginReference,
  type PluginRegistry,
  type ProcessIdentity,
  parseDuration,
  processLiveness,
  type ReloadStep,
  type ResolvedMeshConfig,
  type ResolvedPlugin,
  type RunningMesh,
  resolveConfig,
  type StartMeshOptions,
  selfIdentity,
  startMemoryReclaimer,
  startMesh,
  type ThrottledLog,
  type ThrottleLogOptions,
  throttleLog,
  type UpdateResult,
  type UserConfigExport,
  type ValueChange,
  z,
} from './core/index.js'
