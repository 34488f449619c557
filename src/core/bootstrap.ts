import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { ResolvedMeshConfig } from './config-types.js'
import { reasonOf } from './errors.js'
import type { MeshEventBus } from './events.js'
import type { Logger } from './logger.js'

/**
 * The contract of the `bootstrap` slot: a plugin that provides `'bootstrap'` returns a source from
 * `setup()`. The kernel's bootstrapper asks every source for candidates, in priority order, whenever the
 * node has fewer than `bootstrap.minConnections` peers, and retries with backoff while it stays below.
 */
export interface BootstrapSource {
  /** Lower is tried first: e.g. a peer cache (10) before a static list (20) before DNS seeds (30). @default 50 */
  readonly priority?: number
  /** Addresses to dial, with `/p2p/<peer id>` where known. Called once per bootstrap round. */
  candidates(options: { signal: AbortSignal }): Promise<readonly string[]> | readonly string[]
  /**
   * The candidates are seeds: they come from the operator (the config, DNS seeds), not from peers. Seeds
   * are dialled whatever their address scope, and the node keeps `bootstrap.seedConnections` connections
   * to seeds even when other sources (a peer cache) gave it enough peers: peers that fill the cache
   * cannot cut a node off from the mesh (eclipse). Each round takes a seed source's candidates in a
   * random order (per node and round), so that the nodes of a mesh spread over its seeds instead of all
   * loading the first ones of one shared list. @default false
   */
  readonly seed?: boolean
}

/** `items` in a random order (Fisher-Yates). */
export function shuffled<T>(items: readonly T[], random = Math.random): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

export interface NamedBootstrapSource {
  name: string
  source: BootstrapSource
}

type BootstrapSettings = ResolvedMeshConfig['bootstrap']

/** The delay before retry `attempt` (0-based): exponential, capped, with "equal jitter" (half fixed, half random). */
export function backoffDelay(attempt: number, initial: number, max: number, random = Math.random): number {
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30))
  return Math.round(ceiling / 2 + random() * (ceiling / 2))
}

/**
 * Keeps at least `minConnections` peers connected by dialling bootstrap candidates; when a round leaves
 * the node below that, waits with exponential backoff and jitter, then tries again, so a node started
 * before its bootstrap peers exist joins them when they come up. Started after the plugins, stopped first.
 */
export class Bootstrapper {
  #abort = new AbortController()
  #loop?: Promise<void>
  #wake?: () => void
  #offDisconnect?: () => void

  /** Peers reached through a seed source's address. */
  readonly #seedPeers = new Set<string>()

  constructor(
    private readonly libp2p: Libp2p,
    private readonly sources: readonly NamedBootstrapSource[],
    private readonly settings: BootstrapSettings & { dialTimeout: number },
    private readonly logger: Logger,
    private readonly events: MeshEventBus,
    /** Marks a seed's address as configured (dialled whatever its scope). */
    private readonly trust: (address: string) => void = () => {},
  ) {}

  start(): void {
    if (this.#loop || this.sources.length === 0 || this.settings.minConnections === 0) return
    this.#abort = new AbortController()
    const onDisconnect = () => this.#wake?.()
    this.libp2p.addEventListener('peer:disconnect', onDisconnect)
    this.#offDisconnect = () => this.libp2p.removeEventListener('peer:disconnect', onDisconnect)
    this.#loop = this.#run().catch((err) => {
      if (!this.#abort.signal.aborted) this.logger.error(`bootstrap stopped: ${reasonOf(err)}`)
    })
  }

  async stop(): Promise<void> {
    this.#abort.abort()
    this.#wake?.()
    this.#offDisconnect?.()
    await this.#loop
    this.#loop = undefined
  }

