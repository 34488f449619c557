import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import { definePlugin, durationSchema, type Libp2pContribution, multiaddrSchema, z } from 'meshkit'

/** The libp2p service name the relay server is registered under. */
export const RELAY_SERVICE = 'relay'

const HOP = '/libp2p/circuit/relay/0.2.0/hop'
const STOP = '/libp2p/circuit/relay/0.2.0/stop'

const options = z
  .strictObject({
    /** Reservations the relay holds at once (all peers together). @default 128 */
    maxReservations: z.number().int().positive().default(128),
    /**
     * Reservations from one IP address at once (peers behind one NAT share it). `0` turns the limit off.
     * @default 8
     */
    maxReservationsPerIp: z.number().int().min(0).default(8),
    /** Relayed connections (circuits) to one reserved peer at once. `0` turns the limit off. @default 16 */
    maxCircuitsPerPeer: z.number().int().min(0).default(16),
    /** How long a reservation lasts; clients refresh it before it expires. @default '2h' */
    reservationTtl: durationSchema("'2h'").default(7_200_000),
    /** Longest a relayed connection stays open; then the relay resets it. @default '2m' */
    circuitDuration: durationSchema("'2m'").default(120_000),
    /** Bytes a relayed connection may carry (both directions); then the relay resets it. @default 131072 (128 KiB) */
    circuitBytes: z.number().int().positive().default(131_072),
    /** Hop requests (reserve/connect) must complete within this. @default '30s' */
    hopTimeout: durationSchema("'30s'").default(30_000),
    /** Simultaneous inbound hop streams (reserve/connect requests) per connection. @default 32 */
    maxInboundHopStreams: z.number().int().positive().default(32),
    /** Simultaneous stop streams the relay opens per connection (circuits to one reserved peer). @default 300 */
    maxOutboundStopStreams: z.number().int().positive().default(300),
    /**
     * Addresses the relay announces, also handed to clients in their reservations. A public relay MUST set
     * this to its public address(es): without it, a relay announces what it listens on (127.0.0.1, private
     * LAN addresses), its clients advertise /p2p-circuit addresses nobody can dial, and peers end up
     * dialling themselves. Merged with the config's `announce` (the config's own wins when set). @default []
     */
    announce: z.array(multiaddrSchema("'/ip4/203.0.113.7/tcp/4001'")).default([]),
  })
  .default({
    maxReservations: 128,
    maxReservationsPerIp: 8,
    maxCircuitsPerPeer: 16,
    reservationTtl: 7_200_000,
    circuitDuration: 120_000,
    circuitBytes: 131_072,
    hopTimeout: 30_000,
    maxInboundHopStreams: 32,
    maxOutboundStopStreams: 300,
    announce: [],
  })

/** One reservation held by the relay. */
export interface RelayServerReservation {
  peer: string
  /** The client's address as the relay sees it. */
  addr: string
  /** Expiry (ms since the epoch). */
  expires: number
}

/** What `relayServer()` offers (`node.api('relay-server')`). */
export interface RelayServerApi {
  /** Reservations held right now. */
  reservations(): RelayServerReservation[]
}

interface ServerReservation {
  expiry: Date
  addr: { toString(): string; nodeAddress?(): { address: string } }
}
interface RelayService {
  reservations: { get(peer: PeerId): ServerReservation | undefined; size: number } & Iterable<
    [PeerId, ServerReservation]
  >
}

/** The IP of a multiaddr's first component (`/ip4/1.2.3.4/...` → `1.2.3.4`), or the whole address. */
function hostOf(addr: { toString(): string }): string {
  const m = /^\/(?:ip4|ip6|dns4|dns6|dns)\/([^/]+)/.exec(addr.toString())
  return m ? m[1] : addr.toString()
}

/**
 * A circuit relay v2 server (@libp2p/circuit-relay-v2) with limits: reservations in total and per IP,
 * circuits per reserved peer, reservation lifetime, and duration/bytes of each relayed connection.
 * One peer holds at most one reservation (a second request refreshes it): that is the protocol's rule.
 *
 * Events: `relay:reservation {peer, addr, expires, refreshed}`, `relay:refused {peer, reason}`,
 * `relay:circuit {from, to}` (a relayed connection the relay accepted to set up).
 *
 * Public relays must set `announce` (or the config's `announce`): see that option.
 */
