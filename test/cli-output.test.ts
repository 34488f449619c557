/**
 * src/cli/output.ts: colours (off with NO_COLOR, off when not a TTY), the live status line in a TTY,
 * plain lines otherwise; and `mesh start`'s startup progress (first peer, NAT type) in real processes.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { colorsEnabled, createColors, createOutput, formatMs } from '../src/cli/output.js'
import { BASE_PLUGIN_NAMES, cliTempDirs, spawnCli, startNode } from './cli-helpers.js'
import { freePort } from './helpers.js'

const ESC = '\u001b['
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function capture(isTTY: boolean, env: NodeJS.ProcessEnv = {}) {
  const out: string[] = []
  const log: string[] = []
  const output = createOutput({
    write: (t) => out.push(t),
    writeLog: (t) => log.push(t),
    isTTY,
    env,
    intervalMs: 10,
  })
  return { output, out, log, text: () => out.join('') }
}

describe('cli output', () => {
  describe('colours', () => {
    it('are on in a TTY, off when not a TTY', () => {
      expect(colorsEnabled(true, {})).to.equal(true)
      expect(colorsEnabled(false, {})).to.equal(false)
    })

    it('are off with NO_COLOR (any non-empty value), even with FORCE_COLOR', () => {
      expect(colorsEnabled(true, { NO_COLOR: '1' })).to.equal(false)
      expect(colorsEnabled(true, { NO_COLOR: 'yes', FORCE_COLOR: '1' })).to.equal(false)
      // no-color.org: an empty NO_COLOR does not count
      expect(colorsEnabled(true, { NO_COLOR: '' })).to.equal(true)
    })

    it('FORCE_COLOR turns them on outside a TTY (0 turns them off); TERM=dumb off', () => {
      expect(colorsEnabled(false, { FORCE_COLOR: '1' })).to.equal(true)
      expect(colorsEnabled(true, { FORCE_COLOR: '0' })).to.equal(false)
      expect(colorsEnabled(true, { TERM: 'dumb' })).to.equal(false)
    })

    it('style with ANSI codes only when enabled', () => {
      expect(createColors(true).green('ok')).to.equal(`${ESC}32mok${ESC}39m`)
      expect(createColors(false).green('ok')).to.equal('ok')
      expect(createColors(false).bold('x')).to.equal('x')
    })
  })

  it('formats durations for humans', () => {
    expect(formatMs(850)).to.equal('850 ms')
    expect(formatMs(2400)).to.equal('2.4 s')
    expect(formatMs(65_000)).to.equal('1 min 5 s')
  })

  describe('progress when not a TTY', () => {
    it('prints plain lines: one when a step starts, one when it ends; no escape codes, no redraws', async () => {
      const { output, text } = capture(false)
      const step = output.step('waiting for the first peer')
      step.update('redrawn text is not printed')
      await sleep(50)
      step.update('retry 2 in 1.0 s', { plain: true })
      step.succeed('connected to QmPeer')
      step.succeed('a second end is ignored')
      output.line('after')
      expect(text()).to.equal(
        '… waiting for the first peer\n  retry 2 in 1.0 s\n✔ connected to QmPeer\nafter\n',
      )
      expect(text()).not.to.contain(ESC)
      expect(text()).not.to.contain('\r')
    })

    it('fail and warn print their lines; the default text carries the elapsed time', () => {
      const { output, text } = capture(false)
      output.step('installing').fail()
      output.step('detecting').warn('no answer')
      expect(text()).to.match(/^… installing\n✖ installing \(\d+ ms\)\n… detecting\n! no answer\n$/)
    })

    it('log lines go to the log writer unchanged', () => {
      const { output, out, log } = capture(false)
      output.step('waiting')
      output.log('2026-01-01T00:00:00.000Z INFO  hello')
      expect(log).to.deep.equal(['2026-01-01T00:00:00.000Z INFO  hello\n'])
      expect(out.join('')).to.equal('… waiting\n')
    })

    it('stays plain with FORCE_COLOR but adds colour codes; NO_COLOR removes them', () => {
      const forced = capture(false, { FORCE_COLOR: '1' })
      forced.output.step('x').succeed('done')
      expect(forced.text()).to.equal(`… x\n${ESC}32m✔${ESC}39m done\n`)
      const noColor = capture(false, { FORCE_COLOR: '1', NO_COLOR: '1' })
      noColor.output.step('x').succeed('done')
      expect(noColor.text()).to.equal('… x\n✔ done\n')
    })
  })

  describe('progress in a TTY', () => {
    it('draws a spinner line redrawn in place, then replaces it with the result', async () => {
      const { output, out, text } = capture(true)
      const step = output.step('waiting for the first peer')
      await sleep(80)
      const frames = out.filter((t) => t.includes('waiting for the first peer'))
      expect(frames.length, 'redrawn several times').to.be.greaterThan(2)
      expect(new Set(frames).size, 'the spinner moves').to.be.greaterThan(1)
      expect(text()).to.contain(`\r${ESC}2K`)
      step.succeed('connected')
      const after = out.length
      await sleep(40)
      expect(out.length, 'no redraw once no step runs').to.equal(after)
      expect(text().endsWith(`\r${ESC}2K${ESC}32m✔${ESC}39m connected\n`)).to.equal(true)
    })

    it('shows concurrent steps on one line and clears it around log lines', async () => {
      const { output, out, log } = capture(true)
      const a = output.step('peers')
      output.step('NAT')
      await sleep(30)
      expect(out.at(-1)).to.match(/peers.*·.*NAT/)
      output.log('a log line')
      expect(log).to.deep.equal(['a log line\n'])
      // cleared before the log line, redrawn after it
      expect(out.slice(-2)[0]).to.equal(`\r${ESC}2K`)
      expect(out.at(-1)).to.contain('NAT')
      a.succeed('peer found')
      expect(out.at(-1)).to.contain('NAT')
      expect(out.at(-1)).not.to.contain('peers')
      output.close()
      expect(out.at(-1)).to.equal(`\r${ESC}2K`)
    })

    it('with NO_COLOR still animates but has no colour codes', async () => {
      const { output, text } = capture(true, { NO_COLOR: '1' })
      const step = output.step('waiting')
      await sleep(30)
      step.succeed('done')
      // only the line-clearing sequence, no SGR colour codes
      expect(text().replaceAll(`${ESC}2K`, '')).not.to.contain(ESC)
      expect(text()).to.contain('✔ done\n')
    })
  })

  describe('mesh start progress (real processes, stdout not a TTY)', function () {
    this.timeout(90_000)
    const tempDirOfTest = cliTempDirs('meshkit-cli-output-')
    let dir: string
    beforeEach(() => {
      dir = tempDirOfTest()
    })

    it('prints "waiting for the first peer" then the peer as plain lines, with --json unchanged', async () => {
      const port = await freePort()
      await writeFile(
        join(dir, 'mesh.config.json'),
        JSON.stringify({
          plugins: [
            ...BASE_PLUGIN_NAMES,
            { plugin: 'static-peers', options: { peers: [`/ip4/127.0.0.1/tcp/${port}`] } },
          ],
          bootstrap: { minConnections: 1, retryInitial: '200ms', retryMax: '500ms' },
          connections: { allow: ['/ip4/127.0.0.1'] },
          network: { addressScope: 'all' },
          logLevel: 'error',
        }),
      )
      const b = spawnCli(['start', '--data-dir', join(dir, 'b'), '--listen', '/ip4/127.0.0.1/tcp/0'], {
        cwd: dir,
        env: { FORCE_COLOR: undefined, NO_COLOR: undefined },
      })
      await b.waitForStdout(/^… waiting for the first peer$/, { timeoutMs: 30_000, what: 'the waiting line' })
      // the bootstrap peer appears only now, at the address B keeps trying
      const aProject = join(dir, 'a-project')
      await mkdir(aProject)
      await writeFile(
        join(aProject, 'mesh.config.json'),
        JSON.stringify({ plugins: ['identify', 'ping', 'noise', 'yamux', 'tcp'], logLevel: 'error' }),
      )
      const a = await startNode({
        cwd: aProject,
        dataDir: join(dir, 'a'),
        listen: [`/ip4/127.0.0.1/tcp/${port}`],
      })
      const done = await b.waitForStdout(/^✔ connected to /, {
        timeoutMs: 30_000,
        what: 'the connected line',
      })
      expect(done).to.match(new RegExp(`^✔ connected to ${a.peerId} \\(\\d+(\\.\\d)? m?s\\)$`))
      expect(b.stdout).not.to.contain(ESC)
      expect(b.stdout).not.to.contain('\r')
      // A runs with --json: its stdout stays JSON lines only
      for (const line of a.proc.stdoutLines) expect(() => JSON.parse(line), line).not.to.throw()
      await b.signal('SIGINT', { timeoutMs: 15_000 })
      await a.proc.signal('SIGINT', { timeoutMs: 15_000 })
      expect(b.exit?.code, b.describe()).to.equal(0)
    })

    it('prints the NAT type once the classifier has run', async () => {
      const p = 20_000 + Math.floor(Math.random() * 12_000)
      await writeFile(
        join(dir, 'mesh.config.json'),
        JSON.stringify({
          plugins: [
            'identify',
            'noise',
            'yamux',
            'tcp',
            {
              plugin: 'nat-probe-server',
              options: { udpPorts: [p, p + 1], addresses: ['127.0.0.1', '127.0.0.2'] },
            },
            { plugin: 'nat-classifier', options: { servers: [`127.0.0.1:${p}`], localAddress: '127.0.0.1' } },
          ],
          datastore: 'memory',
          logLevel: 'error',
        }),
      )
      const n = spawnCli(['start', '--data-dir', join(dir, 'n'), '--listen', '/ip4/127.0.0.1/tcp/0'], {
        cwd: dir,
        env: { NO_COLOR: '1' },
      })
      const line = await n.waitForStdout(/^✔ NAT type: /, { timeoutMs: 30_000, what: 'the NAT line' })
      expect(line).to.match(/^✔ NAT type: UDP public, TCP public/)
      expect(n.stdout).not.to.contain(ESC)
      await n.signal('SIGINT', { timeoutMs: 15_000 })
      expect(n.exit?.code, n.describe()).to.equal(0)
    })
  })
})
