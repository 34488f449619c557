/**
 * `mesh demo` as a user runs it: a real process starting a loopback mesh (a bootstrap/relay node + N
 * peers), serving the dashboard, printing progress and, on SIGINT or after --duration, a summary;
 * it exits 0 and leaves nothing behind (temp dir removed, dashboard port closed).
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { checkDemoPlan, demoMembers, demoTopicsOf } from '../src/demo/index.js'
import { type CliProcess, hasStackTrace, killAll, runCliProcess, spawnCli } from './cli-helpers.js'
import { tempDir, waitFor } from './helpers.js'

/** Rendezvous of 6 peers took 1-10 s on the loaded 2-core machine; 3 topics, each must finish. */
const RENDEZVOUS_BOUND_MS = 90_000

describe('mesh demo: the plan', () => {
  it('gives the default 20 peers overlapping topics: some in one, two and three, every topic well populated', () => {
    const topics = ['alpha', 'beta', 'gamma']
    const perPeer = Array.from({ length: 20 }, (_, i) => demoTopicsOf(i, topics))
    expect(new Set(perPeer.map((t) => t.length))).to.deep.equal(new Set([1, 2, 3]))
    for (const [topic, members] of demoMembers(20, topics))
      expect(members.length, `${topic} members`).to.be.within(8, 14)
    expect(() => checkDemoPlan(20, topics)).to.not.throw()
    expect(() => checkDemoPlan(1, topics)).to.throw(/--peers/)
    expect(() => checkDemoPlan(6, ['a', 'a'])).to.throw(/named twice/)
    expect(() => checkDemoPlan(6, ['a b'])).to.throw(/not a topic name/)
  })
})

