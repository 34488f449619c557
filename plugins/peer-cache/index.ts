import { constants } from 'node:fs'
import { lstat, open, rename, unlink } from 'node:fs/promises'
import { isIPv4 } from 'node:net'
import { dirname, isAbsolute, join } from 'node:path'
import type { Connection, IdentifyResult, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import {
  type BootstrapSource,
  definePlugin,
  durationSchema,
  type Logger,
  makeDir,
  sweepTempFiles,
  tempFileFor,
  z,
} from 'meshkit/plugin'

/** The priority of the peer cache among bootstrap sources: first, before static peers (20) and DNS seeds (30). */
export const PEER_CACHE_PRIORITY = 10

/** The cache file's name inside the data dir when `file` is not set. */
export const PEER_CACHE_FILE = 'peer-cache.json'

/** A cache file larger than this is not read (it is treated as corrupt and kept aside). */
export const MAX_CACHE_FILE_BYTES = 4 * 1024 * 1024

const FORMAT_VERSION = 1

const options = z
  .strictObject({
    /** The cache file; a relative path is taken from the data dir. @default '<dataDir>/peer-cache.json' */
    file: z.string().min(1).optional(),
    /** The most peers kept; the most useful stay (see `comparePeers`). @default 100 */
    maxPeers: z.number().int().positive().max(10_000).default(100),
    /** The most addresses kept per peer, the last one that worked first. @default 8 */
    maxAddressesPerPeer: z.number().int().positive().max(64).default(8),
    /** The file is written at most once per this interval (and on stop). @default '1s' */
    flushInterval: durationSchema("'1s'").default(1_000),
  })
  .prefault({})

type Options = z.output<typeof options>

/** One remembered peer, as kept in memory and in the file. */
export interface CachedPeer {
  /** The peer id. */
  id: string
  /**
   * Addresses this node dialled the peer at successfully itself, without `/p2p/<id>`, the last one that
   * worked first (never what a peer said about itself, nor an inbound connection's source address).
   */
  addrs: string[]
  /** Dials of this node that connected to the peer. */
  successes: number
  /** Dials to the peer that did not connect. */
  failures: number
  /** When the peer was last connected (ms since the epoch). */
  lastSeen: number
  /** When a dial to the peer last failed (ms since the epoch). */
  lastFailure?: number
  /** Failed dials since the last one that worked: the peer is not offered again for a while (backoff). */
  streak?: number
  /** How long the node was connected to the peer in all (ms): what makes a peer worth keeping. */
  uptime?: number
  /**
   * Addresses the peer said it listens on (identify), for a peer that connected to this node but was
   * never dialled by it: unverified, in `network.addressScope` only, offered after every peer with
   * `addrs` and at most for half of the cache. A dial of ours that reaches the peer moves the address
   * that worked into `addrs`.
   */
  heard?: string[]
}

/** The peer cache's API (`node.api('peer-cache')`): a bootstrap source plus a look at the cache. */
export interface PeerCacheApi extends BootstrapSource {
  /** The cached peers, best first. */
  peers(): CachedPeer[]
  /** Writes the cache now if it changed (it is written on its own at most once per `flushInterval`). */
  flush(): Promise<void>
  /** The cache file's path. */
  readonly file: string
}

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const time = z.number().min(0).max(8.64e15)
const entrySchema = z.object({
  id: z.string().min(1).max(200),
  addrs: z.array(z.string().max(2048)).max(1000),
  successes: count,
  failures: count,
  lastSeen: time,
  lastFailure: time.optional(),
  streak: count.optional(),
  uptime: time.optional(),
  heard: z.array(z.string().max(2048)).max(1000).optional(),
})
const fileSchema = z.object({ version: z.literal(FORMAT_VERSION), peers: z.array(z.unknown()).max(100_000) })

/** The address without a trailing `/p2p/<id>` (relay addresses keep the relay's id). */
function stripPeer(address: string, id: string): string {
  const suffix = `/p2p/${id}`
  return address.endsWith(suffix) ? address.slice(0, -suffix.length) : address
}

/** Whether a multiaddr string parses and is worth dialling (not 0.0.0.0 or ::). */
function dialable(address: string): boolean {
  if (!address.startsWith('/')) return false
  try {
    const components = multiaddr(address).getComponents()
    if (components.length === 0) return false
    const host = components[0]
    return !(host.name === 'ip4' && host.value === '0.0.0.0') && !(host.name === 'ip6' && host.value === '::')
  } catch {
    return false
  }
}

function validPeerId(id: string): boolean {
  try {
    return peerIdFromString(id).toString() === id
  } catch {
    return false
  }
}

/** True when a dial failed after the peer was last seen: it goes behind the peers that still work. */
const failing = (p: CachedPeer) => (p.lastFailure ?? 0) > p.lastSeen

/** The IP address a multiaddr string starts with, if any. */
function ipOfAddress(address: string): string | undefined {
  return /^\/ip[46]\/([^/]+)/.exec(address)?.[1]
}

/** A peer known only by what it said of itself: no dial of ours has reached it yet. */
const unverified = (p: CachedPeer) => p.addrs.length === 0

/** The addresses to dial a peer at: those that worked for this node, else those it said it listens on. */
const dialAddresses = (p: CachedPeer) => (p.addrs.length > 0 ? p.addrs : (p.heard ?? []))

/**
 * How useful a peer has been: dials of ours that reached it (up to 50) and time spent connected (4
 * points per doubling of minutes), less 2 per failed dial in a row. A peer that merely connected to this
 * node scores nothing: it is not cached at all.
 */
export function usefulness(p: CachedPeer): number {
  return (
    Math.min(p.successes, 50) + 4 * Math.log2(1 + (p.uptime ?? 0) / 60_000) - 2 * Math.min(p.streak ?? 0, 10)
  )
}

/**
 * Best first: peers a dial of ours reached before those known only by their own word, then peers not
 * failing since last seen, then the most useful, then the most recently seen.
 */
export function comparePeers(a: CachedPeer, b: CachedPeer): number {
  return (
    Number(unverified(a)) - Number(unverified(b)) ||
    Number(failing(a)) - Number(failing(b)) ||
    usefulness(b) - usefulness(a) ||
    b.lastSeen - a.lastSeen ||
    a.id.localeCompare(b.id)
  )
}

/** First wait after a failed dial before a cached peer is offered again; doubles per failure in a row. */
export const RETRY_INITIAL_MS = 30_000
/** Longest such wait. */
export const RETRY_MAX_MS = 6 * 3_600_000
/** A peer whose last this many dials failed and that was not seen for a week is forgotten. */
export const FORGET_AFTER_FAILURES = 8
const FORGET_AFTER_MS = 7 * 24 * 3_600_000

/** When a failing peer may be dialled again (ms since the epoch); 0 when it is not failing. */
export function retryAt(p: CachedPeer): number {
  const streak = p.streak ?? 0
  if (streak === 0 || !failing(p)) return 0
  return (p.lastFailure ?? 0) + Math.min(RETRY_MAX_MS, RETRY_INITIAL_MS * 2 ** Math.min(streak - 1, 20))
}

/** The network of an address (an IPv4 /24, an IPv6 /48), or the address itself when it has no IP. */
export function networkOf(address: string): string {
  const ip4 = /^\/ip4\/([^/]+)/.exec(address)?.[1]
  if (ip4 && isIPv4(ip4)) return `4:${ip4.split('.').slice(0, 3).join('.')}`
  const ip6 = /^\/ip6\/([^/]+)/.exec(address)?.[1]
  if (ip6) {
    const [head, tail = ''] = ip6.toLowerCase().split('::')
    const left = head ? head.split(':') : []
    const right = tail ? tail.split(':') : []
    const groups = [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    return `6:${groups
      .slice(0, 3)
      .map((g) => Number.parseInt(g || '0', 16).toString(16))
      .join(':')}`
  }
  return address
}

/**
 * `peers` (best first) reordered so that consecutive ones come from different networks: the best of
 * each network in turn, then the second best of each, and so on. A cache filled from one network cannot
 * hand the bootstrapper only that network's peers.
 */
export function spreadAcrossNetworks(peers: readonly CachedPeer[]): CachedPeer[] {
  const groups = new Map<string, CachedPeer[]>()
  for (const p of peers) {
    const g = networkOf(dialAddresses(p)[0] ?? p.id)
    const list = groups.get(g)
    if (list) list.push(p)
    else groups.set(g, [p])
  }
  const out: CachedPeer[] = []
  const lists = [...groups.values()]
  for (let round = 0; out.length < peers.length; round++) {
    for (const list of lists) if (round < list.length) out.push(list[round])
  }
  return out
}

/** Reads and checks a cache file's text: the good entries, and what was wrong with the rest. */
export function parseCacheFile(
  text: string,
  maxAddressesPerPeer = 64,
): { peers: CachedPeer[]; problems: string[] } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    return { peers: [], problems: [`not JSON (${err instanceof Error ? err.message : String(err)})`] }
  }
  const top = fileSchema.safeParse(json)
  if (!top.success) {
    const version = (json as { version?: unknown } | null)?.version
    return {
      peers: [],
      problems: [
        typeof version === 'number' && version !== FORMAT_VERSION
          ? `format version ${version}, expected ${FORMAT_VERSION}`
          : `not a peer cache (expected { version: ${FORMAT_VERSION}, peers: [...] })`,
      ],
    }
  }
  const peers = new Map<string, CachedPeer>()
  let bad = 0
  for (const raw of top.data.peers) {
    const entry = entrySchema.safeParse(raw)
    if (!entry.success || !validPeerId(entry.data.id) || peers.has(entry.data.id)) {
      bad++
      continue
    }
    const clean = (list: string[]) =>
      [...new Set(list.map((a) => stripPeer(a, entry.data.id)))].filter(dialable)
    const addrs = clean(entry.data.addrs)
    const heard = clean(entry.data.heard ?? [])
    if (addrs.length !== entry.data.addrs.length || heard.length !== (entry.data.heard ?? []).length) bad++
    if (addrs.length === 0 && heard.length === 0) continue
    const { heard: _, ...rest } = entry.data
    peers.set(entry.data.id, {
      ...rest,
      addrs: addrs.slice(0, maxAddressesPerPeer),
      ...(addrs.length === 0 ? { heard: heard.slice(0, maxAddressesPerPeer) } : {}),
    })
  }
  return { peers: [...peers.values()], problems: bad > 0 ? [`${bad} malformed entries dropped`] : [] }
}

