import { cidrContains } from '@chainsafe/netmask'
import type { ConnectionGater, MultiaddrConnection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerAddressPolicy } from './peer-addresses.js'
import type { PeerReputation } from './reputation.js'
import { LruMap, TokenBucket } from './token-bucket.js'

/** Inbound connections from one IP that may end before their handshake completes: a burst, then per second. */
const FAILED_HANDSHAKE_BURST = 10
const FAILED_HANDSHAKES_PER_SECOND = 0.5
/** How long an IP whose connections keep failing their handshake is refused. */
const FAILED_HANDSHAKE_COOLDOWN_MS = 60_000

/** The IP address an (unrelayed) multiaddr starts with, if any. */
export function ipOf(address: Multiaddr): string | undefined {
  const first = address.getComponents()[0]
  return first && (first.name === 'ip4' || first.name === 'ip6') ? first.value : undefined
}

const relayed = (address: Multiaddr) => address.toString().includes('/p2p-circuit')

/**
 * The "host" the per-host limits count by: an IPv4 address, or the /64 of an IPv6 one (a single
 * subscriber usually holds a whole /64: counting its addresses one by one would count nothing).
 */
export function hostKeyOf(ip: string): string {
  if (!ip.includes(':')) return ip
  const full = ip.includes('::')
    ? (() => {
        const [head, tail] = ip.split('::')
        const h = head ? head.split(':') : []
        const t = tail ? tail.split(':') : []
        return [...h, ...Array(8 - h.length - t.length).fill('0'), ...t]
      })()
    : ip.split(':')
  return `${full
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`
}

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
 *   their address names the relay);
 * - an IP whose inbound connections keep ending before their handshake completes (garbage, stalled
 *   handshakes: 10 at once, then one per 2 s) is refused for a minute: such a connection costs the node
 *   a socket and a handshake attempt but costs the sender nothing.
 */
export function createNodeGater(init: NodeGaterInit): ConnectionGater & { pending(ip: string): number } {
  const { reputation, addresses } = init
  const pendingByHost = new Map<string, number>()
  const counted = new WeakMap<MultiaddrConnection, string>()
  const failures = new LruMap<string, TokenBucket>(4096)
  const refusedUntil = new LruMap<string, number>(4096)
  /** The connection left its handshake: completed (`upgraded`), or closed before that (a failure). */
  const settle = (maConn: MultiaddrConnection, upgraded: boolean) => {
    const host = counted.get(maConn)
    if (host === undefined) return
    counted.delete(maConn)
    const n = (pendingByHost.get(host) ?? 1) - 1
    if (n <= 0) pendingByHost.delete(host)
    else pendingByHost.set(host, n)
    if (upgraded) return
    let bucket = failures.get(host)
    if (!bucket) {
      bucket = new TokenBucket(FAILED_HANDSHAKES_PER_SECOND, FAILED_HANDSHAKE_BURST)
      failures.set(host, bucket)
    }
    if (!bucket.take()) refusedUntil.set(host, Date.now() + FAILED_HANDSHAKE_COOLDOWN_MS)
  }
  const cooling = (ip: string) => {
    const until = refusedUntil.peek(ip)
    if (until === undefined) return false
    if (until > Date.now()) return true
    refusedUntil.delete(ip)
    return false
  }
  const bannedAddress = (address: Multiaddr) => {
    const ip = relayed(address) ? undefined : ipOf(address)
    return ip !== undefined && reputation.isIpBanned(ip)
  }
  return {
    pending: (ip) => pendingByHost.get(hostKeyOf(ip)) ?? 0,
    denyDialPeer: (peer: PeerId) => reputation.isBanned(peer),
    denyDialMultiaddr: (address: Multiaddr) => bannedAddress(address) || !addresses.dialable(address),
    denyInboundConnection: (maConn: MultiaddrConnection) => {
      if (bannedAddress(maConn.remoteAddr)) return true
      if (relayed(maConn.remoteAddr)) return false
      const ip = ipOf(maConn.remoteAddr)
      if (ip === undefined || init.exempt(ip)) return false
      const host = hostKeyOf(ip)
      if (cooling(host)) return true
      const n = pendingByHost.get(host) ?? 0
      if (n >= init.maxPendingPerHost()) return true
      pendingByHost.set(host, n + 1)
      counted.set(maConn, host)
      maConn.addEventListener('close', () => settle(maConn, false), { once: true })
      return false
    },
    denyInboundEncryptedConnection: (peer: PeerId) => reputation.isBanned(peer),
    denyOutboundEncryptedConnection: (peer: PeerId) => reputation.isBanned(peer),
    denyInboundUpgradedConnection: (peer: PeerId, maConn: MultiaddrConnection) => {
      settle(maConn, true)
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
