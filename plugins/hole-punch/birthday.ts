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
 */
import { randomBytes, randomInt } from 'node:crypto'
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import type { Stream } from '@libp2p/interface'
import { decodeJsonObject, sleep } from 'meshkit/plugin'
import { encodeBindingRequest, parseBindingResponse } from './stun-wire.js'

export const BIRTHDAY_PROTOCOL = '/mesh/birthday/1.0.0'
export const MAX_BIRTHDAY_LINE_BYTES = 512
/** Longest proof (a base64 STUN attestation, see stun-wire.ts). */
const MAX_PROOF_CHARS = 344

export type BirthdayMessage =
  | { v: 1; t: 'nonce'; nonce: string }
  | { v: 1; t: 'cone'; mapped: string; token: string; proof: string }
  | { v: 1; t: 'random'; ip: string; proof: string }
  | { v: 1; t: 'hit' }
  | { v: 1; t: 'miss'; reason: string }
  | { v: 1; t: 'pinned' }

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/
const TOKEN = /^[0-9a-f]{24}$/
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
const isProof = (s: unknown): s is string =>
  typeof s === 'string' && s.length <= MAX_PROOF_CHARS && s.length % 4 === 0 && BASE64.test(s)
const isEndpoint = (s: unknown): s is string => {
  if (typeof s !== 'string') return false
  const i = s.lastIndexOf(':')
  const port = Number(s.slice(i + 1))
  return i > 0 && IPV4.test(s.slice(0, i)) && Number.isInteger(port) && port > 0 && port < 65536
}

/** One line (without its newline) as a birthday message; undefined for anything else. */
export function parseBirthdayMessage(line: string | undefined): BirthdayMessage | undefined {
  if (line === undefined) return undefined
  let o: Record<string, unknown>
  try {
    o = decodeJsonObject(new TextEncoder().encode(line), MAX_BIRTHDAY_LINE_BYTES, (reason) => {
      throw new Error(reason)
    })
  } catch {
    return undefined
  }
  if (o.v !== 1) return undefined
  const keys = Object.keys(o).length
  if (o.t === 'nonce' && typeof o.nonce === 'string' && TOKEN.test(o.nonce) && keys === 3)
    return { v: 1, t: 'nonce', nonce: o.nonce }
  if (
    o.t === 'cone' &&
    isEndpoint(o.mapped) &&
    typeof o.token === 'string' &&
    TOKEN.test(o.token) &&
    isProof(o.proof) &&
    keys === 5
  )
    return { v: 1, t: 'cone', mapped: o.mapped, token: o.token, proof: o.proof }
  if (o.t === 'random' && typeof o.ip === 'string' && IPV4.test(o.ip) && isProof(o.proof) && keys === 4)
    return { v: 1, t: 'random', ip: o.ip, proof: o.proof }
  if ((o.t === 'hit' || o.t === 'pinned') && keys === 2) return { v: 1, t: o.t }
  // printable ASCII only: the reason ends up in logs and events
  if (o.t === 'miss' && typeof o.reason === 'string' && /^[\x20-\x7e]{0,160}$/.test(o.reason) && keys === 3)
    return { v: 1, t: 'miss', reason: o.reason }
  return undefined
}

export function encodeBirthdayMessage(m: BirthdayMessage): Uint8Array {
  const bytes = new TextEncoder().encode(`${JSON.stringify(m)}\n`)
  if (bytes.byteLength > MAX_BIRTHDAY_LINE_BYTES) throw new Error('birthday message too large')
  return bytes
}

/** Why a {@link LineReader} returned no line: nothing in time, the stream ended, or a line too long. */
export type NoLine = 'timeout' | 'ended' | 'oversized'

/** Reads successive lines; `why` says why the last read gave none. */
export interface LineReader {
  (timeoutMs: number): Promise<string | undefined>
  readonly why: NoLine | undefined
}

