/**
 * `mesh dev` as a real process, with a real `mesh start` peer connected to it: edits of the config file
 * on disk are applied in place (same connection ids, seen through the control API), a new listen port
 * rebuilds with the same peer id, a syntax error keeps the node serving and prints its location, the
 * dashboard is served, and SIGINT stops everything.
 */
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { createControlClient } from '../src/control/index.js'
import { type CliProcess, type JsonEvent, killAll, spawnCli, startNode } from './cli-helpers.js'
import { type ConfigProject, configProject } from './fixtures/configs/project.js'
import { freePort, tempDir } from './helpers.js'

function configSource(
  port: number,
  threshold = 0.7,
  connectionsPerTopic = 8,
  syntaxError = false,
  dataDir = 'state',
): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { identify, jaccardClusters, kadTopics, noise, ping, tcp, yamux } from 'meshkit/plugins'",
    '',
    'export default defineConfig({',
    "  name: 'cli-dev',",
    `  dataDir: '${dataDir}',`,
    "  datastore: 'memory',",
    syntaxError ? '  listen: [,,,' : `  listen: ['/ip4/127.0.0.1/tcp/${port}'],`,
    "  connections: { allow: ['/ip4/127.0.0.1'] },",
    "  network: { addressScope: 'all' },",
    '  bootstrap: { minConnections: 0 },',
    '  plugins: [',
    '    noise(), yamux(), tcp(), identify(), ping(),',
    `    kadTopics({ addressScope: 'all', topics: ['alpha'], connectionsPerTopic: ${connectionsPerTopic} }),`,
    `    jaccardClusters({ threshold: ${threshold}, tags: ['a', 'b'] }),`,
    '  ],',
    '})',
    '',
  ].join('\n')
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

