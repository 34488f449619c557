/**
 * What a running node does about its remote peers: bans enforced, peers nobody values forgotten,
 * duplicate connections closed.
 */
import type { Libp2p } from '@libp2p/interface'
import { closeDuplicateConnections } from './duplicate-connections.js'
import type { Logger } from './logger.js'
import { ipOf } from './node-gater.js'
import { startPeerStoreHygiene } from './peer-store-hygiene.js'
import type { Reputation } from './reputation.js'

/** Starts the node's peer guards (bans, peer store hygiene, duplicates); returns what stops them. */
export function guardPeers(libp2p: Libp2p, reputation: Reputation, logger: Logger): Array<() => void> {
  const hygiene = startPeerStoreHygiene(libp2p, logger)
  const duplicates = closeDuplicateConnections(libp2p, logger)
  return [enforceBans(libp2p, reputation), () => hygiene.stop(), () => duplicates.stop()]
}

/**
 * While the node runs, a ban hangs up on the peer (and, with `security.banIps`, on every direct
 * connection from its IPs); the reputation learns the IPs of a peer from its direct connections.
 * Returns the function that stops the hang-ups.
 */
export function enforceBans(libp2p: Libp2p, reputation: Reputation): () => void {
  reputation.ipsOf = (peer) => {
    const ips = new Set<string>()
    for (const c of libp2p.getConnections()) {
      if (c.remotePeer.toString() !== peer || c.limits !== undefined) continue
      const address = c.remoteAddr.toString()
      if (address.includes('/p2p-circuit')) continue
      const ip = ipOf(c.remoteAddr)
      if (ip !== undefined) ips.add(ip)
    }
    return [...ips]
  }
  return reputation.onBan((ban) => {
    const targets = libp2p.getConnections().filter((c) => {
      if (c.remotePeer.toString() === ban.peerId) return true
      if (ban.ips.length === 0 || c.remoteAddr.toString().includes('/p2p-circuit')) return false
      const ip = ipOf(c.remoteAddr)
      return ip !== undefined && ban.ips.includes(ip)
    })
    for (const c of targets) c.abort(new Error(`peer banned: ${ban.reason}`))
  })
}
