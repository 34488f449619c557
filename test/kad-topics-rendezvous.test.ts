/**
 * Which connected peers a short topic asks for members in a lookup round (RendezvousPoints): the few
 * closest to the topic key by Kademlia distance (where members register: the DHT walks of announce and
 * lookup connect them to the servers closest to the key) and a few others at random, not every peer.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { expect } from 'chai'
import { sha256 } from 'multiformats/hashes/sha2'
import { keyDistance, RENDEZVOUS_FANOUT, RendezvousPoints } from '../plugins/kad-topics/rendezvous-points.js'
import { topicKey } from '../plugins/kad-topics/topic-key.js'

/** Kademlia distance as kad-dht computes it (sha256 of the bytes, XOR), written out independently. */
async function distance(a: Uint8Array, b: Uint8Array): Promise<bigint> {
  const [da, db] = await Promise.all([sha256.digest(a), sha256.digest(b)])
  let x = 0n
  for (let i = 0; i < 32; i++) x = (x << 8n) | BigInt(da.digest[i] ^ db.digest[i])
  return x
}

describe('kad-topics: rendezvous points of a lookup round', () => {
  let peers: PeerId[]
  before(async () => {
    peers = await Promise.all(
      Array.from({ length: 30 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
    )
  })

  it('asks the peers closest to the topic key, and a few others at random', async () => {
    const { closest, random } = RENDEZVOUS_FANOUT
    const points = new RendezvousPoints()
    for (const topic of ['chat', 'rare-topic', 'ai-research']) {
      const cid = await topicKey('meshkit', topic)
      const key = cid.multihash.bytes
      const byDistance = await Promise.all(
        peers.map(async (p) => ({ id: p.toString(), d: await distance(p.toMultihash().bytes, key) })),
      )
      byDistance.sort((a, b) => (a.d < b.d ? -1 : a.d > b.d ? 1 : 0))
      const nearest = byDistance.slice(0, closest).map((x) => x.id)
      const others = new Set<string>()
      for (let round = 0; round < 20; round++) {
        const picked = points.pick(cid.toString(), key, [...peers].reverse()).map(String)
        expect(picked, `${topic}: ${closest} closest + ${random} others`).to.have.length(closest + random)
        expect(new Set(picked).size, 'no peer twice').to.equal(picked.length)
        expect(picked.slice(0, closest), `${topic}: the closest, nearest first`).to.deep.equal(nearest)
        for (const id of picked.slice(closest)) {
          expect(nearest).to.not.include(id)
          others.add(id)
        }
      }
      // the random part moves: 20 rounds of 2 draws from 26 peers land on many of them
      expect(others.size, `${topic}: distinct random picks in 20 rounds`).to.be.above(8)
    }
  })

  it('asks everyone when there are no more peers than the fanout', async () => {
    const cid = await topicKey('meshkit', 'chat')
    const few = peers.slice(0, RENDEZVOUS_FANOUT.closest + RENDEZVOUS_FANOUT.random)
    const points = new RendezvousPoints()
    expect(points.pick(cid.toString(), cid.multihash.bytes, few)).to.deep.equal(few)
    expect(points.pick(cid.toString(), cid.multihash.bytes, [])).to.deep.equal([])
  })
})

describe('kad-topics: lookup rounds spare the seeds', () => {
  let peers: PeerId[]
  before(async () => {
    peers = await Promise.all(
      Array.from({ length: 12 }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))),
    )
  })

  it('asks a seed at most every seedInterval while other peers can be asked; seeds alone are asked every round', async () => {
    const cid = await topicKey('meshkit', 'chat')
    const seeds = new Set(peers.slice(0, 5).map(String))
    const interval = 30_000
    const points = new RendezvousPoints(undefined, (id) => seeds.has(id), interval)
    const seedAsks = (t0: number, rounds: number, step: number, candidates: PeerId[]) => {
      let n = 0
      for (let i = 0; i < rounds; i++)
        n += points
          .pick(cid.toString(), cid.multihash.bytes, candidates, t0 + i * step)
          .filter((p) => seeds.has(p.toString())).length
      return n
    }
    // 5 seeds and 7 others, a round every 2 s for a minute: each seed at most twice (at 0 and 30 s)
    const mixed = seedAsks(0, 30, 2_000, peers)
    expect(mixed, 'seed asks in 30 rounds').to.be.at.most(2 * seeds.size)
    expect(mixed, 'seeds are still asked now and then').to.be.above(0)
    // without the rule every round would take seeds among its 6 picks of 12 peers
    const plain = new RendezvousPoints()
    let unspared = 0
    for (let i = 0; i < 30; i++)
      unspared += plain
        .pick(cid.toString(), cid.multihash.bytes, peers)
        .filter((p) => seeds.has(p.toString())).length
    expect(unspared).to.be.above(2 * seeds.size)
    // a node connected to seeds only asks them every round (as before)
    const onlySeeds = peers.slice(0, 5)
    expect(seedAsks(100_000, 5, 2_000, onlySeeds)).to.equal(5 * onlySeeds.length)
  })
})

describe('kad-topics: key distance (what a full member registry keeps)', () => {
  it('orders topic keys by Kademlia distance from the node; a string that is no CID is farthest', async () => {
    const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const distanceOf = keyDistance(self)
    const keys = await Promise.all(Array.from({ length: 40 }, (_, i) => topicKey('meshkit', `t${i}`)))
    const exact = await Promise.all(keys.map((k) => distance(k.multihash.bytes, self.toMultihash().bytes)))
    const byExact = keys
      .map((k, i) => ({ k: k.toString(), d: exact[i] }))
      .sort((a, b) => (a.d < b.d ? -1 : 1))
    const byPrefix = [...byExact].sort((a, b) => distanceOf(a.k) - distanceOf(b.k))
    expect(byPrefix.map((x) => x.k)).to.deep.equal(byExact.map((x) => x.k))
    expect(distanceOf('not a cid')).to.equal(Number.MAX_SAFE_INTEGER)
    expect(distanceOf(byExact[39].k)).to.be.below(Number.MAX_SAFE_INTEGER)
  })
})
