import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { type ConnectionMethodSource, coalescePerKey, connectionMethod } from 'meshkit/plugin'
import type { ConnectionMethod } from './cluster-manager.js'
import { OP_TIMEOUT_MS, type ServiceRuntime, type ServiceState } from './service-state.js'
import {
  decodeLengthPrefix,
  decodeTags,
  encodeTags,
  TAG_LIMITS,
  TAGS_PROTOCOL,
  TagsWireError,
} from './wire.js'

/**
 * Budget of the tag exchanges remote peers start. An honest peer starts one per connection and one per
 * change of its tags: per peer one every 2 s sustained (5 at once), 2 in flight, 128 KiB a minute; all
 * peers together 50 a second, 16 in flight.
 */
export const TAGS_BUDGET = {
  ratePerSecond: 0.5,
  burst: 5,
  concurrency: 2,
  bytesPerMinute: 128 * 1024,
  globalRatePerSecond: 50,
  globalConcurrency: 16,
} as const
/** Length-prefixed messages of at most 8 KiB, with a prefix of at most 2 bytes (see decodeLengthPrefix). */
const LP_OPTIONS = { maxDataLength: TAG_LIMITS.maxMessageBytes, lengthDecoder: decodeLengthPrefix }
/** Errors that mean the peer's bytes broke the wire format (penalized as `malformed`). */
const MALFORMED = new Set([
  'InvalidDataLengthError',
  'InvalidDataLengthLengthError',
  'InvalidMessageLengthError',
])
const isMalformed = (err: unknown) =>
  err instanceof TagsWireError || (err instanceof Error && MALFORMED.has(err.name))

/**
 * How a connection reached the peer: the shared judgement (`connectionMethod` of `meshkit/plugin`:
 * relayed when limited or a circuit, hole-punched when WebRTC or when a 'connection-methods' provider
 * such as holePunch() says so, else direct), the same the control API, `mesh status` and the metrics use.
 */
export function methodOf(
  connection: Connection,
  sources: readonly ConnectionMethodSource[] = [],
): ConnectionMethod {
  return connectionMethod(connection, undefined, sources)
}

/**
 * The connection a tag exchange (or a ping) with `peer` runs on: an open, unlimited one, or none; it
 * never dials. libp2p's `dialProtocol()` does not reuse a limited (relayed) connection: it dials a new
 * circuit through the relay, then closes it as a duplicate of the one already open (same address), and
 * that new outbound connection's `connection:open` asked for the next exchange: a peer reached only
 * through a relay got dozens of relayed connections opened and closed a second. Exchanges stay off
 * relayed connections (the relay's budget, 128 KiB and 2 min by default, is kept for hole punching);
 * they run once the peer has a direct or hole-punched connection, whose `connection:open` starts one.
 */
export function exchangeConnection(
  libp2p: Pick<Libp2p, 'getConnections'>,
  peer: PeerId,
): Connection | undefined {
  return libp2p.getConnections(peer).find((c) => c.status === 'open' && c.limits === undefined)
}

/**
 * The tag exchange (`/mesh/tags/1.0.0`, see wire.ts): this node sends its tags and hears the peer's,
 * which assign the peer to clusters. It runs on connections that are up, never dialling.
 */
export class TagExchange {
  constructor(private readonly state: ServiceState) {}

  /** Assigns `peer` to clusters by the tags it sent, and keeps them while it is a member or connected. */
  apply(peer: string, tags: string[]): void {
    const { state } = this
    const { manager } = state
    manager.assignPeer(peer, tags, this.metricsOf(peer))
    // kept to re-assign the peer when the rules change, while it is a member or connected (bounded)
    const member = manager.clustersOf(peer).length > 0
    if (member || state.connectedSince.has(peer)) state.peerTags.set(peer, [...tags])
    else state.peerTags.delete(peer)
    // tags served after the peer's last connection closed (its message and its FIN in one read): it
    // left before this made it a member, so nothing else starts its `forgetUntrustedAfter` clock
    if (
      member &&
      !state.connectedSince.has(peer) &&
      !state.trusted.has(peer) &&
      !state.leftUntrusted.has(peer)
    )
      state.leftUntrusted.set(peer, Date.now())
    state.rt?.logger.debug(
      `${peer} has tags [${tags.join(', ')}]: clusters ${manager.clustersOf(peer).join(', ')}`,
    )
  }

