import { existsSync, readFileSync } from 'node:fs'
import { copyFile, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { basename, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MeshError, makeDir, meshError } from 'meshkit'
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
   * local build. @default `^<this meshkit's version>`, or `file:<this checkout>` for an unpublished one
   */
  meshkit?: string
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

const meshkitRoot = () => fileURLToPath(new URL('../../../', import.meta.url))

function meshkitPackage(): { version: string; private?: boolean } {
  return JSON.parse(readFileSync(join(meshkitRoot(), 'package.json'), 'utf8')) as {
    version: string
    private?: boolean
  }
}

/** The version of this meshkit package. */
export function meshkitVersion(): string {
  return meshkitPackage().version
}

/**
 * The `meshkit` dependency a new project gets: `^<version>` when this meshkit is a published package,
 * or `file:<this checkout>` when it is an unpublished one (`"private": true`, e.g. a clone of the
 * repository), so that `mesh init` from a checkout gives a project that installs.
 */
export function defaultMeshkitSpec(): string {
  const pkg = meshkitPackage()
  return pkg.private ? `file:${meshkitRoot().replace(/\/$/, '')}` : `^${pkg.version}`
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
  if (!available.includes(template)) throw meshError('MESH_ERR_INIT_UNKNOWN_TEMPLATE', [template, available])

  const cwd = options.cwd ?? process.cwd()
  const dir = resolve(cwd, options.dir)
  const packageName = options.packageName ?? basename(dir)
  const problems = packageNameProblems(packageName)
  if (problems.length > 0) {
    const suggestion = options.packageName === undefined ? suggestPackageName(packageName) : undefined
    throw meshError('MESH_ERR_INIT_BAD_NAME', [packageName, problems, suggestion])
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
      throw meshError('MESH_ERR_INIT_DIR_NOT_EMPTY', [dir, entries.sort()])
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
    const spec = options.meshkit ?? defaultMeshkitSpec()
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
