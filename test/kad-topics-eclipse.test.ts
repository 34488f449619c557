/**
 * Eclipse (security issue 10, finding 7): 100 Sybils from one /24 connect to a node, claim its topic and
 * announce listen addresses of their own; the node restarts (its peer cache on disk) while they are
 * still there and connect again at once. The node must still hold a seed connection and topic peers
 * outside that /24, and its peer cache must hold none of the Sybils (they only ever connected to it).
 *
 * Loopback stands in for the internet (`network.publicCidrs: ['127.0.0.0/8']`): the seed on 127.0.2.1,
 * honest members on 127.0.3-5.1, the node on 127.0.6.1, the Sybils on 127.0.50.1-100.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { expect } from 'chai'
import type { MeshConfig } from 'meshkit'
import { peerCache, staticPeers } from 'meshkit/plugins'
import { signMember } from '../plugins/kad-topics/member-record.js'
import { TOPICS_PROTOCOL } from '../plugins/kad-topics/wire.js'
import { MAX_TOLD_PER_NETWORK, type PeerCacheApi } from '../plugins/peer-cache/index.js'
import { type TopicNode, TopicTestMesh } from './fixtures/topics.js'
import { freePort, waitFor } from './helpers.js'
import { closeSoon, createHostileNode, type HostileNode, json, lp, send } from './hostile/index.js'

const SYBILS = 100
const TOPIC = 'eclipse'
const CONNECTIONS_PER_TOPIC = 8

/** Loopback as the internet; no per-host limits between these hosts. */
const internet = (ip: string, port = 0): Partial<MeshConfig> => ({
  listen: [`/ip4/${ip}/tcp/${port}`],
  network: { addressScope: 'public', publicCidrs: ['127.0.0.0/8'] },
  connections: { allow: ['/ip4/127.0.0.0/ipcidr/8'] },
  bootstrap: { minConnections: 3, retryInitial: '200ms', retryMax: '1s' },
})

const addrOf = (n: TopicNode) => {
  const a = `${n.libp2p.getMultiaddrs()[0]}`
  return a.includes('/p2p/') ? a : `${a}/p2p/${n.peerId}`
}

const ipOf = (address: string) => /^\/ip4\/([^/]+)/.exec(address)?.[1] ?? ''

