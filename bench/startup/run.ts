/**
 * Startup benchmark: `mesh start` vs a hand-written `createLibp2p` script (raw-node.ts) with the same modules.
 *
 *   npm run bench:startup [-- --runs N --warmup N --memory --ts-config --keep-dirs]
 *
 * For every spawned process (always `process.execPath`, i.e. the Node that runs this script):
 *   ms      wall time from spawn() until its first stdout line, `{"event":"started",...}`, arrives
 *   rss_mb  VmRSS from /proc/<pid>/status read right after that line arrives (same for both; MiB)
 * then (after a 200 ms pause) SIGTERM and wait for the exit (stop_ms and the exit code are recorded too;
 * SIGKILL after 10 s).
 *
 * Runs are interleaved (mesh, raw, mesh, raw, ...), each in a fresh data dir (and fresh cwd without a
 * config file, so mesh runs its built-in defaults) that holds a copy of one identity key: the key is
 * created once by the first warm-up `mesh start`, so no measured run generates a key. Warm-up runs
 * (default 1 per config) are reported separately in `warmup` and not in the medians.
 *
 * Configurations: `mesh` and `raw` use datastore-level in <data-dir>/datastore (mesh's default).
 * `--memory` adds `mesh-memory` (a `.meshrc.json` with {"datastore":"memory"} in its cwd) and `raw-memory`.
 * `--ts-config` adds `mesh-ts-config`: a mesh.config.ts in its cwd, i.e. the esbuild config path (vs `raw`).
 *
 * Output (stdout): one JSON line per configuration, then last `{"summary":{...}}` with medians.
 * Progress goes to stderr.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median, round, summarize } from '../lib/stats.js'

const here = dirname(fileURLToPath(import.meta.url))
/** dist/bench/startup -> dist/src/cli/main.js */
const MESH_MAIN = resolve(here, '../../src/cli/main.js')
const RAW_MAIN = resolve(here, 'raw-node.js')
const LISTEN = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1']
const START_TIMEOUT_MS = 30_000
/** mesh's own shutdownTimeout is 5 s; past this the process is SIGKILLed and its exit recorded as such. */
const STOP_TIMEOUT_MS = 10_000
/**
 * Pause between the started line and SIGTERM. Both processes install their SIGTERM handler right after
 * writing that line; without a pause a loaded machine can deliver the signal first (default action: killed).
 */
const SETTLE_MS = 200

type ConfigName = 'mesh' | 'raw' | 'mesh-memory' | 'raw-memory' | 'mesh-ts-config'

interface Configuration {
  name: ConfigName
  datastore: 'level' | 'memory'
  /** Writes whatever the run's cwd needs and returns the argv after the script. */
  prepare(runDir: string, dataDir: string): Promise<{ script: string; args: string[] }>
}

interface RunResult {
  ms: number
  rss_mb: number
  hwm_mb: number
  stop_ms: number
  exit: number | string | null
  /** Only raw-node reports it: its own process.memoryUsage.rss() right after start (MiB). */
  self_rss_mb?: number
}

const MIB = 1024 * 1024

const meshArgs = (dataDir: string) => [
  'start',
  '--json',
  '--data-dir',
  dataDir,
  ...LISTEN.flatMap((l) => ['--listen', l]),
  '--log-level',
  'error',
]
const rawArgs = (dataDir: string, datastore: string) => [
  '--data-dir',
  dataDir,
  ...LISTEN.flatMap((l) => ['--listen', l]),
  '--datastore',
  datastore,
]

