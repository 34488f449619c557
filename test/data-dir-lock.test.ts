/**
 * The data dir lock (src/core/data-dir-lock.ts) as hostile or unlucky local processes meet it: 20
 * processes starting at once (fresh, over a stale lock, with and without the abstract socket), a lock
 * left under this process's own pid (a container's PID 1 after a restart), a reused pid, an empty lock
 * file, a holder killed with SIGKILL, a holder in another PID namespace that only heartbeats, and a
 * process squatting the lock socket's name.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { readdir, readFile, realpath, rename, stat, utimes, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { expect } from 'chai'
import { LOCK_FILE, lockDataDir } from '../src/core/data-dir-lock.js'
import { isMeshError, type MeshError } from '../src/core/errors.js'
import type { Logger } from '../src/core/logger.js'
import { processState, selfIdentity } from '../src/core/process-identity.js'
import { tempDir } from './helpers.js'

/** dist/src/core/data-dir-lock.js, seen from dist/test/. */
const LOCK_MODULE = pathToFileURL(
  join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'core', 'data-dir-lock.js'),
).href

interface Attempt {
  won: boolean
  pid: number
  code?: string
  hint?: string
  ms: number
}

/**
 * Starts `count` processes that each try to lock `dir` at the same moment (they wait for a line on
 * stdin, sent to all once all are ready). Losers report and exit; the winner reports and holds the
 * lock until its stdin closes. Returns every report and the winner's process.
 */
async function raceProcesses(
  dir: string,
  count: number,
  options: Record<string, unknown> = {},
): Promise<{ attempts: Attempt[]; winners: ChildProcess[]; all: ChildProcess[] }> {
  const script = `
const { lockDataDir } = await import(${JSON.stringify(LOCK_MODULE)})
let step = 0
process.stdin.setEncoding('utf8')
process.stdin.on('data', async () => {
  if (step++ > 0) return
  const t0 = Date.now()
  try {
    const release = await lockDataDir(${JSON.stringify(dir)}, ${JSON.stringify(options)})
    console.log(JSON.stringify({ won: true, pid: process.pid, ms: Date.now() - t0 }))
    process.stdin.on('end', async () => { await release(); process.exit(0) })
  } catch (err) {
    console.log(JSON.stringify({ won: false, pid: process.pid, code: err.code, hint: err.hint, ms: Date.now() - t0 }))
    process.exit(0)
  }
})
console.log('ready')
`
  const all: ChildProcess[] = []
  const reports = new Map<ChildProcess, Attempt>()
  const ready: Array<Promise<void>> = []
  const reported: Array<Promise<void>> = []
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    all.push(child)
    let buffer = ''
    let onReady: () => void = () => {}
    let onReport: () => void = () => {}
    ready.push(new Promise((r) => (onReady = r)))
    reported.push(new Promise((r) => (onReport = r)))
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (chunk: string) => {
      buffer += chunk
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        if (line === 'ready') onReady()
        else if (line.startsWith('{')) {
          reports.set(child, JSON.parse(line) as Attempt)
          onReport()
        }
      }
    })
  }
  const bounded = <T>(p: Promise<T>, what: string) =>
    Promise.race([
      p,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), 45_000)),
    ])
  await bounded(Promise.all(ready), 'every process ready')
  for (const child of all) child.stdin?.write('go\n')
  await bounded(Promise.all(reported), 'every process reported')
  const winners = all.filter((c) => reports.get(c)?.won)
  return { attempts: all.map((c) => reports.get(c) as Attempt), winners, all }
}

async function stopAll(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.stdin?.end()
      const exited = once(child, 'exit')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    }),
  )
}

/** The pid of a process that has exited (and was reaped): nothing runs under it now, most likely. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' })
  return Number(child.stdout.trim())
}

/** A lock record as Meshkit writes it, for a holder described by `who`. */
function lockRecord(who: Record<string, unknown>): string {
  const me = selfIdentity()
  return JSON.stringify({
    v: 1,
    host: me.host,
    boot: me.boot,
    pidns: me.pidns,
    netns: me.netns,
    start: me.start,
    socket: false,
    nonce: randomBytes(16).toString('hex'),
    at: new Date().toISOString(),
    ...who,
  })
}

async function expectLocked(p: Promise<unknown>): Promise<MeshError> {
  const err = await p.then(
    (release) => {
      if (typeof release === 'function') void (release as () => Promise<void>)()
      return undefined
    },
    (e: unknown) => e,
  )
  expect(
    isMeshError(err, 'MESH_ERR_DATA_DIR_LOCKED'),
    `expected MESH_ERR_DATA_DIR_LOCKED, got ${err}`,
  ).to.equal(true)
  return err as MeshError
}

