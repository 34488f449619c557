/**
 * What the three rendezvous implementations share: the per-peer bookkeeping (`Tracker`), the RSS sampler
 * and `measure()`, which runs one (impl, N) scenario against a `Harness` and returns a `RunResult`.
 *
 * Timeline of one run (one fresh process):
 *   setup     the 5 bootstrap nodes start (not timed; the RSS sampler already runs)
 *   t0        all N peers are started at once (create, start, join the topic); CPU is read here
 *   full      every peer has had min(5, N-1) topic peers connected at the same time (or --timeout-ms)
 *   late      one more peer joins the warm mesh (2 s after full rendezvous): its time to a first topic peer (and to min(5, N) peers)
 *   teardown  everything stopped (bounded), then the result line is printed
 */
import { median, round } from '../lib/stats.js'

export const IMPLS = ['hyperswarm', 'raw_libp2p', 'meshkit'] as const
export type ImplName = (typeof IMPLS)[number]

/** The topic every peer joins; each implementation derives its own key from it (hash / CID). */
export const TOPIC = 'meshkit-bench-rendezvous'
/** How many bootstrap nodes (hyperswarm testnet DHT nodes, or libp2p DHT servers). */
export const BOOTSTRAP_NODES = 5
/** Target topic peers per peer: min(TARGET_PEERS, N - 1). */
export const TARGET_PEERS = 5
const RSS_SAMPLE_MS = 50
const TEARDOWN_TIMEOUT_MS = 20_000
const MIB = 1024 * 1024

/** How a peer tells the tracker that a topic peer is connected (`up`) or no longer (`down`). Idempotent. */
export interface PeerSink {
  up(remote: string): void
  down(remote: string): void
}

/** One implementation, driven by `measure()`. */
export interface Harness {
  /** Starts the bootstrap nodes (before t0, not timed). */
  setup(): Promise<void>
  /** Creates and starts peer `index` and makes it join the topic; topic peers are reported to `sink`. */
  startPeer(index: number, sink: PeerSink): Promise<void>
  /** Stops every peer and bootstrap node. */
  stop(): Promise<void>
  /** Taken when the measurements end, before teardown: e.g. connections per peer. */
  snapshot?(): Record<string, unknown>
  /** Anything implementation-specific worth reporting after teardown (e.g. the loopback guard of hyperswarm). */
  details?(): Record<string, unknown>
}

export interface MeasureOptions {
  timeoutMs: number
  /** Also measure a late joiner after full rendezvous. @default true */
  lateJoiner?: boolean
}

export interface Distribution {
  count: number
  median: number | null
  p95: number | null
  min: number | null
  max: number | null
}

export interface RunResult {
  impl: ImplName
  n: number
  /** Topic peers each peer must reach: min(5, N - 1). */
  k: number
  timed_out: boolean
  /** t0 until every peer had k topic peers connected (null when timed out). */
  full_rendezvous_ms: number | null
  /** Peers (of N) that reached k topic peers before the end (full rendezvous or timeout). */
  peers_full: number
  /** Peers with k topic peers connected at the moment the run ended (a stability check). */
  peers_full_at_end: number
  /** t0 until each peer's first topic peer (ms), over the peers that got one. */
  first_peer_ms: Distribution
  /** t0 until all N peers had started and joined (their start promises resolved). */
  all_started_ms: number | null
  peers_failed: number
  /** process.cpuUsage() delta (user + system) from t0 to full rendezvous (or timeout), seconds. */
  cpu_s: number
  cpu_user_s: number
  cpu_system_s: number
  /** Peak of process.memoryUsage.rss() sampled every 50 ms from before setup to the end of the late joiner. */
  peak_rss_mb: number
  /** RSS after the bootstrap nodes were up, just before t0. */
  baseline_rss_mb: number
  /** process.resourceUsage().maxRSS: the kernel's high-water mark for this (fresh) process, incl. module loading. */
  max_rss_mb: number
  late_joiner: {
    first_peer_ms: number | null
    /** Late joiner start until it had min(5, N) topic peers. */
    full_ms: number | null
    timed_out: boolean
    cpu_s: number
  } | null
  errors: string[]
  [extra: string]: unknown
}

