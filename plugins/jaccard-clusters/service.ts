/**
 * The libp2p side of the default clustering strategy: the tag exchange (/mesh/tags/1.0.0), liveness,
 * RTT metrics (ping), and connections driven by clusters (protected best peers, a target per cluster).
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import {
  type Budget,
  coalescePerKey,
  type Logger,
  LruMap,
  type MeshEventBus,
  type PeerAddressPolicy,
  type PeerReputation,
  TokenBucket,
  type z,
} from 'meshkit/plugin'
import { ClusterManager, type ClusterManagerOptions, type ConnectionMethod } from './cluster-manager.js'
import { clusteringServiceOptions, resolveOptions } from './options.js'
import { jaccard } from './similarity-index.js'
import {
  checkTags,
  decodeLengthPrefix,
  decodeTags,
  encodeTags,
  TAG_LIMITS,
  TAGS_PROTOCOL,
  TagsWireError,
} from './wire.js'

/** The libp2p peer tag on the best peers of this node's clusters (the connection manager keeps them). */
export const CLUSTER_PEER_TAG = 'meshkit-cluster'
const CLUSTER_PEER_TAG_VALUE = 100
/** Bound on one exchange, ping or dial. */
const OP_TIMEOUT_MS = 10_000
/** Dials in flight at once to fill clusters. */
const MAX_DIALS = 4
const BACKOFF_INITIAL_MS = 1_000
const BACKOFF_MAX_MS = 60_000
/** Pings in flight at once. */
const MAX_PINGS = 8
/** Dials to cluster members across all clusters: per second sustained, and at once above that. */
const DIAL_RATE_PER_SECOND = 1
const DIAL_BURST = 8
/** Peers whose trust (see `trustAfter`) is remembered at once. */
const MAX_TRUSTED = 4096
/**
 * Budget of the tag exchanges remote peers start. An honest peer starts one per connection and one per
 * change of its tags: per peer one every 2 s sustained (5 at once), 2 in flight, 128 KiB a minute; all
 * peers together 50 a second, 16 in flight.
 */
export const TAGS_BUDGET = {
  ratePerSecond: 0.5,
  burst: 5,
  concurrency: 2,
  bytesPerMinute: 128 * 1024,
  globalRatePerSecond: 50,
  globalConcurrency: 16,
} as const
/** Length-prefixed messages of at most 8 KiB, with a prefix of at most 2 bytes (see decodeLengthPrefix). */
const LP_OPTIONS = { maxDataLength: TAG_LIMITS.maxMessageBytes, lengthDecoder: decodeLengthPrefix }
/** Errors that mean the peer's bytes broke the wire format (penalized as `malformed`). */
const MALFORMED = new Set([
  'InvalidDataLengthError',
  'InvalidDataLengthLengthError',
  'InvalidMessageLengthError',
])
const isMalformed = (err: unknown) =>
  err instanceof TagsWireError || (err instanceof Error && MALFORMED.has(err.name))

/** What a ClusteringService is made with (see options.ts for each option and its default). */
export type ClusteringServiceOptions = z.input<typeof clusteringServiceOptions> &
  Pick<ClusterManagerOptions, 'clock' | 'clusterId'>

interface Runtime {
  libp2p: Libp2p
  logger: Logger
  events: MeshEventBus
  signal: AbortSignal
  ping?: { ping(peer: PeerId, options?: { signal?: AbortSignal }): Promise<number> }
  /** The per-peer budget of tag exchanges remote peers start (the plugin makes it with `ctx.budget`). */
  budget?: Budget
  /** Where malformed messages are reported. */
  reputation?: Pick<PeerReputation, 'penalize'>
  /** One dial on a peer's word per `security.peerDialInterval`. */
  peerAddresses?: Pick<PeerAddressPolicy, 'takeDial'>
}

/**
 * How a connection reached the peer: relayed (a limited connection through a circuit), hole-punched
 * (WebRTC, or direct while a relayed one to the same peer is open) or direct. Relayed is judged by the
 * connection's limits, not its address: a hole-punched WebRTC connection's address keeps `/p2p-circuit`.
 */
