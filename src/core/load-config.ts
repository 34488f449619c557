import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { cosmiconfig, defaultLoaders, type Loader } from 'cosmiconfig'
import type { Message, Plugin } from 'esbuild'
import { describeValue } from './config-problems.js'
import type { ConfigEnv, MeshConfig, ResolvedMeshConfig } from './config-types.js'
import { isMeshError, meshError, reasonOf } from './errors.js'
import { type PluginRegistry, resolveConfig } from './resolve-config.js'

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

/** How a file is named in messages: relative to `cwd` when inside it, else absolute. */
function labelFor(file: string, cwd: string): string {
  const rel = relative(cwd, file)
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file
}

/** A source line and a caret under `column` (0-based), indented for an error message. */
function excerpt(lineText: string, column: number): string {
  return `\n    ${lineText}\n    ${' '.repeat(Math.max(0, column))}^`
}

/**
 * What {@link injectFileUrls} puts in front of line 1 of a bundled file. It stays on line 1 so that
 * line numbers are unchanged; columns on line 1 are corrected by its length where they are reported.
 */
function fileHeader(path: string): string {
  return (
    `const __meshkit_url = ${JSON.stringify(pathToFileURL(path).href)};` +
    `const __meshkit_dirname = ${JSON.stringify(dirname(path))};` +
    `const __meshkit_filename = ${JSON.stringify(path)};`
  )
}

function locate(message: Message, dir: string, cwd: string): string {
  const loc = message.location
  if (!loc) return message.text
  const file = resolve(dir, loc.file)
  let { column, lineText } = loc
  const header = fileHeader(file)
  if (loc.line === 1 && lineText.startsWith(header)) {
    lineText = lineText.slice(header.length)
    column = Math.max(0, column - header.length)
  }
  return `${message.text} (at ${labelFor(file, cwd)}:${loc.line}:${column + 1})${excerpt(lineText, column)}`
}

/** Where in the config's own files (source-mapped) `err` was thrown, as `file:line:col`. */
function thrownAt(err: unknown, files: readonly string[], cwd: string): string | undefined {
  const stack = err instanceof Error && typeof err.stack === 'string' ? err.stack : ''
  for (const frame of stack.split('\n').slice(1)) {
    const match = /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/.exec(frame)
    if (!match) continue
    let file = match[1]
    if (file.startsWith('file://')) file = fileURLToPath(file)
    if (!files.includes(file)) continue
    const line = Number(match[2])
    let column = Number(match[3])
    const header = fileHeader(file).length
    if (line === 1 && column > header) column -= header
    return `${labelFor(file, cwd)}:${line}:${column}`
  }
  return undefined
}

/** Gives every bundled local file its own import.meta.url, __dirname and __filename. */
function injectFileUrls(): Plugin {
  return {
    name: 'meshkit-inject-file-urls',
    setup(build) {
      build.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
        const { readFile } = await import('node:fs/promises')
        let contents = await readFile(args.path, 'utf8')
        // A hashbang must come first; as a comment it keeps its length and its line.
        if (contents.startsWith('#!')) contents = `//${contents.slice(2)}`
        const loader = args.path.endsWith('ts') ? 'ts' : 'js'
        return { contents: `${fileHeader(args.path)}${contents}`, loader }
      })
    },
  }
}

/** The query that marks a config bundle's module URL: `file:///.../mesh.config.ts?meshkit-bundle=<nonce>`. */
const BUNDLE_QUERY = '?meshkit-bundle='
/** The code of each bundle being imported, by its module URL (removed once imported). */
const bundles = new Map<string, string>()
let hooksInstalled = false

/**
 * Installs (once per process) module hooks that serve config bundles from memory: a bundle's module URL
 * is its config file's URL plus `?meshkit-bundle=<nonce>` (a new module each load), so its imports
 * resolve from the config's directory exactly as imports written in the config file would (Node's own
 * algorithm: node_modules, `exports` conditions), and its source map is found by Node's stack traces,
 * but nothing is written to disk. Other modules are untouched.
 */
