import { cidrContains } from '@chainsafe/netmask'
import type { ConnectionGater, MultiaddrConnection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerAddressPolicy } from './peer-addresses.js'
import type { PeerReputation } from './reputation.js'

/** The IP address an (unrelayed) multiaddr starts with, if any. */
export function ipOf(address: Multiaddr): string | undefined {
  const first = address.getComponents()[0]
  return first && (first.name === 'ip4' || first.name === 'ip6') ? first.value : undefined
}

const relayed = (address: Multiaddr) => address.toString().includes('/p2p-circuit')

export interface NodeGaterInit {
  reputation: PeerReputation
  addresses: PeerAddressPolicy
  /** Inbound connections from one IP address still in their upgrade (handshake) at once. */
  maxPendingPerHost: () => number
  /** Addresses exempt from the per-host pending limit (`connections.allow`), as IP tests. */
  exempt: (ip: string) => boolean
}

/**
 * The kernel's own connection gater, asked before every plugin's:
 * - banned peers (and, with `security.banIps`, their IPs) cannot dial in or be dialled;
 * - libp2p dials only addresses the {@link PeerAddressPolicy} allows (or configured ones), whoever
 *   supplied them (identify, the DHT, a plugin);
 * - one IP address holds at most `connections.maxIncomingPendingPerHost` of the node's incoming
 *   connections that are still in their handshake: a host opening silent connections cannot take every
 *   slot of libp2p's global `maxIncomingPendingConnections` pool (relayed connections are not counted:
 *   their address names the relay).
 */
export function createNodeGater(init: NodeGaterInit): ConnectionGater & { pending(ip: string): number } {
  const { reputation, addresses } = init
  const pendingByHost = new Map<string, number>()
  const counted = new WeakMap<MultiaddrConnection, string>()
  const settle = (maConn: MultiaddrConnection) => {
    const host = counted.get(maConn)
    if (host === undefined) return
    counted.delete(maConn)
    const n = (pendingByHost.get(host) ?? 1) - 1
    if (n <= 0) pendingByHost.delete(host)
    else pendingByHost.set(host, n)
  }
  const bannedAddress = (address: Multiaddr) => {
    const ip = relayed(address) ? undefined : ipOf(address)
    return ip !== undefined && reputation.isIpBanned(ip)
  }
  return {
    pending: (ip) => pendingByHost.get(ip) ?? 0,
    denyDialPeer: (peer: PeerId) => reputation.isBanned(peer),
    denyDialMultiaddr: (address: Multiaddr) => bannedAddress(address) || !addresses.dialable(address),
    denyInboundConnection: (maConn: MultiaddrConnection) => {
      if (bannedAddress(maConn.remoteAddr)) return true
      if (relayed(maConn.remoteAddr)) return false
      const ip = ipOf(maConn.remoteAddr)
      if (ip === undefined || init.exempt(ip)) return false
      const n = pendingByHost.get(ip) ?? 0
      if (n >= init.maxPendingPerHost()) return true
      pendingByHost.set(ip, n + 1)
      counted.set(maConn, ip)
      maConn.addEventListener('close', () => settle(maConn), { once: true })
      return false
    },
    denyInboundEncryptedConnection: (peer: PeerId) => reputation.isBanned(peer),
    denyOutboundEncryptedConnection: (peer: PeerId) => reputation.isBanned(peer),
    denyInboundUpgradedConnection: (peer: PeerId, maConn: MultiaddrConnection) => {
      settle(maConn)
      return reputation.isBanned(peer)
    },
    denyOutboundUpgradedConnection: (peer: PeerId) => reputation.isBanned(peer),
    denyInboundRelayedConnection: (_relay: PeerId, remote: PeerId) => reputation.isBanned(remote),
    denyOutboundRelayedConnection: (source: PeerId, destination: PeerId) =>
      reputation.isBanned(source) || reputation.isBanned(destination),
    denyInboundRelayReservation: (source: PeerId) => reputation.isBanned(source),
  }
}

/**
 * A test for IP addresses covered by `connections.allow` entries (`/ip4/127.0.0.1`, or a range as
 * `/ip4/10.0.0.0/ipcidr/8`), as libp2p reads them.
 */
export function exemptionOf(allow: readonly string[]): (ip: string) => boolean {
  const cidrs: string[] = []
  for (const entry of allow) {
    const ip = /^\/ip([46])\/([^/]+)(?:\/ipcidr\/(\d+))?/.exec(entry)
    if (ip) cidrs.push(`${ip[2]}/${ip[3] ?? (ip[1] === '4' ? 32 : 128)}`)
  }
  if (cidrs.length === 0) return () => false
  return (ip) =>
    cidrs.some((cidr) => {
      try {
        return cidrContains(cidr, ip)
      } catch {
        return false
      }
    })
}
