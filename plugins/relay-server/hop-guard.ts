/**
 * Per-peer budget for hop requests (`/libp2p/circuit/relay/0.2.0/hop`: RESERVE and CONNECT), which
 * @libp2p/circuit-relay-v2 limits per connection only (`maxInboundHopStreams`): a peer with several
 * connections, or one that opens streams and never finishes its request (each held until `hopTimeout`),
 * could otherwise take every slot. The relay service binds its handler (`onHop`) in its constructor and
 * registers it when it starts; this wraps it before then.
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { Budget } from 'meshkit/plugin'

/**
 * Wraps the hop handler of a circuit relay server instance: each request takes a ticket of the budget
 * (released once the request is answered: a circuit it set up no longer counts), a refused one is reset.
 * False when the instance has no such handler.
 */
export function guardHop(server: object, budget: () => Budget | undefined): boolean {
  const s = server as { onHop?: (stream: Stream, connection: Connection) => Promise<void> }
  if (typeof s.onHop !== 'function' || !Object.hasOwn(s, 'onHop')) return false
  const original = s.onHop
  s.onHop = async (stream, connection) => {
    const b = budget()
    if (!b) return original(stream, connection)
    const ticket = b.admit(connection.remotePeer.toString())
    if (!ticket.ok) {
      stream.abort(new Error(`hop request refused (${ticket.reason})`))
      return
    }
    try {
      await original(stream, connection)
    } finally {
      ticket.release()
    }
  }
  return true
}
