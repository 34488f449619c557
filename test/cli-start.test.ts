/**
 * `mesh start` as a real process: JSON events, connections over TCP and QUIC, signals, identity,
 * logging and argument errors. Every node listens on 127.0.0.1 only; every process is killed after.
 */
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  BASE_PLUGIN_NAMES,
  hasStackTrace,
  type JsonEvent,
  killAll,
  LOOPBACK_LISTEN_ARGS,
  runCliProcess,
  type StartedNode,
  spawnCli,
  startArgs,
  startNode,
} from './cli-helpers.js'
import { tempDir } from './helpers.js'

const SIX_PLUGINS = [...BASE_PLUGIN_NAMES, 'quic']

/** Timings measured by the tests, printed once at the end. */
const timings: Record<string, number[]> = {}
function record(name: string, ms: number): void {
  timings[name] ??= []
  timings[name].push(ms)
}

function isLoopback(address: string): boolean {
  return address.startsWith('/ip4/127.0.0.1/') || address.startsWith('/ip6/::1/')
}

function addressOf(node: StartedNode, transport: 'tcp' | 'quic-v1'): string {
  const found = node.addresses.find((a) =>
    transport === 'tcp' ? /\/tcp\/\d+\/p2p\//.test(a) : a.includes('/quic-v1/p2p/'),
  )
  if (!found) throw new Error(`node ${node.peerId} has no ${transport} address: ${node.addresses.join(', ')}`)
  return found
}

