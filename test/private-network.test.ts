/**
 * privateNetwork({ psk | pskFile }) and `mesh keygen psk`: the key format (never printed), the config
 * checks (no key, QUIC/WebRTC), key files (missing, unreadable, malformed, readable by others), nodes in
 * one process with the same or another key, and real `mesh start` processes with and without the key.
 */
import { chmod, lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import {
  createLogger,
  diffConfig,
  isMeshError,
  type MeshError,
  MeshKernel,
  type MeshPlugin,
  resolveConfig,
} from 'meshkit'
import {
  builtinPlugins,
  generatePsk,
  holePunch,
  identify,
  noise,
  PreSharedKey,
  PskFormatError,
  parsePsk,
  ping,
  privateNetwork,
  quic,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { type KeygenPskOptions, keygenPskCommand } from '../src/cli/keygen-command.js'
import type { CliIo } from '../src/cli/run-cli.js'
import { BASE_PLUGIN_NAMES, cliTempDirs, runCliProcess, type StartedNode, startNode } from './cli-helpers.js'
import { LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'

const HEX = /^[0-9a-f]{64}$/m
const keyHex = (text: string) => text.split('\n')[2]

describe('private network: the key', () => {
  it('generates and parses pnet key files; a key prints as its fingerprint only', () => {
    const text = generatePsk()
    expect(text).to.match(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    const psk = parsePsk(text)
    expect(psk.fingerprint).to.match(/^[0-9a-f]{16}$/)
    for (const shown of [String(psk), JSON.stringify({ psk }), inspect(psk), inspect({ psk }), `${psk}`])
      expect(shown, shown).not.to.contain(keyHex(text))
    expect(JSON.stringify({ psk })).to.contain(psk.fingerprint)
    // the same key is the same object (a reload sees it unchanged); CRLF, no final newline, bytes
    expect(parsePsk(text.replaceAll('\n', '\r\n'))).to.equal(psk)
    expect(parsePsk(text.trimEnd())).to.equal(psk)
    expect(parsePsk(new TextEncoder().encode(text))).to.equal(psk)
    expect(parsePsk(generatePsk())).not.to.equal(psk)
    expect(new TextDecoder().decode(psk.fileBytes())).to.equal(text)
  })

  it('says what is wrong with a key, never what it read', () => {
    const hex = keyHex(generatePsk())
    const cases: Array<[string, RegExp]> = [
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(2)}`, /31 bytes, expected 32/],
      [`/key/swarm/psk/1.0.0/\n/base64/\n${hex}`, /second line/],
      [`/key/swarm/psk/2.0.0/\n/base16/\n${hex}`, /first line/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(1)}z`, /not hexadecimal/],
      [hex, /1 lines/],
      [`/key/swarm/psk/1.0.0/\n/base16/\n${hex}\nextra`, /4 lines/],
    ]
    for (const [text, reason] of cases) {
      let error: unknown
      try {
        parsePsk(text)
      } catch (err) {
        error = err
      }
      expect(error, text).to.be.instanceOf(PskFormatError)
      expect((error as Error).message).to.match(reason)
      expect((error as Error).message).not.to.contain(hex.slice(4, 30))
    }
    expect(() => parsePsk(Uint8Array.from([0xc3, 0x28]))).to.throw(PskFormatError, /UTF-8/)
  })
})

describe('private network: the config', () => {
  const resolve = (plugins: unknown[], extra: Record<string, unknown> = {}) =>
    resolveConfig({ ...extra, plugins }, { env: TEST_ENV, registry: builtinPlugins })
  const problemOf = (fn: () => unknown): string => {
    try {
      fn()
    } catch (err) {
      expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID'), String(err)).to.equal(true)
      return (err as Error).message
    }
    throw new Error('the config was accepted')
  }
  const base = () => [identify(), noise(), yamux(), tcp()]

  it('refuses QUIC and WebRTC, which pnet cannot protect, naming both plugins', () => {
    const psk = generatePsk()
    const message = problemOf(() => resolve([...base(), quic(), privateNetwork({ psk })]))
    expect(message).to.contain('plugins[5](private-network)')
    expect(message).to.contain("plugin 'quic'")
    expect(message).to.contain('QUIC')
    expect(message).not.to.contain(keyHex(psk))
    const webrtc = problemOf(() => resolve([...base(), holePunch(), privateNetwork({ psk })]))
    expect(webrtc).to.contain("plugin 'hole-punch'")
    const listen = problemOf(() =>
      resolve([...base(), privateNetwork({ psk })], { listen: ['/ip4/127.0.0.1/udp/0/quic-v1'] }),
    )
    expect(listen).to.contain('listen address /ip4/127.0.0.1/udp/0/quic-v1')
    // TCP only is fine
    expect(resolve([...base(), privateNetwork({ psk })]).plugins.map((p) => p.plugin.name)).to.include(
      'private-network',
    )
  })

  it('a reload sees an unchanged key as unchanged, a new key as a change shown by fingerprint', () => {
    const psk = generatePsk()
    const config = (key: string) => resolve([...base(), privateNetwork({ psk: key })])
    const running = config(psk)
    expect(diffConfig(running, config(psk)).plugins.changed).to.deep.equal([])
    const next = generatePsk()
    const diff = diffConfig(running, config(next))
    expect(diff.rebuild, 'a new key needs a new node').to.equal(true)
    const shown = JSON.stringify(diff)
    expect(shown).to.contain(parsePsk(next).fingerprint)
    expect(shown).not.to.contain(keyHex(next))
    expect(shown).not.to.contain(keyHex(psk))
  })

  it('needs exactly one of psk and pskFile, and a valid psk (never echoed)', () => {
    expect(problemOf(() => resolve([...base(), privateNetwork()]))).to.contain('set `pskFile` (or `psk`)')
    expect(
      problemOf(() => resolve([...base(), privateNetwork({ psk: generatePsk(), pskFile: 'swarm.key' })])),
    ).to.contain('not both')
    const hex = keyHex(generatePsk())
    const bad = problemOf(() =>
      resolve([...base(), privateNetwork({ psk: `/key/swarm/psk/1.0.0/\n/base16/\n${hex}00` })]),
    )
    expect(bad).to.contain('psk is not a pnet pre-shared key: the key is 33 bytes')
    expect(bad).not.to.contain(hex)
  })
})

describe('private network: nodes', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const kernels: MeshKernel[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  afterEach(async () => {
    for (const k of kernels.splice(0)) await k.close().catch(() => {})
    await nodes.closeAll()
    await cleanup()
  })

  /** Whether `from` can connect to `to` (a wrong key fails only at the handshake's timeout: 2 s here). */
  const dialOk = (from: TestNode, to: string) =>
    from.node.libp2p.dial(multiaddr(to), { signal: AbortSignal.timeout(2_000) }).then(
      () => true,
      () => false,
    )

  it('connects nodes with the same key only (psk and pskFile alike)', async () => {
    const psk = generatePsk()
    await writeFile(join(dir, 'swarm.key'), psk, { mode: 0o600 })
    const a = await nodes.start('a', { plugins: [privateNetwork({ psk })] })
    const b = await nodes.start('b', { plugins: [privateNetwork({ pskFile: join(dir, 'swarm.key') })] })
    const other = await nodes.start('other', { plugins: [privateNetwork({ psk: generatePsk() })] })
    const open = await nodes.start('open')
    expect(a.node.api<{ fingerprint: string }>('private-network').fingerprint).to.equal(
      parsePsk(psk).fingerprint,
    )
    expect(await dialOk(b, a.address), 'same key').to.equal(true)
    expect(await dialOk(other, a.address), 'another key').to.equal(false)
    expect(await dialOk(open, a.address), 'no key').to.equal(false)
    expect(await dialOk(a, open.address), 'no key, the other way').to.equal(false)
    expect(a.node.libp2p.getPeers().map(String)).to.deep.equal([b.peerId])
  })

  /** Builds a node whose setup reads `pskFile`, returning the error (or undefined) and the log lines. */
  async function buildWith(pskFile: string): Promise<{ error?: unknown; logs: string[] }> {
    const logs: string[] = []
    const kernel = new MeshKernel({ env: TEST_ENV, logger: createLogger({ write: (l) => logs.push(l) }) })
    kernels.push(kernel)
    const config = resolveConfig(
      {
        dataDir: join(dir, 'node'),
        datastore: 'memory',
        listen: ['/ip4/127.0.0.1/tcp/0'],
        plugins: [identify(), noise(), yamux(), tcp(), privateNetwork({ pskFile }) as MeshPlugin],
      },
      { env: TEST_ENV, registry: builtinPlugins, root: dir },
    )
    try {
      await kernel.start(config)
      return { logs }
    } catch (error) {
      return { error, logs }
    }
  }

  it('refuses a missing, unreadable or malformed key file with a coded error that shows no key', async () => {
    const missing = await buildWith('nope.key')
    expect(isMeshError(missing.error, 'MESH_ERR_PLUGIN_HOOK_FAILED')).to.equal(true)
    expect((missing.error as MeshError).userError, 'printed without a stack trace').to.equal(true)
    expect((missing.error as Error).message).to.contain(`${join(dir, 'nope.key')} does not exist`)
    expect((missing.error as MeshError).hint).to.contain('mesh keygen psk')

    await mkdir(join(dir, 'a-dir'))
    const notFile = await buildWith('a-dir')
    expect((notFile.error as Error).message).to.contain('is not a regular file')

    const hex = keyHex(generatePsk())
    await writeFile(join(dir, 'bad.key'), `/key/swarm/psk/1.0.0/\n/base16/\n${hex}ff\n`, { mode: 0o600 })
    const malformed = await buildWith('bad.key')
    expect((malformed.error as Error).message).to.contain('is not a pnet key file: the key is 33 bytes')
    expect((malformed.error as MeshError).describe()).not.to.contain(hex)

    await writeFile(join(dir, 'big.key'), 'x'.repeat(5000), { mode: 0o600 })
    expect(((await buildWith('big.key')).error as Error).message).to.contain('is 5000 bytes')
  })

  it('warns when others can read the key file, and logs only its fingerprint', async () => {
    const psk = generatePsk()
    await writeFile(join(dir, 'open.key'), psk, { mode: 0o644 })
    const { error, logs } = await buildWith('open.key')
    expect(error).to.equal(undefined)
    expect(logs.join('\n')).to.match(/can be read by other users \(mode 644\): chmod 600/)
    expect(logs.join('\n')).to.contain(parsePsk(psk).fingerprint)
    expect(logs.join('\n')).not.to.contain(keyHex(psk))
  })
})

describe('mesh keygen psk', function () {
  this.timeout(60_000)
  const dir = cliTempDirs('meshkit-keygen-')

  /** The command in this process (the real process is tested once, below): exit code and output. */
  async function keygen(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = ''
    let stderr = ''
    const io: CliIo = {
      stdout: (text) => {
        stdout += text
      },
      stderr: (text) => {
        stderr += text
      },
    }
    const opts: KeygenPskOptions = { cwd: dir() }
    for (let i = 0; i < args.length; i++) {
      if (args[i] === '--out') opts.out = args[++i]
      else if (args[i] === '--force') opts.force = true
      else if (args[i] === '--stdout') opts.stdout = true
    }
    try {
      await keygenPskCommand(opts, io)
      return { code: 0, stdout, stderr }
    } catch (err) {
      if (!isMeshError(err) || !err.userError) throw err
      return { code: 2, stdout, stderr: `${stderr}error ${err.describe()}\n` }
    }
  }

  it('writes a new key 0600, prints where and how to use it, never the key (a real process)', async () => {
    const run = await runCliProcess(['keygen', 'psk'], { cwd: dir() })
    expect(run.code, run.stderr).to.equal(0)
    const file = join(dir(), 'swarm.key')
    const text = await readFile(file, 'utf8')
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    const psk = parsePsk(text)
    expect(run.stdout).to.contain(file)
    expect(run.stdout).to.contain(psk.fingerprint)
    expect(run.stdout).to.contain("privateNetwork({ pskFile: 'swarm.key' })")
    expect(run.stdout + run.stderr).not.to.contain(keyHex(text))
    expect(run.stdout + run.stderr).not.to.match(HEX)
    // and refuses to overwrite it: exit 2, a coded error with a fix, no stack trace
    const again = await runCliProcess(['keygen', 'psk'], { cwd: dir() })
    expect(again.code).to.equal(2)
    expect(again.stderr).to.match(/^error MESH_ERR_INVALID_ARGUMENT: .*already exists\n {2}Fix: pass --force/)
    expect(await readFile(file, 'utf8')).to.equal(text)
  })

  it('refuses to overwrite without --force; --force replaces the key, 0600', async () => {
    const first = await keygen('--out', 'k.key')
    expect(first.code).to.equal(0)
    const before = await readFile(join(dir(), 'k.key'), 'utf8')
    const again = await keygen('--out', 'k.key')
    expect(again.code).to.equal(2)
    expect(again.stderr).to.contain('MESH_ERR_INVALID_ARGUMENT')
    expect(again.stderr).to.contain('already exists')
    expect(again.stderr).to.contain('--force')
    expect(await readFile(join(dir(), 'k.key'), 'utf8')).to.equal(before)
    const forced = await keygen('--out', 'k.key', '--force')
    expect(forced.code, forced.stderr).to.equal(0)
    const after = await readFile(join(dir(), 'k.key'), 'utf8')
    expect(after).not.to.equal(before)
    expect((await stat(join(dir(), 'k.key'))).mode & 0o777).to.equal(0o600)
    expect(
      (await readdir(dir())).filter((f) => f.endsWith('.tmp')),
      'no temp file left',
    ).to.deep.equal([])
  })

  it('never follows a symlink at --out', async () => {
    const target = join(dir(), 'target.txt')
    await writeFile(target, 'precious\n')
    await symlink(target, join(dir(), 'link.key'))
    await symlink(join(dir(), 'nowhere'), join(dir(), 'dangling.key'))
    for (const name of ['link.key', 'dangling.key']) {
      const run = await keygen('--out', name)
      expect(run.code, `${name}: ${run.stdout}`).to.equal(2)
      expect(run.stderr).to.contain('already exists')
    }
    expect(await readFile(target, 'utf8')).to.equal('precious\n')
    await lstat(join(dir(), 'nowhere')).then(
      () => expect.fail('a file was created through the dangling link'),
      () => {},
    )
    // --force replaces the link itself with a key file; the file it pointed to is untouched
    const forced = await keygen('--out', 'link.key', '--force')
    expect(forced.code, forced.stderr).to.equal(0)
    const link = await lstat(join(dir(), 'link.key'))
    expect(link.isSymbolicLink()).to.equal(false)
    expect(link.mode & 0o777).to.equal(0o600)
    expect(await readFile(target, 'utf8')).to.equal('precious\n')
  })

  it('refuses a directory every user may write to (no sticky bit)', async () => {
    const open = join(dir(), 'open')
    await mkdir(open)
    await chmod(open, 0o777)
    const run = await keygen('--out', 'open/swarm.key')
    expect(run.code).to.equal(2)
    expect(run.stderr).to.contain('writable by every user (mode 777)')
    await chmod(open, 0o1777) // sticky, like /tmp: O_EXCL and O_NOFOLLOW are enough there
    expect((await keygen('--out', 'open/swarm.key')).code).to.equal(0)
  })

  it('--stdout prints the key and nothing else there, and writes no file', async () => {
    const run = await keygen('--stdout')
    expect(run.code).to.equal(0)
    const psk = parsePsk(run.stdout)
    expect(psk).to.be.instanceOf(PreSharedKey)
    expect(run.stdout.trim().split('\n')).to.have.length(3)
    expect(run.stderr).to.contain(psk.fingerprint)
    expect(await readdir(dir())).to.deep.equal([])
    expect((await keygen('--stdout', '--out', 'x.key')).code).to.equal(2)
  })
})

describe('private network: real `mesh start` processes', function () {
  this.timeout(120_000)
  const dir = cliTempDirs('meshkit-pnet-')

  /** A project dir with a mesh.config.json (TCP only), optionally with privateNetwork({ pskFile }). */
  async function project(name: string, key?: string): Promise<string> {
    const root = join(dir(), name)
    await mkdir(root, { recursive: true })
    const plugins: unknown[] = [...BASE_PLUGIN_NAMES]
    if (key) plugins.push({ plugin: 'private-network', options: { pskFile: key } })
    // a wrong key fails at the handshake's timeout: a short one keeps the test short
    await writeFile(
      join(root, 'mesh.config.json'),
      JSON.stringify({ plugins, connections: { dialTimeout: '3s' } }),
    )
    return root
  }
  const start = (root: string, dial: string[] = []): Promise<StartedNode> =>
    startNode({
      cwd: root,
      dataDir: join(root, '.mesh'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      dial,
      logLevel: 'info',
    })

  it('nodes without the key, or with another one, cannot connect; two with the same key can', async () => {
    const keys = join(dir(), 'keys')
    await mkdir(keys)
    for (const [file, extra] of [
      ['net.key', []],
      ['other.key', []],
    ] as const) {
      const run = await runCliProcess(['keygen', 'psk', '--out', join(keys, file), ...extra], { cwd: keys })
      expect(run.code, run.stderr).to.equal(0)
    }
    const a = await start(await project('a', join(keys, 'net.key')))
    const target = a.addresses[0]
    expect(a.proc.stderr).to.contain('private network: key')
    expect(a.proc.stderr + a.proc.stdout).not.to.contain(
      keyHex(await readFile(join(keys, 'net.key'), 'utf8')),
    )

    const b = await start(await project('b', join(keys, 'net.key')), [target])
    await Promise.all([
      a.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === b.peerId),
      b.proc.waitForEvent((e) => e.event === 'peer:connect' && e.peerId === a.peerId),
    ])

    const strangers = [
      await start(await project('open'), [target]),
      await start(await project('other', join(keys, 'other.key')), [target]),
    ]
    for (const s of strangers)
      await s.proc.waitForEvent((e) => e.event === 'dial:failed', { what: `${s.peerId}'s failed dial` })
    await new Promise((r) => setTimeout(r, 1_000))
    for (const s of strangers) {
      expect(
        s.proc.events.some((e) => e.event === 'peer:connect'),
        s.proc.describe(),
      ).to.equal(false)
      expect(a.proc.events.some((e) => e.event === 'peer:connect' && e.peerId === s.peerId)).to.equal(false)
    }
  })

  it('a config with quic and privateNetwork is MESH_ERR_CONFIG_INVALID naming both (exit 2)', async () => {
    const root = join(dir(), 'q')
    await mkdir(root)
    await writeFile(
      join(root, 'mesh.config.json'),
      JSON.stringify({
        plugins: [
          ...BASE_PLUGIN_NAMES,
          'quic',
          { plugin: 'private-network', options: { pskFile: 'swarm.key' } },
        ],
      }),
    )
    const run = await runCliProcess(
      ['start', '--data-dir', join(root, '.mesh'), '--listen', '/ip4/127.0.0.1/tcp/0'],
      {
        cwd: root,
      },
    )
    expect(run.code, run.stderr).to.equal(2)
    expect(run.stderr).to.contain('MESH_ERR_CONFIG_INVALID')
    expect(run.stderr).to.contain('(private-network)')
    expect(run.stderr).to.contain("plugin 'quic'")
  })

  it('a missing key file stops `mesh start` with a coded error and a fix, no stack trace', async () => {
    const root = await project('m', 'missing.key')
    const run = await runCliProcess(
      ['start', '--data-dir', join(root, '.mesh'), '--listen', '/ip4/127.0.0.1/tcp/0'],
      {
        cwd: root,
      },
    )
    expect(run.code, run.stderr).to.equal(2)
    expect(run.stderr).to.contain('MESH_ERR_PLUGIN_HOOK_FAILED')
    expect(run.stderr).to.contain(`${join(root, 'missing.key')} does not exist`)
    expect(run.stderr).to.contain('Fix:')
    expect(run.stderr).not.to.match(/^\s+at .+:\d+:\d+/m)
  })
})