describe('mesh dev (CLI process)', function () {
  this.timeout(120_000)
  let project: ConfigProject
  let peerDir: { dir: string; cleanup: () => Promise<void> }
  let port: number

  beforeEach(async () => {
    project = await configProject()
    peerDir = await tempDir('meshkit-dev-peer-')
    port = await freePort()
    await project.write({ 'mesh.config.ts': configSource(port) })
  })

  afterEach(async () => {
    await killAll()
    await project.cleanup()
    await peerDir.cleanup()
  })

  const reloads = (dev: CliProcess) => dev.events.filter((e) => e.event === 'reload')

  async function save(dev: CliProcess, source: string): Promise<JsonEvent> {
    const count = reloads(dev).length
    await writeFile(project.path('mesh.config.ts'), source)
    return dev.waitUntil(() => reloads(dev)[count], { timeoutMs: 20_000, what: `reload #${count + 1}` })
  }

  async function startDevWithPeer() {
    const dev = spawnCli(['dev', '--json', '--log-level', 'warn'], { cwd: project.dir })
    const started = await dev.waitForEvent((e) => e.event === 'started', {
      timeoutMs: 30_000,
      what: 'the started line',
    })
    const control = await dev.waitForEvent((e) => e.event === 'control', { what: 'the control line' })
    const peer = await startNode({
      cwd: peerDir.dir,
      dataDir: join(peerDir.dir, 'peer'),
      dial: [(started.addresses as string[])[0]],
      extraArgs: ['--no-control'],
    })
    await dev.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === peer.peerId, {
      what: 'the peer to connect',
    })
    const client = createControlClient({ dataDir: project.path('state') })
    return { dev, started, control, peer, client }
  }

  it('applies option edits in place: same connection ids (control API), < 100 ms each', async () => {
    const { dev, started, control, peer, client } = await startDevWithPeer()
    expect(started.watching).to.deep.equal(['mesh.config.ts'])
    // the dashboard is served by `mesh dev`
    const page = await fetch(control.dashboardUrl as string)
    expect(page.status).to.equal(200)
    expect(page.headers.get('content-type')).to.match(/text\/html/)
    await page.arrayBuffer()

    const ids = async () => (await client.connections()).map((c) => c.connectionId).sort()
    const before = await ids()
    expect(before.length).to.be.greaterThan(0)
    const applyMs: number[] = []
    const totalMs: number[] = []
    const edits: Array<[number, number]> = [
      [0.5, 8],
      [0.5, 4],
      [0.6, 4],
      [0.6, 6],
      [0.8, 6],
      [0.7, 8],
    ]
    for (const [threshold, perTopic] of edits) {
      const report = await save(dev, configSource(port, threshold, perTopic))
      expect(report.status, JSON.stringify(report)).to.equal('applied')
      expect(report.mode).to.equal('in-place')
      expect((report.actions as string[]).join('\n')).not.to.match(/restarted|rebuilt/)
      applyMs.push(report.applyMs as number)
      totalMs.push(report.totalMs as number)
    }
    expect(await ids()).to.deep.equal(before)
    expect(dev.events.filter((e) => e.event === 'connection:close')).to.have.length(0)
    expect(peer.proc.events.filter((e) => e.event === 'peer:disconnect')).to.have.length(0)
    const status = await client.status()
    expect(status.peerId).to.equal(started.peerId)
    console.log(
      `      mesh dev in-place apply over ${applyMs.length} reloads: p50 ${percentile(applyMs, 50).toFixed(1)} ms, p90 ${percentile(applyMs, 90).toFixed(1)} ms; save to applied (debounce 50 ms + load + apply): p50 ${percentile(totalMs, 50).toFixed(0)} ms, p90 ${percentile(totalMs, 90).toFixed(0)} ms`,
    )
    expect(percentile(applyMs, 50)).to.be.lessThan(100)
    // and each one bounded (loosely: a loaded CI machine has GC pauses and other tests running)
    for (const ms of applyMs) expect(ms).to.be.lessThan(250)

    const exit = await dev.signal('SIGINT')
    expect(exit.code).to.equal(0)
    expect(dev.events.at(-1)?.event).to.equal('stopped')
    expect(exit.ms).to.be.lessThan(5000)
    expect(existsSync(project.path('state/control.json'))).to.equal(false)
  })

  it('a new listen port rebuilds the node with the same peer id; a new data dir moves the control API', async () => {
    const { dev, started, client } = await startDevWithPeer()
    const newPort = await freePort()
    const report = await save(dev, configSource(newPort))
    expect(report.status, JSON.stringify(report)).to.equal('applied')
    expect(report.mode).to.equal('rebuild')
    expect(report.peerId).to.equal(started.peerId)
    console.log(`      mesh dev rebuild (new listen port): apply ${(report.applyMs as number).toFixed(1)} ms`)
    const status = await client.status()
    expect(status.peerId).to.equal(started.peerId)
    expect(status.addresses.some((a) => a.includes(`/tcp/${newPort}/`))).to.equal(true)
    expect(status.topics).to.include('alpha')

    // another data dir is another identity: the node is rebuilt with it, the control API follows
    const moved = await save(dev, configSource(newPort, 0.7, 8, false, 'state2'))
    expect(moved.mode).to.equal('rebuild')
    expect(moved.peerIdChanged).to.equal(true)
    const control = await dev.waitUntil(() => dev.events.filter((e) => e.event === 'control')[1], {
      what: 'the control line for the new data dir',
    })
    expect(control.url).to.be.a('string')
    const movedStatus = await createControlClient({ dataDir: project.path('state2') }).status()
    expect(movedStatus.peerId).to.equal(moved.peerId)
    expect(movedStatus.peerId).not.to.equal(started.peerId)
    expect(existsSync(project.path('state/control.json'))).to.equal(false)
    const exit = await dev.signal('SIGINT')
    expect(exit.code).to.equal(0)
  })

  it('a syntax error keeps the old node serving and prints the error with its location', async () => {
    // human output this time
    const dev = spawnCli(['dev', '--log-level', 'warn', '--no-control'], { cwd: project.dir })
    await dev.waitForStdout(/peer id:/, { timeoutMs: 30_000, what: 'the started text' })
    const address = `/ip4/127.0.0.1/tcp/${port}`
    const peer = await startNode({
      cwd: peerDir.dir,
      dataDir: join(peerDir.dir, 'peer'),
      dial: [`${address}/p2p/${/peer id:\s+(\S+)/.exec(dev.stdout)![1]}`],
      extraArgs: ['--no-control'],
    })
    await peer.proc.waitForEvent((e) => e.event === 'peer:connect', { what: 'the connection' })
    await writeFile(project.path('mesh.config.ts'), configSource(port, 0.7, 8, true))
    await dev.waitForStdout(/reload #1 .*failed while loading the config; the running node is untouched/, {
      what: 'the failed reload',
    })
    await dev.waitForStdout(/MESH_ERR_CONFIG_LOAD/, { what: 'the error code' })
    const location = await dev.waitForStdout(/\(at mesh\.config\.ts:\d+:\d+\)/, {
      what: 'the error location',
    })
    expect(location).to.match(/Expected "\]" but found/)
    // still serving: a second peer connects, the first never lost its connection
    const second = await startNode({
      cwd: peerDir.dir,
      dataDir: join(peerDir.dir, 'second'),
      dial: [`${address}/p2p/${/peer id:\s+(\S+)/.exec(dev.stdout)![1]}`],
      extraArgs: ['--no-control'],
    })
    await second.proc.waitForEvent((e) => e.event === 'peer:connect', { what: 'the second connection' })
    expect(peer.proc.events.filter((e) => e.event === 'peer:disconnect')).to.have.length(0)
    // fixing the file reloads
    await writeFile(project.path('mesh.config.ts'), configSource(port, 0.5))
    await dev.waitForStdout(/reload #2 \(mesh\.config\.ts\): applied in place in [\d.]+ ms/, {
      what: 'the fixed reload',
    })
    await dev.waitForStdout(/changed\s+plugins\.jaccard-clusters\.threshold: 0\.7 -> 0\.5/, {
      what: 'the change',
    })
    const exit = await dev.signal('SIGINT')
    expect(exit.code).to.equal(0)
  })
})
