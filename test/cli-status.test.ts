/**
 * `mesh status | peers | connections | topics [join|leave] | clusters | nat` against real `mesh start`
 * processes on loopback (through the control API each node serves), human and --json output, and the
 * errors: no node running, wrong token, control API disabled.
 */
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  BASE_PLUGIN_NAMES,
  cliTempDirs,
  hasStackTrace,
  runCliProcess,
  type StartedNode,
  spawnCli,
  startNode,
} from './cli-helpers.js'
import { freePort, waitFor } from './helpers.js'

const TCP_ONLY = ['/ip4/127.0.0.1/tcp/0']

/** Runs `mesh <args>` to its end (bounded). */
const mesh = (cwd: string, ...args: string[]) => runCliProcess(args, { cwd, timeoutMs: 30_000 })

/** stdout parsed as one JSON document. */
function parsed<T>(r: { stdout: string; stderr: string }): T {
  try {
    return JSON.parse(r.stdout) as T
  } catch {
    throw new Error(`not JSON:\n${r.stdout}\nstderr:\n${r.stderr}`)
  }
}

describe('mesh status and friends (real processes)', function () {
  // ~20 CLI processes in the first test: each takes seconds on a loaded 2-core machine
  this.timeout(240_000)
  const tempDirOfTest = cliTempDirs('meshkit-cli-status-')
  let dir: string
  beforeEach(() => {
    dir = tempDirOfTest()
  })

  it('reports a running mesh start: status, peers, connections, topics join/leave, clusters, nat', async () => {
    const [probePort, probePort2] = [await freePort(), await freePort()]
    const common = [...BASE_PLUGIN_NAMES, { plugin: 'kad-topics', options: { addressScope: 'all' } }]
    const clusters = { plugin: 'jaccard-clusters', options: { tags: ['red', 'blue'] } }
    await writeFile(
      join(dir, 'a.config.json'),
      JSON.stringify({
        name: 'node-a',
        datastore: 'memory',
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: [
          ...common,
          clusters,
          'prometheus-metrics',
          {
            plugin: 'nat-probe-server',
            options: { udpPorts: [probePort, probePort2], addresses: ['127.0.0.1', '127.0.0.2'] },
          },
          {
            plugin: 'nat-classifier',
            options: { servers: [`127.0.0.1:${probePort}`], localAddress: '127.0.0.1' },
          },
        ],
      }),
    )
    await writeFile(
      join(dir, 'b.config.json'),
      JSON.stringify({
        datastore: 'memory',
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: [...common, clusters],
      }),
    )
    const dataA = join(dir, 'a')
    const a = await startNode({
      cwd: dir,
      dataDir: dataA,
      listen: TCP_ONLY,
      extraArgs: ['--config', 'a.config.json'],
    })
    const controlLine = await a.proc.waitForEvent((e) => e.event === 'control', { what: 'the control line' })
    expect(controlLine.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect((await stat(join(dataA, 'control.token'))).mode & 0o777).to.equal(0o600)
    const addrA = a.addresses.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/'))!
    const b: StartedNode = await startNode({
      cwd: dir,
      dataDir: join(dir, 'b'),
      listen: TCP_ONLY,
      dial: [addrA],
      extraArgs: ['--config', 'b.config.json'],
    })
    await a.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === b.peerId, {
      what: 'A: B connects',
    })
    await a.proc.waitForEvent((e) => e.event === 'nat:classified', {
      timeoutMs: 30_000,
      what: 'A: NAT verdict',
    })

    // status
    const statusJson = await mesh(dir, 'status', '--data-dir', dataA, '--json')
    expect(statusJson.code, statusJson.stderr).to.equal(0)
    const status = parsed<{ peerId: string; name: string; peers: number; nat: { udp: string } }>(statusJson)
    expect(status).to.include({ peerId: a.peerId, name: 'node-a', peers: 1 })
    expect(status.nat.udp).to.equal('public')
    const statusHuman = await mesh(dir, 'status', '-d', dataA)
    expect(statusHuman.code, statusHuman.stderr).to.equal(0)
    expect(statusHuman.stdout).to.match(/^Node node-a \(started, up /m)
    expect(statusHuman.stdout).to.include(`peer id:      ${a.peerId}`)
    expect(statusHuman.stdout).to.match(/peers: +1 \(\d+ connections?\)/)
    expect(statusHuman.stdout).to.match(/NAT: +UDP public, TCP public/)

    // peers
    const peers = parsed<Array<{ peerId: string; connections: number }>>(
      await mesh(dir, 'peers', '-d', dataA, '--json'),
    )
    expect(peers.map((p) => p.peerId)).to.deep.equal([b.peerId])
    const peersHuman = await mesh(dir, 'peers', '-d', dataA)
    expect(peersHuman.code, peersHuman.stderr).to.equal(0)
    expect(peersHuman.stdout).to.match(/^PEER ID +CONNS +PENALTY +TOPICS +ADDRESSES$/m)
    expect(peersHuman.stdout).to.include(b.peerId)

    // connections
    const connections = parsed<
      Array<{ peerId: string; method: string; transport: string; direction: string }>
    >(await mesh(dir, 'connections', '-d', dataA, '--json'))
    expect(connections.find((c) => c.peerId === b.peerId)).to.include({
      method: 'direct',
      transport: 'tcp',
      direction: 'inbound',
    })
    const connectionsHuman = await mesh(dir, 'connections', '-d', dataA)
    expect(connectionsHuman.stdout).to.match(new RegExp(`^${b.peerId} +in +tcp +direct `, 'm'))

    // topics: join through the CLI, B joins too, then leave
    const joined = await mesh(dir, 'topics', 'join', 'cli-topic', '-d', dataA, '--json')
    expect(joined.code, joined.stderr).to.equal(0)
    expect(parsed(joined)).to.deep.equal({
      topic: 'cli-topic',
      joined: true,
      changed: true,
      topics: ['cli-topic'],
    })
    await a.proc.waitForEvent((e) => e.event === 'topic:joined' && e.topic === 'cli-topic', {
      what: 'A joined',
    })
    expect((await mesh(dir, 'topics', 'join', 'cli-topic', '-d', join(dir, 'b'))).stdout).to.equal(
      'joined cli-topic; topics now: cli-topic',
    )
    await waitFor(
      async () =>
        parsed<Array<{ topic: string; peers: string[] }>>(
          await mesh(dir, 'topics', '-d', dataA, '--json'),
        )[0]?.peers.includes(b.peerId) ?? false,
      { timeoutMs: 30_000, intervalMs: 500, what: 'B as a topic peer of A' },
    )
    const topicsHuman = await mesh(dir, 'topics', '-d', dataA)
    expect(topicsHuman.stdout).to.match(new RegExp(`^cli-topic +1 +${b.peerId}$`, 'm'))
    const left = await mesh(dir, 'topics', 'leave', 'cli-topic', '-d', dataA)
    expect(left.stdout, `code ${left.code}: ${left.stderr}`).to.equal('left cli-topic; topics now: (none)')
    const again = await mesh(dir, 'topics', 'leave', 'cli-topic', '-d', dataA)
    expect(again.stdout, again.stderr).to.equal(
      'not joined: cli-topic (nothing to leave); topics now: (none)',
    )
    expect(parsed(await mesh(dir, 'topics', '-d', dataA, '--json'))).to.deep.equal([])
    const badAction = await mesh(dir, 'topics', 'frobnicate', 'x', '-d', dataA)
    expect(badAction.code).to.equal(2)
    expect(badAction.stderr).to.include('MESH_ERR_INVALID_ARGUMENT')

    // clusters
    await waitFor(
      async () =>
        parsed<{ clusters: Array<{ members: Array<{ peerId: string }> }> }>(
          await mesh(dir, 'clusters', '-d', dataA, '--json'),
        ).clusters.some((c) => c.members.some((m) => m.peerId === b.peerId)),
      { timeoutMs: 30_000, intervalMs: 500, what: 'B in a cluster of A' },
    )
    const clustersHuman = await mesh(dir, 'clusters', '-d', dataA)
    expect(clustersHuman.stdout).to.include('own tags: red, blue')
    expect(clustersHuman.stdout).to.match(/^CLUSTER +OWN +MEMBERS +CONNECTED +TAGS$/m)
    expect(clustersHuman.stdout).to.match(/ yes +1 +1 +blue,red$/m)

    // nat: the running node's verdict, not a new classification
    const nat = await mesh(dir, 'nat', '-d', dataA, '--json')
    expect(nat.code, nat.stderr).to.equal(0)
    const natJson = parsed<{ source: string; peerId: string; udp: { type: string } }>(nat)
    expect(natJson).to.include({ source: 'running-node', peerId: a.peerId })
    expect(natJson.udp.type).to.equal('public')
    const natHuman = await mesh(dir, 'nat', '-d', dataA)
    expect(natHuman.stdout).to.match(/^NAT classification of the running node /m)
    expect(natHuman.stdout).to.match(/^UDP: public \(confidence/m)

    // bans: the operator bans B; mesh peers shows it, B is hung up on; lift
    const banned = await mesh(
      dir,
      'bans',
      'add',
      b.peerId,
      '--duration',
      '2m',
      '--reason',
      'test ban',
      '-d',
      dataA,
    )
    expect(banned.code, banned.stderr).to.equal(0)
    expect(banned.stdout).to.include(`banned ${b.peerId} for 2m`)
    await a.proc.waitForEvent((e) => e.event === 'peer:banned' && e.peerId === b.peerId, { what: 'A bans B' })
    const peersWithBan = await mesh(dir, 'peers', '-d', dataA)
    expect(peersWithBan.stdout).to.match(/^BANNED PEER +ENDS IN +BANS +IPS +REASON$/m)
    expect(peersWithBan.stdout).to.match(new RegExp(`^${b.peerId} +1m \\d+s +1 +- +test ban$`, 'm'))
    const badBan = await mesh(dir, 'bans', 'add', b.peerId, '--duration', 'forever', '-d', dataA)
    expect(badBan.code).to.equal(2)
    expect(badBan.stderr).to.include('MESH_ERR_INVALID_ARGUMENT')
    const lifted = await mesh(dir, 'bans', 'lift', b.peerId, '-d', dataA, '--json')
    expect(parsed<{ lifted: boolean }>(lifted).lifted).to.equal(true)
    expect(parsed<unknown[]>(await mesh(dir, 'bans', '-d', dataA, '--json'))).to.deep.equal([])

    // stop: control.json goes away, and the CLI says so
    expect(JSON.parse(await readFile(join(dataA, 'control.json'), 'utf8')).url).to.equal(controlLine.url)
    const exit = await a.proc.signal('SIGINT', { timeoutMs: 15_000 })
    expect(exit.code, a.proc.describe()).to.equal(0)
    const gone = await stat(join(dataA, 'control.json')).then(
      () => false,
      () => true,
    )
    expect(gone, 'control.json removed').to.equal(true)
    const after = await mesh(dir, 'status', '-d', dataA)
    expect(after.code).to.equal(2)
    expect(after.stderr).to.include('MESH_ERR_CONTROL_NOT_RUNNING')
  })

  it('says clearly that no node runs (exit 2, hint, no stack trace)', async () => {
    for (const args of [
      ['status'],
      ['peers', '--json'],
      ['topics', 'join', 'x'],
      ['connections'],
      ['clusters'],
    ]) {
      const r = await mesh(dir, ...args)
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(2)
      expect(r.stderr).to.include('MESH_ERR_CONTROL_NOT_RUNNING')
      expect(r.stderr).to.include(join(dir, '.mesh'))
      expect(r.stderr).to.include('mesh start')
      expect(hasStackTrace(r.stderr), r.stderr).to.equal(false)
      expect(r.stdout).to.equal('')
    }
  })

  it('mesh start --dashboard prints no token; mesh dashboard prints one-time login links', async () => {
    const dataDir = join(dir, 'dash')
    const a = await startNode({ cwd: dir, dataDir, listen: TCP_ONLY, extraArgs: ['--dashboard'] })
    const control = await a.proc.waitForEvent((e) => e.event === 'control', { what: 'the control line' })
    expect(control).to.include({ dashboard: true })
    const token = (await readFile(join(dataDir, 'control.token'), 'utf8')).trim()
    // neither the JSON lines nor anything else the node printed holds the token or a login code
    expect(a.proc.stdout + a.proc.stderr).to.not.include(token)
    expect(a.proc.stdout + a.proc.stderr).to.not.include('code=')
    // human output, not to a terminal: the address and how to log in, no code
    const dataDir2 = join(dir, 'dash2')
    const human = spawnCli(['start', '--dashboard', '-d', dataDir2, '--listen', TCP_ONLY[0]], { cwd: dir })
    try {
      const line = await human.waitForStdout(/^\s+dashboard: /, {
        timeoutMs: 20_000,
        what: 'the dashboard line',
      })
      expect(line).to.match(
        new RegExp(
          `dashboard: http://127\\.0\\.0\\.1:\\d+/ \\(log in with the link that \`mesh dashboard -d ${dataDir2}\` prints\\)$`,
        ),
      )
      expect(human.stdout).to.not.include((await readFile(join(dataDir2, 'control.token'), 'utf8')).trim())
    } finally {
      await human.kill()
    }
    const link = await mesh(dir, 'dashboard', '-d', dataDir, '--json')
    expect(link.code, link.stderr).to.equal(0)
    const { url, code, expiresAt } = parsed<{ url: string; code: string; expiresAt: number }>(link)
    expect(url).to.equal(`${control.url}/#code=${code}`)
    expect(url).to.not.include(token)
    expect(expiresAt - Date.now()).to.be.within(30_000, 60_000)
    const login = async () =>
      fetch(`${control.url}/api/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code }),
      })
    const first = await login()
    expect(first.status).to.equal(200)
    const { session } = (await first.json()) as { session: string }
    const status = await fetch(`${control.url}/api/status`, {
      headers: { authorization: `Bearer ${session}` },
    })
    expect(status.status).to.equal(200)
    expect(((await status.json()) as { peerId: string }).peerId).to.equal(a.peerId)
    expect((await login()).status, 'a code works once').to.equal(401)
    const printed = await mesh(dir, 'dashboard', '-d', dataDir)
    expect(printed.code, printed.stderr).to.equal(0)
    expect(printed.stdout, JSON.stringify(printed.stdout)).to.match(
      new RegExp(`^${control.url}/#code=[A-Za-z0-9_-]{32}\n\\(one-time login link, valid for \\d+ s\\)\n?$`),
    )
  })

  it('refuses a wrong token (exit 2); --no-control, --control-port and --control-socket work', async () => {
    const port = await freePort()
    const a = await startNode({
      cwd: dir,
      dataDir: join(dir, 'a'),
      listen: TCP_ONLY,
      extraArgs: ['--control-port', String(port)],
    })
    const controlLine = await a.proc.waitForEvent((e) => e.event === 'control', { what: 'the control line' })
    expect(controlLine).to.include({ url: `http://127.0.0.1:${port}` })
    const ok = await mesh(dir, 'status', '-d', join(dir, 'a'))
    expect(ok.code, ok.stderr).to.equal(0)
    // a token that is well formed but not the node's
    await writeFile(join(dir, 'a', 'control.token'), `${'A'.repeat(43)}\n`, { mode: 0o600 })
    const wrong = await mesh(dir, 'status', '-d', join(dir, 'a'))
    expect(wrong.code).to.equal(2)
    expect(wrong.stderr).to.include('MESH_ERR_CONTROL_UNAUTHORIZED')
    expect(wrong.stderr).to.include('the token is wrong')
    expect(hasStackTrace(wrong.stderr)).to.equal(false)

    const b = await startNode({
      cwd: dir,
      dataDir: join(dir, 'b'),
      listen: TCP_ONLY,
      extraArgs: ['--no-control'],
    })
    expect(b.proc.events.some((e) => e.event === 'control')).to.equal(false)
    const none = await mesh(dir, 'status', '-d', join(dir, 'b'))
    expect(none.code).to.equal(2)
    expect(none.stderr).to.include('MESH_ERR_CONTROL_NOT_RUNNING')

    // a unix socket instead of TCP
    const socketPath = join(dir, 'd.sock')
    const d = await startNode({
      cwd: dir,
      dataDir: join(dir, 'd'),
      listen: TCP_ONLY,
      extraArgs: ['--control-socket', socketPath],
    })
    expect(await d.proc.waitForEvent((e) => e.event === 'control', { what: 'the control line' })).to.include({
      socketPath,
    })
    expect((await stat(socketPath)).mode & 0o777).to.equal(0o600)
    const viaSocket = await mesh(dir, 'status', '-d', join(dir, 'd'), '--json')
    expect(viaSocket.code, viaSocket.stderr).to.equal(0)
    expect(parsed<{ peerId: string }>(viaSocket).peerId).to.equal(d.peerId)

    // a taken control port is a clear user error
    const c = await runCliProcess(
      ['start', '--data-dir', join(dir, 'c'), '--listen', TCP_ONLY[0], '--control-port', String(port)],
      { cwd: dir, timeoutMs: 30_000 },
    )
    expect(c.code).to.equal(2)
    expect(c.stderr).to.include('MESH_ERR_CONTROL_FAILED')
    expect(c.stderr).to.include('EADDRINUSE')
  })

  it('mesh start (human output) prints the control URL', async () => {
    const proc = spawnCli(['start', '--data-dir', join(dir, 'h'), '--listen', TCP_ONLY[0]], { cwd: dir })
    const line = await proc.waitForStdout(/^ {2}control: /, { timeoutMs: 30_000, what: 'the control line' })
    expect(line).to.match(/^ {2}control: http:\/\/127\.0\.0\.1:\d+ \(mesh status\)$/)
    const exit = await proc.signal('SIGINT', { timeoutMs: 15_000 })
    expect(exit.code).to.equal(0)
  })
})
