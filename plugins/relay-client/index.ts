import { definePlugin, durationSchema, type Libp2pContribution, multiaddrSchema, z } from 'meshkit/plugin'
import { guardedCircuitTransport } from './circuit-transport.js'
import type { Captured } from './components.js'
import { RelayManager } from './relay-manager.js'
import { relayedConnectionGater, type StopGuardInit } from './stop-guard.js'

// The machinery beside this file: relay-manager.ts (keeping the reservations), hop.ts (the reservation
// request), circuit-transport.ts and components.ts (the circuit transport and what it advertises) and
// stop-guard.ts (inbound relayed connections only through relays of ours).

const options = z
  .strictObject({
    /**
     * Relays to reserve a slot on, as multiaddrs with `/p2p/<relay peer id>` (which relay restarted is
     * recognised by its id). @default []
     */
    relays: z
      .array(
        multiaddrSchema("'/ip4/198.51.100.1/tcp/4001/p2p/12D3KooW...'").refine(
          (a) => /\/p2p\/[^/]+$/.test(a) && !a.includes('/p2p-circuit'),
          { message: 'a relay address must end with /p2p/<relay peer id> and must not be a circuit address' },
        ),
      )
      .default([]),
    /**
     * Reservations to keep, on the relays with the lowest round-trip time. `0` only adds the circuit
     * transport (dial through relays, no reservations). @default 2
     */
    minReservations: z.number().int().min(0).max(16).default(2),
    /** How often the reserved relays are pinged (RTT, liveness). @default '30s' */
    checkInterval: durationSchema("'30s'").default(30_000),
    /** Failed pings in a row after which a relay connection counts as dead and is replaced. @default 2 */
    maxPingFailures: z.number().int().positive().default(2),
    /** Longest a ping, a dial to a relay or a reservation request may take. @default '10s' */
    timeout: durationSchema("'10s'").default(10_000),
    /** First delay before retrying a relay that failed (doubles up to `retryMax`, with jitter). @default '1s' */
    retryInitial: durationSchema("'1s'").default(1_000),
    /** @default '60s' */
    retryMax: durationSchema("'60s'").default(60_000),
    /**
     * At start, how long the node waits (at most) for its first reservation, so that the addresses it
     * first tells others (a topic's rendezvous, identify) already include its circuit address: without
     * one, peers that learn of it cannot reach it, and may not look again for seconds. The node starts
     * anyway when the wait is over (or at once when every relay refuses); `0` does not wait. @default '3s'
     */
    startWait: durationSchema("'3s'").default(3000),
  })
  .prefault({})

/** The options as resolved (defaults applied). */
export type RelayClientOptions = z.output<typeof options>

/** One reservation the client holds. */
export interface RelayReservationInfo {
  /** The relay's peer id. */
  relay: string
  /** The /p2p-circuit addresses this node is reachable at through the relay. */
  addrs: string[]
  /** Expiry (ms since the epoch), as the relay granted it. */
  expires: number
  /** Last measured round-trip time to the relay (ms). */
  rttMs: number | undefined
}

/** What `relayClient()` offers (`node.api('relay-client')`). */
export interface RelayClientApi {
  /** Reservations held right now. */
  reservations(): RelayReservationInfo[]
  /** Re-measures the relays and reserves where short of `minReservations` now (normally automatic). */
  check(): Promise<void>
}

/**
 * Circuit relay client: adds the circuit relay transport (dial and be dialled through relays) and keeps at
 * least `minReservations` reservations on the configured relays with the lowest RTT.
 *
 * - Starts even when every relay is down; unreachable relays are retried with backoff (`relay:retry`).
 * - Notices a lost reservation (relay connection closed, failed refresh or expiry, pings unanswered, a
 *   relay that identifies with a new peer record) and reserves again: js-libp2p alone never re-reserves
 *   on a configured relay that restarted.
 * - Events: `relay:reserved {relay, expires, addrs, rttMs, refreshed}`, `relay:lost {relay, reason}`,
 *   `relay:retry {relay, attempt, delayMs, error}`.
 *
 * Relayed connections are limited (by the relay: 2 min / 128 KiB by default); protocols that must run on
 * them need `runOnLimitedConnection: true`. An inbound relayed connection is accepted only through a
 * relay this node holds a reservation on: a STOP stream from any other peer is reset unread and its
 * sender penalized (`forged`), see stop-guard.ts.
 */
export const relayClient = definePlugin({
  name: 'relay-client',
  provides: ['relay-client'],
  dependencies: ['transport', 'identify', 'ping'],
  options,
  create: (opts) => {
    let captured: Captured | undefined
    let manager: RelayManager | undefined
    const api: RelayClientApi = {
      reservations: () => manager?.reservations() ?? [],
      check: async () => manager?.check(),
    }
    return {
      setup: (ctx) => {
        // configured relays are dialled whatever network.addressScope says
        for (const relay of opts.relays) ctx.peerAddresses.trust(relay)
        return api
      },
      libp2p: (ctx): Libp2pContribution => {
        const configured = new Set(
          opts.relays.map((a) => /\/p2p\/([^/]+)$/.exec(a)?.[1]).filter((p): p is string => p !== undefined),
        )
        const guard: StopGuardInit = {
          standing: (peer) =>
            manager?.standing(peer) ?? (configured.has(peer.toString()) ? 'configured' : undefined),
          onRefused: (peer, isConfigured) => {
            if (isConfigured)
              ctx.logger.debug(`STOP from relay ${peer}, which holds no reservation for us: refused`)
            else
              ctx.reputation.penalize(
                peer,
                'forged',
                'a relayed connection (STOP) from a peer that is no relay of ours',
              )
          },
        }
        return {
          connectionGater: relayedConnectionGater(guard),
          transports: [
            guardedCircuitTransport(guard, ctx.logger, (c) => {
              captured = c
            }),
          ],
        }
      },
      start: async (ctx) => {
        if (!captured) throw new Error('relay-client: the circuit relay transport was not created')
        manager = new RelayManager(ctx.libp2p, captured, opts, ctx.logger, ctx.events, ctx.signal)
        await manager.start()
      },
      stop: () => {
        manager?.stop()
        manager = undefined
      },
    }
  },
})
