import type { PeerId } from '@libp2p/interface'
import { ping as libp2pPing, type Ping as PingService } from '@libp2p/ping'
import type { Multiaddr } from '@multiformats/multiaddr'
import { definePlugin } from 'meshkit/plugin'

/**
 * Outbound ping streams per connection: one for libp2p's connection monitor (it opens its own every
 * 10 s) and one for everything that pings through the service. @libp2p/ping's default of 1 let the
 * monitor's ping and another one (kad-dht checking a new contact, clustering's RTT, a relay's
 * liveness) meet on one connection: the monitor then failed with TooManyOutboundProtocolStreamsError
 * and aborted the healthy connection, with every stream, reservation and relayed connection on it.
 */
export const PING_MAX_OUTBOUND_STREAMS = 2
/** Inbound ping streams per connection: the spec's two, plus room for another implementation's collision. */
export const PING_MAX_INBOUND_STREAMS = 4

/**
 * `service` with pings coalesced per peer: a ping asked while one to the same peer is in flight gets that
 * ping's answer (each caller's own signal still ends its wait), so all the node's callers together open
 * at most one ping stream to a peer at a time.
 */
export function coalescePings(service: PingService): PingService {
  const inFlight = new Map<string, Promise<number>>()
  const ping: PingService['ping'] = (
    peer: PeerId | Multiaddr | Multiaddr[],
    options: { signal?: AbortSignal } = {},
  ) => {
    const key = Array.isArray(peer) ? peer.map(String).join(',') : peer.toString()
    let pending = inFlight.get(key)
    if (!pending) {
      // the shared ping is bounded by the service's own timeout, not by the first caller's signal
      const { signal: _first, ...rest } = options
      pending = service.ping(peer, rest).finally(() => inFlight.delete(key))
      // a caller whose signal is already aborted never waits for it, and later callers may not come:
      // its failure must not be an unhandled rejection (Node ends the process on one)
      pending.catch(() => {})
      inFlight.set(key, pending)
    }
    const shared = pending
    const { signal } = options
    if (!signal) return shared
    return new Promise<number>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason)
      const onAbort = () => reject(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
      shared.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
    })
  }
  return new Proxy(service, {
    get(target, prop) {
      if (prop === 'ping') return ping
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

/** The ping protocol: round-trip times to peers (pings to one peer coalesced; see {@link coalescePings}). */
export const ping = definePlugin({
  name: 'ping',
  services: ['ping'],
  create: () => ({
    libp2p: () => ({
      services: {
        ping: (components: Parameters<ReturnType<typeof libp2pPing>>[0]) =>
          coalescePings(
            libp2pPing({
              maxOutboundStreams: PING_MAX_OUTBOUND_STREAMS,
              maxInboundStreams: PING_MAX_INBOUND_STREAMS,
            })(components),
          ),
      },
    }),
  }),
})
