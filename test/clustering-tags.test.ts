/**
 * The tag exchange (/mesh/tags/1.0.0) of jaccardClusters: the wire format against bad input, two nodes
 * that exchange tags on connect and on change and land in the same cluster, and raw streams with bad
 * bytes from a plain js-libp2p node (each reset, the node keeps working).
 */
import { noise as plainNoise } from '@chainsafe/libp2p-noise'
import { yamux as plainYamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { tcp as plainTcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import type { MeshConfig } from 'meshkit'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { Uint8ArrayList } from 'uint8arraylist'
import {
  CLUSTER_PEER_TAG,
  type ClusteringService,
  decodeLengthPrefix,
  decodeTags,
  encodeTags,
  jaccardClusters,
  TAG_LIMITS,
  TAGS_PROTOCOL,
  TagsWireError,
} from '../plugins/jaccard-clusters/index.js'
import { connectedTo, eventsOf, LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { lengthPrefixed, readLengthPrefixed, varint } from './fixtures/topics.js'
import { tempDir, waitFor } from './helpers.js'

const utf8 = (s: string) => new TextEncoder().encode(s)
const json = (value: unknown) => utf8(JSON.stringify(value))

function expectWireError(fn: () => unknown, pattern: RegExp): void {
  let error: unknown
  try {
    fn()
  } catch (err) {
    error = err
  }
  expect(error, `rejected with ${pattern}`).to.be.instanceOf(TagsWireError)
  expect((error as Error).message).to.match(pattern)
}

describe('clustering: tags wire format', () => {
  it('round-trips a tag set, dropping duplicates and unknown fields', () => {
    expect(decodeTags(encodeTags(['a', 'b']))).to.deep.equal({ v: 1, tags: ['a', 'b'] })
    expect(decodeTags(json({ v: 1, tags: ['a', 'a', 'b'], extra: 1 }))).to.deep.equal({
      v: 1,
      tags: ['a', 'b'],
    })
    const full = Array.from({ length: TAG_LIMITS.maxTags }, (_, i) =>
      `${i}`.padStart(TAG_LIMITS.maxTagLength, 'x'),
    )
    expect(decodeTags(encodeTags(full)).tags).to.have.length(64)
  })

  it('rejects bad messages', () => {
    expectWireError(
      () => decodeTags(new Uint8Array(TAG_LIMITS.maxMessageBytes + 1).fill(0x20)),
      /bytes \(max 8192\)/,
    )
    expectWireError(() => decodeTags(utf8('{"v":1,"tags":[')), /not UTF-8 JSON/)
    expectWireError(() => decodeTags(Uint8Array.from([0xc3, 0x28])), /not UTF-8 JSON/)
    for (const v of ['[1]', 'null', '"x"', '3']) expectWireError(() => decodeTags(utf8(v)), /not an object/)
    for (const v of [2, '1', undefined])
      expectWireError(() => decodeTags(json({ v, tags: [] })), /unknown version/)
    for (const tags of ['a', { 0: 'a' }, null, undefined])
      expectWireError(() => decodeTags(json({ v: 1, tags })), /tags is not an array/)
    expectWireError(
      () => decodeTags(json({ v: 1, tags: Array.from({ length: 65 }, (_, i) => `t${i}`) })),
      /65 tags/,
    )
    for (const bad of ['', 'x'.repeat(65), 7, null, ['a']])
      expectWireError(() => decodeTags(json({ v: 1, tags: [bad] })), /bad tag/)
  })
})

describe('clustering: tags length prefix', () => {
  const list = (bytes: number[]) => new Uint8ArrayList(Uint8Array.from(bytes))
  it('decodes prefixes of up to 2 bytes, asks for more, and refuses a longer one at once', () => {
    expect(decodeLengthPrefix(list([5]))).to.equal(5)
    expect(decodeLengthPrefix(list([...varint(8192)]))).to.equal(8192)
    expect(decodeLengthPrefix(list([...varint(16383)]))).to.equal(16383) // too long: lpStream refuses it
    expect(() => decodeLengthPrefix(list([0x80]))).to.throw(RangeError) // incomplete: lpStream reads on
    expectWireError(() => decodeLengthPrefix(list([0x80, 0x80])), /length prefix longer than 2 bytes/)
    expectWireError(() => decodeLengthPrefix(list(new Array(1000).fill(0xff))), /longer than 2 bytes/)
  })
})

describe('clustering: tag exchange between nodes', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  let plain: Libp2p | undefined

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  afterEach(async () => {
    await Promise.resolve(plain?.stop()).catch(() => {})
    plain = undefined
    await nodes.closeAll()
    await cleanup()
  })

  const clusteringOf = (n: TestNode) => n.node.api<ClusteringService>('clustering')
  const start = (
    name: string,
    tags: string[],
    extra: Record<string, unknown> = {},
    config: MeshConfig = {},
  ) => nodes.start(name, { ...config, plugins: [jaccardClusters({ tags, pingInterval: '300ms', ...extra })] })

  it('exchanges tags on connect and on change; both land in the same cluster', async () => {
    const a = await start('a', ['ml', 'nn', 'ai'])
    const b = await start('b', ['ml', 'nn', 'ai', 'gpu'])
    const ca = clusteringOf(a)
    const cb = clusteringOf(b)
    await a.node.libp2p.dial(multiaddr(b.address))
    await waitFor(() => ca.clustersOf(b.peerId).length > 0 && cb.clustersOf(a.peerId).length > 0, {
      what: 'tags exchanged both ways',
    })
    // b's tags (jaccard 0.75 with a's) made a cluster that a belongs to, and the other way round
    expect(ca.ownClusters()).to.deep.equal(ca.clustersOf(b.peerId))
    expect(cb.ownClusters()).to.deep.equal(cb.clustersOf(a.peerId))
    expect(ca.getCluster(ca.ownClusters()[0])?.tags).to.deep.equal(new Set(['ai', 'gpu', 'ml', 'nn']))

    // the best member of a's cluster is protected and measured
    await waitFor(() => ca.protectedPeers().includes(b.peerId), { what: 'b protected on a' })
    const peer = await a.node.libp2p.peerStore.get(peerIdFromString(b.peerId))
    expect(peer.tags.get(CLUSTER_PEER_TAG)?.value).to.equal(100)
    await waitFor(() => ca.bestPeers(ca.ownClusters()[0], 1)[0]?.metrics.rttMs !== undefined, {
      what: 'an RTT for b',
    })
    expect(ca.bestPeers(ca.ownClusters()[0], 1)[0].metrics).to.include({ method: 'direct', failures: 0 })

    // a change is pushed: b leaves a's cluster for a new one of its own, and loses its protection
    const before = ca.clustersOf(b.peerId)
    cb.setTags(['bread', 'cheese'])
    await waitFor(() => ca.clustersOf(b.peerId).join() === 'tags:bread,cheese', { what: 'b reassigned on a' })
    expect(before).not.to.include('tags:bread,cheese')
    expect(eventsOf(a, 'cluster:peer-removed').map((e) => e.reason)).to.include('reassigned')
    await waitFor(() => ca.protectedPeers().length === 0, { what: 'b unprotected on a' })
    await waitFor(
      async () => {
        const p = await a.node.libp2p.peerStore.get(peerIdFromString(b.peerId))
        return !p.tags.has(CLUSTER_PEER_TAG)
      },
      { what: 'peer tag removed' },
    )
    // and the other way: a's change reaches b
    ca.setTags(['cheese', 'bread'])
    await waitFor(
      () => cb.ownClusters().length === 1 && cb.clustersOf(a.peerId).join() === cb.ownClusters().join(),
      {
        what: "a's new tags on b",
      },
    )
    expect(() => ca.setTags(['x'.repeat(65)])).to.throw(TagsWireError)
    expect(ca.tags()).to.deep.equal(['cheese', 'bread'])
  })

  it('dials members of a short cluster back, with backoff while they are unreachable', async () => {
    const a = await start(
      'a',
      ['ml', 'nn'],
      { maintainInterval: '200ms' },
      // one dial per peer's word a second at most by default (10 s): short here to see the backoff
      { security: { peerDialInterval: '100ms' } },
    )
    const b = await start('b', ['ml', 'nn'], { targetConnectionsPerCluster: 0 })
    const ca = clusteringOf(a)
    // a reaches b itself (an outbound connection): a reason to dial b again later
    await a.node.libp2p.dial(multiaddr(b.address))
    await waitFor(() => ca.clustersOf(b.peerId).length === 1, { what: 'b assigned on a' })
    expect(ca.isTrusted(b.peerId)).to.equal(true)
    // a's only cluster has 1 connected member of the 4 wanted: when b goes, a dials it again
    await a.node.libp2p.hangUp(peerIdFromString(b.peerId))
    await waitFor(() => connectedTo(a, b.peerId), { what: 'a redials b' })
    const cluster = ca.ownClusters()[0]
    expect(ca.bestPeers(cluster, 1)[0].metrics.failures).to.equal(0)
    // b gone for good: dials fail, each counted, spaced 1 s, 2 s, 4 s... (not every 200 ms)
    const goneAt = Date.now()
    await b.close()
    await waitFor(() => ca.bestPeers(cluster, 1)[0]?.metrics.failures >= 1, { what: 'a failed dial counted' })
    await new Promise((r) => setTimeout(r, 3_500 - (Date.now() - goneAt)))
    expect(ca.bestPeers(cluster, 1)[0].metrics.failures, 'dials in 3.5 s').to.be.within(1, 3)
  })

  it('does not dial back a member that connected to it, claimed its tags and left', async () => {
    const a = await start(
      'a',
      ['ml', 'nn'],
      { maintainInterval: '200ms', trustAfter: '5s' },
      { security: { peerDialInterval: '100ms' } },
    )
    const b = await start('b', ['ml', 'nn'], { targetConnectionsPerCluster: 0 })
    const ca = clusteringOf(a)
    await b.node.libp2p.dial(multiaddr(a.address))
    await waitFor(() => ca.clustersOf(b.peerId).length === 1, { what: 'b assigned on a' })
    expect(ca.isTrusted(b.peerId), 'an inbound peer connected < trustAfter').to.equal(false)
    await b.node.libp2p.hangUp(peerIdFromString(a.peerId))
    await waitFor(() => !connectedTo(a, b.peerId), { what: 'b gone' })
    // a's cluster is short of members and b (still up) is its only one: still, a does not dial it
    await new Promise((r) => setTimeout(r, 1_500))
    expect(connectedTo(a, b.peerId), 'a dialled b back').to.equal(false)
    expect(ca.bestPeers(ca.ownClusters()[0], 1)[0].metrics.failures).to.equal(0)
    expect(ca.clustersOf(b.peerId), 'b stays a known member').to.have.length(1)
  })

  it('forgets a member without trust soon after it left, keeps a trusted one until inactiveAfter', async () => {
    const a = await start('a', ['ml', 'nn'], { maintainInterval: '200ms', forgetUntrustedAfter: '1s' })
    const b = await start('b', ['ml', 'nn'], { targetConnectionsPerCluster: 0 })
    const c = await start('c', ['ml', 'nn'], { targetConnectionsPerCluster: 0 })
    const ca = clusteringOf(a)
    await b.node.libp2p.dial(multiaddr(a.address)) // b came to a: no reason to trust it
    await a.node.libp2p.dial(multiaddr(c.address)) // a reached c itself
    await waitFor(() => ca.clustersOf(b.peerId).length === 1 && ca.clustersOf(c.peerId).length === 1, {
      what: 'b and c assigned on a',
    })
    await b.close()
    await c.close()
    await waitFor(() => ca.clustersOf(b.peerId).length === 0, { timeoutMs: 5_000, what: 'b forgotten' })
    const removed = eventsOf(a, 'cluster:peer-removed').find((e) => e.peerId === b.peerId)
    expect(removed?.reason).to.equal('inactive')
    expect(ca.clustersOf(c.peerId), 'c is kept (inactiveAfter is 5 min)').to.have.length(1)
  })

  it('resets the stream on bad bytes, penalizes malformed ones, learns nothing, and keeps working', async () => {
    const a = await start('a', ['ml', 'nn'])
    const ca = clusteringOf(a)
    // each case from a fresh identity: four malformed messages from one peer get it banned
    const fresh = async () => {
      await Promise.resolve(plain?.stop()).catch(() => {})
      plain = await createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [plainTcp()],
        connectionEncrypters: [plainNoise()],
        streamMuxers: [plainYamux()],
      })
      return plain
    }
    // [what, bytes, malformed: the peer's bytes provably break the format (a cut-off stream does not)]
    const cases: Array<[string, Uint8Array, boolean]> = [
      [
        'a length prefix above 8 KiB',
        Uint8Array.from([...varint(TAG_LIMITS.maxMessageBytes + 1), 0x7b]),
        true,
      ],
      ['a 2^40 length prefix', varint(2 ** 40), true],
      ['an over-long varint', new Uint8Array(16).fill(0xff), true],
      ['a length prefix that never ends (256 KiB)', new Uint8Array(256 * 1024).fill(0xff), true],
      ['a truncated message', Uint8Array.from([...varint(100), ...utf8('{"v":1')]), false],
      ['an empty stream', new Uint8Array(0), false],
      ['invalid JSON', lengthPrefixed(utf8('{"v":1,"tags":[')), true],
      ['invalid UTF-8', lengthPrefixed(Uint8Array.from([0xc3, 0x28, 0xff])), true],
      ['a JSON array', lengthPrefixed(utf8('["ml"]')), true],
      ['version 2', lengthPrefixed(json({ v: 2, tags: ['ml'] })), true],
      ['65 tags', lengthPrefixed(json({ v: 1, tags: Array.from({ length: 65 }, (_, i) => `t${i}`) })), true],
      ['a 65-character tag', lengthPrefixed(json({ v: 1, tags: ['x'.repeat(65)] })), true],
      ['a number as tag', lengthPrefixed(json({ v: 1, tags: ['ml', 7] })), true],
      ['tags as a string', lengthPrefixed(json({ v: 1, tags: 'ml' })), true],
      ['garbage bytes', Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256), true],
    ]
    for (const [what, bytes, malformed] of cases) {
      const node = await fresh()
      const id = node.peerId.toString()
      const before = eventsOf(a, 'clustering:protocol-error').length
      const reply = await rawTags(node, a.address, bytes)
      expect(reply.ended, `${what}: the stream is reset`).to.equal('reset')
      expect(reply.json, `${what}: no answer`).to.equal(undefined)
      await waitFor(() => eventsOf(a, 'clustering:protocol-error').length > before, {
        what: `${what}: clustering:protocol-error`,
      })
      expect(eventsOf(a, 'clustering:protocol-error').at(-1)?.peerId, what).to.equal(id)
      expect(a.node.reputation.penalty(id), `${what}: penalty`).to.be.closeTo(malformed ? 25 : 0, 0.1)
    }
    expect(ca.size, 'nothing learned').to.equal(0)
    expect(a.node.state).to.equal('started')

    // a valid message is answered with a's tags, and assigns the plain node
    const node = await fresh()
    const reply = await rawTags(node, a.address, lengthPrefixed(json({ v: 1, tags: ['ml', 'nn', 'ai'] })))
    expect(reply.ended).to.equal('closed')
    expect(reply.json).to.deep.equal({ v: 1, tags: ['ml', 'nn'] })
    expect(ca.clustersOf(node.peerId.toString())).to.deep.equal(['tags:ai,ml,nn'])
    expect(a.node.reputation.penalty(node.peerId.toString())).to.equal(0)
  })
})

