/**
 * The STUN server's socket (see `stunServer()` in index.ts): answers well-formed binding requests only,
 * rate-limited per source IP and in total, one datagram per request, never larger than the request when
 * it carries an attestation (a plain answer is 32 bytes for a request of at least 20). Everything else
 * is dropped unanswered. Socket errors are logged, never thrown.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { LruMap, TokenBucket } from 'meshkit/plugin'
import { encodeBindingResponse, parseBindingRequest, responseSize } from './stun-wire.js'

export interface StunServerInit {
  host: string
  port: number
  /** Requests answered per second to one source IP (sustained). */
  perIpRate: number
  /** Requests one source IP may send at once above that rate. */
  perIpBurst: number
  /** Requests answered per second in total (burst: two seconds' worth). */
  globalRate: number
  /** Signs an attestation (see stun-wire.ts); undefined when this server cannot attest. */
  attest?: (transactionId: Uint8Array, ip: string, port: number) => Promise<Uint8Array | undefined>
  log: (message: string) => void
}

export interface StunServerStats {
  answered: number
  attested: number
  /** Datagrams dropped: not a well-formed binding request, or over a rate limit. */
  malformed: number
  limited: number
}

/** Source IPs whose rate is tracked at once (the least recently seen is forgotten first). */
const MAX_TRACKED_IPS = 10_000

export class StunServer {
  readonly stats: StunServerStats = { answered: 0, attested: 0, malformed: 0, limited: 0 }
  readonly #perIp: LruMap<string, TokenBucket>
  readonly #global: TokenBucket
  #closed = false

  private constructor(
    readonly socket: Socket,
    private readonly init: StunServerInit,
  ) {
    this.#perIp = new LruMap(MAX_TRACKED_IPS)
    this.#global = new TokenBucket(init.globalRate, init.globalRate * 2)
    socket.on('error', (err) => init.log(`stun socket: ${err.message}`))
    socket.on('message', (buf, rinfo) => this.#onMessage(buf, rinfo))
  }

  static async start(init: StunServerInit): Promise<StunServer> {
    const socket = createSocket('udp4')
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind(init.port, init.host, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    return new StunServer(socket, init)
  }

  address(): { address: string; port: number } | undefined {
    if (this.#closed) return undefined
    const a = this.socket.address()
    return { address: a.address, port: a.port }
  }

  #allowed(ip: string): boolean {
    let bucket = this.#perIp.get(ip)
    if (!bucket) {
      bucket = new TokenBucket(this.init.perIpRate, this.init.perIpBurst)
      this.#perIp.set(ip, bucket)
    }
    // the source's own bucket first: one flooding source cannot drain the global one
    return bucket.take() && this.#global.take()
  }

  #onMessage(buf: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed) return
    const request = rinfo.family === 'IPv4' ? parseBindingRequest(buf) : undefined
    if (!request) {
      this.stats.malformed++
      return
    }
    if (!this.#allowed(rinfo.address)) {
      this.stats.limited++
      return
    }
    const send = (reply: Buffer) => {
      if (this.#closed) return
      this.stats.answered++
      this.socket.send(reply, rinfo.port, rinfo.address, (err) => {
        if (err) this.init.log(`stun reply to ${rinfo.address}:${rinfo.port}: ${err.message}`)
      })
    }
    const plain = () => encodeBindingResponse(request.transactionId, rinfo.address, rinfo.port)
    if (!request.attest || !this.init.attest) {
      send(plain())
      return
    }
    this.init
      .attest(request.transactionId, rinfo.address, rinfo.port)
      .then((attestation) => {
        // never more bytes out than in: a request too small for the attestation gets the plain answer
        if (!attestation || responseSize(attestation.length) > request.size) {
          send(plain())
          return
        }
        this.stats.attested++
        send(encodeBindingResponse(request.transactionId, rinfo.address, rinfo.port, attestation))
      })
      .catch((err) => {
        this.init.log(`stun attestation: ${err instanceof Error ? err.message : String(err)}`)
        send(plain())
      })
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    this.#closed = true
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve())
      } catch {
        resolve()
      }
    })
  }
}
