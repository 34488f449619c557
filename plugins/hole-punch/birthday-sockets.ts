/**
 * The UDP side of a birthday punch (see birthday.ts): the cone side's socket and guesses, the random
 * side's sockets aimed at the cone's mapped address, and STUN binding requests (attested for a peer's
 * nonce) that tell each socket its mapped address.
 */
import { randomBytes, randomInt } from 'node:crypto'
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { sleep } from 'meshkit/plugin'
import { encodeBindingRequest, parseBindingResponse } from './stun-wire.js'

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