export function methodOf(connection: Connection, others: Connection[]): ConnectionMethod {
  const relayed = (c: Connection) => c.limits !== undefined
  if (relayed(connection)) return 'relayed'
  if (connection.remoteAddr.toString().includes('/webrtc')) return 'hole-punched'
  return others.some((c) => c !== connection && relayed(c)) ? 'hole-punched' : 'direct'
}

/**
 * The connection a tag exchange (or a ping) with `peer` runs on: an open, unlimited one, or none; it
 * never dials. libp2p's `dialProtocol()` does not reuse a limited (relayed) connection: it dials a new
 * circuit through the relay, then closes it as a duplicate of the one already open (same address), and
 * that new outbound connection's `connection:open` asked for the next exchange: a peer reached only
 * through a relay got dozens of relayed connections opened and closed a second. Exchanges stay off
 * relayed connections (the relay's budget, 128 KiB and 2 min by default, is kept for hole punching);
 * they run once the peer has a direct or hole-punched connection, whose `connection:open` starts one.
 */
function exchangeConnection(libp2p: Pick<Libp2p, 'getConnections'>, peer: PeerId): Connection | undefined {
  return libp2p.getConnections(peer).find((c) => c.status === 'open' && c.limits === undefined)
}

/**
 * The clustering API of a node (`node.api('clustering')`): the {@link ClusterManager} plus this node's own
 * tags (`tags()`, `setTags()`), the clusters it belongs to (`ownClusters()`) and the peers it protects.
 */
export class ClusteringService extends ClusterManager {
  #protectBest: number
  #targetConnectionsPerCluster: number
  #pingInterval: number
  #maintainInterval: number
  #trustAfter: number
  #forgetUntrustedAfter: number
  #tags: string[]
  /** The last tags each peer sent (to re-assign peers when the rules change), while it is known. */
  #peerTags: LruMap<string, string[]>
  /** Peers this node has a reason to dial: it reached them itself, or they stayed `trustAfter` connected. */
  readonly #trusted = new LruMap<string, true>(MAX_TRUSTED)
  /** Members without trust that disconnected, and when (oldest first). */
  readonly #leftUntrusted = new LruMap<string, number>(MAX_TRUSTED)
  /** Dials to cluster members across all clusters. */
  readonly #dialRate = new TokenBucket(DIAL_RATE_PER_SECOND, DIAL_BURST)
  #rt?: Runtime
  readonly #off: Array<() => void> = []
  readonly #timers: ReturnType<typeof setInterval>[] = []
  #maintainSoon?: ReturnType<typeof setTimeout>
  /** Peers that carry the cluster peer tag. */
  readonly #protected = new Set<string>()
  /** The `meshkit-cluster` tag value each ranked member carries now. */
  readonly #tagValues = new Map<string, number>()
  /** Since when (ms) each connected peer is connected. */
  readonly #connectedSince = new Map<string, number>()
  readonly #dialing = new Set<string>()
  readonly #backoff = new Map<string, { until: number; delay: number }>()
  #pinging = false

