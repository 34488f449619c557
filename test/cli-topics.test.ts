/**
 * `mesh start --topic`: two real processes on loopback join a topic and report each other as
 * `topic:peer` JSON lines; `--topic` without a discovery plugin is a usage error.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  BASE_PLUGIN_NAMES,
  cliTempDirs,
  hasStackTrace,
  runCliProcess,
  startArgs,
  startNode,
} from './cli-helpers.js'

const TCP_ONLY = ['/ip4/127.0.0.1/tcp/0']

describe('mesh start --topic (real processes)', function () {
  this.timeout(90_000)
  const tempDirOfTest = cliTempDirs('meshkit-cli-topics-')
  let dir: string
  beforeEach(() => {
    dir = tempDirOfTest()
  })

  it('two nodes with --topic demo report each other as topic:peer', async () => {
    await writeFile(
      join(dir, 'mesh.config.json'),
      JSON.stringify({
        plugins: [...BASE_PLUGIN_NAMES, { plugin: 'kad-topics', options: { addressScope: 'all' } }],
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
      }),
    )
    const topic = ['--topic', 'demo']
    const a = await startNode({ cwd: dir, dataDir: join(dir, 'a'), listen: TCP_ONLY, extraArgs: topic })
    const addrA = a.addresses.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/'))
    expect(addrA, 'A listens on loopback TCP').to.be.a('string')
    const b = await startNode({
      cwd: dir,
      dataDir: join(dir, 'b'),
      listen: TCP_ONLY,
      dial: [addrA!],
      extraArgs: topic,
    })
    const started = Date.now()
    const [seenByA, seenByB] = await Promise.all([
      a.proc.waitForEvent((e) => e.event === 'topic:peer' && e.topic === 'demo' && e.peerId === b.peerId, {
        timeoutMs: 30_000,
        what: 'A: topic:peer B',
      }),
      b.proc.waitForEvent((e) => e.event === 'topic:peer' && e.topic === 'demo' && e.peerId === a.peerId, {
        timeoutMs: 30_000,
        what: 'B: topic:peer A',
      }),
    ])
    console.log(`      topic:peer on both within ${Date.now() - started} ms of B's started event`)
    for (const [node, seen] of [
      [a, seenByA],
      [b, seenByB],
    ] as const) {
      expect(seen).to.include({ event: 'topic:peer', topic: 'demo' })
      expect(seen.time).to.be.a('number')
      expect(node.proc.events.some((e) => e.event === 'topic:joined' && e.topic === 'demo')).to.equal(true)
    }
    for (const node of [b, a]) {
      const exit = await node.proc.signal('SIGINT', { timeoutMs: 15_000 })
      expect(exit.code, node.proc.describe()).to.equal(0)
      expect(node.proc.events.at(-1)?.event).to.equal('stopped')
    }
  })

  it('--topic without a discovery plugin exits 2 with a clear message', async () => {
    // a config without a discovery plugin (the defaults have one: kadTopics)
    await writeFile(
      join(dir, 'mesh.config.json'),
      JSON.stringify({ plugins: ['identify', 'ping', 'noise', 'yamux', 'tcp'] }),
    )
    const result = await runCliProcess(
      startArgs({ dataDir: join(dir, 'n'), extraArgs: ['--topic', 'demo'] }),
      {
        cwd: dir,
        timeoutMs: 30_000,
      },
    )
    expect(result.code, result.stderr).to.equal(2)
    expect(result.stderr).to.match(/--topic needs a topic discovery plugin/)
    expect(result.stderr).to.match(/kadTopics\(\)/)
    expect(hasStackTrace(result.stderr), result.stderr).to.equal(false)
    expect(result.stdout, 'no started line').not.to.match(/"event":"started"/)
  })

  it('rejects an empty or over-long --topic before starting', async () => {
    for (const bad of ['', 'x'.repeat(129)]) {
      const result = await runCliProcess(
        startArgs({ dataDir: join(dir, 'n'), extraArgs: ['--topic', bad] }),
        {
          cwd: dir,
        },
      )
      expect(result.code, result.stderr).to.equal(2)
      expect(result.stderr).to.match(/a topic is 1 to 128 characters/)
      expect(result.stdout).to.equal('')
    }
  })
})