export const relayServer = definePlugin({
  name: 'relay-server',
  provides: ['relay-server'],
  dependencies: ['transport'],
  options,
  create: (opts) => {
    let node: Libp2p | undefined
    let emit: ((event: string, fields: Record<string, unknown>) => void) | undefined
    const service = (): RelayService | undefined =>
      (node?.services as Record<string, unknown> | undefined)?.[RELAY_SERVICE] as RelayService | undefined
    const list = (): RelayServerReservation[] => {
      const s = service()
      if (!s) return []
      return [...s.reservations].map(([peer, r]) => ({
        peer: peer.toString(),
        addr: r.addr.toString(),
        expires: r.expiry.getTime(),
      }))
    }
    const directConnection = (peer: PeerId): Connection | undefined =>
      node?.getConnections(peer).find((c) => c.limits === undefined && c.status === 'open')

    const gater: NonNullable<Libp2pContribution['connectionGater']> = {
      denyInboundRelayReservation: (peer) => {
        const s = service()
        if (!node || !s) return false
        const existing = s.reservations.get(peer)
        if (!existing && opts.maxReservationsPerIp > 0) {
          const conn = directConnection(peer)
          const host = conn ? hostOf(conn.remoteAddr) : undefined
          if (host !== undefined) {
            let sameHost = 0
            for (const [, r] of s.reservations) if (hostOf(r.addr) === host) sameHost++
            if (sameHost >= opts.maxReservationsPerIp) {
              emit?.('relay:refused', { peer: peer.toString(), reason: 'max-reservations-per-ip', ip: host })
              return true
            }
          }
        }
        // the relay reserves (or refuses: store full) right after the gater answers; report the outcome
        setTimeout(() => {
          const r = service()?.reservations.get(peer)
          if (r) {
            emit?.('relay:reservation', {
              peer: peer.toString(),
              addr: r.addr.toString(),
              expires: existing ? Date.now() + opts.reservationTtl : r.expiry.getTime(),
              refreshed: existing !== undefined,
            })
          } else {
            emit?.('relay:refused', { peer: peer.toString(), reason: 'max-reservations' })
          }
        }, 0)
        return false
      },
      denyOutboundRelayedConnection: (source, destination) => {
        if (!node) return false
        if (opts.maxCircuitsPerPeer > 0) {
          const open = node
            .getConnections(destination)
            .reduce((n, c) => n + c.streams.filter((s) => s.protocol === STOP).length, 0)
          if (open >= opts.maxCircuitsPerPeer) {
            emit?.('relay:refused', {
              peer: source.toString(),
              to: destination.toString(),
              reason: 'max-circuits-per-peer',
            })
            return true
          }
        }
        emit?.('relay:circuit', { from: source.toString(), to: destination.toString() })
        return false
      },
    }

    return {
      setup: (): RelayServerApi => ({ reservations: list }),
      libp2p: () => ({
        services: {
          [RELAY_SERVICE]: circuitRelayServer({
            hopTimeout: opts.hopTimeout,
            maxInboundHopStreams: opts.maxInboundHopStreams,
            maxOutboundStopStreams: opts.maxOutboundStopStreams,
            reservations: {
              maxReservations: opts.maxReservations,
              reservationTtl: opts.reservationTtl,
              applyDefaultLimit: true,
              defaultDurationLimit: opts.circuitDuration,
              defaultDataLimit: BigInt(opts.circuitBytes),
            },
          }),
        } as unknown as Libp2pContribution['services'],
        connectionGater: gater,
        ...(opts.announce.length > 0 ? { addresses: { announce: opts.announce } } : {}),
      }),
      start: (ctx) => {
        node = ctx.libp2p
        emit = (event, fields) => ctx.events.emit(event, fields)
        const announced = (ctx.config.announce ?? []).length + opts.announce.length > 0
        if (!announced) {
          ctx.logger.warn(
            'no announce address: clients are handed the addresses this relay listens on ' +
              `(${node
                .getMultiaddrs()
                .map((a) => a.toString())
                .join(', ')}); a public relay must set announce`,
          )
        }
      },
      stop: () => {
        node = undefined
        emit = undefined
      },
    }
  },
})

export { HOP as RELAY_HOP_PROTOCOL, STOP as RELAY_STOP_PROTOCOL }
