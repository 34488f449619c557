/**
 * kadTopics(): the TopicDiscovery API, topic keys, namespace isolation, DHT queries (closest peers,
 * abortable lookups), provider records across a restart, and interop with a plain js-libp2p node.
 * Small meshes on loopback (see fixtures/topics.ts).
 */
import { noise as plainNoise } from '@chainsafe/libp2p-noise'
import { yamux as plainYamux } from '@chainsafe/libp2p-yamux'
import { identify as plainIdentify } from '@libp2p/identify'
import type { Libp2p, PeerInfo } from '@libp2p/interface'
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping as plainPing } from '@libp2p/ping'
import { tcp as plainTcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import { topicKey } from 'meshkit/plugins'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { collectPeers, type TopicNode, TopicTestMesh } from './fixtures/topics.js'
import { waitFor } from './helpers.js'

/** Rejects (or throws) with a TypeError, whether `fn` throws, rejects, or fails when iterated. */
async function expectTypeError(fn: () => unknown, what: string): Promise<void> {
  let error: unknown
  try {
    const result = fn()
    if (result && typeof (result as Promise<unknown>).then === 'function') await result
    else if (result && Symbol.asyncIterator in (result as object)) {
      for await (const _ of result as AsyncIterable<unknown>) break
    }
  } catch (err) {
    error = err
  }
  expect(error, `${what} is rejected`).to.be.instanceOf(TypeError)
  expect((error as Error).message).to.match(/invalid topic/)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('kad-topics', function () {
  this.timeout(120_000)

  describe('API', () => {
    let mesh: TopicTestMesh
    let a: TopicNode
    let b: TopicNode
    let c: TopicNode

    before(async () => {
      mesh = await TopicTestMesh.create()
      await mesh.startBootstrap(1)
      ;[a, b, c] = await Promise.all([mesh.start(), mesh.start(), mesh.start()])
      for (const n of [a, b, c]) {
        await n.waitForEvent('peer:connect', () => true, { what: 'the bootstrap connection' })
      }
    })
    after(async () => {
      await mesh?.stop()
    })

    it('joins, lists, finds peers of and leaves topics', async () => {
      expect(a.api.topics()).to.deep.equal([])
      await Promise.all([a.api.join('chat'), b.api.join('chat'), c.api.join('other')])
      await a.api.join('chat') // idempotent
      expect(a.api.topics()).to.deep.equal(['chat'])
      expect(a.events('topic:joined', (e) => e.topic === 'chat')).to.have.length(1)
      await a.waitForEvent('topic:peer', (e) => e.topic === 'chat' && e.peerId === b.peerId)
      await b.waitForEvent('topic:peer', (e) => e.topic === 'chat' && e.peerId === a.peerId)
      expect(a.api.peers('chat')).to.deep.equal([b.peerId])
      expect(b.api.peers('chat')).to.deep.equal([a.peerId])
      expect(a.api.peers('other'), 'not joined: no peers').to.deep.equal([])
      expect(a.api.knownMembers('chat').map((m) => [m.peerId, m.state])).to.deep.equal([[b.peerId, 'peer']])
      expect(a.api.knownMembers('other'), 'not joined: none known').to.deep.equal([])
      const found = await collectPeers((signal) => a.api.findPeersForTopic('chat', { signal }), {
        timeoutMs: 10_000,
        stopWhen: (ids) => ids.has(b.peerId),
      })
      expect([...found]).to.deep.equal([b.peerId], 'b, never a itself nor c')

      await b.api.leave('chat')
      await b.api.leave('chat') // idempotent
      expect(b.api.topics()).to.deep.equal([])
      expect(b.api.peers('chat')).to.deep.equal([])
      expect(b.events('topic:left', (e) => e.topic === 'chat')).to.have.length(1)
      const lost = await a.waitForEvent('topic:peer:lost', (e) => e.topic === 'chat' && e.peerId === b.peerId)
      expect(lost.reason).to.equal('left')
      expect(a.api.peers('chat')).to.deep.equal([])
      expect(a.api.knownMembers('chat'), 'b left: no longer a member').to.deep.equal([])
      await a.api.leave('chat')
      await c.api.leave('other')
    })

    it('rejects invalid topic names', async () => {
      for (const bad of ['', 'x'.repeat(129)]) {
        await expectTypeError(() => a.api.join(bad), `join(${bad.length} chars)`)
        await expectTypeError(() => a.api.leave(bad), `leave(${bad.length} chars)`)
        await expectTypeError(() => a.api.announceTopic(bad), `announceTopic(${bad.length} chars)`)
        await expectTypeError(() => a.api.findPeersForTopic(bad), `findPeersForTopic(${bad.length} chars)`)
        await expectTypeError(() => a.api.topicKey(bad), `topicKey(${bad.length} chars)`)
      }
      await expectTypeError(() => a.api.join(42 as unknown as string), 'join(42)')
      expect(a.api.topics()).to.deep.equal([])
      await a.api.topicKey('x'.repeat(128)) // the longest valid name
    })

    it('keys a topic as CIDv1 (raw, sha2-256) of /<namespace>/topic/<name>', async () => {
      const expected = CID.createV1(
        raw.code,
        await sha256.digest(new TextEncoder().encode('/meshkit/topic/ai-research')),
      )
      const key = await a.api.topicKey('ai-research')
      expect(key.equals(expected)).to.equal(true)
      expect(key.version).to.equal(1)
      expect(key.code).to.equal(0x55)
      expect(key.multihash.code).to.equal(0x12)
      expect(key.toString()).to.match(/^bafkrei/)
      expect((await topicKey('meshkit', 'ai-research')).equals(expected)).to.equal(true)
      const other = CID.createV1(
        raw.code,
        await sha256.digest(new TextEncoder().encode('/acme/topic/ai-research')),
      )
      expect((await topicKey('acme', 'ai-research')).equals(other)).to.equal(true)
      expect(other.equals(expected)).to.equal(false)
      // UTF-8 names
      const utf8 = CID.createV1(
        raw.code,
        await sha256.digest(new TextEncoder().encode('/meshkit/topic/café ☕')),
      )
      expect((await a.api.topicKey('café ☕')).equals(utf8)).to.equal(true)
    })

    it('getClosestPeers returns DHT peers of the mesh', async () => {
      const meshIds = new Set(mesh.nodes.map((n) => n.peerId))
      for (const key of ['some key', new TextEncoder().encode('some bytes')]) {
        const peers = await collectPeers((signal) => a.api.getClosestPeers(key, { signal }), {
          timeoutMs: 20_000,
        })
        expect(peers.size, `closest peers of ${String(key)}`).to.be.greaterThan(0)
        for (const id of peers) expect(meshIds.has(id), `${id} is a mesh node`).to.equal(true)
      }
    })
  })

  describe('findPeersForTopic is abortable', () => {
    let mesh: TopicTestMesh
    let blackHole: Libp2p | undefined

    before(async () => {
      mesh = await TopicTestMesh.create()
    })
    after(async () => {
      if (blackHole) await Promise.resolve(blackHole.stop()).catch(() => {})
      await mesh?.stop()
    })

    it('stops a DHT lookup stuck on an unresponsive peer when its signal aborts', async () => {
      // a peer that speaks the mesh DHT protocol (says identify) but never answers a query: a lookup
      // through it waits for kad-dht's per-request timeout (5 s at least)
      blackHole = await createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [plainTcp()],
        connectionEncrypters: [plainNoise()],
        streamMuxers: [plainYamux()],
        services: { identify: plainIdentify() },
      })
      await blackHole.handle('/mesh/kad/1.0.0', () => {
        // read nothing, answer nothing
      })
      const node = await mesh.start({ dial: [], kad: { queryTimeout: '60s' } })
      await node.libp2p.dial(blackHole.getMultiaddrs()[0])
      await new Promise((r) => setTimeout(r, 500)) // identify -> routing table

      // without an abort, the lookup is still running after 2 s
      const control = new AbortController()
      let controlEnded = false
      const controlRun = (async () => {
        for await (const _ of node.api.findPeersForTopic('nobody', { signal: control.signal })) {
          // nothing to find
        }
      })()
        .catch(() => {})
        .finally(() => {
          controlEnded = true
        })
      await sleep(2_000)
      expect(controlEnded, 'the lookup hangs on the unresponsive peer').to.equal(false)
      control.abort()
      await controlRun

      // with one, it ends at once
      const abort = new AbortController()
      const started = Date.now()
      setTimeout(() => abort.abort(), 300)
      let error: unknown
      try {
        for await (const _ of node.api.findPeersForTopic('nobody', { signal: abort.signal })) {
          // nothing to find
        }
      } catch (err) {
        error = err
      }
      const took = Date.now() - started
      expect(took, 'ms until the aborted lookup ended').to.be.below(2_000)
      expect((error as Error | undefined)?.name, 'ends with an AbortError').to.equal('AbortError')
      // an already aborted signal stops it before any lookup
      const before = Date.now()
      await collectPeers(() => node.api.findPeersForTopic('nobody', { signal: AbortSignal.abort() }), {
        timeoutMs: 5_000,
      }).catch(() => {})
      expect(Date.now() - before).to.be.below(1_000)
    })
  })

  describe('namespaces', () => {
    let mesh: TopicTestMesh
    after(async () => {
      await mesh?.stop()
    })

    it('keeps meshes with different namespaces apart on one DHT', async () => {
      mesh = await TopicTestMesh.create()
      await mesh.startBootstrap(1)
      const [one1, one2, two] = await Promise.all([
        mesh.start({ topics: ['shared'], kad: { namespace: 'one' }, label: 'one#1' }),
        mesh.start({ topics: ['shared'], kad: { namespace: 'one' }, label: 'one#2' }),
        mesh.start({ topics: ['shared'], kad: { namespace: 'two' }, label: 'two' }),
      ])
      await one1.waitForEvent('topic:peer', (e) => e.peerId === one2.peerId)
      await one2.waitForEvent('topic:peer', (e) => e.peerId === one1.peerId)
      // the other namespace's node looks itself (DHT lookups, exchanges with everyone connected)
      const found = await collectPeers((signal) => two.api.findPeersForTopic('shared', { signal }), {
        timeoutMs: 4_000,
      })
      expect([...found]).to.deep.equal([])
      await sleep(1_000)
      expect(two.events('topic:peer')).to.deep.equal([])
      expect(two.api.peers('shared')).to.deep.equal([])
      for (const n of [one1, one2]) {
        expect(n.events('topic:peer', (e) => e.peerId === two.peerId)).to.deep.equal([])
      }
      expect((await one1.api.topicKey('shared')).equals(await two.api.topicKey('shared'))).to.equal(false)
    })
  })

  describe('provider records', () => {
    let mesh: TopicTestMesh
    after(async () => {
      await mesh?.stop()
    })

    it("records: 'datastore' keeps provider records across a restart (persistent datastore); 'memory' does not", async () => {
      mesh = await TopicTestMesh.create()
      const persistent = { datastore: 'persistent' as const }
      const keeper = await mesh.start({
        config: persistent,
        dirName: 'keeper',
        dial: [],
        kad: { records: 'datastore' },
        label: 'keeper',
      })
      const forgetter = await mesh.start({
        config: persistent,
        dirName: 'forgetter',
        dial: [keeper.addr],
        kad: { records: 'memory' },
        label: 'forgetter',
      })
      // the member's only DHT peers are these two: its announcement goes to both
      const member = await mesh.start({
        topics: ['persist'],
        dial: [keeper.addr, forgetter.addr],
        label: 'member',
      })
      await member.waitForEvent('topic:announced', (e) => e.topic === 'persist', { timeoutMs: 60_000 })
      const cid = await member.api.topicKey('persist')
      // ADD_PROVIDER is one-way: wait until both have stored it
      for (const n of [keeper, forgetter]) {
        const dht = n.libp2p.services.dht as KadDHT
        const holds = async () => {
          // the events from the node itself (PEER_RESPONSE, PROVIDER) come first: its local records
          for await (const e of dht.findProviders(cid, { signal: AbortSignal.timeout(5_000) })) {
            if (e.name === 'PROVIDER' && e.from.equals(n.libp2p.peerId)) {
              return e.providers.some((p) => p.id.equals(member.libp2p.peerId))
            }
            if (e.name !== 'PEER_RESPONSE' || !e.from.equals(n.libp2p.peerId)) return false
          }
          return false
        }
        await waitFor(holds, { timeoutMs: 15_000, intervalMs: 100, what: `${n.label} to hold the record` })
      }

      // stop everything, then restart each alone: only what its datastore kept can answer
      const memberId = member.peerId
      await Promise.all([...mesh.nodes].map((n) => mesh.close(n)))
      const forgetter2 = await mesh.start({
        config: persistent,
        dirName: 'forgetter',
        dial: [],
        kad: { records: 'memory' },
        label: 'forgetter again',
      })
      const forgotten = await collectPeers(
        (signal) => forgetter2.api.findPeersForTopic('persist', { signal }),
        {
          timeoutMs: 3_000,
        },
      )
      expect([...forgotten]).to.deep.equal([])
      await mesh.close(forgetter2)
      const keeper2 = await mesh.start({
        config: persistent,
        dirName: 'keeper',
        dial: [],
        kad: { records: 'datastore' },
        label: 'keeper again',
      })
      expect(keeper2.peerId).to.equal(keeper.peerId)
      const kept = await collectPeers((signal) => keeper2.api.findPeersForTopic('persist', { signal }), {
        timeoutMs: 5_000,
        stopWhen: (ids) => ids.has(memberId),
      })
      expect([...kept]).to.deep.equal([memberId])
    })
  })

  describe('interop with a plain js-libp2p node', () => {
    // This part uses no Meshkit code: a stock libp2p 3 node with @libp2p/kad-dht on /mesh/kad/1.0.0,
    // and the topic key computed with multiformats as documented (CIDv1 raw sha2-256 of
    // '/<namespace>/topic/<name>').
    const createPlainNode = () =>
      createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [plainTcp()],
        connectionEncrypters: [plainNoise()],
        streamMuxers: [plainYamux()],
        services: {
          identify: plainIdentify(),
          ping: plainPing(),
          dht: kadDHT({ protocol: '/mesh/kad/1.0.0', clientMode: false, peerInfoMapper: passthroughMapper }),
        },
      })
    const topicCid = async (namespace: string, name: string) =>
      CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`/${namespace}/topic/${name}`)))
    /** Providers of `cid` the node finds with dht.findProviders(), retried until `want` are found. */
    const findProviders = async (dht: KadDHT, cid: CID, want: string[], timeoutMs = 30_000) => {
      const found = new Map<string, PeerInfo>()
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline && !want.every((id) => found.has(id))) {
        try {
          for await (const event of dht.findProviders(cid, { signal: AbortSignal.timeout(10_000) })) {
            if (event.name !== 'PROVIDER') continue
            for (const p of event.providers) found.set(p.id.toString(), p)
            if (want.every((id) => found.has(id))) break
          }
        } catch {
          // no DHT peers yet, or the query timed out: try again
        }
        if (!want.every((id) => found.has(id))) await sleep(500)
      }
      return found
    }

    let mesh: TopicTestMesh
    let plain: Awaited<ReturnType<typeof createPlainNode>> | undefined
    after(async () => {
      if (plain) await Promise.resolve(plain.stop()).catch(() => {})
      await mesh?.stop()
    })

    it('finds Meshkit topic peers with dht.findProviders(cid), and Meshkit finds it', async () => {
      mesh = await TopicTestMesh.create()
      await mesh.startBootstrap(1)
      const members = await Promise.all([
        mesh.start({ topics: ['interop'] }),
        mesh.start({ topics: ['interop'] }),
      ])
      await Promise.all(
        members.map((m) =>
          m.waitForEvent('topic:announced', (e) => e.topic === 'interop', { timeoutMs: 60_000 }),
        ),
      )

      plain = await createPlainNode()
      await plain.dial(multiaddr(mesh.bootstrapAddrs[0]))
      const cid = await topicCid('meshkit', 'interop')
      const want = members.map((m) => m.peerId)
      const found = await findProviders(plain.services.dht, cid, want)
      expect([...found.keys()]).to.include.members(want)
      // with addresses it can dial
      const first = found.get(want[0])!
      expect(first.multiaddrs.map(String).some((a) => a.startsWith('/ip4/127.0.0.1/tcp/'))).to.equal(true)
      const connection = await plain.dial(first.multiaddrs, { signal: AbortSignal.timeout(10_000) })
      expect(connection.remotePeer.toString()).to.equal(want[0])

      // the other way: the plain node provides the topic key, a Meshkit member finds it
      for await (const _ of plain.services.dht.provide(cid, { signal: AbortSignal.timeout(30_000) })) {
        // drain
      }
      const seen = await collectPeers((signal) => members[1].api.findPeersForTopic('interop', { signal }), {
        timeoutMs: 15_000,
        stopWhen: (ids) => ids.has(plain!.peerId.toString()),
      })
      expect(seen.has(plain.peerId.toString()), 'the plain provider is found').to.equal(true)
    })
  })
})
