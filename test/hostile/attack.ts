/**
 * What every attack gets (the target, sentinels, source IPs, a stop signal) and `defineAttack()`, which
 * turns an attack body into a named, parameterised, bounded function returning an {@link AttackReport}.
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { HostileNode, HostilePool } from './hostile-node.js'
import { type AttackReport, Tally } from './report.js'
import type { Sentinels } from './sentinels.js'
import { pause } from './wire.js'

/** What the attacker knows about the target (see discoverTarget()). */
export interface TargetInfo {
  peerId: string
  /** The TCP multiaddr with /p2p/<id>. */
  tcp: string
  host: string
  tcpPort: number
  /** The QUIC multiaddr with /p2p/<id>, if it listens on QUIC. */
  quic?: string
  /** Protocols the target advertises over identify. */
  protocols: string[]
  /** Its STUN server (UDP), if the attacker knows it. */
  stun?: { host: string; port: number }
  /** Its NAT probe server's endpoints (`ip:port`), if known. */
  probe?: { udp: string[]; tcp: string[] }
  /** Topic keys (CID strings) it joined, as its topics exchange tells. */
  topicKeys: string[]
  /** Its own clustering tags, as its tags exchange tells. */
  tags: string[]
}

/** The world an attack runs in. */
export interface AttackEnv {
  target: TargetInfo
  sentinels: Sentinels
  /** Source IPs hostile peers use, in turn. @default 127.0.0.2 - 127.0.0.31 */
  sourceIps?: string[]
  /** Stops the attack early. */
  signal?: AbortSignal
}

export interface AttackParams {
  /** How long it runs (ms); every attack stops by then (plus a short clean-up). @default 5000 */
  durationMs?: number
  /** Scales counts and rates: 1 is the default load, 0.2 light, 3 heavy. @default 1 */
  intensity?: number
}

/** What an attack body sees. */
export interface AttackContext {
  target: TargetInfo
  sentinels: Sentinels
  sourceIps: string[]
  /** Aborts when the duration is over (or the caller aborts). */
  signal: AbortSignal
  intensity: number
  durationMs: number
  /** When the attack must be over (ms since epoch). */
  deadline: number
  /** `base` scaled by the intensity, at least `min`. */
  scaled(base: number, min?: number): number
  tally: Tally
}

/** A named, parameterised attack: call it to run it. */
export interface Attack {
  (env: AttackEnv, params?: AttackParams): Promise<AttackReport>
  readonly attackName: string
  readonly description: string
}

/** Source IPs hostile peers use by default: 30 hosts, none of them allow-listed by the target's config. */
export const DEFAULT_SOURCE_IPS: readonly string[] = Array.from({ length: 30 }, (_, i) => `127.0.0.${i + 2}`)

/** Longest an attack may overrun its duration while cleaning up before it is reported as stuck. */
const CLEANUP_GRACE_MS = 15_000

/**
 * Defines an attack. `body` runs until `ctx.signal` aborts (the duration is over); it must clean up
 * everything it opened before it resolves. Its errors become `failed` in the report (a harness problem);
 * what the target does wrong goes into the tally.
 */
export function defineAttack(
  name: string,
  description: string,
  body: (ctx: AttackContext) => Promise<void>,
): Attack {
  const run = async (env: AttackEnv, params: AttackParams = {}): Promise<AttackReport> => {
    const durationMs = params.durationMs ?? 5000
    const intensity = params.intensity ?? 1
    const timeout = AbortSignal.timeout(durationMs)
    const signal = env.signal ? AbortSignal.any([timeout, env.signal]) : timeout
    const tally = new Tally(name)
    const ctx: AttackContext = {
      target: env.target,
      sentinels: env.sentinels,
      sourceIps: env.sourceIps ?? [...DEFAULT_SOURCE_IPS],
      signal,
      intensity,
      durationMs,
      deadline: Date.now() + durationMs,
      scaled: (base, min = 1) => Math.max(min, Math.round(base * intensity)),
      tally,
    }
    let failed: unknown
    let timer: NodeJS.Timeout | undefined
    const stuck = new Promise<'stuck'>((resolve) => {
      timer = setTimeout(() => resolve('stuck'), durationMs + CLEANUP_GRACE_MS)
    })
    try {
      const outcome = await Promise.race([body(ctx).then(() => 'done' as const), stuck])
      if (outcome === 'stuck') failed = `did not stop within ${CLEANUP_GRACE_MS} ms after its duration`
    } catch (err) {
      failed = err
    } finally {
      clearTimeout(timer)
    }
    return tally.report(failed)
  }
  return Object.assign(run, { attackName: name, description })
}

/** Runs `fn` on `workers` parallel loops until `signal` aborts; each loop's errors are counted, not thrown. */
export async function loops(
  workers: number,
  signal: AbortSignal,
  tally: Tally,
  fn: (worker: number) => Promise<void>,
): Promise<void> {
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      while (!signal.aborted) {
        try {
          await fn(worker)
        } catch (err) {
          if (!signal.aborted) tally.error(err)
          // a loop that fails at once must not spin
          await new Promise((r) => setTimeout(r, 20))
        }
      }
    }),
  )
}

/**
 * One hostile peer's connection to the target, re-dialled when the target closes it (a new identity
 * each time: the target may have blocked the old one).
 */
/** Pause after the target refused a stream, so that a loop of refusals does not spin. */
const REFUSED_PAUSE_MS = 25

export class ConnectionKeeper {
  #node?: HostileNode
  #connection?: Connection
  #dialing?: Promise<Connection>

  constructor(
    private readonly ctx: AttackContext,
    private readonly pool: HostilePool,
    private readonly nodeOptions: Parameters<HostilePool['spawn']>[0] = {},
  ) {}

  get node(): HostileNode | undefined {
    return this.#node
  }

  async get(): Promise<Connection> {
    if (this.#connection?.status === 'open') return this.#connection
    this.#dialing ??= (async () => {
      if (this.#node) {
        this.ctx.tally.inc('reconnects')
        await this.pool.stop(this.#node)
      }
      this.#node = await this.pool.spawn(this.nodeOptions)
      try {
        this.#connection = await this.#node.dial(this.ctx.target.tcp, this.ctx.tally, this.ctx.signal)
      } catch (err) {
        // the target is refusing connections (pending slots full, rate limits): do not hammer it
        await pause(250, this.ctx.signal)
        throw err
      }
      return this.#connection
    })().finally(() => {
      this.#dialing = undefined
    })
    return this.#dialing
  }

  /** Opens a stream (counted); undefined when the target refused it (counted per protocol). */
  async open(protocol: string): Promise<Stream | undefined> {
    const connection = await this.get()
    this.ctx.tally.inc('streams_opened')
    try {
      return await connection.newStream(protocol, {
        signal: AbortSignal.any([AbortSignal.timeout(5000), this.ctx.signal]),
        runOnLimitedConnection: true,
      })
    } catch (err) {
      if (!this.ctx.signal.aborted) {
        this.ctx.tally.inc(`refused:${protocol}`)
        this.ctx.tally.error(err)
        // a refusal can come at once (stream limits, a reset): without a pause the caller's loop spins,
        // and every turn's timeout signal lives on for 5 s (a run once grew to 4 GB this way)
        await pause(REFUSED_PAUSE_MS, this.ctx.signal)
      }
      return undefined
    }
  }
}
