/**
 * What holePunch() adds to libp2p: WebRTC (private-to-private), every dial of it through the strategy
 * (webrtc-gate.ts), and, without relayClient() in the config, the circuit relay transport with its STOP
 * streams guarded (stop-guard.ts) and its relay listens retried (tolerant-relay-listen.ts).
 */
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import type { Connection, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { type Libp2pContribution, meshError, type PluginContext } from 'meshkit/plugin'
import { isRelayed } from './connections.js'
import type { HolePunchOptions } from './index.js'
import { guardStop, type RelayStanding, relayedConnectionGater, type StopGuardInit } from './stop-guard.js'
import type { Strategy } from './strategy.js'
import { tolerantRelayListen } from './tolerant-relay-listen.js'
import { gateWebRTCDials } from './webrtc-gate.js'

/**
 * STOP streams one relay of ours may hold open per connection (one per relayed connection through it;
 * circuit-relay-v2's default is 300).
 */
const MAX_INBOUND_STOP_STREAMS = 64

/** `@libp2p/webrtc`, or a coded error saying which package to install. */
async function loadWebRTC(): Promise<typeof import('@libp2p/webrtc')> {
  try {
    return await import('@libp2p/webrtc')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err
    throw meshError('MESH_ERR_MISSING_PACKAGE', ['holePunch()', '@libp2p/webrtc'], { cause: err })
  }
}

/** holePunch()'s libp2p contribution; `strategy()`: the node's strategy (made in setup). */
export async function holePunchTransports(
  opts: HolePunchOptions,
  ctx: PluginContext,
  strategy: () => Strategy | undefined,
): Promise<Libp2pContribution> {
  // @libp2p/webrtc (with its native ICE library) is an optional peer dependency of Meshkit:
  // loaded only when a config has holePunch(), so that other nodes install without it
  const { webRTC } = await loadWebRTC()
  // per connection: a birthday punch pins the next connection's UDP port
  const stockRtc = webRTC({
    rtcConfiguration: async () =>
      strategy()?.rtcConfiguration() ?? {
        iceServers: opts.stunServers.map((url) => ({ urls: [url] })),
      },
  })
  // every WebRTC dial goes through the strategy; any other gets the relayed connection (webrtc-gate.ts)
  const rtc = (components: Parameters<typeof stockRtc>[0]) => {
    const internal = components as unknown as {
      connectionManager: { getConnections(peer?: PeerId): Connection[] }
      transportManager: {
        dial(ma: Multiaddr, o: { signal?: AbortSignal; onProgress?: unknown }): Promise<Connection>
      }
    }
    return gateWebRTCDials(stockRtc(components), {
      allowed: (peer) => strategy()?.webrtcAllowed(peer) === true,
      redirect: async (circuit, peer, o) => {
        strategy()?.redirected(peer)
        const relayed = internal.connectionManager
          .getConnections()
          .filter((c) => c.remotePeer.toString() === peer && c.status === 'open' && isRelayed(c))
          .sort((a, b) => a.timeline.open - b.timeline.open)[0]
        return relayed ?? internal.transportManager.dial(circuit, o)
      },
    })
  }
  // relayClient() has the circuit transport (one per node), guards its STOP streams and keeps the
  // reservations: WebRTC signals over its relayed connections
  if (ctx.useOptional('relay-client') !== undefined)
    return { transports: [rtc], addresses: { listen: ['/webrtc'] } }
  const relayIds = strategy()!.relayIds
  let standing = (peer: PeerId): RelayStanding => (relayIds.has(peer.toString()) ? 'configured' : undefined)
  const guard: StopGuardInit = {
    standing: (peer) => standing(peer),
    onRefused: (peer, configured) => {
      if (configured) ctx.logger.debug(`STOP from relay ${peer}, which holds no reservation for us: refused`)
      else
        ctx.reputation.penalize(
          peer,
          'forged',
          'a relayed connection (STOP) from a peer that is no relay of ours',
        )
    },
  }
  return {
    // WebRTC first: the circuit relay transport's dial filter also accepts `/p2p-circuit/webrtc` addresses
    transports: [
      rtc,
      (components: Parameters<ReturnType<typeof circuitRelayTransport>>[0]) => {
        const transport = circuitRelayTransport({ maxInboundStopStreams: MAX_INBOUND_STOP_STREAMS })(
          components,
        )
        const store = (transport as { reservationStore?: { hasReservation?(p: PeerId): boolean } })
          .reservationStore
        if (typeof store?.hasReservation === 'function')
          standing = (peer) =>
            store.hasReservation!(peer)
              ? 'reserved'
              : relayIds.has(peer.toString())
                ? 'configured'
                : undefined
        else {
          // without the transport's reservation store, a configured relay is taken for reserved
          ctx.logger.warn(
            "hole-punch: the circuit relay transport's reservations are not readable; configured relays are trusted as reserved",
          )
          standing = (peer) => (relayIds.has(peer.toString()) ? 'reserved' : undefined)
        }
        if (!guardStop(transport, guard))
          ctx.logger.warn(
            "hole-punch: the circuit relay transport's STOP handler could not be guarded; only the connection gater refuses relayed connections from peers that are no relay of ours",
          )
        // a relay that is down (or slow) must not stop the node from starting: its listen is retried
        return tolerantRelayListen(transport, {
          logger: ctx.logger,
          relays: relayIds,
          onFailure: (address, err, attempt) =>
            ctx.events.emit('hole-punch:relay-unreachable', {
              address,
              attempt,
              error: err instanceof Error ? err.message : String(err),
            }),
        })
      },
    ] as NonNullable<Libp2pContribution['transports']>,
    connectionGater: relayedConnectionGater(guard),
    addresses: { listen: ['/webrtc', ...opts.relays.map((r) => `${r}/p2p-circuit`)] },
  }
}
