import { circuitRelayServer } from '@libp2p/circuit-relay-v2'
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import {
  type Budget,
  definePlugin,
  durationSchema,
  type Libp2pContribution,
  multiaddrSchema,
  z,
} from 'meshkit/plugin'
import { guardHop } from './hop-guard.js'
import { hostOf, subnetOf } from './subnet.js'

/** The libp2p service name the relay server is registered under. */
export const RELAY_SERVICE = 'relay'

const HOP = '/libp2p/circuit/relay/0.2.0/hop'
const STOP = '/libp2p/circuit/relay/0.2.0/stop'

const options = z
  .strictObject({
    /** Reservations the relay holds at once (all peers together). @default 128 */
    maxReservations: z.number().int().positive().default(128),
    /**
     * Reservations from one IP address at once (peers behind one NAT share it). A peer counts at every IP
     * it is connected from. `0` turns the limit off. @default 8
     */
    maxReservationsPerIp: z.number().int().min(0).default(8),
    /**
     * Reservations from one subnet at once (an IPv4 /24, an IPv6 /48): Sybils from many addresses of one
     * network cannot take every slot. `0` turns the limit off. @default 16
     */
    maxReservationsPerSubnet: z.number().int().min(0).default(16),
    /**
     * Relayed connections (circuits) to one reserved peer at once, and from one peer at once. `0` turns
     * the limit off. @default 16
     */
    maxCircuitsPerPeer: z.number().int().min(0).default(16),
    /** How long a reservation lasts; clients refresh it before it expires. @default '2h' */
    reservationTtl: durationSchema("'2h'").default(7_200_000),
    /** Longest a relayed connection stays open; then the relay resets it. @default '2m' */
    circuitDuration: durationSchema("'2m'").default(120_000),
    /** Bytes a relayed connection may carry (both directions); then the relay resets it. @default 131072 (128 KiB) */
    circuitBytes: z.number().int().positive().default(131_072),
    /**
     * Hop requests (reserve/connect) must complete within this: a stream that says nothing is reset then.
     * @default '10s'
     */
    hopTimeout: durationSchema("'10s'").default(10_000),
    /** Simultaneous inbound hop streams (reserve/connect requests) per connection. @default 32 */
    maxInboundHopStreams: z.number().int().positive().default(32),
    /**
     * Hop requests one peer may have in progress at once (all its connections together; an established
     * circuit no longer counts). @default 4
     */
    maxHopRequestsPerPeer: z.number().int().positive().default(4),
    /** Hop requests one peer may start per second, sustained (a burst of ten times that). @default 1 */
    hopRequestRate: z.number().positive().default(1),
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
  .prefault({})

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

/**
 * A circuit relay v2 server (@libp2p/circuit-relay-v2) with limits: reservations in total, per IP and
 * per subnet (a peer counts at each IP it is connected from), circuits per reserved peer and per source
 * peer, reservation lifetime, duration/bytes of each relayed connection, and hop requests per peer (in
 * progress at once, and per second; over it: refused, and the peer penalized), each bounded by
 * `hopTimeout`. One peer holds at most one reservation (a second request refreshes it): that is the
 * protocol's rule.
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
    /** The IPs `peer` is directly connected from. */
    const ipsOf = (peer: PeerId): string[] => [
      ...new Set(
        (node?.getConnections(peer) ?? [])
          .filter((c: Connection) => c.limits === undefined && c.status === 'open')
          .map((c) => hostOf(c.remoteAddr))
          .filter((ip): ip is string => ip !== undefined),
      ),
    ]
    let hopBudget: Budget | undefined

    const gater: NonNullable<Libp2pContribution['connectionGater']> = {
      denyInboundRelayReservation: (peer) => {
        const s = service()
        if (!node || !s) return false
        const existing = s.reservations.get(peer)
        if (!existing && (opts.maxReservationsPerIp > 0 || opts.maxReservationsPerSubnet > 0)) {
          const ips = ipsOf(peer)
          const subnets = new Set(ips.map(subnetOf))
          const perIp = new Map<string, number>()
          const perSubnet = new Map<string, number>()
          for (const [, r] of s.reservations) {
            const ip = hostOf(r.addr)
            if (ip === undefined) continue
            perIp.set(ip, (perIp.get(ip) ?? 0) + 1)
            const net = subnetOf(ip)
            perSubnet.set(net, (perSubnet.get(net) ?? 0) + 1)
          }
          const fullIp = ips.find(
            (ip) => opts.maxReservationsPerIp > 0 && (perIp.get(ip) ?? 0) >= opts.maxReservationsPerIp,
          )
          if (fullIp !== undefined) {
            emit?.('relay:refused', { peer: peer.toString(), reason: 'max-reservations-per-ip', ip: fullIp })
            return true
          }
          const fullNet = [...subnets].find(
            (net) =>
              opts.maxReservationsPerSubnet > 0 && (perSubnet.get(net) ?? 0) >= opts.maxReservationsPerSubnet,
          )
          if (fullNet !== undefined) {
            emit?.('relay:refused', {
              peer: peer.toString(),
              reason: 'max-reservations-per-subnet',
              subnet: fullNet,
            })
            return true
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
          const count = (peer: PeerId, protocol: string, direction: 'inbound' | 'outbound') =>
            node!
              .getConnections(peer)
              .reduce(
                (n, c) =>
                  n + c.streams.filter((s) => s.protocol === protocol && s.direction === direction).length,
                0,
              )
          // circuits to the destination (our STOP streams), and from the source (its hop streams: the one
          // asking now is among them)
          const reason =
            count(destination, STOP, 'outbound') >= opts.maxCircuitsPerPeer
              ? 'max-circuits-per-peer'
              : count(source, HOP, 'inbound') > opts.maxCircuitsPerPeer
                ? 'max-circuits-from-peer'
                : undefined
          if (reason) {
            emit?.('relay:refused', { peer: source.toString(), to: destination.toString(), reason })
            return true
          }
        }
        emit?.('relay:circuit', { from: source.toString(), to: destination.toString() })
        return false
      },
    }

    return {
      setup: (): RelayServerApi => ({ reservations: list }),
      libp2p: (ctx) => ({
        services: {
          [RELAY_SERVICE]: (components: Parameters<ReturnType<typeof circuitRelayServer>>[0]) => {
            const server = circuitRelayServer({
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
            })(components)
            // hop requests per peer (budget made at start; libp2p starts the service just before)
            if (!guardHop(server, () => hopBudget))
              ctx.logger.warn(
                "relay-server: the relay's hop handler could not be wrapped; hop requests are limited per connection only",
              )
            return server
          },
        } as unknown as Libp2pContribution['services'],
        connectionGater: gater,
        ...(opts.announce.length > 0 ? { addresses: { announce: opts.announce } } : {}),
      }),
      start: (ctx) => {
        node = ctx.libp2p
        emit = (event, fields) => ctx.events.emit(event, fields)
        hopBudget = ctx.budget('hop', {
          ratePerSecond: opts.hopRequestRate,
          burst: Math.max(1, Math.ceil(opts.hopRequestRate * 10)),
          concurrency: opts.maxHopRequestsPerPeer,
          globalConcurrency: Math.max(64, opts.maxReservations),
          globalRatePerSecond: Math.max(50, opts.hopRequestRate * 100),
        })
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
        hopBudget = undefined
      },
    }
  },
})

export { HOP as RELAY_HOP_PROTOCOL, STOP as RELAY_STOP_PROTOCOL }
