/**
 * libp2p's connection monitor pings every connection every 10 s on a stream of its own; other pings
 * (kad-dht checking a new contact, clustering's RTT, a relay's liveness) go through the ping service.
 * With @libp2p/ping's limit of one outbound ping stream per connection, the two met and the monitor
 * aborted healthy connections ("TooManyOutboundProtocolStreamsError ... /ipfs/ping/1.0.0 - 2/1", then
 * "aborting connection due to ping failure"). Meshkit's ping plugin allows the monitor its own stream
 * and coalesces the service's pings per peer.
 */
import { expect } from 'chai'
import type { MeshPlugin } from 'meshkit'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { coalescePings } from '../plugins/ping/index.js'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

type PingService = { ping(peer: unknown, options?: { signal?: AbortSignal }): Promise<number> }

describe('ping: no connection is aborted by a ping collision', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-ping-'))
    nodes = new LoopbackNodes(
      () => dir,
      (): MeshPlugin[] => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  it('keeps a connection up through the connection monitor while both sides ping it without pause', async () => {
    const a = await nodes.start('a')
    const b = await nodes.start('b')
    const connection = await a.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0])
    await waitFor(() => b.node.libp2p.getConnections(a.node.peerId).length > 0, { what: "b's side" })
    const pingA = a.node.libp2p.services.ping as PingService
    const pingB = b.node.libp2p.services.ping as PingService
    let pings = 0
    const errors: string[] = []
    // longer than the monitor's 10 s interval, so that its ping meets the others
    const until = Date.now() + 11_000
    const loop = async (service: PingService, peer: unknown) => {
      while (Date.now() < until && connection.status === 'open') {
        try {
          await service.ping(peer, { signal: AbortSignal.timeout(5000) })
          pings++
        } catch (err) {
          errors.push((err as Error).message)
          await new Promise((r) => setTimeout(r, 10))
        }
      }
    }
    await Promise.all([
      ...[0, 1, 2].map(() => loop(pingA, b.node.peerId)),
      ...[0, 1].map(() => loop(pingB, a.node.peerId)),
    ])
    expect(connection.status, `the connection survived (errors: ${errors.slice(0, 3).join('; ')})`).to.equal(
      'open',
    )
    expect(errors.length, `no ping failed: ${[...new Set(errors)].slice(0, 3).join('; ')}`).to.equal(0)
    expect(pings).to.be.greaterThan(100)
    // stock @libp2p/ping (one outbound stream) fails here: its pings collide (846 refused in one run) and
    // the monitor aborts the connection at ~10 s
  })
})

describe('ping: coalesced pings', () => {
  it('a failed ping whose only caller had given up (aborted signal) is no unhandled rejection', async () => {
    // the simulator caught one (StreamStateError from a ping on a closing stream, kad-dht checking a
    // contact with a signal already aborted): an unhandled rejection ends a Node process
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const service = {
        ping: () =>
          new Promise<number>((_, reject) => setTimeout(() => reject(new Error('stream closed')), 5)),
      }
      const coalesced = coalescePings(service as never) as unknown as PingService
      const aborted = AbortSignal.abort(new Error('gave up'))
      const first = await coalesced.ping('peer-a', { signal: aborted }).catch((err: Error) => err.message)
      expect(first).to.equal('gave up')
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(unhandled, 'unhandled rejections').to.deep.equal([])
      // the others who wait for the shared ping still get its failure
      const second = await coalesced.ping('peer-b').catch((err: Error) => err.message)
      expect(second).to.equal('stream closed')
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
