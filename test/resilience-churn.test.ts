/**
 * Churn (issue 12), small: what the churn benchmark (bench/churn, `npm run bench:churn`) stands on, and
 * one wave of it in a handful of real processes.
 *
 * - `mesh start --json` reports what happened while the node started (a restarted node reconnects to
 *   its peer store's peers before the CLI prints `started`): those lines used to be lost, and a
 *   restarted node's first connections and topic peers were missing from its event stream.
 * - The churn run itself: bootstrap nodes + peers as `mesh start` processes, a wave SIGKILLing some and
 *   starting replacements (one on its old data dir, one new identity); every live member heals.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { runChurn } from '../bench/churn/churn.js'
import { type JsonEvent, killAll, spawnCli } from './cli-helpers.js'
import { type ConfigProject, configProject } from './fixtures/configs/project.js'

describe('mesh start --json: events of the start-up', function () {
  this.timeout(60_000)
  let project: ConfigProject
  beforeEach(async () => {
    project = await configProject()
  })
  afterEach(async () => {
    await killAll()
    await project.cleanup()
  })

  it('prints the events a plugin emitted while the node started, after `started`, stamped when they happened', async () => {
    await project.write({
      'mesh.config.ts': [
        "import { defineConfig } from 'meshkit'",
        "import { definePlugin } from 'meshkit/plugin'",
        "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
        "const early = definePlugin({ name: 'early-events', create: () => ({",
        "  start: (ctx) => { ctx.events.emit('test:early', { n: 1 }) },",
        '}) })',
        'export default defineConfig({',
        "  datastore: 'memory',",
        "  listen: ['/ip4/127.0.0.1/tcp/0'],",
        "  network: { addressScope: 'all' },",
        '  bootstrap: { minConnections: 0 },',
        '  plugins: [identify(), noise(), yamux(), tcp(), early()],',
        '})',
        '',
      ].join('\n'),
    })
    const proc = spawnCli(['start', '--json', '--data-dir', project.path('state'), '--no-control'], {
      cwd: project.dir,
    })
    const early = await proc.waitForEvent((e) => e.event === 'test:early', {
      timeoutMs: 30_000,
      what: 'the test:early line',
    })
    const events: JsonEvent[] = proc.events
    const started = events.find((e) => e.event === 'started')!
    expect(events[0].event, 'the first line').to.equal('started')
    expect(early).to.include({ event: 'test:early', n: 1 })
    expect(early.time as number).to.be.at.most(started.time as number)
    expect(events.filter((e) => e.event === 'test:early')).to.have.length(1)
  })
})

describe('resilience: a churn wave (real processes)', function () {
  this.timeout(180_000)
  let dir = ''
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkit-churn-test-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('kills 2 of 6 peers (SIGKILL), starts replacements (old data dir, new identity): every live member heals', async () => {
    const out = await runChurn({
      peers: 6,
      bootstraps: 1,
      waves: 1,
      intervalMs: 10_000,
      killFraction: 0.34,
      topics: 1,
      sentinels: 1,
      batch: 6,
      transports: ['tcp'],
      kadTopics: { connectionsPerTopic: 3 },
      formationTimeoutMs: 60_000,
      settleMs: 500,
      root: dir,
      keepDirs: true,
    })
    const [wave] = out.waves
    console.log(`      ${JSON.stringify(out.summary)}`)
    expect(out.details.formed_before_waves, 'the mesh formed').to.equal(true)
    expect(wave).to.include({ killed: 2, restarted: 1, new_identities: 1 })
    // healed in the window: every live member has min(k, members - 1) live topic peers again
    expect(wave.heal_ms, JSON.stringify(wave)).to.be.a('number')
    expect(wave.replacement_join_ms.unsatisfied).to.equal(0)
    // TCP on loopback: a killed process's connections are closed by its kernel at once
    expect(wave.stale_ms.censored).to.equal(0)
    expect(wave.stale_pairs).to.be.greaterThan(0)
    // survivors were probed before and after
    expect(out.summary.survivor_fd_growth).to.be.a('number')
  })
})
