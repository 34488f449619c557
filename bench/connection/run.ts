/**
 * Connection benchmark: CPU ms and heap KB per established connection, one at a time and 50 at once, for
 * raw js-libp2p (TCP + noise + yamux, and QUIC), Meshkit's default node (TCP and QUIC), Meshkit with
 * kadTopics + jaccardClusters, and Hyperswarm; then a CPU-profile breakdown per connection.
 *
 *   npm run bench:connection [-- --runs 3 --seq 10 --conc 50 --impls a,b --profile-impls a,b
 *                               --compare label=/path/to/other/dist --compare-impls a,b]
 *
 * Every (impl, run) is a fresh process (worker.ts, with --expose-gc); runs are interleaved (impl a, b, ...,
 * a, b, ...) and the figures are medians over the runs. `--compare label=<dist>` also runs the Meshkit
 * impls (--compare-impls) from another build (e.g. a copy of main's dist with a package.json and node_modules beside it),
 * reported as `<impl>@<label>`: before and after in one run.
 *
 * Output (stdout): one JSON line per impl, one per profile, and last
 * `{"summary":{meshkit_ms_per_conn, raw_tcp_ms_per_conn, raw_quic_ms_per_conn, hyperswarm_ms_per_conn,
 * meshkit_kb_per_conn, ...}}` (the named figures are the sequential ones; `*_50` are 50 at once).
 * Progress goes to stderr.
 */
import { spawn } from 'node:child_process'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median, round } from '../lib/stats.js'
import { IMPLS } from './impls.js'
import type { PhaseResult } from './worker.js'

const here = dirname(fileURLToPath(import.meta.url))
const WORKER_TIMEOUT_MS = 180_000

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seq: { type: 'string', default: '10' },
    conc: { type: 'string', default: '50' },
    impls: { type: 'string', default: IMPLS.join(',') },
    'profile-impls': { type: 'string', default: 'raw_tcp,meshkit,meshkit_topics' },
    compare: { type: 'string', multiple: true, default: [] },
    /** The impls run from the --compare builds too. */
    'compare-impls': { type: 'string', default: 'meshkit,meshkit_topics' },
  },
})

interface WorkerResult {
  impl: string
  setup_ms: number
  sequential: PhaseResult
  concurrent: PhaseResult
}

function worker(script: string, impl: string, profile: boolean): Promise<WorkerResult> {
  const args = ['--expose-gc', script, '--impl', impl, '--seq', values.seq, '--conc', values.conc]
  if (profile) args.push('--profile')
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d
    })
    child.stderr.on('data', (d: Buffer) => {
      err += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), WORKER_TIMEOUT_MS)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      const line = out.trim().split('\n').pop() ?? ''
      try {
        const parsed = JSON.parse(line) as { result?: WorkerResult; error?: string }
        if (parsed.result) return resolveRun(parsed.result)
        reject(new Error(`${impl}: ${parsed.error}`))
      } catch {
        reject(
          new Error(
            `${impl}: exit ${code ?? signal}, no result (${err.trim().split('\n').slice(-3).join(' | ')})`,
          ),
        )
      }
    })
  })
}

interface Target {
  name: string
  impl: string
  script: string
}

const impls = values.impls.split(',').filter(Boolean)
const targets: Target[] = impls.map((impl) => ({ name: impl, impl, script: join(here, 'worker.js') }))
for (const spec of values.compare) {
  const eq = spec.indexOf('=')
  if (eq < 1) throw new Error(`--compare wants label=<dist dir> (got ${spec})`)
  const label = spec.slice(0, eq)
  const script = resolve(spec.slice(eq + 1), 'bench/connection/worker.js')
  for (const impl of values['compare-impls'].split(',').filter((i) => impls.includes(i)))
    targets.push({ name: `${impl}@${label}`, impl, script })
}

