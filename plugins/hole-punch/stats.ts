/** Connection metrics of the hole-punch plugin: counters and timing histograms, for `stats()`. */

/** Upper bounds (ms) of the timing histograms' buckets, Prometheus style (cumulative; +Inf implied). */
export const TIMING_BUCKETS_MS: readonly number[] = [50, 100, 250, 500, 1000, 2000, 5000, 10_000]
/** Samples kept for the quantiles (the most recent ones). */
const WINDOW = 1024

export interface TimingSummary {
  count: number
  sumMs: number
  minMs?: number
  maxMs?: number
  /** Over the last 1024 samples. */
  p50Ms?: number
  p95Ms?: number
  /** Cumulative counts per upper bound (`le`, ms); the last, `Infinity`, equals count. */
  buckets: Array<{ le: number; count: number }>
}

export interface HolePunchStats {
  /** Connections classified (each `connection:method` event). */
  connections: number
  byMethod: { direct: number; 'hole-punched': number; relayed: number }
  /** By transport of the connection in use: tcp, quic, webrtc, relay, ... */
  byTransport: Record<string, number>
  /** By `method/transport`, e.g. `hole-punched/webrtc`. */
  byMethodTransport: Record<string, number>
  punch: {
    /** Upgrade (WebRTC) attempts made. */
    attempts: number
    /** Upgrades that gave a direct connection. */
    succeeded: number
    /** Relayed connections whose upgrade attempts all failed. */
    failed: number
    /** Relayed connections left relayed without any attempt (the pair's NAT types cannot punch). */
    skipped: number
  }
  /**
   * Inbound WebRTC connections closed because nothing went through them: ICE never connected (the
   * dialler's attempt failed), yet @libp2p/webrtc had opened them. Never counted as hole-punched.
   */
  unverified: number
  /**
   * WebRTC dials the strategy did not make (a plain `libp2p.dial(peerId)` picks a peer's
   * `/p2p-circuit/webrtc` address first), served by the relayed connection instead.
   */
  redirected: number
  /** Connections closed because the peer had a better one (or an older equal one). */
  duplicatesClosed: number
  /** Dial to first connection (outbound connections we dialled). */
  msToFirst: TimingSummary
  /** Dial (or relayed connection) to the direct one. */
  msToDirect: TimingSummary
}

function quantile(sorted: number[], q: number): number | undefined {
  if (sorted.length === 0) return undefined
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

export class Timing {
  #count = 0
  #sum = 0
  #min?: number
  #max?: number
  readonly #window: number[] = []
  readonly #buckets = TIMING_BUCKETS_MS.map(() => 0)

  add(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    this.#count++
    this.#sum += ms
    this.#min = this.#min === undefined ? ms : Math.min(this.#min, ms)
    this.#max = this.#max === undefined ? ms : Math.max(this.#max, ms)
    this.#window.push(ms)
    if (this.#window.length > WINDOW) this.#window.shift()
    TIMING_BUCKETS_MS.forEach((le, i) => {
      if (ms <= le) this.#buckets[i]++
    })
  }

  summary(): TimingSummary {
    const sorted = [...this.#window].sort((x, y) => x - y)
    return {
      count: this.#count,
      sumMs: this.#sum,
      minMs: this.#min,
      maxMs: this.#max,
      p50Ms: quantile(sorted, 0.5),
      p95Ms: quantile(sorted, 0.95),
      buckets: [
        ...TIMING_BUCKETS_MS.map((le, i) => ({ le, count: this.#buckets[i] })),
        { le: Number.POSITIVE_INFINITY, count: this.#count },
      ],
    }
  }
}

export class ConnectionStats {
  #connections = 0
  readonly #byMethod = { direct: 0, 'hole-punched': 0, relayed: 0 }
  readonly #byTransport: Record<string, number> = {}
  readonly #byMethodTransport: Record<string, number> = {}
  readonly #punch = { attempts: 0, succeeded: 0, failed: 0, skipped: 0 }
  readonly #msToFirst = new Timing()
  readonly #msToDirect = new Timing()
  #unverified = 0
  #redirected = 0
  #duplicatesClosed = 0

  /** Upgrade attempts of a later decision on a connection already counted, that left it relayed. */
  attemptsFailed(attempts: number): void {
    if (attempts <= 0) return
    this.#punch.attempts += attempts
    this.#punch.failed++
  }

  unverifiedClosed(): void {
    this.#unverified++
  }

  redirectedDial(): void {
    this.#redirected++
  }

  duplicateClosed(): void {
    this.#duplicatesClosed++
  }

  record(e: {
    method: 'direct' | 'hole-punched' | 'relayed'
    transport: string
    attempts: number
    msToFirst?: number
    msToDirect?: number
    skipped?: string
  }): void {
    this.#connections++
    this.#byMethod[e.method]++
    this.#byTransport[e.transport] = (this.#byTransport[e.transport] ?? 0) + 1
    const key = `${e.method}/${e.transport}`
    this.#byMethodTransport[key] = (this.#byMethodTransport[key] ?? 0) + 1
    this.#punch.attempts += e.attempts
    if (e.method === 'hole-punched' && e.attempts > 0) this.#punch.succeeded++
    if (e.method === 'relayed' && e.attempts > 0) this.#punch.failed++
    if (e.method === 'relayed' && e.skipped !== undefined) this.#punch.skipped++
    if (e.msToFirst !== undefined) this.#msToFirst.add(e.msToFirst)
    if (e.msToDirect !== undefined) this.#msToDirect.add(e.msToDirect)
  }

  snapshot(): HolePunchStats {
    return {
      connections: this.#connections,
      byMethod: { ...this.#byMethod },
      byTransport: { ...this.#byTransport },
      byMethodTransport: { ...this.#byMethodTransport },
      punch: { ...this.#punch },
      unverified: this.#unverified,
      redirected: this.#redirected,
      duplicatesClosed: this.#duplicatesClosed,
      msToFirst: this.#msToFirst.summary(),
      msToDirect: this.#msToDirect.summary(),
    }
  }
}
