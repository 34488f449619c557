import { BlockList, isIPv4, isIPv6 } from 'node:net'

/**
 * What kind of IP address this is, for deciding whether a node may dial or send to it on a peer's word.
 * - `public`: globally routable
 * - `private`: LAN and carrier ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) and the other
 *   special-purpose ranges libp2p counts as private (documentation, benchmarking)
 * - `loopback`, `link-local`: this host, this link
 * - `metadata`: cloud instance metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200)
 * - `unspecified`, `multicast`, `reserved`: never a peer (0/8, ::, 224/4, ff00::/8, 240/4, broadcast)
 */
export type IpClass =
  | 'public'
  | 'private'
  | 'loopback'
  | 'link-local'
  | 'metadata'
  | 'unspecified'
  | 'multicast'
  | 'reserved'

function list(entries: ReadonlyArray<[string, number]>): BlockList {
  const blocks = new BlockList()
  for (const [net, prefix] of entries) blocks.addSubnet(net, prefix, isIPv4(net) ? 'ipv4' : 'ipv6')
  return blocks
}

const METADATA = new Set(['169.254.169.254', 'fd00:ec2::254', '100.100.100.200'])

const CLASSES: ReadonlyArray<[IpClass, BlockList]> = [
  [
    'unspecified',
    list([
      ['0.0.0.0', 8],
      ['::', 128],
    ]),
  ],
  [
    'loopback',
    list([
      ['127.0.0.0', 8],
      ['::1', 128],
    ]),
  ],
  [
    'link-local',
    list([
      ['169.254.0.0', 16],
      ['fe80::', 10],
    ]),
  ],
  [
    'multicast',
    list([
      ['224.0.0.0', 4],
      ['ff00::', 8],
    ]),
  ],
  ['reserved', list([['240.0.0.0', 4]])],
  [
    'private',
    list([
      ['10.0.0.0', 8],
      ['100.64.0.0', 10],
      ['172.16.0.0', 12],
      ['192.0.0.0', 24],
      ['192.0.2.0', 24],
      ['192.31.196.0', 24],
      ['192.52.193.0', 24],
      ['192.88.99.0', 24],
      ['192.168.0.0', 16],
      ['192.175.48.0', 24],
      ['198.18.0.0', 15],
      ['198.51.100.0', 24],
      ['203.0.113.0', 24],
      ['fc00::', 7],
      ['2001:db8::', 32],
    ]),
  ],
]

/** `::ffff:1.2.3.4` (and its hex form) as `1.2.3.4`; other addresses as they are. */
export function unmapIp(ip: string): string {
  const lower = ip.toLowerCase()
  const dotted = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(lower)
  if (dotted) return dotted[1]
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower)
  if (hex) {
    const hi = Number.parseInt(hex[1], 16)
    const lo = Number.parseInt(hex[2], 16)
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  }
  return ip
}

/** The class of an IP address string; undefined when it is no IP address. */
export function classifyIp(ip: string): IpClass | undefined {
  const addr = unmapIp(ip)
  const type = isIPv4(addr) ? 'ipv4' : isIPv6(addr) ? 'ipv6' : undefined
  if (!type) return undefined
  if (METADATA.has(addr.toLowerCase())) return 'metadata'
  if (addr === '255.255.255.255') return 'reserved'
  for (const [cls, blocks] of CLASSES) if (blocks.check(addr, type)) return cls
  return 'public'
}