  /** The connection method and since when `peer` is connected (on `connection`, or its first one). */
  metricsOf(peer: string, connection?: Connection) {
    const libp2p = this.state.rt?.libp2p
    if (!libp2p) return {}
    const conns = libp2p.getConnections(peerIdFromString(peer))
    const c = connection ?? conns[0]
    if (!c) return {}
    return {
      method: methodOf(c, this.state.rt?.methodSources?.() ?? []),
      connectedSince: this.state.connectedSince.get(peer),
    }
  }

  /** One exchange per peer at a time; a request made while one runs makes one follow-up exchange. */
  readonly exchange = coalescePerKey(
    (peer: PeerId) => this.#exchangeOnce(peer),
    (peer) => peer.toString(),
    () => this.state.rt !== undefined,
  )

  async #exchangeOnce(peer: PeerId): Promise<void> {
    const rt = this.state.rt
    if (!rt) return
    const id = peer.toString()
    let stream: Stream | undefined
    try {
      const connection = exchangeConnection(rt.libp2p, peer)
      if (!connection) return // not connected, or only over a relay: see exchangeConnection()
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      stream = await connection.newStream(TAGS_PROTOCOL, { signal })
    } catch (err) {
      if (!rt.signal.aborted) rt.logger.debug(`no tag exchange with ${id}: ${(err as Error).message}`)
      return
    }
    try {
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      const lp = lpStream(stream, LP_OPTIONS)
      await lp.write(encodeTags(this.state.tags), { signal })
      const reply = decodeTags((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      this.apply(id, reply.tags)
    } catch (err) {
      stream.abort(err as Error)
      if (rt.signal.aborted) return
      this.#protocolError(rt, id, err, 'with')
    }
  }

  /** Reports a failed exchange; a message that broke the format costs the peer `malformed` points. */
  #protocolError(rt: ServiceRuntime, peer: string, err: unknown, how: 'with' | 'from'): void {
    const message = err instanceof Error ? err.message : String(err)
    if (isMalformed(err)) rt.reputation?.penalize(peer, 'malformed', `${TAGS_PROTOCOL}: ${message}`)
    rt.logger.debug(`bad tag exchange ${how} ${peer}: ${message}`)
    rt.events.emit('clustering:protocol-error', { peerId: peer, error: message })
  }

  /**
   * Answers a peer's tags with this node's. Each exchange a peer starts takes from its budget (rate,
   * concurrency, bytes: see {@link TAGS_BUDGET}); over it, the stream is reset unread (and the budget
   * penalizes the peer). Malformed, oversized or missing input resets the stream.
   */
  async serve(stream: Stream, connection: Connection): Promise<void> {
    const rt = this.state.rt
    const peer = connection.remotePeer.toString()
    if (!rt) {
      stream.abort(new Error('stopping'))
      return
    }
    const ticket = rt.budget?.admit(peer)
    if (ticket && !ticket.ok) {
      stream.abort(new Error(`tag exchange refused: ${ticket.reason}`))
      return
    }
    try {
      const signal = AbortSignal.any([rt.signal, AbortSignal.timeout(OP_TIMEOUT_MS)])
      const lp = lpStream(stream, LP_OPTIONS)
      const bytes = (await lp.read({ signal })).subarray()
      if (ticket && !ticket.spend(bytes.byteLength)) {
        stream.abort(new Error('tag exchange refused: bytes'))
        return
      }
      const request = decodeTags(bytes)
      this.apply(peer, request.tags)
      await lp.write(encodeTags(this.state.tags), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      stream.abort(err as Error)
      if (rt.signal.aborted) return
      this.#protocolError(rt, peer, err, 'from')
    } finally {
      if (ticket?.ok) ticket.release()
    }
  }
}