/** Mean of a list, rounded to 0.1 (null for an empty list). */
export function meanOf(values: readonly number[]): number | null {
  return values.length ? round(values.reduce((a, b) => a + b, 0) / values.length) : null
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Resolves with `promise`, or with `fallback` after `ms` (the timer never keeps the process alive). */
export function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms)
    timer.unref()
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Nearest-rank percentile (p in 0..100); NaN for an empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

export function distribution(values: readonly number[]): Distribution {
  const r = (v: number) => (Number.isFinite(v) ? round(v) : null)
  return {
    count: values.length,
    median: r(median(values)),
    p95: r(percentile(values, 95)),
    min: values.length ? r(Math.min(...values)) : null,
    max: values.length ? r(Math.max(...values)) : null,
  }
}

/** Samples RSS every 50 ms; `peak` is the largest sample so far (bytes). */
export class RssSampler {
  peak = process.memoryUsage.rss()
  #timer: NodeJS.Timeout

  constructor() {
    this.#timer = setInterval(() => this.sample(), RSS_SAMPLE_MS)
    this.#timer.unref()
  }

  sample(): number {
    const rss = process.memoryUsage.rss()
    if (rss > this.peak) this.peak = rss
    return rss
  }

  stop(): void {
    clearInterval(this.#timer)
    this.sample()
  }
}

interface PeerState {
  connected: Set<string>
  firstAt?: number
  /** When it first had `target` topic peers connected at once. */
  fullAt?: number
}

/** Per-peer topic-peer sets and the moments they first reached 1 and `target` peers. */
export class Tracker {
  readonly peers: PeerState[] = []
  #waiters = new Set<() => void>()

  constructor(readonly targetFor: (index: number) => number) {}

  #peer(index: number): PeerState {
    let p = this.peers[index]
    if (!p) {
      p = { connected: new Set() }
      this.peers[index] = p
    }
    return p
  }

  sink(index: number): PeerSink {
    return {
      up: (remote) => {
        const p = this.#peer(index)
        if (p.connected.has(remote)) return
        p.connected.add(remote)
        const now = performance.now()
        p.firstAt ??= now
        if (p.fullAt === undefined && p.connected.size >= this.targetFor(index)) p.fullAt = now
        for (const wake of this.#waiters) wake()
      },
      down: (remote) => {
        this.#peer(index).connected.delete(remote)
      },
    }
  }

  fullCount(from: number, to: number): number {
    let count = 0
    for (let i = from; i < to; i++) if (this.peers[i]?.fullAt !== undefined) count++
    return count
  }

  fullNowCount(from: number, to: number): number {
    let count = 0
    for (let i = from; i < to; i++) if ((this.peers[i]?.connected.size ?? 0) >= this.targetFor(i)) count++
    return count
  }

  /** Resolves true once `check()` holds (re-checked whenever a topic peer comes up), false after `ms`. */
  waitFor(check: () => boolean, ms: number): Promise<boolean> {
    if (check()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
        resolve(ok)
      }
      const wake = () => {
        if (check()) done(true)
      }
      const timer = setTimeout(() => done(false), ms)
      this.#waiters.add(wake)
    })
  }
}

const mb = (bytes: number) => round(bytes / MIB)
const cpuSeconds = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1e6

/** Pause between full rendezvous and the late joiner's start. */
export const LATE_JOINER_SETTLE_MS = 2000

