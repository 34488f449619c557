import { cidrContains } from '@chainsafe/netmask'
import type { PeerId } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { classifyIp, type IpClass } from './ip-class.js'
import { LruMap } from './token-bucket.js'

/**
 * Which addresses a node dials (or sends UDP to) when a peer named them, `network.addressScope`:
 * - `public` (the default, right on the internet): globally routable addresses only
 * - `private` (a LAN mesh): also private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)
 * - `all` (a mesh on one machine, tests): also loopback and link-local
 * Ranges in `network.publicCidrs` count as public. Cloud metadata endpoints, unspecified, multicast and
 * reserved addresses are never dialled on a peer's word, whatever the scope (unless in `publicCidrs`).
 */
export type AddressScopeMode = 'public' | 'private' | 'all'

/** The node's rule for addresses that came from peers. Plugins reach it as `ctx.peerAddresses`. */
export interface PeerAddressPolicy {
  readonly scope: AddressScopeMode
  /**
   * Why this node must not dial or send to `address` (a multiaddr, a multiaddr string or an IP address)
   * when a peer named it; undefined when it may. Addresses without an IP (`/p2p/<relay>/p2p-circuit/...`)
   * are allowed; DNS names are allowed here (libp2p resolves them, and the node's connection gater checks
   * the resolved addresses), except `localhost`.
   */
  refuse(address: Multiaddr | string): string | undefined
  /** The addresses {@link refuse} allows, in their order. */
  filter<T extends Multiaddr | string>(addresses: readonly T[]): T[]
  /**
   * Takes the one dial (or burst of UDP) a peer's word may cause per `security.peerDialInterval`:
   * true the first time, false until the interval has passed.
   */
  takeDial(peer: PeerId | string): boolean
  /**
   * Marks an address as configured (from the config or a plugin's options, not from a peer): the node
   * dials it whatever its scope. Bounded (1,024 addresses).
   */
  trust(address: string): void
  /** Whether libp2p may dial `address` now: trusted, or allowed by {@link refuse}. */
  dialable(address: Multiaddr): boolean
}

const NEVER: ReadonlySet<IpClass> = new Set(['metadata', 'unspecified', 'multicast', 'reserved'])
const ALLOWED: Readonly<Record<AddressScopeMode, ReadonlySet<IpClass>>> = {
  public: new Set(['public']),
  private: new Set(['public', 'private']),
  all: new Set(['public', 'private', 'loopback', 'link-local']),
}
const MAX_TRUSTED = 1024
const IP_NAMES = new Set(['ip4', 'ip6'])
const DNS_NAMES = new Set(['dns', 'dns4', 'dns6', 'dnsaddr'])

/** The transport part of an address string: without a trailing `/p2p/<id>`. */
function withoutPeer(address: string): string {
  return address.replace(/\/p2p\/[^/]+$/, '')
}

export interface PeerAddressPolicyInit {
  scope: AddressScopeMode
  publicCidrs: readonly string[]
  /** ms between dials on one peer's word (read at each call: a reload may change it). */
  dialInterval: () => number
  now?: () => number
}

export function createPeerAddressPolicy(init: PeerAddressPolicyInit): PeerAddressPolicy {
  const { scope, publicCidrs, dialInterval, now = Date.now } = init
  const lastDial = new LruMap<string, number>(4096)
  const trusted = new Set<string>()
  /** Trusted DNS addresses by (peer id, port): libp2p hands the gater their resolved form. */
  const trustedNames: Array<{ peer?: string; port?: string }> = []

  const refuseIp = (ip: string): string | undefined => {
    if (publicCidrs.some((cidr) => cidrContains(cidr, ip))) return undefined
    const cls = classifyIp(ip)
    if (cls === undefined) return `${ip} is not an IP address`
    if (NEVER.has(cls)) return `${ip} is a ${cls} address`
    if (!ALLOWED[scope].has(cls)) return `${ip} is a ${cls} address (network.addressScope is '${scope}')`
    return undefined
  }

  const refuse = (address: Multiaddr | string): string | undefined => {
    if (typeof address === 'string' && !address.startsWith('/')) return refuseIp(address)
    let components: ReturnType<Multiaddr['getComponents']>
    try {
      components = (typeof address === 'string' ? multiaddr(address) : address).getComponents()
    } catch {
      return 'not a multiaddr'
    }
    for (const c of components) {
      if (c.name === 'ip6zone') continue // the zone of the ip6 that follows
      if (IP_NAMES.has(c.name) && c.value !== undefined) return refuseIp(c.value)
      if (DNS_NAMES.has(c.name)) {
        const name = (c.value ?? '').toLowerCase().replace(/\.$/, '')
        if ((name === 'localhost' || name.endsWith('.localhost')) && scope !== 'all')
          return `${name} names this host (network.addressScope is '${scope}')`
        return undefined
      }
      if (c.name === 'unix' || c.name === 'memory')
        return scope === 'all' ? undefined : `a /${c.name} address (network.addressScope is '${scope}')`
      if (c.name === 'p2p' || c.name === 'p2p-circuit') return undefined
    }
    return undefined
  }

  const isTrusted = (address: Multiaddr): boolean => {
    const text = address.toString()
    if (trusted.has(withoutPeer(text))) return true
    // a relayed address is dialled through its relay: a configured relay makes it dialable
    const circuit = text.indexOf('/p2p-circuit')
    if (circuit > 0 && trusted.has(withoutPeer(text.slice(0, circuit)))) return true
    if (trustedNames.length === 0) return false
    const components = address.getComponents()
    const peer = components.findLast((c) => c.name === 'p2p')?.value
    const port = components.find((c) => c.name === 'tcp' || c.name === 'udp')?.value
    return trustedNames.some((t) => t.peer !== undefined && t.peer === peer && (t.port ?? port) === port)
  }

  return {
    scope,
    refuse,
    filter: (addresses) => addresses.filter((a) => refuse(a) === undefined),
    takeDial(peer) {
      const id = peer.toString()
      const t = now()
      const last = lastDial.get(id)
      if (last !== undefined && t - last < dialInterval()) return false
      lastDial.set(id, t)
      return true
    },
    trust(address) {
      if (trusted.size >= MAX_TRUSTED) return
      let components: ReturnType<Multiaddr['getComponents']>
      try {
        components = multiaddr(address).getComponents()
      } catch {
        return
      }
      trusted.add(withoutPeer(address))
      const circuit = address.indexOf('/p2p-circuit')
      if (circuit > 0) trusted.add(withoutPeer(address.slice(0, circuit)))
      if (components.some((c) => DNS_NAMES.has(c.name)) && trustedNames.length < MAX_TRUSTED) {
        trustedNames.push({
          peer: components.findLast((c) => c.name === 'p2p')?.value,
          port: components.find((c) => c.name === 'tcp' || c.name === 'udp')?.value,
        })
      }
    },
    dialable: (address) => isTrusted(address) || refuse(address) === undefined,
  }
}
