import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { expect } from 'chai'
import { contactCheckPing, type PingLike } from '../plugins/kad-topics/contact-check.js'
import { collectPeers, type TopicNode, TopicTestMesh } from './fixtures/topics.js'

const DHT = '/mesh/kad/1.0.0'

interface Fake {
  connected?: boolean
  limited?: boolean
  protocols?: string[]
  inTable?: boolean
}

async function check(f: Fake): Promise<{ result: number | string; pinged: number }> {
  let pinged = 0
  const inner: PingLike = {
    ping: async () => {
      pinged++
      return 7
    },
  }
  const conn = {
    status: 'open',
    limits: f.limited ? { bytes: 1n } : undefined,
    rtt: 3,
  } as unknown as Connection
  const ping = contactCheckPing(inner, {
    protocol: DHT,
    connections: () => (f.connected ? [conn] : []),
    protocols: async () => f.protocols ?? [],
    inRoutingTable: async () => f.inTable ?? false,
  })
  const peer: PeerId = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const result = await ping.ping(peer).then(
    (rtt) => rtt,
    (err: Error) => err.name,
  )
  return { result, pinged }
}

describe('kad-topics: DHT contacts enter the routing table over an open connection', function () {
  this.timeout(180_000)

  it('decides without dialling: connected DHT peer yes; connected non-DHT peer, peer not identified yet or unconnected newcomer no', async () => {
    expect(await check({ connected: true, protocols: [DHT, '/ipfs/id/1.0.0'] })).to.deep.equal({
      result: 3,
      pinged: 0,
    })
    expect(await check({ connected: true, protocols: ['/ipfs/id/1.0.0'] })).to.deep.equal({
      result: 'ContactRefusedError',
      pinged: 0,
    })
    expect(await check({ connected: false })).to.deep.equal({ result: 'ContactRefusedError', pinged: 0 })
    // a relayed (limited) connection does not count as one
    expect(await check({ connected: true, limited: true })).to.deep.equal({
      result: 'ContactRefusedError',
      pinged: 0,
    })
    // protocols not known yet (identify under way): a newcomer is refused (kad-dht's topology adds it
    // once identify says it speaks the protocol); an old contact is pinged over the connection
    expect(await check({ connected: true, protocols: [] })).to.deep.equal({
      result: 'ContactRefusedError',
      pinged: 0,
    })
    expect(await check({ connected: true, protocols: [], inTable: true })).to.deep.equal({
      result: 7,
      pinged: 1,
    })
    // an old contact's liveness check may still dial, as kad-dht expects
    expect(await check({ connected: false, inTable: true })).to.deep.equal({ result: 7, pinged: 1 })
  })

  it('a member that looked its topic up on the DHT neither connects to nor tables the providers it was told of', async () => {
    const mesh = await TopicTestMesh.create('meshkit-kad-contacts-')
    try {
      await mesh.startBootstrap(2, { kad: { dhtMode: 'server' } })
      // DHT lookups only (no member exchange): each member finds the others as providers of the key
      const kad = { dhtMode: 'client' as const, memberExchange: false, connectionsPerTopic: 2 }
      const members: TopicNode[] = []
      for (let i = 0; i < 6; i++)
        members.push(await mesh.start({ topics: ['contacts'], kad, label: `m${i}` }))
      for (const m of members) await m.waitForEvent('topic:announced', () => true, { timeoutMs: 30_000 })
      const last = members[members.length - 1]
      const ids = new Set(members.map((m) => m.peerId))
      const found = await collectPeers((signal) => last.api.findPeersForTopic('contacts', { signal }), {
        timeoutMs: 20_000,
        stopWhen: (s) => [...ids].every((id) => id === last.peerId || s.has(id)),
      })
      expect(found.size, 'the lookup found the other members').to.be.greaterThanOrEqual(5)
      // let kad-dht's routing-table updates (queued per peer named in a response) run
      await new Promise((r) => setTimeout(r, 1500))
      for (const m of members) {
        const table = (m.libp2p.services as { dht: { routingTable: { find(p: PeerId): Promise<unknown> } } })
          .dht.routingTable
        for (const other of members) {
          if (other === m) continue
          expect(
            await table.find(peerIdFromString(other.peerId)),
            `${m.label} tables member ${other.label}`,
          ).to.equal(undefined)
        }
        const memberConns = m.libp2p
          .getConnections()
          .filter((c) => ids.has(c.remotePeer.toString()) && c.direction === 'outbound')
        expect(
          new Set(memberConns.map((c) => c.remotePeer.toString())).size,
          `${m.label} dialled members beyond its topic target`,
        ).to.be.at.most(2)
      }
    } finally {
      await mesh.stop()
    }
  })
})