/** Successive lines of a stream (each at most MAX_BIRTHDAY_LINE_BYTES), each read bounded. */
export function lineReader(stream: Stream): LineReader {
  const it = stream[Symbol.asyncIterator]()
  let buffered: number[] = []
  let pending: Promise<IteratorResult<Uint8Array | { subarray(): Uint8Array }>> | undefined
  let ended = false
  let why: NoLine | undefined
  const read = async (timeoutMs: number): Promise<string | undefined> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const nl = buffered.indexOf(0x0a)
      if (nl >= 0 && nl <= MAX_BIRTHDAY_LINE_BYTES) {
        const line = new TextDecoder().decode(Uint8Array.from(buffered.slice(0, nl)))
        buffered = buffered.slice(nl + 1)
        why = undefined
        return line
      }
      if (nl > MAX_BIRTHDAY_LINE_BYTES || buffered.length > MAX_BIRTHDAY_LINE_BYTES) {
        why = 'oversized'
        return undefined
      }
      if (ended) {
        why = 'ended'
        return undefined
      }
      pending ??= it.next()
      let timer: NodeJS.Timeout | undefined
      const r = await Promise.race([
        pending.catch(() => ({ done: true as const, value: undefined })),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()))
        }),
      ])
      clearTimeout(timer)
      if (r === undefined) {
        why = 'timeout'
        return undefined
      }
      pending = undefined
      if (r.done) {
        ended = true
        continue
      }
      const chunk = r.value instanceof Uint8Array ? r.value : r.value.subarray()
      for (const b of chunk) buffered.push(b)
    }
  }
  return Object.defineProperty(read, 'why', { get: () => why }) as LineReader
}

const split = (endpoint: string) => {
  const i = endpoint.lastIndexOf(':')
  return { ip: endpoint.slice(0, i), port: Number(endpoint.slice(i + 1)) }
}

/** A UDP socket on `port` (0: any) of every IPv4 interface. */
export function bindUdp(port = 0): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    s.once('error', reject)
    s.bind(port, '0.0.0.0', () => {
      s.off('error', reject)
      s.on('error', () => {})
      resolve(s)
    })
  })
}

/** What a STUN server answered a socket: the address it saw, and its attestation when asked for one. */
export interface StunAnswer {
  mapped: string
  /** The server's attestation (stun-wire.ts), when `nonce` was given and the server attests. */
  attestation?: Uint8Array
}

/**
 * The address a STUN server (`ip:port`) sees socket `s` at (retransmitted; undefined on timeout). With
 * `nonce` (12 bytes, chosen by the peer this node must prove its address to), the request's transaction
 * id is the nonce and the server is asked for an attestation.
 */
export function stunMapped(
  s: Socket,
  server: string,
  timeoutMs: number,
  nonce?: Uint8Array,
): Promise<StunAnswer | undefined> {
  const transactionId = nonce ?? randomBytes(12)
  const bytes = encodeBindingRequest(transactionId, nonce !== undefined)
  const { ip, port } = split(server)
  return new Promise((resolve) => {
    const onMessage = (buf: Buffer, r: RemoteInfo) => {
      if (r.address !== ip || r.port !== port) return
      const res = parseBindingResponse(buf)
      if (res && Buffer.compare(res.transactionId, transactionId) === 0)
        finish({
          mapped: `${res.mapped.ip}:${res.mapped.port}`,
          ...(res.attestation ? { attestation: res.attestation } : {}),
        })
    }
    const send = () => s.send(bytes, port, ip, () => {})
    const timer = setInterval(send, 200)
    const deadline = setTimeout(() => finish(undefined), timeoutMs)
    function finish(answer: StunAnswer | undefined) {
      clearInterval(timer)
      clearTimeout(deadline)
      s.off('message', onMessage)
      resolve(answer)
    }
    s.on('message', onMessage)
    send()
  })
}

const MAGIC = 'meshkit-birthday '

/** The cone side: one socket, its mapped address, then guesses at the random side's ports. */
export class ConeSide {
  private constructor(
    readonly socket: Socket,
    /** The local port (the next WebRTC connection is pinned to it). */
    readonly port: number,
    /** The address the STUN server saw: the same for every destination behind a cone NAT. */
    readonly mapped: string,
    /** The STUN server's attestation of `mapped` for the nonce given to {@link ConeSide.open}. */
    readonly attestation?: Uint8Array,
  ) {}

  /** Binds the socket and asks `stunServer` where it is (attested for `nonce`, when given). */
  static async open(stunServer: string, timeoutMs: number, nonce?: Uint8Array): Promise<ConeSide> {
    const s = await bindUdp()
    const answer = await stunMapped(s, stunServer, timeoutMs, nonce)
    if (!answer) {
      s.close()
      throw new Error(`no answer from the STUN server ${stunServer}`)
    }
    return new ConeSide(s, s.address().port, answer.mapped, answer.attestation)
  }

