/**
 * Time dilation for the simulator: with a slowdown of s, every timer, interval, timeout and clock
 * reading in the thread runs s times slower than the wall clock (setTimeout(fn, 100) fires after
 * 100 * s ms; Date.now() and performance.now() advance 1 ms per s ms). Protocol time (link delays,
 * backoffs, timeouts) is then measured in virtual ms, while the CPU that 1,000 nodes in one process
 * need is spread over s times more wall time: CPU contention inside the simulator, which real nodes on
 * their own machines do not have, shows s times less in the measured times. Every thread of a run
 * installs the same slowdown and epoch, so their clocks agree.
 *
 * Only the simulator installs this (host-entry.ts, run.ts); nothing in src/ or plugins/ knows about it.
 */

import { setTimeout as realSleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const realPerfNow = performance.now.bind(performance)
/** The real time, ms since the epoch, sub-millisecond. */
export const realNow = (): number => performance.timeOrigin + realPerfNow()

let factor = 1
let epoch = 0

/** Virtual time, ms since the epoch (sub-millisecond). Equal to the real time without a slowdown. */
export const vnow = (): number => (factor === 1 ? realNow() : epoch + (realNow() - epoch) / factor)

/** The installed slowdown (1: none). */
export const slowdown = (): number => factor

let installed = false
const CONTROLLER = Symbol('sim-timeout-controller')

/**
 * Installs a slowdown of `s` counted from `epochMs` (a real time, the same in every thread), one at a
 * time per thread. Returns the uninstall: the thread's own timers, clocks and AbortSignal.timeout back
 * (a run inside a test process must not leave the tests after it on a dilated clock).
 */
export function installSlowdown(s: number, epochMs: number): () => void {
  if (installed) throw new Error('the simulator clock is already installed in this thread')
  if (!(s >= 1)) throw new RangeError(`slowdown must be >= 1 (got ${s})`)
  installed = true
  factor = s
  epoch = epochMs
  const g = globalThis as unknown as Record<string, unknown>
  const saved = {
    setTimeout: g.setTimeout,
    setInterval: g.setInterval,
    Date: g.Date,
    perfNow: performance.now,
    timeout: AbortSignal.timeout,
  }
  const uninstall = () => {
    if (!installed) return
    installed = false
    factor = 1
    if (s === 1) return
    g.setTimeout = saved.setTimeout
    g.setInterval = saved.setInterval
    g.Date = saved.Date
    performance.now = saved.perfNow
    AbortSignal.timeout = saved.timeout
  }
  if (s === 1) return uninstall
  const realSetTimeout = globalThis.setTimeout
  const realSetInterval = globalThis.setInterval
  const scale = (ms: unknown) => Math.max(0, Number(ms) || 0) * factor
  const setTimeoutV = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
    realSetTimeout(fn, scale(ms), ...args)
  Object.defineProperty(setTimeoutV, promisify.custom, {
    value: (ms?: number, value?: unknown, options?: Parameters<typeof realSleep>[2]) =>
      realSleep(scale(ms), value, options),
  })
  g.setTimeout = setTimeoutV
  g.setInterval = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
    realSetInterval(fn, scale(ms), ...args)
  const RealDate = Date
  class VirtualDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(Math.floor(vnow()))
      else super(...(args as [number]))
    }

    static override now(): number {
      return Math.floor(vnow())
    }
  }
  g.Date = VirtualDate
  performance.now = () => vnow() - performance.timeOrigin
  // as Node's own: the timer holds the signal weakly, and a signal nobody holds any more takes its timer
  const timers = new FinalizationRegistry<NodeJS.Timeout>((timer) => clearTimeout(timer))
  AbortSignal.timeout = (ms: number) => {
    const controller = new AbortController()
    const signal = controller.signal
    // the signal keeps its controller; the timer keeps neither
    Object.defineProperty(signal, CONTROLLER, { value: controller })
    const ref = new WeakRef(signal)
    const timer = realSetTimeout(() => {
      const s = ref.deref() as (AbortSignal & { [CONTROLLER]?: AbortController }) | undefined
      s?.[CONTROLLER]?.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))
    }, scale(ms))
    timer.unref?.()
    timers.register(signal, timer)
    return signal
  }
  return uninstall
}
