/**
 * The libp2p side of the default clustering strategy: the tag exchange (/mesh/tags/1.0.0, tag-exchange.ts),
 * liveness, RTT metrics (ping), and connections driven by clusters (protected best peers, a target per
 * cluster: member-connections.ts). The parts share the service's state (service-state.ts).
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { LruMap, type z } from 'meshkit/plugin'
import { ClusterManager, type ClusterManagerOptions } from './cluster-manager.js'
import { MemberConnections } from './member-connections.js'
import { clusteringServiceOptions, resolveOptions } from './options.js'
import type { ServiceRuntime, ServiceState } from './service-state.js'
import { jaccard } from './similarity-index.js'
import { TagExchange } from './tag-exchange.js'
import { checkTags, TAGS_PROTOCOL } from './wire.js'

export { CLUSTER_PEER_TAG } from './member-connections.js'
export { methodOf, TAGS_BUDGET } from './tag-exchange.js'

/** Peers whose trust (see `trustAfter`) is remembered at once. */
const MAX_TRUSTED = 4096

/** What a ClusteringService is made with (see options.ts for each option and its default). */
export type ClusteringServiceOptions = z.input<typeof clusteringServiceOptions> &
  Pick<ClusterManagerOptions, 'clock' | 'clusterId'>

/**
 * The clustering API of a node (`node.api('clustering')`): the {@link ClusterManager} plus this node's own
 * tags (`tags()`, `setTags()`), the clusters it belongs to (`ownClusters()`) and the peers it protects.
 */
export class ClusteringService extends ClusterManager {
  readonly #state: ServiceState
  readonly #exchange: TagExchange
  readonly #connections: MemberConnections
  #pingInterval: number
  #maintainInterval: number
  readonly #off: Array<() => void> = []
  readonly #timers: ReturnType<typeof setInterval>[] = []

  constructor(options: ClusteringServiceOptions = {}) {
    super(options)
    const o = resolveOptions(clusteringServiceOptions, options)
    this.#state = {
      manager: this,
      tags: checkTags(o.tags),
      protectBest: o.protectBest,
      targetConnectionsPerCluster: o.targetConnectionsPerCluster,
      trustAfter: o.trustAfter,
      forgetUntrustedAfter: o.forgetUntrustedAfter,
      peerTags: new LruMap(this.maxPeers),
      trusted: new LruMap(MAX_TRUSTED),
      leftUntrusted: new LruMap(MAX_TRUSTED),
      connectedSince: new Map(),
    }
    this.#pingInterval = Math.max(100, o.pingInterval)
    this.#maintainInterval = Math.max(100, o.maintainInterval)
    this.#exchange = new TagExchange(this.#state)
    this.#connections = new MemberConnections(this.#state)
    this.on('*', () => this.#connections.scheduleMaintain())
  }

  /** This node's own clusters stay when empty (until `removeEmptyClusters`); remote peers' go at once. */
  protected override keepWhenEmpty(tags: ReadonlySet<string>): boolean {
    const own = this.#state.tags
    return own.length > 0 && jaccard(tags, own) >= this.threshold
  }

  /** How long (ms) a member this node never dialled must stay connected before it is dialled back. */
  get trustAfter(): number {
    return this.#state.trustAfter
  }

  /** Whether this node would dial `peer` back: it reached it itself, or `peer` stayed `trustAfter` connected. */
  isTrusted(peer: string): boolean {
    const state = this.#state
    if (state.trusted.has(peer)) return true
    const since = state.connectedSince.get(peer)
    return since !== undefined && Date.now() - since >= state.trustAfter
  }

  /** Best peers per own cluster that get the `meshkit-cluster` peer tag. */
  get protectBest(): number {
    return this.#state.protectBest
  }

  /** Connected members wanted per own cluster. */
  get targetConnectionsPerCluster(): number {
    return this.#state.targetConnectionsPerCluster
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
    const state = this.#state
    const o = resolveOptions(clusteringServiceOptions, options)
    const tags = checkTags(o.tags)
    const { protectBest, targetConnectionsPerCluster: target, trustAfter, forgetUntrustedAfter } = o
    const cleanupBefore = this.cleanupInterval
    const rulesChanged = super.reconfigure(options)
    state.trustAfter = trustAfter
    state.forgetUntrustedAfter = forgetUntrustedAfter
    if (state.peerTags.max !== this.maxPeers) {
      const peerTags = new LruMap<string, string[]>(this.maxPeers)
      for (const [peer, peerTagList] of state.peerTags.entries()) peerTags.set(peer, peerTagList)
      state.peerTags = peerTags
    }
    state.protectBest = protectBest
    state.targetConnectionsPerCluster = target
    const pingInterval = Math.max(100, o.pingInterval)
    const maintainInterval = Math.max(100, o.maintainInterval)
    const timersChanged =
      pingInterval !== this.#pingInterval ||
      maintainInterval !== this.#maintainInterval ||
      cleanupBefore !== this.cleanupInterval
    this.#pingInterval = pingInterval
    this.#maintainInterval = maintainInterval
    if (rulesChanged)
      for (const [peer, peerTags] of [...state.peerTags.entries()]) this.#exchange.apply(peer, peerTags)
    if (timersChanged && state.rt) {
      this.#stopTimers()
      this.#startTimers(state.rt)
    }
    this.setTags(tags)
    this.#connections.scheduleMaintain()
    return rulesChanged
  }

