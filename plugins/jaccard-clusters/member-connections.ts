import { peerIdFromString } from '@libp2p/peer-id'
import { TokenBucket } from 'meshkit/plugin'
import { OP_TIMEOUT_MS, type ServiceState } from './service-state.js'
import { exchangeConnection } from './tag-exchange.js'

/** The libp2p peer tag on the best peers of this node's clusters (the connection manager keeps them). */
export const CLUSTER_PEER_TAG = 'meshkit-cluster'
const CLUSTER_PEER_TAG_VALUE = 100
/** Dials in flight at once to fill clusters. */
const MAX_DIALS = 4
const BACKOFF_INITIAL_MS = 1_000
const BACKOFF_MAX_MS = 60_000
/** Pings in flight at once. */
const MAX_PINGS = 8
/** Dials to cluster members across all clusters: per second sustained, and at once above that. */
const DIAL_RATE_PER_SECOND = 1
const DIAL_BURST = 8

/**
 * The connections to members of this node's own clusters: the best carry the `meshkit-cluster` peer tag
 * (by rank, so libp2p's connection manager drops the worst first), clusters short of connections get
 * trusted members dialled (with backoff and a global rate), and connected members are pinged (RTT).
 */
export class MemberConnections {
  /** Dials to cluster members across all clusters. */
  readonly #dialRate = new TokenBucket(DIAL_RATE_PER_SECOND, DIAL_BURST)
  #maintainSoon?: ReturnType<typeof setTimeout>
  /** Peers that carry the cluster peer tag. */
  readonly #protected = new Set<string>()
  /** The `meshkit-cluster` tag value each ranked member carries now. */
  readonly #tagValues = new Map<string, number>()
  readonly #dialing = new Set<string>()
  readonly #backoff = new Map<string, { until: number; delay: number }>()
  #pinging = false

  constructor(private readonly state: ServiceState) {}

  /** Peers that currently carry the `meshkit-cluster` peer tag. */
  protectedPeers(): string[] {
    return [...this.#protected]
  }

  /** Forgets the dial backoff of peers that are no longer members of any cluster. */
  forgetBackoffOfNonMembers(): void {
    for (const peer of [...this.#backoff.keys()])
      if (this.state.manager.clustersOf(peer).length === 0) this.#backoff.delete(peer)
  }

  /** Runs {@link maintain} soon (once for a burst of changes), while the service runs. */
  scheduleMaintain(): void {
    if (!this.state.rt || this.#maintainSoon) return
    this.#maintainSoon = setTimeout(() => {
      this.#maintainSoon = undefined
      this.maintain()
    }, 100)
    this.#maintainSoon.unref?.()
  }

  /** Cancels a scheduled {@link maintain} (the service stops). */
  cancelMaintain(): void {
    clearTimeout(this.#maintainSoon)
    this.#maintainSoon = undefined
  }

  /** Protects the best peers of each own cluster, and dials members of clusters short of connections. */
  maintain(): void {
    const { state } = this
    const { manager, rt } = state
    if (!rt || rt.signal.aborted) return
    const connected = new Set(rt.libp2p.getPeers().map((p) => p.toString()))
    const now = Date.now()
    // members without trust go `forgetUntrustedAfter` after they left (oldest first; stop at the first too recent)
    const grace = Math.min(manager.inactiveAfter, state.forgetUntrustedAfter)
    for (const [peer, leftAt] of state.leftUntrusted.entries()) {
      if (now - leftAt < grace) break
      state.leftUntrusted.delete(peer)
      if (!connected.has(peer)) manager.removePeer(peer, 'inactive')
    }
    const own = manager.ownClusters()
    // Every ranked member of an own cluster carries a tag value by rank: the best `protectBest` the
    // full value (protected), the rest less and less, so libp2p's connection manager, which prunes the
    // lowest-valued peers first, drops the worst members first when over its limits.
    const values = new Map<string, number>()
    for (const id of own) {
      manager.bestPeers(id, Number.MAX_SAFE_INTEGER).forEach((m, rank) => {
        const value =
          rank < state.protectBest ? CLUSTER_PEER_TAG_VALUE : Math.max(1, CLUSTER_PEER_TAG_VALUE / 2 - rank)
        values.set(m.peerId, Math.max(values.get(m.peerId) ?? 0, value))
      })
    }
    for (const [peer, value] of values) if (this.#tagValues.get(peer) !== value) this.#tagPeer(peer, value)
    for (const peer of [...this.#tagValues.keys()]) if (!values.has(peer)) this.#tagPeer(peer, undefined)

    // peers connected for `trustAfter` are remembered as trusted (they may leave before the next check)
    for (const [peer, since] of state.connectedSince)
      if (now - since >= state.trustAfter && !state.trusted.has(peer)) state.trusted.set(peer, true)
    for (const id of own) {
      const members = manager.bestPeers(id, Number.MAX_SAFE_INTEGER)
      let deficit = state.targetConnectionsPerCluster - members.filter((m) => connected.has(m.peerId)).length
      for (const m of members) {
        if (deficit <= 0 || this.#dialing.size >= MAX_DIALS) break
        if (connected.has(m.peerId) || this.#dialing.has(m.peerId)) continue
        // only members this node has a reason to trust: a peer that came, claimed our tags and left is not one
        if (!state.trusted.has(m.peerId)) continue
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
    const rt = this.state.rt
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
    const rt = this.state.rt
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
      this.state.manager.recordFailure(peer)
      rt.logger.debug(
        `dialling cluster member ${peer} failed (next try in ${delay} ms): ${(err as Error).message}`,
      )
    } finally {
      this.#dialing.delete(peer)
    }
  }

  /** Pings every connected member of this node's own clusters (a few at a time): RTT on success, a failure otherwise. */
  async pingAll(): Promise<void> {
    const { manager, rt } = this.state
    if (!rt?.ping || this.#pinging) return
    this.#pinging = true
    try {
      const own = new Set(manager.ownClusters())
      // peers reached only through a relay are not pinged: the ping service, like dialProtocol(), would
      // dial a new relayed connection each time (see exchangeConnection())
      const queue = rt.libp2p
        .getPeers()
        .filter((p) => manager.clustersOf(p.toString()).some((id) => own.has(id)))
        .filter((p) => exchangeConnection(rt.libp2p, p) !== undefined)
      const worker = async () => {
        for (let p = queue.shift(); p && !rt.signal.aborted; p = queue.shift()) {
          const id = p.toString()
          try {
            const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
            const rttMs = await rt.ping!.ping(p, { signal })
            manager.touchPeer(id, { rttMs })
          } catch (err) {
            if (rt.signal.aborted) return
            manager.recordFailure(id)
            rt.logger.debug(`ping ${id} failed: ${(err as Error).message}`)
          }
        }
      }
      await Promise.all(Array.from({ length: MAX_PINGS }, worker))
    } finally {
      this.#pinging = false
    }
  }
}
