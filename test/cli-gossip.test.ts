/**
 * `mesh publish` and `mesh subscribe` against real `mesh start` processes on loopback: two nodes in a
 * topic, a subscriber printing one line per message (JSON and human), the node's own `--json` event
 * lines, Ctrl-C, and the exit-2 errors with hints (no gossip plugin, a topic not joined).
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  BASE_PLUGIN_NAMES,
  cliTempDirs,
  hasStackTrace,
  runCliProcess,
  spawnCli,
  startNode,
} from './cli-helpers.js'

const TCP_ONLY = ['/ip4/127.0.0.1/tcp/0']

async function writeConfig(dir: string, withGossip: boolean): Promise<void> {
  await mkdir(dir, { recursive: true })
  await writeFile(
    join(dir, 'mesh.config.json'),
    JSON.stringify({
      plugins: [
        ...BASE_PLUGIN_NAMES,
        { plugin: 'kad-topics', options: { addressScope: 'all' } },
        ...(withGossip ? ['gossip'] : []),
      ],
      connections: { allow: ['/ip4/127.0.0.1'] },
      network: { addressScope: 'all' },
    }),
  )
}

describe('mesh publish / mesh subscribe (real processes)', function () {
  this.timeout(90_000)
  const tempDirOfTest = cliTempDirs('meshkit-cli-gossip-')

  it('a message published on one node is printed by a subscriber of another, one line each', async () => {
    const dir = tempDirOfTest()
    await writeConfig(dir, true)
    const topic = ['--topic', 'demo']
    const a = await startNode({ cwd: dir, dataDir: join(dir, 'a'), listen: TCP_ONLY, extraArgs: topic })
    const addrA = a.addresses.find((x) => x.startsWith('/ip4/127.0.0.1/tcp/'))!
    const b = await startNode({
      cwd: dir,
      dataDir: join(dir, 'b'),
      listen: TCP_ONLY,
      dial: [addrA],
      extraArgs: topic,
    })
    await Promise.all([
      a.proc.waitForEvent((e) => e.event === 'gossip:peer' && e.topic === 'demo' && e.peerId === b.peerId, {
        timeoutMs: 30_000,
        what: 'A: gossip:peer B',
      }),
      b.proc.waitForEvent((e) => e.event === 'gossip:peer' && e.topic === 'demo' && e.peerId === a.peerId, {
        timeoutMs: 30_000,
        what: 'B: gossip:peer A',
      }),
    ])

    const json = spawnCli(['subscribe', 'demo', '--data-dir', join(dir, 'b'), '--json'], { cwd: dir })
    const human = spawnCli(['subscribe', 'demo', '--data-dir', join(dir, 'b')], { cwd: dir })
    await json.waitForEvent((e) => e.event === 'subscribed' && e.topic === 'demo', {
      what: 'subscribed (json)',
    })
    await human.waitForStderr(/^subscribed to demo; one line per message \(Ctrl-C stops\)$/, {
      what: 'subscribed (human)',
    })

    const published = await runCliProcess(['publish', 'demo', 'hello there', '--data-dir', join(dir, 'a')], {
      cwd: dir,
    })
    expect(published.code, published.stderr).to.equal(0)
    expect(published.stdout).to.match(/^published 11 bytes to demo: sent to 1 peer \(id [\w-]+\)$/)
    const line = await json.waitForEvent((e) => e.event === 'gossip:message', { what: 'the message (json)' })
    expect(line).to.include({ topic: 'demo', from: a.peerId, via: a.peerId, bytes: 11, text: 'hello there' })
    await human.waitForStdout(
      new RegExp(`^\\d\\d:\\d\\d:\\d\\d ${a.peerId.slice(0, 8)}…${a.peerId.slice(-6)}: hello there$`),
      {
        what: 'the message (human)',
      },
    )
    // the node's own --json output has it as an event, with a bounded text preview
    await b.proc.waitForEvent((e) => e.event === 'gossip:message' && e.text === 'hello there', {
      what: "B's gossip:message event line",
    })

    // a peer's terminal escapes are shown, not run
    const evil = await runCliProcess(
      ['publish', 'demo', 'clear\u001b[2J\nfake line', '--data-dir', join(dir, 'a'), '--json'],
      {
        cwd: dir,
      },
    )
    expect(evil.code, evil.stderr).to.equal(0)
    expect(JSON.parse(evil.stdout)).to.include({ topic: 'demo', bytes: 19 })
    const shown = await human.waitForStdout(/clear/, { what: 'the escaped message' })
    expect(shown).to.match(/: clear\\u001b\[2J\\nfake line$/)
    expect(human.stdoutLines.some((l) => l.startsWith('fake line'))).to.equal(false)

    for (const sub of [json, human]) {
      const exit = await sub.signal('SIGINT')
      expect(exit.code, sub.describe()).to.equal(0)
      expect(exit.ms).to.be.below(3000)
    }
    for (const node of [b, a]) {
      const exit = await node.proc.signal('SIGINT', { timeoutMs: 15_000 })
      expect(exit.code, node.proc.describe()).to.equal(0)
    }
  })

  it('exits 2 with a hint: a node without gossip, a topic the node has not joined', async () => {
    const dir = tempDirOfTest()
    await writeConfig(join(dir, 'plain'), false)
    await writeConfig(join(dir, 'gossip'), true)
    const plain = await startNode({ cwd: join(dir, 'plain'), dataDir: join(dir, 'p'), listen: TCP_ONLY })
    const node = await startNode({ cwd: join(dir, 'gossip'), dataDir: join(dir, 'g'), listen: TCP_ONLY })

    const noGossip = await runCliProcess(['publish', 'demo', 'x', '--data-dir', join(dir, 'p')], { cwd: dir })
    expect(noGossip.code, noGossip.stderr).to.equal(2)
    expect(noGossip.stderr).to.match(
      /MESH_ERR_CONTROL_NO_PROVIDER: The running node has no plugin providing 'gossip'/,
    )
    expect(noGossip.stderr).to.match(/Fix: Add gossip\(\) from 'meshkit\/plugins'/)
    expect(hasStackTrace(noGossip.stderr), noGossip.stderr).to.equal(false)

    const notJoined = await runCliProcess(['publish', 'demo', 'x', '--data-dir', join(dir, 'g')], {
      cwd: dir,
    })
    expect(notJoined.code, notJoined.stderr).to.equal(2)
    expect(notJoined.stderr).to.match(/has not joined 'demo'/)
    expect(notJoined.stderr).to.match(/mesh topics join demo/)

    const subscribeNotJoined = await runCliProcess(['subscribe', 'demo', '--data-dir', join(dir, 'g')], {
      cwd: dir,
    })
    expect(subscribeNotJoined.code, subscribeNotJoined.stderr).to.equal(2)
    expect(subscribeNotJoined.stderr).to.match(/mesh subscribe demo --join/)

    // --join joins first; publishing alone then reaches nobody (exit 0, with a note)
    const joined = spawnCli(['subscribe', 'demo', '--join', '--data-dir', join(dir, 'g'), '--json'], {
      cwd: dir,
    })
    await joined.waitForEvent((e) => e.event === 'subscribed', { what: 'subscribed after --join' })
    const alone = await runCliProcess(['publish', 'demo', 'anyone?', '--data-dir', join(dir, 'g')], {
      cwd: dir,
    })
    expect(alone.code, alone.stderr).to.equal(0)
    expect(alone.stdout).to.match(/sent to 0 peers/)
    expect(alone.stderr).to.match(/nobody got it/)
    expect((await joined.signal('SIGINT')).code).to.equal(0)
    for (const n of [plain, node])
      expect((await n.proc.signal('SIGINT', { timeoutMs: 15_000 })).code).to.equal(0)
  })
})
