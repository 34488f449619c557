import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Logger } from './logger.js'

export interface PeerStoreHygieneInit {
  /** How long a peer stays in the peer store after it disconnected, unless something values it. */
  graceMs: number
  /** Peers waiting for their check at once (the oldest is checked first when more come). */
  maxPending: number
  /** How often due peers are checked. */
  sweepMs: number
}

/** The defaults: two minutes of grace, 10,000 pending checks, a sweep every 10 s. */
export const PEER_STORE_HYGIENE: PeerStoreHygieneInit = {
  graceMs: 120_000,
  maxPending: 10_000,
  sweepMs: 10_000,
}

/**
 * Forgets peers nobody values: a peer that disconnected and, `graceMs` later, is still disconnected and
 * carries no peer-store tag (kad-dht's routing table, a relay's keep-alive, a topic or cluster member
 * all tag their peers) is deleted from libp2p's peer store. libp2p keeps every peer it ever met for
 * hours (addresses for 1 h, the peer for 6 h), so a stream of fresh identities that connect once (what
 * a Sybil flood is) would grow the peer store, its datastore on disk and the node's memory without
 * bound. Work is O(1) per disconnect and per checked peer.
 */
export function startPeerStoreHygiene(
  libp2p: Libp2p,
  logger: Logger,
  init: PeerStoreHygieneInit = PEER_STORE_HYGIENE,
): { stop(): void; pending(): number; forgotten(): number } {
  /** Peer id -> when to check it; insertion order is deadline order (the grace is constant). */
  const due = new Map<string, { peer: PeerId; at: number }>()
  let forgotten = 0
  let sweeping = false
  const onDisconnect = (evt: CustomEvent<PeerId>) => {
    const id = evt.detail.toString()
    due.delete(id)
    due.set(id, { peer: evt.detail, at: Date.now() + init.graceMs })
    if (due.size > init.maxPending) {
      const oldest = due.keys().next().value as string
      const entry = due.get(oldest)
      due.delete(oldest)
      if (entry) void check(entry.peer)
    }
  }
  const check = async (peer: PeerId) => {
    if (libp2p.getConnections(peer).length > 0) return
    try {
      const record = await libp2p.peerStore.get(peer)
      if (record.tags.size > 0) return
      await libp2p.peerStore.delete(peer)
      forgotten++
    } catch {
      // not in the store (any more), or the node is stopping
    }
  }
  const sweep = async () => {
    if (sweeping) return
    sweeping = true
    try {
      const now = Date.now()
      for (const [id, entry] of due) {
        if (entry.at > now) break
        due.delete(id)
        await check(entry.peer)
      }
    } finally {
      sweeping = false
    }
  }
  libp2p.addEventListener('peer:disconnect', onDisconnect)
  const timer = setInterval(() => {
    void sweep().catch((err: unknown) => logger.debug(`peer store hygiene: ${String(err)}`))
  }, init.sweepMs)
  timer.unref()
  return {
    stop: () => {
      clearInterval(timer)
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
      due.clear()
    },
    pending: () => due.size,
    forgotten: () => forgotten,
  }
}
