import type { Datastore, Key } from 'interface-datastore'

/** Bounds on the provider records other peers store on this node (its own are never counted). */
export interface ProviderStoreLimits {
  /** Records in all. */
  maxRecords: number
  /** Records per key: a GET_PROVIDERS answer names at most this many providers. */
  maxPerKey: number
  /** Records one provider may hold. */
  maxPerPeer: number
}

export const PROVIDER_STORE_LIMITS: ProviderStoreLimits = {
  maxRecords: 10_000,
  maxPerKey: 32,
  maxPerPeer: 128,
}

/** kad-dht's provider records: `/dht/provider/<multihash base32>/<peer id>` (the default datastore prefix). */
export const PROVIDER_PREFIX = '/dht/provider/'

type Index = Map<string, Map<string, true>>

function indexAdd(index: Index, name: string, key: string): void {
  let keys = index.get(name)
  if (!keys) {
    keys = new Map()
    index.set(name, keys)
  }
  keys.delete(key)
  keys.set(key, true)
}

function indexDelete(index: Index, name: string, key: string): void {
  const keys = index.get(name)
  if (!keys) return
  keys.delete(key)
  if (keys.size === 0) index.delete(name)
}

const oldestOf = (keys: Map<string, true> | undefined) => keys?.keys().next().value

/**
 * A datastore for @libp2p/kad-dht that bounds the provider records it keeps for other peers (kad-dht
 * stores every ADD_PROVIDER it gets, for as long as `recordTtl`): per key, per provider and in all, the
 * least recently written record goes first when a new one needs room. O(1) per write; the records
 * already in a persistent datastore are indexed once, on the first write (oldest first, extras deleted).
 * Everything else goes straight to the wrapped datastore.
 */
export function limitProviderStore(
  inner: Datastore,
  self: string,
  limits: ProviderStoreLimits = PROVIDER_STORE_LIMITS,
): Datastore & { providerRecords(): number } {
  /** Every record of others, least recently written first. */
  const order = new Map<string, { cid: string; peer: string }>()
  const byKey: Index = new Map()
  const byPeer: Index = new Map()
  let ready: Promise<void> | undefined

  const parse = (key: string): { cid: string; peer: string } | undefined => {
    if (!key.startsWith(PROVIDER_PREFIX)) return undefined
    const [cid, peer, ...rest] = key.slice(PROVIDER_PREFIX.length).split('/')
    if (!cid || !peer || rest.length > 0) return undefined
    return { cid, peer }
  }

  const forget = (key: string): void => {
    const entry = order.get(key)
    if (!entry) return
    order.delete(key)
    indexDelete(byKey, entry.cid, key)
    indexDelete(byPeer, entry.peer, key)
  }

  const remember = (key: string, entry: { cid: string; peer: string }): void => {
    order.delete(key)
    order.set(key, entry)
    indexAdd(byKey, entry.cid, key)
    indexAdd(byPeer, entry.peer, key)
  }

  /** Evicts the oldest record of a full key, of a full provider, and while over the total. */
  const makeRoom = (entry: { cid: string; peer: string }): string[] => {
    const evicted: string[] = []
    const evict = (key: string | undefined) => {
      if (key === undefined) return
      forget(key)
      evicted.push(key)
    }
    while ((byKey.get(entry.cid)?.size ?? 0) >= limits.maxPerKey) evict(oldestOf(byKey.get(entry.cid)))
    while ((byPeer.get(entry.peer)?.size ?? 0) >= limits.maxPerPeer) evict(oldestOf(byPeer.get(entry.peer)))
    while (order.size >= limits.maxRecords) evict(order.keys().next().value)
    return evicted
  }

  const drop = async (keys: string[], KeyClass: new (k: string) => Key): Promise<void> => {
    for (const k of keys) await Promise.resolve(inner.delete(new KeyClass(k))).catch(() => {})
  }

  const load = async (KeyClass: new (k: string) => Key): Promise<void> => {
    const found: Array<{ key: string; at: number; entry: { cid: string; peer: string } }> = []
    for await (const { key, value } of inner.query({ prefix: PROVIDER_PREFIX.slice(0, -1) })) {
      const k = key.toString()
      const entry = parse(k)
      if (!entry || entry.peer === self) continue
      let at = 0
      let shift = 1
      for (const b of value.subarray(0, 8)) {
        at += (b & 0x7f) * shift
        shift *= 0x80
        if ((b & 0x80) === 0) break
      }
      found.push({ key: k, at, entry })
    }
    found.sort((a, b) => a.at - b.at)
    const extra: string[] = []
    for (const f of found) {
      extra.push(...makeRoom(f.entry))
      remember(f.key, f.entry)
    }
    await drop(extra, KeyClass)
  }

  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'providerRecords') return () => order.size
      if (prop === 'put') {
        return async (key: Key, value: Uint8Array, options?: unknown) => {
          const k = key.toString()
          const entry = parse(k)
          if (!entry || entry.peer === self) return target.put(key, value, options as never)
          const KeyClass = key.constructor as new (k: string) => Key
          ready ??= load(KeyClass).catch(() => {})
          await ready
          const evicted = order.has(k) ? [] : makeRoom(entry)
          remember(k, entry)
          await drop(evicted, KeyClass)
          return target.put(key, value, options as never)
        }
      }
      if (prop === 'delete') {
        return async (key: Key, options?: unknown) => {
          forget(key.toString())
          return target.delete(key, options as never)
        }
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  }) as Datastore & { providerRecords(): number }
}
