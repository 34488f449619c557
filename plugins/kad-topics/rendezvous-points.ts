import { createHash } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import { LruMap } from 'meshkit/plugin'
import { CID } from 'multiformats/cid'

/** Connected peers a lookup round asks: the closest to the topic key, and a few others at random. */
export const RENDEZVOUS_FANOUT = { closest: 4, random: 2 }
/** A seed is asked in a lookup round at most this often while other connected peers can be asked. */
export const SEED_ASK_INTERVAL_MS = 30_000

/** The Kademlia id of bytes (kad-dht's: sha256 of them): of a peer id's multihash, of a key's. */
const kadId = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest()

/**
 * Picks the connected peers a short topic asks for members in a lookup round. Members register where
 * they connect (the exchange on each new outbound connection tells the peer their signed records), and
 * announcing or looking a topic up on the DHT connects them to the DHT servers closest to its key: those
 * servers are where a topic's members meet, wherever the mesh's bootstrap nodes are. A round asks the
 * `closest` connected peers to the key (by XOR distance of their Kademlia ids) and `random` others (a
 * member that learned of the topic elsewhere), not every connected peer: a small topic is short for
 * good, and asking 32 peers each round was most of an idle node's traffic (bench/sim).
 *
 * Seeds (the operator's bootstrap nodes, connected to by every node) are every member's first
 * rendezvous point: a node tells them its topics when it connects, and they answer with the members
 * they know. Asked again every round, they served most of a join's requests and ran at 38 times an
 * ordinary node's load with 1,000 nodes (bench/sim); a round now asks a seed at most every
 * `seedInterval` while any other connected peer can be asked.
 */
export class RendezvousPoints {
  /** Kademlia ids of peer ids (hashing costs ~1 µs, a round sorts every connected peer). */
  readonly #ids = new LruMap<string, Buffer>(4096)
  readonly #keys = new LruMap<string, Buffer>(256)
  /** When a round last asked each seed (any topic). */
  readonly #seedAsked = new LruMap<string, number>(256)

  constructor(
    private readonly fanout = RENDEZVOUS_FANOUT,
    private readonly isSeed: (peer: string) => boolean = () => false,
    private readonly seedInterval = SEED_ASK_INTERVAL_MS,
  ) {}

  /**
   * The peers of `candidates` to ask about `key` (a topic key's CID multihash bytes, `keyId` caches its
   * id by its string form): the `closest` to it, then `random` of the others.
   */
  pick(key: string, multihash: Uint8Array, candidates: PeerId[], now = Date.now()): PeerId[] {
    const spared = candidates.filter((peer) => {
      const id = peer.toString()
      if (!this.isSeed(id)) return true
      const last = this.#seedAsked.get(id)
      return last === undefined || now - last >= this.seedInterval
    })
    // nobody else to ask (a node connected to seeds only): the seeds, as often as the round comes
    const picked = this.#pick(key, multihash, spared.length > 0 ? spared : candidates)
    for (const peer of picked) {
      const id = peer.toString()
      if (this.isSeed(id)) this.#seedAsked.set(id, now)
    }
    return picked
  }

  #pick(key: string, multihash: Uint8Array, candidates: PeerId[]): PeerId[] {
    const { closest, random } = this.fanout
    if (candidates.length <= closest + random) return candidates
    let target = this.#keys.get(key)
    if (!target) {
      target = kadId(multihash)
      this.#keys.set(key, target)
    }
    const ranked = candidates
      .map((peer) => ({ peer, distance: xor(this.#idOf(peer), target) }))
      .sort((a, b) => Buffer.compare(a.distance, b.distance))
    const picked = ranked.slice(0, closest).map((r) => r.peer)
    const rest = ranked.slice(closest)
    for (let i = 0; i < random && rest.length > 0; i++) {
      const j = Math.floor(Math.random() * rest.length)
      picked.push(rest[j].peer)
      rest[j] = rest[rest.length - 1]
      rest.pop()
    }
    return picked
  }

  #idOf(peer: PeerId): Buffer {
    const id = peer.toString()
    let kad = this.#ids.get(id)
    if (!kad) {
      kad = kadId(peer.toMultihash().bytes)
      this.#ids.set(id, kad)
    }
    return kad
  }
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i]
  return out
}

/**
 * How far topic keys (CID strings) are from `self` in Kademlia terms: the first 48 bits of the XOR of
 * their ids, as a number (smaller: closer). A string that is no CID is as far as can be. For the member
 * registry's `distance` (a full registry keeps the keys this node is a rendezvous point for).
 */
export function keyDistance(self: PeerId): (key: string) => number {
  const own = kadId(self.toMultihash().bytes)
  return (key) => {
    let multihash: Uint8Array
    try {
      multihash = CID.parse(key).multihash.bytes
    } catch {
      return Number.MAX_SAFE_INTEGER
    }
    return xor(kadId(multihash), own).readUIntBE(0, 6)
  }
}