describe('data dir lock', function () {
  this.timeout(90_000)
  let dir: string
  let cleanup: () => Promise<void>
  const children: ChildProcess[] = []
  const releases: Array<() => Promise<void>> = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-lock-'))
  })
  afterEach(async () => {
    for (const r of releases.splice(0)) await r()
    await stopAll(children.splice(0))
    await cleanup()
  })

  describe('20 processes starting at once on one data dir: exactly one wins', () => {
    const cases: Array<{ what: string; stale: boolean; options: Record<string, unknown> }> = [
      { what: 'a fresh data dir', stale: false, options: {} },
      { what: 'over a stale lock of a dead process', stale: true, options: {} },
      { what: 'over a stale lock, the lock file alone (no socket)', stale: true, options: { socket: false } },
      { what: 'a fresh data dir, the lock file alone (no socket)', stale: false, options: { socket: false } },
    ]
    for (const { what, stale, options } of cases) {
      it(what, async () => {
        if (stale)
          await writeFile(join(dir, LOCK_FILE), lockRecord({ pid: deadPid(), start: '1' }), { mode: 0o600 })
        const race = await raceProcesses(dir, 20, options)
        children.push(...race.all)
        const won = race.attempts.filter((a) => a.won)
        const lost = race.attempts.filter((a) => !a.won)
        console.log(
          `    ${won.length} won, ${lost.length} refused; slowest answer ${Math.max(...race.attempts.map((a) => a.ms))} ms`,
        )
        expect(won, JSON.stringify(race.attempts)).to.have.length(1)
        for (const l of lost) {
          expect(l.code).to.equal('MESH_ERR_DATA_DIR_LOCKED')
          expect(l.hint).to.include(`Process ${won[0].pid} `)
        }
        const record = JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')) as { pid: number }
        expect(record.pid).to.equal(won[0].pid)
        expect((await stat(join(dir, LOCK_FILE))).mode & 0o777).to.equal(0o600)
        // the winner releases on exit: the file goes, and no temp file or marker is left
        await stopAll(race.winners)
        expect(await readdir(dir)).to.deep.equal([])
      })
    }
  })

  it("takes over at once a lock under this process's own pid (a container's PID 1 after a restart)", async () => {
    const me = selfIdentity()
    // the record a previous life of this PID 1 left: our pid, and (in a container restart) often
    // even our start time, but a nonce this process never held
    await writeFile(join(dir, LOCK_FILE), lockRecord({ pid: me.pid }), { mode: 0o600 })
    const t0 = Date.now()
    releases.push(await lockDataDir(dir))
    expect(Date.now() - t0).to.be.below(1_000)
    // the same with a lock file from Meshkit 0.1 (just the pid)
    await releases.pop()?.()
    await writeFile(join(dir, LOCK_FILE), String(me.pid))
    releases.push(await lockDataDir(dir))
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).to.equal(me.pid)
  })

  it('takes over at once a lock whose pid now runs another process (pid reuse)', async function () {
    if (!selfIdentity().start) this.skip() // needs /proc
    // a live process that is not the one that wrote the lock: same pid, another start time
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' })
    children.push(other)
    await once(other, 'spawn')
    await writeFile(join(dir, LOCK_FILE), lockRecord({ pid: other.pid, start: '1' }), { mode: 0o600 })
    const t0 = Date.now()
    releases.push(await lockDataDir(dir))
    expect(Date.now() - t0).to.be.below(1_000)
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).to.equal(process.pid)
  })

  it('refuses while a live process holds the lock, naming it; takes over at once after it is SIGKILLed', async () => {
    const race = await raceProcesses(dir, 1)
    children.push(...race.all)
    const holder = race.attempts[0]
    expect(holder.won).to.equal(true)
    const err = await expectLocked(lockDataDir(dir))
    expect(err.hint).to.include(`Process ${holder.pid} `)
    // and with the file alone, as from another network namespace that shares the PID namespace
    const fileOnly = await expectLocked(lockDataDir(dir, { socket: false }))
    expect(fileOnly.hint).to.include(`Process ${holder.pid} `)
    race.all[0].kill('SIGKILL')
    await once(race.all[0], 'exit')
    const t0 = Date.now()
    releases.push(await lockDataDir(dir))
    expect(Date.now() - t0, 'no wait for a dead holder').to.be.below(1_000)
  })

  it("removes at once the temp files and takeover markers of an acquirer that was SIGKILLed; keeps a live one's", async function () {
    if (!selfIdentity().start) this.skip() // needs /proc
    const dead = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' })
    await once(dead, 'exit')
    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' })
    children.push(live)
    await once(live, 'spawn')
    const state = processState(live.pid as number)
    const liveStart = typeof state === 'object' ? state.start : undefined
    const deadTemp = `${LOCK_FILE}.${randomBytes(16).toString('hex')}.tmp`
    const deadMarker = `${LOCK_FILE}.takeover.n${randomBytes(16).toString('hex')}`
    const liveTemp = `${LOCK_FILE}.${randomBytes(16).toString('hex')}.tmp`
    // fresh files (a kill during a start, the next start a second later): age alone would keep them
    await writeFile(join(dir, deadTemp), lockRecord({ pid: dead.pid }), { mode: 0o600 })
    await writeFile(join(dir, deadMarker), lockRecord({ pid: dead.pid }), { mode: 0o600 })
    await writeFile(join(dir, liveTemp), lockRecord({ pid: live.pid, start: liveStart }), { mode: 0o600 })
    releases.push(await lockDataDir(dir))
    const left = await readdir(dir)
    expect(left).to.not.include(deadTemp)
    expect(left).to.not.include(deadMarker)
    expect(left, 'a live acquirer keeps its temp file').to.include(liveTemp)
  })

  it('an empty lock file is not stale while fresh (two nodes must never share a data dir); an old one is', async () => {
    const staleMs = 1_500
    await writeFile(join(dir, LOCK_FILE), '')
    const t0 = Date.now()
    releases.push(await lockDataDir(dir, { staleMs }))
    const waited = Date.now() - t0
    console.log(`    a fresh empty lock file was respected for ${waited} ms (staleMs ${staleMs})`)
    expect(waited).to.be.at.least(staleMs - 300)
    await releases.pop()?.()
    await writeFile(join(dir, LOCK_FILE), '')
    const old = new Date(Date.now() - 3_600_000)
    await utimes(join(dir, LOCK_FILE), old, old)
    const t1 = Date.now()
    releases.push(await lockDataDir(dir, { staleMs }))
    expect(Date.now() - t1).to.be.below(staleMs)
  })

  it('a holder in another PID namespace is alive while it heartbeats, and stale once it stops', async () => {
    const staleMs = 1_000
    const file = join(dir, LOCK_FILE)
    // a pid that means nothing here: the holder lives in another PID and network namespace
    await writeFile(file, lockRecord({ pid: 4_000_001, pidns: 'pid:[1]', netns: 'net:[1]', start: '5' }), {
      mode: 0o600,
    })
    const beat = setInterval(() => {
      const now = new Date()
      void utimes(file, now, now).catch(() => {})
    }, 100)
    try {
      const err = await expectLocked(lockDataDir(dir, { staleMs }))
      expect(err.hint).to.include('Process 4000001')
    } finally {
      clearInterval(beat)
    }
    const t0 = Date.now()
    releases.push(await lockDataDir(dir, { staleMs }))
    expect(Date.now() - t0).to.be.within(staleMs - 300, 3 * staleMs)
  })

  it('keeps its own heartbeat, and the lock record names this process', async () => {
    const staleMs = 500
    releases.push(await lockDataDir(dir, { staleMs }))
    const file = join(dir, LOCK_FILE)
    const record = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>
    expect(record).to.include({ v: 1, pid: process.pid, host: selfIdentity().host })
    expect(record.nonce).to.match(/^[0-9a-f]{32}$/)
    const before = (await stat(file)).mtimeMs
    await new Promise((r) => setTimeout(r, staleMs))
    expect((await stat(file)).mtimeMs).to.be.greaterThan(before)
    // a second lock in this process (another kernel on the same data dir) is refused too
    await expectLocked(lockDataDir(dir, { staleMs }))
    await expectLocked(lockDataDir(dir, { staleMs, socket: false }))
  })

  it("says so once when another process replaced its lock file; its own file's mtime only is touched", async () => {
    const staleMs = 500
    const errors: string[] = []
    const logger = { error: (m: string) => errors.push(m) } as unknown as Logger
    releases.push(await lockDataDir(dir, { staleMs, logger }))
    const file = join(dir, LOCK_FILE)
    const ours = await readFile(file, 'utf8')
    await new Promise((r) => setTimeout(r, staleMs / 2))
    expect(await readFile(file, 'utf8'), 'beats do not rewrite the record').to.equal(ours)
    expect(errors).to.deep.equal([])
    // another process takes the lock over: a new file (new inode) linked in place
    const other = { ...JSON.parse(ours), pid: 999_999, nonce: randomBytes(16).toString('hex') }
    await writeFile(`${file}.other.tmp`, JSON.stringify(other))
    await rename(`${file}.other.tmp`, file)
    await new Promise((r) => setTimeout(r, staleMs))
    expect(errors).to.have.length(1)
    expect(errors[0]).to.include('pid 999999').and.include('took the data dir')
  })

  it('a process squatting the lock socket name does not keep the node from starting', async function () {
    if (process.platform !== 'linux') this.skip()
    // the attacker computes the name from the data dir's path (or reads it in /proc/net/unix)
    const name = `\0meshkit-lock/${createHash('sha256')
      .update(await realpath(dir))
      .digest('hex')
      .slice(0, 40)}`
    for (const answer of ['', 'garbage', JSON.stringify({ pid: 1, tag: 'f'.repeat(32) })]) {
      const squatter: Server = createServer((s) => s.end(answer))
      await new Promise<void>((r) => squatter.listen(name, r))
      try {
        const t0 = Date.now()
        const release = await lockDataDir(dir, { staleMs: 500 })
        expect(Date.now() - t0).to.be.below(5_000)
        expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).to.equal(process.pid)
        await release()
      } finally {
        await new Promise((r) => squatter.close(r))
      }
    }
  })
})