interface RawReply {
  ended: 'closed' | 'reset' | 'timeout'
  json?: unknown
}

/** Opens a raw tags stream, sends `bytes`, closes the writable end and reads until the remote ends it. */
async function rawTags(
  libp2p: Libp2p,
  target: string,
  bytes: Uint8Array,
  timeoutMs = 15_000,
): Promise<RawReply> {
  const signal = AbortSignal.timeout(timeoutMs)
  const stream = await libp2p.dialProtocol(multiaddr(target), TAGS_PROTOCOL, { signal })
  const chunks: Uint8Array[] = []
  let error: Error | undefined
  const reading = (async () => {
    try {
      for await (const chunk of stream) chunks.push(chunk.subarray())
    } catch (err) {
      error = err as Error
    }
  })()
  try {
    if (bytes.byteLength > 0) stream.send(bytes)
    await stream.close({ signal })
  } catch (err) {
    error ??= err as Error
  }
  const timedOut = await Promise.race([
    reading.then(() => false),
    new Promise<boolean>((r) => signal.addEventListener('abort', () => r(true), { once: true })),
  ])
  if (timedOut) stream.abort(new Error('test timeout'))
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0))
  let offset = 0
  for (const c of chunks) {
    all.set(c, offset)
    offset += c.byteLength
  }
  const reply: RawReply = {
    ended: timedOut ? 'timeout' : error || stream.status === 'reset' ? 'reset' : 'closed',
  }
  const payload = readLengthPrefixed(all)
  if (payload) {
    try {
      reply.json = JSON.parse(new TextDecoder().decode(payload))
    } catch {
      // not JSON
    }
  }
  return reply
}
