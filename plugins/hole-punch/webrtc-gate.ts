/**
 * Every WebRTC dial goes through the strategy. A NATed node advertises `<relay>/p2p-circuit/webrtc/p2p/<id>`
 * beside `<relay>/p2p-circuit/p2p/<id>`, and libp2p's dialer sorts the WebRTC address first: a plain
 * `libp2p.dial(peerId)` (a topic's dial, a user's) would start an ICE punch by itself, outside any NAT-type
 * rule (a 6 s hopeless attempt between two symmetric NATs, a birthday punch's pinned port taken by the
 * wrong connection) and unaccounted for (`connection:method` never saw it). The gate lets through only
 * the dials the strategy makes; any other is served by the relayed connection to that peer (an open one,
 * or a new circuit through the same relay), whose `connection:open` then starts the strategy, which
 * upgrades it when the pair's NAT types allow.
 */
import type { Connection } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'

export interface WebRTCGate {
  /** The strategy is dialling `peer` over WebRTC now. */
  allowed(peer: string): boolean
  /** A WebRTC dial the strategy did not make: the relayed connection to `circuit` to use instead. */
  redirect(
    circuit: Multiaddr,
    peer: string,
    options: { signal?: AbortSignal; onProgress?: (evt: unknown) => void },
  ): Promise<Connection>
}

/** `<relay>/p2p-circuit/webrtc/p2p/<peer>`: the circuit address without `/webrtc`, and the peer. */
export function splitWebRTCAddress(ma: Multiaddr): { circuit: Multiaddr; peer?: string } {
  const components = ma.getComponents()
  const peer = components.findLast((c) => c.name === 'p2p')?.value
  return { circuit: multiaddr(components.filter((c) => c.name !== 'webrtc')), peer }
}

/** The WebRTC transport with its `dial` gated (everything else, listening included, untouched). */
export function gateWebRTCDials<T extends object>(transport: T, gate: WebRTCGate): T {
  return new Proxy(transport, {
    get(target, prop) {
      if (prop === 'dial') {
        const dial = Reflect.get(target, prop, target) as (
          ma: Multiaddr,
          options: never,
        ) => Promise<Connection>
        return (ma: Multiaddr, options: { signal?: AbortSignal; onProgress?: (evt: unknown) => void }) => {
          const { circuit, peer } = splitWebRTCAddress(ma)
          // only a circuit can carry the signalling: a non-circuit address is the transport's own business
          if (peer === undefined || gate.allowed(peer) || !circuit.toString().includes('/p2p-circuit'))
            return dial.call(target, ma, options as never)
          return gate.redirect(circuit, peer, options)
        }
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
