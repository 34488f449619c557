/** A member's own signed record (see member-record.ts), kept to pass it on. */
export interface MemberProof {
  /** The addresses as signed (all in this node's address scope, or the record is not kept). */
  addrs: string[]
  ts: number
  sig: string
}

/** A topic member as this node knows it. */
export interface KnownMember {
  /** Addresses this node may dial (already checked against its address scope). */
  addrs: string[]
  /**
   * When the member was last confirmed (ms since epoch): the time of its own claim or DHT record; for a
   * relayed member, the time the member signed its record (a relayer cannot make it younger).
   */
  lastSeen: number
  /** True when the member told us itself (or the DHT did); false when a third peer relayed it. */
  direct: boolean
  /** The member last said it is short of peers in this topic. */
  short: boolean
  /** Who told us: the member itself, the relaying peer, or `dht`. Dials on its word are charged to it. */
  source: string
  /** The member's signed record, when it has a valid one: only such members are passed on. */
  proof?: MemberProof
}

export interface RegistryLimits {
  /** Topic keys held (keys this node joined are not counted against it and never evicted). */
  maxKeys: number
  /** Members per key. */
  maxMembers: number
  /** Keys one peer may hold as a direct member. */
  maxKeysPerPeer: number
  /** How long a member stays known without news (ms). */
  ttl: number
  /**
   * How far a key is from this node (smaller: closer; e.g. a prefix of the XOR distance of the Kademlia
   * ids, see keyDistance()). With it, a full registry keeps the keys closest to the node: a new key
   * takes the place of the farthest one only when it is closer, and is refused otherwise, so that keys
   * this node is a rendezvous point for (the DHT leads members of those to it) are not pushed out by
   * whatever many peers happen to tell it. Without it, the least recently touched key goes.
   */
  distance?: (key: string) => number
}

/** Keys and their distances, the farthest found by one scan of a Float64Array (~µs for 4,096 keys). */
class Distances {
  #values = new Float64Array(64)
  readonly #keys: string[] = []
  readonly #index = new Map<string, number>()

