/**
 * Validating and resolving a raw config: the core schema over the defaults, each plugin's options
 * through its own schema, the plugin graph, shared service keys and ports, each plugin's own check.
 * Problems are made in config-problems.ts; `plugins` entries are read in plugin-entries.ts.
 */
import { isAbsolute, resolve as resolvePath } from 'node:path'
import type { z } from 'zod'
import { CORE_DEFAULTS } from './config-defaults.js'
import { type ConfigProblem, describeValue, formatProblems, problemsFromZod } from './config-problems.js'
import { coreConfigSchema } from './config-schema.js'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { type MeshError, meshError } from './errors.js'
import type { PluginFactory } from './plugin.js'
import { appliesTo, pluginFromEntry } from './plugin-entries.js'
import { orderPlugins } from './plugin-graph.js'
import { checkPortClashes, type PortUse } from './ports.js'

/** Plugins that JSON/YAML configs can name by string. The CLI registers the built-ins; core knows none. */
export type PluginRegistry = ReadonlyMap<string, PluginFactory<z.ZodType | undefined, unknown>>

export interface ResolveConfigOptions {
  env: ConfigEnv
  /** The directory relative paths are resolved against. @default process.cwd() */
  root?: string
  /** How error messages name the config (a path relative to the project, 'the config object', ...). */
  file?: string
  /** The config file's absolute path, kept as `configFile` in the resolved config (none for a value). */
  configFile?: string
  registry?: PluginRegistry
  /** Values used where the user's config leaves a field unset (e.g. the default plugin list). */
  defaults?: MeshConfig
}

function invalid(file: string, problems: ConfigProblem[], errors: MeshError[]) {
  return meshError('MESH_ERR_CONFIG_INVALID', [file, formatProblems(problems), problems.length], { errors })
}

/** The entries of an object whose value is not undefined (so that they cannot hide a lower layer). */
function definedOnly(value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== 'object') return {}
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined))
}

/**
 * Validates a raw config and resolves it: defaults, durations, absolute paths, plugin options,
 * and plugin order. Every problem is collected and reported at once as MESH_ERR_CONFIG_INVALID;
 * plugin-graph problems (missing dependency, cycle, slot conflict) get their own codes.
 */
