/**
 * gossip() on small loopback meshes whose topology a connection gater fixes (fixtures/gossip-mesh.ts):
 * the binding to discovery's topics, publish's coded errors, and hostile peers. In `A - B - C` lines, A
 * plays the hostile (or misconfigured) peer: what B must not pass on never reaches C, and B penalizes the
 * peer that sent it. A raw `/meshsub/1.2.0` stream sends what no GossipSub implementation would.
 */
import { join } from 'node:path'
import { RPC } from '@libp2p/gossipsub/message'
import { peerIdFromString } from '@libp2p/peer-id'
import { expect } from 'chai'
import { createLogger, isMeshError, loadOrCreateIdentity, type MeshEvent, resolveConfig } from 'meshkit'
import {
  builtinPlugins,
  type GossipApi,
  type GossipMessage,
  type GossipValidator,
  type GossipVerdict,
  gossip,
  identify,
  kadTopics,
  noise,
  ping,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { previewOf } from '../plugins/gossip/preview.js'
import { ValidatorRunner } from '../plugins/gossip/validators.js'
import { terminalSafe } from '../src/cli/gossip-commands.js'
import { directlyConnected, GossipMesh, type GossipNode, type GossipOptions } from './fixtures/gossip-mesh.js'
import { TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { lengthPrefixed } from './fixtures/topics.js'
import { tempDir, waitFor } from './helpers.js'

const encoder = new TextEncoder()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The coded error `fn` rejects with (fails when it resolves). */
async function codedError(fn: () => Promise<unknown>) {
  try {
    await fn()
  } catch (err) {
    if (isMeshError(err)) return err
    throw err
  }
  throw new Error('expected a MeshError, but it resolved')
}

const eventsOf = (n: TestNode, name: string): MeshEvent[] => n.events.filter((e) => e.event === name)
const texts = (n: GossipNode) => n.received.map((m) => m.text)

describe('gossip plugin', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let mesh: GossipMesh

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-gossip-'))
    mesh = new GossipMesh(() => dir)
  })
  afterEach(async () => {
    await mesh.closeAll()
    await cleanup()
  })

  /** A - B - C on `lobby`; A with its own options (the odd one out). */
  async function line(a: GossipOptions = {}, bc: GossipOptions = {}): Promise<GossipNode[]> {
    const nodes = [
      await mesh.start('a', ['lobby'], a),
      await mesh.start('b', ['lobby'], bc),
      await mesh.start('c', ['lobby'], bc),
    ]
    await mesh.link(nodes[0], nodes[1])
    await mesh.link(nodes[1], nodes[2])
    await mesh.settled(() => ['lobby'])
    expect(directlyConnected(nodes[0], nodes[2]), 'A and C are not connected').to.equal(false)
    return nodes
  }

  /** Publishes `text` from `from` and waits until `to` has it. */
  async function delivered(from: GossipNode, to: GossipNode, text: string) {
    await from.gossip.publish('lobby', text)
    await waitFor(() => texts(to).includes(text), { timeoutMs: 5000, what: `${text} at the far end` })
  }

  it('follows the joined topics: a runtime join subscribes, a leave unsubscribes; peers come and go as events', async () => {
    const a = await mesh.start('a', [])
    const b = await mesh.start('b', [])
    await mesh.link(a, b)
    expect(a.gossip.topics()).to.deep.equal([])
    await codedError(() => a.gossip.publish('rt', 'too early')).then((err) => {
      expect(err.code).to.equal('MESH_ERR_INVALID_ARGUMENT')
      expect(err.message).to.match(/has not joined 'rt'/)
      expect(err.hint).to.match(/mesh topics join rt/)
    })
    const got: string[] = []
    b.gossip.subscribe('rt', (m) => {
      got.push(new TextDecoder().decode(m.data))
    })
    await a.node.api<{ join(t: string): Promise<void> }>('discovery').join('rt')
    await b.node.api<{ join(t: string): Promise<void> }>('discovery').join('rt')
    expect(a.gossip.topics()).to.deep.equal(['rt'])
    expect(a.gossip.stats().topics[0]).to.include({ topic: 'rt', gossipTopic: '/meshkit/gossip/rt' })
    await waitFor(() => a.gossip.peers('rt').includes(b.peerId) && b.gossip.peers('rt').includes(a.peerId), {
      what: 'each a gossip peer of the other in rt',
    })
    expect(eventsOf(a, 'gossip:peer').some((e) => e.topic === 'rt' && e.peerId === b.peerId)).to.equal(true)
    const sent = await a.gossip.publish('rt', 'hi')
    expect(sent.recipients).to.deep.equal([b.peerId])
    expect(sent.id).to.be.a('string').and.not.equal('')
    await waitFor(() => got.includes('hi'), { what: 'hi at B' })
    const published = eventsOf(a, 'gossip:published').at(-1)
    expect(published).to.include({ topic: 'rt', id: sent.id, bytes: 2, recipients: 1, text: 'hi' })
    const message = eventsOf(b, 'gossip:message').at(-1)
    expect(message).to.include({
      topic: 'rt',
      id: sent.id,
      from: a.peerId,
      via: a.peerId,
      bytes: 2,
      text: 'hi',
    })

    await b.node.api<{ leave(t: string): Promise<void> }>('discovery').leave('rt')
    expect(b.gossip.topics()).to.deep.equal([])
    await waitFor(
      () => eventsOf(a, 'gossip:peer:lost').some((e) => e.topic === 'rt' && e.peerId === b.peerId),
      {
        what: 'gossip:peer:lost at A',
      },
    )
    expect(a.gossip.peers('rt')).to.deep.equal([])
    expect((await a.gossip.publish('rt', 'anyone?')).recipients).to.deep.equal([])
    expect((await codedError(() => b.gossip.publish('rt', 'x'))).message).to.match(/has not joined 'rt'/)
  })

  it('keeps meshes of different namespaces apart', async () => {
    const a = await mesh.start('a', ['lobby'])
    const b = await mesh.start('b', ['lobby'], { namespace: 'other' })
    await mesh.link(a, b)
    expect(a.gossip.stats().topics[0].gossipTopic).to.equal('/meshkit/gossip/lobby')
    expect(b.gossip.stats().topics[0].gossipTopic).to.equal('/other/gossip/lobby')
    // both are topic members for discovery, neither a gossip peer of the other
    await waitFor(() => a.node.api<{ peers(t: string): string[] }>('discovery').peers('lobby').length === 1, {
      what: 'discovery sees B in lobby',
    })
    await sleep(300)
    expect(a.gossip.peers('lobby')).to.deep.equal([])
    expect((await a.gossip.publish('lobby', 'hello?')).recipients).to.deep.equal([])
    await sleep(200)
    expect(b.received).to.deep.equal([])
    // unset, the namespace is the discovery plugin's
    const x = await mesh.start('x', ['lobby'], {}, { kad: { namespace: 'x' } })
    expect(x.gossip.stats().topics[0].gossipTopic).to.equal('/x/gossip/lobby')
  })

  it('refuses to publish what peers would drop: over the size limit, or not accepted by a validator', async () => {
    const [a, b] = await line({}, {})
    const big = await codedError(() => a.gossip.publish('lobby', new Uint8Array(64 * 1024 + 1)))
    expect(big.code).to.equal('MESH_ERR_INVALID_ARGUMENT')
    expect(big.message).to.match(/65537 bytes is more than the limit of 65536/)
    expect(big.hint).to.match(/maxMessageBytes/)
    await a.gossip.publish('lobby', new Uint8Array(64 * 1024)) // exactly the limit: fine
    a.gossip.addValidator('lobby', (m) => (m.data[0] === 0x21 ? 'reject' : 'accept'))
    const rejected = await codedError(() => a.gossip.publish('lobby', '!nope'))
    expect(rejected.message).to.match(/validator of topic 'lobby' says 'reject'/)
    await waitFor(() => b.gossip.stats().received === 1, { what: 'B got the 64 KiB message' })
    await sleep(200)
    expect(texts(b).some((t) => t.startsWith('!'))).to.equal(false)
  })

  it('a message over the size limit is not forwarded, and the peer that sent it is penalized', async () => {
    // A allows 1 MiB (misconfigured or hostile); B and C keep the default 64 KiB
    const [a, b, c] = await line({ maxMessageBytes: 1024 * 1024 })
    await delivered(a, c, 'small first') // the path A -> B -> C works
    await a.gossip.publish('lobby', new Uint8Array(100 * 1024).fill(0x61))
    await waitFor(() => b.gossip.stats().rejected.oversize === 1, { what: 'B rejects the 100 KiB message' })
    await sleep(500)
    expect(c.received.map((m) => m.data.byteLength)).to.deep.equal(['small first'.length])
    expect(b.received.map((m) => m.data.byteLength)).to.deep.equal(['small first'.length])
    expect(b.node.reputation.penalty(a.peerId)).to.be.at.least(20) // 25 points ('malformed'), decaying
    const rejected = eventsOf(b, 'gossip:rejected').at(-1)
    expect(rejected).to.include({ topic: 'lobby', peerId: a.peerId, reason: 'oversize', bytes: 100 * 1024 })
    expect(c.node.reputation.penalty(b.peerId), 'C does not blame B').to.equal(0)
  })

  it('a message a validator rejects is not forwarded (the sender is penalized); an ignored one is not either (nobody is)', async () => {
    const [a, b, c] = await line()
    // B and C run a validator A does not (another app version, or a hostile A)
    for (const n of [b, c])
      n.gossip.addValidator('lobby', (m) => {
        const text = new TextDecoder().decode(m.data)
        return text.startsWith('spam') ? 'reject' : text.startsWith('meh') ? 'ignore' : 'accept'
      })
    await delivered(a, c, 'ok first')
    await a.gossip.publish('lobby', 'meh, ignore me')
    await waitFor(() => b.gossip.stats().dropped.validator === 1, { what: 'B ignores meh' })
    expect(b.node.reputation.penalty(a.peerId), 'an ignore costs nothing').to.equal(0)
    await a.gossip.publish('lobby', 'spam spam spam')
    await waitFor(() => b.gossip.stats().rejected.validator === 1, { what: 'B rejects spam' })
    await sleep(500)
    expect(texts(c)).to.deep.equal(['ok first'])
    expect(texts(b)).to.deep.equal(['ok first'])
    expect(b.node.reputation.penalty(a.peerId)).to.be.at.least(20)
    expect(eventsOf(b, 'gossip:rejected').at(-1)).to.include({ peerId: a.peerId, reason: 'validator' })
    // B itself cannot publish what its validator rejects
    expect((await codedError(() => b.gossip.publish('lobby', 'spam'))).message).to.match(/says 'reject'/)
  })

  it("a publisher over its rate is dropped by its peers and penalized; a node's own publishing stays under it", async () => {
    // A lets itself publish 1000/s; B and C hold every publisher to the default 20/s in bursts of 100
    const [a, b, c] = await line({ publisherRate: 1000 })
    const sent = 150
    for (let i = 0; i < sent; i++) await a.gossip.publish('lobby', `burst ${i}`)
    await waitFor(() => b.gossip.stats().dropped.publisherRate > 0, { what: 'B drops part of the burst' })
    await sleep(1000)
    const passed = texts(b).length
    expect(passed, 'B passes on about a burst (100), not all 150').to.be.within(90, sent - 20)
    expect(texts(c).length).to.be.at.most(passed)
    expect(b.node.reputation.penalty(a.peerId) > 0 || b.node.reputation.isBanned(a.peerId)).to.equal(true)

    // C publishes with the default budget: it stops itself at its burst, with a coded error
    let published = 0
    let refusal: Error | undefined
    for (; published < 200; published++) {
      try {
        await c.gossip.publish('lobby', `c ${published}`)
      } catch (err) {
        refusal = err as Error
        break
      }
    }
    expect(published).to.be.within(100, 130)
    expect(isMeshError(refusal, 'MESH_ERR_INVALID_ARGUMENT')).to.equal(true)
    expect(refusal?.message).to.match(/publisher budget \(20 messages\/s in bursts of 100/)
  })

  it("a banned publisher's messages are dropped, also when another peer forwards them", async () => {
    const [a, b, c] = await line()
    await delivered(a, c, 'before the ban')
    c.node.reputation.ban(a.peerId, 'test: an operator ban')
    await a.gossip.publish('lobby', 'after the ban')
    await waitFor(() => c.gossip.stats().dropped.bannedPublisher === 1, { what: 'C drops it' })
    expect(texts(b)).to.deep.equal(['before the ban', 'after the ban'])
    expect(texts(c)).to.deep.equal(['before the ban'])
    expect(c.node.reputation.penalty(b.peerId), 'B is not blamed').to.equal(0)
  })

  it('drops what a raw GossipSub peer sends wrong: a bad signature (forged), an oversized message, an unknown topic', async () => {
    const b = await mesh.start('b', ['lobby'])
    const raw = await mesh.startPlain('raw')
    await mesh.link(raw, b)
    const stream = await raw.node.libp2p.dialProtocol(peerIdFromString(b.peerId), '/meshsub/1.2.0', {
      signal: AbortSignal.timeout(10_000),
    })
    const from = peerIdFromString(raw.peerId).toMultihash().bytes
    const seqno = (n: number) => {
      const s = new Uint8Array(8)
      new DataView(s.buffer).setBigUint64(0, BigInt(n))
      return s
    }
    const message = (n: number, topic: string, data: Uint8Array) => ({
      from,
      seqno: seqno(n),
      topic,
      data,
      signature: crypto.getRandomValues(new Uint8Array(64)),
    })
    const send = (rpc: Parameters<typeof RPC.encode>[0]) => stream.send(lengthPrefixed(RPC.encode(rpc)))
    send({ subscriptions: [{ subscribe: true, topic: '/meshkit/gossip/lobby' }], messages: [] })
    send({
      subscriptions: [],
      messages: [message(1, '/meshkit/gossip/elsewhere', encoder.encode('off topic'))],
    })
    await waitFor(() => b.gossip.stats().dropped.unknownTopic === 1, { what: 'B drops the unknown topic' })
    expect(b.node.reputation.penalty(raw.peerId), 'an unknown topic costs nothing').to.equal(0)

    send({ subscriptions: [], messages: [message(2, '/meshkit/gossip/lobby', encoder.encode('forged'))] })
    await waitFor(() => b.gossip.stats().rejected.invalid === 1, { what: 'B rejects the bad signature' })
    expect(b.node.reputation.penalty(raw.peerId)).to.be.at.least(45) // 'forged': 50 points
    expect(eventsOf(b, 'gossip:rejected').at(-1)).to.include({
      peerId: raw.peerId,
      reason: 'invalid_signature',
    })

    send({ subscriptions: [], messages: [message(3, '/meshkit/gossip/lobby', new Uint8Array(70_000))] })
    await waitFor(() => b.gossip.stats().rejected.oversize === 1, { what: 'B rejects the oversized message' })
    // 50 + 25 points: not banned yet (100), but below GossipSub's graylist threshold (-80)? not yet either
    expect(b.node.reputation.penalty(raw.peerId)).to.be.at.least(70)
    expect(b.received).to.deep.equal([])
    expect(eventsOf(b, 'gossip:message')).to.deep.equal([])

    // a second forgery reaches the ban threshold: B hangs up on the raw peer
    send({
      subscriptions: [],
      messages: [message(4, '/meshkit/gossip/lobby', encoder.encode('forged again'))],
    })
    await waitFor(() => b.node.reputation.isBanned(raw.peerId), { what: 'the raw peer banned' })
    await waitFor(() => !directlyConnected(b, raw), { what: 'B hangs up on it' })
  })

  it('direct peers: only as configured (with their peer id), kept connected, messages exchanged', async () => {
    expect(() =>
      resolveConfig(
        {
          plugins: [
            tcp(),
            noise(),
            yamux(),
            identify(),
            ping(),
            kadTopics(),
            gossip({ directPeers: ['/ip4/127.0.0.1/tcp/1'] }),
          ],
        },
        { env: TEST_ENV, registry: builtinPlugins },
      ),
    ).to.throw(/directPeers: \/ip4\/127.0.0.1\/tcp\/1 does not end with \/p2p\/<peer id>/)
    const b = await mesh.start('b', ['lobby'])
    // A's identity made beforehand (its data dir), so that the gater allows A - B from the start
    const { peerId } = await loadOrCreateIdentity(join(dir, 'a'))
    mesh.topology.link(b.peerId, peerId.toString())
    const a = await mesh.start('a', ['lobby'], { directPeers: [b.address] })
    expect(a.peerId).to.equal(peerId.toString())
    // nobody dialled: GossipSub connects to its direct peer itself (after 1 s)
    await waitFor(() => directlyConnected(a, b), { timeoutMs: 10_000, what: 'A connects to its direct peer' })
    await waitFor(() => a.gossip.peers('lobby').includes(b.peerId), { what: 'B a gossip peer of A' })
    await a.gossip.publish('lobby', 'to my direct peer')
    await waitFor(() => texts(b).includes('to my direct peer'), { what: 'the message at B' })
  })

  it('offers its API to other plugins: publish/subscribe work from code, and the API is typed', async () => {
    const a = await mesh.start('a', ['lobby'])
    const api: GossipApi = a.gossip
    expect(api.maxMessageBytes).to.equal(64 * 1024)
    expect(() => api.subscribe('', () => {})).to.throw(/1 to 128 characters/)
    const off = api.subscribe('lobby', () => {})
    off()
    off() // idempotent
    expect(api.topics()).to.deep.equal(['lobby'])
  })
})

