/** A topic member as this node knows it. */
export interface KnownMember {
  addrs: string[]
  /** When the member was last confirmed (ms since epoch). */
  lastSeen: number
  /** True when the member told us itself (or the DHT did); false when a third peer relayed it. */
  direct: boolean
  /** The member last said it is short of peers in this topic. */
  short: boolean
}

/**
 * Who is in which topic key, from member exchanges and DHT lookups. Bounded: at most `maxKeys` keys
 * and `maxMembers` members per key (oldest dropped), entries expire after `ttl` unless seen again.
 * Non-members (e.g. bootstrap nodes) keep one too, which makes them rendezvous points.
 */
export class MemberRegistry {
  readonly #keys = new Map<string, Map<string, KnownMember>>()

  constructor(
    private readonly limits: { maxKeys: number; maxMembers: number; ttl: number },
    private readonly now: () => number = Date.now,
  ) {}

  /** How long a member stays known without news (ms). */
  get ttl(): number {
    return this.limits.ttl
  }

  /** Changes how long members stay known without news (applies to members already known, too). */
  setTtl(ms: number): void {
    if (!(ms > 0)) throw new RangeError(`ttl must be > 0 ms (got ${ms})`)
    this.limits.ttl = ms
  }

  /** Records a member; returns true when it was not known for this key before. */
  add(key: string, peerId: string, addrs: readonly string[], direct: boolean, short = false): boolean {
    let members = this.#keys.get(key)
    if (!members) {
      if (this.#keys.size >= this.limits.maxKeys) this.#evictKey()
      members = new Map()
      this.#keys.set(key, members)
    }
    const existing = members.get(peerId)
    if (existing) {
      // a relayed rumour never overrides what the member said itself
      if (!direct && existing.direct) return false
      existing.lastSeen = this.now()
      existing.direct ||= direct
      existing.short = short
      if (addrs.length > 0) existing.addrs = [...addrs]
      return false
    }
    if (members.size >= this.limits.maxMembers) this.#evictMember(members)
    members.set(peerId, { addrs: [...addrs], lastSeen: this.now(), direct, short })
    return true
  }

  /** Whether `peerId` is a live member of `key`. */
  has(key: string, peerId: string): boolean {
    const member = this.#keys.get(key)?.get(peerId)
    return member !== undefined && member.lastSeen >= this.now() - this.limits.ttl
  }

  remove(key: string, peerId: string): void {
    const members = this.#keys.get(key)
    members?.delete(peerId)
    if (members?.size === 0) this.#keys.delete(key)
  }

  /** Live members of `key`, most recently seen first. */
  members(key: string): Array<[string, KnownMember]> {
    const members = this.#keys.get(key)
    if (!members) return []
    const cutoff = this.now() - this.limits.ttl
    for (const [id, m] of members) if (m.lastSeen < cutoff) members.delete(id)
    return [...members].sort(
      (a, b) => Number(b[1].direct) - Number(a[1].direct) || b[1].lastSeen - a[1].lastSeen,
    )
  }

  get size(): number {
    return this.#keys.size
  }

  #evictKey(): void {
    let oldestKey: string | undefined
    let oldest = Number.POSITIVE_INFINITY
    for (const [key, members] of this.#keys) {
      const newest = Math.max(...[...members.values()].map((m) => m.lastSeen))
      if (newest < oldest) {
        oldest = newest
        oldestKey = key
      }
    }
    if (oldestKey !== undefined) this.#keys.delete(oldestKey)
  }

  #evictMember(members: Map<string, KnownMember>): void {
    let oldestId: string | undefined
    let oldest = Number.POSITIVE_INFINITY
    for (const [id, m] of members) {
      const rank = m.lastSeen - (m.direct ? 0 : 1e12)
      if (rank < oldest) {
        oldest = rank
        oldestId = id
      }
    }
    if (oldestId !== undefined) members.delete(oldestId)
  }
}