describe('mesh demo (CLI)', function () {
  this.timeout(180_000)
  let cwd: string
  let cleanup: () => Promise<void>

  before(async () => {
    ;({ dir: cwd, cleanup } = await tempDir('meshkit-cli-demo-'))
  })
  afterEach(async () => {
    await killAll()
  })
  after(async () => {
    await cleanup?.()
  })

  /** The dashboard URL the demo printed (the first word after "Dashboard: "). */
  const dashboardUrl = (proc: CliProcess) => {
    const line = proc.stdoutLines.find((l) => l.startsWith('Dashboard: '))
    return line ? new URL(line.slice('Dashboard: '.length).trim().split(' ')[0]) : undefined
  }

  it('starts 6 peers, every topic rendezvouses, the dashboard answers; SIGINT prints the summary and exits 0', async () => {
    const proc = spawnCli(['demo', '--peers', '6', '--no-open', '--duration', '600'], {
      cwd,
      env: { NO_COLOR: '1' },
    })
    const url = await proc.waitUntil(() => dashboardUrl(proc), {
      timeoutMs: 30_000,
      what: 'the dashboard URL',
    })
    expect(url.hostname).to.equal('127.0.0.1')
    // not a terminal: no login code in the output (nor the token); how to log in instead
    expect(url.href).to.equal(`${url.origin}/`)
    const dataLine = await proc.waitForStdout(/data in \S+ \(removed at exit\)/, { timeoutMs: 5_000 })
    const dataDir = /data in (\S+) \(removed/.exec(dataLine)![1]
    expect(existsSync(dataDir)).to.equal(true)
    expect(proc.stdout).to.include(`(log in: mesh dashboard -d ${join(dataDir, 'observer')})`)
    // a local script reads the token from the observer's data dir, as `mesh status -d` would
    const token = (await readFile(join(dataDir, 'observer', 'control.token'), 'utf8')).trim()
    expect(proc.stdout).to.not.include(token)

    await proc.waitForStdout(/^✔ 6 peers started in /, { timeoutMs: 60_000, what: 'the peers started' })
    const t0 = Date.now()
    await proc.waitForStdout(/^✔ all 3 topics rendezvoused/, {
      timeoutMs: RENDEZVOUS_BOUND_MS,
      what: 'every topic rendezvoused',
    })
    console.log(`    rendezvous of 3 topics seen ${Date.now() - t0} ms after the peers started`)
    for (const topic of ['alpha', 'beta', 'gamma'])
      expect(proc.stdout, `a progress line for ${topic}`).to.match(
        new RegExp(`^✔ topic ${topic}: \\d+ members rendezvoused in [\\d.]+ m?s`, 'm'),
      )

    // the dashboard's page and API, served by the bootstrap node: it sees every demo peer
    const page = await fetch(new URL('/', url))
    expect(page.status).to.equal(200)
    expect(page.headers.get('content-type')).to.match(/^text\/html/)
    expect(await page.text()).to.include('<title>Meshkit dashboard</title>')
    const api = async (path: string) =>
      (await fetch(new URL(path, url), { headers: { authorization: `Bearer ${token}` } })).json() as Promise<{
        peers: number
        topics: string[]
      }>
    await waitFor(async () => (await api('/api/status')).peers >= 6, {
      timeoutMs: 20_000,
      intervalMs: 500,
      what: 'the bootstrap node connected to all 6 peers',
    })
    expect((await api('/api/status')).topics).to.deep.equal(['alpha', 'beta', 'gamma'])

    const exit = await proc.signal('SIGINT', { timeoutMs: 30_000 })
    console.log(`    SIGINT: exit ${exit.code} after ${exit.ms} ms`)
    expect(exit.code, proc.describe()).to.equal(0)
    const out = proc.stdout
    expect(out).to.match(/^Summary \(SIGINT, ran [\d.]+ (ms|s|min)/m)
    for (const topic of ['alpha', 'beta', 'gamma'])
      expect(out).to.match(
        new RegExp(
          `^\\s+${topic}\\s+\\d+ members\\s+rendezvous [\\d.]+ m?s after its last member started`,
          'm',
        ),
      )
    const clusters = Number(/clusters formed: (\d+)/.exec(out)?.[1])
    expect(clusters, 'clusters formed').to.be.at.least(1)
    expect(out).to.include('Every topic rendezvoused. Stopped cleanly')
    expect(hasStackTrace(proc.stderr), proc.stderr).to.equal(false)
    // nothing left: the temp dir is gone, the dashboard port is closed
    expect(existsSync(dataDir), `${dataDir} removed`).to.equal(false)
    const refused = await fetch(new URL('/api/status', url)).then(
      () => false,
      () => true,
    )
    expect(refused, 'the dashboard port is closed').to.equal(true)
  })

  it('--duration stops by itself and --json prints the progress and the summary as JSON lines', async () => {
    const proc = spawnCli(
      ['demo', '--peers', '4', '--topics', 'red,blue', '--duration', '2', '--json', '--no-open'],
      {
        cwd,
      },
    )
    const exit = await proc.waitForExit({ timeoutMs: 90_000 })
    expect(exit.code, proc.describe()).to.equal(0)
    const events = proc.events
    expect(events[0].event).to.equal('demo:observer-started')
    expect(events.filter((e) => e.event === 'demo:peer-started')).to.have.length(4)
    const summary = events.at(-1)!
    expect(summary.event).to.equal('summary')
    expect(summary.peers).to.equal(4)
    const topics = summary.topics as Array<{ topic: string; members: number }>
    expect(topics.map((t) => t.topic)).to.deep.equal(['red', 'blue'])
    expect(topics.every((t) => t.members >= 2)).to.equal(true)
    expect(summary.runMs).to.be.a('number')
    expect(events.some((e) => e.event === 'demo:stopped')).to.equal(true)
  })

  it('stops cleanly when its reader goes away (`| head -2`): exit 0, temp dir removed', async () => {
    const { spawn } = await import('node:child_process')
    const { readdir, mkdir } = await import('node:fs/promises')
    const { join } = await import('node:path')
    const tmp = join(cwd, 'tmp-epipe')
    await mkdir(tmp, { recursive: true })
    const { CLI_MAIN } = await import('./cli-helpers.js')
    const script = `"${process.execPath}" "${CLI_MAIN}" demo --peers 3 --duration 20 --no-open | head -2; exit \${PIPESTATUS[0]}`
    const child = spawn('bash', ['-c', script], { cwd, env: { ...process.env, TMPDIR: tmp, NO_COLOR: '1' } })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.stderr.on('data', (d) => {
      err += d
    })
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
      child.on('exit', (c) => {
        clearTimeout(timer)
        resolve(c)
      })
    })
    expect(out.split('\n').filter(Boolean)).to.have.length(2)
    expect(code, `stderr: ${err}`).to.equal(0)
    expect(err).not.to.match(/EPIPE|Unhandled/)
    expect(await readdir(tmp), 'the demo removed its temp dir').to.deep.equal([])
  })

  it('rejects a demo too small for its topics with a hint (exit 2, nothing started)', async () => {
    const res = await runCliProcess(['demo', '--peers', '3', '--topics', 'a,b,c,d', '--no-open'], {
      cwd,
      timeoutMs: 30_000,
    })
    expect(res.code, res.stderr).to.equal(2)
    expect(res.stderr).to.include('MESH_ERR_INVALID_ARGUMENT')
    expect(res.stderr).to.match(/Fix: Use --peers 8 or more/)
    expect(hasStackTrace(res.stderr)).to.equal(false)
    const bad = await runCliProcess(['demo', '--peers', 'many'], { cwd, timeoutMs: 30_000 })
    expect(bad.code).to.equal(2)
    expect(bad.stderr).to.include('--peers is a whole number from 2 to 100')
  })
})
