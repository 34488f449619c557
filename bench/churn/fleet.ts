/**
 * Real `mesh start --json` processes for the resilience benchmarks (churn, soak, faults): spawned with
 * the Node that runs the benchmark, their JSON event lines parsed as they arrive (nothing is kept but
 * what listeners keep), killed by pid (SIGKILL: no goodbye) or stopped (SIGTERM).
 *
 * With `probe: true` the process preloads probe.js (`--import`, `--expose-gc`): on SIGUSR2 it prints one
 * `{"event":"bench:probe",...}` line (RSS, heap after a full GC, open descriptors, active timers and
 * handles, event-loop delay) on its stdout, between the CLI's own lines. {@link MeshProc.probe} asks for
 * one and waits for it.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
/**
 * The `mesh` CLI the benchmarks run: dist/src/cli/main.js of this build, or `MESHKIT_BENCH_CLI` (another
 * build's main.js, e.g. to measure a before/after pair with the same benchmark).
 */
export const MESH_MAIN = process.env.MESHKIT_BENCH_CLI
  ? resolve(process.env.MESHKIT_BENCH_CLI)
  : resolve(here, '../../src/cli/main.js')
export const PROBE_SCRIPT = resolve(here, 'probe.js')

/** A `--json` line of `mesh start` (or of the probe). `time` is the child's Date.now() (same clock). */
export interface MeshLine {
  event: string
  time?: number
  [field: string]: unknown
}

/** What the probe prints (see probe.ts). */
export interface ProbeSample {
  time: number
  rssMb: number
  heapUsedMb: number
  heapTotalMb: number
  externalMb: number
  fds: number
  timers: number
  handles: number
  resources: Record<string, number>
  eldP50Ms: number
  eldP99Ms: number
  eldMaxMs: number
  cpuUserMs: number
  cpuSystemMs: number
}

export interface MeshProcOptions {
  /** A short name for logs, e.g. `p12` or `boot1`. */
  name: string
  /** `mesh` arguments after the command. */
  args: string[]
  /** The `mesh` command. @default 'start' */
  command?: 'start' | 'dev'
  cwd: string
  env?: NodeJS.ProcessEnv
  /** Preload the probe (SIGUSR2 -> a bench:probe line). @default false */
  probe?: boolean
  /** Append every stdout and stderr line to this file (debugging a run). */
  dumpFile?: string
  /**
   * Run it in this network namespace (`ip netns exec <netns> node ...`: ip execs the command in place,
   * so the pid is node's own and signals reach it).
   */
  netns?: string
}

/** The `ip` binary (iproute2), for processes in network namespaces. */
const IP_BINARY = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p)) ?? 'ip'

/** The last lines of stderr kept for diagnostics. */
const STDERR_TAIL = 30

/** One `mesh start --json` process. */
export class MeshProc {
  readonly child: ChildProcess
  readonly name: string
  readonly spawnedAt = Date.now()
  peerId?: string
  addresses: string[] = []
  /** The child's time of its `started` line. */
  startedAt?: number
  killedAt?: number
  exitedAt?: number
  exit?: { code: number | null; signal: NodeJS.Signals | null }
  readonly stderrTail: string[] = []
  readonly exited: Promise<void>
  readonly started: Promise<void>
  readonly #listeners = new Set<(line: MeshLine) => void>()

