/**
 * The greeter plugin in real Meshkit nodes on loopback (node:test; run with `npm test`).
 * Node runs these TypeScript files directly (type stripping), against the source in src/.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { isMeshError, type MeshConfig, type MeshEvent, type RunningMesh, startMesh } from 'meshkit'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { GREETER_PROTOCOL, type GreeterApi, greeter } from '../src/index.ts'

let dir: string
const running: RunningMesh[] = []

/** A node on 127.0.0.1 with an in-memory datastore, its identity in a temp dir. */
async function startNode(name: string, greeting: string, dial: string[] = []): Promise<RunningMesh> {
  const config: MeshConfig = {
    name,
    dataDir: join(dir, name),
    datastore: 'memory',
    logLevel: 'warn',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    dial,
    connections: { allow: ['/ip4/127.0.0.1'] },
    network: { addressScope: 'all' },
    plugins: [identify(), ping(), noise(), yamux(), tcp(), greeter({ greeting })],
  }
  const mesh = await startMesh({ config, cwd: dir })
  running.push(mesh)
  return mesh
}

/** Resolves when `check` holds, polling; rejects after `ms`. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

describe('greeter', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'greeter-test-'))
  })
  after(async () => {
    await Promise.all(running.map((m) => m.close()))
    await rm(dir, { recursive: true, force: true })
  })

  it('two nodes greet each other over /greeter/1.0.0', async () => {
    const alice = await startNode('alice', 'hi from alice')
    const address = alice.node.libp2p.getMultiaddrs().map(String)[0]
    const bob = await startNode('bob', 'hello from bob', [address])
    const alicePeer = alice.node.peerId.toString()
    const bobPeer = bob.node.peerId.toString()
    await until(() => bob.node.libp2p.getConnections().length > 0, 10_000, 'bob to connect to alice')

    const greeted: MeshEvent[] = []
    alice.kernel.events.on('greeter:greeted', (e) => greeted.push(e))
    const answer = await bob.node.api<GreeterApi>('greeter').greet(alicePeer)

    assert.equal(answer, 'hi from alice')
    assert.deepEqual(
      greeted.map((e) => ({ from: e.from, greeting: e.greeting })),
      [{ from: bobPeer, greeting: 'hello from bob' }],
    )
    assert.deepEqual(bob.node.api<GreeterApi>('greeter').stats(), { sent: 1, received: 0 })
    assert.deepEqual(alice.node.api<GreeterApi>('greeter').stats(), { sent: 0, received: 1 })
    // and the other way round
    assert.equal(await alice.node.api<GreeterApi>('greeter').greet(bobPeer), 'hello from bob')
  })

  it('greeting a peer it is not connected to fails clearly', async () => {
    const carol = await startNode('carol', 'hey')
    await assert.rejects(
      carol.node.api<GreeterApi>('greeter').greet('12D3KooWNotConnectedPeerxxxxxxxxxxxxxxxxxxxxxxxxxx'),
      (err: unknown) => {
        // a coded error with a fix-it hint
        assert.ok(isMeshError(err, 'GREETER_ERR_NOT_CONNECTED'), String(err))
        assert.match(err.message, /not connected/)
        assert.match(err.hint ?? '', /dial it first/)
        return true
      },
    )
  })

  it('rejects invalid options with the option path, before anything starts', async () => {
    await assert.rejects(
      startMesh({
        cwd: dir,
        config: {
          dataDir: join(dir, 'bad'),
          plugins: [identify(), ping(), noise(), yamux(), tcp(), greeter({ greeting: '' })],
        },
      }),
      (err: unknown) => {
        assert.ok(isMeshError(err), String(err))
        assert.equal(err.code, 'MESH_ERR_CONFIG_INVALID')
        assert.match(err.message, /greeter\)\.greeting/)
        return true
      },
    )
  })

  it('stops serving the protocol when the node stops', async () => {
    const dave = await startNode('dave', 'bye')
    assert.ok(dave.node.libp2p.getProtocols().includes(GREETER_PROTOCOL))
    await dave.close()
    assert.ok(!dave.node.libp2p.getProtocols().includes(GREETER_PROTOCOL))
  })
})