  #connected(): number {
    return this.libp2p.getPeers().length
  }

  /** Whether `peer` was reached through a seed source's address (or named by one). */
  isSeed(peer: string): boolean {
    return this.#seedPeers.has(peer)
  }

  /** Connected seed peers, when the node has seed sources and wants seed connections; else undefined. */
  #seedsConnected(): number | undefined {
    if (this.settings.seedConnections === 0 || !this.sources.some((s) => s.source.seed)) return undefined
    let n = 0
    for (const peer of this.libp2p.getPeers()) if (this.#seedPeers.has(peer.toString())) n++
    return n
  }

  /** Whether the node has what it wants: `minConnections` peers, and its seed connections. */
  #satisfied(): boolean {
    const seeds = this.#seedsConnected()
    const wantSeeds = Math.min(this.settings.seedConnections, this.settings.minConnections)
    return this.#connected() >= this.settings.minConnections && (seeds === undefined || seeds >= wantSeeds)
  }

  /** Waits `ms` (forever when undefined) or until woken (a peer disconnected) or stopped. */
  #sleep(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(done, ms)
      const signal = this.#abort.signal
      function done() {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        resolve()
      }
      this.#wake = done
      signal.addEventListener('abort', done, { once: true })
    })
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal
    let attempt = 0
    while (!signal.aborted) {
      if (this.#satisfied()) {
        attempt = 0
        await this.#sleep()
        continue
      }
      await this.#round(signal)
      if (signal.aborted) return
      if (this.#satisfied()) continue
      const delayMs = backoffDelay(attempt++, this.settings.retryInitial, this.settings.retryMax)
      this.logger.debug(
        `bootstrap: ${this.#connected()} of ${this.settings.minConnections} peers; retrying in ${delayMs} ms`,
      )
      this.events.emit('bootstrap:retry', { attempt, delayMs, connections: this.#connected() })
      await this.#sleep(delayMs)
    }
  }

  async #round(signal: AbortSignal): Promise<void> {
    const wantSeeds = Math.min(this.settings.seedConnections, this.settings.minConnections)
    // seed dials in flight count as seed connections: a round dials no more seeds than it needs
    let seedsInFlight = 0
    const needSeeds = () => {
      const seeds = this.#seedsConnected()
      return seeds !== undefined && seeds + seedsInFlight < wantSeeds
    }
    // short of seed connections: the seeds first, whatever their priority
    const rank = (s: NamedBootstrapSource) =>
      (needSeeds() && s.source.seed ? -1e9 : 0) + (s.source.priority ?? 50)
    const ordered = [...this.sources].sort((a, b) => rank(a) - rank(b))
    const seen = new Set<string>()
    const queue: Array<{ address: string; source: string; seed: boolean }> = []
    for (const { name, source } of ordered) {
      try {
        const candidates = await source.candidates({ signal })
        // seeds in a random order: every node of a mesh starting at the head of one list would load its
        // first seeds with every join while the others idle
        for (const address of source.seed ? shuffled(candidates) : candidates) {
          if (seen.has(address)) continue
          seen.add(address)
          if (source.seed) {
            this.trust(address)
            const peer = /\/p2p\/([^/]+)$/.exec(address)?.[1]
            if (peer) this.#seedPeers.add(peer)
          }
          queue.push({ address, source: name, seed: source.seed === true })
        }
      } catch (err) {
        if (signal.aborted) return
        this.logger.warn(`bootstrap source ${name} failed: ${reasonOf(err)}`)
      }
    }
    const self = this.libp2p.peerId.toString()
    // dials in flight count towards the minimum: a round opens no more connections than it needs
    let inFlight = 0
    const worker = async () => {
      while (!signal.aborted && queue.length > 0) {
        const seedsShort = needSeeds()
        if (this.#connected() + inFlight >= this.settings.minConnections && !seedsShort) return
        // enough peers but no seed yet: only seeds are dialled
        const index =
          seedsShort && this.#connected() + inFlight >= this.settings.minConnections
            ? queue.findIndex((q) => q.seed)
            : 0
        if (index < 0) return
        const item = queue.splice(index, 1)[0]
        let target: ReturnType<typeof multiaddr>
        try {
          target = multiaddr(item.address)
        } catch (err) {
          this.logger.warn(
            `bootstrap source ${item.source} gave a bad address ${item.address}: ${reasonOf(err)}`,
          )
          continue
        }
        const peer = target.getComponents().findLast((c) => c.name === 'p2p')?.value
        if (peer === self) continue
        if (peer && this.libp2p.getPeers().some((p) => p.toString() === peer)) continue
        // an address without /p2p/: skip it when a connection to that very address is open (else every round
        // dials it again, and libp2p closes the duplicate)
        if (
          !peer &&
          this.libp2p.getConnections().some((c) => c.remoteAddr.decapsulateCode(421).equals(target))
        )
          continue
        inFlight++
        if (item.seed) seedsInFlight++
        const started = Date.now()
        try {
          const connection = await this.libp2p.dial(target, {
            signal: AbortSignal.any([signal, AbortSignal.timeout(this.settings.dialTimeout)]),
          })
          if (item.seed) this.#seedPeers.add(connection.remotePeer.toString())
          // dial() hands back an existing connection to a known peer: that is no new bootstrap peer
          if (connection.timeline.open < started) continue
          const peerId = connection.remotePeer.toString()
          this.logger.debug(`bootstrap: connected to ${peerId} via ${item.source}`)
          this.events.emit('bootstrap:connected', { peerId, address: item.address, source: item.source })
        } catch (err) {
          if (signal.aborted) return
          this.logger.debug(`bootstrap: ${item.address} (${item.source}) failed: ${reasonOf(err)}`)
        } finally {
          inFlight--
          if (item.seed) seedsInFlight--
        }
      }
    }
    await Promise.all(Array.from({ length: this.settings.dialConcurrency }, worker))
  }
}
