import type { AbortOptions } from '@libp2p/interface'
import { type Batch, type Datastore, Key, type KeyQuery, type Pair, type Query } from 'interface-datastore'

/** Where @libp2p/peer-store keeps one record per peer. */
const PEERS_PREFIX = '/peers/'

export interface PeerRecordCacheInit {
  /**
   * Peer records kept in memory (least recently used go first; a record with an unwritten `updated`
   * stamp is written before it goes).
   * @default 1024
   */
  maxRecords?: number
  /**
   * Bytes of records kept in memory at most (a record larger than a tenth of it is not kept).
   * @default 4194304 (4 MiB)
   */
  maxBytes?: number
  /**
   * How long a record's stored `updated` stamp may lag behind: a rewrite that changes nothing but that
   * stamp is kept in memory until the stored one is this old (or until a query, a close or eviction).
   * @default 300000 (5 minutes; libp2p expires a peer only after 6 hours without an update)
   */
  stampLagMs?: number
  /** Clock, for tests. @default Date.now */
  now?: () => number
}

interface Entry {
  value: Uint8Array
  /** `value` differs from what is stored only in its `updated` stamp. */
  dirty: boolean
  /** When this record was last written to the datastore below. */
  writtenAt: number
}

/**
 * A datastore layer for libp2p's peer store: it serves peer records (`/peers/<cid>`) from a bounded
 * memory cache and drops rewrites that change nothing but the record's `updated` stamp.
 *
 * Why: libp2p merges `{ protocols: [p] }` into the remote peer's record for every stream opened or
 * accepted (connection monitor pings included), and the peer store writes the record each time, because
 * it stamps `updated` first. With LevelDB below, that was a read and a write on the libuv pool per stream
 * on both ends (21 % of an idle node's main-thread work). Records that really change are written at
 * once; only the stamp lags, by at most `stampLagMs`, and is written before any query (which would read
 * it), on eviction and on close. Every other key passes straight through.
 */
export class PeerRecordCache implements Datastore {
  readonly #inner: Datastore
  readonly #max: number
  readonly #maxBytes: number
  #bytes = 0
  readonly #lagMs: number
  readonly #now: () => number
  readonly #records = new Map<string, Entry>()
  /** Reads of the datastore below in flight, per key: a write or delete meanwhile makes the read stale. */
  readonly #reads = new Map<string, object>()
  /** Writes of peer records to the datastore below in flight, per key, so that they land in order. */
  readonly #writes = new Map<string, Promise<unknown>>()