describe('mesh start (real processes)', function () {
  this.timeout(60_000)

  let dir: string
  let cleanup: () => Promise<void>

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-cli-'))
  })

  afterEach(async () => {
    await killAll()
    await cleanup()
  })

  after(() => {
    const lines = Object.entries(timings).map(
      ([name, ms]) => `${name}: ${ms.join(', ')} ms (max ${Math.max(...ms)})`,
    )
    if (lines.length > 0) console.log(`    timings:\n      ${lines.join('\n      ')}`)
  })

  /** A project dir (no config) and a data dir inside the test's temp dir. */
  const paths = (name: string) => ({ cwd: dir, dataDir: join(dir, `${name}-data`) })

  describe('--json output', () => {
    it('prints a started event with the peer id and loopback addresses as the first stdout line', async () => {
      const node = await startNode(paths('a'))
      record('startup (spawn -> started event)', node.startupMs)
      const first = JSON.parse(node.proc.stdoutLines[0]) as JsonEvent
      expect(first.event).to.equal('started')
      expect(first.peerId).to.equal(node.peerId)
      expect(node.peerId).to.match(/^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/)
      expect(node.addresses).to.have.length.greaterThanOrEqual(2)
      for (const a of node.addresses) {
        expect(isLoopback(a), `${a} is a loopback address`).to.equal(true)
        expect(a.endsWith(`/p2p/${node.peerId}`), `${a} ends with /p2p/<peer id>`).to.equal(true)
      }
      expect(node.addresses.some((a) => /\/tcp\/\d+\/p2p\//.test(a))).to.equal(true)
      expect(node.addresses.some((a) => a.includes('/quic-v1/'))).to.equal(true)
    })

    it('runs a mesh.config.json that names the built-in plugins by string', async () => {
      await writeFile(
        join(dir, 'mesh.config.json'),
        JSON.stringify({ name: 'json-node', plugins: SIX_PLUGINS }),
      )
      const node = await startNode(paths('a'))
      expect(node.addresses.some((a) => a.includes('/quic-v1/'))).to.equal(true)
      expect(node.addresses.some((a) => /\/tcp\/\d+\//.test(a))).to.equal(true)
      expect(node.addresses.every(isLoopback)).to.equal(true)

      // a TCP-only config: no QUIC plugin, so only the TCP address is listened on
      await writeFile(
        join(dir, 'mesh.config.json'),
        JSON.stringify({ plugins: ['identify', 'ping', 'noise', 'yamux', 'tcp'] }),
      )
      const tcpOnly = await startNode({ ...paths('b'), listen: ['/ip4/127.0.0.1/tcp/0'] })
      expect(tcpOnly.addresses).to.have.length(1)
      expect(tcpOnly.addresses[0]).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
    })

    it('writes logs to stderr only: every stdout line is JSON, through connect and stop', async () => {
      const a = await startNode({ ...paths('a'), logLevel: 'debug' })
      const b = await startNode({ ...paths('b'), logLevel: 'debug', dial: [addressOf(a, 'tcp')] })
      await b.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === a.peerId)
      for (const node of [a, b]) {
        const exit = await node.proc.signal('SIGINT')
        expect(exit.code, node.proc.describe()).to.equal(0)
        expect(node.proc.stdoutLines.length).to.be.greaterThan(1)
        for (const line of node.proc.stdoutLines) {
          expect(() => JSON.parse(line), `stdout line is JSON: ${line}`).not.to.throw()
          expect(JSON.parse(line)).to.have.property('event').that.is.a('string')
        }
        // the log lines went to stderr
        expect(node.proc.stderrLines.some((l) => /\bINFO\b.*SIGINT: stopping/.test(l))).to.equal(true)
        expect(node.proc.stdout).not.to.match(/\b(DEBUG|INFO|WARN|ERROR)\b/)
      }
    })
  })

  describe('connections', () => {
    for (const [transport, addressKind] of [
      ['tcp', 'tcp'],
      ['quic', 'quic-v1'],
    ] as const) {
      it(`connects two nodes over ${transport.toUpperCase()} and reports both sides`, async () => {
        const a = await startNode(paths('a'))
        const target = addressOf(a, addressKind)
        expect(target.endsWith(`/p2p/${a.peerId}`)).to.equal(true)
        const b = await startNode({ ...paths('b'), dial: [target] })
        expect(b.peerId).not.to.equal(a.peerId)

        const opts = { timeoutMs: 15_000 }
        const [aSees, bSees] = await Promise.all([
          a.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === b.peerId, opts),
          b.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === a.peerId, opts),
        ])
        expect(aSees.peerId).to.equal(b.peerId)
        expect(bSees.peerId).to.equal(a.peerId)

        const [aOpen, bOpen] = await Promise.all([
          a.proc.waitForEvent((e) => e.event === 'connection:open' && e.peerId === b.peerId, opts),
          b.proc.waitForEvent((e) => e.event === 'connection:open' && e.peerId === a.peerId, opts),
        ])
        expect(bOpen.transport).to.equal(transport)
        expect(bOpen.direction).to.equal('outbound')
        expect(bOpen.relayed).to.equal(false)
        expect(String(bOpen.remoteAddr)).to.satisfy(isLoopback)
        expect(aOpen.transport).to.equal(transport)
        expect(aOpen.direction).to.equal('inbound')
        expect(b.proc.events.some((e) => e.event === 'dial:failed')).to.equal(false)
      })
    }
  })

  describe('signals', () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      it(`exits 0 within 5 s on ${signal} and prints a stopped event`, async () => {
        const node = await startNode(paths('a'))
        const exit = await node.proc.signal(signal, { timeoutMs: 10_000 })
        record(`${signal} -> exit`, exit.ms)
        expect(exit.code, node.proc.describe()).to.equal(0)
        expect(exit.signal).to.equal(null)
        expect(exit.ms).to.be.lessThan(5000)
        const events = node.proc.events
        expect(events.at(-1)?.event).to.equal('stopped')
        expect(events.filter((e) => e.event === 'stopped')).to.have.length(1)
        expect(node.proc.stderr).to.include(`${signal}: stopping`)
      })
    }

    it('a SIGTERM during startup stops the node as soon as it has started: exit 0', async () => {
      const { cwd, dataDir } = paths('a')
      const proc = spawnCli(startArgs({ dataDir }), { cwd })
      // logged inside startMesh (first run: a new identity), before libp2p listens
      await proc.waitForStderr(/created a new identity/)
      const exit = await proc.signal('SIGTERM')
      expect(exit.code, proc.describe()).to.equal(0)
      expect(exit.signal).to.equal(null)
      const names = proc.events.map((e) => e.event)
      expect(names[0]).to.equal('started')
      expect(names.at(-1)).to.equal('stopped')
      expect(proc.stderr).to.include('SIGTERM: stopping')
    })

    it('exits 0 on SIGTERM while connected to a peer', async () => {
      const a = await startNode(paths('a'))
      const b = await startNode({ ...paths('b'), dial: [addressOf(a, 'tcp')] })
      await a.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === b.peerId)
      const exit = await b.proc.signal('SIGTERM')
      record('SIGTERM (connected) -> exit', exit.ms)
      expect(exit.code, b.proc.describe()).to.equal(0)
      expect(exit.ms).to.be.lessThan(5000)
      // the other side sees the peer go
      await a.proc.waitForEvent((e) => e.event === 'peer:disconnect' && e.peerId === b.peerId)
    })
  })

  describe('identity', () => {
    it('keeps the same peer id across runs with the same --data-dir, in a 0600 identity.key', async () => {
      const { cwd, dataDir } = paths('a')
      const first = await startNode({ cwd, dataDir })
      expect((await first.proc.signal('SIGTERM')).code).to.equal(0)
      const mode = (await stat(join(dataDir, 'identity.key'))).mode & 0o777
      expect(mode.toString(8)).to.equal('600')

      const second = await startNode({ cwd, dataDir })
      expect(second.peerId).to.equal(first.peerId)
      expect((await second.proc.signal('SIGTERM')).code).to.equal(0)

      const other = await startNode(paths('b'))
      expect(other.peerId).not.to.equal(first.peerId)
    })

    it('refuses a data dir that a running node uses: exit 2, MESH_ERR_DATA_DIR_LOCKED', async () => {
      const { cwd, dataDir } = paths('a')
      const running = await startNode({ cwd, dataDir })
      const second = await runCliProcess(startArgs({ dataDir }), { cwd })
      expect(second.code, second.stderr).to.equal(2)
      expect(second.stderr).to.include('MESH_ERR_DATA_DIR_LOCKED')
      expect(second.stderr).to.include(dataDir)
      expect(hasStackTrace(second.stderr), second.stderr).to.equal(false)
      expect(second.stdout).not.to.include('"started"')
      // the running node is unharmed and stops cleanly
      expect(running.proc.exit).to.equal(undefined)
      expect((await running.proc.signal('SIGINT')).code).to.equal(0)
    })
  })

  describe('human output and logging', () => {
    it('prints the peer id and the listen addresses without --json', async () => {
      await writeFile(join(dir, 'mesh.config.json'), JSON.stringify({ name: 'human', plugins: SIX_PLUGINS }))
      const { cwd, dataDir } = paths('a')
      const proc = spawnCli(startArgs({ dataDir, json: false }), { cwd })
      await proc.waitForStdout(/^\s+\/ip4\/127\.0\.0\.1\/udp\/\d+\/quic-v1\/p2p\//)
      const peerLine = await proc.waitForStdout(/peer id:/)
      const peerId = peerLine.split('peer id:')[1].trim()
      expect(peerId).to.match(/^12D3KooW/)
      expect(proc.stdout).to.include('Meshkit node human started')
      expect(proc.stdout).to.include(join(dir, 'mesh.config.json'))
      const addresses = proc.stdoutLines.map((l) => l.trim()).filter((l) => l.startsWith('/'))
      expect(addresses).to.have.length(2)
      for (const a of addresses) {
        expect(a).to.satisfy(isLoopback)
        expect(a.endsWith(`/p2p/${peerId}`)).to.equal(true)
      }
      for (const line of proc.stdoutLines) expect(line.startsWith('{'), line).to.equal(false)
      expect((await proc.signal('SIGINT')).code).to.equal(0)
    })

    it('--log-level debug writes debug lines to stderr', async () => {
      const node = await startNode({ ...paths('a'), logLevel: 'debug' })
      await node.proc.waitForStderr(/ DEBUG /)
      expect(node.proc.stderr).to.match(/ DEBUG .*started on/)
      expect(node.proc.stdout).not.to.include('DEBUG')
      expect((await node.proc.signal('SIGINT')).code).to.equal(0)
    })

    it('--log-level error hides info lines (also on stop)', async () => {
      const node = await startNode({ ...paths('a'), logLevel: 'error' })
      expect((await node.proc.signal('SIGINT')).code).to.equal(0)
      expect(node.proc.events.at(-1)?.event).to.equal('stopped')
      // with the default level the same run logs INFO lines (the new identity, the signal)
      expect(node.proc.stderr).not.to.match(/\b(INFO|DEBUG|WARN|TRACE)\b/)
      expect(node.proc.stderrLines.filter((l) => l.trim() !== '')).to.deep.equal([])

      const loud = await startNode(paths('b'))
      expect((await loud.proc.signal('SIGINT')).code).to.equal(0)
      expect(loud.proc.stderr).to.match(/ INFO .*created a new identity/)
      expect(loud.proc.stderr).to.match(/ INFO .*SIGINT: stopping/)
    })
  })

  describe('bad arguments', () => {
    const badRun = (args: string[]) => runCliProcess(['start', '--json', ...args], { cwd: dir })

    const expectUsageError = (
      result: Awaited<ReturnType<typeof badRun>>,
      mentions: Array<string | RegExp>,
    ): void => {
      expect(result.code, result.stderr).to.equal(2)
      for (const m of mentions) {
        if (typeof m === 'string') expect(result.stderr).to.include(m)
        else expect(result.stderr).to.match(m)
      }
      expect(hasStackTrace(result.stderr), result.stderr).to.equal(false)
      expect(result.stderr).not.to.include('unexpected error')
      expect(result.stdout).not.to.include('"started"')
    }

    it('--log-level loud: exit 2, names the value and the allowed levels', async () => {
      const result = await badRun([
        '--data-dir',
        join(dir, 'data'),
        ...LOOPBACK_LISTEN_ARGS,
        '--log-level',
        'loud',
      ])
      expectUsageError(result, ["'loud'", '--log-level', 'debug'])
    })

    it('--listen notamultiaddr: exit 2, names the flag and the value', async () => {
      const result = await badRun(['--data-dir', join(dir, 'data'), '--listen', 'notamultiaddr'])
      expectUsageError(result, ['notamultiaddr', '--listen'])
    })

    it('--dial with a bad multiaddr: exit 2, names the flag and the value', async () => {
      const result = await badRun([
        '--data-dir',
        join(dir, 'data'),
        ...LOOPBACK_LISTEN_ARGS,
        '--dial',
        '/ip4/127.0.0.1/tcp/notaport',
      ])
      expectUsageError(result, ['/ip4/127.0.0.1/tcp/notaport', '--dial'])
    })

    it('mesh --version prints the package version: exit 0', async () => {
      const result = await runCliProcess(['--version'], { cwd: dir })
      const { version } = JSON.parse(
        (await import('node:fs')).readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8'),
      ) as { version: string }
      expect(result.code, result.stderr).to.equal(0)
      expect(result.stdout.trim()).to.equal(version)
    })

    it('an unknown option: exit 2', async () => {
      const result = await badRun(['--data-dir', join(dir, 'data'), '--frobnicate'])
      expectUsageError(result, ['--frobnicate'])
    })

    it('a --data-dir that is a file: exit 2, MESH_ERR_DATA_DIR', async () => {
      const file = join(dir, 'not-a-dir')
      await writeFile(file, 'x')
      const result = await badRun(['--data-dir', file, ...LOOPBACK_LISTEN_ARGS])
      expectUsageError(result, ['MESH_ERR_DATA_DIR', file])
    })

    it('a --data-dir where nothing can be made (/proc/...): exit 2 at once, MESH_ERR_DATA_DIR', async () => {
      const result = await badRun(['--data-dir', '/proc/meshkit-nope/data', ...LOOPBACK_LISTEN_ARGS])
      expectUsageError(result, ['MESH_ERR_DATA_DIR', '/proc/meshkit-nope/data'])
    })
  })
})