export function resolveConfig(raw: unknown, options: ResolveConfigOptions): ResolvedMeshConfig {
  const file = options.file ?? 'the config'
  const root = options.root ?? process.cwd()
  const registry = options.registry ?? new Map()
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw meshError('MESH_ERR_CONFIG_NOT_OBJECT', [file, describeValue(raw)])
  }
  const parsed = coreConfigSchema.safeParse(raw)
  const problems: ConfigProblem[] = parsed.success
    ? []
    : problemsFromZod(parsed.error.issues, coreConfigSchema, raw)
  const user = (parsed.success ? parsed.data : raw) as Record<string, unknown>
  // The defaults are a lower layer of the same config (startMesh passes its `config` here): they are
  // checked and parsed (durations to ms) like the user's values, and `connections` merges key by key.
  const { plugins: defaultPlugins, ...defaultCore } = options.defaults ?? {}
  const parsedDefaults = coreConfigSchema.safeParse(defaultCore)
  if (!parsedDefaults.success) {
    problems.push(...problemsFromZod(parsedDefaults.error.issues, coreConfigSchema, defaultCore))
  }
  const base = (parsedDefaults.success ? parsedDefaults.data : {}) as Record<string, unknown>
  const pick = <T>(key: string, fallback: T): T => (user[key] ?? base[key] ?? fallback) as T

  const d = CORE_DEFAULTS
  const dataDir = pick<string>('dataDir', d.dataDir)
  const section = <K extends 'connections' | 'bootstrap' | 'network' | 'security'>(key: K) =>
    ({
      ...structuredClone(d[key]), // a copy: a resolved config never shares an array with the defaults
      ...definedOnly(base[key]),
      ...(parsed.success ? definedOnly(user[key]) : {}),
    }) as ResolvedMeshConfig[K]
  const resolved: ResolvedMeshConfig = {
    name: pick('name', d.name),
    dataDir: isAbsolute(dataDir) ? dataDir : resolvePath(root, dataDir),
    listen: pick<string[] | undefined>('listen', undefined),
    announce: pick<string[] | undefined>('announce', undefined),
    dial: pick<string[]>('dial', [...d.dial]),
    plugins: [],
    logLevel: pick('logLevel', d.logLevel),
    datastore: pick('datastore', d.datastore),
    connections: section('connections'),
    bootstrap: section('bootstrap'),
    network: section('network'),
    security: section('security'),
    shutdownTimeout: pick('shutdownTimeout', d.shutdownTimeout),
    configFile: options.configFile,
    root,
  }

  const entries = (Array.isArray(user.plugins) ? user.plugins : (defaultPlugins ?? [])) as unknown[]
  const plugins: ResolvedPlugin[] = []
  const seen = new Map<string, number>()
  /** Coded errors behind some problems (e.g. MESH_ERR_DUPLICATE_PLUGIN), kept on the thrown error's `errors`. */
  const related: MeshError[] = []
  entries.forEach((entry, index) => {
    if (entry === false || entry === null || entry === undefined) return
    const plugin = pluginFromEntry(entry, index, registry, problems)
    if (!plugin || !appliesTo(plugin, options.env, resolved)) return
    const first = seen.get(plugin.name)
    if (first !== undefined) {
      const err = meshError('MESH_ERR_DUPLICATE_PLUGIN', [plugin.name, first, index])
      related.push(err)
      problems.push({
        path: `plugins[${index}]`,
        value: plugin.name,
        expected: 'a plugin name not used before',
        hint: `${err.message} ${err.hint} (${err.code})`,
      })
      return
    }
    seen.set(plugin.name, index)
    const schema = plugin.definition.options
    if (!schema) {
      plugins.push({ plugin, options: undefined, index })
      return
    }
    const result = schema.safeParse(plugin.rawOptions)
    if (result.success) {
      plugins.push({ plugin, options: result.data, index })
    } else {
      problems.push(
        ...problemsFromZod(
          result.error.issues,
          schema,
          plugin.rawOptions,
          `plugins[${index}](${plugin.name})`,
        ),
      )
    }
  })
  if (problems.length > 0) throw invalid(file, problems, related)

  resolved.plugins = orderPlugins(plugins, registry)
  // libp2p service keys two plugins declare: refused now, naming both (else libp2p fails at build)
  const serviceOwners = new Map<string, string>()
  for (const { plugin } of resolved.plugins) {
    for (const key of plugin.definition.services ?? []) {
      const owner = serviceOwners.get(key)
      if (owner !== undefined) throw meshError('MESH_ERR_SERVICE_CONFLICT', [key, owner, plugin.name])
      serviceOwners.set(key, plugin.name)
    }
  }
  // fixed ports two plugins (or a plugin and `listen`) bind: refused now, naming both
  checkPortClashes(
    resolved,
    resolved.plugins.map(({ plugin, options: o }) => ({
      owner: `plugin '${plugin.name}'`,
      uses:
        (
          plugin.definition.ports as ((o: unknown, c: ResolvedMeshConfig) => readonly PortUse[]) | undefined
        )?.(o, resolved) ?? [],
    })),
  )
  // each plugin's own look at the whole config (transports it cannot protect, ports it shares, ...)
  for (const { plugin, options: pluginOptions, index } of resolved.plugins) {
    const validate = plugin.definition.validate as
      | ((o: unknown, c: ResolvedMeshConfig) => ReadonlyArray<string | { message: string; hint?: string }>)
      | undefined
    for (const problem of validate?.(pluginOptions, resolved) ?? []) {
      const { message, hint } = typeof problem === 'string' ? { message: problem, hint: undefined } : problem
      problems.push({
        path: `plugins[${index}](${plugin.name})`,
        value: plugin.rawOptions,
        expected: message,
        message,
        hint,
      })
    }
  }
  if (problems.length > 0) throw invalid(file, problems, related)
  return resolved
}
