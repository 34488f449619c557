/** Waits counted in time this process could run: a stalled event loop does not eat up a probe's wait. */

/** The longest stretch of one event-loop stall that counts towards a probe's wait. */
const STALL_CAP_MS = 200
const TICK_MS = 100

/**
 * Calls `expire` once this process has been able to run for `ms`, and only after the input that already
 * arrived has been handled. A probe's wait is about the network, not about this process: on a loaded
 * machine (other processes starting, GC) the event loop can stall for seconds, and a plain timer then
 * fires before the answers that arrived meanwhile are read (Node runs timers before I/O callbacks), so a
 * reply that came in time is taken for a lost one — a wrong `unknown`, or a filtering test that reads a
 * packet that got in as filtered. Here a stall counts at most {@link STALL_CAP_MS}, and the expiry runs
 * from `setImmediate` (after the poll phase). Returns a cancel function.
 */
export function activeDeadline(ms: number, expire: () => void): () => void {
  let active = 0
  let last = performance.now()
  let timer: NodeJS.Timeout | undefined
  let immediate: NodeJS.Immediate | undefined
  const tick = () => {
    const now = performance.now()
    active += Math.min(now - last, STALL_CAP_MS)
    last = now
    if (active >= ms) immediate = setImmediate(expire)
    else timer = setTimeout(tick, Math.min(TICK_MS, ms - active))
  }
  timer = setTimeout(tick, Math.max(0, Math.min(TICK_MS, ms)))
  return () => {
    clearTimeout(timer)
    if (immediate) clearImmediate(immediate)
  }
}
