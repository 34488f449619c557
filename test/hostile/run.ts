/**
 * A whole hostile-peer run against one `mesh start` target: start it, let it settle (baseline), attack it
 * with every selected attack in rotation (a few in parallel) for `durationMs`, then leave it alone for
 * `idleMs` and measure what is left: CPU, RSS, fds, log lines, and the dials it still makes to addresses
 * the attackers handed it. One report per phase and a summary; used by bench/hostile and the test.
 */
import type { AttackEnv } from './attack.js'
import { ATTACKS, selectAttacks } from './attacks/index.js'
import { PING_PROTOCOL } from './attacks/services.js'
import { discoverTarget } from './discover.js'
import { HostilePool } from './hostile-node.js'
import { type AttackReport, mergeReports } from './report.js'
import { Sentinels } from './sentinels.js'
import {
  cpuPct,
  type Metrics,
  metricSum,
  type ProcSample,
  startTarget,
  type TargetOptions,
  type TargetProcess,
} from './target.js'
import { noise, pause, send } from './wire.js'

export interface HostileRunOptions {
  /** Attack phase length (ms). @default 60000 */
  durationMs?: number
  /** Idle phase length after the attack (ms). @default 30000 */
  idleMs?: number
  /** Attacks to rotate through. @default 'all' */
  attacks?: 'all' | readonly string[]
  /** Scales every attack's counts and rates. @default 1 */
  intensity?: number
  /** Attacks running at once. @default 3 */
  parallel?: number
  /** How long each attack runs per turn (ms). @default enough for every attack to run once, at least 2 s */
  sliceMs?: number
  /** Wait after the start before the baseline is taken (ms). @default 5000 */
  settleMs?: number
  /** The idle CPU is measured over the last this-many ms of the idle phase. @default min(10 s, idle / 2) */
  idleCpuWindowMs?: number
  /** How often the honest probe dials + pings the target during the attack (ms). @default 2000 */
  probeEveryMs?: number
  target?: TargetOptions
  /** Called with each phase's report as soon as the phase ends (bench/hostile prints them). */
  onPhase?: (phase: PhaseReport) => void
}

/** One phase's measurements. */
export interface PhaseReport {
  phase: 'start' | 'baseline' | 'attack' | 'idle'
  ms: number
  [field: string]: unknown
}

/** The numbers the security issue's acceptance is stated in, and what else a run found. */
export interface HostileSummary {
  survived: boolean
  /** How the target ended, when it did not survive. */
  exit?: string
  rss_start_mb: number
  rss_peak_mb: number
  rss_idle_mb: number
  /** rss_idle_mb / rss_start_mb. */
  rss_ratio: number
  /** CPU over the last `idleCpuWindowMs` of the idle phase (% of one core). */
  idle_cpu_pct: number
  /** CPU over the whole idle phase. */
  idle_cpu_pct_full: number
  attack_cpu_pct: number
  baseline_cpu_pct: number
  fds_start: number
  fds_peak: number
  fds_idle: number
  threads_peak: number
  /** Output lines (stdout + stderr) from the attack's start to the idle phase's end. */
  log_lines: number
  log_lines_attack: number
  log_lines_idle: number
  /** Lines in the idle phase that talk of retrying (relay listen, bootstrap, dials). */
  retry_log_lines_after: number
  /** Dials/datagrams reaching attacker- or victim-sentinels after the attack ended, in all and by label. */
  background_dials_after: number
  background_dials_after_by_label: Record<string, number>
  /** Outbound TCP/QUIC dial events the target's own metrics counted during the idle phase. */
  target_dials_idle: number | null
  /** Every sentinel hit (attack + idle) by label: `victim:*` are addresses the target should never contact. */
  sentinel_hits_by_label: Record<string, number>
  /** Attacks whose answers outweighed their requests (bytes received / sent > 1). */
  amplification: Record<string, number>
  /**
   * Honest peers during the attack (the run's probe from 127.0.0.240 every `probeEveryMs`, and the probes of
   * the lockout attacks): handshakes (+ pings) that worked, failed, the slowest.
   */
  probe_ok: number
  probe_failed: number
  probe_max_ms: number
  /** Attacks that could not run (harness problems). */
  attacks_failed: string[]
  attacks_run: number
}

export interface HostileRunResult {
  phases: PhaseReport[]
  attacks: AttackReport[]
  summary: HostileSummary
}

const mb = (kb: number) => Math.round(kb / 102.4) / 10
/** The shortest turn an attack gets. */
const MIN_SLICE_MS = 2000
/** What an attack's turn costs beyond its duration (its peers stopping, sockets closing). */
const TURN_OVERHEAD_MS = 1000
const RETRY_LINE = /retry|retrying|could not listen|again in|backing off/i