  constructor(options: ClusteringServiceOptions = {}) {
    super(options)
    const o = resolveOptions(clusteringServiceOptions, options)
    this.#tags = checkTags(o.tags)
    this.#protectBest = o.protectBest
    this.#targetConnectionsPerCluster = o.targetConnectionsPerCluster
    this.#pingInterval = Math.max(100, o.pingInterval)
    this.#maintainInterval = Math.max(100, o.maintainInterval)
    this.#trustAfter = o.trustAfter
    this.#forgetUntrustedAfter = o.forgetUntrustedAfter
    this.#peerTags = new LruMap(this.maxPeers)
    this.on('*', () => this.#scheduleMaintain())
  }

  /** This node's own clusters stay when empty (until `removeEmptyClusters`); remote peers' go at once. */
  protected override keepWhenEmpty(tags: ReadonlySet<string>): boolean {
    return this.#tags.length > 0 && jaccard(tags, this.#tags) >= this.threshold
  }

  /** How long (ms) a member this node never dialled must stay connected before it is dialled back. */
  get trustAfter(): number {
    return this.#trustAfter
  }

  /** Whether this node would dial `peer` back: it reached it itself, or `peer` stayed `trustAfter` connected. */
  isTrusted(peer: string): boolean {
    if (this.#trusted.has(peer)) return true
    const since = this.#connectedSince.get(peer)
    return since !== undefined && Date.now() - since >= this.#trustAfter
  }

  /** Best peers per own cluster that get the `meshkit-cluster` peer tag. */
  get protectBest(): number {
    return this.#protectBest
  }

  /** Connected members wanted per own cluster. */
  get targetConnectionsPerCluster(): number {
    return this.#targetConnectionsPerCluster
  }

  /** How often connected cluster members are pinged (ms). */
  get pingInterval(): number {
    return this.#pingInterval
  }

  /** How often protection and the per-cluster target are checked (ms). */
  get maintainInterval(): number {
    return this.#maintainInterval
  }

  /**
   * Applies new options to the running service in place (options left out take their defaults; the
   * clock and cluster ids cannot change). Everything is checked before anything changes: bad options
   * throw and leave the service as it was. New matching rules (threshold, index) re-assign every known
   * peer by the tags it last sent; new tags are sent to connected peers; new intervals restart the
   * timers; protection and dialling are re-checked at once. Connections are kept.
   */
  override reconfigure(options: ClusteringServiceOptions): boolean {
    const o = resolveOptions(clusteringServiceOptions, options)
    const tags = checkTags(o.tags)
    const { protectBest, targetConnectionsPerCluster: target, trustAfter, forgetUntrustedAfter } = o
    const cleanupBefore = this.cleanupInterval
    const rulesChanged = super.reconfigure(options)
    this.#trustAfter = trustAfter
    this.#forgetUntrustedAfter = forgetUntrustedAfter
    if (this.#peerTags.max !== this.maxPeers) {
      const peerTags = new LruMap<string, string[]>(this.maxPeers)
      for (const [peer, peerTagList] of this.#peerTags.entries()) peerTags.set(peer, peerTagList)
      this.#peerTags = peerTags
    }
    this.#protectBest = protectBest
    this.#targetConnectionsPerCluster = target
    const pingInterval = Math.max(100, o.pingInterval)
    const maintainInterval = Math.max(100, o.maintainInterval)
    const timersChanged =
      pingInterval !== this.#pingInterval ||
      maintainInterval !== this.#maintainInterval ||
      cleanupBefore !== this.cleanupInterval
    this.#pingInterval = pingInterval
    this.#maintainInterval = maintainInterval
    if (rulesChanged)
      for (const [peer, peerTags] of [...this.#peerTags.entries()]) this.#apply(peer, peerTags)
    if (timersChanged && this.#rt) {
      this.#stopTimers()
      this.#startTimers(this.#rt)
    }
    this.setTags(tags)
    this.#scheduleMaintain()
    return rulesChanged
  }

  /** This node's own tags. */
  tags(): string[] {
    return [...this.#tags]
  }

  /**
   * Replaces this node's tags (at most 64, each 1-64 characters; throws otherwise) and, when they
   * changed, sends them to every connected peer.
   */
  setTags(tags: Iterable<string>): void {
    const next = checkTags([...tags])
    const same = next.length === this.#tags.length && next.every((t, i) => t === this.#tags[i])
    this.#tags = next
    if (same || !this.#rt) return
    for (const peer of this.#rt.libp2p.getPeers()) void this.#exchange(peer)
    this.#scheduleMaintain()
  }

  /** Ids of the clusters this node belongs to: those whose tags reach the threshold with its own. */
  ownClusters(): string[] {
    return this.#tags.length === 0 ? [] : this.findClustersForTags(this.#tags).map((m) => m.id)
  }

  /** Peers that currently carry the `meshkit-cluster` peer tag. */
  protectedPeers(): string[] {
    return [...this.#protected]
  }

  // ---- lifecycle

  async startService(rt: Runtime): Promise<void> {
    this.#rt = rt
    const { libp2p } = rt
    await libp2p.handle(TAGS_PROTOCOL, (stream, connection) => this.#serve(stream, connection), {
      maxInboundStreams: 4,
      maxOutboundStreams: 4,
    })
    const onOpen = (evt: CustomEvent<Connection>) => {
      const c = evt.detail
      const peer = c.remotePeer.toString()
      if (!this.#connectedSince.has(peer)) this.#connectedSince.set(peer, Date.now())
      this.#leftUntrusted.delete(peer)
      this.touchPeer(peer, this.#metricsOf(peer, c))
      if (c.direction === 'outbound') {
        // this node reached the peer itself: a reason to dial it again later
        this.#trusted.set(peer, true)
        void this.#exchange(c.remotePeer)
      }
    }
    const onDisconnect = (evt: CustomEvent<PeerId>) => {
      const peer = evt.detail.toString()
      if (this.isTrusted(peer)) this.#trusted.set(peer, true)
      else if (this.clustersOf(peer).length > 0) this.#leftUntrusted.set(peer, Date.now())
      this.#connectedSince.delete(peer)
      this.peerDisconnected(peer)
      this.#scheduleMaintain()
    }
    libp2p.addEventListener('connection:open', onOpen)
    libp2p.addEventListener('peer:disconnect', onDisconnect)
    this.#off.push(
      () => libp2p.removeEventListener('connection:open', onOpen),
      () => libp2p.removeEventListener('peer:disconnect', onDisconnect),
    )
    this.#startTimers(rt)
  }

  #startTimers(rt: Runtime): void {
    const { libp2p } = rt
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms)
      t.unref?.()
      this.#timers.push(t)
    }
    // a connection that is up is a sign of life; a peer gone for `inactiveAfter` is then cleaned up
    every(this.cleanupInterval, () => {
      for (const p of libp2p.getPeers()) this.touchPeer(p.toString())
      this.cleanup()
      for (const peer of [...this.#backoff.keys()])
        if (this.clustersOf(peer).length === 0) this.#backoff.delete(peer)
      for (const peer of [...this.#peerTags.keys()])
        if (this.clustersOf(peer).length === 0 && !this.#connectedSince.has(peer)) this.#peerTags.delete(peer)
    })
    every(this.maintainInterval, () => this.#maintain())
    if (rt.ping) every(this.pingInterval, () => void this.#pingAll())
  }

  async stopService(): Promise<void> {
    const rt = this.#rt
    this.#rt = undefined
    for (const off of this.#off.splice(0)) off()
    this.#stopTimers()
    clearTimeout(this.#maintainSoon)
    this.#maintainSoon = undefined
    if (rt) await rt.libp2p.unhandle(TAGS_PROTOCOL).catch(() => {})
  }

  #stopTimers(): void {
    for (const t of this.#timers.splice(0)) clearInterval(t)
  }

  // ---- tag exchange

  #apply(peer: string, tags: string[]): void {
    this.assignPeer(peer, tags, this.#metricsOf(peer))
    // kept to re-assign the peer when the rules change, while it is a member or connected (bounded)
    if (this.clustersOf(peer).length > 0 || this.#connectedSince.has(peer))
      this.#peerTags.set(peer, [...tags])
    else this.#peerTags.delete(peer)
    this.#rt?.logger.debug(
      `${peer} has tags [${tags.join(', ')}]: clusters ${this.clustersOf(peer).join(', ')}`,
    )
  }

  #metricsOf(peer: string, connection?: Connection) {
    const libp2p = this.#rt?.libp2p
    if (!libp2p) return {}
    const conns = libp2p.getConnections(peerIdFromString(peer))
    const c = connection ?? conns[0]
    if (!c) return {}
    return { method: methodOf(c, conns), connectedSince: this.#connectedSince.get(peer) }
  }

  /** One exchange per peer at a time; a request made while one runs makes one follow-up exchange. */
  readonly #exchange = coalescePerKey(
    (peer: PeerId) => this.#exchangeOnce(peer),
    (peer) => peer.toString(),
    () => this.#rt !== undefined,
  )

  async #exchangeOnce(peer: PeerId): Promise<void> {
    const rt = this.#rt
    if (!rt) return
    const id = peer.toString()
    let stream: Stream | undefined
    try {
      const connection = exchangeConnection(rt.libp2p, peer)
      if (!connection) return // not connected, or only over a relay: see exchangeConnection()
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      stream = await connection.newStream(TAGS_PROTOCOL, { signal })
    } catch (err) {
      if (!rt.signal.aborted) rt.logger.debug(`no tag exchange with ${id}: ${(err as Error).message}`)
      return
    }
    try {
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      const lp = lpStream(stream, LP_OPTIONS)
      await lp.write(encodeTags(this.#tags), { signal })
      const reply = decodeTags((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      this.#apply(id, reply.tags)
    } catch (err) {
      stream.abort(err as Error)
      if (rt.signal.aborted) return
      this.#protocolError(rt, id, err, 'with')
    }
  }

  /** Reports a failed exchange; a message that broke the format costs the peer `malformed` points. */
  #protocolError(rt: Runtime, peer: string, err: unknown, how: 'with' | 'from'): void {
    const message = err instanceof Error ? err.message : String(err)
    if (isMalformed(err)) rt.reputation?.penalize(peer, 'malformed', `${TAGS_PROTOCOL}: ${message}`)
    rt.logger.debug(`bad tag exchange ${how} ${peer}: ${message}`)
    rt.events.emit('clustering:protocol-error', { peerId: peer, error: message })
  }

  /**
   * Answers a peer's tags with this node's. Each exchange a peer starts takes from its budget (rate,
   * concurrency, bytes: see {@link TAGS_BUDGET}); over it, the stream is reset unread (and the budget
   * penalizes the peer). Malformed, oversized or missing input resets the stream.
   */
  async #serve(stream: Stream, connection: Connection): Promise<void> {
    const rt = this.#rt
    const peer = connection.remotePeer.toString()
    if (!rt) {
      stream.abort(new Error('stopping'))
      return
    }
    const ticket = rt.budget?.admit(peer)
    if (ticket && !ticket.ok) {
      stream.abort(new Error(`tag exchange refused: ${ticket.reason}`))
      return
    }
    try {
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      const lp = lpStream(stream, LP_OPTIONS)
      const bytes = (await lp.read({ signal })).subarray()
      if (ticket && !ticket.spend(bytes.byteLength)) {
        stream.abort(new Error('tag exchange refused: bytes'))
        return
      }
      const request = decodeTags(bytes)
      this.#apply(peer, request.tags)
      await lp.write(encodeTags(this.#tags), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      if (rt.signal.aborted) return
      this.#protocolError(rt, peer, err, 'from')
    } finally {
      if (ticket?.ok) ticket.release()
    }
  }

  // ---- metrics

  /** Pings every connected member of this node's own clusters (a few at a time): RTT on success, a failure otherwise. */
  async #pingAll(): Promise<void> {
    const rt = this.#rt
    if (!rt?.ping || this.#pinging) return
    this.#pinging = true
    try {
      const own = new Set(this.ownClusters())
      // peers reached only through a relay are not pinged: the ping service, like dialProtocol(), would
      // dial a new relayed connection each time (see exchangeConnection())
      const queue = rt.libp2p
        .getPeers()
        .filter((p) => this.clustersOf(p.toString()).some((id) => own.has(id)))
        .filter((p) => exchangeConnection(rt.libp2p, p) !== undefined)
      const worker = async () => {
        for (let p = queue.shift(); p && !rt.signal.aborted; p = queue.shift()) {
          const id = p.toString()
          try {
            const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
            const rttMs = await rt.ping!.ping(p, { signal })
            this.touchPeer(id, { rttMs })
          } catch (err) {
            if (rt.signal.aborted) return
            this.recordFailure(id)
            rt.logger.debug(`ping ${id} failed: ${(err as Error).message}`)
          }
        }
      }
      await Promise.all(Array.from({ length: MAX_PINGS }, worker))
    } finally {
      this.#pinging = false
    }
  }

  // ---- connections

  #scheduleMaintain(): void {
    if (!this.#rt || this.#maintainSoon) return
    this.#maintainSoon = setTimeout(() => {
      this.#maintainSoon = undefined
      this.#maintain()
    }, 100)
    this.#maintainSoon.unref?.()
  }

  /** Protects the best peers of each own cluster, and dials members of clusters short of connections. */
  #maintain(): void {
    const rt = this.#rt
    if (!rt || rt.signal.aborted) return
    const connected = new Set(rt.libp2p.getPeers().map((p) => p.toString()))
    const now = Date.now()
    // members without trust go `forgetUntrustedAfter` after they left (oldest first; stop at the first too recent)
    const grace = Math.min(this.inactiveAfter, this.#forgetUntrustedAfter)
    for (const [peer, leftAt] of this.#leftUntrusted.entries()) {
      if (now - leftAt < grace) break
      this.#leftUntrusted.delete(peer)
      if (!connected.has(peer)) this.removePeer(peer, 'inactive')
    }
    const own = this.ownClusters()
    // Every ranked member of an own cluster carries a tag value by rank: the best `protectBest` the
    // full value (protected), the rest less and less, so libp2p's connection manager, which prunes the
    // lowest-valued peers first, drops the worst members first when over its limits.
    const values = new Map<string, number>()
    for (const id of own) {
      this.bestPeers(id, Number.MAX_SAFE_INTEGER).forEach((m, rank) => {
        const value =
          rank < this.protectBest ? CLUSTER_PEER_TAG_VALUE : Math.max(1, CLUSTER_PEER_TAG_VALUE / 2 - rank)
        values.set(m.peerId, Math.max(values.get(m.peerId) ?? 0, value))
      })
    }
    for (const [peer, value] of values) if (this.#tagValues.get(peer) !== value) this.#tagPeer(peer, value)
    for (const peer of [...this.#tagValues.keys()]) if (!values.has(peer)) this.#tagPeer(peer, undefined)

    // peers connected for `trustAfter` are remembered as trusted (they may leave before the next check)
    for (const [peer, since] of this.#connectedSince)
      if (now - since >= this.#trustAfter && !this.#trusted.has(peer)) this.#trusted.set(peer, true)
    for (const id of own) {
      const members = this.bestPeers(id, Number.MAX_SAFE_INTEGER)
      let deficit = this.targetConnectionsPerCluster - members.filter((m) => connected.has(m.peerId)).length
      for (const m of members) {
        if (deficit <= 0 || this.#dialing.size >= MAX_DIALS) break
        if (connected.has(m.peerId) || this.#dialing.has(m.peerId)) continue
        // only members this node has a reason to trust: a peer that came, claimed our tags and left is not one
        if (!this.#trusted.has(m.peerId)) continue
        if ((this.#backoff.get(m.peerId)?.until ?? 0) > now) continue
        // the addresses libp2p dials came from the peer: one dial per security.peerDialInterval, and a global rate
        if (this.#dialRate.available < 1) return
        if (rt.peerAddresses && !rt.peerAddresses.takeDial(m.peerId)) continue
        this.#dialRate.take()
        deficit--
        void this.#dial(m.peerId)
      }
    }
  }

  /** Sets (or, with undefined, removes) the peer's `meshkit-cluster` tag value. */
  #tagPeer(peer: string, value: number | undefined): void {
    const rt = this.#rt
    if (!rt) return
    if (value === CLUSTER_PEER_TAG_VALUE) this.#protected.add(peer)
    else this.#protected.delete(peer)
    if (value === undefined) this.#tagValues.delete(peer)
    else this.#tagValues.set(peer, value)
    const tags = { [CLUSTER_PEER_TAG]: value === undefined ? undefined : { value } }
    rt.libp2p.peerStore.merge(peerIdFromString(peer), { tags }).catch((err: Error) => {
      rt.logger.debug(`tagging ${peer} failed: ${err.message}`)
    })
  }

  async #dial(peer: string): Promise<void> {
    const rt = this.#rt
    if (!rt) return
    this.#dialing.add(peer)
    try {
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      await rt.libp2p.dial(peerIdFromString(peer), { signal })
      this.#backoff.delete(peer)
    } catch (err) {
      if (rt.signal.aborted) return
      const delay = Math.min((this.#backoff.get(peer)?.delay ?? BACKOFF_INITIAL_MS / 2) * 2, BACKOFF_MAX_MS)
      this.#backoff.set(peer, { until: Date.now() + delay, delay })
      this.recordFailure(peer)
      rt.logger.debug(
        `dialling cluster member ${peer} failed (next try in ${delay} ms): ${(err as Error).message}`,
      )
    } finally {
      this.#dialing.delete(peer)
    }
  }
}