/** Runs one scenario: N peers at once, until full rendezvous (or timeout), then a late joiner; then stops all. */
export async function measure(
  impl: ImplName,
  harness: Harness,
  n: number,
  options: MeasureOptions,
): Promise<RunResult> {
  if (!Number.isInteger(n) || n < 2) throw new Error(`N must be a whole number >= 2 (got ${n})`)
  const sampler = new RssSampler()
  const errors: string[] = []
  const k = Math.min(TARGET_PEERS, n - 1)
  // the late joiner (index n) can reach min(5, N) peers: the N others
  const tracker = new Tracker((i) => (i === n ? Math.min(TARGET_PEERS, n) : k))
  let result: RunResult | undefined
  try {
    await harness.setup()
    const baseline = sampler.sample()

    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    let failed = 0
    const starts = Array.from({ length: n }, (_, i) => {
      return harness.startPeer(i, tracker.sink(i)).catch((err: unknown) => {
        failed++
        if (errors.length < 10) errors.push(`peer ${i}: ${reason(err)}`)
      })
    })
    let allStartedMs: number | null = null
    void Promise.all(starts).then(() => {
      allStartedMs = performance.now() - t0
    })
    const ok = await tracker.waitFor(() => tracker.fullCount(0, n) === n, options.timeoutMs)
    const tEnd = performance.now()
    const cpu = process.cpuUsage(cpu0)
    const fullAts = tracker.peers.slice(0, n).map((p) => p?.fullAt)
    const firsts = tracker.peers
      .slice(0, n)
      .map((p) => (p?.firstAt === undefined ? undefined : p.firstAt - t0))
      .filter((v): v is number => v !== undefined)

    let late: RunResult['late_joiner'] = null
    if (ok && options.lateJoiner !== false) {
      // "warm": the mesh has rendezvoused and settled (the last peers' exchanges and DHT announcements
      // finish); the same pause for every implementation
      await new Promise((r) => setTimeout(r, LATE_JOINER_SETTLE_MS))
      const lateCpu0 = process.cpuUsage()
      const tLate = performance.now()
      const started = harness.startPeer(n, tracker.sink(n)).catch((err: unknown) => {
        errors.push(`late joiner: ${reason(err)}`)
      })
      const gotFirst = await tracker.waitFor(() => tracker.peers[n]?.firstAt !== undefined, options.timeoutMs)
      const lateCpu = process.cpuUsage(lateCpu0)
      const remaining = Math.max(0, options.timeoutMs - (performance.now() - tLate))
      const gotFull = gotFirst && (await tracker.waitFor(() => tracker.fullCount(n, n + 1) === 1, remaining))
      await within(started, 1_000, undefined)
      const lp = tracker.peers[n]
      late = {
        first_peer_ms: lp?.firstAt === undefined ? null : round(lp.firstAt - tLate),
        full_ms: gotFull && lp?.fullAt !== undefined ? round(lp.fullAt - tLate) : null,
        timed_out: !gotFirst,
        cpu_s: round(cpuSeconds(lateCpu), 3),
      }
    }
    sampler.stop()
    const snapshot = harness.snapshot?.() ?? {}

    result = {
      impl,
      n,
      k,
      timed_out: !ok,
      full_rendezvous_ms: ok ? round(Math.max(...fullAts.map((a) => (a ?? tEnd) - t0))) : null,
      peers_full: tracker.fullCount(0, n),
      peers_full_at_end: tracker.fullNowCount(0, n),
      first_peer_ms: distribution(firsts),
      all_started_ms: allStartedMs === null ? null : round(allStartedMs),
      peers_failed: failed,
      cpu_s: round(cpuSeconds(cpu), 3),
      cpu_user_s: round(cpu.user / 1e6, 3),
      cpu_system_s: round(cpu.system / 1e6, 3),
      peak_rss_mb: mb(sampler.peak),
      baseline_rss_mb: mb(baseline),
      max_rss_mb: round(process.resourceUsage().maxRSS / 1024),
      late_joiner: late,
      errors,
      ...snapshot,
    }
  } finally {
    sampler.stop()
    const t = performance.now()
    const stopped = await within(
      harness.stop().then(
        () => true,
        (err: unknown) => {
          errors.push(`stop: ${reason(err)}`)
          return true
        },
      ),
      TEARDOWN_TIMEOUT_MS,
      false,
    )
    if (!stopped) errors.push(`stop: not done within ${TEARDOWN_TIMEOUT_MS} ms`)
    if (result) {
      result.teardown_ms = round(performance.now() - t)
      Object.assign(result, harness.details?.() ?? {})
    }
  }
  if (!result) throw new Error('unreachable: no result and no error')
  return result
}
