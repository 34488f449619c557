import { connect, createServer, type Socket } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { loadOrCreateIdentity, type MeshConfig, type MeshPlugin, resolveConfig } from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { CircuitListener, capture } from '../plugins/relay-client/components.js'
import { decodeHopAnswer, RESERVE_REQUEST } from '../plugins/relay-client/hop.js'
import { type RelayClientApi, relayClient } from '../plugins/relay-client/index.js'
import { type RelayServerApi, relayServer } from '../plugins/relay-server/index.js'
import { LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { freePort, tempDir, waitFor } from './helpers.js'

const env = TEST_ENV

/**
 * A loopback TCP proxy in front of `targetPort`: adds `delayMs` each way (loopback has no netem), and can
 * blackhole the connections open at that moment (they stay open but carry nothing: a half-open relay).
 */
async function tcpProxy(targetPort: number, delayMs = 0) {
  const pairs = new Set<{ a: Socket; b: Socket; dead: boolean }>()
  const server = createServer((a) => {
    const b = connect(targetPort, '127.0.0.1')
    const pair = { a, b, dead: false }
    pairs.add(pair)
    const pipe = (from: Socket, to: Socket) => {
      from.on('data', (chunk) => {
        if (pair.dead) return
        if (delayMs === 0) to.write(chunk)
        else setTimeout(() => !pair.dead && !to.destroyed && to.write(chunk), delayMs)
      })
      from.on('close', () => {
        pairs.delete(pair)
        if (!pair.dead) to.destroy()
      })
      from.on('error', () => {})
    }
    pipe(a, b)
    pipe(b, a)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as { port: number }).port,
    /**
     * The connections open now are cut on the relay's side only: the relay sees them close, the client's
     * end stays open and silent (no FIN, no RST), as after a relay restart the client did not notice.
     * New connections work.
     */
    blackhole: () => {
      for (const p of pairs) {
        p.dead = true
        p.b.destroy()
      }
    },
    close: async () => {
      for (const p of pairs) {
        p.a.destroy()
        p.b.destroy()
      }
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

// fast retries so that restarts are noticed within the tests' bounds
const fastClient = { retryInitial: '100ms', retryMax: '500ms', timeout: '3s', checkInterval: '1s' } as const

/**
 * relayClient() given libp2p components without a usable address manager (as a future libp2p might): the
 * plugin must degrade (reserve, no advertising), not crash.
 */
function relayClientWithoutAddressManager(relays: string[]): MeshPlugin {
  const def = relayClient.definition
  const hidden = new Set(['confirmObservedAddr', 'removeObservedAddr'])
  /** The real address manager without the two methods the plugin needs (the transport uses the rest). */
  const withoutMethods = (am: object) =>
    new Proxy(am, {
      get: (t, p) => {
        if (typeof p === 'string' && hidden.has(p)) return undefined
        const v = Reflect.get(t, p, t)
        return typeof v === 'function' ? v.bind(t) : v
      },
    })
  return definePlugin({
    name: 'relay-client',
    provides: ['relay-client'],
    dependencies: ['transport', 'identify', 'ping'],
    create: () => {
      const hooks = def.create(def.options!.parse({ relays, ...fastClient }))
      return {
        ...hooks,
        libp2p: async (ctx: Parameters<NonNullable<typeof hooks.libp2p>>[0]) => {
          const contribution = await hooks.libp2p!(ctx)
          const factory = contribution.transports![0] as unknown as (components: object) => unknown
          const without = (components: object) =>
            factory(
              new Proxy(components, {
                get: (t, p, r) =>
                  p === 'addressManager' ? withoutMethods(Reflect.get(t, p, r)) : Reflect.get(t, p, r),
              }),
            )
          return { transports: [without as never] }
        },
        // the options were parsed above: this plugin itself takes none
        reconfigure: undefined,
      }
    },
  })() as MeshPlugin
}

/** Protobuf varint. */
const varint = (n: number | bigint): number[] => {
  let v = BigInt(n)
  const out: number[] = []
  do {
    const b = Number(v & 0x7fn)
    v >>= 7n
    out.push(v > 0n ? b | 0x80 : b)
  } while (v > 0n)
  return out
}
const field = (n: number, bytes: number[]) => [...varint((n << 3) | 2), ...varint(bytes.length), ...bytes]

describe('relay: server and client', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  const proxies: Array<{ close(): Promise<void> }> = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-relay-'))
  })
  afterEach(async () => {
    await nodes.closeAll()
    for (const p of proxies.splice(0)) await p.close()
    await cleanup()
  })

  const nodes = new LoopbackNodes(
    () => dir,
    () => [identify(), ping(), noise(), yamux(), tcp()],
    'silent',
  )
  const start = (name: string, extra: MeshConfig = {}): Promise<TestNode> => nodes.start(name, extra)

  const of = (n: TestNode, event: string) => n.events.filter((e) => e.event === event)
  const clientApi = (n: TestNode) => n.node.api<RelayClientApi>('relay-client')
  const serverApi = (n: TestNode) => n.node.api<RelayServerApi>('relay-server')
  const circuitAddrs = (n: TestNode) =>
    n.node.libp2p
      .getMultiaddrs()
      .map((a) => a.toString())
      .filter((a) => a.includes('/p2p-circuit'))
  const startRelay = (name: string, extra: MeshConfig = {}, server: Parameters<typeof relayServer>[0] = {}) =>
    start(name, { ...extra, plugins: [relayServer(server)] })
  /** A node that can dial through relays but reserves on none. */
  const startDialer = (name: string) => start(name, { plugins: [relayClient({ minReservations: 0 })] })

  /** Dials `target` through `relay` (its circuit address) and checks that the connection is relayed. */
  async function dialThrough(from: TestNode, relay: TestNode, target: TestNode) {
    const addr = circuitAddrs(target).find((a) => a.includes(`/p2p/${relay.peerId}/p2p-circuit`))
    expect(addr, `${target.peerId} advertises a circuit address via ${relay.peerId}`).to.be.a('string')
    await from.node.libp2p.hangUp(multiaddr(`/p2p/${target.peerId}`)).catch(() => {})
    const conn = await from.node.libp2p.dial(multiaddr(addr!), { signal: AbortSignal.timeout(5_000) })
    expect(conn.remotePeer.toString()).to.equal(target.peerId)
    expect(conn.remoteAddr.toString()).to.include(`/p2p/${relay.peerId}/p2p-circuit`)
    expect(conn.limits, 'a relayed connection is limited').to.not.equal(undefined)
    return conn
  }

  it('reserves on two relays and advertises /p2p-circuit addresses; a third peer connects through one', async () => {
    const r1 = await startRelay('r1')
    const r2 = await startRelay('r2')
    const client = await start('client', {
      plugins: [relayClient({ relays: [r1.address, r2.address], ...fastClient })],
    })
    await waitFor(() => clientApi(client).reservations().length === 2, {
      timeoutMs: 10_000,
      what: '2 reservations',
    })
    const reservations = clientApi(client).reservations()
    expect(reservations.map((r) => r.relay).sort()).to.deep.equal([r1.peerId, r2.peerId].sort())
    for (const r of reservations) {
      expect(r.expires).to.be.greaterThan(Date.now() + 3_600_000)
      expect(r.rttMs).to.be.a('number')
      expect(r.addrs.every((a) => a.endsWith('/p2p-circuit'))).to.equal(true)
    }
    expect(of(client, 'relay:reserved')).to.have.length(2)
    const reserved = of(client, 'relay:reserved').find((e) => e.relay === r1.peerId)
    expect(reserved?.expires).to.equal(reservations.find((r) => r.relay === r1.peerId)?.expires)
    expect(reserved?.refreshed).to.equal(false)
    await waitFor(() => circuitAddrs(client).length >= 2, { what: 'two circuit addresses advertised' })
    expect(circuitAddrs(client).some((a) => a.includes(r1.peerId))).to.equal(true)
    expect(circuitAddrs(client).some((a) => a.includes(r2.peerId))).to.equal(true)
    expect(
      serverApi(r1)
        .reservations()
        .map((r) => r.peer),
    ).to.deep.equal([client.peerId])
    expect(of(r1, 'relay:reservation')[0]).to.include({ peer: client.peerId, refreshed: false })

    const third = await startDialer('third')
    const conn = await dialThrough(third, r1, client)
    expect(conn.limits?.seconds ?? Number(conn.limits?.bytes ?? 0)).to.be.greaterThan(0)
    await waitFor(() => of(r1, 'relay:circuit').length > 0, { what: 'relay:circuit on the relay' })
    expect(of(r1, 'relay:circuit')[0]).to.include({ from: third.peerId, to: client.peerId })
    // the relayed connection carries a protocol that allows limited connections: ping
    const rtt = await (
      third.node.libp2p.services as { ping: { ping(p: unknown, o: object): Promise<number> } }
    ).ping.ping(conn.remotePeer, { signal: AbortSignal.timeout(5_000), runOnLimitedConnection: true })
    expect(rtt).to.be.a('number')
  })

  it('reserves again when a relay restarts (same identity and port), and circuits work afterwards', async () => {
    const port = await freePort()
    const listen = [`/ip4/127.0.0.1/tcp/${port}`]
    let r1 = await startRelay('r1', { listen })
    const r2 = await startRelay('r2')
    const client = await start('client', {
      plugins: [relayClient({ relays: [r1.address, r2.address], ...fastClient })],
    })
    await waitFor(() => clientApi(client).reservations().length === 2, { what: '2 reservations' })

    const stoppedAt = Date.now()
    await r1.close()
    await waitFor(() => of(client, 'relay:lost').length > 0, { timeoutMs: 5_000, what: 'relay:lost' })
    expect(of(client, 'relay:lost')[0]).to.include({ relay: r1.peerId, reason: 'connection-closed' })
    expect(
      clientApi(client)
        .reservations()
        .map((r) => r.relay),
    ).to.deep.equal([r2.peerId])
    await waitFor(() => !circuitAddrs(client).some((a) => a.includes(r1.peerId)), {
      what: 'the lost relay address withdrawn',
    })

    r1 = await startRelay('r1', { listen })
    const restartedAt = Date.now()
    await waitFor(
      () => of(client, 'relay:reserved').some((e) => e.relay === r1.peerId && (e.at as number) > stoppedAt),
      { timeoutMs: 10_000, what: 'relay:reserved on the restarted relay' },
    )
    const reservedAfter = Date.now() - restartedAt
    expect(reservedAfter, 'reserved again within 5 s of the restart').to.be.lessThan(5_000)
    expect(
      serverApi(r1)
        .reservations()
        .map((r) => r.peer),
    ).to.deep.equal([client.peerId])
    await waitFor(() => circuitAddrs(client).some((a) => a.includes(r1.peerId)), {
      what: 'the circuit address advertised again',
    })
    const third = await startDialer('third')
    await dialThrough(third, r1, client)
  })

  it('starts while every relay is down, then reserves when they come up', async () => {
    const ports = [await freePort(), await freePort()]
    const ids = [
      (await loadOrCreateIdentity(`${dir}/r1`)).peerId.toString(),
      (await loadOrCreateIdentity(`${dir}/r2`)).peerId.toString(),
    ]
    const relays = ports.map((p, i) => `/ip4/127.0.0.1/tcp/${p}/p2p/${ids[i]}`)
    const t0 = Date.now()
    const client = await start('client', { plugins: [relayClient({ relays, ...fastClient })] })
    expect(client.node.state).to.equal('started')
    // startWait does not hold a node whose relays all refuse: it starts as soon as every one failed
    expect(Date.now() - t0).to.be.below(2500)
    await waitFor(() => of(client, 'relay:retry').length >= 4, { timeoutMs: 5_000, what: 'retries' })
    expect(clientApi(client).reservations()).to.deep.equal([])

    const r1 = await startRelay('r1', { listen: [`/ip4/127.0.0.1/tcp/${ports[0]}`] })
    const r2 = await startRelay('r2', { listen: [`/ip4/127.0.0.1/tcp/${ports[1]}`] })
    expect([r1.peerId, r2.peerId]).to.deep.equal(ids)
    await waitFor(() => clientApi(client).reservations().length === 2, {
      timeoutMs: 10_000,
      what: '2 reservations once the relays are up',
    })
    await waitFor(() => circuitAddrs(client).length >= 2, { what: 'circuit addresses' })
  })

  it('starts with its circuit address already held (startWait): the first addresses it tells include it', async () => {
    const r1 = await startRelay('r1')
    const client = await start('client', {
      plugins: [relayClient({ relays: [r1.address], minReservations: 1 })],
    })
    // right after start, no waiting: what identify and a topic's first exchange would tell peers
    expect(circuitAddrs(client).some((a) => a.includes(`/p2p/${r1.peerId}/p2p-circuit`))).to.equal(true)
    expect(clientApi(client).reservations()[0]?.rttMs).to.be.a('number')
    // without the wait, the reservation comes after start
    const later = await start('later', {
      plugins: [relayClient({ relays: [r1.address], minReservations: 1, startWait: 0 })],
    })
    expect(circuitAddrs(later)).to.deep.equal([])
    await waitFor(() => circuitAddrs(later).length > 0, { what: 'the reservation after start' })
  })

  const portOf = (n: TestNode) => Number(/\/tcp\/(\d+)/.exec(n.address)?.[1])

  it('keeps minReservations on the relays with the lowest RTT, falling back to a slower one', async () => {
    const relays = [await startRelay('r1'), await startRelay('r2'), await startRelay('r3')]
    const slow = await tcpProxy(portOf(relays[0]), 100)
    proxies.push(slow)
    // the slow relay comes first in the list: config order alone would pick it
    const addrs = [
      `/ip4/127.0.0.1/tcp/${slow.port}/p2p/${relays[0].peerId}`,
      relays[1].address,
      relays[2].address,
    ]
    const client = await start('client', {
      plugins: [relayClient({ relays: addrs, minReservations: 2, ...fastClient })],
    })
    await waitFor(() => clientApi(client).reservations().length === 2, { what: '2 reservations' })
    await new Promise((r) => setTimeout(r, 300))
    const held = clientApi(client).reservations()
    expect(held, 'no more than needed').to.have.length(2)
    expect(held.map((r) => r.relay).sort()).to.deep.equal([relays[1].peerId, relays[2].peerId].sort())
    expect(held.every((r) => (r.rttMs as number) < 100)).to.equal(true)

    // one fast relay goes away: the slow one is taken rather than staying short of reservations
    await relays[1].close()
    await waitFor(
      () =>
        clientApi(client)
          .reservations()
          .some((r) => r.relay === relays[0].peerId),
      {
        what: 'a reservation on the slow relay',
      },
    )
    const slowOne = clientApi(client)
      .reservations()
      .find((r) => r.relay === relays[0].peerId)
    expect(slowOne?.rttMs).to.be.at.least(150)
  })

  it('notices a relay that stops answering on an open connection (half-open) and reserves again', async () => {
    const r1 = await startRelay('r1')
    const r2 = await startRelay('r2')
    const proxy = await tcpProxy(portOf(r1))
    proxies.push(proxy)
    const viaProxy = `/ip4/127.0.0.1/tcp/${proxy.port}/p2p/${r1.peerId}`
    const client = await start('client', {
      plugins: [
        relayClient({
          relays: [viaProxy, r2.address],
          ...fastClient,
          checkInterval: '300ms',
          timeout: '500ms',
        }),
      ],
    })
    await waitFor(() => clientApi(client).reservations().length === 2, { what: '2 reservations' })
    const silencedAt = Date.now()
    proxy.blackhole()
    await waitFor(() => of(client, 'relay:lost').length > 0, { timeoutMs: 5_000, what: 'relay:lost' })
    expect(of(client, 'relay:lost')[0]).to.include({ relay: r1.peerId, reason: 'ping-failed' })
    await waitFor(
      () => of(client, 'relay:reserved').some((e) => e.relay === r1.peerId && (e.at as number) > silencedAt),
      { timeoutMs: 5_000, what: 'reserved again on a new connection' },
    )
    const third = await startDialer('third')
    await dialThrough(third, r1, client)
  })

  it('refuses circuits beyond maxCircuitsPerPeer', async () => {
    const relay = await startRelay('r1', {}, { maxCircuitsPerPeer: 1 })
    const client = await start('client', {
      plugins: [relayClient({ relays: [relay.address], ...fastClient })],
    })
    await waitFor(() => circuitAddrs(client).length === 1, { what: 'a circuit address' })
    const first = await startDialer('d1')
    await dialThrough(first, relay, client)
    const second = await startDialer('d2')
    const err = await second.node.libp2p
      .dial(multiaddr(circuitAddrs(client)[0]), { signal: AbortSignal.timeout(5_000) })
      .then(
        () => undefined,
        (e: Error) => e,
      )
    expect(err?.message).to.match(/status 1(?!\d)|PERMISSION_DENIED|failed to connect via relay/)
    expect(
      of(relay, 'relay:refused').some(
        (e) => e.reason === 'max-circuits-per-peer' && e.peer === second.peerId,
      ),
    ).to.equal(true)
  })

  it('refuses a reservation beyond maxReservations', async () => {
    const relay = await startRelay('r1', {}, { maxReservations: 1 })
    const a = await start('a', { plugins: [relayClient({ relays: [relay.address], ...fastClient })] })
    await waitFor(() => clientApi(a).reservations().length === 1, { what: 'first reservation' })
    const b = await start('b', { plugins: [relayClient({ relays: [relay.address], ...fastClient })] })
    await waitFor(() => of(b, 'relay:retry').some((e) => /reservation failed/.test(String(e.error))), {
      what: 'the second client refused',
    })
    expect(clientApi(b).reservations()).to.deep.equal([])
    expect(
      of(relay, 'relay:refused').some((e) => e.peer === b.peerId && e.reason === 'max-reservations'),
    ).to.equal(true)
    expect(
      serverApi(relay)
        .reservations()
        .map((r) => r.peer),
    ).to.deep.equal([a.peerId])
  })

  it('refuses a reservation beyond maxReservationsPerIp', async () => {
    const relay = await startRelay('r1', {}, { maxReservationsPerIp: 1 })
    const a = await start('a', { plugins: [relayClient({ relays: [relay.address], ...fastClient })] })
    await waitFor(() => clientApi(a).reservations().length === 1, { what: 'first reservation' })
    const b = await start('b', { plugins: [relayClient({ relays: [relay.address], ...fastClient })] })
    await waitFor(() => of(relay, 'relay:refused').some((e) => e.peer === b.peerId), { what: 'refused' })
    expect(of(relay, 'relay:refused').find((e) => e.peer === b.peerId)).to.include({
      reason: 'max-reservations-per-ip',
      ip: '127.0.0.1',
    })
    expect(clientApi(b).reservations()).to.deep.equal([])
  })

  it("decodes the relay's RESERVE answer (HopMessage), skipping unknown fields, rejecting truncated input", () => {
    expect([...RESERVE_REQUEST]).to.deep.equal([0x08, 0x00])
    const addr = [...multiaddr('/ip4/198.51.100.1/tcp/4001').bytes]
    const reservation = [0x08, ...varint(1_800_000_000), ...field(2, addr), ...field(3, [1, 2, 3])]
    const limit = [0x08, ...varint(120), 0x10, ...varint(131_072)]
    const answer = Uint8Array.from([
      0x08,
      2, // type STATUS
      ...field(3, reservation),
      ...field(4, limit),
      ...[0x48, 7], // field 9 (unknown), varint
      0x28,
      ...varint(100), // status OK
    ])
    const decoded = decodeHopAnswer(answer)
    expect(decoded.type).to.equal(2)
    expect(decoded.status).to.equal(100)
    expect(decoded.reservation?.expire).to.equal(1_800_000_000n)
    expect(decoded.reservation?.addrs.map((b) => multiaddr(b).toString())).to.deep.equal([
      '/ip4/198.51.100.1/tcp/4001',
    ])
    expect(decoded.limit).to.deep.equal({ duration: 120, data: 131_072n })
    expect(() => decodeHopAnswer(answer.subarray(0, 6))).to.throw(/truncated/)
    expect(decodeHopAnswer(Uint8Array.from([0x28, ...varint(200)])).status).to.equal(200)
  })

  it('checks the libp2p components it needs, without throwing for missing ones', () => {
    const listener = new CircuitListener()
    const full = capture(
      {
        addressManager: { confirmObservedAddr: () => {}, removeObservedAddr: () => {} },
        transportManager: { listen: async () => {} },
      },
      listener,
    )
    expect(full.degraded).to.equal(undefined)
    // libp2p's components object throws for a component it does not have
    const throwing = new Proxy({} as Record<string, unknown>, {
      get: (_t, p) => {
        throw new Error(`${String(p)} not set`)
      },
    })
    const none = capture(throwing, listener)
    expect(none.addressManager).to.equal(undefined)
    expect(none.transportManager).to.equal(undefined)
    expect(none.degraded).to.match(/addressManager\.confirmObservedAddr.*transportManager\.listen/)
  })

  it('refreshes a short reservation before it expires, with its own RESERVE over the public stream API', async () => {
    const relay = await startRelay('r1', {}, { reservationTtl: '4s' })
    const client = await start('client', {
      plugins: [relayClient({ relays: [relay.address], ...fastClient })],
    })
    await waitFor(() => clientApi(client).reservations().length === 1, { what: 'a reservation' })
    const first = clientApi(client).reservations()[0].expires
    await waitFor(() => of(client, 'relay:reserved').some((e) => e.refreshed === true), {
      timeoutMs: 5_000,
      what: 'the reservation refreshed',
    })
    expect(of(client, 'relay:lost')).to.deep.equal([])
    // past the first expiry: still reserved on the relay, circuits still work
    await new Promise((r) => setTimeout(r, Math.max(0, first - Date.now() + 1_000)))
    expect(clientApi(client).reservations()[0].expires).to.be.greaterThan(first)
    expect(
      serverApi(relay)
        .reservations()
        .map((r) => r.peer),
    ).to.deep.equal([client.peerId])
    expect(
      of(relay, 'relay:reservation').some((e) => e.peer === client.peerId && e.refreshed === true),
    ).to.equal(true)
    const third = await startDialer('third')
    await dialThrough(third, relay, client)
  })

  it('without a usable address manager: starts, reserves, circuits work, no circuit address advertised', async () => {
    const relay = await startRelay('r1')
    const client = await start('client', { plugins: [relayClientWithoutAddressManager([relay.address])] })
    expect(client.node.state).to.equal('started')
    await waitFor(() => clientApi(client).reservations().length === 1, { what: 'a reservation' })
    expect(
      serverApi(relay)
        .reservations()
        .map((r) => r.peer),
    ).to.deep.equal([client.peerId])
    expect(circuitAddrs(client)).to.deep.equal([])
    const third = await startDialer('third')
    const conn = await third.node.libp2p.dial(
      multiaddr(`${relay.address}/p2p-circuit/p2p/${client.peerId}`),
      {
        signal: AbortSignal.timeout(5_000),
      },
    )
    expect(conn.remotePeer.toString()).to.equal(client.peerId)
    expect(conn.limits, 'a relayed connection is limited').to.not.equal(undefined)
  })

  it('rejects a relay address without /p2p/<peer id>', () => {
    expect(() =>
      resolveConfig(
        {
          dataDir: `${dir}/x`,
          plugins: [
            identify(),
            ping(),
            noise(),
            yamux(),
            tcp(),
            relayClient({ relays: ['/ip4/127.0.0.1/tcp/1'] }),
          ],
        },
        { env, registry: builtinPlugins },
      ),
    ).to.throw(/relay-client\)\.relays\[0\]/)
  })
})
