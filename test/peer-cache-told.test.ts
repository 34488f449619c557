/**
 * The peer cache's entries known only by a peer's own word ("told"/heard addresses), attacked: the caps
 * (half the cache, MAX_TOLD_PER_NETWORK per public network) on every path (a new peer, a known one telling
 * new addresses, a hand-edited file), addresses the node cannot read back, and networks of IPv6 forms.
 */
import { readdir, stat, writeFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect } from 'chai'
import { type ConfigEnv, createLogger, MeshKernel, resolveConfig } from 'meshkit'
import { createAddressScope } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import {
  type CachedPeer,
  cappedPerNetwork,
  MAX_CACHE_FILE_BYTES,
  MAX_TOLD_PER_NETWORK,
  networkOf,
  type PeerCacheApi,
  peerCache,
} from '../plugins/peer-cache/index.js'
import { PeerCache } from '../plugins/peer-cache/peer-cache.js'
import { tempDir } from './helpers.js'

const newPeerId = async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
const settings = { maxPeers: 100, maxAddressesPerPeer: 8, flushInterval: 60_000 }
const everything = (a: string[]) => a
const allPublic = () => true
const told = (peers: Iterable<CachedPeer>) => [...peers].filter((p) => p.addrs.length === 0)
const inNetwork = (peers: Iterable<CachedPeer>, network: string) =>
  told(peers).filter((p) => networkOf(p.heard?.[0] ?? '') === network)

