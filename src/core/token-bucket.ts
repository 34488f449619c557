/**
 * A token bucket: `burst` tokens at most, refilled at `perSecond`. O(1) per call, no timers: the refill
 * is computed from the time elapsed since the last call.
 */
export class TokenBucket {
  #tokens: number
  #at: number

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.#tokens = burst
    this.#at = now()
  }

  /** Tokens available now. */
  get available(): number {
    this.#refill()
    return this.#tokens
  }

  /** Takes `n` tokens when there are enough; returns false (taking none) otherwise. */
  take(n = 1): boolean {
    this.#refill()
    if (this.#tokens < n) return false
    this.#tokens -= n
    return true
  }

  /** Takes up to `n` tokens; returns how many it took. */
  takeUpTo(n: number): number {
    this.#refill()
    const taken = Math.max(0, Math.min(n, Math.floor(this.#tokens)))
    this.#tokens -= taken
    return taken
  }

  #refill(): void {
    const now = this.now()
    const elapsed = now - this.#at
    if (elapsed > 0) {
      this.#tokens = Math.min(this.burst, this.#tokens + (elapsed / 1000) * this.perSecond)
      this.#at = now
    }
  }
}

/**
 * A Map bounded to `max` entries that forgets the least recently used one first (get/set refresh an
 * entry). For per-peer state that a peer with many identities must not grow without bound.
 */
export class LruMap<K, V> {
  readonly #map = new Map<K, V>()

  constructor(readonly max: number) {
    if (!(max > 0)) throw new RangeError(`max must be > 0 (got ${max})`)
  }

  get size(): number {
    return this.#map.size
  }

  get(key: K): V | undefined {
    const value = this.#map.get(key)
    if (value !== undefined) {
      this.#map.delete(key)
      this.#map.set(key, value)
    }
    return value
  }

  /** Reads without refreshing the entry. */
  peek(key: K): V | undefined {
    return this.#map.get(key)
  }

  has(key: K): boolean {
    return this.#map.has(key)
  }

  set(key: K, value: V): this {
    this.#map.delete(key)
    this.#map.set(key, value)
    if (this.#map.size > this.max) this.#map.delete(this.#map.keys().next().value as K)
    return this
  }

  delete(key: K): boolean {
    return this.#map.delete(key)
  }

  clear(): void {
    this.#map.clear()
  }

  entries(): IterableIterator<[K, V]> {
    return this.#map.entries()
  }

  keys(): IterableIterator<K> {
    return this.#map.keys()
  }

  values(): IterableIterator<V> {
    return this.#map.values()
  }
}