async function configHooks(label: string): Promise<void> {
  if (hooksInstalled) return
  const { registerHooks } = (await import('node:module')) as Partial<typeof import('node:module')>
  if (typeof registerHooks !== 'function')
    throw meshError(
      'MESH_ERR_CONFIG_LOAD',
      [
        label,
        `this Node.js (${process.version}) has no module.registerHooks(), which loading a JS/TS config needs`,
      ],
      { hint: 'Use Node.js 22.15 or later (or a JSON/YAML config).' },
    )
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (bundles.has(specifier)) return { url: specifier, format: 'module', shortCircuit: true }
      return nextResolve(specifier, context)
    },
    load(url, context, nextLoad) {
      const source = bundles.get(url)
      if (source !== undefined) return { format: 'module', source, shortCircuit: true }
      return nextLoad(url, context)
    },
  })
  hooksInstalled = true
}

/**
 * Loads a JS/TS config module fresh: bundles its local imports with esbuild (packages stay external)
 * and imports the bundle from memory (see {@link configHooks}) under the config's own URL plus a
 * unique query. Nothing is written to disk: a bundle holds every local file the config imports,
 * secrets too, so it must not land in a file that others may read or that a kill leaves behind, and a
 * read-only config directory works. Every load is a new module (no cache can serve a stale copy), the
 * bundle's imports resolve as they would from the config file, its inline source map names the
 * original files in stack traces, and the bundle's inputs are the files to watch.
 *
 * @param cwd The directory that file names in error messages are relative to. @default process.cwd()
 */
export async function importConfigModule(file: string, cwd = process.cwd()): Promise<ConfigModule> {
  const { build } = await import('esbuild')
  const dir = dirname(file)
  const label = labelFor(file, cwd)
  await configHooks(label)
  const fileUrl = pathToFileURL(file).href
  // unique per load: the URL is the module cache key, and every load must run afresh
  const url = `${fileUrl}${BUNDLE_QUERY}${randomBytes(8).toString('hex')}`
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
      // tsconfig `paths` may map 'meshkit' to sources (as in this repo): the kernel's own copy must be used
      external: ['meshkit', 'meshkit/*'],
      metafile: true,
      sourcemap: 'inline',
      logLevel: 'silent',
      define: {
        'import.meta.url': '__meshkit_url',
        'import.meta.dirname': '__meshkit_dirname',
        'import.meta.filename': '__meshkit_filename',
        __dirname: '__meshkit_dirname',
        __filename: '__meshkit_filename',
      },
      banner: {
        js:
          "import { createRequire as __meshkitCreateRequire } from 'node:module';" +
          `import * as __meshkit_self from ${JSON.stringify(url)};` +
          `const require = __meshkitCreateRequire(${JSON.stringify(fileUrl)});`,
      },
      // `export default promise` that rejects (e.g. an async IIFE) is awaited by loadConfig; marking it
      // handled before the module finishes keeps Node from crashing on an "unhandled" rejection first.
      footer: {
        js: "if (typeof __meshkit_self.default?.then === 'function') __meshkit_self.default.then(undefined, () => {});",
      },
      plugins: [injectFileUrls()],
    })
    code = result.outputFiles[0].text
    dependencies = Object.keys(result.metafile.inputs).map((input) => resolve(dir, input))
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors
    const reason = errors?.length ? errors.map((m) => locate(m, dir, cwd)).join('\n  ') : reasonOf(err)
    throw meshError('MESH_ERR_CONFIG_LOAD', [label, reason], { cause: err })
  }
  let mod: Record<string, unknown>
  bundles.set(url, code)
  try {
    mod = (await import(url)) as Record<string, unknown>
  } catch (err) {
    // The bundle's URL is an implementation detail: name the config file instead.
    const reason = reasonOf(err).replaceAll(url, fileUrl)
    const at = thrownAt(err, dependencies, cwd)
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec(reason)?.[1]
    throw meshError('MESH_ERR_CONFIG_LOAD', [label, at ? `${reason} (thrown at ${at})` : reason], {
      cause: err,
      hint: missing
        ? `Install the missing package (npm install ${missing}) or fix the import of '${missing}'.`
        : undefined,
    })
  } finally {
    bundles.delete(url)
  }
  if (!('default' in mod)) {
    const names = Object.keys(mod)
    throw meshError('MESH_ERR_CONFIG_NOT_OBJECT', [
      label,
      `nothing: it has no default export${names.length ? ` (only named exports: ${names.join(', ')})` : ''}`,
    ])
  }
  return { value: mod.default, dependencies }
}

