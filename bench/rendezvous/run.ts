/**
 * Rendezvous benchmark: how fast N peers that join one topic find each other, on loopback, in one process.
 *
 *   node dist/bench/rendezvous/run.js [--n 10,25,50] [--runs 3] [--impl hyperswarm,raw_libp2p,meshkit]
 *                                     [--timeout-ms 60000]
 *
 * Implementations (see each file): `hyperswarm` (hyperswarm on a local @hyperswarm/testnet), `raw_libp2p`
 * (js-libp2p + kad-dht provider records, wired by hand) and `meshkit` (startMesh + the kad-topics plugin;
 * skipped with a JSON line while `meshkit/plugins` has no `kadTopics`). Every one has 5 bootstrap nodes.
 *
 * Per run, in a fresh child process (worker.ts) so that CPU and RSS are that run's own:
 *   full_rendezvous_ms  from starting all N peers until each had min(5, N-1) topic peers connected
 *   first_peer_ms       each peer's time to its first topic peer: median / p95 (and count, min, max)
 *   cpu_s               process.cpuUsage() user + system over that same window
 *   peak_rss_mb         process RSS sampled every 50 ms (max_rss_mb: the kernel's high-water mark)
 *   late_joiner         after full rendezvous one more peer joins: time to its first topic peer
 * A run past --timeout-ms reports `timed_out: true` and `peers_full` (peers that reached the target).
 * Runs are interleaved per N: for each N, for each run, every implementation once.
 *
 * Output (stdout): one JSON line per (impl, N) with its runs and medians (a timed-out run counts as
 * slower than any finished one), then last `{"summary":{...}}` (N = 50 medians; null where unavailable).
 * Progress goes to stderr.
 */
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median, round } from '../lib/stats.js'
import { IMPLS, type ImplName, type RunResult } from './common.js'

const here = dirname(fileURLToPath(import.meta.url))
const WORKER = join(here, 'worker.js')
/** On top of 2 x --timeout-ms (rendezvous + late joiner): setup, teardown and process start. */
const CHILD_SLACK_MS = 90_000

interface ChildOutcome {
  result?: RunResult
  error?: string
  exit: number | string | null
  wall_ms: number
}

function runChild(impl: ImplName, n: number, timeoutMs: number): Promise<ChildOutcome> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [WORKER, '--impl', impl, '--n', String(n), '--timeout-ms', String(timeoutMs)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 20_000) err += d
    })
    let killed = false
    const killer = setTimeout(
      () => {
        killed = true
        child.kill('SIGKILL')
      },
      2 * timeoutMs + CHILD_SLACK_MS,
    )
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      const wall_ms = round(performance.now() - t0)
      const exit = code ?? signal
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{'))
      let parsed: { result?: RunResult; error?: string } = {}
      try {
        if (line) parsed = JSON.parse(line)
      } catch {
        parsed = { error: `unparsable worker output: ${line}` }
      }
      if (!parsed.result && !parsed.error)
        parsed.error = killed
          ? 'worker killed: no result in time'
          : `worker exited (${exit}) without a result`
      if (parsed.error && err.trim())
        parsed.error += ` | stderr: ${err.trim().split('\n').slice(-5).join(' / ')}`
      resolve({ ...parsed, exit, wall_ms })
    })
  })
}

/** Median where a missing value (timeout, failure) counts as slower than any value; null if that wins. */
function medianOrNull(values: ReadonlyArray<number | null | undefined>, digits = 1): number | null {
  if (values.length === 0) return null
  const m = median(values.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : Infinity)))
  return Number.isFinite(m) ? round(m, digits) : null
}

interface Line {
  impl: ImplName
  n: number
  k: number
  runs: number
  completed_runs: number
  timed_out_runs: number
  failed_runs: number
  median_full_rendezvous_ms: number | null
  median_first_peer_median_ms: number | null
  median_first_peer_p95_ms: number | null
  median_cpu_s: number | null
  median_peak_rss_mb: number | null
  median_max_rss_mb: number | null
  median_late_joiner_first_peer_ms: number | null
  median_late_joiner_full_ms: number | null
  results: Array<Omit<RunResult, 'impl' | 'n' | 'k'> | { error: string; exit: number | string | null }>
}