const CONFIGS: Record<ConfigName, Configuration> = {
  mesh: {
    name: 'mesh',
    datastore: 'level',
    prepare: async (_run, dataDir) => ({ script: MESH_MAIN, args: meshArgs(dataDir) }),
  },
  raw: {
    name: 'raw',
    datastore: 'level',
    prepare: async (_run, dataDir) => ({ script: RAW_MAIN, args: rawArgs(dataDir, 'level') }),
  },
  'mesh-memory': {
    name: 'mesh-memory',
    datastore: 'memory',
    prepare: async (run, dataDir) => {
      // The CLI has no --datastore flag: a JSON config (no esbuild involved) sets it; plugins stay the defaults.
      await writeFile(join(run, '.meshrc.json'), `${JSON.stringify({ datastore: 'memory' })}\n`)
      return { script: MESH_MAIN, args: meshArgs(dataDir) }
    },
  },
  'raw-memory': {
    name: 'raw-memory',
    datastore: 'memory',
    prepare: async (_run, dataDir) => ({ script: RAW_MAIN, args: rawArgs(dataDir, 'memory') }),
  },
  'mesh-ts-config': {
    name: 'mesh-ts-config',
    datastore: 'level',
    prepare: async (run, dataDir) => {
      // A TypeScript config takes the esbuild path (bundle, write a temp .mjs, import it). It imports
      // nothing: 'meshkit' does not resolve from a temp dir, and its modules are loaded by the CLI anyway.
      await writeFile(
        join(run, 'mesh.config.ts'),
        "const config: { name: string } = { name: 'bench-startup' }\nexport default config\n",
      )
      return { script: MESH_MAIN, args: meshArgs(dataDir) }
    },
  },
}

