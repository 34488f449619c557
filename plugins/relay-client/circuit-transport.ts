/**
 * The circuit relay transport as this plugin adds it: libp2p's own (`@libp2p/circuit-relay-v2`) dials
 * through relays and handles STOP streams, guarded (stop-guard.ts); listening, what the node advertises,
 * is this plugin's {@link CircuitListener}, which shows the reservations the relay manager holds.
 */
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Libp2pContribution, Logger } from 'meshkit/plugin'
import { type Captured, CircuitListener, capture, LISTEN_ADDR } from './components.js'
import { guardStop, type StopGuardInit } from './stop-guard.js'

/**
 * STOP streams one relay of ours may hold open per connection (one per relayed connection through it;
 * circuit-relay-v2's default is 300).
 */
const MAX_INBOUND_STOP_STREAMS = 64

type TransportFactory = NonNullable<Libp2pContribution['transports']>[number]

/**
 * The transport module to add to libp2p: when libp2p creates it, `onCaptured` gets what the relay
 * manager needs of libp2p (see components.ts) and the listener.
 */
export function guardedCircuitTransport(
  guard: StopGuardInit,
  logger: Logger,
  onCaptured: (captured: Captured) => void,
): TransportFactory {
  return ((components: Parameters<ReturnType<typeof circuitRelayTransport>>[0]) => {
    const transport = circuitRelayTransport({ maxInboundStopStreams: MAX_INBOUND_STOP_STREAMS })(components)
    if (!guardStop(transport, guard))
      logger.warn(
        "relay-client: the circuit relay transport's STOP handler could not be guarded; only the connection gater refuses relayed connections from peers that are no relay of ours",
      )
    const listener = new CircuitListener()
    onCaptured(capture(components as unknown as Record<string, unknown>, listener))
    // dial and STOP handling stay libp2p's; listening (what the node advertises) is this plugin's
    return new Proxy(transport, {
      get(target, prop) {
        if (prop === 'createListener') return () => listener
        if (prop === 'listenFilter') {
          return (addrs: Multiaddr[]) => addrs.filter((a) => a.toString() === LISTEN_ADDR)
        }
        const value = Reflect.get(target, prop, target)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
  }) as unknown as TransportFactory
}
