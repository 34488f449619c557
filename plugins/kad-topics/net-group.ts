import { isIPv4, isIPv6 } from 'node:net'
import type { Multiaddr } from '@multiformats/multiaddr'
import { multiaddr } from '@multiformats/multiaddr'
import { unmapIp } from 'meshkit'

/** The eight 16-bit groups of an IPv6 address (`::` expanded, an IPv4 tail converted). */
function ipv6Groups(ip: string): number[] | undefined {
  let text = ip.toLowerCase().split('%')[0]
  const v4 = /(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text)
  if (v4) {
    const [a, b, c, d] = v4[1].split('.').map(Number)
    text = `${text.slice(0, -v4[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail, ...rest] = text.split('::')
  if (rest.length > 0) return undefined
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((h) => Number.parseInt(h, 16)))
  const left = parse(head)
  const right = tail === undefined ? [] : parse(tail)
  const fill = 8 - left.length - right.length
  if (tail === undefined ? fill !== 0 : fill < 0) return undefined
  const groups = [...left, ...Array(Math.max(0, fill)).fill(0), ...right]
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : undefined
}

/**
 * The network an IP address belongs to, for spreading peers across networks: its /24 for IPv4
 * (`4:198.51.100`), its /48 for IPv6 (`6:2001:db8:1`). undefined for anything that is not an IP address.
 * One operator (or one attacker) usually holds addresses in one such network, not many.
 */
export function netGroup(ip: string): string | undefined {
  const addr = unmapIp(ip)
  if (isIPv4(addr)) return `4:${addr.split('.').slice(0, 3).join('.')}`
  if (!isIPv6(addr)) return undefined
  const groups = ipv6Groups(addr)
  return groups
    ? `6:${groups
        .slice(0, 3)
        .map((g) => g.toString(16))
        .join(':')}`
    : undefined
}

/** The network ({@link netGroup}) of the first IP in a multiaddr: for a relayed address, the relay's. */
export function netGroupOf(address: Multiaddr | string): string | undefined {
  try {
    const ma = typeof address === 'string' ? multiaddr(address) : address
    const ip = ma.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
    return ip === undefined ? undefined : netGroup(ip)
  } catch {
    return undefined
  }
}