  add(key: string, distance: number): void {
    if (this.#index.has(key)) return
    const i = this.#keys.length
    if (i === this.#values.length) {
      const grown = new Float64Array(i * 2)
      grown.set(this.#values)
      this.#values = grown
    }
    this.#values[i] = distance
    this.#keys.push(key)
    this.#index.set(key, i)
  }

  delete(key: string): void {
    const i = this.#index.get(key)
    if (i === undefined) return
    const last = this.#keys.length - 1
    this.#index.delete(key)
    if (i !== last) {
      const moved = this.#keys[last]
      this.#keys[i] = moved
      this.#values[i] = this.#values[last]
      this.#index.set(moved, i)
    }
    this.#keys.pop()
  }

  farthest(): string | undefined {
    const n = this.#keys.length
    if (n === 0) return undefined
    let best = 0
    const values = this.#values
    for (let i = 1; i < n; i++) if (values[i] > values[best]) best = i
    return this.#keys[best]
  }
}

/** What became of an add(). */
export type AddResult = 'added' | 'updated' | 'ignored' | 'refused'

/** The members of one key: direct and relayed ones apart, each map least recently refreshed first. */
class KeyMembers {
  readonly direct = new Map<string, KnownMember>()
  readonly relayed = new Map<string, KnownMember>()
  /** When a member was last added or refreshed (ms since epoch). */
  touched = 0
  /** The key's distance from this node (RegistryLimits.distance), 0 without one. */
  distance = 0

  get size(): number {
    return this.direct.size + this.relayed.size
  }

  get(id: string): KnownMember | undefined {
    return this.direct.get(id) ?? this.relayed.get(id)
  }
}

/**
 * Who is in which topic key, from member exchanges and DHT lookups. Every operation costs O(1) in the
 * number of keys (and at most O(maxMembers) for one key; a new key in a full registry O(maxKeys) with
 * `distance`): keys are kept least recently used first, keys this node joined ("pinned") apart and never
 * evicted; a full registry keeps the keys closest to the node (`distance`) or drops the least recently
 * used; per key, a relayed member is evicted before a
 * direct one, the least recently refreshed first. A peer holds at most `maxKeysPerPeer` keys as a
 * direct member, so one identity cannot fill the registry. Entries expire after `ttl` without news.
 * Non-members (e.g. bootstrap nodes) keep one too, which makes them rendezvous points.
 */
export class MemberRegistry {
  readonly #pinned = new Map<string, KeyMembers>()
  /** Keys this node did not join, least recently touched first. */
  readonly #lru = new Map<string, KeyMembers>()
  /** Direct memberships per peer id. */
  readonly #held = new Map<string, number>()
  /** The distances of the keys in #lru (with `distance`): the farthest is found by a scan of numbers. */
  readonly #far = new Distances()
  readonly #pins = new Set<string>()

  constructor(
    private readonly limits: RegistryLimits,
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

  /** Keys held, joined ones included. */
  get size(): number {
    return this.#pinned.size + this.#lru.size
  }

  /** Direct memberships `peerId` holds. */
  heldBy(peerId: string): number {
    return this.#held.get(peerId) ?? 0
  }

  /** Marks `key` as joined by this node: it is never evicted (until unpinned). */
  pin(key: string): void {
    this.#pins.add(key)
    const entry = this.#lru.get(key)
    if (entry) {
      this.#unlist(key)
      this.#pinned.set(key, entry)
    }
  }

  /** `key` is no longer joined: it becomes an ordinary (evictable) key. */
  unpin(key: string): void {
    this.#pins.delete(key)
    const entry = this.#pinned.get(key)
    if (!entry) return
    this.#pinned.delete(key)
    if (entry.size === 0) return
    this.#list(key, entry)
    this.#trimKeys()
  }

  /**
   * Records a member of `key` (see {@link KnownMember}). A relayed record never overrides a direct one,
   * except with the member's own newer signed record (a proof signed after the member last told us
   * itself): that one's addresses replace the direct member's (`updated`), so a member that moved is
   * reachable again before it can tell us itself; a relayed one is replaced only by a newer one.
   * `refused`: the peer holds `maxKeysPerPeer` keys already, or a relayed member found no room.
   */
  add(key: string, peerId: string, member: Omit<KnownMember, 'lastSeen'> & { lastSeen?: number }): AddResult {
    const now = this.now()
    const m: KnownMember = {
      ...member,
      addrs: [...member.addrs],
      lastSeen: member.direct ? now : (member.lastSeen ?? member.proof?.ts ?? now),
    }
    let entry = this.#entry(key)
    const existing = entry?.get(peerId)
    if (existing && entry) {
      if (existing.direct && !m.direct) {
        // a relayed copy of a direct member: keep the direct one, take a newer proof
        const moved = m.proof !== undefined && m.proof.ts > (existing.proof?.ts ?? existing.lastSeen)
        if (m.proof && (!existing.proof || m.proof.ts > existing.proof.ts)) existing.proof = m.proof
        // signed after the member last told us itself, with other addresses: it moved (e.g. reserved on
        // another relay when its relay died), and the addresses it told us may be dead: take the new ones
        if (!moved || m.addrs.length === 0 || m.addrs.join(' ') === existing.addrs.join(' ')) return 'ignored'
        existing.addrs = [...m.addrs]
        existing.source = m.source
        return 'updated'
      }
      if (!existing.direct && !m.direct && existing.lastSeen >= m.lastSeen) return 'ignored'
      if (!existing.direct && m.direct) {
        if (this.heldBy(peerId) >= this.limits.maxKeysPerPeer) return 'refused'
        entry.relayed.delete(peerId)
        this.#hold(peerId, 1)
      }
      const map = m.direct ? entry.direct : entry.relayed
      map.delete(peerId) // re-inserted: most recently refreshed last
      if (m.direct && !m.proof && existing.proof && existing.proof.addrs.join(' ') === m.addrs.join(' '))
        m.proof = existing.proof
      if (m.addrs.length === 0) m.addrs = existing.addrs
      map.set(peerId, m)
      this.#touch(key, entry, now)
      return 'updated'
    }
    if (m.direct && this.heldBy(peerId) >= this.limits.maxKeysPerPeer) return 'refused'
    if (!entry) {
      entry = new KeyMembers()
      entry.touched = now
      entry.distance = this.limits.distance?.(key) ?? 0
      if (this.#pins.has(key)) this.#pinned.set(key, entry)
      else {
        this.#list(key, entry)
        this.#trimKeys()
        if (!this.#lru.has(key)) return 'refused'
      }
    }
    if (entry.size >= this.limits.maxMembers) {
      this.#expire(entry, now)
      if (entry.size >= this.limits.maxMembers) {
        const victim = entry.relayed.keys().next()
        if (!victim.done) entry.relayed.delete(victim.value)
        else if (m.direct) this.#deleteDirect(entry, entry.direct.keys().next().value as string)
        else return 'refused' // all direct: a rumour never pushes out what members said themselves
      }
    }
    ;(m.direct ? entry.direct : entry.relayed).set(peerId, m)
    if (m.direct) this.#hold(peerId, 1)
    this.#touch(key, entry, now)
    return 'added'
  }

  /** The member of `key` known as `peerId` (live or not). */
  get(key: string, peerId: string): KnownMember | undefined {
    return (this.#pinned.get(key) ?? this.#lru.get(key))?.get(peerId)
  }

  /** Whether `peerId` is a live member of `key`. */
  has(key: string, peerId: string): boolean {
    const member = this.get(key, peerId)
    return member !== undefined && member.lastSeen >= this.now() - this.limits.ttl
  }

  remove(key: string, peerId: string): void {
    const entry = this.#pinned.get(key) ?? this.#lru.get(key)
    if (!entry) return
    if (entry.direct.has(peerId)) this.#deleteDirect(entry, peerId)
    entry.relayed.delete(peerId)
    if (entry.size === 0) this.#unlist(key)
  }

  /** Live members of `key`: direct ones first, each group most recently seen first. O(maxMembers log). */
  members(key: string): Array<[string, KnownMember]> {
    const entry = this.#pinned.get(key) ?? this.#lru.get(key)
    if (!entry) return []
    this.#expire(entry, this.now())
    if (entry.size === 0 && !this.#pins.has(key)) {
      this.#unlist(key)
      return []
    }
    const newest = (a: [string, KnownMember], b: [string, KnownMember]) => b[1].lastSeen - a[1].lastSeen
    return [...[...entry.direct].sort(newest), ...[...entry.relayed].sort(newest)]
  }

  #entry(key: string): KeyMembers | undefined {
    return this.#pinned.get(key) ?? this.#lru.get(key)
  }

  /** Moves an unpinned key to the most recently used end. */
  #touch(key: string, entry: KeyMembers, now: number): void {
    entry.touched = now
    if (this.#pinned.has(key)) return
    this.#lru.delete(key)
    this.#lru.set(key, entry)
  }

  /**
   * Drops keys whose every member expired (they sit at the least recently used end), then, while over
   * `maxKeys`, the farthest key from this node (with `distance`: O(maxKeys) numbers compared, only when
   * full) or the least recently used one (amortized O(1)). A key just added can be the one dropped: it
   * was refused.
   */
  #trimKeys(): void {
    const cutoff = this.now() - this.limits.ttl
    for (const [key, entry] of this.#lru) {
      if (entry.touched >= cutoff) break
      this.#dropKey(key, entry)
    }
    const room = Math.max(0, this.limits.maxKeys - this.#pinned.size)
    while (this.#lru.size > room) {
      const farthest = this.limits.distance ? this.#far.farthest() : undefined
      const key = farthest ?? (this.#lru.keys().next().value as string)
      this.#dropKey(key, this.#lru.get(key) as KeyMembers)
    }
  }

  /** Adds an unpinned key. */
  #list(key: string, entry: KeyMembers): void {
    this.#lru.set(key, entry)
    if (this.limits.distance) this.#far.add(key, entry.distance)
  }

  /** Removes an unpinned key. */
  #unlist(key: string): void {
    if (this.#lru.delete(key)) this.#far.delete(key)
  }

  #dropKey(key: string, entry: KeyMembers): void {
    for (const id of entry.direct.keys()) this.#hold(id, -1)
    this.#unlist(key)
  }

  /** Drops the members of one key that expired: at most `maxMembers` looked at. */
  #expire(entry: KeyMembers, now: number): void {
    const cutoff = now - this.limits.ttl
    for (const [id, m] of entry.direct) if (m.lastSeen < cutoff) this.#deleteDirect(entry, id)
    for (const [id, m] of entry.relayed) if (m.lastSeen < cutoff) entry.relayed.delete(id)
  }

  #deleteDirect(entry: KeyMembers, id: string): void {
    if (entry.direct.delete(id)) this.#hold(id, -1)
  }

  #hold(id: string, delta: number): void {
    const n = (this.#held.get(id) ?? 0) + delta
    if (n <= 0) this.#held.delete(id)
    else this.#held.set(id, n)
  }
}
