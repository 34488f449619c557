/**
 * A peer that dies without a goodbye (issue 12): its QUIC connections must close within seconds. A
 * SIGKILLed process's TCP connections are reset by its kernel; its QUIC connections just go silent, and
 * used to stay open until libp2p's connection monitor missed a ping (every 10 s, timeout >= 5 s: 5 to
 * 15 s) or the 30 s idle timeout, so dead members stayed in topic views that long. The quic plugin's
 * defaults (maxIdleTimeout 4 s, keep-alive 1 s) close them 4 to 5 s after the death.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { MeshError, resolveConfig } from 'meshkit'
import { builtinPlugins, identify, ping, quic } from 'meshkit/plugins'
import { killAll, spawnCli } from './cli-helpers.js'
import { LoopbackNodes, TEST_ENV } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

describe('resilience: a QUIC peer killed without a goodbye', function () {
  this.timeout(40_000)
  let dir: Awaited<ReturnType<typeof tempDir>>
  const nodes = new LoopbackNodes(
    () => dir.dir,
    () => [identify(), ping(), quic()],
  )
  beforeEach(async () => {
    dir = await tempDir('meshkit-quic-kill-')
  })
  afterEach(async () => {
    await killAll()
    await nodes.closeAll()
    await dir.cleanup()
  })

  it('closes the connection within 6 s of the SIGKILL by QUIC alone (no connection monitor; was 30 s)', async () => {
    await writeFile(
      join(dir.dir, 'mesh.config.json'),
      JSON.stringify({
        datastore: 'memory',
        network: { addressScope: 'all' },
        bootstrap: { minConnections: 0 },
        plugins: ['identify', 'ping', 'quic'],
      }),
    )
    const victim = spawnCli(
      [
        'start',
        '--json',
        '--no-control',
        '--data-dir',
        join(dir.dir, 'victim'),
        '--listen',
        '/ip4/127.0.0.1/udp/0/quic-v1',
      ],
      { cwd: dir.dir },
    )
    const started = await victim.waitForEvent((e) => e.event === 'started', {
      timeoutMs: 30_000,
      what: 'the victim started',
    })
    const address = (started.addresses as string[]).find((a) => a.includes('/quic-v1'))!
    const observer = await nodes.start('observer', { listen: ['/ip4/127.0.0.1/udp/0/quic-v1'] })
    // only QUIC itself may notice the dead peer: the observer's connection monitor (libp2p internals,
    // no config reaches it) is stopped, or its ping timeout could close the connection 5 to 15 s in
    const monitor = (
      observer.node.libp2p as unknown as { components: { connectionMonitor?: { stop(): void } } }
    ).components.connectionMonitor
    expect(monitor, 'the connection monitor to stop').to.not.equal(undefined)
    monitor?.stop()
    const peer = String(started.peerId)
    const connection = await observer.node.libp2p.dial(multiaddr(address))
    expect(connection.remoteAddr.toString()).to.include('/quic-v1')
    // packets both ways for a while (identify, keep-alives): the connection is settled, not new
    await new Promise((r) => setTimeout(r, 1500))
    expect(connection.status).to.equal('open')

    const killedAt = Date.now()
    victim.child.kill('SIGKILL')
    await waitFor(() => connection.status === 'closed', { timeoutMs: 20_000, what: 'the connection closed' })
    const ms = Date.now() - killedAt
    console.log(`      closed ${ms} ms after the SIGKILL`)
    expect(
      observer.node.libp2p.getConnections().filter((c) => c.remotePeer.toString() === peer),
    ).to.have.length(0)
    expect(ms).to.be.below(6000)
  })

  it('rejects a keep-alive not shorter than the idle timeout (idle connections would close)', () => {
    let err: unknown
    try {
      resolveConfig(
        { plugins: [identify(), quic({ keepAliveInterval: 5000 })] },
        { env: TEST_ENV, registry: builtinPlugins },
      )
    } catch (e) {
      err = e
    }
    expect(err).to.be.instanceOf(MeshError)
    expect((err as MeshError).code).to.equal('MESH_ERR_CONFIG_INVALID')
    expect((err as Error).message).to.match(
      /keepAliveInterval \(5000 ms\) is not shorter than maxIdleTimeout \(4000 ms\)/,
    )
  })
})
