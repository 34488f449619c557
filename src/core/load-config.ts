import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { unlink, writeFile } from 'node:fs/promises'
import { dirname, isAbsolute, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { cosmiconfig, type Loader } from 'cosmiconfig'
import type { Message, Plugin } from 'esbuild'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig } from './config-types.js'
import { isMeshError, meshError, reasonOf } from './errors.js'
import { describeValue, type PluginRegistry, resolveConfig } from './resolve-config.js'

/** Where Meshkit looks for a config, in this order, in the project directory. */
export const CONFIG_SEARCH_PLACES = [
  'mesh.config.ts',
  'mesh.config.mts',
  'mesh.config.js',
  'mesh.config.mjs',
  'mesh.config.cjs',
  'mesh.config.json',
  '.meshrc',
  '.meshrc.json',
  '.meshrc.yaml',
  '.meshrc.yml',
  'package.json',
] as const

export interface LoadConfigOptions {
  env: ConfigEnv
  /** The project directory searched for a config. @default process.cwd() */
  cwd?: string
  /** An explicit config file (the CLI's `--config`); no search then. */
  configFile?: string
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

/** What loading a config module produced, before validation. */
export interface ConfigModule {
  value: unknown
  dependencies: string[]
}

const BOX = Symbol('meshkit.loaded')
type Boxed = { [BOX]: ConfigModule }

function locate(message: Message, cwd: string): string {
  const loc = message.location
  if (!loc) return message.text
  const file = isAbsolute(loc.file) ? relative(cwd, loc.file) : loc.file
  return `${message.text} (at ${file}:${loc.line}:${loc.column + 1})\n    ${loc.lineText}`
}

/** Gives every bundled local file its own import.meta.url, __dirname and __filename. */
function injectFileUrls(): Plugin {
  return {
    name: 'meshkit-inject-file-urls',
    setup(build) {
      build.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
        const { readFile } = await import('node:fs/promises')
        const contents = await readFile(args.path, 'utf8')
        const loader = args.path.endsWith('ts') ? 'ts' : 'js'
        const header =
          `const __meshkit_url = ${JSON.stringify(pathToFileURL(args.path).href)};` +
          `const __meshkit_dirname = ${JSON.stringify(dirname(args.path))};` +
          `const __meshkit_filename = ${JSON.stringify(args.path)};`
        return { contents: `${header}${contents}`, loader }
      })
    },
  }
}

/**
 * Loads a JS/TS config module fresh: bundles its local imports with esbuild (packages stay external),
 * writes the result next to the config under a unique name, imports it, and deletes it. No module
 * cache can serve a stale copy, and the bundle's inputs are the files to watch.
 */
export async function importConfigModule(file: string): Promise<ConfigModule> {
  const { build } = await import('esbuild')
  const dir = dirname(file)
  process.setSourceMapsEnabled(true)
  let code: string
  let dependencies: string[]
  try {
    const result = await build({
      entryPoints: [file],
      absWorkingDir: dir,
      bundle: true,
      write: false,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      packages: 'external',
      metafile: true,
      sourcemap: 'inline',
      logLevel: 'silent',
      define: {
        'import.meta.url': '__meshkit_url',
        __dirname: '__meshkit_dirname',
        __filename: '__meshkit_filename',
      },
      banner: {
        js: "import { createRequire as __meshkitCreateRequire } from 'node:module';const require = __meshkitCreateRequire(import.meta.url);",
      },
      plugins: [injectFileUrls()],
    })
    code = result.outputFiles[0].text
    dependencies = Object.keys(result.metafile.inputs).map((input) => resolve(dir, input))
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors
    const reason = errors?.length ? errors.map((m) => locate(m, dir)).join('\n  ') : reasonOf(err)
    throw meshError('MESH_ERR_CONFIG_LOAD', [relative(process.cwd(), file) || file, reason], { cause: err })
  }
  const temp = `${file}.timestamp-${Date.now()}-${randomBytes(4).toString('hex')}.mjs`
  try {
    await writeFile(temp, code)
    const mod = (await import(pathToFileURL(temp).href)) as { default?: unknown }
    return { value: 'default' in mod ? mod.default : mod, dependencies }
  } catch (err) {
    throw meshError('MESH_ERR_CONFIG_LOAD', [relative(process.cwd(), file) || file, reasonOf(err)], {
      cause: err,
    })
  } finally {
    await unlink(temp).catch(() => {})
  }
}

const scriptLoader: Loader = async (filepath) =>
  ({ [BOX]: await importConfigModule(filepath) }) satisfies Boxed

function unbox(config: unknown, filepath: string): ConfigModule {
  if (config && typeof config === 'object' && BOX in config) return (config as Boxed)[BOX]
  return { value: config, dependencies: [filepath] }
}

function explorer() {
  return cosmiconfig('mesh', {
    searchPlaces: [...CONFIG_SEARCH_PLACES],
    searchStrategy: 'none',
    cache: false,
    loaders: {
      '.ts': scriptLoader,
      '.mts': scriptLoader,
      '.js': scriptLoader,
      '.mjs': scriptLoader,
      '.cjs': scriptLoader,
    },
  })
}

/** Finds (or takes) the config file and loads its raw export, fresh. Undefined when none exists. */
export async function findConfigModule(
  options: Pick<LoadConfigOptions, 'cwd' | 'configFile'>,
): Promise<(ConfigModule & { file: string }) | undefined> {
  const cwd = options.cwd ?? process.cwd()
  try {
    if (options.configFile) {
      const file = resolve(cwd, options.configFile)
      if (!existsSync(file)) throw meshError('MESH_ERR_CONFIG_NOT_FOUND', [file])
      const result = await explorer().load(file)
      return { ...unbox(result?.config, file), file }
    }
    const result = await explorer().search(cwd)
    if (!result) return undefined
    return { ...unbox(result.config, result.filepath), file: result.filepath }
  } catch (err) {
    if (isMeshError(err)) throw err
    const file = options.configFile ?? cwd
    throw meshError('MESH_ERR_CONFIG_LOAD', [file, reasonOf(err)], { cause: err })
  }
}

/**
 * Finds, loads (fresh, following local imports), calls (if a function) and validates the config.
 * Throws coded MeshErrors for every user mistake.
 */
export async function loadConfig(options: LoadConfigOptions): Promise<LoadedConfig> {
  const cwd = options.cwd ?? process.cwd()
  const found = await findConfigModule(options)
  const file = found?.file
  const label = file ? relative(cwd, file) || file : 'the default config'
  let raw: unknown = found ? found.value : {}
  if (typeof raw === 'function') {
    try {
      raw = await (raw as (env: ConfigEnv) => unknown)(options.env)
    } catch (err) {
      throw meshError('MESH_ERR_CONFIG_LOAD', [label, `its config function threw: ${reasonOf(err)}`], {
        cause: err,
      })
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw meshError('MESH_ERR_CONFIG_NOT_OBJECT', [label, describeValue(raw)])
  }
  const merged = { ...(raw as MeshConfig), ...stripUndefined(options.overrides ?? {}) }
  const config = resolveConfig(merged, {
    env: options.env,
    root: file ? dirname(file) : cwd,
    file: label,
    registry: options.registry,
    defaults: options.defaults,
  })
  return { config, file, dependencies: found?.dependencies ?? [] }
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
