/** How cached peers rank, when a failing one is offered again, and how candidates spread across networks. */
import { isIPv4 } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'
import { type AddressScope, classifyIp, unmapIp } from 'meshkit/plugin'
import { type CachedPeer, dialAddresses, failing, ipOfAddress, unverified } from './cached-peer.js'

/**
 * How useful a peer has been: dials of ours that reached it (up to 50) and time spent connected (4
 * points per doubling of minutes), less 2 per failed dial in a row. A peer that merely connected to this
 * node scores nothing: it is not cached at all.
 */
export function usefulness(p: CachedPeer): number {
  return (
    Math.min(p.successes, 50) + 4 * Math.log2(1 + (p.uptime ?? 0) / 60_000) - 2 * Math.min(p.streak ?? 0, 10)
  )
}

/**
 * Best first: peers a dial of ours reached before those known only by their own word, then peers not
 * failing since last seen, then the most useful, then the most recently seen.
 */
export function comparePeers(a: CachedPeer, b: CachedPeer): number {
  return (
    Number(unverified(a)) - Number(unverified(b)) ||
    Number(failing(a)) - Number(failing(b)) ||
    usefulness(b) - usefulness(a) ||
    b.lastSeen - a.lastSeen ||
    a.id.localeCompare(b.id)
  )
}

/** First wait after a failed dial before a cached peer is offered again; doubles per failure in a row. */
export const RETRY_INITIAL_MS = 30_000
/** Longest such wait. */
export const RETRY_MAX_MS = 6 * 3_600_000
/** A peer whose last this many dials failed and that was not seen for a week is forgotten. */
export const FORGET_AFTER_FAILURES = 8
export const FORGET_AFTER_MS = 7 * 24 * 3_600_000

/** When a failing peer may be dialled again (ms since the epoch); 0 when it is not failing. */
export function retryAt(p: CachedPeer): number {
  const streak = p.streak ?? 0
  if (streak === 0 || !failing(p)) return 0
  return (p.lastFailure ?? 0) + Math.min(RETRY_MAX_MS, RETRY_INITIAL_MS * 2 ** Math.min(streak - 1, 20))
}

/**
 * The network of an address (an IPv4 /24, an IPv6 /48; an IPv4-mapped IPv6 address, as a dual-stack
 * socket shows an IPv4 peer, is its IPv4 /24), or the address itself when it has no IP.
 */
export function networkOf(address: string): string {
  const ip = /^\/ip[46]\/([^/]+)/.exec(address)?.[1]
  const ip4 = ip === undefined ? undefined : unmapIp(ip)
  if (ip4 && isIPv4(ip4)) return `4:${ip4.split('.').slice(0, 3).join('.')}`
  const ip6 = /^\/ip6\/([^/]+)/.exec(address)?.[1]
  if (ip6) {
    const [head, tail = ''] = ip6.toLowerCase().split('::')
    const left = head ? head.split(':') : []
    const right = tail ? tail.split(':') : []
    const groups = [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    return `6:${groups
      .slice(0, 3)
      .map((g) => Number.parseInt(g || '0', 16).toString(16))
      .join(':')}`
  }
  return address
}

/**
 * `peers` (best first) reordered so that consecutive ones come from different networks: the best of
 * each network in turn, then the second best of each, and so on. A cache filled from one network cannot
 * hand the bootstrapper only that network's peers.
 */
export function spreadAcrossNetworks(peers: readonly CachedPeer[]): CachedPeer[] {
  const groups = new Map<string, CachedPeer[]>()
  for (const p of peers) {
    const g = networkOf(dialAddresses(p)[0] ?? p.id)
    const list = groups.get(g)
    if (list) list.push(p)
    else groups.set(g, [p])
  }
  const out: CachedPeer[] = []
  const lists = [...groups.values()]
  for (let round = 0; out.length < peers.length; round++) {
    for (const list of lists) if (round < list.length) out.push(list[round])
  }
  return out
}

/**
 * Whether peers told at `address` count against MAX_TOLD_PER_NETWORK: an address public by this node's
 * own address classes (those `network.addressScope` 'public' lets in) or by `scope` (`publicCidrs`).
 * Only a LAN or this host is not capped (only scope 'private' or 'all' lets it in): libp2p's isPrivate
 * alone also calls e.g. 6to4 (2002::/16) private, which scope 'public' lets in.
 */
export function cappedPerNetwork(address: string, scope: AddressScope): boolean {
  const ip = ipOfAddress(address)
  if (ip === undefined || classifyIp(ip) === 'public') return true
  try {
    return scope.isPublic(multiaddr(address))
  } catch {
    return true // counted against its network: the stricter reading
  }
}
