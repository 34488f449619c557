/**
 * `mesh init`: scaffoldProject() (names, dotfiles, non-empty dirs, --force, unknown templates, the
 * install step), the real `mesh init` process, and generated projects end to end against an
 * `npm pack` tarball of this package: the chat template (two processes talk over loopback), the
 * plugin template (its own tests and build), basic + relay (`mesh start` in local mode, a basic node
 * finds another through the relay).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { isMeshError } from 'meshkit'
import {
  defaultMeshkitSpec,
  listTemplates,
  meshkitVersion,
  packageNameProblems,
  projectFileName,
  scaffoldProject,
  suggestPackageName,
  systemNodeVersion,
  templatesDir,
  versionAtLeast,
} from '../src/init/index.js'
import { hasStackTrace, runCliProcess } from './cli-helpers.js'
import { tempDir } from './helpers.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string })
  .version
const ESC = '\u001b['

/** Every file under `dir`, relative, sorted. */
async function filesUnder(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${e.name}` : e.name
    if (e.isDirectory()) out.push(...(await filesUnder(dir, path)))
    else out.push(path)
  }
  return out.sort()
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection')
    },
    (err: unknown) => err,
  )
}

describe('mesh init', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-init-'))
  })
  afterEach(async () => {
    await cleanup()
  })

  describe('scaffoldProject()', () => {
    /** A published meshkit's spec and a system Node too old (the pin): what most tests here look at. */
    const scaffold = (o: Parameters<typeof scaffoldProject>[0]) =>
      scaffoldProject({ meshkit: `^${VERSION}`, systemNode: '20.19.0', ...o })

    it('lists the five templates, basic first', () => {
      expect(listTemplates()).to.deep.equal(['basic', 'relay', 'nat', 'chat', 'plugin'])
      expect(meshkitVersion()).to.equal(VERSION)
    })

    it('meshkit dependency: ^version as an installed package; a checkout packs itself into vendor/', async () => {
      expect(defaultMeshkitSpec('/srv/app/node_modules/meshkit')).to.equal(`^${VERSION}`)
      expect(defaultMeshkitSpec(REPO_ROOT), 'a checkout: no registry version to point at').to.equal(undefined)
      const result = await scaffoldProject({
        dir: 'vendored',
        cwd: dir,
        install: false,
        systemNode: '20.19.0',
      })
      const pkg = JSON.parse(await readFile(join(result.dir, 'package.json'), 'utf8'))
      expect(pkg.dependencies.meshkit).to.equal(`file:vendor/meshkit-${VERSION}.tgz`)
      expect(existsSync(join(result.dir, 'vendor', `meshkit-${VERSION}.tgz`))).to.equal(true)
      expect(result.files).to.include(`vendor/meshkit-${VERSION}.tgz`)
      expect(JSON.stringify(pkg), 'no absolute path').not.to.include(REPO_ROOT)
    })

    it('Node: pinned (devDependency node ^24) only when the system Node is too old; else engines + .nvmrc', async () => {
      const old = await scaffold({ dir: 'on-node-20', cwd: dir, install: false, systemNode: '20.19.0' })
      const oldPkg = JSON.parse(await readFile(join(old.dir, 'package.json'), 'utf8'))
      expect(oldPkg.devDependencies.node).to.equal('^24')
      expect(existsSync(join(old.dir, '.nvmrc'))).to.equal(false)
      const fresh = await scaffold({ dir: 'on-node-24', cwd: dir, install: false, systemNode: '24.3.0' })
      const freshPkg = JSON.parse(await readFile(join(fresh.dir, 'package.json'), 'utf8'))
      expect(freshPkg.devDependencies.node, 'no pinned Node').to.equal(undefined)
      expect(freshPkg.engines.node).to.equal('>=22.15')
      expect(await readFile(join(fresh.dir, '.nvmrc'), 'utf8')).to.equal('24\n')
      expect(fresh.files).to.include('.nvmrc')
      expect(versionAtLeast('22.14.9', '22.15')).to.equal(false)
      expect(versionAtLeast('22.15.0', '22.15')).to.equal(true)
      expect(versionAtLeast('v23.0.1', '22.15')).to.equal(true)
    })

    it('system Node: the first node on PATH outside node_modules that answers; a node that cannot be asked pins Node 24', async () => {
      const fake = async (name: string, script: string) => {
        const bin = join(dir, 'fake-path', name)
        await mkdir(bin, { recursive: true })
        await writeFile(join(bin, 'node'), `#!/bin/sh\n${script}\n`, { mode: 0o755 })
        return bin
      }
      const garbage = await fake('garbage', 'echo "Segmentation fault"')
      const failing = await fake('failing', 'exit 1')
      const pinned = await fake(join('proj', 'node_modules', '.bin'), 'echo 24.11.0')
      const system = await fake('system', 'echo 22.16.0')
      const path = (...dirs: string[]) => ({ PATH: dirs.join(delimiter) })
      expect(
        systemNodeVersion(path(pinned, garbage, failing, system)),
        'skips node_modules and non-answers',
      ).to.equal('22.16.0')
      expect(systemNodeVersion(path(garbage, failing)), 'a node is there but says no version').to.equal(
        undefined,
      )
      expect(systemNodeVersion(path(join(dir, 'no-such-dir'))), 'no other node: this one').to.equal(
        process.versions.node,
      )
      // scaffoldProject() without a systemNode option asks PATH: could not tell -> pinned, no .nvmrc
      const saved = process.env.PATH
      process.env.PATH = garbage
      try {
        const unknown = await scaffoldProject({
          meshkit: `^${VERSION}`,
          dir: 'on-unknown-node',
          cwd: dir,
          install: false,
        })
        const pkg = JSON.parse(await readFile(join(unknown.dir, 'package.json'), 'utf8'))
        expect(pkg.devDependencies.node).to.equal('^24')
        expect(existsSync(join(unknown.dir, '.nvmrc'))).to.equal(false)
      } finally {
        process.env.PATH = saved
      }
    })

    it('copies a template: package name from the directory, meshkit dependency set, dotfiles renamed', async () => {
      const result = await scaffold({ dir: 'my-node', cwd: dir, install: false })
      const project = join(dir, 'my-node')
      expect(result).to.deep.include({
        dir: project,
        template: 'basic',
        packageName: 'my-node',
        installed: false,
      })
      expect(result.files).to.include.members(['.gitignore', 'README.md', 'mesh.config.ts', 'package.json'])
      expect(result.files).not.to.include('_gitignore')
      expect(await filesUnder(project)).to.deep.equal(result.files)
      expect(await readFile(join(project, '.gitignore'), 'utf8')).to.match(/^node_modules\/$/m)
      // config bundles that older Meshkit versions left beside the config (none are written now)
      expect(await readFile(join(project, '.gitignore'), 'utf8')).to.match(/^\*\.timestamp-\*\.mjs$/m)
      const pkg = JSON.parse(await readFile(join(project, 'package.json'), 'utf8'))
      expect(pkg.name).to.equal('my-node')
      expect(pkg.dependencies).to.deep.equal({ meshkit: `^${VERSION}` })
      expect(pkg.devDependencies.node, 'Node 24 pinned for npm scripts').to.equal('^24')
      expect(result.nextSteps).to.deep.equal(['cd my-node', 'npm install', 'npx mesh start'])
    })

    it('every template: files equal the template (dotfiles renamed), package.json changed only in name and meshkit', async () => {
      for (const template of listTemplates()) {
        const source = join(templatesDir(), template)
        const result = await scaffold({ dir: `t-${template}`, cwd: dir, template, install: false })
        const expected = (await filesUnder(source))
          .map((f) =>
            f
              .split('/')
              .map((p, i, all) => (i === all.length - 1 ? projectFileName(p) : p))
              .join('/'),
          )
          .sort()
        expect(result.files, template).to.deep.equal(expected)
        for (const file of await filesUnder(source)) {
          const target = join(result.dir, dirname(file), projectFileName(file.split('/').at(-1)!))
          if (file === 'package.json') continue
          expect(await readFile(target, 'utf8'), `${template}/${file}`).to.equal(
            await readFile(join(source, file), 'utf8'),
          )
        }
        const original = JSON.parse(await readFile(join(source, 'package.json'), 'utf8'))
        const written = JSON.parse(await readFile(join(result.dir, 'package.json'), 'utf8'))
        expect(written.name).to.equal(`t-${template}`)
        for (const field of ['dependencies', 'devDependencies', 'peerDependencies']) {
          if (original[field]?.meshkit) original[field].meshkit = `^${VERSION}`
        }
        expect(written, template).to.deep.equal({ ...original, name: `t-${template}` })
        expect(written.devDependencies.node, `${template}: Node 24 pinned`).to.equal('^24')
      }
    })

    it("template plugins import only 'meshkit/plugin' and their own files, like the built-ins", async () => {
      const files = [
        ...(await filesUnder(join(templatesDir(), 'plugin', 'src'))).map((f) => join('plugin', 'src', f)),
        ...(await filesUnder(join(templatesDir(), 'chat', 'plugins'))).map((f) => join('chat', 'plugins', f)),
      ]
      expect(files).to.include.members(['plugin/src/index.ts', 'chat/plugins/chat.ts'])
      for (const file of files) {
        const text = await readFile(join(templatesDir(), file), 'utf8')
        const specs = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm)].map(
          (m) => m[1],
        )
        expect(specs, file).to.include('meshkit/plugin')
        for (const spec of specs) expect(spec, `${file} imports ${spec}`).to.match(/^(meshkit\/plugin$|\.\/)/)
      }
    })

    it('refuses a non-empty directory, naming what is in it, and leaves it untouched', async () => {
      const project = join(dir, 'busy')
      await mkdir(project)
      await writeFile(join(project, 'notes.txt'), 'mine')
      const err = await rejection(scaffold({ dir: project, install: false }))
      expect(isMeshError(err, 'MESH_ERR_INIT_DIR_NOT_EMPTY'), String(err)).to.equal(true)
      expect((err as Error).message).to.contain('notes.txt')
      expect(isMeshError(err) && err.userError && err.hint).to.match(/--force/)
      expect(await readdir(project)).to.deep.equal(['notes.txt'])
    })

    it('with force writes into a non-empty directory: template files overwritten, others kept', async () => {
      const project = join(dir, 'busy')
      await mkdir(project)
      await writeFile(join(project, 'notes.txt'), 'mine')
      await writeFile(join(project, 'README.md'), 'old readme')
      await scaffold({ dir: project, force: true, install: false })
      expect(await readFile(join(project, 'notes.txt'), 'utf8')).to.equal('mine')
      expect(await readFile(join(project, 'README.md'), 'utf8')).to.equal(
        await readFile(join(templatesDir(), 'basic', 'README.md'), 'utf8'),
      )
      expect(existsSync(join(project, 'mesh.config.ts'))).to.equal(true)
    })

    it('counts a directory holding only .git as empty', async () => {
      const project = join(dir, 'repo')
      await mkdir(join(project, '.git'), { recursive: true })
      const result = await scaffold({ dir: project, install: false })
      expect(result.files).to.include('mesh.config.ts')
    })

    it('rejects a directory name that is no npm package name, suggesting one; --name overrides it', async () => {
      const err = await rejection(scaffold({ dir: 'My App', cwd: dir, install: false }))
      expect(isMeshError(err, 'MESH_ERR_INIT_BAD_NAME'), String(err)).to.equal(true)
      expect((err as Error).message).to.contain('"My App" cannot be an npm package name')
      expect((err as Error).message).to.contain('uppercase')
      expect(isMeshError(err) && err.hint).to.contain('my-app')
      expect(existsSync(join(dir, 'My App')), 'nothing created').to.equal(false)

      const named = await scaffold({ dir: 'My App', cwd: dir, packageName: 'my-app', install: false })
      expect(named.packageName).to.equal('my-app')
      expect(named.nextSteps[0]).to.equal('cd "My App"')
      const bad = await rejection(scaffold({ dir: 'x', cwd: dir, packageName: 'Bad Name', install: false }))
      expect(isMeshError(bad, 'MESH_ERR_INIT_BAD_NAME')).to.equal(true)
    })

    it('validates package names like npm does', () => {
      for (const ok of ['my-app', 'a.b_c-1', '@scope/my-app', 'x'.repeat(214)]) {
        expect(packageNameProblems(ok), ok).to.deep.equal([])
      }
      const bad: Array<[string, RegExp]> = [
        ['', /empty/],
        ['.hidden', /starts with/],
        ['_private', /starts with/],
        ['Upper', /uppercase/],
        ['has space', /spaces/],
        ['http', /core module/],
        ['node_modules', /reserved/],
        ['a/b', /"\/"/],
        ['wow!', /~'!\(\)\*/],
        ['x'.repeat(215), /longer than 214/],
        ['caf\u00e9', /URL-safe/],
      ]
      for (const [name, problem] of bad) {
        expect(packageNameProblems(name).join('; '), name).to.match(problem)
      }
      expect(suggestPackageName('My Cool App!')).to.equal('my-cool-app')
      expect(suggestPackageName('http')).to.equal('http-app')
      expect(suggestPackageName('...')).to.equal('meshkit-app')
    })

    it('an unknown template is an error listing the available ones', async () => {
      const err = await rejection(scaffold({ dir: 'x', cwd: dir, template: 'chatt', install: false }))
      expect(isMeshError(err, 'MESH_ERR_INIT_UNKNOWN_TEMPLATE'), String(err)).to.equal(true)
      expect((err as Error).message).to.equal(
        "There is no template 'chatt'. Available templates: basic, relay, nat, chat, plugin.",
      )
      expect(existsSync(join(dir, 'x'))).to.equal(false)
    })

    it('runs the install unless install: false', async () => {
      const calls: string[] = []
      const installer = async (d: string) => {
        calls.push(d)
      }
      const a = await scaffold({ dir: 'a', cwd: dir, installer })
      expect(calls).to.deep.equal([join(dir, 'a')])
      expect(a.installed).to.equal(true)
      expect(a.nextSteps).to.deep.equal(['cd a', 'npx mesh start'])
      const b = await scaffold({ dir: 'b', cwd: dir, installer, install: false })
      expect(calls, 'not called again').to.have.length(1)
      expect(b.installed).to.equal(false)
      expect(existsSync(join(dir, 'b', 'node_modules'))).to.equal(false)
    })

    it('meshkit: a local spec for the dependency, while the peer dependency stays a range', async () => {
      await writeFile(join(dir, 'meshkit.tgz'), '')
      const r = await scaffold({
        dir: 'p',
        cwd: dir,
        template: 'plugin',
        install: false,
        meshkit: 'file:../meshkit.tgz',
      })
      const pkg = JSON.parse(await readFile(join(r.dir, 'package.json'), 'utf8'))
      expect(pkg.devDependencies.meshkit).to.equal('file:../meshkit.tgz')
      expect(pkg.peerDependencies.meshkit).to.equal(`^${VERSION}`)
    })

    it('meshkit: a file: spec that points nowhere is refused before anything is written', async () => {
      const err = await scaffold({
        dir: 'q',
        cwd: dir,
        install: false,
        meshkit: 'file:/nonexistent/mk',
      }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err) && err.code, String(err)).to.equal('MESH_ERR_INVALID_ARGUMENT')
      expect((err as Error).message).to.include('/nonexistent/mk does not exist')
      expect(existsSync(join(dir, 'q'))).to.equal(false)
    })
  })

  describe('the mesh init process', function () {
    this.timeout(60_000)

    it('--no-install: creates the project, prints next steps as plain lines, runs no npm', async () => {
      const r = await runCliProcess(
        ['init', 'app', '--template', 'relay', '--no-install', '--meshkit', `^${VERSION}`],
        { cwd: dir },
      )
      expect(r.code, r.stderr).to.equal(0)
      expect(r.stdout).to.contain(`✔ Created app from the relay template in ${join(dir, 'app')}`)
      expect(r.stdout).to.match(/Next steps:\n {2}cd app\n {2}npm install\n {2}npx mesh start\n/)
      expect(r.stdout, 'no colours when not a TTY').not.to.contain(ESC)
      expect(r.stdout).not.to.contain('installing')
      // .nvmrc where the system Node is new enough (else Node 24 is pinned in package.json)
      expect((await readdir(join(dir, 'app'))).filter((f) => f !== '.nvmrc')).to.have.members([
        '.gitignore',
        'README.md',
        'mesh.config.ts',
        'package.json',
        'tsconfig.json',
      ])
    })

    it('user errors exit 2 with a coded message and no stack trace; --force then succeeds', async () => {
      const unknown = await runCliProcess(
        ['init', 'x', '--template', 'nope', '--no-install', '--meshkit', `^${VERSION}`],
        {
          cwd: dir,
        },
      )
      expect(unknown.code, unknown.stderr).to.equal(2)
      expect(unknown.stderr).to.contain(
        "MESH_ERR_INIT_UNKNOWN_TEMPLATE: There is no template 'nope'. Available templates: basic, relay, nat, chat, plugin.",
      )
      expect(hasStackTrace(unknown.stderr), unknown.stderr).to.equal(false)

      const bad = await runCliProcess(['init', 'Bad_Name', '--no-install', '--meshkit', `^${VERSION}`], {
        cwd: dir,
      })
      expect(bad.code, bad.stderr).to.equal(2)
      expect(bad.stderr).to.contain('MESH_ERR_INIT_BAD_NAME')
      expect(bad.stderr).to.contain('bad_name')

      await mkdir(join(dir, 'busy'))
      await writeFile(join(dir, 'busy', 'keep.txt'), 'x')
      const busy = await runCliProcess(['init', 'busy', '--no-install', '--meshkit', `^${VERSION}`], {
        cwd: dir,
      })
      expect(busy.code, busy.stderr).to.equal(2)
      expect(busy.stderr).to.contain('MESH_ERR_INIT_DIR_NOT_EMPTY')
      expect(busy.stderr).to.contain('keep.txt')
      const forced = await runCliProcess(
        ['init', 'busy', '--no-install', '--force', '--meshkit', `^${VERSION}`],
        {
          cwd: dir,
        },
      )
      expect(forced.code, forced.stderr).to.equal(0)
      expect(existsSync(join(dir, 'busy', 'keep.txt'))).to.equal(true)
      expect(existsSync(join(dir, 'busy', 'mesh.config.ts'))).to.equal(true)
    })

    it('without --no-install runs npm install; its failure is a clear error (exit 2)', async () => {
      // a meshkit "tarball" that is not one: npm fails quickly, before downloading anything
      await writeFile(join(dir, 'broken.tgz'), 'not a tarball')
      const r = await runCliProcess(['init', 'app', '--meshkit', `file:${join(dir, 'broken.tgz')}`], {
        cwd: dir,
        timeoutMs: 50_000,
        env: { npm_config_prefer_offline: 'true' },
      })
      expect(r.code, r.stdout + r.stderr).to.equal(2)
      expect(r.stdout).to.contain('… installing dependencies (npm install)')
      expect(r.stdout).to.contain('✖ npm install failed')
      expect(r.stderr).to.contain('MESH_ERR_INIT_INSTALL_FAILED')
      expect(r.stderr).to.contain('TAR_BAD_ARCHIVE')
      expect(hasStackTrace(r.stderr), r.stderr).to.equal(false)
      expect(existsSync(join(dir, 'app', 'mesh.config.ts')), 'the project stays').to.equal(true)
    })
  })
})

