/**
 * Loading a JS/TS config module fresh: bundled by esbuild (local imports followed, packages external)
 * and imported from memory through module hooks, under the config's own URL plus a unique query.
 */
import { randomBytes } from 'node:crypto'
import { dirname, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Message, Plugin } from 'esbuild'
import { excerpt, fileHeader, labelFor, thrownAt } from './config-locations.js'
import { meshError, reasonOf } from './errors.js'

/** What loading a config module produced, before validation. */
export interface ConfigModule {
  value: unknown
  dependencies: string[]
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
