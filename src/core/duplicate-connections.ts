import type { Connection, Libp2p } from '@libp2p/interface'
import type { Logger } from './logger.js'

export interface DuplicateConnectionsInit {
  /** How long after a second direct connection to a peer opened it is looked at (its first streams run). */
  settleMs: number
  /** How often a duplicate that still carries streams is looked at again. */
  retryMs: number
  /** Looks per duplicate before it is left open (it carries a long-lived stream, e.g. gossipsub's). */
  attempts: number
}

/** The defaults: a look 1 s after the duplicate opened, then every 2 s, 5 looks in all. */
export const DUPLICATE_CONNECTIONS: DuplicateConnectionsInit = {
  settleMs: 1_000,
  retryMs: 2_000,
  attempts: 5,
}

/**
 * Which of a peer's direct connections both ends keep: the one dialled by the peer with the lower id
 * (the oldest of those); both ends compute the same answer from the same two ids, so they close the
 * same connections and never both of them. `undefined` when fewer than two are open.
 */
export function connectionToKeep(self: string, conns: readonly Connection[]): Connection | undefined {
  const open = conns.filter((c) => c.status === 'open' && c.limits === undefined)
  if (open.length < 2) return undefined
  const remote = open[0].remotePeer.toString()
  const lowerDials = self < remote ? 'outbound' : 'inbound'
  const byAge = [...open].sort((a, b) => a.timeline.open - b.timeline.open)
  return byAge.find((c) => c.direction === lowerDials) ?? byAge[0]
}

/**
 * Closes duplicate direct connections: two peers that learn of each other at the same moment (a
 * rendezvous answer, a DHT lookup) dial each other, and both connections stay open for good: twice
 * the sockets, keep-alive pings, muxer and peer-store work, for nothing. Measured in
 * bench:rendezvous: 2-3 of a peer's ~11 connections at 10 peers.
 *
 * A duplicate is closed gracefully once it carries no stream (its identify and first exchanges ran),
 * looked at `settleMs` after it opened and every `retryMs` after, `attempts` times; one that keeps a
 * stream open (a long-lived protocol) is left alone. Relayed (limited) connections are not touched:
 * hole punching upgrades them and closes them itself. Work per connection event: the peer's own
 * connections; pending looks: at most one per peer with a duplicate.
 */
export function closeDuplicateConnections(
  libp2p: Libp2p,
  logger: Logger,
  init: DuplicateConnectionsInit = DUPLICATE_CONNECTIONS,
): { stop(): void; closed(): number } {
  const self = libp2p.peerId.toString()
  const pending = new Map<string, ReturnType<typeof setTimeout>>()
  let closed = 0
  let stopped = false

  const look = (peer: Connection['remotePeer'], attempt: number) => {
    const id = peer.toString()
    pending.delete(id)
    if (stopped) return
    const conns = libp2p.getConnections(peer)
    const keep = connectionToKeep(self, conns)
    if (keep === undefined) return
    let busy = false
    for (const c of conns) {
      if (c === keep || c.status !== 'open' || c.limits !== undefined) continue
      if (c.streams.length > 0) {
        busy = true
        continue
      }
      closed++
      logger.debug(`closing a duplicate ${c.direction} connection to ${id} (keeping ${keep.direction})`)
      c.close().catch((err: unknown) => c.abort(err instanceof Error ? err : new Error(String(err))))
    }
    if (busy && attempt + 1 < init.attempts) schedule(peer, init.retryMs, attempt + 1)
  }

  const schedule = (peer: Connection['remotePeer'], ms: number, attempt: number) => {
    const id = peer.toString()
    if (pending.has(id)) return
    const timer = setTimeout(() => look(peer, attempt), ms)
    timer.unref?.()
    pending.set(id, timer)
  }

  const onOpen = (evt: CustomEvent<Connection>) => {
    const c = evt.detail
    if (c.limits !== undefined) return
    let direct = 0
    for (const other of libp2p.getConnections(c.remotePeer))
      if (other.limits === undefined && other.status === 'open') direct++
    if (direct > 1) schedule(c.remotePeer, init.settleMs, 0)
  }
  libp2p.addEventListener('connection:open', onOpen)
  return {
    stop() {
      stopped = true
      libp2p.removeEventListener('connection:open', onOpen)
      for (const timer of pending.values()) clearTimeout(timer)
      pending.clear()
    },
    closed: () => closed,
  }
}
