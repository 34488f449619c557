/**
 * One birthday punch over a `/mesh/birthday/1.0.0` stream, either role, with proofs (see birthday.ts for
 * the UDP mechanics and docs/nat.md for the protocol):
 *
 * 1. both sides send a fresh `nonce`;
 * 2. each side asks its STUN server (a Meshkit `stunServer()`) for its mapped address with the other's
 *    nonce as the transaction id, and forwards the server's signed attestation as its `proof`: the cone
 *    side first, in `cone {mapped, token, proof}`; the random side, once that proof holds (before it,
 *    it sends nothing at all), in `random {ip, proof}`;
 * 3. each side checks the other's proof (a STUN server it trusts signed this very nonce and this address)
 *    and its own address rules before it sends a single datagram there: the random side aims at the
 *    proven ip:port only, the cone side at ports of the proven IP only.
 *
 * How much is sent comes from this node's own options (sockets, guesses and the waits derived from
 * them), never from the remote. A line that breaks the format is the peer's offence (`malformed`), so is
 * a proof that does not hold (`forged`); a silent or slow peer only ends the attempt.
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:dgram'
import type { Stream } from '@libp2p/interface'
import {
  type BirthdayMessage,
  bindUdp,
  ConeSide,
  encodeBirthdayMessage,
  type LineReader,
  lineReader,
  newBirthdayToken,
  parseBirthdayMessage,
  RandomSide,
  stunMapped,
} from './birthday.js'
import { verifyAttestation } from './stun-wire.js'

/** Why a proof was not accepted; `forged`: it is false (not merely from a server this node does not trust). */
export interface ProofRefusal {
  reason: string
  forged: boolean
}

export interface BirthdayRunInit {
  stream: Stream
  role: 'cone' | 'random'
  /** This node's STUN server, `ip:port`. */
  stunServer: string
  /** The longest wait for one step (the NAT-type exchange timeout). */
  step: number
  /** Sockets the random side opens (this node's option). */
  sockets: number
  /** Ports the cone side guesses (this node's option); the random side's wait follows it too. */
  guesses: number
  signal: AbortSignal
  /** Checks the remote's proof for `nonce` (this node's) and the address it claims. */
  verify(
    proof: Uint8Array,
    nonce: Uint8Array,
    claim: { ip: string; port?: number },
  ): Promise<ProofRefusal | undefined>
  /** Why this node must not send to `ip` (undefined: it may). */
  refuseAim(ip: string): string | undefined
  /** Reports the remote's offence. */
  penalize(offence: 'malformed' | 'forged', detail: string): void
}

/** The stream's line protocol: send, and expect one message type (anything else ends the attempt). */
export class BirthdayChannel {
  readonly #read: LineReader

  constructor(
    readonly stream: Stream,
    private readonly penalize: BirthdayRunInit['penalize'],
  ) {
    this.#read = lineReader(stream)
  }

  send(m: BirthdayMessage): void {
    this.stream.send(encodeBirthdayMessage(m))
  }

