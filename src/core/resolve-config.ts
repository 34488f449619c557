import { isAbsolute, resolve as resolvePath } from 'node:path'
import { z } from 'zod'
import { coreConfigSchema, FIELD_HINTS, type IssueParams } from './config-schema.js'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { didYouMean } from './did-you-mean.js'
import { meshError } from './errors.js'
import { isMeshPlugin, type MeshPlugin, type PluginFactory } from './plugin.js'
import { orderPlugins } from './plugin-graph.js'

/** Plugins that JSON/YAML configs can name by string. The CLI registers the built-ins; core knows none. */
export type PluginRegistry = ReadonlyMap<string, PluginFactory<z.ZodType | undefined, unknown>>

export interface ResolveConfigOptions {
  env: ConfigEnv
  /** The directory relative paths are resolved against. @default process.cwd() */
  root?: string
  /** The file the config came from, named in error messages. */
  file?: string
  registry?: PluginRegistry
  /** Values used where the user's config leaves a field unset (e.g. the default plugin list). */
  defaults?: MeshConfig
}

/** One validation problem: where, what was there, what was expected, how to fix it. */
export interface ConfigProblem {
  path: string
  value: unknown
  expected: string
  hint?: string
}

const MAX_VALUE_LENGTH = 60

/** Renders a value for an error message: short, typed, never a dump. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (undefined)'
  if (value === null) return 'null'
  if (typeof value === 'function') return `a function${value.name ? ` (${value.name})` : ''}`
  if (Array.isArray(value)) return `an array of ${value.length}`
  let text: string
  try {
    text = JSON.stringify(value) ?? String(value)
  } catch {
    text = String(value)
  }
  if (text.length > MAX_VALUE_LENGTH) text = `${text.slice(0, MAX_VALUE_LENGTH)}…`
  return `${text} (${typeof value})`
}

function pathText(path: readonly PropertyKey[]): string {
  let out = ''
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`
    else out += out ? `.${String(key)}` : String(key)
  }
  return out
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur = root
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined
    cur = (cur as Record<PropertyKey, unknown>)[key]
  }
  return cur
}

/** The keys a strict object schema at `path` accepts (for "did you mean"). */
function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let cur: z.ZodType | undefined = schema
  for (const key of [...path, undefined]) {
    while (
      cur &&
      (cur instanceof z.ZodOptional || cur instanceof z.ZodDefault || cur instanceof z.ZodNullable)
    ) {
      cur = cur.unwrap() as z.ZodType
    }
    if (key === undefined) break
    if (cur instanceof z.ZodObject) cur = cur.shape[key as string] as z.ZodType | undefined
    else if (cur instanceof z.ZodArray) cur = cur.element as z.ZodType
    else return []
  }
  return cur instanceof z.ZodObject ? Object.keys(cur.shape) : []
}

function expectedOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'object' ? 'an object' : `a ${issue.expected}`
    case 'too_small':
      if (issue.origin === 'string') return `a non-empty string (at least ${issue.minimum} characters)`
      if (issue.origin === 'array') return `at least ${issue.minimum} entries`
      return `a number ${issue.inclusive ? '>=' : '>'} ${issue.minimum}`
    case 'too_big':
      return `a value ${issue.inclusive ? '<=' : '<'} ${issue.maximum}`
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`
    case 'invalid_format':
      return `a string in ${issue.format} format`
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`
    case 'custom':
      return (issue.params as IssueParams | undefined)?.expected ?? issue.message
    default:
      return issue.message
  }
}

/** Turns zod issues into problems, expanding unknown keys with "did you mean". */
export function problemsFromZod(
  issues: readonly z.core.$ZodIssue[],
  schema: z.ZodType,
  input: unknown,
  prefix = '',
): ConfigProblem[] {
  const at = (path: readonly PropertyKey[]): string => {
    const rest = pathText(path)
    if (!prefix || !rest) return prefix + rest
    return rest.startsWith('[') ? prefix + rest : `${prefix}.${rest}`
  }
  const problems: ConfigProblem[] = []
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(schema, issue.path)
      for (const key of issue.keys) {
        const guess = didYouMean(key, known)
        problems.push({
          path: at([...issue.path, key]),
          value: valueAt(input, [...issue.path, key]),
          expected: `no such key (known keys: ${known.join(', ')})`,
          hint: guess ? `did you mean '${guess}'?` : 'remove it',
        })
      }
      continue
    }
    if (
      issue.code === 'invalid_type' &&
      issue.expected === 'number' &&
      typeof valueAt(input, issue.path) === 'string'
    ) {
      const path = pathText(issue.path)
      problems.push({
        path: at(issue.path),
        value: valueAt(input, issue.path),
        expected: 'a number',
        hint: FIELD_HINTS[path] ?? 'write the number without quotes',
      })
      continue
    }
    const path = pathText(issue.path)
    const params = issue.code === 'custom' ? (issue.params as IssueParams | undefined) : undefined
    problems.push({
      path: at(issue.path),
      value: valueAt(input, issue.path),
      expected: expectedOf(issue),
      hint: params?.hint ?? FIELD_HINTS[path],
    })
  }
  return problems
}

