/**
 * `loadConfig()`: find the config (find-config.ts), load it fresh (import-config-module.ts for JS/TS),
 * await and call it, lay the command line's overrides over it and validate it (resolve-config.ts).
 */
import { basename, dirname } from 'node:path'
import { labelFor, thrownAt } from './config-locations.js'
import { describeValue } from './config-problems.js'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig } from './config-types.js'
import { meshError, reasonOf } from './errors.js'
import { findConfigModule } from './find-config.js'
import { type PluginRegistry, resolveConfig } from './resolve-config.js'

export interface LoadConfigOptions {
  env: ConfigEnv
  /** The project directory searched for a config. @default process.cwd() */
  cwd?: string
  /** An explicit config file (the CLI's `--config`); no search then. */
  configFile?: string
  /**
   * A config given as a value instead of a file (`startMesh({ config })`): an object, a promise or a
   * function of the env, taken through the same steps as a file's default export. No search then.
   */
  config?: unknown
  /** Plugins that JSON/YAML configs may name. */
  registry?: PluginRegistry
  /** Used where the config leaves a field unset, and as the whole config when no file is found. */
  defaults?: MeshConfig
  /** Values that win over the file (CLI flags such as --data-dir, --listen). */
  overrides?: MeshConfig
}

export interface LoadedConfig {
  config: ResolvedMeshConfig
  /** The config file, or undefined when none was found and the defaults were used. */
  file?: string
  /** Every local file the config was built from (the file itself and what it imports), absolute. */
  dependencies: string[]
}

/**
 * Finds, loads (fresh, following local imports), calls (if a function) and validates the config.
 * Throws coded MeshErrors for every user mistake.
 */
export async function loadConfig(options: LoadConfigOptions): Promise<LoadedConfig> {
  const cwd = options.cwd ?? process.cwd()
  const inline = options.config !== undefined
  const found = inline ? undefined : await findConfigModule(options)
  const file = found?.file
  const label = file ? labelFor(file, cwd) : inline ? 'the config object' : 'the default config'
  let raw: unknown = inline ? options.config : found ? found.value : {}
  const failed = (what: string, err: unknown) => {
    const at = thrownAt(err, found?.dependencies ?? [], cwd)
    const reason = `${what}: ${reasonOf(err)}${at ? ` (thrown at ${at})` : ''}`
    return meshError('MESH_ERR_CONFIG_LOAD', [label, reason], { cause: err })
  }
  if (isThenable(raw)) {
    try {
      raw = await raw
    } catch (err) {
      throw failed('the promise it exports rejected', err)
    }
  }
  if (typeof raw === 'function') {
    try {
      raw = await (raw as (env: ConfigEnv) => unknown)(options.env)
    } catch (err) {
      throw failed('its config function threw', err)
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw meshError('MESH_ERR_CONFIG_NOT_OBJECT', [label, describeValue(raw)], { hint: dataFileHint(file) })
  }
  const merged = applyOverrides(raw as MeshConfig, options.overrides)
  const config = resolveConfig(merged, {
    env: options.env,
    root: file ? dirname(file) : cwd,
    file: label,
    configFile: file,
    registry: options.registry,
    defaults: options.defaults,
  })
  return { config, file, dependencies: found?.dependencies ?? [] }
}

/** For JSON/YAML configs the registry's "export default defineConfig" hint does not apply. */
function dataFileHint(file: string | undefined): string | undefined {
  if (!file || /\.[cm]?[jt]s$/.test(file)) return undefined
  if (basename(file) === 'package.json')
    return 'Make the "mesh" field of package.json an object, e.g. "mesh": { "name": "alice" }.'
  if (/\.ya?ml$|\.meshrc$/.test(file))
    return 'Make the top level of the file a mapping of settings, e.g. `name: alice`.'
  return 'Make the top level of the file an object of settings, e.g. { "name": "alice" }.'
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype

/**
 * The config with command-line overrides laid over it: a value replaces the config's, except that a
 * section (`network`, `connections`, ...) is merged key by key, so `--local` (`network.addressScope`)
 * keeps the config's `network.publicCidrs`. Undefined overrides are ignored.
 */
export function applyOverrides(config: MeshConfig, overrides: MeshConfig = {}): MeshConfig {
  const merged: Record<string, unknown> = { ...config }
  for (const [key, value] of Object.entries(stripUndefined(overrides))) {
    const current = merged[key]
    merged[key] =
      isPlainObject(current) && isPlainObject(value) ? { ...current, ...stripUndefined(value) } : value
  }
  return merged as MeshConfig
}
