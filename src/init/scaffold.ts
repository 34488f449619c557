import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { copyFile, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { basename, delimiter, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MeshError } from 'meshkit'
import { makeDir } from 'meshkit/plugin'
import { initError } from './errors.js'
import { installDependencies } from './install.js'
import { packageNameProblems, suggestPackageName } from './package-name.js'
import { listTemplates, templateInfo, templatesDir } from './templates.js'

export interface ScaffoldOptions {
  /** The project directory (created if missing), absolute or relative to `cwd`. */
  dir: string
  /** @default 'basic' */
  template?: string
  /** Write into a non-empty directory: files the template has are overwritten, the others kept. @default false */
  force?: boolean
  /** Run `npm install` in the new project. @default true */
  install?: boolean
  /** The package name. @default the directory's name (which must then be a valid npm package name) */
  packageName?: string
  /**
   * The version spec of the `meshkit` dependency: a range, or a tarball/folder (`file:...`) to try a
   * local build. @default `^<this meshkit's version>`; from a checkout of the repository, a tarball of it
   * packed into the project's `vendor/` (`file:vendor/meshkit-<version>.tgz`)
   */
  meshkit?: string
  /**
   * The system's Node.js version: when older than {@link MIN_NODE}, the project pins Node 24 as a
   * devDependency (npm scripts and `npx mesh` then run on it); otherwise it gets `engines` and `.nvmrc`.
   * @default {@link systemNodeVersion}()
   */
  systemNode?: string
  /** @default process.cwd() */
  cwd?: string
  /** Where the templates are. @default the package's `templates/` */
  templatesDir?: string
  /** Runs the install (tests replace it). @default {@link installDependencies} */
  installer?: (dir: string) => Promise<void>
}

export interface ScaffoldResult {
  /** The project directory (absolute). */
  dir: string
  template: string
  packageName: string
  /** Files written, relative to `dir`, dotfiles under their real names. */
  files: string[]
  installed: boolean
  /** Commands to run next, starting with `cd <dir>` when it is not the current directory. */
  nextSteps: string[]
}

/** Entries that never come from a template folder (left there by trying a template in place). */
const SKIPPED = new Set(['node_modules', '.mesh', 'dist', 'package-lock.json', '.git'])
/** Entries a target directory may hold and still count as empty. */
const IGNORED_IN_TARGET = new Set(['.git', '.DS_Store'])

const meshkitRoot = () => fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '')

function meshkitPackage(): { version: string } {
  return JSON.parse(readFileSync(join(meshkitRoot(), 'package.json'), 'utf8')) as { version: string }
}

/** The version of this meshkit package. */
export function meshkitVersion(): string {
  return meshkitPackage().version
}

/** Whether this meshkit runs as an installed package (inside a node_modules folder), not from a checkout. */
export function isInstalledPackage(root = meshkitRoot()): boolean {
  return root.split(sep).includes('node_modules')
}

/**
 * The `meshkit` dependency a new project gets by default: `^<version>` when this meshkit is an installed
 * package; undefined when it runs from a checkout of the repository, whose version may be on no registry
 * (then {@link scaffoldProject} packs the checkout into the project's `vendor/` folder and depends on
 * that tarball by a relative path: the project installs on any machine, in Docker or CI).
 */
export function defaultMeshkitSpec(root = meshkitRoot()): string | undefined {
  return isInstalledPackage(root) ? `^${meshkitPackage().version}` : undefined
}

/** Packs this checkout (`npm pack`, which builds it) into `<dir>/vendor/`; returns the relative `file:` spec. */
async function vendorCheckout(dir: string): Promise<string> {
  const vendor = join(dir, 'vendor')
  await makeDir(vendor)
  const output = await run('npm', ['pack', '--silent', '--pack-destination', vendor], meshkitRoot(), 180_000)
  const tarball = output.trim().split('\n').pop()?.trim()
  if (!tarball?.endsWith('.tgz') || !existsSync(join(vendor, tarball)))
    throw initError('MESH_ERR_INIT_INSTALL_FAILED', [
      dir,
      `npm pack of ${meshkitRoot()} gave no tarball: ${output.slice(-500)}`,
    ])
  return `file:vendor/${tarball}`
}