/** A free name for a backup of `file`: `<file>.corrupt`, else `<file>.corrupt.1`, `.2`, ... */
async function backupName(file: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const candidate = i === 0 ? `${file}.corrupt` : `${file}.corrupt.${i}`
    const exists = await lstat(candidate).then(
      () => true,
      () => false,
    )
    if (!exists) return candidate
  }
  return `${file}.corrupt.${Date.now()}`
}

/** Writes `text` to `file` atomically: a private temp file (0600) beside it, synced, then renamed over it. */
async function writeAtomic(file: string, text: string): Promise<void> {
  await makeDir(dirname(file), 0o700)
  const temp = tempFileFor(file)
  try {
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}

/** The cache itself: what peers were connected, how dials to them went, and the file it lives in. */
class PeerCache {
  readonly peers = new Map<string, CachedPeer>()
  /** Dials started to a cached peer and not yet resolved: peer id to start time. */
  readonly #dials = new Map<string, number>()
  /** Cached peers connected now: since when. */
  readonly #since = new Map<string, number>()
  #dirty = false
  #timer?: NodeJS.Timeout
  #writing: Promise<void> = Promise.resolve()
  /** False when the file on disk could not be read nor moved aside: it is then never overwritten. */
  #writable = true
  #writeFailed = false
  #stopped = false
  #loaded = false

  constructor(
    readonly file: string,
    private readonly opts: Options,
    private readonly logger: Logger,
    private readonly self: string,
    private readonly dialTimeout: number,
  ) {}

  /** Loads the file on the first start; on a restart only resumes saving. */
  async start(): Promise<void> {
    this.#stopped = false
    if (this.#loaded) return
    this.#loaded = true
    await this.#load()
  }

  async #load(): Promise<void> {
    // a node killed while writing the cache left its temp file (the cache itself is whole: renamed over)
    await sweepTempFiles(this.file, this.logger)
    let text: string
    try {
      const info = await lstat(this.file)
      if (!info.isFile()) throw new Error('it is not a regular file')
      if (info.size > MAX_CACHE_FILE_BYTES) {
        await this.#setAside(`it is larger than ${MAX_CACHE_FILE_BYTES} bytes`)
        return
      }
      const handle = await open(this.file, constants.O_RDONLY | constants.O_NOFOLLOW)
      try {
        text = await handle.readFile('utf8')
      } finally {
        await handle.close()
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      this.#writable = false
      this.logger.warn(
        `cannot read the peer cache ${this.file} (${(err as Error).message ?? err}); starting without it, ` +
          'and leaving the file untouched',
      )
      return
    }
    const { peers, problems } = parseCacheFile(text, this.opts.maxAddressesPerPeer)
    for (const peer of peers) if (peer.id !== this.self) this.peers.set(peer.id, peer)
    if (problems.length > 0) {
      await this.#setAside(problems.join('; '), peers.length)
      // re-save the entries that were good, now that the original is kept aside
      if (this.peers.size > 0) this.#markDirty()
    }
    if (this.#prune()) this.#markDirty()
    this.logger.debug(`loaded ${this.peers.size} peers from ${this.file}`)
  }

  /** Moves an unusable cache file aside (never deleting it), with a warning. */
  async #setAside(problem: string, kept = 0): Promise<void> {
    try {
      const backup = await backupName(this.file)
      await rename(this.file, backup)
      this.logger.warn(
        `the peer cache ${this.file} is unusable (${problem}); ` +
          `${kept > 0 ? `kept ${kept} good entries, ` : 'starting empty, '}moved the file to ${backup}`,
      )
    } catch (err) {
      this.#writable = false
      this.logger.warn(
        `the peer cache ${this.file} is unusable (${problem}) and cannot be moved aside ` +
          `(${(err as Error).message}); it is left untouched and the cache is not saved this run`,
      )
    }
  }

  #addAddress(peer: CachedPeer, address: string): void {
    const fresh = [stripPeer(address, peer.id)].filter(dialable)
    if (fresh.length === 0) return
    const next = [...new Set([...fresh, ...peer.addrs])].slice(0, this.opts.maxAddressesPerPeer)
    if (next.join() !== peer.addrs.join()) {
      peer.addrs = next
      delete peer.heard
      this.#markDirty()
    }
  }

  /**
   * A peer told its listen addresses (identify). A peer this node has no working address for (it only
   * ever connected to us: the first node of a mesh is dialled by everyone) is remembered by them, so a
   * restart whose seeds are gone can still dial it back. They are the peer's word: only addresses on
   * the IP address its connection came from (`sourceIp`: a peer can point this node at nothing but
   * itself), in `network.addressScope` (`inScope`), never relayed ones, `maxAddressesPerPeer` of them;
   * such peers take at most half of the cache and rank after every peer a dial of ours reached.
   */
  identified(
    id: string,
    listenAddrs: readonly string[],
    sourceIp: string | undefined,
    inScope: (a: string[]) => string[],
  ): void {
    if (id === this.self || sourceIp === undefined) return
    const known = this.peers.get(id)
    if (known && known.addrs.length > 0) return
    const onSource = (a: string) => ipOfAddress(a) === sourceIp
    const heard = inScope(
      [...new Set(listenAddrs.map((a) => stripPeer(a, id)))].filter(
        (a) => dialable(a) && !a.includes('/p2p-circuit') && onSource(a),
      ),
    ).slice(0, this.opts.maxAddressesPerPeer)
    if (heard.length === 0) return
    if (!known) {
      let count = 0
      for (const p of this.peers.values()) if (unverified(p)) count++
      if (count >= Math.floor(this.opts.maxPeers / 2)) return
    }
    const peer = known ?? { id, addrs: [], successes: 0, failures: 0, lastSeen: Date.now() }
    if ((peer.heard ?? []).join() === heard.join() && known) return
    peer.heard = heard
    this.peers.set(id, peer)
    if (!this.#since.has(id)) this.#since.set(id, Date.now())
    this.#markDirty()
  }

  /**
   * A connection opened. Only one this node dialled (outbound) creates or feeds a cache entry: its
   * address is one that worked for this node. An inbound connection's source address is the peer's
   * outgoing port: it is never cached (a peer that only connected to us is cached by the addresses it
   * tells, see {@link identified}; one already cached counts as seen). Relayed connections are not cached.
   */
  connectionOpened(connection: Connection): void {
    const id = connection.remotePeer.toString()
    if (id === this.self) return
    const relayed = connection.remoteAddr.toString().includes('/p2p-circuit')
    let peer = this.peers.get(id)
    if (connection.direction === 'outbound' && !relayed) {
      if (!peer) {
        peer = { id, addrs: [], successes: 0, failures: 0, lastSeen: 0 }
        this.peers.set(id, peer)
      }
      peer.successes++
      peer.streak = 0
      this.#addAddress(peer, connection.remoteAddr.toString())
    }
    if (!peer) return
    peer.lastSeen = Date.now()
    this.#dials.delete(id)
    if (!this.#since.has(id)) this.#since.set(id, Date.now())
    this.#markDirty()
  }

  /** The peer's last connection closed: its time connected counts. */
  disconnected(peerId: PeerId): void {
    const id = peerId.toString()
    const since = this.#since.get(id)
    if (since === undefined) return
    this.#since.delete(id)
    const peer = this.peers.get(id)
    if (!peer) return
    peer.uptime = (peer.uptime ?? 0) + Math.max(0, Date.now() - since)
    peer.lastSeen = Date.now()
    this.#markDirty()
  }

  /** Adds the time connected so far of peers still connected (before a save). */
  #checkpoint(): void {
    const now = Date.now()
    for (const [id, since] of this.#since) {
      const peer = this.peers.get(id)
      if (!peer) continue
      peer.uptime = (peer.uptime ?? 0) + Math.max(0, now - since)
      peer.lastSeen = now
      this.#since.set(id, now)
    }
  }

  dialling(peerId: PeerId): void {
    const id = peerId.toString()
    if (this.peers.has(id) && !this.#dials.has(id)) this.#dials.set(id, Date.now())
  }

  /** Counts a failure for every dial to a cached peer that has had time to connect and did not. */
  settleDials(): void {
    const now = Date.now()
    for (const [id, started] of this.#dials) {
      if (now - started < this.dialTimeout + 1_000) continue
      this.#dials.delete(id)
      const peer = this.peers.get(id)
      if (!peer || peer.lastSeen >= started) continue
      peer.failures++
      peer.streak = (peer.streak ?? 0) + 1
      peer.lastFailure = now
      this.#markDirty()
    }
  }

  /** The peers worth saving or dialling, best first. */
  ranked(): CachedPeer[] {
    return [...this.peers.values()].filter((p) => dialAddresses(p).length > 0).sort(comparePeers)
  }

  /**
   * Keeps the best `maxPeers`, forgetting first the peers whose last FORGET_AFTER_FAILURES dials failed
   * and that were not seen for a week; true when some were dropped.
   */
  #prune(): boolean {
    const before = this.peers.size
    const now = Date.now()
    for (const [id, p] of this.peers) {
      if (dialAddresses(p).length === 0) this.peers.delete(id)
      else if ((p.streak ?? 0) >= FORGET_AFTER_FAILURES && now - p.lastSeen > FORGET_AFTER_MS)
        this.peers.delete(id)
    }
    if (this.peers.size > this.opts.maxPeers) {
      const keep = new Set(
        this.ranked()
          .slice(0, this.opts.maxPeers)
          .map((p) => p.id),
      )
      for (const id of this.peers.keys()) if (!keep.has(id)) this.peers.delete(id)
    }
    return this.peers.size !== before
  }

  /**
   * What the bootstrapper may dial: the cached peers not waiting out a failure (RETRY_INITIAL_MS,
   * doubling per failure in a row up to RETRY_MAX_MS), best first, spread across networks.
   */
  candidates(): string[] {
    this.settleDials()
    const now = Date.now()
    const ready = this.ranked().filter((p) => retryAt(p) <= now)
    return spreadAcrossNetworks(ready).flatMap((p) => dialAddresses(p).map((a) => `${a}/p2p/${p.id}`))
  }

  #markDirty(): void {
    this.#dirty = true
    if (this.#timer || this.#stopped) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      void this.flush()
    }, this.opts.flushInterval)
    this.#timer.unref()
  }

  /** Writes the cache if it changed; one write at a time; failures are logged, never thrown. */
  flush(): Promise<void> {
    const run = async () => {
      if (!this.#dirty || !this.#writable) return
      this.#dirty = false
      this.#checkpoint()
      this.#prune()
      const peers = this.ranked().map((p) => ({ ...p }))
      const text = `${JSON.stringify({ version: FORMAT_VERSION, updated: Date.now(), peers }, null, 2)}\n`
      try {
        await writeAtomic(this.file, text)
        if (this.#writeFailed) this.logger.info(`the peer cache ${this.file} is saved again`)
        this.#writeFailed = false
      } catch (err) {
        this.#dirty = true
        if (!this.#writeFailed)
          this.logger.warn(`cannot save the peer cache ${this.file}: ${(err as Error).message}`)
        this.#writeFailed = true
      }
    }
    this.#writing = this.#writing.then(run, run)
    return this.#writing
  }

  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#dials.clear()
    if (this.#since.size > 0) {
      this.#checkpoint()
      this.#since.clear()
      this.#dirty = true
    }
    await this.flush()
  }
}

/**
 * Remembers the peers this node dialled successfully (the addresses that worked, successes, failures,
 * time connected) in `<dataDir>/peer-cache.json`, and offers them first when bootstrapping, so a
 * restarted node rejoins the mesh without its seeds. A peer that only ever connected to this node (the
 * first node of a mesh is dialled by everyone) is remembered by the listen addresses it told (identify),
 * so that such a node too can rejoin when its seeds are gone. Hostile peers: such told addresses count
 * only on the IP the peer's connection came from (it can point this node at nothing but itself), inside
 * `network.addressScope`, never relayed ones, at most `maxAddressesPerPeer`, for at most half
 * of `maxPeers`, and those peers are offered after every peer a dial of ours reached (a dial that
 * reaches one makes it a verified entry); peers rank by usefulness (time
 * connected, dials that worked), not by how recently they showed up; candidates are spread across
 * networks; a failing peer is offered again only after a backoff (30 s doubling up to 6 h) and forgotten
 * after 8 failures in a row and a week unseen. The kernel keeps a seed connection as well
 * (`bootstrap.seedConnections`). Writes are atomic (temp file + rename, mode 0600) and at most once per
 * `flushInterval`; an unusable file is moved aside to `<file>.corrupt` with a warning, never lost.
 */
export const peerCache = definePlugin({
  name: 'peer-cache',
  provides: ['bootstrap'],
  options,
  create: (opts) => {
    let cache: PeerCache | undefined
    let unsubscribe: Array<() => void> = []
    return {
      setup: (ctx): PeerCacheApi => {
        const file = !opts.file
          ? join(ctx.config.dataDir, PEER_CACHE_FILE)
          : isAbsolute(opts.file)
            ? opts.file
            : join(ctx.config.dataDir, opts.file)
        const current = new PeerCache(
          file,
          opts,
          ctx.logger,
          ctx.peerId.toString(),
          ctx.config.connections.dialTimeout,
        )
        cache = current
        return {
          priority: PEER_CACHE_PRIORITY,
          file,
          candidates: () => current.candidates(),
          peers: () => current.ranked().map((p) => ({ ...p, addrs: [...p.addrs] })),
          flush: () => current.flush(),
        }
      },
      libp2p: () => ({
        connectionGater: {
          // never denies: it only notes the dial, so a dial that does not connect counts as a failure
          denyDialPeer: (peerId: PeerId) => {
            cache?.dialling(peerId)
            return false
          },
        },
      }),
      start: async (ctx) => {
        if (!cache) return
        const current = cache
        await current.start()
        const on = <E extends 'peer:disconnect' | 'connection:open' | 'peer:identify'>(
          name: E,
          handle: (detail: never) => void,
        ) => {
          const listener = (evt: CustomEvent) => {
            try {
              handle(evt.detail as never)
            } catch (err) {
              ctx.logger.debug(`peer cache: ${name}: ${(err as Error).message}`)
            }
          }
          ctx.libp2p.addEventListener(name, listener as never)
          unsubscribe.push(() => ctx.libp2p.removeEventListener(name, listener as never))
        }
        on('connection:open', (connection: Connection) => current.connectionOpened(connection))
        on('peer:disconnect', (peerId: PeerId) => current.disconnected(peerId))
        on('peer:identify', (result: IdentifyResult) =>
          current.identified(
            result.peerId.toString(),
            result.listenAddrs.map((a) => a.toString()),
            result.connection.remoteAddr.toString().includes('/p2p-circuit')
              ? undefined
              : ipOfAddress(result.connection.remoteAddr.toString()),
            (addrs) => ctx.peerAddresses.filter(addrs),
          ),
        )
      },
      stop: async () => {
        for (const off of unsubscribe) off()
        unsubscribe = []
        await cache?.stop()
      },
    }
  },
})