/** Samples the target every `everyMs` until stopped; keeps every sample. */
class Sampler {
  readonly samples: ProcSample[] = []
  #timer?: NodeJS.Timeout

  constructor(private readonly target: TargetProcess) {}

  start(everyMs = 1000): void {
    this.#timer = setInterval(() => {
      void this.take()
    }, everyMs)
  }

  async take(): Promise<ProcSample | undefined> {
    const s = await this.target.sample()
    if (s) this.samples.push(s)
    return s
  }

  between(from: number, to: number): ProcSample[] {
    return this.samples.filter((s) => s.at >= from && s.at <= to)
  }

  stop(): void {
    clearInterval(this.#timer)
  }
}

/** Dials (fresh connection) and pings the target once from 127.0.0.240; the ms it took, or undefined. */
async function honestProbe(pool: HostilePool, tcp: string): Promise<number | undefined> {
  const started = Date.now()
  const node = await pool.spawn({ sourceIp: '127.0.0.240' })
  try {
    const connection = await node.dial(tcp)
    const { stream, reader } = await node.open(connection, PING_PROTOCOL)
    await send(stream, noise(32))
    const r = await reader.read({ timeoutMs: 5000, maxBytes: 32 })
    stream.abort(new Error('done'))
    await connection.close().catch(() => {})
    if (r.end !== 'max') return undefined
    return Date.now() - started
  } catch {
    return undefined
  } finally {
    await pool.stop(node)
  }
}

/** Control API reads that may fail on an overloaded target: undefined then. */
async function snapshot(target: TargetProcess): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  try {
    const status = (await target.get('/api/status')) as { peers?: number; connections?: number }
    out.peers = status.peers
    out.connections = status.connections
  } catch (err) {
    out.status_error = (err as Error).message
  }
  try {
    const clusters = (await target.get('/api/clusters')) as { clusters?: unknown[] } | unknown[]
    out.clusters = Array.isArray(clusters) ? clusters.length : (clusters.clusters?.length ?? null)
  } catch (err) {
    out.clusters_error = (err as Error).message
  }
  return out
}

async function dialEvents(target: TargetProcess): Promise<number | undefined> {
  try {
    const m: Metrics = await target.metrics()
    return metricSum(m, 'libp2p_tcp_dialer_events_total') + metricSum(m, 'libp2p_quic_dialer_events_total')
  } catch {
    return undefined
  }
}

/** Runs the attacks in rotation, `parallel` at a time, each for `sliceMs`, until `durationMs` is over. */
async function rotate(
  env: AttackEnv,
  names: 'all' | readonly string[],
  {
    durationMs,
    parallel,
    sliceMs,
    intensity,
  }: { durationMs: number; parallel: number; sliceMs: number; intensity: number },
): Promise<AttackReport[]> {
  const attacks = selectAttacks(names)
  const end = Date.now() + durationMs
  const reports: AttackReport[] = []
  // no attack at all: a control run (the same phases, nobody attacking)
  if (attacks.length === 0) await pause(durationMs, env.signal)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(parallel, attacks.length) }, async () => {
      // every attack gets at least one turn (the phase may overrun by a slice for that), then rotation
      while ((next < attacks.length || Date.now() < end - 1000) && !env.signal?.aborted) {
        const attack = attacks[next++ % attacks.length]
        const ms = Math.max(MIN_SLICE_MS, Math.min(sliceMs, end - Date.now()))
        reports.push(await attack(env, { durationMs: ms, intensity }))
      }
    }),
  )
  return reports
}

