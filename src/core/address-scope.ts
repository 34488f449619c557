import { cidrContains, parseCidr } from '@chainsafe/netmask'
import { isPrivate } from '@libp2p/utils'
import type { Multiaddr } from '@multiformats/multiaddr'

/**
 * Which addresses count as public. libp2p treats every private, loopback and documentation range as
 * private (and hard-codes that in identify, AutoNAT and DCUtR); `network.publicCidrs` lets a deployment
 * or a lab (whose "internet" uses 198.51.100.0/24 and 203.0.113.0/24) say that some of them are public
 * for Meshkit's own decisions, e.g. which peer addresses the DHT keeps.
 */
export interface AddressScope {
  /** The configured CIDRs that count as public. */
  readonly publicCidrs: readonly string[]
  /** True for a globally routable address, or one inside `publicCidrs`. */
  isPublic(ma: Multiaddr): boolean
}

/** Throws a TypeError naming the problem when `cidr` is not an IPv4/IPv6 CIDR. */
export function checkCidr(cidr: string): void {
  if (!/^[0-9a-fA-F.:]+\/\d{1,3}$/.test(cidr)) throw new TypeError('expected <ip>/<prefix length>')
  parseCidr(cidr)
}

export function createAddressScope(publicCidrs: readonly string[] = []): AddressScope {
  const ipOf = (ma: Multiaddr): string | undefined =>
    ma.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
  return {
    publicCidrs,
    isPublic(ma) {
      const ip = ipOf(ma)
      if (ip !== undefined && publicCidrs.some((cidr) => cidrContains(cidr, ip))) return true
      return !isPrivate(ma)
    },
  }
}
