import type { Connection, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import { type Budget, type BudgetInit, LruMap, type PeerReputation, TokenBucket } from 'meshkit'
import type { Uint8ArrayList } from 'uint8arraylist'

/** kad-dht message types (dht.proto). */
export const KAD_MESSAGE = {
  PUT_VALUE: 0,
  GET_VALUE: 1,
  ADD_PROVIDER: 2,
  GET_PROVIDERS: 3,
  FIND_NODE: 4,
  PING: 5,
} as const

/**
 * What the DHT accepts from one peer, and from all of them, on top of @libp2p/kad-dht's own limits
 * (32 inbound streams per connection, 10 s per message). @libp2p/kad-dht reads messages of up to 4 MiB
 * and has no per-peer budget nor a bound on its provider store: these are Meshkit's.
 */
export interface KadLimits {
  /** Largest inbound DHT message (bytes). A larger length prefix resets the stream. */
  maxMessageBytes: number
  /** Inbound DHT streams: per peer (concurrency, rate) and globally. */
  streams: BudgetInit
  /** Inbound DHT messages (a stream may carry several): per peer (rate, bytes) and globally. */
  messages: BudgetInit
  /** ADD_PROVIDER messages: per peer and across all peers (burst, per second). */
  providers: { perPeer: { burst: number; perSecond: number }; global: { burst: number; perSecond: number } }
}

export const KAD_LIMITS: KadLimits = {
  maxMessageBytes: 16 * 1024,
  // kad-dht itself takes 32 inbound streams per connection (libp2p refuses the rest, unpenalized): the
  // per-peer concurrency sits above that, so that an honest client's burst of queries is never penalized
  streams: {
    ratePerSecond: 20,
    burst: 200,
    concurrency: 64,
    globalConcurrency: 256,
    globalRatePerSecond: 500,
  },
  messages: {
    ratePerSecond: 20,
    burst: 200,
    concurrency: 1_000_000,
    bytesPerMinute: 1024 * 1024,
    globalConcurrency: 1_000_000,
    globalRatePerSecond: 1000,
  },
  providers: { perPeer: { burst: 128, perSecond: 128 / 600 }, global: { burst: 1024, perSecond: 10 } },
}

/** Reads protobuf fields 1 (type, varint) and 2 (key, bytes) of a kad message; undefined if unparsable. */
export function kadMessageType(body: Uint8Array): number | undefined {
  let i = 0
  const varint = (): number | undefined => {
    let value = 0
    let shift = 1
    for (let n = 0; n < 10 && i < body.length; n++) {
      const b = body[i++]
      value += (b & 0x7f) * shift
      if ((b & 0x80) === 0) return value
      shift *= 0x80
    }
    return undefined
  }
  while (i < body.length) {
    const tag = varint()
    if (tag === undefined) return undefined
    const field = Math.floor(tag / 8)
    const wire = tag % 8
    if (wire === 0) {
      const v = varint()
      if (v === undefined) return undefined
      if (field === 1) return v
    } else if (wire === 2) {
      const len = varint()
      if (len === undefined || i + len > body.length) return undefined
      i += len
    } else if (wire === 1) i += 8
    else if (wire === 5) i += 4
    else return undefined
  }
  return 0 // proto3: a missing enum field is its zero value (PUT_VALUE)
}

/**
 * Splits a byte stream into length-prefixed messages as they arrive, without buffering more than one
 * message: `onMessage` sees each complete message (or undefined for one over `max`, whose length alone
 * condemns it) and returns a refusal reason, or undefined to let it pass.
 */
export class FrameReader {
  #length = 0
  #shift = 1
  #lengthBytes = 0
  #body?: Uint8Array
  #filled = 0

  constructor(
    private readonly max: number,
    private readonly onMessage: (body: Uint8Array | undefined, length: number) => string | undefined,
  ) {}

  /** Feeds a chunk; returns the first refusal, or undefined. */
  push(chunk: Uint8Array): string | undefined {
    let i = 0
    while (i < chunk.length) {
      if (this.#body === undefined) {
        const b = chunk[i++]
        this.#length += (b & 0x7f) * this.#shift
        this.#shift *= 0x80
        this.#lengthBytes++
        if (b & 0x80) {
          if (this.#lengthBytes >= 4) return this.onMessage(undefined, Number.POSITIVE_INFINITY)
          continue
        }
        if (this.#length > this.max) return this.onMessage(undefined, this.#length)
        this.#body = new Uint8Array(this.#length)
        this.#filled = 0
        if (this.#length === 0) {
          const refused = this.#complete()
          if (refused) return refused
        }
        continue
      }
      const take = Math.min(chunk.length - i, this.#body.length - this.#filled)
      this.#body.set(chunk.subarray(i, i + take), this.#filled)
      this.#filled += take
      i += take
      if (this.#filled === this.#body.length) {
        const refused = this.#complete()
        if (refused) return refused
      }
    }
    return undefined
  }

  #complete(): string | undefined {
    const body = this.#body!
    this.#body = undefined
    this.#length = 0
    this.#shift = 1
    this.#lengthBytes = 0
    return this.onMessage(body, body.length)
  }
}

export interface KadGuardInit {
  streams: Budget
  messages: Budget
  reputation: PeerReputation
  limits?: KadLimits
  now?: () => number
}

/**
 * Guards the DHT's inbound protocol: each stream is admitted by a per-peer/global budget; every message
 * is framed as it arrives, before @libp2p/kad-dht reads it (a listener registered first, which stops
 * the chunk from reaching kad-dht when it refuses): too long, over the peer's message or byte budget, or
 * an ADD_PROVIDER over the provider-record budget resets the stream. Wrap the handler kad-dht registers
 * with {@link KadGuard.wrap}.
 */
export class KadGuard {
  readonly #limits: KadLimits
  readonly #peers: LruMap<string, TokenBucket>
  readonly #global: TokenBucket
  readonly #now: () => number
  /** Streams refused, messages refused, by reason (for tests and logs). */
  readonly refused = new Map<string, number>()

  constructor(private readonly init: KadGuardInit) {
    this.#limits = init.limits ?? KAD_LIMITS
    this.#now = init.now ?? Date.now
    this.#peers = new LruMap(4096)
    const g = this.#limits.providers.global
    this.#global = new TokenBucket(g.perSecond, g.burst, this.#now)
  }

  #count(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1)
  }

  /** An ADD_PROVIDER of `peer`: true when it may store a provider record now. */
  #provide(peer: string): boolean {
    let bucket = this.#peers.get(peer)
    if (!bucket) {
      const p = this.#limits.providers.perPeer
      bucket = new TokenBucket(p.perSecond, p.burst, this.#now)
      this.#peers.set(peer, bucket)
    }
    if (bucket.available < 1) {
      this.init.reputation.penalize(peer, 'budget', 'kad: ADD_PROVIDER over its rate')
      this.#count('providers-peer')
      return false
    }
    if (!this.#global.take()) {
      this.#count('providers-global')
      return false
    }
    return bucket.take()
  }

  /** Decides on one message of `peer`; a refusal reason or undefined. */
  #message(peer: string, body: Uint8Array | undefined, length: number): string | undefined {
    if (body === undefined) {
      this.init.reputation.penalize(peer, 'abuse', `kad: a ${length}-byte message`)
      this.#count('too-long')
      return `message of ${length} bytes (max ${this.#limits.maxMessageBytes})`
    }
    const ticket = this.init.messages.admit(peer)
    if (!ticket.ok) {
      this.#count(`messages-${ticket.reason}`)
      return `over the message budget (${ticket.reason})`
    }
    ticket.release()
    if (!this.init.messages.spend(peer, body.length + 4)) {
      this.#count('messages-bytes')
      return 'over the byte budget'
    }
    if (kadMessageType(body) === KAD_MESSAGE.ADD_PROVIDER && !this.#provide(peer))
      return 'over the provider record budget'
    return undefined
  }

  /** The kad-dht stream handler, guarded. */
  wrap(handler: StreamHandler): StreamHandler {
    return async (stream: Stream, connection: Connection) => {
      const peer = connection.remotePeer.toString()
      const ticket = this.init.streams.admit(peer)
      if (!ticket.ok) {
        this.#count(`streams-${ticket.reason}`)
        stream.abort(new Error(`kad: over budget (${ticket.reason})`))
        return
      }
      const frames = new FrameReader(this.#limits.maxMessageBytes, (body, length) =>
        this.#message(peer, body, length),
      )
      let refused = false
      const tap = (evt: Event & { data?: Uint8Array | Uint8ArrayList }) => {
        if (refused) {
          evt.stopImmediatePropagation()
          return
        }
        const data = evt.data
        if (!data) return
        const chunk = data instanceof Uint8Array ? data : data.subarray()
        const reason = frames.push(chunk)
        if (reason === undefined) return
        refused = true
        evt.stopImmediatePropagation()
        stream.abort(new Error(`kad: ${reason}`))
      }
      stream.addEventListener('message', tap as never)
      try {
        await handler(stream, connection)
      } finally {
        stream.removeEventListener('message', tap as never)
        ticket.release()
      }
    }
  }

  /**
   * A registrar whose `handle()` guards the handler of `protocol` (the DHT's): give it to kad-dht in
   * place of the node's registrar. Every other call goes to the node's registrar.
   */
  registrar<R extends { handle(p: string, h: StreamHandler, o?: StreamHandlerOptions): Promise<void> }>(
    registrar: R,
    protocol: string,
  ): R {
    return new Proxy(registrar, {
      get: (target, prop) => {
        if (prop === 'handle') {
          return (p: string, handler: StreamHandler, options?: StreamHandlerOptions) =>
            target.handle(p, p === protocol ? this.wrap(handler) : handler, options)
        }
        const value = Reflect.get(target, prop, target)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
  }
}