/** One full run; see {@link HostileRunOptions}. The target is always stopped at the end. */
export async function runHostile(options: HostileRunOptions = {}): Promise<HostileRunResult> {
  const durationMs = options.durationMs ?? 60_000
  const idleMs = options.idleMs ?? 30_000
  const parallel = options.parallel ?? 3
  const names = options.attacks ?? 'all'
  const count = Math.max(1, names === 'all' ? ATTACKS.length : names.length)
  const sliceMs =
    options.sliceMs ?? Math.max(MIN_SLICE_MS, Math.floor((durationMs * parallel) / count) - TURN_OVERHEAD_MS)
  const idleCpuWindowMs = options.idleCpuWindowMs ?? Math.min(10_000, Math.floor(idleMs / 2))
  const phases: PhaseReport[] = []
  const emit = (phase: PhaseReport) => {
    phases.push(phase)
    options.onPhase?.(phase)
  }

  const t0 = Date.now()
  const target = await startTarget(options.target)
  const sampler = new Sampler(target)
  const sentinels = new Sentinels()
  const probes = new HostilePool(['127.0.0.240'])
  let attacks: AttackReport[] = []
  try {
    emit({
      phase: 'start',
      ms: Date.now() - t0,
      pid: target.pid,
      peer_id: target.peerId,
      addresses: target.addresses,
      ports: target.ports,
    })

    // baseline: settle, then CPU over the second half of the settle time
    const s0 = await sampler.take()
    sampler.start()
    await pause((options.settleMs ?? 5000) / 2)
    const b0 = await sampler.take()
    await pause((options.settleMs ?? 5000) / 2)
    const b1 = await sampler.take()
    if (!s0 || !b0 || !b1) throw new Error(`the target died while settling\n${target.proc.describe()}`)
    const info = await discoverTarget(target.tcp, {
      stun: { host: '127.0.0.1', port: target.ports.stun },
      probe: {
        udp: target.ports.probe.map((p) => `127.0.0.1:${p}`),
        tcp: target.ports.probe.map((p) => `127.0.0.1:${p}`),
      },
    })
    const base = await snapshot(target)
    const logStart = target.logLines
    const streamsAtStart = { out: target.lines.stdout.length, err: target.lines.stderr.length }
    emit({
      phase: 'baseline',
      ms: b1.at - s0.at,
      cpu_pct: cpuPct(b0, b1),
      rss_mb: mb(b1.rssKb),
      fds: b1.fds,
      threads: b1.threads,
      log_lines: b1.logLines,
      protocols: info.protocols,
      topic_keys: info.topicKeys,
      tags: info.tags,
      ...base,
    })

    // attack
    const attackStart = Date.now()
    const abort = new AbortController()
    const probeResults: Array<number | undefined> = []
    const probing = (async () => {
      while (!abort.signal.aborted) {
        await pause(options.probeEveryMs ?? 2000, abort.signal)
        if (abort.signal.aborted) break
        probeResults.push(await honestProbe(probes, target.tcp))
      }
    })()
    const deadline = setTimeout(() => abort.abort(), durationMs + 20_000)
    const raw = await rotate({ target: info, sentinels, signal: abort.signal }, names, {
      durationMs,
      parallel,
      sliceMs,
      intensity: options.intensity ?? 1,
    })
    clearTimeout(deadline)
    abort.abort()
    await probing
    const attackEnd = Date.now()
    const a1 = await sampler.take()
    const during = sampler.between(attackStart, attackEnd)
    const afterAttack = await snapshot(target)
    const dialsAtAttackEnd = await dialEvents(target)
    const byName = new Map<string, AttackReport[]>()
    for (const r of raw) byName.set(r.attack, [...(byName.get(r.attack) ?? []), r])
    attacks = [...byName.values()].map(mergeReports)
    const aStart = during[0] ?? b1
    const logAtAttackEnd = target.logLines
    const streamsAtAttackEnd = { out: target.lines.stdout.length, err: target.lines.stderr.length }
    const attackLines = [
      ...target.lines.stdout.slice(streamsAtStart.out, streamsAtAttackEnd.out),
      ...target.lines.stderr.slice(streamsAtStart.err, streamsAtAttackEnd.err),
    ]
    emit({
      phase: 'attack',
      ms: attackEnd - attackStart,
      alive: target.alive,
      cpu_pct: a1 ? cpuPct(aStart, a1) : null,
      rss_peak_mb: mb(Math.max(...during.map((s) => s.rssKb), 0)),
      rss_end_mb: a1 ? mb(a1.rssKb) : null,
      fds_peak: Math.max(...during.map((s) => s.fds), 0),
      threads_peak: Math.max(...during.map((s) => s.threads), 0),
      log_lines: target.logLines - logStart,
      probe_ok: probeResults.filter((p) => p !== undefined).length,
      probe_failed: probeResults.filter((p) => p === undefined).length,
      sentinel_hits: sentinels.countByLabel(attackStart),
      log_line_kinds: lineKinds(attackLines),
      ...afterAttack,
      attacks,
    })

    // idle: nothing from us; the CPU window at its end; control API reads only after the last sample
    const idleEnd = attackEnd + idleMs
    await pause(Math.max(0, idleEnd - idleCpuWindowMs - Date.now()))
    const w0 = await sampler.take()
    await pause(Math.max(0, idleEnd - Date.now()))
    const w1 = await sampler.take()
    sampler.stop()
    const idleLines = [
      ...target.lines.stdout.slice(streamsAtAttackEnd.out),
      ...target.lines.stderr.slice(streamsAtAttackEnd.err),
    ]
    const afterIdle = await snapshot(target)
    const dialsAtIdleEnd = await dialEvents(target)
    const background = sentinels.since(attackEnd + 500)
    const backgroundByLabel: Record<string, number> = {}
    for (const h of background) backgroundByLabel[h.label] = (backgroundByLabel[h.label] ?? 0) + 1
    const retryLines = idleLines.filter((l) => RETRY_LINE.test(l))
    const probeAfter = target.alive ? await honestProbe(probes, target.tcp) : undefined
    emit({
      phase: 'idle',
      ms: idleMs,
      alive: target.alive,
      cpu_pct: w0 && w1 ? cpuPct(w0, w1) : null,
      cpu_pct_full: a1 && w1 ? cpuPct(a1, w1) : null,
      rss_mb: w1 ? mb(w1.rssKb) : null,
      fds: w1?.fds ?? null,
      threads: w1?.threads ?? null,
      log_lines: target.logLines - logAtAttackEnd,
      retry_log_lines: retryLines.length,
      log_line_kinds: lineKinds(idleLines),
      retry_log_sample: retryLines.slice(0, 5),
      background_dials: background.length,
      background_dials_by_label: backgroundByLabel,
      target_dials:
        dialsAtAttackEnd !== undefined && dialsAtIdleEnd !== undefined
          ? dialsAtIdleEnd - dialsAtAttackEnd
          : null,
      liveness_probe_ms: probeAfter ?? null,
      last_log_lines: idleLines.slice(-8),
      ...afterIdle,
    })

    const survived = target.alive && probeAfter !== undefined && afterIdle.status_error === undefined
    const amplification: Record<string, number> = {}
    for (const r of attacks) if (r.amplification > 1) amplification[r.attack] = r.amplification
    const summary: HostileSummary = {
      survived,
      ...(target.alive
        ? {}
        : { exit: `${JSON.stringify(target.proc.exit)}: ${target.lines.stderr.slice(-5).join(' | ')}` }),
      rss_start_mb: mb(b1.rssKb),
      rss_peak_mb: mb(Math.max(...sampler.samples.map((s) => s.rssKb))),
      rss_idle_mb: w1 ? mb(w1.rssKb) : 0,
      rss_ratio: w1 ? Math.round((w1.rssKb / b1.rssKb) * 100) / 100 : 0,
      idle_cpu_pct: w0 && w1 ? cpuPct(w0, w1) : 100,
      idle_cpu_pct_full: a1 && w1 ? cpuPct(a1, w1) : 100,
      attack_cpu_pct: a1 ? cpuPct(aStart, a1) : 100,
      baseline_cpu_pct: cpuPct(b0, b1),
      fds_start: b1.fds,
      fds_peak: Math.max(...sampler.samples.map((s) => s.fds)),
      fds_idle: w1?.fds ?? 0,
      threads_peak: Math.max(...sampler.samples.map((s) => s.threads)),
      log_lines: target.logLines - logStart,
      log_lines_attack: logAtAttackEnd - logStart,
      log_lines_idle: target.logLines - logAtAttackEnd,
      retry_log_lines_after: retryLines.length,
      background_dials_after: background.length,
      background_dials_after_by_label: backgroundByLabel,
      target_dials_idle:
        dialsAtAttackEnd !== undefined && dialsAtIdleEnd !== undefined
          ? dialsAtIdleEnd - dialsAtAttackEnd
          : null,
      sentinel_hits_by_label: sentinels.countByLabel(0),
      amplification,
      // the run's own probe, and those the lockout attacks make meanwhile (tcp-silent, noise-stall)
      probe_ok: probeResults.filter((p) => p !== undefined).length + sumCounter(attacks, 'probe_ok'),
      probe_failed: probeResults.filter((p) => p === undefined).length + sumCounter(attacks, 'probe_failed'),
      probe_max_ms: Math.max(
        0,
        ...probeResults.filter((p): p is number => p !== undefined),
        ...attacks.map((a) => a.counters.max_probe_ms ?? 0),
      ),
      attacks_failed: attacks.filter((a) => a.failed).map((a) => a.attack),
      attacks_run: attacks.length,
    }
    return { phases, attacks, summary }
  } finally {
    sampler.stop()
    await probes.stopAll()
    await sentinels.close()
    await target.stop()
  }
}

const sumCounter = (reports: readonly AttackReport[], counter: string) =>
  reports.reduce((n, r) => n + (r.counters[counter] ?? 0), 0)

/**
 * The most frequent kinds of output lines (timestamps, peer ids, addresses and numbers blanked out),
 * with counts: what fills the log.
 */
export function lineKinds(lines: readonly string[], top = 6): Record<string, number> {
  const counts = new Map<string, number>()
  for (const line of lines) {
    const kind = line
      .replace(/^\S*\d{4}-\d\d-\d\dT\S+\s+/, '')
      .replace(/12D3KooW[1-9A-HJ-NP-Za-km-z]+/g, '<peer>')
      .replace(/\/ip[46]\/\S+/g, '<addr>')
      .replace(/\d+(\.\d+)?/g, 'N')
      .slice(0, 120)
    counts.set(kind, (counts.get(kind) ?? 0) + 1)
  }
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, top))
}
