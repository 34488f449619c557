import type { Connection, ConnectionGater, MultiaddrConnection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Facts, Verdict } from './rules.js'

/** The facts an address gives: its IP (not for a relayed address: that IP is the relay's) and peer id. */
export function factsOf(address: Multiaddr): { peer?: string; ip?: string; relayed: boolean; dns: boolean } {
  const components = address.getComponents()
  const circuit = components.findIndex((c) => c.name === 'p2p-circuit')
  if (circuit >= 0) {
    const peer = components.slice(circuit + 1).find((c) => c.name === 'p2p')?.value
    return { peer, relayed: true, dns: false }
  }
  const first = components[0]
  const ip = first && (first.name === 'ip4' || first.name === 'ip6') ? first.value : undefined
  const dns = first?.name.startsWith('dns') === true
  const peer = components.findLast((c) => c.name === 'p2p')?.value
  return { peer, ip, relayed: false, dns }
}

/**
 * A libp2p connection gater applying `judge` at every step where it can tell: before a dial (peer id,
 * then each address), when an inbound connection is accepted (its IP), once the handshake named the peer
 * (both), and for relayed connections by the remote peer's id (their IP is the relay's). As a relay, it
 * refuses reservations and circuits for denied peers (the others are connected, so they passed the gate).
 */
export function createGater(judge: (facts: Facts) => Verdict): ConnectionGater {
  const refused = (facts: Facts) => judge(facts) !== 'allowed'
  const connection = (peer: PeerId, maConn: MultiaddrConnection) => {
    const f = factsOf(maConn.remoteAddr)
    return refused({ peer: peer.toString(), ip: f.relayed ? undefined : f.ip })
  }
  const peerOnly = (peer: PeerId) => judge({ peer: peer.toString() }) === 'denied'
  return {
    denyDialPeer: (peer) => refused({ peer: peer.toString(), later: { ip: true } }),
    denyDialMultiaddr: (address) => {
      const f = factsOf(address)
      return refused({ peer: f.peer, ip: f.ip, later: { peer: f.peer === undefined, ip: f.dns } })
    },
    denyInboundConnection: (maConn) => {
      const f = factsOf(maConn.remoteAddr)
      if (f.relayed) return f.peer !== undefined && refused({ peer: f.peer })
      return refused({ ip: f.ip, later: { peer: true } })
    },
    denyOutboundConnection: connection,
    denyInboundEncryptedConnection: connection,
    denyOutboundEncryptedConnection: connection,
    denyInboundUpgradedConnection: connection,
    denyOutboundUpgradedConnection: connection,
    denyInboundRelayedConnection: (_relay, remote) => refused({ peer: remote.toString() }),
    denyOutboundRelayedConnection: (source, destination) => peerOnly(source) || peerOnly(destination),
    denyInboundRelayReservation: (source) => peerOnly(source),
  }
}

/** Whether an open connection would be refused now (for hanging up after the lists changed). */
export function connectionRefused(judge: (facts: Facts) => Verdict, c: Connection): boolean {
  const f = factsOf(c.remoteAddr)
  return judge({ peer: c.remotePeer.toString(), ip: f.relayed ? undefined : f.ip }) !== 'allowed'
}