/** Runs a command to its end (bounded), resolving with its stdout. */
function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => {
      out = (out + c.toString('utf8')).slice(-20_000)
    })
    child.stderr.on('data', (c: Buffer) => {
      err = (err + c.toString('utf8')).slice(-20_000)
    })
    child.once('error', reject)
    child.once('close', (code) =>
      code === 0
        ? resolvePromise(out)
        : reject(new Error(`${command} ${args.join(' ')}: exit ${code}\n${err.slice(-2000)}`)),
    )
  })
}

/** The oldest Node.js a Meshkit project runs on (libp2p 3 and Meshkit's config loader). */
export const MIN_NODE = '22.15'

/** Whether version `a` (x.y.z) is at least `b`. */
export function versionAtLeast(a: string, b: string): boolean {
  const pa = a.replace(/^v/, '').split('.').map(Number)
  const pb = b.replace(/^v/, '').split('.').map(Number)
  for (let i = 0; i < 3; i++) {
    if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) > (pb[i] ?? 0)
  }
  return true
}

/**
 * The version of the system's Node.js: the first `node` on PATH outside any `node_modules/.bin` (a
 * project's pinned Node, as this repository's, is not the system's) that answers with a version, or
 * this process's when there is no other `node` on PATH. `undefined` when a `node` is there but none
 * answered with a version within 15 s each (a loaded machine): the caller cannot tell, and must not
 * guess this process's Node (a project's pinned Node 24 would pass for a system Node 20).
 */