  constructor(readonly options: MeshProcOptions) {
    this.name = options.name
    const nodeArgs = options.probe ? ['--expose-gc', '--import', pathToFileURL(PROBE_SCRIPT).href] : []
    const argv = [...nodeArgs, MESH_MAIN, options.command ?? 'start', '--json', ...options.args]
    const [cmd, cmdArgs] = options.netns
      ? [IP_BINARY, ['netns', 'exec', options.netns, process.execPath, ...argv]]
      : [process.execPath, argv]
    this.child = spawn(cmd, cmdArgs, {
      cwd: options.cwd,
      env: { ...process.env, DEBUG: undefined, NODE_OPTIONS: undefined, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal }
        this.exitedAt = Date.now()
        resolve()
      })
      this.child.once('error', (err) => {
        this.stderrTail.push(`(spawn error: ${err.message})`)
        this.exit ??= { code: null, signal: null }
        this.exitedAt ??= Date.now()
        resolve()
      })
    })
    this.started = new Promise((resolve, reject) => {
      const off = this.on((line) => {
        if (line.event !== 'started') return
        off()
        this.peerId = String(line.peerId)
        this.addresses = (line.addresses as string[]) ?? []
        this.startedAt = line.time ?? Date.now()
        resolve()
      })
      void this.exited.then(() => {
        off()
        if (!this.peerId) reject(new Error(`${this.name} exited before it started\n${this.describe()}`))
      })
    })
    // an unhandled rejection when nobody waits for `started` (a killed process) is not an error
    this.started.catch(() => {})
    const dump = options.dumpFile ? createWriteStream(options.dumpFile, { flags: 'a' }) : undefined
    if (dump) void this.exited.then(() => dump.end())
    let rest = ''
    this.child.stdout!.setEncoding('utf8')
    this.child.stdout!.on('data', (chunk: string) => {
      dump?.write(chunk)
      rest += chunk
      let nl = rest.indexOf('\n')
      while (nl >= 0) {
        const text = rest.slice(0, nl)
        rest = rest.slice(nl + 1)
        nl = rest.indexOf('\n')
        if (!text.startsWith('{')) continue
        let line: MeshLine
        try {
          line = JSON.parse(text) as MeshLine
        } catch {
          continue
        }
        if (typeof line.event !== 'string') continue
        for (const listener of [...this.#listeners]) listener(line)
      }
    })
    let errRest = ''
    this.child.stderr!.setEncoding('utf8')
    this.child.stderr!.on('data', (chunk: string) => {
      dump?.write(chunk)
      errRest += chunk
      const parts = errRest.split('\n')
      errRest = parts.pop() ?? ''
      this.stderrTail.push(...parts)
      if (this.stderrTail.length > STDERR_TAIL)
        this.stderrTail.splice(0, this.stderrTail.length - STDERR_TAIL)
    })
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get alive(): boolean {
    return this.exit === undefined && this.killedAt === undefined
  }

  /** Calls `listener` for every line from now on; returns the unsubscribe. */
  on(listener: (line: MeshLine) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** The first line from now on matching `predicate`; rejects after `timeoutMs` or on exit. */
  waitFor(predicate: (line: MeshLine) => boolean, timeoutMs: number, what: string): Promise<MeshLine> {
    return new Promise((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer)
        off()
        fn()
      }
      const off = this.on((line) => {
        if (predicate(line)) done(() => resolve(line))
      })
      const timer = setTimeout(
        () => done(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms`))),
        timeoutMs,
      )
      void this.exited.then(() => done(() => reject(new Error(`${this.name} exited before ${what}`))))
    })
  }

  /** Waits for the `started` line, at most `timeoutMs`. */
  async waitStarted(timeoutMs = 60_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        this.started,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${this.name}: not started within ${timeoutMs} ms\n${this.describe()}`)),
            timeoutMs,
          )
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  /** SIGKILL now (records `killedAt` just before); resolves once the process is gone (bounded). */
  async kill(): Promise<void> {
    if (this.exit) return
    this.killedAt ??= Date.now()
    this.child.kill('SIGKILL')
    await Promise.race([this.exited, sleep(5000)])
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.exit) return
    this.child.kill('SIGTERM')
    const gone = await Promise.race([this.exited.then(() => true), sleep(timeoutMs).then(() => false)])
    if (!gone) await this.kill()
  }

  /** Asks the probe for a sample (SIGUSR2) and waits for it; undefined without probe or when it is gone. */
  async probe(timeoutMs = 10_000): Promise<ProbeSample | undefined> {
    if (!this.options.probe || !this.alive) return undefined
    const line = this.waitFor((l) => l.event === 'bench:probe', timeoutMs, 'a probe sample')
    this.child.kill('SIGUSR2')
    try {
      return (await line) as unknown as ProbeSample
    } catch {
      return undefined
    }
  }

  describe(): string {
    return `${this.name} (pid ${this.pid}) exit ${JSON.stringify(this.exit ?? 'running')}\n  ${this.stderrTail.slice(-10).join('\n  ')}`
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Percentile (nearest rank) of `values`; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

/** The 1-minute load average and the number of cores, for the output. */
export function machineLoad(): { load1: number; load5: number; cores: number } {
  const [load1, load5] = loadavg()
  let cores = 0
  try {
    cores = readFileSync('/proc/cpuinfo', 'utf8').match(/^processor\s*:/gm)?.length ?? 0
  } catch {
    cores = 0
  }
  return { load1: Math.round(load1 * 100) / 100, load5: Math.round(load5 * 100) / 100, cores }
}

/** Plugins of a bench peer: the defaults (TCP + QUIC, noise, yamux, identify, ping, kad-topics) + peer cache. */
export interface PeerConfigOptions {
  /** Bootstrap addresses (static peers), with /p2p/. */
  bootstrap: string[]
  /** kad-topics options beyond addressScope 'all'. */
  kadTopics?: Record<string, unknown>
  /** Add peerCache(). @default true */
  peerCache?: boolean
  /** Extra config fields (e.g. `quic` options are plugin options: use `plugins` instead). */
  extra?: Record<string, unknown>
  /** Transports. @default ['tcp', 'quic'] */
  transports?: Array<'tcp' | 'quic'>
}

/** A `mesh.config.json` for a loopback bench peer (its dir is the process's cwd). */
export function peerConfig(options: PeerConfigOptions): Record<string, unknown> {
  const plugins: unknown[] = [
    'identify',
    'ping',
    'noise',
    'yamux',
    ...(options.transports ?? ['tcp', 'quic']),
  ]
  plugins.push({ plugin: 'kad-topics', options: { addressScope: 'all', ...options.kadTopics } })
  if (options.peerCache ?? true) plugins.push('peer-cache')
  if (options.bootstrap.length > 0)
    plugins.push({ plugin: 'static-peers', options: { peers: options.bootstrap } })
  return { plugins, ...options.extra }
}

export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<void> {
  await writeFile(join(dir, 'mesh.config.json'), `${JSON.stringify(config, null, 2)}\n`)
}

/** Listen flags for a loopback peer: TCP and QUIC on random ports. */
export function loopbackListen(transports: Array<'tcp' | 'quic'> = ['tcp', 'quic']): string[] {
  return transports.flatMap((t) => [
    '--listen',
    t === 'tcp' ? '/ip4/127.0.0.1/tcp/0' : '/ip4/127.0.0.1/udp/0/quic-v1',
  ])
}
