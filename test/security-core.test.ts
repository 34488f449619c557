import { connect, type Socket } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import {
  combineGaters,
  createBudget,
  createEventBus,
  createLogger,
  createPeerAddressPolicy,
  definePlugin,
  isMeshError,
  type MeshConfig,
  type MeshEvent,
  MeshKernel,
  type MeshNode,
  resolveConfig,
} from 'meshkit'
import { builtinPlugins, identify, noise, staticPeers, tcp, yamux } from 'meshkit/plugins'
import { hostKeyOf } from '../src/core/node-gater.js'
import { startPeerStoreHygiene } from '../src/core/peer-store-hygiene.js'
import { Reputation } from '../src/core/reputation.js'
import { tempDir, waitFor } from './helpers.js'

const env = { command: 'start', mode: 'test' } as const

describe('security: core budgets, reputation and address scope', () => {
  describe('budgets', () => {
    it('admits a burst, then the sustained rate, per peer; other peers keep theirs', () => {
      let now = 0
      const refused: string[] = []
      const budget = createBudget(
        'test',
        { ratePerSecond: 2, burst: 3, concurrency: 100 },
        (peer, r) => refused.push(`${peer}:${r.reason}`),
        () => now,
      )
      const take = (peer: string) => {
        const t = budget.admit(peer)
        if (t.ok) t.release()
        return t.ok
      }
      expect([take('a'), take('a'), take('a'), take('a')]).to.deep.equal([true, true, true, false])
      expect(take('b')).to.equal(true, 'another peer has its own budget')
      now += 500 // one more token at 2/s
      expect([take('a'), take('a')]).to.deep.equal([true, false])
      expect(refused).to.deep.equal(['a:rate', 'a:rate'])
      expect(budget.stats().refused.rate).to.equal(2)
    })

    it('bounds concurrency per peer and in total; a ticket is released once', () => {
      const budget = createBudget('test', { concurrency: 2, globalConcurrency: 3, burst: 100 })
      const a1 = budget.admit('a')
      const a2 = budget.admit('a')
      const a3 = budget.admit('a')
      expect([a1.ok, a2.ok, a3.ok]).to.deep.equal([true, true, false])
      expect(!a3.ok && a3.reason).to.equal('concurrency')
      expect(!a3.ok && a3.peerFault).to.equal(true)
      const b1 = budget.admit('b')
      const b2 = budget.admit('b')
      expect(b1.ok).to.equal(true)
      expect(!b2.ok && b2.reason).to.equal('global-concurrency')
      expect(!b2.ok && b2.peerFault).to.equal(false, 'the node being busy is not the peer`s fault')
      if (a1.ok) {
        a1.release()
        a1.release()
      }
      expect(budget.stats().inFlight).to.equal(2)
      expect(budget.admit('a').ok).to.equal(true)
    })

    it('counts bytes per minute and refuses what goes over', () => {
      let now = 0
      const budget = createBudget('test', { bytesPerMinute: 6000 }, undefined, () => now)
      expect(budget.spend('a', 5000)).to.equal(true)
      expect(budget.spend('a', 2000)).to.equal(false)
      now += 20_000 // +2000 bytes
      expect(budget.spend('a', 2000)).to.equal(true)
    })

    it('tracks a bounded number of peers (a Sybil flood cannot grow it)', () => {
      const budget = createBudget('test', { maxPeers: 100, burst: 1000 })
      for (let i = 0; i < 10_000; i++) {
        const t = budget.admit(`sybil-${i}`)
        if (t.ok) t.release()
      }
      expect(budget.stats().peers).to.equal(100)
    })

    it('rejects budgets that would admit nothing or everything', () => {
      expect(() => createBudget('x', { ratePerSecond: 0 })).to.throw(RangeError, /ratePerSecond/)
      expect(() => createBudget('x', { concurrency: Number.NaN })).to.throw(RangeError)
    })
  })

  describe('reputation', () => {
    const settings = { banThreshold: 100, banDuration: 1000, banIps: false, penaltyHalfLife: 10_000 }
    const make = (now: () => number) => {
      const events: MeshEvent[] = []
      const bus = createEventBus()
      bus.on('*', (e) => events.push(e))
      const reputation = new Reputation({ ...settings }, bus, createLogger({ write: () => {} }), now)
      return { reputation, events }
    }

    it('bans a peer whose penalty reaches the threshold; the points halve with time', () => {
      let now = 0
      const { reputation, events } = make(() => now)
      reputation.penalize('p', 'malformed')
      reputation.penalize('p', 'malformed')
      expect(reputation.penalty('p')).to.equal(50)
      now += 10_000
      expect(reputation.penalty('p')).to.equal(25, 'halved after the half-life')
      reputation.penalize('p', 'forged')
      expect(reputation.isBanned('p')).to.equal(false)
      reputation.penalize('p', 'malformed')
      expect(reputation.isBanned('p')).to.equal(true)
      const banned = events.find((e) => e.event === 'peer:banned')
      expect(banned?.peerId).to.equal('p')
      expect(String(banned?.reason)).to.match(/malformed/)
      reputation.close()
    })

    it('a ban ends by itself (peer:unbanned); a second ban lasts twice as long', async () => {
      const { reputation, events } = make(Date.now)
      reputation.settings.banDuration = 150
      const first = reputation.ban('p', 'test')
      expect(first.until - first.since).to.equal(150)
      await waitFor(() => !reputation.isBanned('p'), { timeoutMs: 2000, what: 'ban expiry' })
      await waitFor(() => events.some((e) => e.event === 'peer:unbanned'), { what: 'peer:unbanned' })
      const second = reputation.ban('p', 'again')
      expect(second.until - second.since).to.equal(300)
      expect(second.count).to.equal(2)
      expect(reputation.unban('p')).to.equal(true)
      expect(reputation.isBanned('p')).to.equal(false)
      reputation.close()
    })

    it('remembers a bounded number of peers and bans', () => {
      const { reputation } = make(Date.now)
      for (let i = 0; i < 20_000; i++) reputation.ban(`p${i}`, 'flood', 60_000)
      expect(reputation.bans().length).to.equal(10_000)
      reputation.close()
    })
  })

  describe('address scope for addresses peers give', () => {
    const policy = (scope: 'public' | 'private' | 'all', publicCidrs: string[] = []) =>
      createPeerAddressPolicy({ scope, publicCidrs, dialInterval: () => 10_000 })

    it('public: only globally routable addresses; private adds LANs; all adds loopback', () => {
      const cases: Array<[string, boolean, boolean, boolean]> = [
        ['/ip4/8.8.8.8/tcp/4001', true, true, true],
        ['/ip4/192.168.1.2/tcp/4001', false, true, true],
        ['/ip4/10.1.2.3/udp/4001/quic-v1', false, true, true],
        ['/ip4/127.0.0.1/tcp/4001', false, false, true],
        ['/ip6/::1/tcp/4001', false, false, true],
        ['/ip6/fe80::1/tcp/4001', false, false, true],
        ['/ip4/169.254.169.254/tcp/80', false, false, false],
        ['/ip6/fd00:ec2::254/tcp/80', false, false, false],
        ['/ip4/0.0.0.0/tcp/4001', false, false, false],
        ['/ip4/224.0.0.251/udp/5353', false, false, false],
        ['/ip6/::ffff:127.0.0.1/tcp/1', false, false, true],
        ['/dns4/localhost/tcp/4001', false, false, true],
        ['/dns4/example.com/tcp/4001', true, true, true],
        ['/unix/tmp%2Fsock', false, false, true],
      ]
      for (const [address, pub, priv, all] of cases) {
        expect(policy('public').refuse(address) === undefined, `${address} public`).to.equal(pub)
        expect(policy('private').refuse(address) === undefined, `${address} private`).to.equal(priv)
        expect(policy('all').refuse(address) === undefined, `${address} all`).to.equal(all)
      }
      expect(policy('public').refuse('127.0.0.1')).to.match(/loopback/)
      expect(policy('public').refuse('10.0.0.1')).to.match(/private/)
    })

    it('publicCidrs count as public; a relayed address is judged by its relay', () => {
      const p = policy('public', ['198.51.100.0/24'])
      expect(p.refuse('/ip4/198.51.100.7/tcp/4001')).to.equal(undefined)
      expect(p.refuse('/ip4/203.0.113.7/tcp/4001')).to.match(/private/)
      expect(p.refuse('/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWQ/p2p-circuit')).to.equal(undefined)
      expect(p.refuse('/p2p/12D3KooWQ/p2p-circuit/webrtc')).to.equal(undefined)
    })

    it('trusts configured addresses, with or without /p2p/, and relays of configured circuit addresses', () => {
      const p = policy('public')
      const relay = '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWRmbzLnFmF8bGWHyxkXa2Jf4BwrYAibsCWRE7kSr3KQcz'
      p.trust(`${relay}/p2p-circuit`)
      expect(p.dialable(multiaddr(relay))).to.equal(true)
      expect(p.dialable(multiaddr('/ip4/127.0.0.1/tcp/4001'))).to.equal(true)
      expect(p.dialable(multiaddr('/ip4/127.0.0.1/tcp/4002'))).to.equal(false)
    })

    it('one dial per peer per interval on a peer`s word', () => {
      let now = 0
      const p = createPeerAddressPolicy({
        scope: 'all',
        publicCidrs: [],
        dialInterval: () => 1000,
        now: () => now,
      })
      expect([p.takeDial('a'), p.takeDial('a'), p.takeDial('b')]).to.deep.equal([true, false, true])
      now += 1000
      expect(p.takeDial('a')).to.equal(true)
    })
  })

  describe('a running node', function () {
    this.timeout(30_000)
    let dir: string
    let cleanup: () => Promise<void>
    const kernels: MeshKernel[] = []
    beforeEach(async () => {
      ;({ dir, cleanup } = await tempDir())
    })
    afterEach(async () => {
      for (const k of kernels.splice(0)) await k.close().catch(() => {})
      await cleanup()
    })
    const start = async (name: string, extra: MeshConfig = {}): Promise<MeshNode> => {
      const kernel = new MeshKernel({ env, logger: createLogger({ write: () => {} }) })
      kernels.push(kernel)
      return kernel.start(
        resolveConfig(
          {
            dataDir: `${dir}/${name}`,
            datastore: 'memory',
            logLevel: 'silent',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            network: { addressScope: 'all' },
            ...extra,
            plugins: [identify(), noise(), yamux(), tcp(), ...(extra.plugins ?? [])],
          },
          { env, registry: builtinPlugins },
        ),
      )
    }

    it('a ban hangs up on the peer and keeps it out both ways until it ends', async () => {
      const a = await start('a')
      const b = await start('b')
      const events: MeshEvent[] = []
      kernels[0].events.on('*', (e) => events.push(e))
      await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
      await waitFor(() => a.libp2p.getConnections(b.peerId).length > 0, { what: 'connection' })
      for (let i = 0; i < 4; i++) a.reputation.penalize(b.peerId, 'malformed', 'test')
      expect(a.reputation.isBanned(b.peerId)).to.equal(true)
      await waitFor(() => a.libp2p.getConnections(b.peerId).length === 0, { what: 'hang-up' })
      expect(events.some((e) => e.event === 'peer:banned' && e.peerId === b.peerId.toString())).to.equal(true)
      let inbound: unknown
      try {
        await b.libp2p.dial(a.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(3000) })
        await waitFor(() => a.libp2p.getConnections(b.peerId).length === 0, { timeoutMs: 2000 })
      } catch (err) {
        inbound = err
      }
      expect(a.libp2p.getConnections(b.peerId)).to.have.length(0, 'a banned peer cannot dial in')
      expect(inbound === undefined || inbound instanceof Error).to.equal(true)
      let outbound: unknown
      await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]).catch((err: unknown) => {
        outbound = err
      })
      expect((outbound as Error | undefined)?.name).to.match(/Denied/)
      a.reputation.unban(b.peerId)
      const c = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
      expect(c.remotePeer.equals(b.peerId)).to.equal(true)
    })

    it('with network.addressScope public, libp2p dials no loopback address but configured ones', async () => {
      const target = await start('target')
      const address = `${target.libp2p.getMultiaddrs()[0]}`
      const other = await start('other')
      const otherAddress = `${other.libp2p.getMultiaddrs()[0]}`
      const internet = await start('internet', { network: { addressScope: 'public' }, dial: [address] })
      await waitFor(() => internet.libp2p.getConnections(target.peerId).length > 0, {
        what: 'the configured dial',
      })
      const err = await internet.libp2p.dial(multiaddr(otherAddress)).then(
        () => undefined,
        (e: Error) => e,
      )
      expect(err?.name).to.equal('DialDeniedError')
    })

    it('silent sockets from one IP do not lock out another host (per-host pending limit)', async () => {
      const silentFrom = async (port: number, count: number): Promise<Socket[]> => {
        const sockets: Socket[] = []
        for (let i = 0; i < count; i++) {
          const s = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' })
          s.on('error', () => {})
          sockets.push(s)
          await new Promise((r) => setTimeout(r, 20))
        }
        return sockets
      }
      const attempt = async (perHost: number): Promise<boolean> => {
        const victim = await start(`victim-${perHost}`, {
          connections: {
            inboundConnectionThreshold: 1000,
            maxIncomingPendingConnections: 10,
            maxIncomingPendingPerHost: perHost,
          },
        })
        const port = Number(/\/tcp\/(\d+)/.exec(`${victim.libp2p.getMultiaddrs()[0]}`)?.[1])
        const sockets = await silentFrom(port, 10)
        await new Promise((r) => setTimeout(r, 200))
        const honest = await start(`honest-${perHost}`)
        const ok = await honest.libp2p
          .dial(victim.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(1000) })
          .then(
            () => true,
            () => false,
          )
        for (const s of sockets) s.destroy()
        return ok
      }
      expect(await attempt(1000)).to.equal(false, 'without a per-host limit the attack locks the node out')
      expect(await attempt(2)).to.equal(
        true,
        'with the default per-host limit another host connects within 1 s',
      )
    })

    it('refuses an IP for a while once its connections keep failing their handshake (garbage)', async () => {
      const victim = await start('garbage-victim', { connections: { inboundConnectionThreshold: 1000 } })
      const port = Number(/\/tcp\/(\d+)/.exec(`${victim.libp2p.getMultiaddrs()[0]}`)?.[1])
      const open = (from: string) =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect({ host: '127.0.0.1', port, localAddress: from }, () => resolve(s))
          s.on('error', reject)
        })
      /** Whether the node closes a silent connection from `from` within `ms`. */
      const closedWithin = async (from: string, ms: number) => {
        const s = await open(from).catch(() => undefined)
        if (!s) return true // reset before the connect callback: closed at once
        const closed = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(false), ms)
          s.once('close', () => {
            clearTimeout(t)
            resolve(true)
          })
        })
        s.destroy()
        return closed
      }
      expect(await closedWithin('127.0.0.5', 500)).to.equal(false, 'a first silent connection is let in')
      for (let i = 0; i < 15; i++) {
        const s = await open('127.0.0.5').catch(() => undefined)
        if (!s) continue
        s.on('error', () => {})
        s.end(Buffer.from('GET / HTTP/1.1\r\n\r\n garbage instead of multistream-select'))
        await new Promise((r) => s.once('close', r))
      }
      expect(await closedWithin('127.0.0.5', 500)).to.equal(true, 'the garbage sender is refused at once')
      expect(await closedWithin('127.0.0.6', 500)).to.equal(false, 'another host is not')
    })

    it('forgets peers nobody values once they are gone (peer store hygiene); keeps tagged ones', async () => {
      const a = await start('hygiene-a')
      const valued = await start('hygiene-valued')
      const sybils = await Promise.all([0, 1, 2].map((i) => start(`hygiene-sybil-${i}`)))
      const hygiene = startPeerStoreHygiene(a.libp2p, createLogger({ write: () => {} }), {
        graceMs: 200,
        maxPending: 100,
        sweepMs: 50,
      })
      try {
        for (const n of [valued, ...sybils]) await n.libp2p.dial(a.libp2p.getMultiaddrs()[0])
        await a.libp2p.peerStore.merge(valued.peerId, { tags: { 'meshkit-topic': { value: 50 } } })
        await waitFor(() => a.libp2p.getPeers().length === 4, { what: 'four peers' })
        for (const n of [valued, ...sybils]) await a.libp2p.hangUp(n.peerId)
        await waitFor(async () => hygiene.forgotten() === 3, { timeoutMs: 5000, what: 'three forgotten' })
        for (const s of sybils) expect(await a.libp2p.peerStore.has(s.peerId)).to.equal(false)
        expect(await a.libp2p.peerStore.has(valued.peerId), 'a tagged peer stays').to.equal(true)
      } finally {
        hygiene.stop()
      }
    })

    it('keeps a seed connection when another source gives it enough peers', async () => {
      const seed = await start('seed')
      const cached = await Promise.all([0, 1].map((i) => start(`cached-${i}`)))
      const cacheSource = definePlugin({
        name: 'fake-cache',
        provides: ['bootstrap'],
        create: () => ({
          setup: () => ({
            priority: 10,
            candidates: () =>
              cached.map(
                (n) => `${String(n.libp2p.getMultiaddrs()[0]).replace(/\/p2p\/.*/, '')}/p2p/${n.peerId}`,
              ),
          }),
        }),
      })
      const node = await start('node', {
        bootstrap: { minConnections: 2 },
        plugins: [cacheSource(), staticPeers({ peers: [`${seed.libp2p.getMultiaddrs()[0]}`] })],
      })
      await waitFor(() => node.libp2p.getConnections(seed.peerId).length > 0, {
        what: 'a connection to the seed',
      })
      // the seed comes first, then the cache fills up to minConnections
      await waitFor(() => node.libp2p.getPeers().length >= 2, { what: 'two peers' })
      expect(cached.some((c) => node.libp2p.getConnections(c.peerId).length > 0)).to.equal(true)
    })
  })

  describe('per-host limits', () => {
    it('count an IPv4 address, or the /64 of an IPv6 one', () => {
      expect(hostKeyOf('203.0.113.7')).to.equal('203.0.113.7')
      expect(hostKeyOf('2001:db8:1:2:aaaa::1')).to.equal('2001:db8:1:2::/64')
      expect(hostKeyOf('2001:db8:1:2:bbbb:cccc:dddd:eeee')).to.equal('2001:db8:1:2::/64')
      expect(hostKeyOf('2001:0DB8::1')).to.equal('2001:db8:0:0::/64')
      expect(hostKeyOf('::1')).to.equal('0:0:0:0::/64')
    })
  })

  describe('gaters combined', () => {
    it('deny* methods deny when any gater denies; filterMultiaddrForPeer keeps only what every gater keeps', async () => {
      const combined = combineGaters([
        { denyDialPeer: () => false, filterMultiaddrForPeer: () => true },
        { denyDialPeer: () => true, filterMultiaddrForPeer: () => false },
      ])!
      expect(await combined.denyDialPeer!(undefined as never)).to.equal(true)
      expect(await combined.filterMultiaddrForPeer!(undefined as never, undefined as never)).to.equal(false)
      const keep = combineGaters([
        { filterMultiaddrForPeer: () => true },
        { filterMultiaddrForPeer: () => true },
      ])!
      expect(await keep.filterMultiaddrForPeer!(undefined as never, undefined as never)).to.equal(true)
    })
  })

  describe('plugins check the whole config (validate)', () => {
    it('reports a plugin`s own problem with the config, with its hint, as MESH_ERR_CONFIG_INVALID', () => {
      const picky = definePlugin({
        name: 'picky',
        validate: (_options, config) =>
          config.plugins.some((p) => p.plugin.name === 'tcp')
            ? [{ message: 'picky cannot run beside tcp', hint: 'remove tcp() or picky()' }]
            : [],
        create: () => ({}),
      })
      let error: unknown
      try {
        resolveConfig({ plugins: [identify(), noise(), yamux(), tcp(), picky()] }, { env })
      } catch (err) {
        error = err
      }
      expect(isMeshError(error) && error.code).to.equal('MESH_ERR_CONFIG_INVALID')
      expect((error as Error).message).to.include('plugins[4](picky): picky cannot run beside tcp')
      expect((error as Error).message).to.include('Fix: remove tcp() or picky()')
    })
  })
})
