import { isAbsolute, resolve as resolvePath } from 'node:path'
import { z } from 'zod'
import { coreConfigSchema, FIELD_HINTS, type IssueParams } from './config-schema.js'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { didYouMean } from './did-you-mean.js'
import { type MeshError, meshError } from './errors.js'
import { isMeshPlugin, type MeshPlugin, type PluginFactory } from './plugin.js'
import { orderPlugins } from './plugin-graph.js'
import { checkPortClashes, type PortUse } from './ports.js'

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
  /** A whole sentence that replaces "got ...; expected ..." (a plugin's own check of the config). */
  message?: string
}

const MAX_VALUE_LENGTH = 60

/** Renders a value for an error message: short, typed, never a dump. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing (undefined)'
  if (value === null) return 'null'
  if (typeof value === 'function') {
    const pluginName = (value as { pluginName?: unknown }).pluginName
    if (typeof pluginName === 'string') return `the plugin factory ${pluginName}, not called`
    return `a function${value.name ? ` (${value.name})` : ''}`
  }
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

/** Peels wrappers (optional, default, pipe, ...) off a schema; remembers the first default met. */
function unwrapSchema(schema: z.ZodType | undefined): {
  schema: z.ZodType | undefined
  fallback?: { value: unknown }
} {
  let cur = schema
  let fallback: { value: unknown } | undefined
  for (let depth = 0; cur && depth < 32; depth++) {
    if (cur instanceof z.ZodDefault || cur instanceof z.ZodPrefault) {
      fallback ??= { value: (cur.def as { defaultValue: unknown }).defaultValue }
      cur = cur.unwrap() as z.ZodType
    } else if (
      cur instanceof z.ZodOptional ||
      cur instanceof z.ZodNullable ||
      cur instanceof z.ZodNonOptional ||
      cur instanceof z.ZodCatch ||
      cur instanceof z.ZodReadonly ||
      cur instanceof z.ZodLazy
    ) {
      cur = cur.unwrap() as z.ZodType
    } else if (cur instanceof z.ZodPipe) {
      cur = cur.in as z.ZodType
    } else {
      break
    }
  }
  return { schema: cur, fallback }
}

/** The schema at `path` inside `schema` (unwrapped), and its default value if it has one. */
function schemaAt(
  schema: z.ZodType,
  path: readonly PropertyKey[],
): { schema: z.ZodType | undefined; fallback?: { value: unknown } } {
  let cur = unwrapSchema(schema)
  for (const key of path) {
    const s = cur.schema
    if (s instanceof z.ZodObject) cur = unwrapSchema(s.shape[key as string] as z.ZodType | undefined)
    else if (s instanceof z.ZodArray) cur = unwrapSchema(s.element as z.ZodType)
    else if (s instanceof z.ZodRecord) cur = unwrapSchema(s.valueType as z.ZodType)
    else return { schema: undefined }
  }
  return cur
}

/** The keys a strict object schema at `path` accepts (for "did you mean"). */
function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  const at = schemaAt(schema, path).schema
  return at instanceof z.ZodObject ? Object.keys(at.shape) : []
}

const TYPE_NAMES: Record<string, string> = {
  object: 'an object',
  array: 'an array',
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  bigint: 'a bigint',
  undefined: 'nothing (leave it out)',
  null: 'null',
  function: 'a function',
  date: 'a date',
}

function count(n: number | bigint, one: string, many: string): string {
  return `${n} ${Number(n) === 1 ? one : many}`
}

