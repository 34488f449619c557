import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { loadOrCreateIdentity, type MeshConfig, resolveConfig } from 'meshkit'
import { backoffDelay, definePlugin, type PluginContext } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import { staticPeers } from '../plugins/static-peers/index.js'
import { LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { freePort, tempDir, waitFor } from './helpers.js'

const env = TEST_ENV

describe('bootstrap: static peers', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-bootstrap-'))
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  const nodes = new LoopbackNodes(
    () => dir,
    () => [identify(), noise(), yamux(), tcp()],
    'warn',
  )
  const start = (name: string, extra: MeshConfig = {}): Promise<TestNode> => nodes.start(name, extra)

  const connectedTo = (n: TestNode, peer: string) =>
    n.node.libp2p.getPeers().some((p) => p.toString() === peer)
  const of = (n: TestNode, event: string) => n.events.filter((e) => e.event === event)

  it('dials a static peer and reports it as bootstrap:connected from static-peers', async () => {
    const a = await start('a')
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [a.address] })],
    })
    await waitFor(() => of(b, 'bootstrap:connected').length > 0, { what: 'bootstrap:connected' })
    expect(of(b, 'bootstrap:connected')[0]).to.include({
      peerId: a.peerId,
      address: a.address,
      source: 'static-peers',
    })
    expect(connectedTo(b, a.peerId)).to.equal(true)
    expect(of(b, 'bootstrap:retry'), 'no retry once the minimum is met').to.have.length(0)
  })

  it('tells plugins which peers are seeds (ctx.isSeed): the static peer, not a peer that dialled in', async () => {
    let ctx: PluginContext | undefined
    const probe = definePlugin({
      name: 'seed-probe',
      create: () => ({
        start: (c) => {
          ctx = c
        },
      }),
    })
    const seed = await start('seed')
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [seed.address] }), probe()],
    })
    await waitFor(() => connectedTo(b, seed.peerId), { what: 'connected to the seed' })
    const other = await start('other')
    await other.node.libp2p.dial(multiaddr(b.address))
    await waitFor(() => connectedTo(b, other.peerId), { what: 'dialled in' })
    expect(ctx?.isSeed(seed.peerId), 'the static peer').to.equal(true)
    expect(ctx?.isSeed(other.peerId), 'a peer that dialled in').to.equal(false)
    expect(ctx?.isSeed(b.peerId), 'itself').to.equal(false)
  })

  it('rejects a bad multiaddr in the options, naming the plugin and the entry', () => {
    const err = (() => {
      try {
        resolveConfig(
          {
            dataDir: `${dir}/x`,
            plugins: [tcp(), noise(), yamux(), staticPeers({ peers: ['not-an-addr'] })],
          },
          { env, registry: builtinPlugins },
        )
      } catch (e) {
        return e as Error
      }
    })()
    expect(err?.message).to.match(/plugins\[3\]\(static-peers\)\.peers\[0\]/)
  })

  it('warns about a static peer without /p2p/<peer id>, and still dials it', async () => {
    const a = await start('a')
    const bare = a.address.replace(/\/p2p\/[^/]+$/, '')
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [bare] })],
    })
    expect(b.logs.join('\n')).to.match(/\[static-peers\].*no \/p2p\/<peer id>/)
    await waitFor(() => connectedTo(b, a.peerId), { what: 'B connected to A' })
  })

  it('backs off while its peer is down, joins it when it comes up, and again after it restarts', async () => {
    const aDir = `${dir}/a`
    const idA = (await loadOrCreateIdentity(aDir)).peerId.toString()
    const port = await freePort()
    const target = `/ip4/127.0.0.1/tcp/${port}/p2p/${idA}`
    const b = await start('b', {
      bootstrap: { minConnections: 1, retryInitial: '100ms', retryMax: '2s' },
      plugins: [staticPeers({ peers: [target] })],
    })

    await waitFor(() => of(b, 'bootstrap:retry').length >= 3, { timeoutMs: 5_000, what: '3 retries' })
    const retries = of(b, 'bootstrap:retry').slice(0, 3)
    expect(retries.map((r) => r.attempt)).to.deep.equal([1, 2, 3])
    expect(retries.every((r) => r.connections === 0)).to.equal(true)
    const delays = retries.map((r) => r.delayMs as number)
    // equal jitter: attempt n waits between half and all of min(retryMax, retryInitial * 2^n)
    delays.forEach((d, n) => {
      expect(d).to.be.within(100 * 2 ** n * 0.5, 100 * 2 ** n)
    })
    expect(delays[1]).to.be.at.least(delays[0])
    expect(delays[2]).to.be.at.least(delays[1])
    expect(delays[2]).to.be.greaterThan(delays[0])

    const startA = () => start('a', { listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    let a = await startA()
    expect(a.peerId).to.equal(idA)
    await waitFor(() => connectedTo(b, idA), { timeoutMs: 5_000, what: 'B joined A once A came up' })
    await waitFor(() => of(b, 'bootstrap:connected').length === 1, { what: 'bootstrap:connected' })
    expect(of(b, 'bootstrap:connected')[0]).to.include({ peerId: idA, source: 'static-peers' })

    // A goes away: the disconnect wakes the bootstrapper, which backs off from the start again
    const before = of(b, 'bootstrap:retry').length
    const stoppedAt = Date.now()
    await a.close()
    await waitFor(() => of(b, 'bootstrap:retry').length >= before + 2, {
      timeoutMs: 5_000,
      what: 'retries after A stopped',
    })
    const resumed = of(b, 'bootstrap:retry').slice(before)
    expect(resumed[0].attempt, 'the backoff starts over').to.equal(1)
    expect(resumed[0].at as number).to.be.at.least(stoppedAt)

    a = await startA()
    await waitFor(() => connectedTo(b, idA), { timeoutMs: 5_000, what: 'B rejoined A after its restart' })
    await waitFor(() => of(b, 'bootstrap:connected').length === 2, { what: 'a second bootstrap:connected' })
  })

  it('stops dialling once it has minConnections peers (one dial at a time)', async () => {
    const peers = [await start('a'), await start('c'), await start('d')]
    const b = await start('b', {
      bootstrap: { minConnections: 2, dialConcurrency: 1, retryInitial: '100ms' },
      plugins: [staticPeers({ peers: peers.map((p) => p.address) })],
    })
    await waitFor(() => b.node.libp2p.getPeers().length >= 2, { what: 'two peers' })
    // give a third dial every chance to happen if the bootstrapper were to make one
    await new Promise((r) => setTimeout(r, 500))
    expect(b.node.libp2p.getPeers()).to.have.length(2)
    const connected = of(b, 'bootstrap:connected')
    expect(connected).to.have.length(2)
    expect(new Set(connected.map((e) => e.peerId)).size).to.equal(2)
    expect(of(b, 'bootstrap:retry')).to.have.length(0)
  })

  // nodes sharing one seed list spread over it: the first seeds of the list do not take every join
  it('takes the seeds in a random order, so nodes sharing one list spread over it', async () => {
    const seeds = [await start('s0'), await start('s1'), await start('s2'), await start('s3')]
    const firstDialled = new Map<string, number>()
    for (let i = 0; i < 8; i++) {
      const n = await start(`n${i}`, {
        bootstrap: { minConnections: 1, dialConcurrency: 1 },
        plugins: [staticPeers({ peers: seeds.map((s) => s.address) })],
      })
      await waitFor(() => of(n, 'bootstrap:connected').length === 1, { what: 'a seed' })
      const first = String(of(n, 'bootstrap:connected')[0].peerId)
      firstDialled.set(first, (firstDialled.get(first) ?? 0) + 1)
      await n.close()
    }
    // in list order all 8 would pick s0; at random, all 8 on one seed has probability 4 * (1/4)^8
    expect(firstDialled.size, JSON.stringify([...firstDialled.values()])).to.be.greaterThan(1)
  })

  // dials in flight count towards minConnections: dialConcurrency 4 must not end with 3 peers
  it('stops dialling once it has minConnections peers (dials in parallel)', async () => {
    const peers = [await start('a'), await start('c'), await start('d')]
    const b = await start('b', {
      bootstrap: { minConnections: 2, dialConcurrency: 4 },
      plugins: [staticPeers({ peers: peers.map((p) => p.address) })],
    })
    await waitFor(() => b.node.libp2p.getPeers().length >= 2, { what: 'two peers' })
    await new Promise((r) => setTimeout(r, 500))
    expect(b.node.libp2p.getPeers()).to.have.length(2)
    expect(of(b, 'bootstrap:connected')).to.have.length(2)
  })

  // an address without /p2p/ that is already connected is skipped, and only new connections are reported
  it('an address without /p2p/ is not dialled again while connected', async () => {
    const a = await start('a')
    const bare = a.address.replace(/\/p2p\/[^/]+$/, '')
    const b = await start('b', {
      bootstrap: { minConnections: 3, retryInitial: '50ms', retryMax: '100ms' },
      plugins: [staticPeers({ peers: [bare] })],
    })
    await waitFor(() => of(b, 'bootstrap:retry').length >= 5, { what: '5 retries' })
    expect(of(b, 'bootstrap:connected')).to.have.length(1)
    expect(of(b, 'connection:open')).to.have.length(1)
  })

  it('a minConnections of 0 turns bootstrapping off', async () => {
    const a = await start('a')
    const b = await start('b', {
      bootstrap: { minConnections: 0 },
      plugins: [staticPeers({ peers: [a.address] })],
    })
    await new Promise((r) => setTimeout(r, 300))
    expect(b.node.libp2p.getPeers()).to.have.length(0)
    expect(of(b, 'bootstrap:connected')).to.have.length(0)
  })
})

describe('bootstrap: backoff', () => {
  it('grows exponentially up to retryMax, with equal jitter (half fixed, half random)', () => {
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, 100, 1_000, () => 0))).to.deep.equal([50, 100, 200, 400])
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, 100, 1_000, () => 1))).to.deep.equal([100, 200, 400, 800])
    expect(backoffDelay(10, 100, 1_000, () => 0)).to.equal(500)
    expect(backoffDelay(10, 100, 1_000, () => 1)).to.equal(1_000)
    expect(
      backoffDelay(5_000, 1_000, 60_000, () => 1),
      'no overflow on a long outage',
    ).to.equal(60_000)
  })
})
