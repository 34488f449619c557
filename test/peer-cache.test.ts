import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import {
  type ConfigEnv,
  createLogger,
  type MeshConfig,
  type MeshEvent,
  MeshKernel,
  type MeshNode,
  resolveConfig,
} from 'meshkit'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import {
  type CachedPeer,
  comparePeers,
  type PeerCacheApi,
  parseCacheFile,
  peerCache,
  RETRY_INITIAL_MS,
  retryAt,
  usefulness,
} from '../plugins/peer-cache/index.js'
import { staticPeers } from '../plugins/static-peers/index.js'
import { freePort, tempDir, waitFor } from './helpers.js'
import { createHostileNode, Sentinels } from './hostile/index.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }

interface TestNode {
  kernel: MeshKernel
  node: MeshNode
  events: MeshEvent[]
  logs: string[]
  peerId: string
  address: string
  port: number
  close(): Promise<void>
}

async function newPeerId(): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

describe('bootstrap: peer cache', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  const live = new Set<MeshKernel>()

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-peer-cache-'))
  })
  afterEach(async () => {
    for (const k of live) await k.close().catch(() => {})
    live.clear()
    await cleanup()
  })

  async function start(name: string, extra: MeshConfig = {}): Promise<TestNode> {
    const logs: string[] = []
    const kernel = new MeshKernel({ env, logger: createLogger({ write: (line) => logs.push(line) }) })
    live.add(kernel)
    const events: MeshEvent[] = []
    kernel.events.on('*', (e) => events.push(e))
    const node = await kernel.start(
      resolveConfig(
        {
          dataDir: `${dir}/${name}`,
          datastore: 'memory',
          logLevel: 'warn',
          listen: ['/ip4/127.0.0.1/tcp/0'],
          connections: { allow: ['/ip4/127.0.0.1'] },
          network: { addressScope: 'all' },
          ...extra,
          plugins: [identify(), noise(), yamux(), tcp(), ...(extra.plugins ?? [])],
        },
        { env, registry: builtinPlugins },
      ),
    )
    const address = node.libp2p.getMultiaddrs()[0].toString()
    return {
      kernel,
      node,
      events,
      logs,
      peerId: node.peerId.toString(),
      address,
      port: Number(/\/tcp\/(\d+)/.exec(address)![1]),
      close: async () => {
        live.delete(kernel)
        await kernel.close()
      },
    }
  }
  const connectedTo = (n: TestNode, peer: string) =>
    n.node.libp2p.getPeers().some((p) => p.toString() === peer)
  const readCache = async (file: string) =>
    JSON.parse(await readFile(file, 'utf8')) as { version: number; peers: CachedPeer[] }
  const leftovers = async (d: string) => (await readdir(d)).filter((f) => f.endsWith('.tmp'))

  it('remembers the peers it joined and rejoins them after a restart with no other source', async () => {
    const a = await start('a')
    const file = `${dir}/b/peer-cache.json`
    let b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [a.address] }), peerCache({ flushInterval: '200ms' })],
    })
    expect(b.node.api<PeerCacheApi>('peer-cache').file).to.equal(file)
    await waitFor(() => connectedTo(b, a.peerId), { what: 'B joined A' })
    // written while running (debounced), not only on stop
    await waitFor(() => exists(file), { timeoutMs: 3_000, what: 'the cache file' })
    await b.close()

    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    const saved = await readCache(file)
    expect(saved.version).to.equal(1)
    expect(saved.peers).to.have.length(1)
    expect(saved.peers[0]).to.include({ id: a.peerId })
    expect(saved.peers[0].successes).to.be.at.least(1)
    expect(saved.peers[0].lastSeen).to.be.within(Date.now() - 30_000, Date.now())
    expect(saved.peers[0].addrs).to.include(`/ip4/127.0.0.1/tcp/${a.port}`)
    expect(await leftovers(`${dir}/b`)).to.deep.equal([])

    b = await start('b', { bootstrap: { minConnections: 1 }, plugins: [peerCache()] })
    await waitFor(() => connectedTo(b, a.peerId), { timeoutMs: 5_000, what: 'B rejoined A from its cache' })
    const connected = b.events.filter((e) => e.event === 'bootstrap:connected')
    expect(connected).to.have.length(1)
    expect(connected[0]).to.include({ peerId: a.peerId, source: 'peer-cache' })
    await b.close()
    expect((await readCache(file)).peers[0].successes).to.be.at.least(2)
  })

  it('a corrupt cache: warns, starts anyway, keeps the file as a backup, then saves good data', async () => {
    const a = await start('a')
    const file = `${dir}/b/peer-cache.json`
    await mkdir(`${dir}/b`, { recursive: true })
    await writeFile(file, '{"version":1,"peers":[{"id": tru')
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [a.address] }), peerCache()],
    })
    expect(b.node.state).to.equal('started')
    expect(b.logs.join('\n')).to.match(/WARN.*\[peer-cache\] the peer cache .* is unusable \(not JSON/)
    expect(await readFile(`${file}.corrupt`, 'utf8')).to.equal('{"version":1,"peers":[{"id": tru')
    await waitFor(() => connectedTo(b, a.peerId), { what: 'B joined A' })
    await b.close()
    expect((await readCache(file)).peers.map((p) => p.id)).to.deep.equal([a.peerId])
    expect(await readFile(`${file}.corrupt`, 'utf8'), 'the backup is untouched').to.equal(
      '{"version":1,"peers":[{"id": tru',
    )
  })

  it('never crashes on garbage: each bad file is kept aside, a second one beside the first', async () => {
    const valid = await newPeerId()
    const good = { id: valid, addrs: ['/ip4/127.0.0.1/tcp/9'], successes: 1, failures: 0, lastSeen: 5 }
    const garbage: Array<string | Buffer> = [
      '',
      'null',
      '[]',
      '"peers"',
      '{',
      '{"version":1,"peers":"x"}',
      '{"version":2,"peers":[]}',
      '{"version":1}',
      '{"__proto__":{"polluted":true},"version":1,"peers":[{"__proto__":{"x":1}}]}',
      '{"version":1,"peers":[{"id":"not-a-peer-id","addrs":["/ip4/1.2.3.4/tcp/1"],"successes":1,"failures":0,"lastSeen":1}]}',
      `{"version":1,"peers":[{"id":"${valid}","addrs":["nope",42],"successes":-1,"failures":1e400,"lastSeen":"x"}]}`,
      `${'['.repeat(200_000)}${']'.repeat(200_000)}`,
      Buffer.from([0xff, 0xfe, 0x00, 0x7b, 0x22, 0x80, 0x81, 0x0a, 0x00]),
      JSON.stringify({ version: 1, peers: [good, { ...good, addrs: ['/ip4/0.0.0.0/tcp/1', 'x'] }, 7] }),
    ]
    for (const [i, content] of garbage.entries()) {
      const name = `g${i}`
      const file = `${dir}/${name}/peer-cache.json`
      await mkdir(`${dir}/${name}`, { recursive: true })
      await writeFile(file, content)
      const n = await start(name, { bootstrap: { minConnections: 0 }, plugins: [peerCache()] })
      expect(n.node.state, `garbage #${i}`).to.equal('started')
      expect(n.logs.join('\n'), `garbage #${i}`).to.match(/WARN.*\[peer-cache\].*unusable/)
      expect(await readFile(`${file}.corrupt`), `garbage #${i} kept`).to.deep.equal(Buffer.from(content))
      const kept = n.node.api<PeerCacheApi>('peer-cache').peers()
      if (i === garbage.length - 1) expect(kept.map((p) => p.id)).to.deep.equal([valid])
      else expect(kept, `garbage #${i}`).to.deep.equal([])
      expect(({} as Record<string, unknown>).polluted).to.equal(undefined)
      await n.close()
    }

    // a second bad file does not replace the first backup
    const file = `${dir}/g0/peer-cache.json`
    await writeFile(file, 'second')
    const n = await start('g0', { bootstrap: { minConnections: 0 }, plugins: [peerCache()] })
    await n.close()
    expect(await readFile(`${file}.corrupt`, 'utf8')).to.equal('')
    expect(await readFile(`${file}.corrupt.1`, 'utf8')).to.equal('second')
  })

  it('an unreadable cache path (a directory) is left alone', async () => {
    const file = `${dir}/b/peer-cache.json`
    await mkdir(file, { recursive: true })
    await writeFile(`${file}/keep`, 'x')
    const a = await start('a')
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [a.address] }), peerCache({ flushInterval: '50ms' })],
    })
    expect(b.logs.join('\n')).to.match(/WARN.*\[peer-cache\] cannot read the peer cache/)
    await waitFor(() => connectedTo(b, a.peerId), { what: 'B joined A' })
    await b.close()
    expect(await readFile(`${file}/keep`, 'utf8')).to.equal('x')
    expect(await leftovers(`${dir}/b`)).to.deep.equal([])
  })

  it('keeps the best maxPeers (recent first, failing last), and the file shrinks to them', async () => {
    const ids = await Promise.all(Array.from({ length: 10 }, () => newPeerId()))
    const peers: CachedPeer[] = ids.map((id, i) => ({
      id,
      addrs: [`/ip4/127.0.0.1/tcp/${1000 + i}`],
      successes: 1,
      failures: 0,
      lastSeen: 1_000_000 + i,
    }))
    // the most recent one failed since: it goes last
    peers[9] = { ...peers[9], failures: 1, lastFailure: 2_000_000 }
    const file = `${dir}/b/cache/peers.json`
    await mkdir(`${dir}/b/cache`, { recursive: true })
    await writeFile(file, JSON.stringify({ version: 1, peers }))
    const b = await start('b', {
      bootstrap: { minConnections: 0 },
      plugins: [peerCache({ file: 'cache/peers.json', maxPeers: 3 })],
    })
    const api = b.node.api<PeerCacheApi>('peer-cache')
    expect(api.file).to.equal(file)
    expect(api.peers().map((p) => p.id)).to.deep.equal([ids[8], ids[7], ids[6]])
    expect(await api.candidates({ signal: new AbortController().signal })).to.deep.equal([
      `/ip4/127.0.0.1/tcp/1008/p2p/${ids[8]}`,
      `/ip4/127.0.0.1/tcp/1007/p2p/${ids[7]}`,
      `/ip4/127.0.0.1/tcp/1006/p2p/${ids[6]}`,
    ])
    await b.close()
    expect((await readCache(file)).peers.map((p) => p.id)).to.deep.equal([ids[8], ids[7], ids[6]])
    expect(await leftovers(`${dir}/b/cache`)).to.deep.equal([])
  })

  it('counts a dial to a cached peer that does not connect as a failure', async () => {
    const id = await newPeerId()
    const port = await freePort()
    await mkdir(`${dir}/b`, { recursive: true })
    const entry = {
      id,
      addrs: [`/ip4/127.0.0.1/tcp/${port}`],
      successes: 2,
      failures: 0,
      lastSeen: Date.now(),
    }
    await writeFile(`${dir}/b/peer-cache.json`, JSON.stringify({ version: 1, peers: [entry] }))
    const b = await start('b', {
      bootstrap: { minConnections: 1, retryInitial: '100ms', retryMax: '300ms' },
      connections: { allow: ['/ip4/127.0.0.1'], dialTimeout: '200ms' },
      network: { addressScope: 'all' },
      plugins: [peerCache({ flushInterval: '100ms' })],
    })
    const api = b.node.api<PeerCacheApi>('peer-cache')
    await waitFor(() => (api.peers()[0]?.failures ?? 0) >= 1, { timeoutMs: 6_000, what: 'a failure' })
    const [peer] = api.peers()
    expect(peer.successes).to.equal(2)
    expect(peer.lastFailure).to.be.greaterThan(peer.lastSeen)
    await b.close()
    expect((await readCache(`${dir}/b/peer-cache.json`)).peers[0].failures).to.be.at.least(1)
  })

  it('parseCacheFile drops its own duplicates and unusable addresses', async () => {
    const id = await newPeerId()
    const entry = { id, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${id}`], successes: 1, failures: 0, lastSeen: 1 }
    const { peers, problems } = parseCacheFile(JSON.stringify({ version: 1, peers: [entry, entry] }))
    expect(peers).to.deep.equal([{ ...entry, addrs: ['/ip4/127.0.0.1/tcp/1'] }])
    expect(problems).to.deep.equal(['1 malformed entries dropped'])
  })

  it('a peer that only connected to it is cached by the addresses it tells on its own IP, never elsewhere', async () => {
    const sentinels = new Sentinels()
    try {
      const claimed = await sentinels.open('claimed')
      const b = await start('b', {
        bootstrap: { minConnections: 3, retryInitial: '100ms', retryMax: '300ms' },
        plugins: [peerCache({ flushInterval: '100ms' })],
      })
      // a Sybil connects from 127.0.0.44, says it listens at the sentinel and on its own IP, and leaves
      const sybil = await createHostileNode({
        sourceIp: '127.0.0.44',
        listen: ['/ip4/127.0.0.44/tcp/0'],
        identity: { listenAddrs: [claimed.tcp, '/ip4/127.0.0.44/tcp/1'] },
      })
      try {
        await sybil.dial(b.address)
        await waitFor(() => connectedTo(b, sybil.peerId), { what: 'the Sybil connected' })
        await new Promise((r) => setTimeout(r, 500)) // identify ran
      } finally {
        await sybil.stop()
      }
      // B stays below minConnections and keeps asking its cache: the Sybil is offered at its own IP only
      await new Promise((r) => setTimeout(r, 2_000))
      const [heard, ...more] = b.node.api<PeerCacheApi>('peer-cache').peers()
      expect(more, 'cached peers besides the Sybil').to.deep.equal([])
      expect(heard).to.include({ id: sybil.peerId.toString() })
      expect(heard.addrs, 'addresses a dial of ours reached').to.deep.equal([])
      expect(heard.heard, 'told addresses kept: on its own IP only').to.deep.equal(['/ip4/127.0.0.44/tcp/1'])
      expect(sentinels.since(0, 'claimed'), 'dials to the claimed address').to.deep.equal([])

      // a peer B dials itself is cached at the address B dialled, not at those it claims, and ranks first
      const aPort = await freePort()
      const a = await start('a', { listen: [`/ip4/127.0.0.1/tcp/${aPort}`], announce: [claimed.tcp] })
      await b.node.libp2p.dial(multiaddr(`/ip4/127.0.0.1/tcp/${aPort}/p2p/${a.peerId}`))
      await waitFor(() => b.node.api<PeerCacheApi>('peer-cache').peers().length === 2, { what: 'A cached' })
      await new Promise((r) => setTimeout(r, 500))
      const [cached] = b.node.api<PeerCacheApi>('peer-cache').peers()
      expect(cached.id).to.equal(a.peerId)
      expect(cached.addrs).to.deep.equal([`/ip4/127.0.0.1/tcp/${aPort}`])
      expect(cached.heard).to.equal(undefined)
      await b.close()
      const saved = await readCache(`${dir}/b/peer-cache.json`)
      expect(saved.peers.map((p) => p.id)).to.deep.equal([a.peerId, sybil.peerId.toString()])
      expect(sentinels.since(0, 'claimed'), 'dials to the claimed address').to.deep.equal([])
    } finally {
      await sentinels.close()
    }
  })

  it('a node only ever dialled (the first of a mesh) rejoins after a restart from what its peers told', async () => {
    let a = await start('a', { plugins: [peerCache({ flushInterval: '100ms' })] })
    const b = await start('b', {
      bootstrap: { minConnections: 1 },
      plugins: [staticPeers({ peers: [a.address] })],
    })
    await waitFor(() => connectedTo(a, b.peerId), { what: 'B joined A' })
    await waitFor(() => a.node.api<PeerCacheApi>('peer-cache').peers().length === 1, {
      what: 'B cached by A',
    })
    const [told] = a.node.api<PeerCacheApi>('peer-cache').peers()
    expect(told.heard).to.deep.equal([`/ip4/127.0.0.1/tcp/${b.port}`])
    await a.close()

    // A again, with its cache as its only source: it dials B back
    a = await start('a', {
      bootstrap: { minConnections: 1 },
      plugins: [peerCache({ flushInterval: '100ms' })],
    })
    await waitFor(() => connectedTo(a, b.peerId), { timeoutMs: 5_000, what: 'A rejoined B from its cache' })
    const connected = a.events.filter((e) => e.event === 'bootstrap:connected')
    expect(connected[0]).to.include({ peerId: b.peerId, source: 'peer-cache' })
    // the dial that worked made B a verified entry
    await waitFor(() => (a.node.api<PeerCacheApi>('peer-cache').peers()[0]?.addrs.length ?? 0) > 0, {
      what: 'B verified',
    })
    const [verified] = a.node.api<PeerCacheApi>('peer-cache').peers()
    expect(verified.addrs).to.deep.equal([`/ip4/127.0.0.1/tcp/${b.port}`])
    expect(verified.heard).to.equal(undefined)
  })

  it('a cached peer whose dials fail is offered again only after a growing wait', async () => {
    const sentinels = new Sentinels()
    try {
      // an address that accepts TCP and drops it: every dial fails
      const dead = await sentinels.open('dead')
      const id = await newPeerId()
      const entry = { id, addrs: [dead.tcp], successes: 3, failures: 0, lastSeen: Date.now() - 60_000 }
      await mkdir(`${dir}/b`, { recursive: true })
      await writeFile(`${dir}/b/peer-cache.json`, JSON.stringify({ version: 1, peers: [entry] }))
      const b = await start('b', {
        bootstrap: { minConnections: 1, retryInitial: '100ms', retryMax: '200ms' },
        connections: { allow: ['/ip4/127.0.0.1'], dialTimeout: '300ms' },
        plugins: [peerCache({ flushInterval: '100ms' })],
      })
      const api = b.node.api<PeerCacheApi>('peer-cache')
      await waitFor(() => (api.peers()[0]?.failures ?? 0) >= 1, { timeoutMs: 6_000, what: 'a failure' })
      const first = sentinels.since(0, 'dead').length
      // bootstrap rounds every ~200 ms for 3 s: the peer waits out RETRY_INITIAL_MS (30 s) instead
      await new Promise((r) => setTimeout(r, 3_000))
      expect(sentinels.since(0, 'dead').length, 'dials while it waits').to.equal(first)
      const [peer] = api.peers()
      expect(peer.streak).to.equal(1)
      expect(retryAt(peer) - (peer.lastFailure ?? 0)).to.equal(RETRY_INITIAL_MS)
      expect(await api.candidates({ signal: new AbortController().signal })).to.deep.equal([])
      await b.close()
    } finally {
      await sentinels.close()
    }
  })

  it('ranks by usefulness (dials that worked, time connected), not by who showed up last', async () => {
    const now = Date.now()
    const seedLike: CachedPeer = {
      id: 'a',
      addrs: ['/ip4/198.51.100.1/tcp/1'],
      successes: 12,
      failures: 1,
      lastSeen: now - 3_600_000,
      uptime: 6 * 3_600_000,
    }
    const fresh: CachedPeer = {
      id: 'b',
      addrs: ['/ip4/203.0.113.1/tcp/1'],
      successes: 1,
      failures: 0,
      lastSeen: now,
    }
    expect(usefulness(seedLike)).to.be.greaterThan(usefulness(fresh))
    expect([fresh, seedLike].sort(comparePeers).map((p) => p.id)).to.deep.equal(['a', 'b'])
    // failing since last seen: behind the others whatever its record
    const failing = { ...seedLike, id: 'c', streak: 2, lastFailure: now }
    expect([failing, fresh].sort(comparePeers).map((p) => p.id)).to.deep.equal(['b', 'c'])
    expect(retryAt(failing)).to.equal(now + 2 * RETRY_INITIAL_MS)
  })
})
