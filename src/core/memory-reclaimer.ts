/**
 * Gives memory back to the system once a burst of work is over. A node serving peers allocates in bursts
 * (handshakes, streams, a flood from a hostile peer); V8 frees the objects but keeps the pages it used:
 * measured on js-libp2p after 6 s of garbage TCP connections, RSS stayed +50-90 MiB above its start
 * for good while the heap after GC was back at its start. Only a memory-reducing ("last resort") GC
 * releases those pages; V8's own memory reducer does not. This runs one when the process has been quiet
 * for a few seconds after its RSS grew, at most once per `minIntervalMs`.
 */
import v8 from 'node:v8'
import vm from 'node:vm'

export interface MemoryReclaimerInit {
  /** How often RSS and CPU are sampled (ms). @default 1000 */
  intervalMs?: number
  /** Consecutive quiet samples before a reclaim. @default 3 */
  quietSamples?: number
  /** CPU time per wall time (one core = 1) under which a sample counts as quiet. @default 0.1 */
  quietCpu?: number
  /** Reclaim only when RSS exceeds the lowest quiet RSS seen by this factor. @default 1.15 */
  growth?: number
  /** At least this long between two reclaims (ms). @default 30000 */
  minIntervalMs?: number
  /** Told after each reclaim (e.g. a debug log line). */
  onReclaim?: (info: MemoryReclaim) => void
}

/** What one reclaim did. */
export interface MemoryReclaim {
  rssBeforeMb: number
  rssAfterMb: number
  /** Main-thread time the GC took (ms). */
  ms: number
}

export interface MemoryReclaimer {
  /** Reclaims done so far. */
  readonly reclaims: number
  stop(): void
}

type GcFunction = (options?: { type?: 'major'; execution?: 'sync'; flavor?: 'last-resort' }) => void

let gcFunction: GcFunction | undefined

/** V8's gc(), taken from a fresh context when the process was not started with --expose-gc. */
function getGc(): GcFunction {
  if (gcFunction) return gcFunction
  const global = (globalThis as { gc?: GcFunction }).gc
  if (typeof global === 'function') gcFunction = global
  else {
    v8.setFlagsFromString('--expose-gc')
    gcFunction = vm.runInNewContext('gc') as GcFunction
    v8.setFlagsFromString('--no-expose-gc')
  }
  return gcFunction
}

const mb = (bytes: number) => Math.round(bytes / 1e5) / 10

/** Starts sampling; the timer never keeps the process alive. */
export function startMemoryReclaimer(init: MemoryReclaimerInit = {}): MemoryReclaimer {
  const intervalMs = init.intervalMs ?? 1000
  const quietSamples = init.quietSamples ?? 3
  const quietCpu = init.quietCpu ?? 0.1
  const growth = init.growth ?? 1.15
  const minIntervalMs = init.minIntervalMs ?? 30_000
  let baseline = Number.POSITIVE_INFINITY
  let quiet = 0
  let lastReclaim = 0
  let reclaims = 0
  let lastCpu = process.cpuUsage()
  let lastTime = performance.now()

  const timer = setInterval(() => {
    const now = performance.now()
    const cpu = process.cpuUsage(lastCpu)
    const share = (cpu.user + cpu.system) / 1000 / Math.max(1, now - lastTime)
    lastCpu = process.cpuUsage()
    lastTime = now
    if (share >= quietCpu) {
      quiet = 0
      return
    }
    quiet++
    const rss = process.memoryUsage.rss()
    if (quiet < quietSamples) return
    baseline = Math.min(baseline, rss)
    if (rss <= baseline * growth || Date.now() - lastReclaim < minIntervalMs) return
    const started = performance.now()
    getGc()({ type: 'major', execution: 'sync', flavor: 'last-resort' })
    const after = process.memoryUsage.rss()
    lastReclaim = Date.now()
    reclaims++
    baseline = Math.min(baseline, after)
    // the GC's own CPU must not count as activity in the next sample
    lastCpu = process.cpuUsage()
    lastTime = performance.now()
    init.onReclaim?.({ rssBeforeMb: mb(rss), rssAfterMb: mb(after), ms: Math.round(lastTime - started) })
  }, intervalMs)
  timer.unref()
  return {
    get reclaims() {
      return reclaims
    },
    stop: () => clearInterval(timer),
  }
}