describe('kad-topics: eclipse by 100 Sybils from one /24, then a restart', function () {
  this.timeout(180_000)
  let mesh: TopicTestMesh
  const sybils: Array<{ node: HostileNode; key: PrivateKey }> = []

  before(async () => {
    mesh = await TopicTestMesh.create('meshkit-eclipse-')
  })
  after(async () => {
    await Promise.allSettled(sybils.splice(0).map((s) => s.node.stop()))
    await mesh.stop()
  })

  it('keeps a seed connection and topic peers outside the Sybils\u2019 /24; caches at most 2 of them, by their word only', async () => {
    const kad = {
      addressScope: undefined,
      dhtMode: 'server' as const,
      connectionsPerTopic: CONNECTIONS_PER_TOPIC,
    }
    const seed = await mesh.start({ label: 'seed', dial: [], kad, config: internet('127.0.2.1') })
    const honest = await Promise.all(
      ['127.0.3.1', '127.0.4.1', '127.0.5.1'].map((ip, i) =>
        mesh.start({
          label: `honest ${i}`,
          topics: [TOPIC],
          dial: [addrOf(seed)],
          kad,
          config: internet(ip),
        }),
      ),
    )
    const honestIds = new Set(honest.map((h) => h.peerId))
    const port = await freePort()
    const victimOptions = {
      label: 'victim',
      dirName: 'victim',
      topics: [TOPIC],
      dial: [],
      kad,
      config: internet('127.0.6.1', port),
      plugins: [staticPeers({ peers: [addrOf(seed)] }), peerCache({ flushInterval: '100ms' })],
    }
    let victim = await mesh.start(victimOptions)
    const key = (await victim.api.topicKey(TOPIC)).toString()
    await waitFor(() => honest.every((h) => victim.api.peers(TOPIC).includes(h.peerId)), {
      timeoutMs: 30_000,
      what: 'the victim to find the honest members',
    })

    // 100 Sybils from 127.0.50.0/24, each listening there and announcing it, claim the topic (signed)
    const victimAddr = `/ip4/127.0.6.1/tcp/${port}/p2p/${victim.peerId}`
    const connectAndClaim = async (s: { node: HostileNode; key: PrivateKey }) => {
      const connection = await s.node.dial(victimAddr)
      const own = `${s.node.libp2p.getMultiaddrs()[0]}`
      const ts = Date.now()
      const request = {
        v: 2,
        joined: [key],
        addrs: [own],
        ts,
        sigs: [await signMember(s.key, key, ts, [own])],
      }
      const { stream, reader } = await s.node.open(connection, TOPICS_PROTOCOL)
      await send(stream, lp(json(request)))
      await reader.readLp(10_000)
      await closeSoon(stream)
    }
    for (let i = 0; i < SYBILS; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, j) => {
          const ip = `127.0.50.${i + j + 1}`
          const privateKey = await generateKeyPair('Ed25519')
          const node = await createHostileNode({ sourceIp: ip, listen: [`/ip4/${ip}/tcp/0`], privateKey })
          const s = { node, key: privateKey }
          sybils.push(s)
          await connectAndClaim(s).catch(() => {})
        }),
      )
    }
    const sybilIds = new Set(sybils.map((s) => s.node.peerId))
    const count = (peers: string[], ids: Set<string>) => peers.filter((p) => ids.has(p)).length
    await new Promise((r) => setTimeout(r, 1000))
    const before = victim.api.peers(TOPIC)
    expect(count(before, honestIds), 'honest topic peers with the Sybils connected').to.equal(3)
    expect(count(before, sybilIds), 'Sybil topic peers').to.be.at.most(CONNECTIONS_PER_TOPIC - 3)

    // restart: the Sybils connect again at once (and claim again) while the node bootstraps
    await mesh.close(victim)
    victim = await mesh.start(victimOptions)
    const reconnecting = Promise.all(sybils.map((s) => connectAndClaim(s).catch(() => {})))
    await waitFor(
      () =>
        victim.libp2p.getPeers().some((p) => p.toString() === seed.peerId) &&
        count(victim.api.peers(TOPIC), honestIds) >= 2,
      { timeoutMs: 30_000, what: 'a seed connection and honest topic peers after the restart' },
    )
    await reconnecting
    await new Promise((r) => setTimeout(r, 2000))
    const after = victim.api.peers(TOPIC)
    const sybilConnections = victim.libp2p.getPeers().filter((p) => sybilIds.has(p.toString())).length
    console.log(
      `      after the restart: ${sybilConnections} Sybils connected; topic peers: ${count(after, honestIds)} honest, ${count(after, sybilIds)} Sybils`,
    )
    expect(
      victim.libp2p.getPeers().some((p) => p.toString() === seed.peerId),
      'a seed connection',
    ).to.equal(true)
    expect(count(after, honestIds), 'honest topic peers (outside 127.0.50.0/24)').to.be.at.least(2)
    expect(after.length, 'topic peers').to.be.at.most(CONNECTIONS_PER_TOPIC)

    // the peer cache: the Sybils only connected to the victim; a peer known by its own word is kept at
    // most MAX_TOLD_PER_NETWORK times per public network, never as an address a dial of ours reached,
    // and after every peer that is
    const cached = victim.mesh.node.api<PeerCacheApi>('peer-cache').peers()
    const sybilsCached = cached.filter((p) => sybilIds.has(p.id))
    expect(sybilsCached.length, 'Sybils in the peer cache').to.be.at.most(MAX_TOLD_PER_NETWORK)
    for (const p of sybilsCached) expect(p.addrs, 'a Sybil entry a dial of ours reached').to.deep.equal([])
    const firstSybil = cached.findIndex((p) => sybilIds.has(p.id))
    if (firstSybil >= 0)
      expect(
        cached.slice(firstSybil).every((p) => p.addrs.length === 0),
        'verified peers first',
      ).to.equal(true)
    expect(cached.map((p) => p.id)).to.include(seed.peerId)
    for (const p of cached) for (const a of p.addrs) expect(ipOf(a)).not.to.match(/^127\.0\.50\./)
  })
})
