/**
 * gate({ allow, deny }): the decision on its own (entries, deny wins, partial facts), the gater against
 * real connections both ways on loopback (sources picked among 127.0.0.x), and live changes through
 * `node.reconfigurePlugin` and `kernel.update` that hang up on peers the new lists refuse.
 */
import { noise as plainNoise } from '@chainsafe/libp2p-noise'
import { yamux as plainYamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { tcp as plainTcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import { isMeshError, type MeshConfig, resolveConfig } from 'meshkit'
import { builtinPlugins, gate, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { createGater, factsOf } from '../plugins/gate/gater.js'
import { judge, parseList } from '../plugins/gate/rules.js'
import { LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

const newPeerId = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()

describe('gate: the decision', () => {
  let x: string
  let y: string
  before(async () => {
    x = await newPeerId()
    y = await newPeerId()
  })
  const verdict = (allow: string[], deny: string[], facts: Parameters<typeof judge>[2]) =>
    judge(parseList(allow), parseList(deny), facts)

  it('deny refuses by peer id, IP or range; an empty allow list allows the rest', () => {
    const deny = [x, '127.0.0.2', '10.0.0.0/8', 'fd00::/8', '/ip4/192.0.2.0/ipcidr/24']
    expect(verdict([], deny, { peer: x, ip: '127.0.0.9' })).to.equal('denied')
    expect(verdict([], deny, { peer: y, ip: '127.0.0.2' })).to.equal('denied')
    expect(verdict([], deny, { peer: y, ip: '10.200.1.1' })).to.equal('denied')
    expect(verdict([], deny, { ip: 'fd12::1' })).to.equal('denied')
    expect(verdict([], deny, { ip: '192.0.2.77' })).to.equal('denied')
    expect(verdict([], deny, { ip: '::ffff:127.0.0.2' }), 'an IPv4-mapped address').to.equal('denied')
    expect(verdict([], deny, { peer: y, ip: '127.0.0.3' })).to.equal('allowed')
  })

  it('a non-empty allow list refuses what it does not name; deny wins over allow', () => {
    const allow = ['127.0.0.0/24', `/p2p/${y}`]
    expect(verdict(allow, [], { peer: x, ip: '127.0.0.7' })).to.equal('allowed')
    expect(verdict(allow, [], { peer: y, ip: '198.51.100.1' })).to.equal('allowed')
    expect(verdict(allow, [], { peer: x, ip: '198.51.100.1' })).to.equal('not-allowed')
    expect(verdict(allow, [x], { peer: x, ip: '127.0.0.7' })).to.equal('denied')
    expect(verdict(allow, ['127.0.0.7'], { peer: y, ip: '127.0.0.7' })).to.equal('denied')
    // a relayed peer has no IP of its own: it matches by peer id only
    expect(verdict(allow, [], { peer: x })).to.equal('not-allowed')
    expect(verdict(allow, [], { peer: y })).to.equal('allowed')
  })

  it('defers while a fact that could allow is still to come, and decides once it is known', () => {
    const byPeer = [y]
    expect(verdict(byPeer, [], { ip: '127.0.0.2', later: { peer: true } })).to.equal('allowed')
    expect(verdict(byPeer, [], { ip: '127.0.0.2', peer: x })).to.equal('not-allowed')
    const byIp = ['127.0.0.3']
    expect(verdict(byIp, [], { ip: '127.0.0.2', later: { peer: true } }), 'no peer entry can allow').to.equal(
      'not-allowed',
    )
    expect(verdict(byIp, [], { peer: x, later: { ip: true } })).to.equal('allowed')
    expect(verdict(byIp, [], { peer: x, ip: '127.0.0.3' })).to.equal('allowed')
  })

  it('reads facts from addresses: a relayed address gives the remote peer, never the relay IP', () => {
    const relay = `/ip4/127.0.0.9/tcp/4001/p2p/${x}`
    expect(factsOf(multiaddr(`${relay}/p2p-circuit/p2p/${y}`))).to.deep.equal({
      peer: y,
      relayed: true,
      dns: false,
    })
    expect(factsOf(multiaddr(relay))).to.include({ peer: x, ip: '127.0.0.9', relayed: false })
    expect(factsOf(multiaddr('/dns4/example.invalid/tcp/1'))).to.include({ dns: true, ip: undefined })
  })

  it('gates relayed connections and relay service by peer id', async () => {
    const gater = createGater((f) => judge(parseList([y]), parseList([x]), f))
    const relay = peerIdFromString(await newPeerId())
    const [px, py] = [peerIdFromString(x), peerIdFromString(y)]
    expect(await gater.denyInboundRelayedConnection!(relay, px)).to.equal(true)
    expect(await gater.denyInboundRelayedConnection!(relay, py)).to.equal(false)
    expect(await gater.denyInboundRelayReservation!(px)).to.equal(true)
    expect(await gater.denyOutboundRelayedConnection!(py, px)).to.equal(true)
    expect(await gater.denyOutboundRelayedConnection!(py, relay)).to.equal(false)
    expect(await gater.denyDialPeer!(px)).to.equal(true)
    expect(await gater.denyDialMultiaddr!(multiaddr(`/ip4/127.0.0.1/tcp/1/p2p/${relay}`))).to.equal(true)
    expect(await gater.denyDialMultiaddr!(multiaddr('/ip4/127.0.0.1/tcp/1')), 'peer still unknown').to.equal(
      false,
    )
  })

  it('refuses bad entries with the config, naming them', () => {
    let err: unknown
    try {
      resolveConfig(
        { plugins: [tcp(), noise(), yamux(), gate({ allow: ['10.0.0.0/33'], deny: ['not-a-peer'] })] },
        { env: TEST_ENV, registry: builtinPlugins },
      )
    } catch (e) {
      err = e
    }
    expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID')).to.equal(true)
    const message = (err as Error).message
    expect(message).to.contain('plugins[3](gate).allow[0]')
    expect(message).to.contain('prefix is 0 to 32')
    expect(message).to.contain('plugins[3](gate).deny[0]')
  })
})

describe('gate: connections on loopback', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const plains: Libp2p[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  afterEach(async () => {
    for (const p of plains.splice(0)) await Promise.resolve(p.stop()).catch(() => {})
    await nodes.closeAll()
    await cleanup()
  })

  /** A plain js-libp2p node that dials from `sourceIp` and listens there. */
  async function plainFrom(sourceIp: string): Promise<Libp2p> {
    const node = await createLibp2p({
      addresses: { listen: [`/ip4/${sourceIp}/tcp/0`] },
      transports: [plainTcp({ dialOpts: { localAddress: sourceIp } as never })],
      connectionEncrypters: [plainNoise()],
      streamMuxers: [plainYamux()],
      connectionManager: { dialTimeout: 5_000 },
    })
    plains.push(node)
    return node
  }
  const start = (name: string, options: Parameters<typeof gate>[0], extra: MeshConfig = {}) =>
    nodes.start(name, { ...extra, plugins: [gate(options)] })
  /** Whether `from` can open a connection to `to` and keep it (the gate may refuse after the handshake). */
  async function connects(from: Libp2p, to: string): Promise<boolean> {
    try {
      const c = await from.dial(multiaddr(to), { signal: AbortSignal.timeout(5_000) })
      // a refusal after the handshake closes it at once
      await new Promise((r) => setTimeout(r, 300))
      return c.status === 'open'
    } catch {
      return false
    }
  }
  const connected = (n: TestNode, peer: string) => n.node.libp2p.getPeers().some((p) => p.toString() === peer)

  it('inbound: a denied range or peer cannot connect, others can', async () => {
    const x = await plainFrom('127.0.0.2')
    const y = await plainFrom('127.0.0.3')
    const z = await plainFrom('127.0.0.3')
    const a = await start('a', { deny: ['127.0.0.2/32', z.peerId.toString()] })
    expect(await connects(x, a.address), 'x from 127.0.0.2').to.equal(false)
    expect(await connects(z, a.address), 'z by peer id').to.equal(false)
    expect(await connects(y, a.address), 'y from 127.0.0.3').to.equal(true)
    expect(connected(a, y.peerId.toString())).to.equal(true)
    expect(connected(a, x.peerId.toString())).to.equal(false)
  })

  it('inbound: a non-empty allow list lets in only what it names; deny wins', async () => {
    const x = await plainFrom('127.0.0.2')
    const y = await plainFrom('127.0.0.3')
    const z = await plainFrom('127.0.0.3')
    const w = await plainFrom('127.0.0.4')
    const a = await start('a', {
      allow: ['127.0.0.3', w.peerId.toString()],
      deny: [z.peerId.toString()],
    })
    expect(await connects(x, a.address), 'x: 127.0.0.2 is not allowed').to.equal(false)
    expect(await connects(y, a.address), 'y: 127.0.0.3 is allowed').to.equal(true)
    expect(await connects(z, a.address), 'z: allowed range, denied peer').to.equal(false)
    expect(await connects(w, a.address), 'w: allowed peer from another IP').to.equal(true)
  })

  it('outbound: the node does not dial denied or not-allowed peers and addresses', async () => {
    const b = await nodes.start('b', { listen: ['/ip4/127.0.0.5/tcp/0'] })
    const c = await nodes.start('c', { listen: ['/ip4/127.0.0.6/tcp/0'] })
    const d = await nodes.start('d', { listen: ['/ip4/127.0.0.6/tcp/0'] })
    const a = await start('a', { deny: ['127.0.0.5', d.peerId] })
    const dial = async (to: TestNode) => {
      try {
        await a.node.libp2p.dial(multiaddr(to.address), { signal: AbortSignal.timeout(5_000) })
        return true
      } catch {
        return false
      }
    }
    expect(await dial(b), 'b at a denied IP').to.equal(false)
    expect(await dial(d), 'd by peer id').to.equal(false)
    expect(await dial(c), 'c').to.equal(true)
    // by peer id alone (the peer store has its address from nothing else here): refused before dialling
    await a.node.libp2p.peerStore.merge(peerIdFromString(d.peerId), { multiaddrs: [multiaddr(d.address)] })
    let error: unknown
    await a.node.libp2p.dial(peerIdFromString(d.peerId)).catch((e) => {
      error = e
    })
    expect((error as Error)?.name).to.match(/Denied/)

    const e = await start('e', { allow: [c.peerId] })
    const dialFromE = async (to: TestNode) =>
      e.node.libp2p.dial(multiaddr(to.address), { signal: AbortSignal.timeout(5_000) }).then(
        () => true,
        () => false,
      )
    expect(await dialFromE(b), 'b is not on the allow list').to.equal(false)
    expect(await dialFromE(c), 'c is').to.equal(true)
  })

  it('applies new lists live (reconfigurePlugin, kernel.update): hangs up on peers now refused', async () => {
    const x = await plainFrom('127.0.0.2')
    const y = await plainFrom('127.0.0.3')
    const a = await start('a', {})
    expect(await connects(x, a.address)).to.equal(true)
    expect(await connects(y, a.address)).to.equal(true)
    const xId = x.peerId.toString()
    const yId = y.peerId.toString()

    // in place, by the node's API: x is now denied by peer id
    expect(await a.node.reconfigurePlugin('gate', { allow: [], deny: [xId] })).to.equal(true)
    await waitFor(() => !connected(a, xId), { what: 'x hung up on' })
    // (x's own side too: a dial would otherwise return its old connection before it saw the reset)
    await waitFor(() => x.getConnections().length === 0, { what: 'x sees the hang-up' })
    expect(connected(a, yId), 'y stays').to.equal(true)
    expect(await connects(x, a.address), 'x cannot come back').to.equal(false)

    // through kernel.update (what `mesh dev` runs on save): only 127.0.0.2 allowed now
    const next = resolveConfig(
      {
        dataDir: `${dir}/a`,
        datastore: 'memory',
        logLevel: 'warn',
        listen: ['/ip4/127.0.0.1/tcp/0'],
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: [identify(), ping(), noise(), yamux(), tcp(), gate({ allow: ['127.0.0.2'] })],
      },
      { env: TEST_ENV, registry: builtinPlugins },
    )
    const result = await a.kernel.update(next)
    expect(result.mode, 'applied in place').to.equal('in-place')
    expect(result.node).to.equal(a.node)
    await waitFor(() => !connected(a, yId), { what: 'y hung up on (127.0.0.3 is not allowed)' })
    await waitFor(() => y.getConnections().length === 0, { what: 'y sees the hang-up' })
    expect(await connects(y, a.address), 'y cannot come back').to.equal(false)
    expect(await connects(x, a.address), 'x may again').to.equal(true)
    expect(a.node.api<{ lists(): unknown }>('gate').lists()).to.deep.equal({ allow: ['127.0.0.2'], deny: [] })
  })
})