function summarizeLine(impl: ImplName, n: number, outcomes: ChildOutcome[]): Line {
  const ok = outcomes.flatMap((o) => (o.result ? [o.result] : []))
  const all = outcomes.map((o) => o.result)
  const numeric = (pick: (r: RunResult) => number | null | undefined) => medianOrNull(ok.map(pick), 3)
  return {
    impl,
    n,
    k: Math.min(5, n - 1),
    runs: outcomes.length,
    completed_runs: ok.filter((r) => !r.timed_out).length,
    timed_out_runs: ok.filter((r) => r.timed_out).length,
    failed_runs: outcomes.length - ok.length,
    // timed-out and failed runs count as slower than any finished one
    median_full_rendezvous_ms: medianOrNull(all.map((r) => r?.full_rendezvous_ms)),
    median_first_peer_median_ms: medianOrNull(all.map((r) => r?.first_peer_ms.median)),
    median_first_peer_p95_ms: medianOrNull(all.map((r) => r?.first_peer_ms.p95)),
    median_cpu_s: numeric((r) => r.cpu_s),
    median_peak_rss_mb: numeric((r) => r.peak_rss_mb),
    median_max_rss_mb: numeric((r) => r.max_rss_mb),
    median_late_joiner_first_peer_ms: medianOrNull(all.map((r) => r?.late_joiner?.first_peer_ms)),
    median_late_joiner_full_ms: medianOrNull(all.map((r) => r?.late_joiner?.full_ms)),
    results: outcomes.map((o) => {
      if (!o.result) return { error: o.error ?? 'no result', exit: o.exit }
      const { impl: _i, n: _n, k: _k, ...rest } = o.result
      return { ...rest, wall_ms: o.wall_ms }
    }),
  }
}

function parseList<T extends string>(raw: string, allowed?: readonly T[]): T[] {
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  if (allowed) {
    const bad = items.filter((i) => !allowed.includes(i as T))
    if (bad.length) throw new Error(`unknown ${bad.join(', ')}: expected some of ${allowed.join(', ')}`)
  }
  return items as T[]
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '10,25,50' },
      runs: { type: 'string', default: '3' },
      impl: { type: 'string', default: IMPLS.join(',') },
      'timeout-ms': { type: 'string', default: '60000' },
    },
  })
  const ns = parseList(values.n).map(Number)
  if (ns.some((n) => !Number.isInteger(n) || n < 2))
    throw new Error(`--n: whole numbers >= 2 (got ${values.n})`)
  const runs = Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`--runs must be a whole number >= 1 (got ${values.runs})`)
  const timeoutMs = Number(values['timeout-ms'])
  if (!(timeoutMs > 0)) throw new Error(`--timeout-ms must be > 0 (got ${values['timeout-ms']})`)
  let impls = parseList(values.impl, IMPLS)

  if (impls.includes('meshkit')) {
    const { meshkitAvailability } = await import('./meshkit.js')
    const availability = await meshkitAvailability()
    if (!availability.available) {
      process.stdout.write(`${JSON.stringify({ impl: 'meshkit', skipped: availability.reason })}\n`)
      impls = impls.filter((i) => i !== 'meshkit')
    }
  }

  process.stderr.write(
    `bench:rendezvous: node ${process.version}, N=${ns.join(',')}, ${runs} runs, impls ${impls.join(', ')}, timeout ${timeoutMs} ms\n`,
  )
  const lines = new Map<string, Line>()
  for (const n of ns) {
    const outcomes = new Map<ImplName, ChildOutcome[]>(impls.map((i) => [i, []]))
    for (let r = 0; r < runs; r++) {
      for (const impl of impls) {
        const o = await runChild(impl, n, timeoutMs)
        outcomes.get(impl)?.push(o)
        const res = o.result
        process.stderr.write(
          `  N=${n} run ${r + 1}/${runs} ${impl.padEnd(10)} ${
            res
              ? `${res.timed_out ? `TIMED OUT (${res.peers_full}/${n} full)` : `${res.full_rendezvous_ms} ms`}, first peer p50 ${res.first_peer_ms.median} ms, cpu ${res.cpu_s} s, peak rss ${res.peak_rss_mb} MiB, late joiner ${res.late_joiner?.first_peer_ms ?? '-'} ms`
              : `FAILED: ${o.error}`
          }\n`,
        )
      }
    }
    for (const impl of impls) {
      const line = summarizeLine(impl, n, outcomes.get(impl) ?? [])
      lines.set(`${impl}:${n}`, line)
      process.stdout.write(`${JSON.stringify(line)}\n`)
    }
  }

  const at50 = (impl: ImplName) => lines.get(`${impl}:50`)
  const meshMs = at50('meshkit')?.median_full_rendezvous_ms ?? null
  const hyperMs = at50('hyperswarm')?.median_full_rendezvous_ms ?? null
  const summary = {
    meshkit_n50_ms: meshMs,
    hyperswarm_n50_ms: hyperMs,
    raw_libp2p_n50_ms: at50('raw_libp2p')?.median_full_rendezvous_ms ?? null,
    ratio_vs_hyperswarm: meshMs !== null && hyperMs ? round(meshMs / hyperMs, 2) : null,
    late_joiner_first_peer_ms: at50('meshkit')?.median_late_joiner_first_peer_ms ?? null,
    meshkit_cpu_s_n50: at50('meshkit')?.median_cpu_s ?? null,
    meshkit_rss_mb_n50: at50('meshkit')?.median_peak_rss_mb ?? null,
  }
  process.stdout.write(`${JSON.stringify({ summary })}\n`)
}

main().catch((err) => {
  process.stderr.write(
    `bench:rendezvous failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  process.exitCode = 1
})
