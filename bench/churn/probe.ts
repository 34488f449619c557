/**
 * Preloaded into a benchmark's `mesh` process (`node --expose-gc --import probe.js main.js start ...`):
 * on SIGUSR2 it runs a full GC (when `gc` is exposed), then prints one JSON line on stdout:
 * `{"event":"bench:probe", time, rssMb, heapUsedMb, heapTotalMb, externalMb, fds, timers, handles,
 * resources: {type: count}, eldP50Ms, eldP99Ms, eldMaxMs, cpuUserMs, cpuSystemMs}`. `timers` counts
 * the active `Timeout`s (`process.getActiveResourcesInfo()`: refed ones), `fds` the entries of
 * /proc/self/fd, the event-loop delay is since the previous sample (monitorEventLoopDelay, 20 ms
 * resolution), read before the forced GC and reset after it (the probe's own GC pause is not counted).
 * Nothing else of the process changes; the signal handler does not keep it alive.
 */
import { readdirSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'

const MB = 1024 * 1024
const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d

const eld = monitorEventLoopDelay({ resolution: 20 })
eld.enable()

function fdCount(): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return -1
  }
}

process.on('SIGUSR2', () => {
  // the loop's delay first: the forced GC below blocks it, and its pause belongs to no interval measured
  const eldP50Ms = round(eld.percentile(50) / 1e6)
  const eldP99Ms = round(eld.percentile(99) / 1e6)
  const eldMaxMs = round(eld.max / 1e6)
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  const mem = process.memoryUsage()
  const resources: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1
  const cpu = process.cpuUsage()
  const line = {
    event: 'bench:probe',
    time: Date.now(),
    rssMb: round(mem.rss / MB),
    heapUsedMb: round(mem.heapUsed / MB, 2),
    heapTotalMb: round(mem.heapTotal / MB),
    externalMb: round(mem.external / MB, 2),
    fds: fdCount(),
    timers: resources.Timeout ?? 0,
    handles: Object.values(resources).reduce((a, b) => a + b, 0),
    resources,
    eldP50Ms,
    eldP99Ms,
    eldMaxMs,
    cpuUserMs: Math.round(cpu.user / 1000),
    cpuSystemMs: Math.round(cpu.system / 1000),
  }
  process.stdout.write(`${JSON.stringify(line)}\n`)
  // after the GC and the write: the next interval starts clean
  setImmediate(() => eld.reset())
})
