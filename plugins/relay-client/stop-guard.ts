/**
 * Circuit relay v2's STOP handler (`/libp2p/circuit/relay/0.2.0/stop`, served by the circuit relay
 * transport) takes a STOP CONNECT from any connected peer: before it reads the request it starts listening
 * on the sender as a relay, then answers OK and upgrades the stream as a relayed connection from whatever
 * peer id the sender named (a forged "relayed" connection, with the limits the sender chose or none).
 * Only a relay this node holds a reservation on has any reason to send one. This guard wraps the
 * transport's handler (before the transport starts, so the handler it registers is the guarded one):
 * a STOP stream from any other peer is reset at once, unread, and the sender is reported.
 *
 * The connection gater's `denyInboundRelayedConnection` (see {@link relayedConnectionGater}) says the
 * same after the request was read: a second line, for a handler this guard could not wrap.
 */
import type { Connection, ConnectionGater, PeerId, Stream } from '@libp2p/interface'

/** What a peer is to this node as a relay: one it holds a reservation on, one it configured, or neither. */
export type RelayStanding = 'reserved' | 'configured' | undefined

export interface StopGuardInit {
  standing(peer: PeerId): RelayStanding
  /** Told each STOP stream refused (`configured`: from a configured relay that holds no reservation for us). */
  onRefused(peer: PeerId, configured: boolean): void
}

/** Whether a connection is a direct one (a relay is reached directly; a STOP over a relayed one is refused). */
const direct = (c: Connection) => c.limits === undefined && !c.remoteAddr.toString().includes('/p2p-circuit')

/**
 * Wraps the STOP handler of a circuit relay transport instance (`@libp2p/circuit-relay-v2`, which binds
 * `onStop` in its constructor and registers it at start). False when the instance has no such handler.
 */
export function guardStop(transport: object, init: StopGuardInit): boolean {
  const t = transport as { onStop?: (stream: Stream, connection: Connection) => Promise<void> }
  if (typeof t.onStop !== 'function' || !Object.hasOwn(t, 'onStop')) return false
  const original = t.onStop
  t.onStop = async (stream, connection) => {
    const standing = direct(connection) ? init.standing(connection.remotePeer) : undefined
    if (standing !== 'reserved') {
      stream.abort(new Error('STOP refused: not from a relay this node holds a reservation on'))
      init.onRefused(connection.remotePeer, standing === 'configured')
      return
    }
    return original(stream, connection)
  }
  return true
}

/** The gater part: an inbound relayed connection only through a relay this node holds a reservation on. */
export function relayedConnectionGater(init: StopGuardInit): ConnectionGater {
  return {
    denyInboundRelayedConnection: (relay: PeerId) => {
      const standing = init.standing(relay)
      if (standing === 'reserved') return false
      init.onRefused(relay, standing === 'configured')
      return true
    },
  }
}
