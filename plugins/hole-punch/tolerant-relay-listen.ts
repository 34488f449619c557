/**
 * Listening on a relay (`<relay>/p2p-circuit`) must not be a condition for the node to start: a relay
 * that is down, or slow to grant a reservation, would otherwise fail the whole start (libp2p fails its
 * start when a configured listen address fails). This wraps the circuit relay transport so that a failed
 * listen on a relay this node configured is logged and retried in the background, with backoff, until it
 * works or the node stops. When a retry works, libp2p's own listener announces the circuit address as usual.
 *
 * Only configured relays: libp2p's circuit transport also listens on any peer that sends it a STOP
 * stream without holding a reservation for it ("dialed via a relay we did not have a reservation on").
 * A peer must not start background work that way, so the transport's `listenFilter` takes a circuit
 * listen address only for a relay this node configured, and only once at a time (a listener already on
 * that relay, retrying or listening, is enough). Anything else is refused before a listener exists: no
 * dial, no reservation attempt, no retry.
 */
import type { Listener, Transport } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { backoffDelay, type Logger } from 'meshkit/plugin'

export interface TolerantListenOptions {
  logger: Logger
  /** Peer ids of the relays this node configured: only their listens are taken (and retried). */
  relays: ReadonlySet<string>
  /** @default 1000 */
  retryInitial?: number
  /** @default 30000 */
  retryMax?: number
  /** Told each time a relay listen fails (the first failure and every retry). */
  onFailure?: (addr: string, err: unknown, attempt: number) => void
}

/** The relay's peer id of a circuit listen address (`.../p2p/<relay>/p2p-circuit`), if it has one. */
export function relayOfListenAddress(addr: Multiaddr | string): string | undefined {
  return /\/p2p\/([^/]+)\/p2p-circuit$/.exec(addr.toString())?.[1]
}

/**
 * `transport` whose listeners' `listen()` resolves even when a configured relay cannot be reached yet
 * (retried in the background), and which listens on configured relays only, one listener per relay.
 */
export function tolerantRelayListen<T extends Transport>(transport: T, opts: TolerantListenOptions): T {
  /** Relays a listener of ours holds (listening, or retrying). */
  const active = new Set<string>()
  const accepts = (addr: Multiaddr) => {
    const relay = relayOfListenAddress(addr)
    return relay !== undefined && opts.relays.has(relay) && !active.has(relay)
  }
  return new Proxy(transport, {
    get(target, prop) {
      if (prop === 'createListener') {
        return (...args: Parameters<Transport['createListener']>) =>
          tolerantListener(target.createListener(...args), opts, active)
      }
      if (prop === 'listenFilter') {
        return (addrs: Multiaddr[]) => target.listenFilter(addrs).filter(accepts)
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

function tolerantListener(listener: Listener, opts: TolerantListenOptions, active: Set<string>): Listener {
  let closed = false
  let relay: string | undefined
  const timers = new Set<NodeJS.Timeout>()
  const { retryInitial = 1000, retryMax = 30_000 } = opts
  const attempt = (addr: Multiaddr, n: number): Promise<void> =>
    listener.listen(addr).catch((err: unknown) => {
      if (closed) return
      opts.onFailure?.(addr.toString(), err, n)
      const delay = backoffDelay(n, retryInitial, retryMax)
      opts.logger.warn(
        `could not listen on ${addr} yet (${err instanceof Error ? err.message : String(err)}); retrying in ${delay} ms`,
      )
      const timer = setTimeout(() => {
        timers.delete(timer)
        if (!closed) void attempt(addr, n + 1)
      }, delay)
      timer.unref()
      timers.add(timer)
    })
  return new Proxy(listener, {
    get(target, prop) {
      if (prop === 'listen') {
        return (addr: Multiaddr) => {
          const id = relayOfListenAddress(addr)
          // the transport's listenFilter already took only configured relays; a direct caller is held to it too
          if (id === undefined || !opts.relays.has(id) || active.has(id) || relay !== undefined)
            return Promise.reject(
              new Error(`not listening on ${addr}: not a configured relay, or one already listened on`),
            )
          relay = id
          active.add(id)
          return attempt(addr, 0)
        }
      }
      if (prop === 'close') {
        return () => {
          closed = true
          for (const t of timers) clearTimeout(t)
          timers.clear()
          if (relay !== undefined) active.delete(relay)
          return target.close()
        }
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