  /**
   * Sends `token` to random distinct ports of `ip` (at most `guesses`, `perTick` every 5 ms) until
   * `stop` resolves or a packet with the token comes back from `ip`; the endpoint that answered, if any.
   */
  async guess(
    ip: string,
    token: string,
    {
      guesses,
      perTick = 12,
      stop,
      signal,
      nextPort = () => randomInt(1024, 65536),
    }: {
      guesses: number
      perTick?: number
      stop: Promise<unknown>
      /** Ends the guessing early (the node stops). */
      signal?: AbortSignal
      /** The next port to try (repeats are skipped). @default uniform over 1024-65535 */
      nextPort?: () => number
    },
  ): Promise<string | undefined> {
    const payload = Buffer.from(MAGIC + token)
    let hit: string | undefined
    let stopped = false
    void stop.then(
      () => {
        stopped = true
      },
      () => {
        stopped = true
      },
    )
    const tried = new Set<number>()
    // only from a port we guessed (behind the cone NAT nothing else gets in anyway)
    const onMessage = (buf: Buffer, r: RemoteInfo) => {
      if (r.address === ip && tried.has(r.port) && buf.equals(payload)) hit ??= `${r.address}:${r.port}`
    }
    this.socket.on('message', onMessage)
    try {
      while (tried.size < guesses && !hit && !stopped && !signal?.aborted) {
        for (let i = 0; i < perTick && tried.size < guesses; i++) {
          let port = nextPort()
          for (let n = 0; tried.has(port) && n < 1000; n++) port = nextPort()
          if (tried.has(port)) return hit
          tried.add(port)
          this.socket.send(payload, port, ip, () => {})
        }
        await sleep(5)
      }
      // the last guesses may still be answered
      for (let i = 0; i < 20 && !hit && !stopped && !signal?.aborted; i++) await sleep(25)
      return hit
    } finally {
      this.socket.off('message', onMessage)
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve())
      } catch {
        resolve()
      }
    })
  }
}

/** The random (symmetric) side: many sockets aimed at the cone's mapped address. */
export class RandomSide {
  #hit?: Socket
  readonly #hitWaiters: Array<(s: Socket) => void> = []
  #timer?: NodeJS.Timeout

  private constructor(
    readonly sockets: Socket[],
    readonly target: string,
    readonly token: string,
  ) {}

  /**
   * Opens `count` sockets (`first` among them, when given: the one whose mapping was proven); each sends
   * the token to `target` now and every 250 ms (mappings kept open).
   */
  static async open(target: string, token: string, count: number, first?: Socket): Promise<RandomSide> {
    const sockets: Socket[] = first ? [first] : []
    try {
      while (sockets.length < count) sockets.push(await bindUdp())
    } catch (err) {
      for (const s of sockets) s.close()
      throw err
    }
    const side = new RandomSide(sockets, target, token)
    const payload = Buffer.from(MAGIC + token)
    const { ip, port } = split(target)
    const spray = () => {
      for (const s of sockets) if (!side.#hit) s.send(payload, port, ip, () => {})
    }
    for (const s of sockets)
      s.on('message', (buf: Buffer, r: RemoteInfo) => {
        if (side.#hit || r.address !== ip || r.port !== port || !buf.equals(payload)) return
        side.#hit = s
        // answer through the punched mapping: the cone side learns it got in
        for (let i = 0; i < 3; i++) s.send(payload, port, ip, () => {})
        for (const w of side.#hitWaiters.splice(0)) w(s)
      })
    spray()
    side.#timer = setInterval(spray, 250)
    return side
  }

  /** The local port of the socket a guess hit (undefined when none did within `timeoutMs`). */
  async waitHit(timeoutMs: number, signal?: AbortSignal): Promise<number | undefined> {
    if (this.#hit) return this.#hit.address().port
    if (signal?.aborted) return undefined
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    const s = await Promise.race([
      new Promise<Socket>((resolve) => this.#hitWaiters.push(resolve)),
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), timeoutMs)
        onAbort = () => resolve(undefined)
        signal?.addEventListener('abort', onAbort, { once: true })
      }),
    ])
    clearTimeout(timer)
    if (onAbort) signal?.removeEventListener('abort', onAbort)
    return s?.address().port
  }

  async close(): Promise<void> {
    clearInterval(this.#timer)
    await Promise.all(
      this.sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve())
            } catch {
              resolve()
            }
          }),
      ),
    )
  }
}

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