/** JSON, with the file named and the position of a syntax error given as line:column. */
function jsonLoader(cwd: string): Loader {
  return (filepath, content) => {
    try {
      return keepNull(JSON.parse(content), filepath)
    } catch (err) {
      const message = reasonOf(err)
      // V8 may append the source around the error, over several lines: keep only the first part.
      const reason = message
        .split('\n')[0]
        .replace(/, (?:\.\.\.)?".*$/, '')
        .replace(/ in JSON at position \d+.*$/, '')
      const offset = /end of JSON input/.test(message)
        ? content.length
        : Number(/at position (\d+)/.exec(message)?.[1] ?? Number.NaN)
      let where = ''
      if (Number.isFinite(offset)) {
        const before = content.slice(0, offset).split(/\r?\n/)
        const line = before.length
        const column = before[line - 1].length
        const lineText = content.split(/\r?\n/)[line - 1] ?? ''
        where = ` (at ${labelFor(filepath, cwd)}:${line}:${column + 1})${excerpt(lineText, column)}`
      }
      throw meshError('MESH_ERR_CONFIG_LOAD', [labelFor(filepath, cwd), `invalid JSON: ${reason}${where}`], {
        cause: err,
        hint: 'Fix the JSON at the location shown (JSON allows no comments, no trailing commas, only double quotes).',
      })
    }
  }
}

/** YAML, with the file named (the parser's message has the line:column and an excerpt). */
function yamlLoader(cwd: string): Loader {
  return async (filepath, content) => {
    let value: unknown
    try {
      value = await defaultLoaders['.yaml'](filepath, content)
    } catch (err) {
      const reason = reasonOf(err).replace(/^YAML Error in [^\n]*:\n/, '')
      throw meshError('MESH_ERR_CONFIG_LOAD', [labelFor(filepath, cwd), `invalid YAML: ${reason}`], {
        cause: err,
        hint: 'Fix the YAML at the location shown.',
      })
    }
    return keepNull(value, filepath)
  }
}

/**
 * cosmiconfig skips a file whose content is `null` as if it did not exist, and would run the defaults;
 * a config file that says `null` is a mistake to report. (package.json is passed through: its `mesh`
 * field is picked later, and a package.json without one is no config.)
 */
function keepNull(value: unknown, filepath: string): unknown {
  if (value !== null || basename(filepath) === 'package.json') return value
  return { [BOX]: { value, dependencies: [filepath] } } satisfies Boxed
}

function unbox(config: unknown, filepath: string): ConfigModule {
  if (config && typeof config === 'object' && BOX in config) return (config as Boxed)[BOX]
  return { value: config, dependencies: [filepath] }
}

function explorer(cwd: string) {
  const scriptLoader: Loader = async (filepath) =>
    ({ [BOX]: await importConfigModule(filepath, cwd) }) satisfies Boxed
  const yaml = yamlLoader(cwd)
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
      '.json': jsonLoader(cwd),
      '.yaml': yaml,
      '.yml': yaml,
      noExt: yaml,
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
      const result = await explorer(cwd).load(file)
      return { ...unbox(result?.config, file), file }
    }
    const result = await explorer(cwd).search(cwd)
    if (!result) return undefined
    return { ...unbox(result.config, result.filepath), file: result.filepath }
  } catch (err) {
    if (isMeshError(err)) throw err
    // cosmiconfig puts the file it was reading on the error.
    const failed = (err as { filepath?: unknown }).filepath
    const file =
      typeof failed === 'string' ? failed : options.configFile ? resolve(cwd, options.configFile) : cwd
    throw meshError('MESH_ERR_CONFIG_LOAD', [labelFor(file, cwd), reasonOf(err)], { cause: err })
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
  const label = file ? labelFor(file, cwd) : 'the default config'
  let raw: unknown = found ? found.value : {}
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
    registry: options.registry,
    defaults: options.defaults,
  })
  // `file` names the config in messages; the resolved config carries the real path (or none).
  config.configFile = file
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
