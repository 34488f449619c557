/**
 * Logs: text or JSON lines (pino's shape), DEBUG=meshkit:<scope> namespaces, and libp2p's own component
 * logs routed through Meshkit's logger (so --log-level reaches them and they go where Meshkit's go).
 */
import { expect } from 'chai'
import { createLogger, type MeshPlugin } from 'meshkit'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { debugMatcher } from '../src/core/logger.js'
import { cliTempDirs, spawnCli } from './cli-helpers.js'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'

describe('logs', function () {
  this.timeout(60_000)

  it('json: one pino-shaped object per line (level number, time, name, scope, msg, fields)', () => {
    const lines: string[] = []
    const logger = createLogger({ format: 'json', name: 'alice', write: (l) => lines.push(l), debug: '' })
    logger.child('kad-topics').info('joined', { topic: 'chat', peers: 3 }, 'now')
    logger.warn('careful', new Error('boom'))
    logger.debug('hidden at info')
    expect(lines).to.have.length(2)
    const first = JSON.parse(lines[0])
    expect(first).to.include({
      level: 30,
      name: 'alice',
      scope: 'kad-topics',
      msg: 'joined now',
      topic: 'chat',
      peers: 3,
    })
    expect(first.time).to.be.a('number')
    expect(first.pid).to.equal(process.pid)
    const second = JSON.parse(lines[1])
    expect(second).to.include({ level: 40, msg: 'careful' })
    expect(second.err).to.include({ type: 'Error', message: 'boom' })
  })

  it('DEBUG=meshkit:<scope> lifts those scopes to debug, with * and - exclusions', () => {
    const lines: string[] = []
    const logger = createLogger({
      level: 'info',
      write: (l) => lines.push(l),
      debug: 'meshkit:kad-*,-meshkit:kad-noisy,libp2p:dialer',
    })
    logger.child('kad-topics').debug('topics debug')
    logger.child('kad-noisy').debug('excluded')
    logger.child('bootstrap').debug('not asked for')
    logger.child('libp2p:dialer').trace('libp2p trace')
    logger.child('libp2p:upgrader').trace('not asked for')
    expect(lines.map((l) => l.replace(/^\S+ /, ''))).to.deep.equal([
      'DEBUG [kad-topics] topics debug',
      'TRACE [libp2p:dialer] libp2p trace',
    ])
    expect(debugMatcher('')).to.equal(undefined)
    expect(debugMatcher('meshkit:*')?.('meshkit:security')).to.equal(true)
  })

  describe('libp2p component logs', () => {
    let dir: string
    let cleanup: () => Promise<void>
    beforeEach(async () => {
      ;({ dir, cleanup } = await tempDir('meshkit-logs-'))
    })
    afterEach(async () => cleanup())

    const withLevel = async (level: 'info' | 'debug' | 'trace') => {
      const nodes = new LoopbackNodes(
        () => dir,
        (): MeshPlugin[] => [identify(), ping(), noise(), yamux(), tcp()],
        level,
      )
      try {
        const a = await nodes.start(`a-${level}`)
        // a dial that fails inside libp2p: nothing listens there
        await a.node.libp2p
          .dial(
            (await import('@multiformats/multiaddr')).multiaddr(
              '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWRmbzLnFmF8bGWHyxkXa2Jf4BwrYAibsCWRE7kSr3KQcz',
            ),
          )
          .catch(() => {})
        return a.logs.filter((l) => l.includes('[libp2p:'))
      } finally {
        await nodes.closeAll()
      }
    }

    it('--log-level reaches them: none at info, libp2p errors at debug, everything at trace', async () => {
      expect(await withLevel('info')).to.deep.equal([])
      const debug = await withLevel('debug')
      expect(debug.length).to.be.greaterThan(0)
      expect(debug.every((l) => / DEBUG \[libp2p:/.test(l))).to.equal(true)
      const trace = await withLevel('trace')
      expect(trace.some((l) => / TRACE \[libp2p:/.test(l))).to.equal(true)
      expect(trace.length).to.be.greaterThan(debug.length)
    })
  })

  describe('the CLI', () => {
    const tempDirOfTest = cliTempDirs('meshkit-logs-cli-')

    it('mesh start --log-format json writes JSON lines on stderr; DEBUG=meshkit adds the kernel`s debug lines only', async () => {
      const dir = tempDirOfTest()
      const proc = spawnCli(
        ['start', '--data-dir', `${dir}/d`, '--local', '--log-format', 'json', '--log-level', 'info'],
        { cwd: dir, env: { DEBUG: 'meshkit,meshkit:security' } },
      )
      try {
        await proc.waitForStdout(/Meshkit node .* started/, { timeoutMs: 30_000 })
        await proc.signal('SIGINT', { timeoutMs: 15_000 })
        const json = proc.stderrLines
          .filter((l) => l.trim())
          .map((l) => JSON.parse(l) as Record<string, unknown>)
        expect(json.length).to.be.greaterThan(0)
        for (const line of json) {
          expect(line.level).to.be.a('number')
          expect(line.time).to.be.a('number')
          expect(line.msg).to.be.a('string')
        }
        expect(json.some((l) => l.msg === 'SIGINT: stopping')).to.equal(true)
        // DEBUG=meshkit: the kernel's own debug lines (no scope), and no other scope's
        const debug = json.filter((l) => l.level === 20)
        expect(
          debug.some((l) => l.scope === undefined && /^node \S+ started on /.test(String(l.msg))),
        ).to.equal(true)
        for (const line of debug) expect([undefined, 'security']).to.include(line.scope)
      } finally {
        await proc.kill()
      }
    })
  })
})