export function formatProblems(problems: readonly ConfigProblem[]): string {
  return problems
    .map((p) => {
      const head = `  - ${p.path || '(config)'}: got ${describeValue(p.value)}; expected ${p.expected}.`
      return p.hint ? `${head}\n    Fix: ${p.hint}` : head
    })
    .join('\n')
}

function invalid(file: string, problems: ConfigProblem[]) {
  return meshError('MESH_ERR_CONFIG_INVALID', [file, formatProblems(problems), problems.length])
}

/** Turns a `config.plugins` entry into a plugin, or records why it cannot be one. */
function pluginFromEntry(
  entry: unknown,
  index: number,
  registry: PluginRegistry,
  problems: ConfigProblem[],
): MeshPlugin | undefined {
  const path = `plugins[${index}]`
  const registered = [...registry.keys()]
  const fromRegistry = (name: string, options: unknown): MeshPlugin | undefined => {
    const factory = registry.get(name)
    if (factory) return (factory as (o?: unknown) => MeshPlugin)(options)
    const guess = didYouMean(name, registered)
    problems.push({
      path,
      value: name,
      expected: `the name of a registered plugin (${registered.join(', ') || 'none registered'})`,
      hint: guess
        ? `did you mean '${guess}'?`
        : 'import the plugin in mesh.config.ts and put its call, e.g. myPlugin(), in `plugins`',
    })
    return undefined
  }
  if (isMeshPlugin(entry)) return entry
  if (typeof entry === 'string') return fromRegistry(entry, undefined)
  if (typeof entry === 'function') {
    const name = (entry as { pluginName?: string }).pluginName ?? entry.name
    problems.push({
      path,
      value: entry,
      expected: 'a plugin object',
      hint: `call the factory: write ${name || 'plugin'}() instead of ${name || 'plugin'}`,
    })
    return undefined
  }
  if (entry && typeof entry === 'object' && typeof (entry as { plugin?: unknown }).plugin === 'string') {
    const { plugin, options, ...rest } = entry as { plugin: string; options?: unknown }
    for (const key of Object.keys(rest)) {
      problems.push({
        path: `${path}.${key}`,
        value: (rest as Record<string, unknown>)[key],
        expected: 'no such key (known keys: plugin, options)',
        hint: 'remove it',
      })
    }
    return fromRegistry(plugin, options)
  }
  problems.push({
    path,
    value: entry,
    expected: "a plugin (e.g. tcp()), a registered plugin name, or { plugin: 'name', options: {...} }",
    hint: 'make each entry of `plugins` a plugin created by a definePlugin factory',
  })
  return undefined
}

function appliesTo(plugin: MeshPlugin, env: ConfigEnv, config: ResolvedMeshConfig): boolean {
  const apply = plugin.apply
  if (apply === undefined) return true
  if (typeof apply === 'function') return apply(config, env)
  return apply === env.command
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
  const defaults = options.defaults ?? {}
  const pick = <T>(key: string, fallback: T): T =>
    (user[key] ?? (defaults as Record<string, unknown>)[key] ?? fallback) as T

  const dataDir = pick<string>('dataDir', '.mesh')
  const connections = (user.connections ?? {}) as { maxConnections?: number; dialTimeout?: number }
  const resolved: ResolvedMeshConfig = {
    name: pick('name', 'mesh'),
    dataDir: isAbsolute(dataDir) ? dataDir : resolvePath(root, dataDir),
    listen: pick<string[] | undefined>('listen', undefined),
    announce: pick<string[] | undefined>('announce', undefined),
    dial: pick<string[]>('dial', []),
    plugins: [],
    logLevel: pick('logLevel', 'info'),
    datastore: pick('datastore', 'persistent'),
    connections: {
      maxConnections: connections.maxConnections ?? 300,
      dialTimeout: connections.dialTimeout ?? 10_000,
    },
    shutdownTimeout: pick('shutdownTimeout', 5000),
    configFile: options.file,
    root,
  }

  const entries = (Array.isArray(user.plugins) ? user.plugins : (defaults.plugins ?? [])) as unknown[]
  const plugins: ResolvedPlugin[] = []
  const seen = new Map<string, number>()
  entries.forEach((entry, index) => {
    if (entry === false || entry === null || entry === undefined) return
    const plugin = pluginFromEntry(entry, index, registry, problems)
    if (!plugin || !appliesTo(plugin, options.env, resolved)) return
    const first = seen.get(plugin.name)
    if (first !== undefined) {
      const err = meshError('MESH_ERR_DUPLICATE_PLUGIN', [plugin.name, first, index])
      problems.push({
        path: `plugins[${index}]`,
        value: plugin.name,
        expected: 'a plugin name not used before',
        hint: `${err.message} ${err.hint}`,
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
  if (problems.length > 0) throw invalid(file, problems)

  resolved.plugins = orderPlugins(plugins, registry)
  return resolved
}
