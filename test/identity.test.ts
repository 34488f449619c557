import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, chown, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { expect } from 'chai'
import { builtinPlugins, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { type ErrorCode, isMeshError } from '../src/core/errors.js'
import { IDENTITY_FILE, loadOrCreateIdentity } from '../src/core/identity.js'
import { createLogger } from '../src/core/logger.js'
import { ensurePrivateDir, makeDir } from '../src/core/make-dir.js'
import { startMesh } from '../src/core/start-mesh.js'
import { othersCanReach, tempDir } from './helpers.js'

const modeOf = async (path: string) => ((await stat(path)).mode & 0o777).toString(8)

/** Runs `fn`, expecting a MeshError with `code`; returns it. */
async function expectMeshError(fn: () => Promise<unknown>, code: ErrorCode) {
  try {
    await fn()
  } catch (err) {
    expect(isMeshError(err), `a MeshError, got ${err}`).to.equal(true)
    if (!isMeshError(err)) throw err
    expect(err.code, err.message).to.equal(code)
    expect(err.userError).to.equal(true)
    expect(err.hint).to.be.a('string').and.not.equal('')
    return err
  }
  throw new Error(`expected ${code}, but nothing was thrown`)
}

describe('loadOrCreateIdentity', () => {
  let dir: string
  let cleanup: () => Promise<void>

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-identity-'))
  })

  afterEach(() => cleanup())

  it('creates the data dir (0700) and an Ed25519 key in identity.key with mode 0600', async () => {
    const dataDir = join(dir, 'nested', 'data')
    const id = await loadOrCreateIdentity(dataDir)
    expect(id.created).to.equal(true)
    expect(id.file).to.equal(join(dataDir, IDENTITY_FILE))
    expect(id.privateKey.type).to.equal('Ed25519')
    expect(id.peerId.type).to.equal('Ed25519')
    expect(id.peerId.toString()).to.match(/^12D3KooW/)
    expect(await modeOf(id.file)).to.equal('600')
    expect(await modeOf(dataDir)).to.equal('700')
    // the file holds exactly this key, and no temp file is left behind
    expect(
      Buffer.from(await readFile(id.file)).equals(Buffer.from(privateKeyToProtobuf(id.privateKey))),
    ).to.equal(true)
    expect(await readdir(dataDir)).to.deep.equal([IDENTITY_FILE])
  })

  it('loads the same key (same peer id) on a second call, without rewriting the file', async () => {
    const first = await loadOrCreateIdentity(dir)
    const before = await readFile(first.file)
    const mtime = (await stat(first.file)).mtimeMs
    const second = await loadOrCreateIdentity(dir)
    expect(second.created).to.equal(false)
    expect(second.peerId.toString()).to.equal(first.peerId.toString())
    expect(second.privateKey.equals(first.privateKey)).to.equal(true)
    expect((await readFile(first.file)).equals(before)).to.equal(true)
    expect((await stat(first.file)).mtimeMs).to.equal(mtime)
  })

  it('gives concurrent first loads of one data dir the same key', async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, () => loadOrCreateIdentity(dir)))
    const peerIds = new Set(ids.map((i) => i.peerId.toString()))
    expect(peerIds.size, [...peerIds].join(', ')).to.equal(1)
    expect(ids.filter((i) => i.created)).to.have.length(1)
    const onDisk = await loadOrCreateIdentity(dir)
    expect(onDisk.peerId.toString()).to.equal(ids[0].peerId.toString())
    expect(await readdir(dir)).to.deep.equal([IDENTITY_FILE])
  })

  it('restricts an existing key readable by others to 0600, with a warning', async () => {
    const { file, peerId } = await loadOrCreateIdentity(dir)
    await chmod(file, 0o644)
    const lines: string[] = []
    const logger = createLogger({ level: 'warn', write: (l) => lines.push(l) })
    const again = await loadOrCreateIdentity(dir, logger)
    expect(again.peerId.toString()).to.equal(peerId.toString())
    expect(await modeOf(file)).to.equal('600')
    expect(lines.some((l) => l.includes('WARN') && l.includes('644'))).to.equal(true)
  })

  describe('a corrupt identity.key is an error and is never overwritten', () => {
    const cases: Array<[string, () => Promise<Uint8Array>]> = [
      // 40 random bytes cannot hold a valid key: an Ed25519 key alone is 64 bytes plus its framing
      ['random bytes', async () => randomBytes(40)],
      ['an empty file', async () => new Uint8Array(0)],
      [
        'a truncated key',
        async () => {
          const { mkdtemp } = await import('node:fs/promises')
          const other = await mkdtemp(join(dir, 'other-'))
          const bytes = await readFile((await loadOrCreateIdentity(other)).file)
          return bytes.subarray(0, bytes.length - 10)
        },
      ],
      ['text', async () => new TextEncoder().encode('-----BEGIN PRIVATE KEY-----\nnot this format\n')],
    ]
    for (const [name, content] of cases) {
      it(name, async () => {
        const file = join(dir, IDENTITY_FILE)
        const bytes = await content()
        await writeFile(file, bytes, { mode: 0o600 })
        const err = await expectMeshError(() => loadOrCreateIdentity(dir), 'MESH_ERR_IDENTITY_CORRUPT')
        expect(err.message).to.include(file)
        expect(err.hint).to.match(/never overwrites/)
        expect(Buffer.from(await readFile(file)).equals(Buffer.from(bytes))).to.equal(true)
        // a second attempt fails the same way: nothing was "repaired" in between
        await expectMeshError(() => loadOrCreateIdentity(dir), 'MESH_ERR_IDENTITY_CORRUPT')
        expect(Buffer.from(await readFile(file)).equals(Buffer.from(bytes))).to.equal(true)
        expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).to.deep.equal([])
      })
    }
  })

  describe('an unreadable identity.key', () => {
    it('chmod 000: MESH_ERR_IDENTITY_UNREADABLE, file unchanged', async function () {
      // root reads any file regardless of its mode, so a 0000 file is readable there: nothing to test
      if (process.getuid?.() === 0) this.skip()
      const { file } = await loadOrCreateIdentity(dir)
      const before = await readFile(file)
      await chmod(file, 0o000)
      try {
        const err = await expectMeshError(() => loadOrCreateIdentity(dir), 'MESH_ERR_IDENTITY_UNREADABLE')
        expect(err.message).to.include(file)
      } finally {
        await chmod(file, 0o600)
      }
      expect((await readFile(file)).equals(before)).to.equal(true)
    })

    it('identity.key is a directory: MESH_ERR_IDENTITY_UNREADABLE, left as it is', async () => {
      // unreadable even for root (EISDIR), which the tests may run as
      const file = join(dir, IDENTITY_FILE)
      await mkdir(file)
      await writeFile(join(file, 'keep'), 'x')
      const err = await expectMeshError(() => loadOrCreateIdentity(dir), 'MESH_ERR_IDENTITY_UNREADABLE')
      expect(err.message).to.include(file)
      expect((await stat(file)).isDirectory()).to.equal(true)
      expect(await readdir(file)).to.deep.equal(['keep'])
    })
  })

  describe('an unusable data dir', () => {
    it('a path that is a file: MESH_ERR_DATA_DIR, the file unchanged', async () => {
      const file = join(dir, 'data')
      await writeFile(file, 'not a dir')
      const err = await expectMeshError(() => loadOrCreateIdentity(file), 'MESH_ERR_DATA_DIR')
      expect(err.message).to.include(file)
      expect(await readFile(file, 'utf8')).to.equal('not a dir')
    })

    it('a path below a file: MESH_ERR_DATA_DIR', async () => {
      const file = join(dir, 'data')
      await writeFile(file, 'not a dir')
      const err = await expectMeshError(() => loadOrCreateIdentity(join(file, 'sub')), 'MESH_ERR_DATA_DIR')
      expect(err.message).to.include(join(file, 'sub'))
    })

    it('a path where nothing can be made (/proc/...): MESH_ERR_DATA_DIR at once, no endless loop', async () => {
      // Node's mkdir(recursive) loops forever here; makeDir() goes one level at a time
      const t0 = Date.now()
      const err = await expectMeshError(
        () => loadOrCreateIdentity('/proc/meshkit-nope/data'),
        'MESH_ERR_DATA_DIR',
      )
      expect(err.message).to.include('/proc/meshkit-nope/data').and.include('ENOENT')
      expect(Date.now() - t0).to.be.below(2000)
    })

    it('makeDir: makes the missing levels with the mode, tolerates existing ones, refuses a file on the way', async () => {
      const deep = join(dir, 'a', 'b', 'c')
      await makeDir(deep, 0o700)
      expect((await stat(deep)).isDirectory()).to.equal(true)
      expect((await stat(join(dir, 'a'))).mode & 0o777).to.equal(0o700)
      await makeDir(deep)
      await Promise.all([makeDir(join(deep, 'x', 'y')), makeDir(join(deep, 'x', 'z'))])
      expect((await readdir(join(deep, 'x'))).sort()).to.deep.equal(['y', 'z'])
      await writeFile(join(dir, 'f'), 'x')
      const err = await makeDir(join(dir, 'f', 'g')).then(
        () => undefined,
        (e: NodeJS.ErrnoException) => e,
      )
      expect(err?.code).to.equal('ENOTDIR')
    })
  })

  describe('a private data dir (a hostile local user reads nothing)', () => {
    /** Runs `code` as the unprivileged user 'nobody' (the tests may run as root); its exit code. */
    const asNobody = (code: string) =>
      spawnSync(process.execPath, ['-e', code], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 10_000 })

    it('tightens an existing data dir that others can open (0755) to 0700, with a warning naming it', async () => {
      const dataDir = join(dir, 'data')
      await mkdir(dataDir, { mode: 0o755 })
      await chmod(dataDir, 0o755)
      const lines: string[] = []
      await loadOrCreateIdentity(dataDir, createLogger({ level: 'warn', write: (l) => lines.push(l) }))
      expect(await modeOf(dataDir)).to.equal('700')
      expect(lines.join('\n')).to.include(dataDir).and.include('0755')
      // already private: no warning the next time
      lines.length = 0
      await loadOrCreateIdentity(dataDir, createLogger({ level: 'warn', write: (l) => lines.push(l) }))
      expect(lines).to.deep.equal([])
    })

    it('warns, naming it, about a data dir open to others that belongs to another user', async function () {
      if (process.getuid?.() !== 0) this.skip() // only root can make a directory that another user owns
      const dataDir = join(dir, 'theirs')
      await mkdir(dataDir)
      await chmod(dataDir, 0o755)
      await chown(dataDir, 65534, 65534)
      const lines: string[] = []
      await ensurePrivateDir(dataDir, createLogger({ level: 'warn', write: (l) => lines.push(l) }))
      expect(await modeOf(dataDir), 'not changed: it is not ours').to.equal('755')
      expect(lines.join('\n')).to.include(dataDir).and.include('uid 65534').and.include('chmod 700')
    })

    it('another local user can read neither the identity nor the datastore of a node (even in a dir left at 0755)', async function () {
      if (process.getuid?.() !== 0) this.skip() // needs a second user to play the attacker
      // the attacker runs this node binary: not possible from a checkout inside a private (0700) directory
      if (!othersCanReach(process.execPath)) this.skip()
      this.timeout(30_000)
      // a data dir and datastore as an older Meshkit or a `mkdir` left them: open to everyone
      await chmod(dir, 0o755)
      const dataDir = join(dir, 'node')
      await mkdir(join(dataDir, 'datastore'), { recursive: true, mode: 0o755 })
      await chmod(dataDir, 0o755)
      await chmod(join(dataDir, 'datastore'), 0o755)
      const lines: string[] = []
      const mesh = await startMesh({
        config: {
          dataDir,
          datastore: 'persistent',
          logLevel: 'warn',
          listen: ['/ip4/127.0.0.1/tcp/0'],
          plugins: [identify(), ping(), noise(), yamux(), tcp()],
        },
        registry: builtinPlugins,
        logger: createLogger({ level: 'warn', write: (l) => lines.push(l) }),
      })
      try {
        expect(await modeOf(dataDir)).to.equal('700')
        expect(await modeOf(join(dataDir, 'datastore'))).to.equal('700')
        expect(lines.join('\n')).to.include(join(dataDir, 'datastore'))
        // the attacker: list the datastore, read its LevelDB files and the key
        const attack = asNobody(`
          const fs = require('fs')
          const tried = []
          for (const f of [${JSON.stringify(join(dataDir, 'datastore'))}]) { try { fs.readdirSync(f); tried.push('listed ' + f) } catch (e) { tried.push(e.code) } }
          for (const f of [${JSON.stringify(join(dataDir, 'identity.key'))}, ${JSON.stringify(join(dataDir, 'datastore', 'CURRENT'))}]) { try { fs.readFileSync(f); tried.push('read ' + f) } catch (e) { tried.push(e.code) } }
          console.log(JSON.stringify(tried))`)
        expect(attack.status, attack.stderr).to.equal(0)
        expect(JSON.parse(attack.stdout)).to.deep.equal(['EACCES', 'EACCES', 'EACCES'])
      } finally {
        await mesh.close()
      }
    })
  })
})