function expectedOf(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return TYPE_NAMES[issue.expected] ?? `a value of type ${issue.expected}`
    case 'too_small': {
      const least = (issue as { exact?: boolean }).exact ? 'exactly' : 'at least'
      if (issue.origin === 'string') {
        if (least === 'at least' && Number(issue.minimum) <= 1) return 'a non-empty string'
        return `a string of ${least} ${count(issue.minimum, 'character', 'characters')}`
      }
      if (issue.origin === 'array' || issue.origin === 'set')
        return `${least} ${count(issue.minimum, 'entry', 'entries')}`
      return `a number ${issue.inclusive ? '>=' : '>'} ${issue.minimum}`
    }
    case 'too_big': {
      const most = (issue as { exact?: boolean }).exact ? 'exactly' : 'at most'
      if (issue.origin === 'string')
        return `a string of ${most} ${count(issue.maximum, 'character', 'characters')}`
      if (issue.origin === 'array' || issue.origin === 'set')
        return `${most} ${count(issue.maximum, 'entry', 'entries')}`
      return `a number ${issue.inclusive ? '<=' : '<'} ${issue.maximum}`
    }
    case 'invalid_value':
      return issue.values.length === 1
        ? `exactly ${JSON.stringify(issue.values[0])}`
        : `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`
    case 'invalid_format':
      return `a string in ${issue.format} format`
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`
    case 'invalid_union': {
      // One form per union member, from the first thing each member found wrong.
      const forms = issue.errors
        .map((branch) => branch[0])
        .filter((first): first is z.core.$ZodIssue => first !== undefined)
        .map((first) =>
          first.path.length === 0
            ? expectedOf(first)
            : `an object whose ${pathText(first.path)} is ${expectedOf(first)}`,
        )
      const unique = [...new Set(forms)]
      return unique.length > 0 ? unique.join(' or ') : issue.message
    }
    case 'custom':
      return (issue.params as IssueParams | undefined)?.expected ?? issue.message
    default:
      return issue.message
  }
}

/** `'300'` where a number belongs: the hint is to drop the quotes. */
function quotedNumberHint(issue: z.core.$ZodIssue, value: unknown): string | undefined {
  if (issue.code !== 'invalid_type' || (issue.expected !== 'number' && issue.expected !== 'int'))
    return undefined
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(Number(value))) return undefined
  return `write the number without quotes: ${Number(value)}`
}

/** A fix for an issue that has no field-specific hint: what to write, or that the default is there. */
function genericHint(
  issue: z.core.$ZodIssue,
  value: unknown,
  expected: string,
  fallback: { value: unknown } | undefined,
  isPluginOptions: boolean,
): string {
  if (isPluginOptions) return `pass the plugin its options as ${expected}`
  if (issue.code === 'invalid_type' && value === undefined) return `add it: it is required (${expected})`
  if (fallback === undefined || fallback.value === undefined) return `change it to ${expected}`
  let text = JSON.stringify(fallback.value) ?? String(fallback.value)
  if (text.length > MAX_VALUE_LENGTH) text = `${text.slice(0, MAX_VALUE_LENGTH)}…`
  return `change it to ${expected}, or remove it to use the default (${text})`
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
          expected: known.length > 0 ? `no such key (known keys: ${known.join(', ')})` : 'no such key',
          hint: guess ? `did you mean '${guess}'?` : 'remove it',
        })
      }
      continue
    }
    const value = valueAt(input, issue.path)
    const expected = expectedOf(issue)
    const params = issue.code === 'custom' ? (issue.params as IssueParams | undefined) : undefined
    // Field hints describe the core config; a plugin's option of the same name is another field.
    const fieldHint = prefix ? undefined : FIELD_HINTS[pathText(issue.path)]
    const hint =
      params?.hint ??
      quotedNumberHint(issue, value) ??
      fieldHint ??
      genericHint(
        issue,
        value,
        expected,
        schemaAt(schema, issue.path).fallback,
        prefix !== '' && issue.path.length === 0,
      )
    problems.push({ path: at(issue.path), value, expected, hint })
  }
  return problems
}

export function formatProblems(problems: readonly ConfigProblem[]): string {
  return problems
    .map((p) => {
      const head = p.message
        ? `  - ${p.path || '(config)'}: ${p.message}`
        : `  - ${p.path || '(config)'}: got ${describeValue(p.value)}; expected ${p.expected}.`
      return p.hint ? `${head}\n    Fix: ${p.hint}` : head
    })
    .join('\n')
}

function invalid(file: string, problems: ConfigProblem[], errors: MeshError[]) {
  return meshError('MESH_ERR_CONFIG_INVALID', [file, formatProblems(problems), problems.length], { errors })
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

/** The entries of an object whose value is not undefined (so that they cannot hide a lower layer). */
function definedOnly(value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== 'object') return {}
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined))
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
  // The defaults are a lower layer of the same config (startMesh passes its `config` here): they are
  // checked and parsed (durations to ms) like the user's values, and `connections` merges key by key.
  const { plugins: defaultPlugins, ...defaultCore } = options.defaults ?? {}
  const parsedDefaults = coreConfigSchema.safeParse(defaultCore)
  if (!parsedDefaults.success) {
    problems.push(...problemsFromZod(parsedDefaults.error.issues, coreConfigSchema, defaultCore))
  }
  const base = (parsedDefaults.success ? parsedDefaults.data : {}) as Record<string, unknown>
  const pick = <T>(key: string, fallback: T): T => (user[key] ?? base[key] ?? fallback) as T

  const dataDir = pick<string>('dataDir', '.mesh')
  const section = <T>(key: string) =>
    ({ ...definedOnly(base[key]), ...(parsed.success ? definedOnly(user[key]) : {}) }) as Partial<T>
  const connections = section<ResolvedMeshConfig['connections']>('connections')
  const bootstrap = section<ResolvedMeshConfig['bootstrap']>('bootstrap')
  const network = section<ResolvedMeshConfig['network']>('network')
  const security = section<ResolvedMeshConfig['security']>('security')
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
      allow: connections.allow ?? [],
      inboundConnectionThreshold: connections.inboundConnectionThreshold ?? 5,
      maxIncomingPendingConnections: connections.maxIncomingPendingConnections ?? 64,
      maxIncomingPendingPerHost: connections.maxIncomingPendingPerHost ?? 2,
    },
    bootstrap: {
      minConnections: bootstrap.minConnections ?? 3,
      retryInitial: bootstrap.retryInitial ?? 1000,
      retryMax: bootstrap.retryMax ?? 60_000,
      dialConcurrency: bootstrap.dialConcurrency ?? 4,
      seedConnections: bootstrap.seedConnections ?? 1,
    },
    network: {
      publicCidrs: network.publicCidrs ?? [],
      addressScope: network.addressScope ?? 'public',
      local: network.local ?? false,
    },
    security: {
      banThreshold: security.banThreshold ?? 100,
      banDuration: security.banDuration ?? 600_000,
      banIps: security.banIps ?? false,
      penaltyHalfLife: security.penaltyHalfLife ?? 600_000,
      peerDialInterval: security.peerDialInterval ?? 10_000,
    },
    shutdownTimeout: pick('shutdownTimeout', 5000),
    configFile: options.file,
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
