/** A remembered peer and the checks on its addresses. */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'

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

/** The address without a trailing `/p2p/<id>` (relay addresses keep the relay's id). */
export function stripPeer(address: string, id: string): string {
  const suffix = `/p2p/${id}`
  return address.endsWith(suffix) ? address.slice(0, -suffix.length) : address
}

/**
 * The longest address kept (characters): the file holds no longer one (cache-file.ts), so an address a
 * peer told (identify allows 8 KiB) or one dialled that is longer must not be kept either, else the node
 * would write a file it sets aside at its next start.
 */
export const MAX_ADDRESS_CHARS = 2048

/** Whether a multiaddr string parses and is worth dialling (not 0.0.0.0 or ::, not overlong). */
export function dialable(address: string): boolean {
  if (!address.startsWith('/') || address.length > MAX_ADDRESS_CHARS) return false
  try {
    const components = multiaddr(address).getComponents()
    if (components.length === 0) return false
    const host = components[0]
    return !(host.name === 'ip4' && host.value === '0.0.0.0') && !(host.name === 'ip6' && host.value === '::')
  } catch {
    return false
  }
}

export function validPeerId(id: string): boolean {
  try {
    return peerIdFromString(id).toString() === id
  } catch {
    return false
  }
}

/** True when a dial failed after the peer was last seen: it goes behind the peers that still work. */
export const failing = (p: CachedPeer) => (p.lastFailure ?? 0) > p.lastSeen

/** The IP address a multiaddr string starts with, if any. */
export function ipOfAddress(address: string): string | undefined {
  return /^\/ip[46]\/([^/]+)/.exec(address)?.[1]
}

/** A peer known only by what it said of itself: no dial of ours has reached it yet. */
export const unverified = (p: CachedPeer) => p.addrs.length === 0

/** The addresses to dial a peer at: those that worked for this node, else those it said it listens on. */
export const dialAddresses = (p: CachedPeer) => (p.addrs.length > 0 ? p.addrs : (p.heard ?? []))