/** A child process (own process group) with its output collected line by line. */
class Proc {
  readonly child: ChildProcess
  readonly lines: string[] = []
  exit?: { code: number | null; signal: NodeJS.Signals | null }
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  #wake = new Set<() => void>()

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    options: { cwd: string; env?: NodeJS.ProcessEnv; stdin?: boolean },
  ) {
    this.child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, DEBUG: undefined, NODE_OPTIONS: undefined, ...options.env },
      stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      detached: true,
    })
    live.add(this)
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      let rest = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => {
        const parts = (rest + chunk).split('\n')
        rest = parts.pop() ?? ''
        this.lines.push(...parts)
        for (const w of [...this.#wake]) w()
      })
      stream.on('end', () => {
        if (rest) this.lines.push(rest)
      })
    }
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal }
        live.delete(this)
        for (const w of [...this.#wake]) w()
        resolve(this.exit)
      })
      this.child.once('error', (err) => {
        this.lines.push(`(spawn error: ${err.message})`)
        this.exit = { code: null, signal: null }
        live.delete(this)
        resolve(this.exit)
      })
    })
  }

  get output(): string {
    return this.lines.join('\n')
  }

  describe(): string {
    return `${this.name}: exit ${JSON.stringify(this.exit ?? 'running')}\n    ${this.lines.slice(-40).join('\n    ')}`
  }

  /** The first line matching `pattern`, waited for at most `timeoutMs`. */
  waitFor(pattern: RegExp | ((line: string) => boolean), timeoutMs: number): Promise<string> {
    const test = typeof pattern === 'function' ? pattern : (l: string) => pattern.test(l)
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.lines.find(test)
        if (line !== undefined) done(() => resolve(line))
        else if (this.exit) done(() => reject(new Error(`exited before ${pattern}\n${this.describe()}`)))
      }
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}\n${this.describe()}`)),
          ),
        timeoutMs,
      )
      const done = (f: () => void) => {
        clearTimeout(timer)
        this.#wake.delete(check)
        f()
      }
      this.#wake.add(check)
      check()
    })
  }

  /** The first JSON line (a `mesh start --json` event) matching `predicate`. */
  async waitForEvent(predicate: (e: Record<string, unknown>) => boolean, timeoutMs: number) {
    const parse = (l: string): Record<string, unknown> | undefined => {
      try {
        return l.startsWith('{') ? (JSON.parse(l) as Record<string, unknown>) : undefined
      } catch {
        return undefined
      }
    }
    const matches = (l: string) => {
      const e = parse(l)
      return e !== undefined && predicate(e)
    }
    return parse(await this.waitFor(matches, timeoutMs))!
  }

  async waitForExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no exit within ${timeoutMs} ms\n${this.describe()}`)),
        timeoutMs,
      )
    })
    try {
      return await Promise.race([this.exited, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Kills the whole process group (npm, its shell and node), bounded. */
  async kill(): Promise<void> {
    if (this.exit || this.child.pid === undefined) return
    try {
      process.kill(-this.child.pid, 'SIGKILL')
    } catch {
      // already gone
    }
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000).unref())])
  }
}

