/**
 * Zero-config meshes on one machine: `mesh start --local --topic t` with no config file (the defaults have
 * topic discovery); `--data-dir` means the same directory for every command.
 */
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { type CliProcess, cliTempDirs, runCliProcess, spawnCli } from './cli-helpers.js'

describe('mesh start --local (no config file)', function () {
  this.timeout(120_000)
  const tempDirOfTest = cliTempDirs('meshkit-cli-local-')

  it('five processes with --local --dial <first> --topic t all find each other within 10 s', async () => {
    const dir = tempDirOfTest()
    const procs: CliProcess[] = []
    try {
      const start = (i: number, dial?: string) => {
        const args = [
          'start',
          '--local',
          '--json',
          '--no-control',
          '--topic',
          't',
          '--data-dir',
          join(dir, `n${i}`),
        ]
        const proc = spawnCli(dial ? [...args, '--dial', dial] : args, { cwd: dir })
        procs.push(proc)
        return proc
      }
      const first = start(0)
      const started = await first.waitForEvent((e) => e.event === 'started', { timeoutMs: 30_000 })
      const addresses = started.addresses as string[]
      expect(
        addresses.every((a) => a.startsWith('/ip4/127.0.0.1/')),
        'loopback only',
      ).to.equal(true)
      const address = addresses.find((a) => a.includes('/tcp/'))!
      for (let i = 1; i < 5; i++) start(i, address)
      const ids = await Promise.all(
        procs.map(
          async (p) => (await p.waitForEvent((e) => e.event === 'started', { timeoutMs: 30_000 })).peerId,
        ),
      )
      const allStarted = Date.now()
      const peersOf = (p: CliProcess) =>
        new Set(
          p.events.filter((e) => e.event === 'topic:peer' && e.topic === 't').map((e) => e.peerId as string),
        )
      const deadline = allStarted + 10_000
      while (Date.now() < deadline && !procs.every((p) => peersOf(p).size >= 4))
        await new Promise((r) => setTimeout(r, 100))
      const took = Date.now() - allStarted
      procs.forEach((p, i) => {
        const peers = peersOf(p)
        expect([...peers].sort(), `node ${i}: ${p.stderr.slice(-500)}`).to.deep.equal(
          ids.filter((_, j) => j !== i).sort(),
        )
      })
      console.log(`      5 local processes: every topic peer found ${took} ms after the last started`)
    } finally {
      await Promise.all(procs.map((p) => p.kill()))
    }
  })

  it('--data-dir is relative to the working directory for every command, with a config elsewhere', async () => {
    const dir = tempDirOfTest()
    await mkdir(join(dir, 'sub'))
    await writeFile(join(dir, 'sub', 'x.config.json'), JSON.stringify({ datastore: 'memory' }))
    const proc = spawnCli(
      ['start', '--config', 'sub/x.config.json', '--data-dir', 'd', '--local', '--json'],
      {
        cwd: dir,
      },
    )
    try {
      await proc.waitForEvent((e) => e.event === 'control', { timeoutMs: 30_000 })
      expect(existsSync(join(dir, 'd', 'identity.key')), 'the data in ./d').to.equal(true)
      expect(existsSync(join(dir, 'sub', 'd')), 'not beside the config').to.equal(false)
      const status = await runCliProcess(['status', '--data-dir', 'd', '--json'], {
        cwd: dir,
        timeoutMs: 30_000,
      })
      expect(status.code, status.stderr).to.equal(0)
    } finally {
      await proc.kill()
    }
  })
})