describe('peer cache: peers known by their own word, attacked', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  let self: string
  const logs: string[] = []
  const logger = createLogger({ write: (line) => logs.push(line) })

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-peer-cache-told-'))
    self = await newPeerId()
    logs.length = 0
  })
  afterEach(() => cleanup())

  const newCache = () =>
    new PeerCache(`${dir}/peer-cache.json`, settings, logger, self, 1_000, {
      inScope: everything,
      isPublic: allPublic,
    })

  it('a Sybil known by its word cannot move into a network already holding MAX_TOLD_PER_NETWORK', async () => {
    const cache = newCache()
    await cache.start()
    const sybils = await Promise.all(Array.from({ length: 20 }, newPeerId))
    // each Sybil first connects from a network that has room (another /24 of the attacker's), then
    // connects again from the target /24 telling addresses there
    sybils.forEach((id, i) => {
      cache.identified(id, [`/ip4/5.6.7.${i + 1}/tcp/4001`], `5.6.7.${i + 1}`)
      cache.identified(id, [`/ip4/1.2.3.${i + 1}/tcp/4001`], `1.2.3.${i + 1}`)
    })
    expect(inNetwork(cache.peers.values(), networkOf('/ip4/1.2.3.1')).length).to.be.at.most(
      MAX_TOLD_PER_NETWORK,
    )
    expect(inNetwork(cache.peers.values(), networkOf('/ip4/5.6.7.1')).length).to.be.at.most(
      MAX_TOLD_PER_NETWORK,
    )
    await cache.stop()
  })

  it('a hand-edited (or old) file cannot hold more told peers than the caps: half the cache, per network', async () => {
    const verified = await newPeerId()
    const peers: object[] = [
      { id: verified, addrs: ['/ip4/9.9.9.9/tcp/4001'], successes: 3, failures: 0, lastSeen: Date.now() },
    ]
    for (let i = 0; i < 300; i++) {
      const ip = i < 200 ? `1.2.3.${i + 1}` : `${i - 189}.7.8.9`
      peers.push({
        id: await newPeerId(),
        addrs: [],
        heard: [`/ip4/${ip}/tcp/4001`],
        successes: 0,
        failures: 0,
        lastSeen: Date.now(),
      })
    }
    // out of network.addressScope ('public'): never offered on a peer's word
    const lan = await newPeerId()
    peers.push({
      id: lan,
      addrs: [],
      heard: ['/ip4/10.1.2.3/tcp/4001'],
      successes: 0,
      failures: 0,
      lastSeen: Date.now() + 1,
    })
    await writeFile(`${dir}/peer-cache.json`, JSON.stringify({ version: 1, peers }))
    const env: ConfigEnv = { command: 'start', mode: 'test' }
    const kernel = new MeshKernel({ env, logger })
    try {
      const node = await kernel.start(
        resolveConfig(
          {
            dataDir: dir,
            datastore: 'memory',
            logLevel: 'warn',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            // nothing is dialled: the cache is only looked at
            bootstrap: { minConnections: 0 },
            plugins: [identify(), noise(), yamux(), tcp(), peerCache()],
          },
          { env, registry: builtinPlugins },
        ),
      )
      const cached = node.api<PeerCacheApi>('peer-cache').peers()
      expect(cached[0].id, 'the verified peer first').to.equal(verified)
      expect(told(cached).length, 'told peers').to.be.at.most(settings.maxPeers / 2)
      expect(inNetwork(cached, networkOf('/ip4/1.2.3.1')).length).to.be.at.most(MAX_TOLD_PER_NETWORK)
      expect(
        cached.map((p) => p.id),
        'a told LAN address in public scope',
      ).to.not.include(lan)
    } finally {
      await kernel.close()
    }
  })

  it('an address too long for the file is never kept: the next start reads its own file whole', async () => {
    const cache = newCache()
    await cache.start()
    const id = await newPeerId()
    const long = `/ip4/1.2.3.4/tcp/4001/tls/sni/${'a'.repeat(3_000)}/ws`
    cache.identified(id, [long, '/ip4/1.2.3.4/tcp/4001'], '1.2.3.4')
    const verified = await newPeerId()
    cache.peers.set(verified, {
      id: verified,
      addrs: ['/ip4/9.9.9.9/tcp/1'],
      successes: 2,
      failures: 0,
      lastSeen: Date.now(),
    })
    await cache.stop()

    const again = newCache()
    await again.start()
    expect(
      (await readdir(dir)).filter((f) => f.includes('.corrupt')),
      'files set aside',
    ).to.deep.equal([])
    expect([...again.peers.keys()].sort()).to.deep.equal([id, verified].sort())
    expect(again.peers.get(id)?.heard).to.deep.equal(['/ip4/1.2.3.4/tcp/4001'])
    await again.stop()
  })

  it('networks of IPv6 forms: /48s, and IPv4-mapped addresses as their IPv4 /24', () => {
    expect(networkOf('/ip6/2001:db8:1:2::1/tcp/1')).to.equal(networkOf('/ip6/2001:db8:1:ffff::9/tcp/1'))
    expect(networkOf('/ip6/2001:db8::1/tcp/1')).to.equal(networkOf('/ip6/2001:db8:0:1::1/tcp/1'))
    expect(networkOf('/ip6/2001:db8:1::1/tcp/1')).to.not.equal(networkOf('/ip6/2001:db8:2::1/tcp/1'))
    // a dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d: one network per IPv4 /24, not one for all
    expect(networkOf('/ip6/::ffff:102:304/tcp/1')).to.equal(networkOf('/ip4/1.2.3.9/tcp/1'))
    expect(networkOf('/ip6/::ffff:102:304/tcp/1')).to.not.equal(networkOf('/ip6/::ffff:506:708/tcp/1'))
  })

  it('every network the public scope lets in is capped: 6to4 and other ranges libp2p calls private', () => {
    const scope = createAddressScope([])
    // libp2p's isPrivate says private (uncapped before), network.addressScope 'public' lets them in
    for (const address of ['/ip6/2002:102:304::1/tcp/1', '/ip6/2001:20::1/tcp/1'])
      expect(cappedPerNetwork(address, scope), address).to.equal(true)
    expect(cappedPerNetwork('/ip4/1.2.3.4/tcp/1', scope)).to.equal(true)
    // a LAN, this host: not capped, unless publicCidrs makes them public
    for (const address of ['/ip4/10.1.2.3/tcp/1', '/ip4/127.0.0.1/tcp/1', '/ip6/fd00::1/tcp/1'])
      expect(cappedPerNetwork(address, scope), address).to.equal(false)
    expect(cappedPerNetwork('/ip4/127.0.50.1/tcp/1', createAddressScope(['127.0.50.0/24']))).to.equal(true)
  })

  it('a big cache full of long told addresses still writes a file its next start reads', async () => {
    // maxPeers and maxAddressesPerPeer at their largest allowed sizes: told addresses alone (each from its
    // own /48) add up to more than MAX_CACHE_FILE_BYTES
    const big = { maxPeers: 10_000, maxAddressesPerPeer: 64, flushInterval: 60_000 }
    const rules = { inScope: everything, isPublic: allPublic }
    const cache = new PeerCache(`${dir}/peer-cache.json`, big, logger, self, 1_000, rules)
    await cache.start()
    const verified = await newPeerId()
    cache.peers.set(verified, {
      id: verified,
      addrs: ['/ip4/9.9.9.9/tcp/1'],
      successes: 5,
      failures: 0,
      lastSeen: Date.now(),
    })
    for (let i = 0; i < 400; i++) {
      const ip = `2001:db8:${i.toString(16)}::1`
      const addrs = Array.from(
        { length: 8 },
        (_, k) => `/ip6/${ip}/tcp/${k + 1}/tls/sni/${'a'.repeat(1_900)}/ws`,
      )
      cache.identified(await newPeerId(), addrs, ip)
    }
    await cache.stop()
    expect((await stat(`${dir}/peer-cache.json`)).size).to.be.at.most(MAX_CACHE_FILE_BYTES)
    const again = new PeerCache(`${dir}/peer-cache.json`, big, logger, self, 1_000, rules)
    await again.start()
    expect(
      (await readdir(dir)).filter((f) => f.includes('.corrupt')),
      'files set aside',
    ).to.deep.equal([])
    expect(again.ranked()[0]?.id, 'the verified peer kept').to.equal(verified)
    expect(again.peers.size).to.be.greaterThan(100)
    await again.stop()
  })
})
