/**
 * Listening on a relay (`<relay>/p2p-circuit`) must not be a condition for the node to start: a relay
 * that is down, or slow to grant a reservation, would otherwise fail the whole start (libp2p fails its
 * start when a configured listen address fails). This wraps the circuit relay transport so that a failed
 * relay listen is logged and retried in the background, with backoff, until it works or the node stops.
 * When a retry works, libp2p's own listener announces the circuit address as usual.
 */
import type { Listener, Transport } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { backoffDelay, type Logger } from 'meshkit'

export interface TolerantListenOptions {
  logger: Logger
  /** @default 1000 */
  retryInitial?: number
  /** @default 30000 */
  retryMax?: number
  /** Told each time a relay listen fails (the first failure and every retry). */
  onFailure?: (addr: string, err: unknown, attempt: number) => void
}

/** `transport` with listeners whose `listen()` resolves even when the relay cannot be reached yet. */
export function tolerantRelayListen<T extends Transport>(transport: T, opts: TolerantListenOptions): T {
  return new Proxy(transport, {
    get(target, prop) {
      if (prop === 'createListener') {
        return (...args: Parameters<Transport['createListener']>) =>
          tolerantListener(target.createListener(...args), opts)
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

function tolerantListener(listener: Listener, opts: TolerantListenOptions): Listener {
  let closed = false
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
      if (prop === 'listen') return (addr: Multiaddr) => attempt(addr, 0)
      if (prop === 'close') {
        return () => {
          closed = true
          for (const t of timers) clearTimeout(t)
          timers.clear()
          return target.close()
        }
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
