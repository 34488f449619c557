/**
 * One connection-benchmark run of one subject in this (fresh) process:
 *
 *   node --expose-gc dist/bench/connection/worker.js --impl meshkit [--seq 20] [--conc 50] [--warmup 3] [--profile]
 *
 * Builds a server and seq + conc + warmup clients and connects the warm-up ones (not measured), then two
 * phases:
 *   sequential  clients 0..seq-1 connect one after the other (each waits for the previous one)
 *   concurrent  the next conc clients connect all at once
 * Each phase: GC, heap read, 1 s idle CPU read (the background rate: timers, DHT upkeep), the
 * connections, a settle pause (the exchanges that follow a connection), then GC and heap again.
 *   ms_per_conn  (process CPU over the phase - idle rate x phase time) / connections established (both
 *                ends of each connection are in this process: the figure is a connection's whole cost)
 *   kb_per_conn  heapUsed growth per connection, after GC (connections still open)
 * With --profile, each phase runs under a CPU profile and its breakdown per connection is added (the
 * profiler slows things down: profiled runs are not the measured ones).
 *
 * Prints one line: `{"result":{...}}` or `{"error":"..."}`.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { round } from '../lib/stats.js'
import { IMPLS, type ImplName, subject } from './impls.js'
import { type Breakdown, breakdown, profiled } from './profile.js'

const IDLE_MS = 1_000
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

const gc = (globalThis as { gc?: () => void }).gc
function collect() {
  if (!gc) throw new Error('run with --expose-gc')
  gc()
  gc()
}

export interface PhaseResult {
  connections: number
  failed: number
  ms_per_conn: number
  kb_per_conn: number
  external_kb_per_conn: number
  /** Time from the first dial to the last connection established (ms). */
  wall_ms: number
  idle_cpu_pct: number
  server: { connections: number; peers: number }
  errors: string[]
  profile?: Breakdown
}

async function phase(
  s: ReturnType<typeof subject>,
  indices: number[],
  concurrent: boolean,
  settleMs: number,
  profile: boolean,
): Promise<PhaseResult> {
  collect()
  const m0 = process.memoryUsage()
  const i0 = process.cpuUsage()
  const ti = performance.now()
  await sleep(IDLE_MS)
  const idleCpu = process.cpuUsage(i0)
  const idleRate = (idleCpu.user + idleCpu.system) / 1000 / (performance.now() - ti)

  const errors: string[] = []
  let failed = 0
  const one = (i: number) =>
    s.connect(i).catch((err: unknown) => {
      failed++
      if (errors.length < 5) errors.push(err instanceof Error ? err.message : String(err))
    })
  let wall = 0
  const run = async () => {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    if (concurrent) await Promise.all(indices.map(one))
    else for (const i of indices) await one(i)
    wall = performance.now() - t0
    await sleep(settleMs)
    const cpu = process.cpuUsage(c0)
    return (cpu.user + cpu.system) / 1000 - idleRate * (performance.now() - t0)
  }
  let cpuMs: number
  let prof: Breakdown | undefined
  if (profile) {
    const p = await profiled(run)
    cpuMs = p.result
    prof = breakdown(p.profile, 1 / Math.max(1, indices.length - failed))
    const dir = values['profile-dir']
    if (dir)
      await writeFile(
        join(dir, `${values.impl}-${concurrent ? 'concurrent' : 'sequential'}.cpuprofile`),
        JSON.stringify(p.profile),
      )
  } else cpuMs = await run()
  collect()
  const m1 = process.memoryUsage()
  const ok = Math.max(1, indices.length - failed)
  return {
    connections: indices.length - failed,
    failed,
    ms_per_conn: round(cpuMs / ok, 2),
    kb_per_conn: round((m1.heapUsed - m0.heapUsed) / 1024 / ok),
    external_kb_per_conn: round((m1.external - m0.external) / 1024 / ok),
    wall_ms: round(wall),
    idle_cpu_pct: round(idleRate * 100),
    server: s.serverConnections(),
    errors,
    ...(prof ? { profile: prof } : {}),
  }
}

const { values } = parseArgs({
  options: {
    impl: { type: 'string' },
    seq: { type: 'string', default: '20' },
    conc: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '3' },
    'settle-ms': { type: 'string', default: '1000' },
    profile: { type: 'boolean', default: false },
    /** Also writes each phase's raw profile here (<impl>-<phase>.cpuprofile, for Chrome DevTools). */
    'profile-dir': { type: 'string' },
  },
})

let code = 0
const impl = values.impl as ImplName
try {
  if (!IMPLS.includes(impl)) throw new Error(`--impl must be one of ${IMPLS.join(', ')} (got ${values.impl})`)
  const seq = Number(values.seq)
  const conc = Number(values.conc)
  const settle = Number(values['settle-ms'])
  const warmup = Number(values.warmup)
  const s = subject(impl)
  try {
    const t = performance.now()
    await s.setup(warmup + seq + conc)
    const setupMs = round(performance.now() - t)
    // the first connections compile the code paths (JIT): not measured
    for (let i = 0; i < warmup; i++) await s.connect(seq + conc + i)
    await sleep(settle)
    const sequential = await phase(
      s,
      Array.from({ length: seq }, (_, i) => i),
      false,
      settle,
      values.profile,
    )
    const concurrent = await phase(
      s,
      Array.from({ length: conc }, (_, i) => seq + i),
      true,
      settle,
      values.profile,
    )
    process.stdout.write(
      `${JSON.stringify({ result: { impl, setup_ms: setupMs, sequential, concurrent, profiled: values.profile } })}\n`,
    )
  } finally {
    await Promise.race([s.stop(), sleep(15_000)])
  }
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`)
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  code = 1
}
process.exit(code)
