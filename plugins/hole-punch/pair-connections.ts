/**
 * The connections of a pair (this node and one peer), as the strategy sees them: which one carries a
 * proven path, which relayed one this node upgrades, a bounded direct dial on a peer's word, and the
 * pruning of what NAT traversal made redundant (dedupe.ts).
 */
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { describeConnection } from 'meshkit/plugin'
import { isRelayed, methodOfConnection } from './connections.js'
import { type PairConnection, redundantConnections } from './dedupe.js'
import type { PunchContext } from './punch-context.js'

/** After a connection opened or closed: the wait before the pair's connections are pruned. */
const PRUNE_DELAY_MS = 1000

export class PairConnections {
  /** Inbound WebRTC connections that carried identify (open ones). */
  readonly #proven = new Set<string>()
  readonly #pruneTimers = new Map<string, ReturnType<typeof setTimeout>>()

  constructor(
    readonly hp: PunchContext,
    /** Whether a decision on `peer` runs now (it may still need its relayed connection). */
    readonly deciding: (peer: string) => boolean,
  ) {}

  /** Open connections to `peer`. */
  connections(peer: string): Connection[] {
    return this.hp.ctx.libp2p
      .getConnections()
      .filter((c) => c.remotePeer.toString() === peer && c.status === 'open')
  }

  /** An open relayed connection to `peer`, if any (the oldest). */
  relayedConnection(peer: string): Connection | undefined {
    return this.connections(peer)
      .filter(isRelayed)
      .sort((a, b) => a.timeline.open - b.timeline.open)[0]
  }

  /** An inbound WebRTC connection carried identify: it has a two-way path. */
  prove(id: string): void {
    this.#proven.add(id)
  }

  /** A connection closed. */
  forget(id: string): void {
    this.#proven.delete(id)
  }

  /** A two-way path: direct, an outbound WebRTC connection (ICE connected), or an inbound one that carried identify. */
  provenPath(c: Connection): boolean {
    if (isRelayed(c)) return false
    if (describeConnection(c).transport !== 'webrtc' || c.direction === 'outbound') return true
    return this.#proven.has(c.id)
  }

  /** An open unlimited connection to `peer` with a proven path, if any. */
  usable(peer: string): Connection | undefined {
    return this.connections(peer).find((c) => this.provenPath(c))
  }

  /**
   * The relayed connection this node upgrades for `peer`: its own outbound one (the oldest). When both
   * dialled (a relayed connection each way), only the side with the lower peer id upgrades.
   */
  upgraderConnection(peer: string): Connection | undefined {
    const relayed = this.connections(peer).filter(isRelayed)
    const outbound = relayed
      .filter((c) => c.direction === 'outbound')
      .sort((a, b) => a.timeline.open - b.timeline.open)
    if (outbound.length === 0) return undefined
    const inbound = relayed.some((c) => c.direction === 'inbound')
    if (inbound && this.hp.ctx.peerId.toString() > peer) return undefined
    return outbound[0]
  }

  /** An open, unlimited, non-WebRTC connection to `peer` (e.g. one it dialled back), if any. */
  directConnection(peer: string): Connection | undefined {
    return this.hp.ctx.libp2p
      .getConnections()
      .find(
        (c) => c.remotePeer.toString() === peer && c.status === 'open' && methodOfConnection(c) === 'direct',
      )
  }

  /**
   * One bounded direct dial to the addresses a peer says it is public at: only those within
   * `network.addressScope`, and only one dial per peer per `security.peerDialInterval`.
   */
  dialDirect(peer: string, addrs: string[]): Promise<Connection> {
    const { ctx, opts } = this.hp
    const allowed = ctx.peerAddresses.filter(addrs)
    if (allowed.length === 0)
      return Promise.reject(
        new Error(`none of its addresses is in this node's address scope (${addrs.join(' ')})`),
      )
    if (!ctx.peerAddresses.takeDial(peer))
      return Promise.reject(new Error('already dialled on its word within security.peerDialInterval'))
    return ctx.libp2p.dial(
      allowed.map((a) => multiaddr(`${a}/p2p/${peer}`)),
      {
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(opts.directTimeout)]),
        force: true,
      },
    )
  }

  /** Closes what is redundant among the connections to `peer` (dedupe.ts), soon after they changed. */
  schedulePrune(peer: string, delay = PRUNE_DELAY_MS): void {
    if (this.hp.ctx.signal.aborted) return
    clearTimeout(this.#pruneTimers.get(peer))
    const timer = setTimeout(() => {
      this.#pruneTimers.delete(peer)
      this.#prune(peer)
    }, delay)
    timer.unref?.()
    this.#pruneTimers.set(peer, timer)
  }

  /** The node stops: no more pruning. */
  stop(): void {
    for (const t of this.#pruneTimers.values()) clearTimeout(t)
    this.#pruneTimers.clear()
  }

  #prune(peer: string): void {
    const { ctx, relayIds, relayClient, counters } = this.hp
    // a decision in progress may still need its relayed connection: after it (it prunes when done)
    if (ctx.signal.aborted || this.deciding(peer)) return
    // our relays keep their connections (a reservation lives on one of them)
    if (relayIds.has(peer) || relayClient?.reservations().some((r) => r.relay === peer)) return
    const conns = this.connections(peer)
    if (conns.length < 2) return
    // only the duplicates NAT traversal makes: two direct (TCP, QUIC) connections are not this plugin's
    if (!conns.some((c) => isRelayed(c) || describeConnection(c).transport === 'webrtc')) return
    const view: PairConnection[] = conns.map((c) => ({
      id: c.id,
      direction: c.direction,
      relayed: isRelayed(c),
      transport: describeConnection(c).transport,
      opened: c.timeline.open,
      proven: this.provenPath(c),
    }))
    const close = new Set(redundantConnections(view, ctx.peerId.toString() < peer))
    for (const c of conns) {
      if (!close.has(c.id)) continue
      counters.duplicateClosed()
      const info = describeConnection(c)
      ctx.logger.debug(`closing a redundant ${info.transport} connection to ${peer} (${c.id})`)
      ctx.events.emit('hole-punch:closed', {
        peerId: peer,
        connectionId: c.id,
        transport: info.transport,
        reason: isRelayed(c) && view.some((v) => v.proven) ? 'replaced' : 'duplicate',
      })
      c.close({ signal: AbortSignal.timeout(2000) }).catch((err: unknown) =>
        c.abort(err instanceof Error ? err : new Error(String(err))),
      )
    }
  }
}