  /** The next message, which must be of type `t` (a `miss` ends the attempt with its reason). */
  async expect<T extends BirthdayMessage['t']>(
    t: T,
    timeoutMs: number,
  ): Promise<Extract<BirthdayMessage, { t: T }>> {
    const line = await this.#read(timeoutMs)
    if (line === undefined) {
      if (this.#read.why === 'oversized') this.penalize('malformed', 'a birthday line over the size limit')
      throw new Error(`no '${t}' in time (${this.#read.why})`)
    }
    const m = parseBirthdayMessage(line)
    if (m?.t === 'miss') throw new Error(`the remote gave up: ${m.reason}`)
    if (m?.t !== t) {
      this.penalize('malformed', m ? `'${m.t}' where '${t}' belongs` : 'a malformed birthday line')
      throw new Error(m ? `unexpected '${m.t}'` : 'a malformed line')
    }
    return m as Extract<BirthdayMessage, { t: T }>
  }
}

const split = (endpoint: string) => {
  const i = endpoint.lastIndexOf(':')
  return { ip: endpoint.slice(0, i), port: Number(endpoint.slice(i + 1)) }
}

const closeSocket = (s: Socket) =>
  new Promise<void>((resolve) => {
    try {
      s.close(() => resolve())
    } catch {
      resolve()
    }
  })

/** The guessing runs at ~2,400 a second: how long the random side waits for it, with a margin. */
export const guessWindow = (guesses: number, step: number) => Math.ceil(guesses / 2) + step

/**
 * Runs the punch up to the hit: resolves with the local port both sides then pin their WebRTC connection
 * to (this side's), or throws / returns why it did not work.
 */
export async function runBirthday(
  init: BirthdayRunInit,
  channel: BirthdayChannel,
): Promise<{ port: number } | { failure: string }> {
  const { step, signal } = init
  const miss = (reason: string) => {
    channel.send({ v: 1, t: 'miss', reason })
    return { failure: reason }
  }
  const checked = async (proof: string, nonce: Uint8Array, claim: { ip: string; port?: number }) => {
    const refused = await init.verify(Buffer.from(proof, 'base64'), nonce, claim)
    if (refused) {
      if (refused.forged) init.penalize('forged', `birthday proof: ${refused.reason}`)
      return miss(`your proof was not accepted: ${refused.reason}`)
    }
    const aim = init.refuseAim(claim.ip)
    if (aim !== undefined) return miss(`will not send to ${claim.ip}`)
    return undefined
  }
  /** Why this node's own proof would not hold (a STUN server that signs badly): never forwarded then. */
  const ownProofFails = async (attestation: Uint8Array, theirs: Uint8Array, mapped: string) => {
    const a = await verifyAttestation(attestation, theirs)
    if ('error' in a) return a.error
    return `${a.ip}:${a.port}` === mapped ? undefined : `it attests ${a.ip}:${a.port}, not ${mapped}`
  }
  const nonce = randomBytes(12)
  channel.send({ v: 1, t: 'nonce', nonce: nonce.toString('hex') })
  const theirNonce = Buffer.from((await channel.expect('nonce', 2 * step)).nonce, 'hex')

  if (init.role === 'cone') {
    const cone = await ConeSide.open(init.stunServer, step, theirNonce)
    try {
      if (!cone.attestation) return miss(`the STUN server ${init.stunServer} gave no attestation`)
      const bad = await ownProofFails(cone.attestation, theirNonce, cone.mapped)
      if (bad) return miss(`the STUN server's attestation does not hold: ${bad}`)
      const token = newBirthdayToken()
      channel.send({
        v: 1,
        t: 'cone',
        mapped: cone.mapped,
        token,
        proof: Buffer.from(cone.attestation).toString('base64'),
      })
      // the random side proves its address, checks ours and opens its sockets first
      const random = await channel.expect('random', 3 * step)
      const refused = await checked(random.proof, nonce, { ip: random.ip })
      if (refused) return refused
      const outcome = channel.expect('hit', guessWindow(init.guesses, step) + step)
      await cone.guess(random.ip, token, { guesses: init.guesses, stop: outcome, signal })
      await outcome
      return { port: cone.port }
    } finally {
      await cone.close()
    }
  }

  // the random side: nothing is sent before the cone's proof holds (not even to STUN); then its first
  // socket's mapping is proven before anything is aimed at the cone
  const cone = await channel.expect('cone', 2 * step)
  const target = split(cone.mapped)
  const refused = await checked(cone.proof, nonce, target)
  if (refused) return refused
  const first = await bindUdp()
  let handedOver = false
  try {
    const seen = await stunMapped(first, init.stunServer, step, theirNonce)
    if (!seen) return miss(`no answer from the STUN server ${init.stunServer}`)
    if (!seen.attestation) return miss(`the STUN server ${init.stunServer} gave no attestation`)
    const bad = await ownProofFails(seen.attestation, theirNonce, seen.mapped)
    if (bad) return miss(`the STUN server's attestation does not hold: ${bad}`)
    handedOver = true
    const side = await RandomSide.open(cone.mapped, cone.token, init.sockets, first)
    try {
      channel.send({
        v: 1,
        t: 'random',
        ip: split(seen.mapped).ip,
        proof: Buffer.from(seen.attestation).toString('base64'),
      })
      const hit = await side.waitHit(guessWindow(init.guesses, step), signal)
      if (hit === undefined) return miss('no guess got in')
      channel.send({ v: 1, t: 'hit' })
      return { port: hit }
    } finally {
      await side.close()
    }
  } finally {
    if (!handedOver) await closeSocket(first)
  }
}