describe('gossip plugin: pieces', () => {
  const message = (text: string): GossipMessage => ({
    topic: 't',
    id: 'x',
    from: 'p',
    via: 'p',
    data: encoder.encode(text),
    receivedAt: 0,
  })

  it('validators: in order, the first verdict that is not accept wins; throwing, slow or odd ones ignore', async () => {
    const lines: string[] = []
    const set = new Set<GossipValidator>()
    const runner = new ValidatorRunner(
      new Map([['t', set]]),
      50,
      createLogger({ level: 'warn', write: (l) => lines.push(l) }),
    )
    expect(await runner.run('t', message('a')), 'no validator: accept').to.equal('accept')
    set.add(() => 'accept')
    set.add(async (m) => (m.data[0] === 0x72 ? 'reject' : 'accept'))
    expect(await runner.run('t', message('r'))).to.equal('reject')
    expect(await runner.run('t', message('a'))).to.equal('accept')
    const odd = (v: GossipValidator) => {
      set.clear()
      set.add(v)
      return runner.run('t', message('a'))
    }
    expect(
      await odd(() => {
        throw new Error('bug')
      }),
    ).to.equal('ignore')
    expect(await odd(() => Promise.reject(new Error('async bug')))).to.equal('ignore')
    expect(await odd(() => 'yes' as GossipVerdict)).to.equal('ignore')
    const started = Date.now()
    expect(await odd(() => new Promise(() => {}))).to.equal('ignore')
    expect(Date.now() - started, 'a validator that never answers is cut at the timeout').to.be.below(1000)
    runner.flush()
    expect(lines.join('\n')).to.match(/threw \(Error: bug\)/)
    expect(lines.join('\n')).to.match(/took more than 50 ms/)
  })

  it('event previews are bounded: at most previewChars characters from at most 4x that many bytes', () => {
    expect(previewOf(encoder.encode('hello'), 200)).to.deep.equal({ text: 'hello', truncated: false })
    const long = previewOf(encoder.encode('é'.repeat(10_000)), 200)
    expect(long.text).to.equal('é'.repeat(200))
    expect(long.truncated).to.equal(true)
    expect(previewOf(new Uint8Array([0xff, 0xfe, 0x41]), 200)).to.deep.equal({ binary: true })
    // a multi-byte character cut by the byte window is not an error
    expect(previewOf(encoder.encode(`${'a'.repeat(7)}é`), 2)).to.deep.equal({ text: 'aa', truncated: true })
  })

  it("mesh subscribe shows a peer's control characters and bidi overrides as escapes", () => {
    expect(terminalSafe('a\u001b[2Jb\nc\td\u202ee\u0007')).to.equal('a\\u001b[2Jb\\nc\\td\\u202ee\\u0007')
    expect(terminalSafe('plain text, ünïcödé 👋')).to.equal('plain text, ünïcödé 👋')
  })
})
