/**
 * Birthday-paradox hole punching, for the pair a plain punch cannot open: a port-restricted cone (its
 * mapping is the same for every destination, but it only lets in packets from endpoints it sent to) with
 * a symmetric NAT (a new random port for every destination). Hyperswarm's approach:
 *
 * 1. the cone side binds a UDP port and learns its mapped address from a STUN server (the same for every
 *    destination, so the other side can aim at it);
 * 2. the symmetric ("random") side opens `sockets` UDP sockets (256), each sends to that address: its
 *    NAT makes 256 mappings on random ports, each one open to the cone's address;
 * 3. the cone side sends to random ports of the random side's IP: each guess also opens the cone's own
 *    filter for that endpoint. A guess that hits one of the 256 ports gets in (birthday paradox: with
 *    256 of ~64,000 ports open, 4,000 guesses miss with probability e^-16); the random side sees which
 *    socket it was.
 *
 * Both sides then close their sockets and pin the port of their next WebRTC connection
 * (`portRangeBegin/End` of node-datachannel) to the one that worked: the cone side to its port, the random
 * side to the local port of the socket that was hit. The NATs' conntrack entries outlive the sockets, so
 * ICE's checks from the random side leave through the punched mapping and get in at the cone side, which
 * answers the peer-reflexive address it learns from them.
 *
 * The steps are coordinated over the relayed connection by `/mesh/birthday/1.0.0`: JSON lines of at most
 * {@link MAX_BIRTHDAY_LINE_BYTES} bytes (`cone {mapped, token, guesses}`, `random {ip}`, `hit`, `miss {reason}`,
 * `pinned`); anything else, or a step that takes too long, ends the attempt (the connection stays relayed).
 *
 * Here: who may be aimed at and how often a punch runs. The wire format is in birthday-wire.ts, the UDP
 * sockets of both sides in birthday-sockets.ts, one whole punch over a stream (with proofs) in
 * birthday-run.ts.
 */
import { randomBytes } from 'node:crypto'
import { IPV4 } from './birthday-wire.js'

export { bindUdp, ConeSide, RandomSide, type StunAnswer, stunMapped } from './birthday-sockets.js'
export {
  BIRTHDAY_PROTOCOL,
  type BirthdayMessage,
  encodeBirthdayMessage,
  type LineReader,
  lineReader,
  MAX_BIRTHDAY_LINE_BYTES,
  type NoLine,
  parseBirthdayMessage,
} from './birthday-wire.js'

/**
 * Whether the cone side may aim its guesses at `ip` (named by the remote): never this host (0/8, 127/8)
 * nor multicast / reserved / broadcast (224/3), so a peer cannot turn the guesses on local services.
 */
export function isGuessTarget(ip: string): boolean {
  const first = Number(ip.split('.')[0])
  return IPV4.test(ip) && first !== 0 && first !== 127 && first < 224
}

/**
 * Bounds how often this node takes part in a birthday punch: a peer names the IP the guesses go to, so
 * the traffic one peer (or many) can point elsewhere is capped (~160 KB per attempt).
 */
export class BirthdayBudget {
  readonly #recent: number[] = []
  readonly #byPeer = new Map<string, number>()

  constructor(
    /** Attempts per minute, all peers together. */
    readonly perMinute = 10,
    /** Shortest time between two attempts with the same peer (ms). */
    readonly perPeerMs = 30_000,
  ) {}

  /** Takes one attempt with `peer` if the budget allows (and records it); false otherwise. */
  take(peer: string, now = Date.now()): boolean {
    while (this.#recent.length > 0 && this.#recent[0] <= now - 60_000) this.#recent.shift()
    const last = this.#byPeer.get(peer)
    if (this.#recent.length >= this.perMinute || (last !== undefined && now - last < this.perPeerMs))
      return false
    this.#recent.push(now)
    this.#byPeer.delete(peer)
    this.#byPeer.set(peer, now)
    if (this.#byPeer.size > 1024) this.#byPeer.delete(this.#byPeer.keys().next().value!)
    return true
  }
}

/** A fresh random token for one attempt. */
export const newBirthdayToken = () => randomBytes(12).toString('hex')
