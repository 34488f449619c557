/**
 * Circuit relay v2 against hostile peers (security issue 10): STOP streams from peers that are no relay
 * of ours (background relay listens, forged relayed connections), hop requests and reservations at a
 * relay (Sybils, slowloris), and relayClient() + holePunch() in one config. Loopback only; hostile peers
 * come from 127.0.0.70-127.0.0.99 (see test/hostile).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Listener, Transport } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { isMeshError, type MeshConfig, resolveConfig } from 'meshkit'
import { builtinPlugins, holePunch, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { tolerantRelayListen } from '../plugins/hole-punch/tolerant-relay-listen.js'
import { type RelayClientApi, relayClient } from '../plugins/relay-client/index.js'
import { RELAY_HOP_PROTOCOL, relayServer } from '../plugins/relay-server/index.js'
import { subnetOf } from '../plugins/relay-server/subnet.js'
import { eventsOf, LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'
import { openStop, RELAY_STATUS } from './hostile/forged-circuit.js'
import { type HostileNode, HostilePool } from './hostile/hostile-node.js'
import { forgedPeerId } from './hostile/ids.js'
import { Sentinels } from './hostile/sentinels.js'
import { closeSoon, lp, pb, unpb } from './hostile/wire.js'

const IPS = Array.from({ length: 30 }, (_, i) => `127.0.0.${70 + i}`)
const quietLogger = { debug() {}, info() {}, warn() {}, error() {} } as never

describe('relays against hostile peers', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  const nodes = new LoopbackNodes(
    () => dir,
    () => [identify(), ping(), noise(), yamux(), tcp()],
  )
  let pool: HostilePool
  let sentinels: Sentinels

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-relay-sec-'))
    pool = new HostilePool(IPS)
    sentinels = new Sentinels()
  })
  afterEach(async () => {
    await pool.stopAll()
    await sentinels.close()
    await nodes.closeAll()
    await cleanup()
  })

  /** A hostile peer's direct connection to `target`. */
  const connect = async (target: TestNode, options: Parameters<HostilePool['spawn']>[0] = {}) => {
    const node = await pool.spawn(options)
    return { node, connection: await node.dial(target.address) }
  }

  /** The peers `n` has an open connection to. */
  const peersOf = (n: TestNode) => new Set(n.node.libp2p.getConnections().map((c) => c.remotePeer.toString()))

  describe('tolerantRelayListen (hole-punch)', () => {
    /** A circuit transport stand-in whose listeners count listen() calls and always fail. */
    const fakeTransport = () => {
      const calls: string[] = []
      const transport = {
        listenFilter: (addrs: ReturnType<typeof multiaddr>[]) =>
          addrs.filter((a) => a.toString().includes('/p2p-circuit')),
        createListener: () =>
          ({
            listen: async (addr: ReturnType<typeof multiaddr>) => {
              calls.push(addr.toString())
              throw new Error('no relay there')
            },
            close: async () => {},
          }) as unknown as Listener,
      } as unknown as Transport
      return { transport, calls }
    }
    const relay = '12D3KooWRelayRelayRelayRelayRelayRelayRelayRelayRelay'

    it('takes listens only for configured relays, one listener each, and retries only those', async () => {
      const { transport, calls } = fakeTransport()
      const t = tolerantRelayListen(transport, {
        logger: quietLogger,
        relays: new Set([relay]),
        retryInitial: 20,
        retryMax: 40,
      })
      const configured = multiaddr(`/ip4/198.51.100.1/tcp/4001/p2p/${relay}/p2p-circuit`)
      // what libp2p's STOP handler asks for: a listen on whoever sent the STOP, 1,000 times
      const stops = await Promise.all(
        Array.from({ length: 1000 }, async (_, i) => {
          const peer = (await forgedPeerId()).toString()
          return multiaddr(`/ip4/127.0.0.${70 + (i % 30)}/tcp/${40_000 + i}/p2p/${peer}/p2p-circuit`)
        }),
      )
      expect(t.listenFilter(stops)).to.deep.equal([])
      expect(t.listenFilter([configured]).map(String)).to.deep.equal([configured.toString()])
      const listener = t.createListener({} as never)
      await listener.listen(configured)
      // a second listen on the same relay while the first one retries: refused (deduplicated)
      expect(t.listenFilter([configured])).to.deep.equal([])
      const direct = t.createListener({} as never)
      let refused = 0
      for (const a of [configured, ...stops.slice(0, 10)]) await direct.listen(a).catch(() => refused++)
      expect(refused).to.equal(11)
      await new Promise((r) => setTimeout(r, 300))
      // only the configured relay was tried, again and again (backoff), none of the others ever
      expect(calls.length).to.be.greaterThan(2)
      expect(new Set(calls)).to.deep.equal(new Set([configured.toString()]))
      await listener.close()
      const after = calls.length
      await new Promise((r) => setTimeout(r, 200))
      expect(calls.length, 'no retry after close').to.equal(after)
      expect(t.listenFilter([configured]).map(String), 'free again once closed').to.have.length(1)
    })
  })

  /** Opens `count` STOP streams on `connection` (`parallel` at a time); how they ended. */
  async function stopStreams(h: { connection: Connection }, count: number, parallel = 50) {
    const result = { ok: 0, refused: 0 }
    for (let sent = 0; sent < count; sent += parallel) {
      await Promise.all(
        Array.from({ length: Math.min(parallel, count - sent) }, async () => {
          try {
            const s = await openStop(h.connection, (await forgedPeerId()).toMultihash().bytes, {
              timeoutMs: 2000,
            })
            result.ok++
            s.stream.abort(new Error('done'))
          } catch {
            result.refused++
          }
        }),
      )
    }
    return result
  }

  it('1,000 STOP streams leave no background retry after they end (hole-punch)', async () => {
    const relay = await nodes.start('relay', { plugins: [relayServer()] })
    // no bans here: the 1,000 streams must all reach the node (a ban would only make it easier)
    const node = await nodes.start('node', {
      // a config with its own `listen` lists holePunch's addresses itself
      listen: ['/ip4/127.0.0.1/tcp/0', '/webrtc', `${relay.address}/p2p-circuit`],
      security: { banThreshold: 1_000_000 },
      plugins: [holePunch({ relays: [relay.address] })],
    })
    await waitFor(() => node.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')), {
      what: 'a reservation on the configured relay',
    })
    const listenersBefore = node.node.libp2p.getMultiaddrs().length
    // ten hostile peers from fixed source ports, 100 STOP streams each
    const homes: Array<{ ip: string; port: number }> = []
    let ok = 0
    let refused = 0
    for (let i = 0; i < 10; i++) {
      const ip = IPS[i]
      const port = 21_000 + Math.floor(Math.random() * 9_000)
      const h = await connect(node, { sourceIp: ip, sourcePort: port })
      homes.push({ ip, port })
      const r = await stopStreams(h, 100)
      ok += r.ok
      refused += r.refused
    }
    expect(ok + refused).to.equal(1000)
    await pool.stopAll()
    const ended = Date.now()
    // where they came from: a background relay listen would dial there
    for (const home of homes) await sentinels.open(`attacker:${home.ip}`, home.ip, home.port)
    await new Promise((r) => setTimeout(r, 3500))
    expect(sentinels.since(ended), 'dials to the STOP senders after they left').to.deep.equal([])
    const unreachable = eventsOf(node, 'hole-punch:relay-unreachable').filter(
      (e) => !String(e.address).startsWith(relay.address),
    )
    expect(unreachable, 'relay listens on STOP senders').to.deep.equal([])
    expect(node.logs.filter((l) => /could not listen on/.test(l))).to.deep.equal([])
    expect(node.node.libp2p.getMultiaddrs().length, 'no new listen address').to.equal(listenersBefore)
    expect(ok, 'STOP streams answered OK (a relayed connection offered)').to.equal(0)
  })

  for (const kind of ['hole-punch', 'relay-client'] as const) {
    it(`a forged STOP gets no relayed connection, its sender is penalized and banned (${kind})`, async () => {
      const relay = await nodes.start('relay', { plugins: [relayServer()] })
      const plugin =
        kind === 'hole-punch'
          ? holePunch({ relays: [relay.address] })
          : relayClient({ relays: [relay.address], minReservations: 1 })
      const node = await nodes.start('node', {
        listen: [
          '/ip4/127.0.0.1/tcp/0',
          ...(kind === 'hole-punch' ? ['/webrtc', `${relay.address}/p2p-circuit`] : []),
        ],
        plugins: [plugin],
      })
      await waitFor(
        () => node.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')),
        {
          what: 'a reservation on the configured relay',
        },
      )
      const h = await connect(node)
      const s = await forgedPeerId()
      // a STOP CONNECT without a limit: libp2p would hand out an unlimited ("direct") connection
      const err = await openStop(h.connection, s.toMultihash().bytes, { timeoutMs: 3000 }).then(
        () => undefined,
        (e: Error) => e,
      )
      // reset unanswered (or before the request could even be written)
      expect(err?.message).to.match(/no STOP answer|STOP refused|closed|reset/)
      expect(peersOf(node).has(s.toString()), 'no connection from the forged peer').to.equal(false)
      expect(node.node.reputation.penalty(h.node.peerId)).to.be.at.least(49)
      // more: banned (100 points; two forgeries, less what decayed meanwhile, and a third), disconnected
      for (let i = 0; i < 3 && !node.node.reputation.isBanned(h.node.peerId); i++)
        await openStop(h.connection, (await forgedPeerId()).toMultihash().bytes, { timeoutMs: 3000 }).catch(
          () => {},
        )
      await waitFor(() => node.node.reputation.isBanned(h.node.peerId), { what: 'the STOP sender banned' })
      await waitFor(() => !peersOf(node).has(h.node.peerId), { what: 'the STOP sender disconnected' })
      // the real relay still works: a third peer reaches the node through it (a limited connection)
      const dialer = await nodes.start('dialer', {
        plugins: [relayClient({ relays: [], minReservations: 0 })],
      })
      const circuit = `${relay.address}/p2p-circuit/p2p/${node.peerId}`
      const conn = await dialer.node.libp2p.dial(multiaddr(circuit), { signal: AbortSignal.timeout(10_000) })
      expect(conn.limits, 'relayed').to.not.equal(undefined)
      await waitFor(() => peersOf(node).has(dialer.peerId), { what: 'the relayed connection at the node' })
      expect(node.node.reputation.penalty(relay.peerId)).to.equal(0)
    })
  }

  it('relayClient() + holePunch() in one config: one circuit transport, relayClient reserves, holePunch adds WebRTC', async () => {
    const relay = await nodes.start('relay', { plugins: [relayServer()] })
    const node = await nodes.start('node', {
      listen: ['/ip4/127.0.0.1/tcp/0', '/webrtc'],
      plugins: [relayClient({ relays: [relay.address], minReservations: 1 }), holePunch()],
    })
    await waitFor(() => node.node.api<RelayClientApi>('relay-client').reservations().length === 1, {
      what: 'a reservation',
    })
    await waitFor(
      () => node.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit/webrtc')),
      { what: 'a WebRTC circuit address' },
    )
    const dialer = await nodes.start('dialer', { plugins: [relayClient({ relays: [], minReservations: 0 })] })
    const conn = await dialer.node.libp2p.dial(multiaddr(`${relay.address}/p2p-circuit/p2p/${node.peerId}`), {
      signal: AbortSignal.timeout(10_000),
    })
    expect(conn.limits).to.not.equal(undefined)
    // holePunch({ relays }) beside relayClient(): a config error naming both, with a fix
    const config: MeshConfig = {
      dataDir: `${dir}/bad`,
      plugins: [
        identify(),
        ping(),
        noise(),
        yamux(),
        tcp(),
        relayClient({ relays: [relay.address] }),
        holePunch({ relays: [relay.address] }),
      ],
    }
    let err: unknown
    try {
      resolveConfig(config, { env: TEST_ENV, registry: builtinPlugins })
    } catch (e) {
      err = e
    }
    expect(isMeshError(err) && err.code).to.equal('MESH_ERR_CONFIG_INVALID')
    const text = (err as { describe(): string }).describe()
    expect(text).to.match(/holePunch\(\{ relays \}\) and relayClient\(\)/)
    expect(text).to.match(/relayClient\(\{ relays: \[\.\.\.\] \}\)/)
    expect(text).to.not.match(/\n\s+at /)
  })

  describe('relay server', () => {
    /** One hop request from `h` on a fresh stream; the STATUS it got (undefined: none, or reset). */
    const hop = async (h: { node: HostileNode; connection: Connection }, message: Uint8Array) => {
      const { stream, reader } = await h.node.open(h.connection, RELAY_HOP_PROTOCOL)
      // a refused stream is reset at once (maybe before this side could write)
      if (stream.status !== 'open') return undefined
      try {
        stream.send(lp(message))
      } catch {
        return undefined
      }
      const answer = await reader.readLp(5000)
      await closeSoon(stream)
      return answer ? (unpb(answer).get(5)?.[0] as number | undefined) : undefined
    }
    const RESERVE = pb([[1, 0]])

    it('counts IPv4 addresses by /24 and IPv6 ones by /48', () => {
      expect(subnetOf('198.51.100.7')).to.equal('198.51.100.0/24')
      expect(subnetOf('2001:db8:1:2::5')).to.equal('2001:db8:1::/48')
      expect(subnetOf('2001:0db8:0001:ffff:0:0:0:1')).to.equal('2001:db8:1::/48')
      expect(subnetOf('::ffff:198.51.100.7')).to.equal('198.51.100.0/24')
      expect(subnetOf('::1')).to.equal('0:0:0::/48')
      expect(subnetOf('not-an-ip')).to.equal('not-an-ip')
    })

    it('reservations from Sybils on many IPs of one /24: at most maxReservationsPerSubnet', async () => {
      const relay = await nodes.start('relay', {
        connections: { maxIncomingPendingPerHost: 8 },
        plugins: [relayServer({ maxReservationsPerSubnet: 6, maxReservationsPerIp: 2 })],
      })
      const granted: string[] = []
      let refused = 0
      // 20 Sybils on 20 addresses of 127.0.0.0/24
      for (let i = 0; i < 20; i++) {
        const h = await connect(relay, { sourceIp: IPS[i] })
        const status = await hop(h, RESERVE)
        if (status === RELAY_STATUS.OK) granted.push(h.node.sourceIp)
        else refused++
      }
      expect(granted).to.have.length(6)
      expect(refused).to.equal(14)
      expect(new Set(granted.map(subnetOf))).to.deep.equal(new Set(['127.0.0.0/24']))
      expect(
        eventsOf(relay, 'relay:refused').filter((e) => e.reason === 'max-reservations-per-subnet'),
      ).to.have.length(14)
    })

    it('per-IP limit counts every IP a peer is connected from', async () => {
      const relay = await nodes.start('relay', {
        connections: { maxIncomingPendingPerHost: 8 },
        plugins: [relayServer({ maxReservationsPerIp: 1, maxReservationsPerSubnet: 0 })],
      })
      const first = await connect(relay, { sourceIp: IPS[0] })
      expect(await hop(first, RESERVE)).to.equal(RELAY_STATUS.OK)
      // a second peer connected from a fresh IP and from the full one (one identity, two connections):
      // asking over the fresh IP's connection does not get around the limit
      const privateKey = await generateKeyPair('Ed25519')
      await connect(relay, { sourceIp: IPS[0], privateKey })
      const second = await connect(relay, { sourceIp: IPS[1], privateKey })
      await waitFor(
        () =>
          relay.node.libp2p.getConnections().filter((c) => c.remotePeer.toString() === second.node.peerId)
            .length >= 2,
        { what: "the relay sees the peer's two connections" },
      )
      expect(await hop(second, RESERVE)).to.equal(RELAY_STATUS.PERMISSION_DENIED)
      expect(eventsOf(relay, 'relay:refused').at(-1)).to.include({
        reason: 'max-reservations-per-ip',
        ip: IPS[0],
      })
      // a third peer from a fresh IP only: granted
      const third = await connect(relay, { sourceIp: IPS[2] })
      expect(await hop(third, RESERVE)).to.equal(RELAY_STATUS.OK)
    })

    it('hop slowloris: 4 silent hop streams per peer at once, each reset after hopTimeout; more are refused', async () => {
      const relay = await nodes.start('relay', {
        plugins: [relayServer({ hopTimeout: '1s', maxHopRequestsPerPeer: 4, hopRequestRate: 100 })],
      })
      const h = await connect(relay)
      const opened = await Promise.all(
        Array.from({ length: 8 }, () => h.node.open(h.connection, RELAY_HOP_PROTOCOL).catch(() => undefined)),
      )
      const t0 = Date.now()
      const ends = await Promise.all(
        opened.map(async (o) => {
          // refused: reset at once (before the stream was even handed over)
          if (o?.stream.status !== 'open') return { end: 'refused', ms: 0 }
          const r = await o.reader.read({ timeoutMs: 5000 })
          return { end: r.end, ms: Date.now() - t0 }
        }),
      )
      const early = ends.filter((e) => e.ms < 500)
      const held = ends.filter((e) => e.ms >= 500)
      expect(early, JSON.stringify(ends)).to.have.length(4)
      expect(held, JSON.stringify(ends)).to.have.length(4)
      // the held ones end with the hop timeout (1 s), not when the attacker stops
      for (const e of held) expect(e.ms).to.be.below(3000)
      expect(relay.node.reputation.penalty(h.node.peerId)).to.be.greaterThan(0)
    })

    it('hop requests over the rate are refused (and penalized)', async () => {
      const relay = await nodes.start('relay', { plugins: [relayServer({ hopRequestRate: 1 })] })
      const h = await connect(relay)
      const statuses: Array<number | undefined> = []
      for (let i = 0; i < 15; i++) statuses.push(await hop(h, RESERVE))
      // a burst of 10, then refused (reset, no status)
      expect(statuses.filter((s) => s === RELAY_STATUS.OK).length).to.be.within(10, 11)
      expect(statuses.filter((s) => s === undefined).length).to.be.within(4, 5)
      expect(relay.node.reputation.penalty(h.node.peerId)).to.be.greaterThan(0)
    })
  })
})