  /** This node's own tags. */
  tags(): string[] {
    return [...this.#state.tags]
  }

  /**
   * Replaces this node's tags (at most 64, each 1-64 characters; throws otherwise) and, when they
   * changed, sends them to every connected peer.
   */
  setTags(tags: Iterable<string>): void {
    const state = this.#state
    const next = checkTags([...tags])
    const same = next.length === state.tags.length && next.every((t, i) => t === state.tags[i])
    state.tags = next
    if (same || !state.rt) return
    for (const peer of state.rt.libp2p.getPeers()) void this.#exchange.exchange(peer)
    this.#connections.scheduleMaintain()
  }

  /** Ids of the clusters this node belongs to: those whose tags reach the threshold with its own. */
  ownClusters(): string[] {
    const own = this.#state.tags
    return own.length === 0 ? [] : this.findClustersForTags(own).map((m) => m.id)
  }

  /** Peers that currently carry the `meshkit-cluster` peer tag. */
  protectedPeers(): string[] {
    return this.#connections.protectedPeers()
  }

  // ---- lifecycle

  async startService(rt: ServiceRuntime): Promise<void> {
    const state = this.#state
    state.rt = rt
    const { libp2p } = rt
    await libp2p.handle(TAGS_PROTOCOL, (stream, connection) => this.#exchange.serve(stream, connection), {
      maxInboundStreams: 4,
      maxOutboundStreams: 4,
    })
    const onOpen = (evt: CustomEvent<Connection>) => {
      const c = evt.detail
      const peer = c.remotePeer.toString()
      if (!state.connectedSince.has(peer)) state.connectedSince.set(peer, Date.now())
      state.leftUntrusted.delete(peer)
      this.touchPeer(peer, this.#exchange.metricsOf(peer, c))
      if (c.direction === 'outbound') {
        // this node reached the peer itself: a reason to dial it again later
        state.trusted.set(peer, true)
        void this.#exchange.exchange(c.remotePeer)
      }
    }
    const onDisconnect = (evt: CustomEvent<PeerId>) => {
      const peer = evt.detail.toString()
      if (this.isTrusted(peer)) state.trusted.set(peer, true)
      else if (this.clustersOf(peer).length > 0) state.leftUntrusted.set(peer, Date.now())
      state.connectedSince.delete(peer)
      this.peerDisconnected(peer)
      this.#connections.scheduleMaintain()
    }
    libp2p.addEventListener('connection:open', onOpen)
    libp2p.addEventListener('peer:disconnect', onDisconnect)
    this.#off.push(
      () => libp2p.removeEventListener('connection:open', onOpen),
      () => libp2p.removeEventListener('peer:disconnect', onDisconnect),
    )
    this.#startTimers(rt)
  }

  #startTimers(rt: ServiceRuntime): void {
    const { libp2p } = rt
    const state = this.#state
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms)
      t.unref?.()
      this.#timers.push(t)
    }
    // a connection that is up is a sign of life; a peer gone for `inactiveAfter` is then cleaned up
    every(this.cleanupInterval, () => {
      for (const p of libp2p.getPeers()) this.touchPeer(p.toString())
      this.cleanup()
      this.#connections.forgetBackoffOfNonMembers()
      for (const peer of [...state.peerTags.keys()])
        if (this.clustersOf(peer).length === 0 && !state.connectedSince.has(peer)) state.peerTags.delete(peer)
    })
    every(this.maintainInterval, () => this.#connections.maintain())
    if (rt.ping) every(this.pingInterval, () => void this.#connections.pingAll())
  }

  async stopService(): Promise<void> {
    const rt = this.#state.rt
    this.#state.rt = undefined
    for (const off of this.#off.splice(0)) off()
    this.#stopTimers()
    this.#connections.cancelMaintain()
    if (rt) await rt.libp2p.unhandle(TAGS_PROTOCOL).catch(() => {})
  }

  #stopTimers(): void {
    for (const t of this.#timers.splice(0)) clearInterval(t)
  }
}