/** VmRSS and VmHWM of a live process, in MiB. */
function procMemory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`)
    return Number(m[1]) / 1024
  }
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

function waitExit(child: ChildProcess): Promise<number | string | null> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res(child.exitCode ?? child.signalCode)
    else child.once('exit', (code, signal) => res(code ?? signal))
  })
}

let runCounter = 0

async function runOnce(
  root: string,
  config: Configuration,
  identityKey: string | undefined,
): Promise<RunResult & { dataDir: string }> {
  const runDir = join(root, `${String(runCounter++).padStart(3, '0')}-${config.name}`)
  const dataDir = join(runDir, 'data')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  if (identityKey) {
    await copyFile(identityKey, join(dataDir, 'identity.key'))
    await chmod(join(dataDir, 'identity.key'), 0o600)
  }
  const { script, args } = await config.prepare(runDir, dataDir)

  const t0 = performance.now()
  const child = spawn(process.execPath, [script, ...args], { cwd: runDir, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (d: string) => {
    stderr += d
  })
  const exited = waitExit(child)

  const started = await new Promise<{ ms: number; mem: { rss: number; hwm: number }; line: string }>(
    (res, rej) => {
      let buffer = ''
      const timer = setTimeout(
        () => rej(new Error(`no started line within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      )
      const onData = (chunk: Buffer) => {
        buffer += chunk.toString('utf8')
        const nl = buffer.indexOf('\n')
        if (nl < 0) return
        // Measure first, parse later: the clock and /proc are read as soon as the line arrives.
        const ms = performance.now() - t0
        const mem = procMemory(child.pid as number)
        clearTimeout(timer)
        child.stdout?.off('data', onData)
        res({ ms, mem, line: buffer.slice(0, nl) })
      }
      child.stdout?.on('data', onData)
      exited.then((code) => {
        clearTimeout(timer)
        rej(new Error(`exited (${code}) before listening`))
      })
    },
  ).catch(async (err: Error) => {
    child.kill('SIGKILL')
    await exited
    throw new Error(`${config.name}: ${err.message}\n${stderr}`)
  })
  child.stdout?.resume()

  const event = JSON.parse(started.line) as { event?: string; rss?: number }
  if (event.event !== 'started') {
    child.kill('SIGKILL')
    throw new Error(`${config.name}: first stdout line is not a started event: ${started.line}`)
  }

  await new Promise((r) => setTimeout(r, SETTLE_MS))
  const t1 = performance.now()
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
  const exit = await exited
  clearTimeout(killer)
  const stopMs = performance.now() - t1
  if (exit !== 0) process.stderr.write(`warning: ${config.name} exited with ${exit}\n${stderr}`)

  return {
    dataDir,
    ms: round(started.ms),
    rss_mb: round(started.mem.rss),
    hwm_mb: round(started.mem.hwm),
    stop_ms: round(stopMs),
    exit,
    ...(typeof event.rss === 'number' ? { self_rss_mb: round(event.rss / MIB) } : {}),
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      memory: { type: 'boolean', default: false },
      'ts-config': { type: 'boolean', default: false },
      'keep-dirs': { type: 'boolean', default: false },
    },
  })
  const runs = Number(values.runs)
  const warmup = Number(values.warmup)
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`--runs must be a whole number >= 1 (got ${values.runs})`)
  if (!Number.isInteger(warmup) || warmup < 1)
    throw new Error(
      `--warmup must be a whole number >= 1 (got ${values.warmup}); the first warm-up creates the key`,
    )

  const configs: Configuration[] = [
    CONFIGS.mesh,
    CONFIGS.raw,
    ...(values.memory ? [CONFIGS['mesh-memory'], CONFIGS['raw-memory']] : []),
    ...(values['ts-config'] ? [CONFIGS['mesh-ts-config']] : []),
  ]
  const root = await mkdtemp(join(tmpdir(), 'meshkit-bench-startup-'))
  process.stderr.write(
    `bench:startup: node ${process.version}, ${runs} runs + ${warmup} warm-up per config (${configs.map((c) => c.name).join(', ')}), dirs in ${root}\n`,
  )

  const results = new Map<ConfigName, { warmup: RunResult[]; runs: RunResult[] }>(
    configs.map((c) => [c.name, { warmup: [], runs: [] }]),
  )
  try {
    // Warm-up: the first mesh run generates the identity key (first-run cost, reported in its warmup entry);
    // every later run, of every config, starts from a copy of that key in a fresh data dir.
    let identityKey: string | undefined
    for (let i = 0; i < warmup; i++) {
      for (const config of configs) {
        const { dataDir, ...r } = await runOnce(root, config, identityKey)
        identityKey ??= join(dataDir, 'identity.key')
        results.get(config.name)?.warmup.push(r)
        process.stderr.write(`  warm-up ${config.name.padEnd(11)} ${r.ms} ms, ${r.rss_mb} MiB\n`)
      }
    }
    for (let i = 0; i < runs; i++) {
      for (const config of configs) {
        const { dataDir: _, ...r } = await runOnce(root, config, identityKey)
        results.get(config.name)?.runs.push(r)
        process.stderr.write(`  run ${i + 1}/${runs} ${config.name.padEnd(11)} ${r.ms} ms, ${r.rss_mb} MiB\n`)
      }
    }
  } finally {
    if (!values['keep-dirs']) await rm(root, { recursive: true, force: true })
  }

  const medians = new Map<ConfigName, { ms: number; rss: number }>()
  for (const config of configs) {
    const r = results.get(config.name) ?? { warmup: [], runs: [] }
    const ms = r.runs.map((x) => x.ms)
    const rss = r.runs.map((x) => x.rss_mb)
    medians.set(config.name, { ms: median(ms), rss: median(rss) })
    const line = {
      config: config.name,
      datastore: config.datastore,
      runs: r.runs,
      median_ms: round(median(ms)),
      median_rss_mb: round(median(rss)),
      ms: summarize(ms),
      rss_mb: summarize(rss),
      median_stop_ms: round(median(r.runs.map((x) => x.stop_ms))),
      warmup: r.warmup,
    }
    process.stdout.write(`${JSON.stringify(line)}\n`)
  }

  const compare = (mesh: ConfigName, raw: ConfigName) => {
    const m = medians.get(mesh)
    const r = medians.get(raw)
    if (!m || !r) return undefined
    return {
      mesh_ms: round(m.ms),
      raw_ms: round(r.ms),
      ratio: round(m.ms / r.ms, 2),
      mesh_rss_mb: round(m.rss),
      raw_rss_mb: round(r.rss),
      rss_ratio: round(m.rss / r.rss, 2),
    }
  }
  const summary = {
    ...compare('mesh', 'raw'),
    runs,
    node: process.version,
    datastore: 'level',
    ...(values.memory ? { memory_datastore: compare('mesh-memory', 'raw-memory') } : {}),
    ...(values['ts-config'] ? { ts_config: compare('mesh-ts-config', 'raw') } : {}),
  }
  process.stdout.write(`${JSON.stringify({ summary })}\n`)
}

main().catch((err) => {
  process.stderr.write(
    `bench:startup failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  process.exitCode = 1
})
