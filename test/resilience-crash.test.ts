/**
 * Crash safety (issue 12): what a SIGKILL mid-write leaves in a data dir. The atomic writes (identity
 * key, peer cache, control token and discovery file) write a temp file and rename/link it into place, so
 * the file itself is always whole; the temp file of a write that was killed stays behind, and the next
 * start removes it (sweepTempFiles). Then 20 SIGKILLs at random moments against real `mesh start` /
 * `mesh dev` processes (bench/churn/crash.ts; 200 in `npm run bench:faults`).
 */
import { spawn } from 'node:child_process'
import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { createLogger, loadOrCreateIdentity, MeshKernel, resolveConfig } from 'meshkit'
import { sweepTempFiles } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, peerCache, tcp, yamux } from 'meshkit/plugins'
import { runCrashCycles } from '../bench/churn/crash.js'
import { loadOrCreateToken } from '../src/control/token.js'
import { TEST_ENV } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'

/** The pid of a process that has exited (not reused this soon in practice). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await new Promise((resolve) => child.once('exit', resolve))
  return child.pid!
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

describe('resilience: temp files of interrupted writes', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-crash-temps-'))
  })
  afterEach(() => cleanup())

  it("sweepTempFiles removes a dead writer's temp files of that file only", async () => {
    const dead = await deadPid()
    const file = join(dir, 'peer-cache.json')
    const names = {
      dead: `peer-cache.json.${dead}.a1b2c3d4e5f6.tmp`,
      alive: `peer-cache.json.${process.pid === 1 ? 2 : 1}.a1b2c3d4e5f6.tmp`,
      mine: `peer-cache.json.${process.pid}.a1b2c3d4e5f6.tmp`,
      other: `identity.key.${dead}.a1b2c3d4e5f6.tmp`,
      unrelated: 'peer-cache.json.bak',
    }
    for (const n of Object.values(names)) await writeFile(join(dir, n), '{"half":')
    expect(await sweepTempFiles(file)).to.deep.equal([names.dead])
    const left = await readdir(dir)
    expect(left).to.have.members([names.alive, names.mine, names.other, names.unrelated])
    // a temp file of a live pid older than an hour is a reused pid's: removed too
    const old = new Date(Date.now() - 2 * 3_600_000)
    await utimes(join(dir, names.alive), old, old)
    expect(await sweepTempFiles(file)).to.deep.equal([names.alive])
  })

  it('loadOrCreateIdentity and the control token remove the temp files of killed creators', async () => {
    const dead = await deadPid()
    await mkdir(join(dir, 'data'), { mode: 0o700 })
    const temps = [`identity.key.${dead}.0123456789ab.tmp`, `control.token.${dead}.01234567.tmp`]
    for (const t of temps) await writeFile(join(dir, 'data', t), 'half')
    await loadOrCreateIdentity(join(dir, 'data'))
    await loadOrCreateToken(join(dir, 'data'))
    expect(await exists(join(dir, 'data', temps[0]))).to.equal(false)
    expect(await exists(join(dir, 'data', temps[1]))).to.equal(false)
    expect(await exists(join(dir, 'data', 'identity.key'))).to.equal(true)
  })

  it('peerCache() removes the temp file a node killed while writing the cache left behind', async () => {
    const dead = await deadPid()
    const dataDir = join(dir, 'node')
    await mkdir(dataDir, { mode: 0o700, recursive: true })
    const temp = join(dataDir, `peer-cache.json.${dead}.0123456789ab.tmp`)
    await writeFile(temp, '{"version":1,"peers":[{"id":')
    const logs: string[] = []
    const kernel = new MeshKernel({ env: TEST_ENV, logger: createLogger({ write: (l) => logs.push(l) }) })
    try {
      await kernel.start(
        resolveConfig(
          {
            dataDir,
            datastore: 'memory',
            logLevel: 'info',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            network: { addressScope: 'all' },
            plugins: [identify(), noise(), yamux(), tcp(), peerCache()],
          },
          { env: TEST_ENV, registry: builtinPlugins },
        ),
      )
      expect(await exists(temp), 'the leftover temp file').to.equal(false)
      expect(logs.join('\n')).to.match(/removed 1 temp file\(s\) left by an interrupted write/)
    } finally {
      await kernel.close()
    }
  })
})

describe('resilience: SIGKILL at random moments (20 kills, real processes)', function () {
  // ~1-2 s per `start` cycle on the shared 2 cores (spawn, start-up, checks), ~4 s per reload (a `mesh
  // dev` start first): 3 or so reloads of 20 keep it near half a minute
  this.timeout(240_000)
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-crash-'))
  })
  after(() => cleanup())

  it('every restart has the same identity, a valid peer cache and datastore, nothing half-written left', async () => {
    const report = await runCrashCycles({ cycles: 20, root: dir, maxDelayMs: 2000, reloadShare: 0.15 })
    console.log(
      `      ${report.kills} kills (start ${report.byMode.start}, fresh ${report.byMode.fresh}, reload ${report.byMode.reload}) in ${report.ms} ms: ${report.startedSameIdentity} started with the data dir's identity, peer cache valid ${report.peerCacheValid} / absent ${report.peerCacheAbsent}, datastore ok ${report.datastoreOk}, kills with leftovers ${report.killsWithLeftovers}`,
    )
    expect(report.problems, report.problems.join('\n')).to.deep.equal([])
    expect(report.kills).to.equal(20)
    expect(report.byMode.reload, 'config reloads among the kills').to.be.greaterThan(0)
    expect(report.startedOtherIdentity).to.equal(0)
    expect(report.startedSameIdentity).to.be.greaterThan(0)
    expect(report.peerCacheInvalid).to.equal(0)
    expect(report.corruptBackups).to.equal(0)
    expect(report.datastoreFailed).to.equal(0)
    expect(report.leftoversSurvivingRestart).to.equal(0)
    expect(report.finalStart).to.deep.include({ started: true, sameIdentity: true })
    expect(report.finalStart.cachedPeers).to.be.greaterThan(0)
  })
})