export function systemNodeVersion(env: NodeJS.ProcessEnv = process.env): string | undefined {
  let found = false
  for (const entry of (env.PATH ?? '').split(delimiter)) {
    if (!entry || entry.split(sep).includes('node_modules')) continue
    const candidate = join(entry, process.platform === 'win32' ? 'node.exe' : 'node')
    if (!existsSync(candidate)) continue
    found = true
    try {
      const version = execFileSync(candidate, ['-p', 'process.versions.node'], {
        timeout: 15_000,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim()
      if (/^\d+\.\d+\.\d+/.test(version)) return version
    } catch {
      // not runnable (or too slow): look further
    }
  }
  return found ? undefined : process.versions.node
}

/**
 * A template file's name in the project: `_gitignore` becomes `.gitignore` (dotfiles are stored
 * with a `_` because npm drops or renames some of them, e.g. `.gitignore`, when it packs a package).
 */
export function projectFileName(templateName: string): string {
  return /^_[A-Za-z0-9]/.test(templateName) ? `.${templateName.slice(1)}` : templateName
}

/**
 * `mesh init` as a function: copies a template folder into `dir`, names the package after the
 * directory, points its `meshkit` dependency at this version and (unless `install: false`) runs
 * `npm install`. Refuses a non-empty directory unless `force`; an unknown template is an error that
 * lists the available ones.
 */
export async function scaffoldProject(options: ScaffoldOptions): Promise<ScaffoldResult> {
  const source = options.templatesDir ?? templatesDir()
  const template = options.template ?? 'basic'
  const available = listTemplates(source)
  if (!available.includes(template)) throw initError('MESH_ERR_INIT_UNKNOWN_TEMPLATE', [template, available])

  const cwd = options.cwd ?? process.cwd()
  const dir = resolve(cwd, options.dir)
  const packageName = options.packageName ?? basename(dir)
  const problems = packageNameProblems(packageName)
  if (problems.length > 0) {
    const suggestion = options.packageName === undefined ? suggestPackageName(packageName) : undefined
    throw initError('MESH_ERR_INIT_BAD_NAME', [packageName, problems, suggestion])
  }

  // npm installs a `file:` spec that points nowhere as a dangling link and says nothing: check it here
  const local = options.meshkit?.startsWith('file:') ? resolve(dir, options.meshkit.slice(5)) : undefined
  if (local && !existsSync(local)) {
    throw new MeshError(
      'MESH_ERR_INVALID_ARGUMENT',
      `--meshkit ${options.meshkit}: ${local} does not exist (a file: path is relative to the new project).`,
      { hint: 'Give the path of a Meshkit checkout or of a tarball made by `npm pack` in one.' },
    )
  }

  if (existsSync(dir)) {
    const info = await stat(dir)
    if (!info.isDirectory()) {
      throw new MeshError('MESH_ERR_INVALID_ARGUMENT', `${dir} exists and is not a directory.`, {
        hint: 'Pick a directory path for the new project.',
      })
    }
    const entries = (await readdir(dir)).filter((e) => !IGNORED_IN_TARGET.has(e))
    if (entries.length > 0 && !options.force) {
      throw initError('MESH_ERR_INIT_DIR_NOT_EMPTY', [dir, entries.sort()])
    }
  }

  const files: string[] = []
  const copy = async (from: string, to: string, rel: string): Promise<void> => {
    await makeDir(to)
    for (const entry of await readdir(from, { withFileTypes: true })) {
      if (SKIPPED.has(entry.name) || entry.name.includes('.timestamp-')) continue
      const name = entry.isDirectory() ? entry.name : projectFileName(entry.name)
      const target = join(to, name)
      const relTarget = rel ? `${rel}/${name}` : name
      if (entry.isDirectory()) await copy(join(from, entry.name), target, relTarget)
      else if (entry.isFile()) {
        await copyFile(join(from, entry.name), target)
        files.push(relTarget)
      }
    }
  }
  await copy(join(source, template), dir, '')

  const pkgFile = join(dir, 'package.json')
  if (existsSync(pkgFile)) {
    const pkg = JSON.parse(await readFile(pkgFile, 'utf8')) as Record<string, unknown>
    pkg.name = packageName
    const version = meshkitVersion()
    const spec = options.meshkit ?? defaultMeshkitSpec() ?? (await vendorCheckout(dir))
    if (spec.startsWith('file:vendor/')) files.push(spec.slice('file:'.length))
    // a template may need a newer Node than Meshkit itself (its own engines range stays)
    const engines = (pkg.engines as Record<string, string> | undefined) ?? {}
    pkg.engines = { ...engines, node: engines.node ?? `>=${MIN_NODE}` }
    const needs = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(engines.node ?? '')?.[1] ?? MIN_NODE
    // Node: pinned where the system's is too old or could not be told; else the project says what it
    // needs (a pinned Node runs everywhere, an .nvmrc only where that Node is installed)
    const systemNode = options.systemNode ?? systemNodeVersion()
    const dev = pkg.devDependencies as Record<string, string> | undefined
    if (systemNode !== undefined && versionAtLeast(systemNode, needs)) {
      if (dev) delete dev.node
      await writeFile(join(dir, '.nvmrc'), `${systemNode.split('.')[0]}\n`)
      files.push('.nvmrc')
    } else if (dev) dev.node = '^24'
    for (const field of ['dependencies', 'devDependencies'] as const) {
      const deps = pkg[field] as Record<string, string> | undefined
      if (deps && 'meshkit' in deps) deps.meshkit = spec
    }
    // a peer range must be a range, even when the project uses a local build
    const peers = pkg.peerDependencies as Record<string, string> | undefined
    if (peers && 'meshkit' in peers) peers.meshkit = /^[\^~<>=\d*]/.test(spec) ? spec : `^${version}`
    await writeFile(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`)
  }

  let installed = false
  if (options.install ?? true) {
    await (options.installer ?? installDependencies)(dir)
    installed = true
  }

  const rel = relative(cwd, dir)
  const nextSteps = [
    ...(rel === '' ? [] : [`cd ${/\s/.test(rel) ? JSON.stringify(rel) : rel}`]),
    ...(installed ? [] : ['npm install']),
    ...templateInfo(template).run,
  ]
  return { dir, template, packageName, files: files.sort(), installed, nextSteps }
}
