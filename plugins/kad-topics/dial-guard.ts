import { LruMap, TokenBucket } from 'meshkit/plugin'

export interface DialGuardLimits {
  /** Dials one source's word (a relaying peer, a member about itself, the DHT) may cause: burst, per second. */
  perSource: { burst: number; perSecond: number }
  /** Dials on peers' words across all sources: burst, per second. */
  global: { burst: number; perSecond: number }
  /** First wait after a failed dial of a member or an address (ms); doubles per failure. */
  backoffInitial: number
  /** Longest wait (ms). */
  backoffMax: number
  /** Sources, members and addresses remembered (each least recently used first out). */
  maxTracked: number
}

export const DIAL_GUARD_DEFAULTS: DialGuardLimits = {
  // a rendezvous point's word legitimately fills a node's topics: a few dozen dials, then one a second
  perSource: { burst: 32, perSecond: 1 },
  global: { burst: 64, perSecond: 4 },
  backoffInitial: 2_000,
  backoffMax: 300_000,
  maxTracked: 4096,
}

interface Backoff {
  failures: number
  until: number
}

/** An address without its `/p2p/<id>` tail: the endpoint a failure is charged to. */
const endpoint = (address: string) => address.replace(/\/p2p\/[^/]+$/, '')

/**
 * Bounds the dials other peers' words make this node do (topic members they named, DHT provider records):
 * a token bucket per source and one for all of them, and a backoff per member and per address that
 * doubles with each failed dial (from `backoffInitial` up to `backoffMax`) and resets on success. A
 * victim's address named under a thousand fresh peer ids is dialled once, then less and less often.
 */
export class DialGuard {
  readonly #sources: LruMap<string, TokenBucket>
  readonly #global: TokenBucket
  readonly #members: LruMap<string, Backoff>
  readonly #addrs: LruMap<string, Backoff>

  constructor(
    private readonly limits: DialGuardLimits = DIAL_GUARD_DEFAULTS,
    private readonly now: () => number = Date.now,
  ) {
    this.#sources = new LruMap(limits.maxTracked)
    this.#members = new LruMap(limits.maxTracked)
    this.#addrs = new LruMap(limits.maxTracked)
    this.#global = new TokenBucket(limits.global.perSecond, limits.global.burst, now)
  }

  /** Whether `member` is backed off after failed dials. */
  backedOff(member: string): boolean {
    return (this.#members.peek(member)?.until ?? 0) > this.now()
  }

  /** The addresses of `addrs` not backed off. */
  usable(addrs: readonly string[]): string[] {
    const now = this.now()
    return addrs.filter((a) => (this.#addrs.peek(endpoint(a))?.until ?? 0) <= now)
  }

  /** Takes one dial from `source`'s budget and the global one; false (nothing taken) when either is spent. */
  take(source: string): boolean {
    let bucket = this.#sources.get(source)
    if (!bucket) {
      bucket = new TokenBucket(this.limits.perSource.perSecond, this.limits.perSource.burst, this.now)
      this.#sources.set(source, bucket)
    }
    if (bucket.available < 1) return false
    if (!this.#global.take()) return false
    return bucket.take()
  }

  /** A dial of `member` at `addrs` failed: both back off longer. */
  failed(member: string, addrs: readonly string[]): void {
    this.#fail(this.#members, member)
    for (const a of addrs) this.#fail(this.#addrs, endpoint(a))
  }

  /** A dial of `member` succeeded (at `addrs`, or one of them): their backoff ends. */
  succeeded(member: string, addrs: readonly string[] = []): void {
    this.#members.delete(member)
    for (const a of addrs) this.#addrs.delete(endpoint(a))
  }

  /**
   * `member` is at other addresses now (it moved, e.g. to another relay): the backoff it earned at the
   * old ones ends; each address keeps its own.
   */
  moved(member: string): void {
    this.#members.delete(member)
  }

  #fail(map: LruMap<string, Backoff>, key: string): void {
    const failures = (map.get(key)?.failures ?? 0) + 1
    const wait = Math.min(
      this.limits.backoffMax,
      this.limits.backoffInitial * 2 ** Math.min(failures - 1, 30),
    )
    map.set(key, { failures, until: this.now() + wait })
  }
}