const live = new Set<Proc>()

/** Runs a command to completion (killed after `timeoutMs`); resolves with its exit code and output. */
async function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number | null; output: string }> {
  const p = new Proc(`${command} ${args.join(' ')}`, command, args, options)
  try {
    const exit = await p.waitForExit(options.timeoutMs)
    return { code: exit.code, output: p.output }
  } finally {
    await p.kill()
  }
}

/** npm settings for the e2e installs: the cache is warm, no audit/fund requests. */
const NPM_ENV = { npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' }

describe('generated projects, end to end against an npm pack tarball', function () {
  this.timeout(180_000)
  let work: string
  let cleanupWork: () => Promise<void>
  let tarball: string
  const MESH = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js')

  before(async () => {
    ;({ dir: work, cleanup: cleanupWork } = await tempDir('meshkit-init-e2e-'))
    // the tests run after the build: dist/ is what the tarball carries
    expect(existsSync(MESH), 'dist/ is built').to.equal(true)
    const packed = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', work], {
      cwd: REPO_ROOT,
      timeoutMs: 60_000,
    })
    expect(packed.code, packed.output).to.equal(0)
    const name = (await readdir(work)).find((f) => f.endsWith('.tgz'))
    expect(name, packed.output).to.be.a('string')
    tarball = join(work, name!)
  })
  afterEach(async () => {
    await Promise.all([...live].map((p) => p.kill()))
  })
  after(async () => {
    await Promise.all([...live].map((p) => p.kill()))
    await cleanupWork?.()
  })

  /** `mesh init` (the repository's CLI) in the work dir; exit 0 expected. */
  async function init(args: string[], timeoutMs: number): Promise<string> {
    const r = await run(process.execPath, [MESH, 'init', ...args], { cwd: work, env: NPM_ENV, timeoutMs })
    expect(r.code, r.output).to.equal(0)
    return r.output
  }

  it('chat: mesh init installs it; two chat processes talk to each other over loopback', async () => {
    const t0 = Date.now()
    const out = await init(['chat-app', '--template', 'chat', '--meshkit', `file:${tarball}`], 150_000)
    const project = join(work, 'chat-app')
    expect(out).to.match(/✔ dependencies installed \(/)
    expect(out).to.contain('npm run chat:local -- --name alice')
    expect(existsSync(join(project, 'node_modules', 'meshkit', 'dist', 'src', 'index.js'))).to.equal(true)
    expect(existsSync(join(project, '.gitignore'))).to.equal(true)
    console.log(`      mesh init + npm install: ${Date.now() - t0} ms`)

    const chat = (name: string, extra: string[] = []) =>
      new Proc(name, 'npm', ['run', 'chat:local', '--', '--name', name, ...extra], {
        cwd: project,
        env: NPM_ENV,
        stdin: true,
      })
    const alice = chat('alice')
    const hint = await alice.waitFor(/^others join with: /, 30_000)
    const address = /--dial (\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+)/.exec(hint)?.[1]
    expect(address, hint).to.be.a('string')
    const bob = chat('bob', ['--dial', address!])
    await Promise.all([
      alice.waitFor(/^\* \S+ joined #lobby$/, 30_000),
      bob.waitFor(/^\* \S+ joined #lobby$/, 30_000),
    ])

    try {
      alice.child.stdin!.write('hello from alice\n')
      await bob.waitFor(/^<alice> hello from alice$/, 15_000)
      bob.child.stdin!.write('hi alice, bob here\n')
      await alice.waitFor(/^<bob> hi alice, bob here$/, 15_000)
      bob.child.stdin!.write('/peers\n')
      const alicePeer = /peer (\w+)\)$/.exec(alice.lines.find((l) => l.startsWith('chatting as alice'))!)?.[1]
      await bob.waitFor(new RegExp(`^ {2}${alicePeer}$`), 10_000)
    } catch (err) {
      throw new Error(`${err instanceof Error ? err.message : err}\n${bob.describe()}`)
    }

    // end of input: each chat leaves cleanly
    alice.child.stdin!.end()
    bob.child.stdin!.end()
    for (const p of [alice, bob]) {
      const exit = await p.waitForExit(20_000)
      expect(exit.code, p.describe()).to.equal(0)
    }
  })

  it('plugin: npm install <tarball>; its own tests pass and it builds', async () => {
    await init(['my-plugin', '--template', 'plugin', '--no-install'], 30_000)
    const project = join(work, 'my-plugin')
    // The chat project has installed the same tarball with the same Node pin: start from a hard-linked
    // copy of its node_modules, so that npm has only the plugin's extra packages (typescript,
    // @types/node) to add; npm still checks and completes the whole tree against package.json.
    const shared = join(work, 'chat-app', 'node_modules')
    if (existsSync(join(shared, 'meshkit'))) {
      const copied = await run('cp', ['-al', shared, join(project, 'node_modules')], {
        cwd: work,
        timeoutMs: 60_000,
      })
      expect(copied.code, copied.output).to.equal(0)
    }
    const t0 = Date.now()
    const install = await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], {
      cwd: project,
      env: NPM_ENV,
      timeoutMs: 150_000,
    })
    expect(install.code, install.output).to.equal(0)
    console.log(`      npm install: ${Date.now() - t0} ms`)
    const test = await run('npm', ['test'], { cwd: project, env: NPM_ENV, timeoutMs: 90_000 })
    expect(test.code, test.output).to.equal(0)
    expect(test.output).to.match(/(# |ℹ )pass 4\b/)
    expect(test.output).to.match(/(# |ℹ )fail 0\b/)
    expect(test.output).to.contain('two nodes greet each other over /greeter/1.0.0')
    const build = await run('npm', ['run', 'build'], { cwd: project, env: NPM_ENV, timeoutMs: 60_000 })
    expect(build.code, build.output).to.equal(0)
    expect(existsSync(join(project, 'dist', 'index.js'))).to.equal(true)
    expect(await readFile(join(project, 'dist', 'index.d.ts'), 'utf8')).to.contain('GreeterApi')
  })

  it('basic + relay: `mesh start --mode local`; two basic nodes meet in their topic through the relay', async () => {
    await init(['relay-node', '--template', 'relay', '--no-install'], 30_000)
    await init(['basic-node', '--template', 'basic', '--no-install'], 30_000)
    // same dependencies as the chat project (meshkit from the tarball, Node 24): share its install
    let installed = join(work, 'chat-app', 'node_modules')
    if (!existsSync(join(installed, 'meshkit'))) {
      // the chat test did not install: install here
      const r = await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], {
        cwd: join(work, 'relay-node'),
        env: NPM_ENV,
        timeoutMs: 150_000,
      })
      expect(r.code, r.output).to.equal(0)
      installed = join(work, 'relay-node', 'node_modules')
    }
    for (const p of ['relay-node', 'basic-node']) {
      if (!existsSync(join(work, p, 'node_modules')))
        await symlink(installed, join(work, p, 'node_modules'), 'dir')
    }

    /** `npx mesh ...` as npm runs it: the project's node_modules/.bin (with Node 24) first on PATH. */
    const mesh = (name: string, project: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
      const bin = join(work, project, 'node_modules', '.bin')
      return new Proc(name, join(bin, 'mesh'), args, {
        cwd: join(work, project),
        env: { PATH: `${bin}:${process.env.PATH}`, ...env },
      })
    }
    const probe = 20_000 + Math.floor(Math.random() * 12_000)
    const relay = mesh('relay', 'relay-node', ['start', '--mode', 'local', '--json'], {
      PROBE_PORT: String(probe),
    })
    const started = await relay.waitForEvent((e) => e.event === 'started', 30_000)
    // the NAT probe server answers on its TCP port (127.0.0.1 in local mode)
    await new Promise<void>((resolve, reject) => {
      const socket = connect(probe, '127.0.0.1', () => {
        socket.destroy()
        resolve()
      })
      socket.once('error', reject)
      socket.setTimeout(5000, () => socket.destroy(new Error('probe port: no answer')))
    })
    const relayAddress = (started.addresses as string[]).find((a) => a.includes('/tcp/'))!
    expect(relayAddress).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)

    const basic = (name: string) =>
      mesh(name, 'basic-node', ['start', '--mode', 'local', '--json', '--data-dir', `.mesh/${name}`], {
        MESH_BOOTSTRAP: relayAddress,
      })
    const one = basic('one')
    const two = basic('two')
    const [idOne, idTwo] = await Promise.all(
      [one, two].map(async (p) => (await p.waitForEvent((e) => e.event === 'started', 30_000)).peerId),
    )
    const meets = (p: Proc, peer: unknown) =>
      p.waitForEvent(
        (e) => e.event === 'topic:peer' && e.topic === 'hello-meshkit' && e.peerId === peer,
        45_000,
      )
    await Promise.all([meets(one, idTwo), meets(two, idOne)])
    for (const p of [one, two, relay]) {
      process.kill(-p.child.pid!, 'SIGINT')
      const exit = await p.waitForExit(15_000)
      expect(exit.code, p.describe()).to.equal(0)
    }
  })
  it('the app templates type-check against the packed meshkit (tsc of the plugin project)', async function () {
    const tsc = join(work, 'my-plugin', 'node_modules', '.bin', 'tsc')
    if (!existsSync(tsc)) this.skip()
    for (const project of ['chat-app', 'relay-node', 'basic-node']) {
      if (!existsSync(join(work, project, 'node_modules'))) continue
      const r = await run(tsc, ['-p', 'tsconfig.json'], { cwd: join(work, project), timeoutMs: 60_000 })
      expect(r.code, `${project}: ${r.output}`).to.equal(0)
    }
  })
})
