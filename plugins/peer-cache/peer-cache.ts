/**
 * The peer cache: what connections, identify and dials teach it about peers, what it offers the
 * bootstrapper, and when it saves itself (the file: cache-file.ts; the order: ranking.ts).
 */
import { constants } from 'node:fs'
import { lstat, open, rename } from 'node:fs/promises'
import type { Connection, PeerId } from '@libp2p/interface'
import { type Logger, sweepTempFiles } from 'meshkit/plugin'
import {
  backupName,
  FORMAT_VERSION,
  fitInFile,
  MAX_CACHE_FILE_BYTES,
  parseCacheFile,
  writeAtomic,
} from './cache-file.js'
import {
  type CachedPeer,
  dialAddresses,
  dialable,
  ipOfAddress,
  stripPeer,
  unverified,
} from './cached-peer.js'
import {
  comparePeers,
  FORGET_AFTER_FAILURES,
  FORGET_AFTER_MS,
  networkOf,
  retryAt,
  spreadAcrossNetworks,
} from './ranking.js'

/**
 * Peers known only by their own word kept from one public network (an IPv4 /24, an IPv6 /48): Sybils
 * from one network cannot fill the cache's half for such peers. Private and loopback networks (a LAN,
 * one machine: addresses only `network.addressScope` 'private' or 'all' lets in) are not capped.
 */
export const MAX_TOLD_PER_NETWORK = 2

/** The node's rules for addresses peers tell of themselves (see index.ts: `network.addressScope`). */
export interface ToldAddressRules {
  /** The addresses a peer's word may make this node dial (`network.addressScope`), in their order. */
  inScope(addresses: string[]): string[]
  /** Whether the address is on a public network: its peers count against MAX_TOLD_PER_NETWORK. */
  isPublic(address: string): boolean
}

/** The options the cache works with (the plugin's, see index.ts). */
export interface PeerCacheSettings {
  maxPeers: number
  maxAddressesPerPeer: number
  flushInterval: number
}

/** The cache itself: what peers were connected, how dials to them went, and the file it lives in. */
export class PeerCache {
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
    private readonly opts: PeerCacheSettings,
    private readonly logger: Logger,
    private readonly self: string,
    private readonly dialTimeout: number,
    private readonly rules: ToldAddressRules,
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
    for (const peer of peers) {
      if (peer.id === this.self) continue
      // told addresses are checked again as when they were told (the file may be hand-edited, or from
      // a run with another network.addressScope): in scope, all on the IP of the first
      if (peer.addrs.length === 0) {
        const ip = ipOfAddress(peer.heard?.[0] ?? '')
        peer.heard = this.rules.inScope((peer.heard ?? []).filter((a) => ip && ipOfAddress(a) === ip))
        if (peer.heard.length === 0) continue
      }
      this.peers.set(peer.id, peer)
    }
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
   * such peers take at most half of the cache, MAX_TOLD_PER_NETWORK per public network (`isPublic`), and
   * rank after every peer a dial of ours reached.
   */
  identified(id: string, listenAddrs: readonly string[], sourceIp: string | undefined): void {
    if (id === this.self || sourceIp === undefined) return
    const known = this.peers.get(id)
    if (known && known.addrs.length > 0) return
    const onSource = (a: string) => ipOfAddress(a) === sourceIp
    const heard = this.rules
      .inScope(
        [...new Set(listenAddrs.map((a) => stripPeer(a, id)))].filter(
          (a) => dialable(a) && !a.includes('/p2p-circuit') && onSource(a),
        ),
      )
      .slice(0, this.opts.maxAddressesPerPeer)
    if (heard.length === 0) return
    // the caps hold for a known peer too: one that moves (connects again from another network) must
    // not take a full network's place; it keeps the addresses it told before
    if (!this.#roomToTell(id, heard[0])) return
    const peer = known ?? { id, addrs: [], successes: 0, failures: 0, lastSeen: Date.now() }
    if ((peer.heard ?? []).join() === heard.join() && known) return
    peer.heard = heard
    this.peers.set(id, peer)
    if (!this.#since.has(id)) this.#since.set(id, Date.now())
    this.#markDirty()
  }

  /**
   * Whether peer `id`, telling addresses starting with `address`, fits beside the other peers known by
   * their word: fewer than half of `maxPeers`, fewer than MAX_TOLD_PER_NETWORK in a public network.
   */
  #roomToTell(id: string, address: string): boolean {
    const network = this.rules.isPublic(address) ? networkOf(address) : undefined
    let count = 0
    let sameNetwork = 0
    for (const p of this.peers.values()) {
      if (p.id === id || !unverified(p)) continue
      count++
      if (network !== undefined && networkOf(dialAddresses(p)[0] ?? '') === network) sameNetwork++
    }
    return count < Math.floor(this.opts.maxPeers / 2) && sameNetwork < MAX_TOLD_PER_NETWORK
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
    // peers known by their word: the caps of identified() (a file may hold more), the best kept
    const half = Math.floor(this.opts.maxPeers / 2)
    let told = 0
    const perNetwork = new Map<string, number>()
    for (const p of this.ranked()) {
      if (!unverified(p)) continue
      const first = dialAddresses(p)[0]
      const network = this.rules.isPublic(first) ? networkOf(first) : undefined
      const same = network === undefined ? 0 : (perNetwork.get(network) ?? 0)
      if (told >= half || same >= MAX_TOLD_PER_NETWORK) {
        this.peers.delete(p.id)
        continue
      }
      told++
      if (network !== undefined) perNetwork.set(network, same + 1)
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
      const peers = fitInFile(this.ranked()).map((p) => ({ ...p }))
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