const runs = Number(values.runs)
const results = new Map<string, WorkerResult[]>()
const errors: string[] = []
for (let r = 0; r < runs; r++) {
  for (const t of targets) {
    process.stderr.write(`run ${r + 1}/${runs} ${t.name} ... `)
    try {
      const res = await worker(t.script, t.impl, false)
      results.set(t.name, [...(results.get(t.name) ?? []), res])
      process.stderr.write(
        `seq ${res.sequential.ms_per_conn} ms ${res.sequential.kb_per_conn} KB, 50 at once ${res.concurrent.ms_per_conn} ms ${res.concurrent.kb_per_conn} KB\n`,
      )
    } catch (err) {
      errors.push(err instanceof Error ? err.message : String(err))
      process.stderr.write(`failed: ${errors.at(-1)}\n`)
    }
  }
}

const med = (list: WorkerResult[], pick: (r: WorkerResult) => number) => round(median(list.map(pick)), 2)
const table: Record<string, Record<string, unknown>> = {}
for (const [name, list] of results) {
  const row = {
    runs: list.length,
    seq_ms_per_conn: med(list, (r) => r.sequential.ms_per_conn),
    seq_kb_per_conn: med(list, (r) => r.sequential.kb_per_conn),
    conc_ms_per_conn: med(list, (r) => r.concurrent.ms_per_conn),
    conc_kb_per_conn: med(list, (r) => r.concurrent.kb_per_conn),
    conc_wall_ms: med(list, (r) => r.concurrent.wall_ms),
    seq_all: list.map((r) => r.sequential.ms_per_conn),
    conc_all: list.map((r) => r.concurrent.ms_per_conn),
    failed: list.reduce((a, r) => a + r.sequential.failed + r.concurrent.failed, 0),
    server_at_end: list.at(-1)?.concurrent.server,
    setup_ms: med(list, (r) => r.setup_ms),
  }
  table[name] = row
  process.stdout.write(`${JSON.stringify({ impl: name, ...row })}\n`)
}

for (const t of targets.filter((t) => values['profile-impls'].split(',').includes(t.name))) {
  process.stderr.write(`profile ${t.name} ... `)
  try {
    const res = await worker(t.script, t.impl, true)
    process.stderr.write('done\n')
    for (const phase of ['sequential', 'concurrent'] as const)
      process.stdout.write(`${JSON.stringify({ profile: t.name, phase, per_conn: res[phase].profile })}\n`)
  } catch (err) {
    errors.push(err instanceof Error ? err.message : String(err))
    process.stderr.write(`failed: ${errors.at(-1)}\n`)
  }
}

const pick = (name: string, key: string) => (table[name]?.[key] as number | undefined) ?? null
const summary: Record<string, unknown> = {
  meshkit_ms_per_conn: pick('meshkit', 'seq_ms_per_conn'),
  raw_tcp_ms_per_conn: pick('raw_tcp', 'seq_ms_per_conn'),
  raw_quic_ms_per_conn: pick('raw_quic', 'seq_ms_per_conn'),
  hyperswarm_ms_per_conn: pick('hyperswarm', 'seq_ms_per_conn'),
  meshkit_kb_per_conn: pick('meshkit', 'seq_kb_per_conn'),
  meshkit_ms_per_conn_50: pick('meshkit', 'conc_ms_per_conn'),
  raw_tcp_ms_per_conn_50: pick('raw_tcp', 'conc_ms_per_conn'),
  raw_quic_ms_per_conn_50: pick('raw_quic', 'conc_ms_per_conn'),
  hyperswarm_ms_per_conn_50: pick('hyperswarm', 'conc_ms_per_conn'),
  meshkit_kb_per_conn_50: pick('meshkit', 'conc_kb_per_conn'),
  meshkit_quic_ms_per_conn: pick('meshkit_quic', 'seq_ms_per_conn'),
  meshkit_topics_ms_per_conn: pick('meshkit_topics', 'seq_ms_per_conn'),
  meshkit_topics_ms_per_conn_50: pick('meshkit_topics', 'conc_ms_per_conn'),
  runs,
  errors,
}
for (const t of targets.filter((t) => t.name.includes('@'))) {
  summary[`${t.name}_ms_per_conn`] = pick(t.name, 'seq_ms_per_conn')
  summary[`${t.name}_ms_per_conn_50`] = pick(t.name, 'conc_ms_per_conn')
}
process.stdout.write(`${JSON.stringify({ summary })}\n`)
