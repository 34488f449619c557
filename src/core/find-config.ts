/**
 * Finding the config file (cosmiconfig, in {@link CONFIG_SEARCH_PLACES} order, or the one given) and
 * reading its raw export: JS/TS through importConfigModule, JSON and YAML with located syntax errors.
 */
import { existsSync } from 'node:fs'
import { basename, resolve } from 'node:path'
import { cosmiconfig, defaultLoaders, type Loader } from 'cosmiconfig'
import { excerpt, labelFor } from './config-locations.js'
import { isMeshError, meshError, reasonOf } from './errors.js'
import { type ConfigModule, importConfigModule } from './import-config-module.js'
import type { LoadConfigOptions } from './load-config.js'

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

const BOX = Symbol('meshkit.loaded')
type Boxed = { [BOX]: ConfigModule }

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