  constructor(inner: Datastore, init: PeerRecordCacheInit = {}) {
    this.#inner = inner
    this.#max = init.maxRecords ?? 1024
    this.#maxBytes = init.maxBytes ?? 4 * 1024 * 1024
    this.#lagMs = init.stampLagMs ?? 300_000
    this.#now = init.now ?? Date.now
    if (!(this.#max > 0)) throw new RangeError(`maxRecords must be > 0 (got ${this.#max})`)
  }

  /** Records held in memory, their bytes, and how many of them carry a stamp not yet written. */
  get stats(): { records: number; bytes: number; unwritten: number } {
    let unwritten = 0
    for (const e of this.#records.values()) if (e.dirty) unwritten++
    return { records: this.#records.size, bytes: this.#bytes, unwritten }
  }

  async get(key: Key, options?: AbortOptions): Promise<Uint8Array> {
    const k = key.toString()
    if (!k.startsWith(PEERS_PREFIX)) return this.#inner.get(key, options)
    const hit = this.#touch(k)
    if (hit) return hit.value
    const token = {}
    this.#reads.set(k, token)
    try {
      const value = await this.#inner.get(key, options)
      // a put or delete of this key while we read: what we read may be older than what is now stored
      if (this.#reads.get(k) === token) await this.#remember(k, { value, dirty: false, writtenAt: 0 })
      return value
    } finally {
      if (this.#reads.get(k) === token) this.#reads.delete(k)
    }
  }

  async has(key: Key, options?: AbortOptions): Promise<boolean> {
    const k = key.toString()
    if (k.startsWith(PEERS_PREFIX) && this.#records.has(k)) return true
    return this.#inner.has(key, options)
  }

  async put(key: Key, value: Uint8Array, options?: AbortOptions): Promise<Key> {
    const k = key.toString()
    if (!k.startsWith(PEERS_PREFIX)) return this.#inner.put(key, value, options)
    this.#reads.delete(k)
    const now = this.#now()
    const held = this.#touch(k)
    if (held && now - held.writtenAt < this.#lagMs && sameButStamp(held.value, value)) {
      this.#bytes += value.byteLength - held.value.byteLength
      held.value = value
      held.dirty = true
      return key
    }
    // forget what we hold first: should the write fail, the next read goes to the datastore
    this.#forget(k)
    await this.#write(k, value, options)
    // a read that started while we wrote may have read the older record: it must not be kept
    this.#reads.delete(k)
    await this.#remember(k, { value, dirty: false, writtenAt: now })
    return key
  }

  async delete(key: Key, options?: AbortOptions): Promise<void> {
    const k = key.toString()
    if (k.startsWith(PEERS_PREFIX)) {
      this.#forget(k)
      await this.#writes.get(k)?.catch(() => {})
    }
    await this.#inner.delete(key, options)
  }

  async *putMany(source: Iterable<Pair> | AsyncIterable<Pair>, options?: AbortOptions): AsyncGenerator<Key> {
    for await (const { key, value } of source) yield this.put(key, value, options)
  }

  async *getMany(source: Iterable<Key> | AsyncIterable<Key>, options?: AbortOptions): AsyncGenerator<Pair> {
    for await (const key of source) yield { key, value: await this.get(key, options) }
  }

  async *deleteMany(source: Iterable<Key> | AsyncIterable<Key>, options?: AbortOptions): AsyncGenerator<Key> {
    for await (const key of source) {
      await this.delete(key, options)
      yield key
    }
  }

  batch(): Batch {
    const inner = this.#inner.batch()
    const touched = new Set<string>()
    return {
      put: (key, value) => {
        touched.add(key.toString())
        inner.put(key, value)
      },
      delete: (key) => {
        touched.add(key.toString())
        inner.delete(key)
      },
      commit: async (options) => {
        // what the batch writes wins over what we hold: forget those records before and after it lands
        for (const k of touched) this.#forget(k)
        await Promise.all([...touched].map((k) => this.#writes.get(k)?.catch(() => {})))
        await inner.commit(options)
        for (const k of touched) this.#forget(k)
      },
    }
  }

  async *query(query: Query, options?: AbortOptions): AsyncGenerator<Pair> {
    if (mayCoverPeers(query.prefix)) await this.flush(options)
    yield* this.#inner.query(query, options)
  }

  async *queryKeys(query: KeyQuery, options?: AbortOptions): AsyncGenerator<Key> {
    yield* this.#inner.queryKeys(query, options)
  }

  /** Writes every record whose `updated` stamp was kept in memory only. */
  async flush(options?: AbortOptions): Promise<void> {
    for (const [k, e] of [...this.#records]) {
      if (!e.dirty) continue
      const value = e.value
      await this.#write(k, value, options)
      // unless it was rewritten or dropped meanwhile, what we hold is now what is stored
      if (this.#records.get(k) === e && e.value === value) {
        e.dirty = false
        e.writtenAt = this.#now()
      }
    }
  }

  /** Writes the unwritten stamps, then closes the datastore below (when it can be closed). */
  async close(): Promise<void> {
    await this.flush()
    this.#records.clear()
    this.#bytes = 0
    await (this.#inner as { close?: () => Promise<void> }).close?.()
  }

  #touch(k: string): Entry | undefined {
    const e = this.#records.get(k)
    if (e) {
      this.#records.delete(k)
      this.#records.set(k, e)
    }
    return e
  }

  #forget(k: string): void {
    this.#reads.delete(k)
    const e = this.#records.get(k)
    if (e) {
      this.#records.delete(k)
      this.#bytes -= e.value.byteLength
    }
  }

  async #remember(k: string, entry: Entry): Promise<void> {
    this.#forget(k)
    if (entry.value.byteLength > this.#maxBytes / 10) return
    this.#records.set(k, entry)
    this.#bytes += entry.value.byteLength
    while (this.#records.size > this.#max || this.#bytes > this.#maxBytes) {
      const [oldest, e] = this.#records.entries().next().value as [string, Entry]
      this.#forget(oldest)
      // its stamp is written before it goes, unless the record was rewritten or dropped meanwhile
      if (e.dirty && !this.#records.has(oldest)) await this.#write(oldest, e.value)
    }
  }

  /** Writes a peer record after any earlier write of the same key has landed. */
  async #write(k: string, value: Uint8Array, options?: AbortOptions): Promise<void> {
    const before = this.#writes.get(k)
    const mine = (async () => {
      if (before) await before.catch(() => {})
      await this.#inner.put(new Key(k), value, options)
    })()
    this.#writes.set(k, mine)
    try {
      await mine
    } finally {
      if (this.#writes.get(k) === mine) this.#writes.delete(k)
    }
  }
}

/** Whether a query with this prefix can return peer records. */
function mayCoverPeers(prefix: string | undefined): boolean {
  if (prefix == null || prefix === '' || prefix === '/') return true
  return PEERS_PREFIX.startsWith(prefix) || prefix.startsWith(PEERS_PREFIX)
}

/**
 * Whether two encoded peer records are the same but for their `updated` stamp: field 8 (a varint), the
 * last field @libp2p/peer-store's protobuf writes. Anything that does not parse that way counts as
 * different, so it is written.
 */
export function sameButStamp(a: Uint8Array, b: Uint8Array): boolean {
  const ea = stampStart(a)
  const eb = stampStart(b)
  if (ea < 0 || eb < 0 || ea !== eb) return false
  for (let i = 0; i < ea; i++) if (a[i] !== b[i]) return false
  return true
}

/** Offset of the trailing `updated` field (tag 0x40 + varint), or -1 when the record does not end in one. */
function stampStart(buf: Uint8Array): number {
  let i = 0
  let last = -1
  while (i < buf.length) {
    const start = i
    const tag = readVarint(buf, i)
    if (tag == null) return -1
    i = tag.next
    const wire = tag.value & 7
    if (wire === 0) {
      const v = readVarint(buf, i)
      if (v == null) return -1
      i = v.next
    } else if (wire === 1) i += 8
    else if (wire === 5) i += 4
    else if (wire === 2) {
      const len = readVarint(buf, i)
      if (len == null) return -1
      i = len.next + len.value
    } else return -1
    if (i > buf.length) return -1
    last = tag.value === 0x40 ? start : -1
  }
  return last
}

function readVarint(buf: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0
  let scale = 1
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const byte = buf[i] as number
    value += (byte & 0x7f) * scale
    if (byte < 0x80) return { value, next: i + 1 }
    scale *= 128
  }
  return undefined
}
