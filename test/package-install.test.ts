/**
 * The package as a user gets it, outside this repository: an `npm pack` tarball installed into an empty
 * directory, `npx meshkit init app` (the system's Node and npm: this repository's pinned Node 24 is
 * taken off PATH), the app installed against the tarball, then `npx mesh start` reaches `started`.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { delimiter, dirname, join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { tempDir } from './helpers.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string })
  .version

/**
 * PATH without this repository's folders and without any `node_modules` folder (another checkout's
 * pinned Node 24 on the PATH of the shell that ran the tests passed for the system's Node here, while
 * `mesh init`, which skips them, saw Node 20): the system's node and npm, as a user outside it has.
 */
const SYSTEM_PATH = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((entry) => !entry.startsWith(REPO_ROOT + sep) && entry !== REPO_ROOT)
  .filter((entry) => entry !== '' && !entry.split(sep).includes('node_modules'))
  .join(delimiter)

const ENV: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: SYSTEM_PATH,
  DEBUG: undefined,
  NODE_OPTIONS: undefined,
  // npm run ... from mocha would hand these down: a user's shell has none of them
  npm_config_prefix: undefined,
  npm_config_local_prefix: undefined,
  npm_package_json: undefined,
  INIT_CWD: undefined,
  npm_config_prefer_offline: 'true',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
}

interface Run {
  code: number | null
  output: string
}

const live = new Set<ChildProcess>()

/** Runs a command to its end (killed with its process group after `timeoutMs`). */
function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, env: ENV, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    live.add(child)
    let output = ''
    const collect = (c: Buffer) => {
      output = (output + c.toString('utf8')).slice(-40_000)
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    const timer = setTimeout(() => kill(child), timeoutMs)
    child.once('close', (code) => {
      clearTimeout(timer)
      live.delete(child)
      resolve({ code, output })
    })
  })
}

function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    if (child.pid) process.kill(-child.pid, signal)
  } catch {
    // already gone
  }
}

describe('the package, installed outside this repository', function () {
  this.timeout(300_000)
  let outside: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({ dir: outside, cleanup } = await tempDir('meshkit-outside-'))
    expect(outside.startsWith(REPO_ROOT)).to.equal(false)
  })
  after(async () => {
    for (const child of live) kill(child)
    await cleanup()
  })

  it('npm pack -> npm install <tarball> -> npx meshkit init app -> npx mesh start reaches started', async () => {
    const t0 = Date.now()
    const packed = await run(
      'npm',
      ['pack', '--ignore-scripts', '--pack-destination', outside],
      REPO_ROOT,
      60_000,
    )
    expect(packed.code, packed.output).to.equal(0)
    const tarball = join(outside, (await readdir(outside)).find((f) => f === `meshkit-${VERSION}.tgz`) ?? '')
    expect(existsSync(tarball), packed.output).to.equal(true)

    // an empty project of the user's, the tarball installed into it (a `meshkit` and a `mesh` bin)
    await writeFile(join(outside, 'package.json'), JSON.stringify({ name: 'try-meshkit', private: true }))
    const installed = await run('npm', ['install', tarball], outside, 150_000)
    expect(installed.code, installed.output).to.equal(0)
    const bins = await readdir(join(outside, 'node_modules', '.bin'))
    expect(bins).to.include.members(['mesh', 'meshkit'])
    const t1 = Date.now()

    const version = await run('npx', ['meshkit', '--version'], outside, 30_000)
    expect(version.code, version.output).to.equal(0)
    // npm's own warnings about this machine's npm config (e.g. "Unknown env config") are not meshkit's output
    const printed = version.output
      .split('\n')
      .filter((line) => line.trim() !== '' && !/^npm (warn|notice)\b/.test(line))
    expect(printed, version.output).to.deep.equal([VERSION])

    // the user asks for the tarball they have (meshkit is not on a registry here); the default is ^version
    const init = await run(
      'npx',
      ['meshkit', 'init', 'app', '--meshkit', `file:${tarball}`],
      outside,
      200_000,
    )
    expect(init.code, init.output).to.equal(0)
    expect(init.output).to.match(/✔ dependencies installed/)
    const app = join(outside, 'app')
    const pkg = JSON.parse(await readFile(join(app, 'package.json'), 'utf8'))
    expect(pkg.dependencies.meshkit).to.equal(`file:${tarball}`)
    expect(JSON.stringify(pkg), 'nothing of this repository').not.to.include(REPO_ROOT)
    // the system Node decides: pinned Node 24 when too old (this machine's Node 20), else engines + .nvmrc
    const read = await run('node', ['-p', 'process.versions.node'], outside, 10_000)
    const systemNode = read.output.trim()
    // a fresh-clone run once took the other branch here: say what `node -p` printed if it is no version
    expect(systemNode, `system node -p (exit ${read.code}): ${JSON.stringify(read.output)}`).to.match(
      /^\d+\.\d+\.\d+$/,
    )
    const [major, minor] = systemNode.split('.').map(Number)
    if (major < 22 || (major === 22 && minor < 15)) expect(pkg.devDependencies.node).to.equal('^24')
    else expect(existsSync(join(app, '.nvmrc')), `system Node ${systemNode}: .nvmrc`).to.equal(true)
    const t2 = Date.now()

    const start = spawn('npx', ['mesh', 'start', '--mode', 'local', '--json', '--no-control'], {
      cwd: app,
      env: ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    live.add(start)
    let lines = ''
    const started = await new Promise<Record<string, unknown> | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 60_000)
      start.stdout.on('data', (c: Buffer) => {
        lines += c.toString('utf8')
        for (const line of lines.split('\n')) {
          if (!line.startsWith('{')) continue
          const event = JSON.parse(line) as Record<string, unknown>
          if (event.event === 'started') {
            clearTimeout(timer)
            resolve(event)
          }
        }
      })
      start.stderr.on('data', (c: Buffer) => {
        lines += c.toString('utf8')
      })
    })
    expect(started, lines).to.not.equal(undefined)
    expect(String(started?.peerId)).to.match(/^12D3KooW/)
    const exited = new Promise<number | null>((resolve) => start.once('close', (code) => resolve(code)))
    // Ctrl-C in a terminal: the whole process group (npx dies of the signal; mesh stops cleanly)
    kill(start, 'SIGINT')
    await exited
    expect(lines, 'a clean stop').to.match(/^\{"event":"stopped"/m)
    live.delete(start)
    console.log(
      `      pack + install: ${t1 - t0} ms, init + app install: ${t2 - t1} ms, start: ${Date.now() - t2} ms (system Node ${systemNode})`,
    )

    // the optional packages are not installed: a plugin that needs one says which, exit 2
    expect(
      existsSync(join(app, 'node_modules', '@libp2p', 'webrtc')),
      'no @libp2p/webrtc by default',
    ).to.equal(false)
    for (const [plugin, pkg] of [
      ['hole-punch', '@libp2p/webrtc'],
      ['prometheus-metrics', 'prom-client'],
    ]) {
      await writeFile(
        join(app, `${plugin}.config.json`),
        JSON.stringify({ plugins: ['identify', 'ping', 'noise', 'yamux', 'tcp', plugin] }),
      )
      const r = await run(
        'npx',
        ['mesh', 'start', '--config', `${plugin}.config.json`, '--local'],
        app,
        60_000,
      )
      expect(r.code, r.output).to.equal(2)
      expect(r.output).to.include('MESH_ERR_MISSING_PACKAGE')
      expect(r.output).to.include(`npm install ${pkg}`)
    }
  })
})
