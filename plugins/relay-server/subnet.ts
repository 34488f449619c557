/** Addresses as the relay's per-IP and per-subnet reservation limits count them. */

/** The IP of a multiaddr's first component (`/ip4/1.2.3.4/...` → `1.2.3.4`); undefined without one. */
export function hostOf(addr: { toString(): string }): string | undefined {
  return /^\/ip[46]\/([^/]+)/.exec(addr.toString())?.[1]
}

/** Expands an IPv6 address to its eight 16-bit groups (undefined when it is not one). */
function ipv6Groups(ip: string): number[] | undefined {
  const [head, tail, extra] = ip.toLowerCase().split('::')
  if (extra !== undefined) return undefined
  const parse = (part: string) => (part === '' ? [] : part.split(':'))
  let left = parse(head)
  let right = tail === undefined ? [] : parse(tail)
  // an embedded IPv4 (::ffff:1.2.3.4) is two groups
  const last = (tail === undefined ? left : right).at(-1)
  if (last?.includes('.')) {
    const v4 = last.split('.').map(Number)
    const groups = [((v4[0] << 8) | v4[1]).toString(16), ((v4[2] << 8) | v4[3]).toString(16)]
    if (tail === undefined) left = [...left.slice(0, -1), ...groups]
    else right = [...right.slice(0, -1), ...groups]
  }
  const missing = 8 - left.length - right.length
  if (tail === undefined ? missing !== 0 : missing < 0) return undefined
  const groups = [...left, ...Array(tail === undefined ? 0 : missing).fill('0'), ...right].map((g) =>
    Number.parseInt(g, 16),
  )
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff)
    ? groups
    : undefined
}

/**
 * The network an IP belongs to for the per-subnet limit: an IPv4 /24 (`198.51.100.0/24`; an IPv4-mapped
 * IPv6 address counts as its IPv4), an IPv6 /48 (`2001:db8:1::/48`); anything else is its own subnet.
 */
export function subnetOf(ip: string): string {
  // an IPv4-mapped IPv6 address is its IPv4 address
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}$/i.exec(ip)
  if (v4) return `${v4[1]}.${v4[2]}.${v4[3]}.0/24`
  const groups = ipv6Groups(ip)
  if (!groups) return ip
  return `${groups
    .slice(0, 3)
    .map((g) => g.toString(16))
    .join(':')}::/48`
}
