/**
 * Duplicate connections (two peers that dial each other at once): the rule both ends apply
 * (connectionToKeep: same answer from either side), a real pair of Meshkit nodes with two connections
 * ending with the same one on both sides and no disconnect, and a duplicate that carries a long-lived
 * stream left open.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify as plainIdentify } from '@libp2p/identify'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { tcp as plainTcp } from '@libp2p/tcp'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import { createLogger } from 'meshkit'
import { identify, noise as meshNoise, yamux as meshYamux, ping, tcp } from 'meshkit/plugins'
import { closeDuplicateConnections, connectionToKeep } from '../src/core/duplicate-connections.js'
import { eventsOf, LoopbackNodes } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

const A = '12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
const B = '12D3KooWBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'

/** A connection as one end sees it: `dialer` dialled it, opened at `open`. */
function fake(self: string, remote: string, dialer: string, open: number, limited = false): Connection {
  return {
    remotePeer: { toString: () => remote },
    direction: dialer === self ? 'outbound' : 'inbound',
    status: 'open',
    timeline: { open },
    limits: limited ? { bytes: 1n } : undefined,
    dialer,
  } as unknown as Connection
}

describe('duplicate connections: the rule', () => {
  it('both ends keep the connection the lower id dialled, whatever order they saw them in', () => {
    // a dialled b at 10 (b saw it at 12), b dialled a at 11 (a saw it at 9)
    const atA = [fake(A, B, B, 9), fake(A, B, A, 10)]
    const atB = [fake(B, A, A, 12), fake(B, A, B, 11)]
    const lower = A < B ? A : B
    expect((connectionToKeep(A, atA) as unknown as { dialer: string }).dialer).to.equal(lower)
    expect((connectionToKeep(B, atB) as unknown as { dialer: string }).dialer).to.equal(lower)
  })

  it('the same dialer twice: the oldest; fewer than two direct: nothing to do; relayed ones do not count', () => {
    const twice = [fake(A, B, B, 20), fake(A, B, B, 5)]
    expect(connectionToKeep(A, twice)?.timeline.open).to.equal(5)
    expect(connectionToKeep(A, [fake(A, B, A, 1)])).to.equal(undefined)
    expect(connectionToKeep(A, [fake(A, B, A, 1), fake(A, B, B, 2, true)])).to.equal(undefined)
  })
})

describe('duplicate connections: live nodes', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const plains: Libp2p[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), meshNoise(), meshYamux(), tcp()],
    )
  })
  afterEach(async () => {
    for (const p of plains.splice(0)) await Promise.resolve(p.stop()).catch(() => {})
    await nodes.closeAll()
    await cleanup()
  })

  it('two Meshkit nodes that dialled each other end with one connection, the same on both sides, never disconnected', async () => {
    const a = await nodes.start('a')
    const b = await nodes.start('b')
    // a dialled b, and b dialled a as well (forced past libp2p's reuse of the open connection): what two
    // members that learn of each other at once end up with
    await a.node.libp2p.dial(b.node.libp2p.getMultiaddrs()[0])
    await b.node.libp2p.dial(a.node.libp2p.getMultiaddrs()[0], { force: true })
    // a duplicate on both ends (the listener side counts its inbound one a moment after the dialler)
    await waitFor(
      () => a.node.libp2p.getConnections().length === 2 && b.node.libp2p.getConnections().length === 2,
      {
        timeoutMs: 5_000,
      },
    )
    const lowerIsA = a.peerId < b.peerId
    await waitFor(
      () => a.node.libp2p.getConnections().length === 1 && b.node.libp2p.getConnections().length === 1,
      { timeoutMs: 15_000 },
    )
    const [ca] = a.node.libp2p.getConnections()
    const [cb] = b.node.libp2p.getConnections()
    expect(ca.direction, 'kept: the one the lower id dialled').to.equal(lowerIsA ? 'outbound' : 'inbound')
    expect(cb.direction).to.equal(lowerIsA ? 'inbound' : 'outbound')
    // still reachable through the connection kept
    const stream = await ca.newStream('/ipfs/ping/1.0.0')
    stream.abort(new Error('enough'))
    expect(eventsOf(a, 'peer:disconnect')).to.have.length(0)
    expect(eventsOf(b, 'peer:disconnect')).to.have.length(0)
  })

  it('a duplicate that carries a stream stays open; once the stream ends it is closed', async () => {
    const plain = async () => {
      const node = await createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [plainTcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: { identify: plainIdentify() },
      })
      plains.push(node)
      await node.handle('/test/hold/1.0.0', () => {})
      return node
    }
    const [x, y] = [await plain(), await plain()]
    const logger = createLogger({ level: 'silent' })
    const init = { settleMs: 100, retryMs: 100, attempts: 1_000 }
    const guards = [closeDuplicateConnections(x, logger, init), closeDuplicateConnections(y, logger, init)]
    try {
      const first = await x.dial(y.getMultiaddrs()[0])
      const second = await y.dial(x.getMultiaddrs()[0], { force: true })
      expect(first.id).to.not.equal(second.id)
      // the loser: the connection the higher id dialled; open a stream on it and hold it
      const lowerIsX = x.peerId.toString() < y.peerId.toString()
      const loser = lowerIsX ? second : first
      const held: Stream = await loser.newStream('/test/hold/1.0.0')
      await new Promise((r) => setTimeout(r, 800))
      expect(loser.status, 'a duplicate with a stream is left open').to.equal('open')
      expect(x.getConnections()).to.have.length(2)
      held.abort(new Error('done'))
      await waitFor(() => x.getConnections().length === 1 && y.getConnections().length === 1, {
        timeoutMs: 10_000,
      })
      expect(loser.status).to.not.equal('open')
      expect(
        guards.reduce((n, g) => n + g.closed(), 0),
        'closed from both ends',
      ).to.be.greaterThan(0)
    } finally {
      for (const g of guards) g.stop()
    }
  })
})
