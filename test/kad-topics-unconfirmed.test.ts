/**
 * A member this node is connected to, and knows from a record, but which has not said itself that it
 * joined (its request was refused by a budget, or its last word predates its join): fill() asks it
 * again. A CI run of the 100-node simulator ended with a 2-member topic whose one member stayed
 * "connected, unconfirmed" to the other for 30 s: its own dial of that member had failed (both dialled
 * at once), and the backoff from that dial held the question back, though asking needs no dial.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { DialGuard } from '../plugins/kad-topics/dial-guard.js'
import { MemberRegistry } from '../plugins/kad-topics/member-registry.js'
import { TopicPeers } from '../plugins/kad-topics/topic-peers.js'
import type { JoinedTopic, TopicState } from '../plugins/kad-topics/topic-state.js'

const KEY = 'topic-key'

async function fixture() {
  const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const other = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const connections = [{ remotePeer: other, status: 'open', remoteAddr: multiaddr('/ip4/10.0.0.2/tcp/4001') }]
  const libp2p = {
    getConnections: () => connections,
    getPeers: () => connections.map((c) => c.remotePeer),
    peerStore: { merge: async () => {} },
    dial: async () => {
      throw new Error('not in this test')
    },
  }
  const joined: JoinedTopic = {
    topic: 'chat',
    key: KEY,
    cid: undefined as never,
    peers: new Set(),
    waiting: new Set(),
    dialing: new Set(),
    since: Date.now() - 60_000,
    abort: new AbortController(),
  }
  const registry = new MemberRegistry({ maxKeys: 16, maxMembers: 16, maxKeysPerPeer: 16, ttl: 600_000 })
  registry.pin(KEY)
  const dials = new DialGuard()
  const state: TopicState = {
    libp2p: libp2p as never,
    settings: {
      namespace: 'test',
      connectionsPerTopic: 5,
      queryTimeout: 10_000,
      memberExchange: true,
      lookupBackoff: { initial: 1000, max: 30_000 },
      refreshInterval: 300_000,
      memberTtl: 600_000,
      maxPeersPerNetwork: 2,
    },
    registry,
    dials,
    logger: { debug() {}, info() {}, warn() {}, error() {} } as never,
    events: { emit() {} } as never,
    signal: new AbortController().signal,
    self: self.toString(),
    joined: new Map([['chat', joined]]),
    keyToTopic: new Map([[KEY, 'chat']]),
    remoteJoined: new Map(),
    dialing: new Set(),
  }
  const asked: string[] = []
  const peers = new TopicPeers(
    state,
    () => {},
    (peer: PeerId) => asked.push(peer.toString()),
  )
  const id = other.toString()
  // known from its signed record (the DHT or a rendezvous point), with the address it is reachable at
  peers.learn(KEY, id, { addrs: ['/ip4/10.0.0.2/tcp/4001'], direct: true, short: true, source: 'dht' })
  return { peers, joined, dials, asked, id, state }
}

describe('kad-topics: a connected member that has not confirmed itself', () => {
  it('is asked, even while its dial is backed off (asking needs no dial)', async () => {
    const { peers, joined, dials, asked, id } = await fixture()
    dials.failed(id, ['/ip4/10.0.0.2/tcp/4001'])
    expect(dials.backedOff(id)).to.equal(true)
    peers.fill(joined)
    expect(asked).to.deep.equal([id])
  })

  it('is asked at most every 5 s; once it said it joined, it is a topic peer and asked no more', async () => {
    const { peers, joined, asked, id, state } = await fixture()
    peers.fill(joined)
    peers.fill(joined)
    expect(asked).to.deep.equal([id])
    state.remoteJoined.set(id, new Set([KEY]))
    peers.mark(joined, id)
    expect([...joined.peers]).to.deep.equal([id])
    peers.fill(joined)
    expect(asked).to.have.length(1)
  })
})
