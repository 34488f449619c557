/**
 * The target: `mesh start` (the real CLI, dist/src/cli/main.js) as a separate process, with a config of
 * every built-in plugin that can run on loopback, sampled from /proc (CPU, RSS, open fds, threads), its
 * output lines counted, and read through its control API (status, clusters, Prometheus metrics).
 */
import { execFileSync } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { type CliProcess, spawnCli } from '../cli-helpers.js'
import { tempDir } from '../helpers.js'

/** A plugin entry of a JSON config: a registered name, or `{ plugin, options }`. */
export type PluginEntry = string | { plugin: string; options?: Record<string, unknown> }

/** Ports the target's UDP/TCP side services use (chosen free before it starts). */
export interface TargetPorts {
  stun: number
  /** The NAT probe server's two ports (UDP and TCP). */
  probe: [number, number]
}

/**
 * Built-in plugins the target runs, with loopback options (as the tests use them: addressScope 'all',
 * in-memory DHT records, servers on 127.0.0.1). Change this list when plugins change.
 *
 * Left out: `mdns` and `dns-seeds` (they reach outside loopback), and `relay-client`: with `hole-punch`
 * in the same config the node does not start today (both add @libp2p/circuit-relay-v2's transport:
 * "There is already a transport with the tag @libp2p/circuit-relay-v2-transport"). hole-punch is kept: it
 * owns the STOP handling the attacks target. Pass `plugins` to run another set.
 */
export function allPlugins(ports: TargetPorts): PluginEntry[] {
  return [
    'identify',
    'ping',
    'noise',
    'yamux',
    'tcp',
    'quic',
    { plugin: 'kad-topics', options: { topics: ['hostile-lab'], addressScope: 'all', records: 'memory' } },
    'gossip',
    { plugin: 'jaccard-clusters', options: { tags: ['hostile-lab', 'meshkit', 'loopback'] } },
    'peer-cache',
    { plugin: 'static-peers', options: { peers: [] } },
    'relay-server',
    {
      plugin: 'nat-probe-server',
      options: { addresses: ['127.0.0.1'], udpPorts: ports.probe },
    },
    { plugin: 'nat-classifier', options: { servers: [`127.0.0.1:${ports.probe[0]}`] } },
    { plugin: 'hole-punch', options: { stunServers: [`stun:127.0.0.1:${ports.stun}`] } },
    { plugin: 'stun-server', options: { host: '127.0.0.1', port: ports.stun } },
    'prometheus-metrics',
  ]
}

/** The plugin names {@link allPlugins} includes (to check a config against plugins/index.ts). */
export const ALL_PLUGIN_NAMES = allPlugins({ stun: 1, probe: [2, 3] }).map((p) =>
  typeof p === 'string' ? p : p.plugin,
)

export interface TargetOptions {
  /** The config's plugins. @default allPlugins(ports) */
  plugins?: (ports: TargetPorts) => PluginEntry[]
  /** Extra top-level config fields (merged over the defaults). */
  config?: Record<string, unknown>
  /** @default 'info' (what `mesh start` logs by default) */
  logLevel?: string
  /** @default 30000 */
  startTimeoutMs?: number
}

/** One /proc sample of the target process. */
export interface ProcSample {
  at: number
  /** utime + stime, in clock ticks. */
  cpuTicks: number
  rssKb: number
  fds: number
  threads: number
  /** stdout + stderr lines so far. */
  logLines: number
}

let clockTicks: number | undefined
/** Clock ticks per second (`getconf CLK_TCK`, 100 on Linux almost everywhere). */
export function clkTck(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/** CPU use between two samples, in % of one core. */
export function cpuPct(a: ProcSample, b: ProcSample): number {
  const seconds = (b.at - a.at) / 1000
  if (seconds <= 0) return 0
  return Math.round(((b.cpuTicks - a.cpuTicks) / clkTck() / seconds) * 1000) / 10
}

/** A port free for both TCP and UDP on `ip` (checked by binding both), below the ephemeral range. */
export async function freeTcpUdpPort(ip = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const tcp = createServer()
    const udp = createSocket('udp4')
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false))
      tcp.listen(port, ip, () => {
        udp.once('error', () => resolve(false))
        udp.bind(port, ip, () => resolve(true))
      })
    })
    await new Promise<void>((r) => tcp.close(() => r()))
    await new Promise<void>((r) => {
      try {
        udp.close(() => r())
      } catch {
        r()
      }
    })
    if (ok) return port
  }
  throw new Error(`no port free for TCP and UDP on ${ip}`)
}

/** Prometheus text: metric line (name with labels) -> value. */
export type Metrics = Map<string, number>

export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    const value = Number(line.slice(i + 1))
    if (Number.isFinite(value)) out.set(line.slice(0, i), value)
  }
  return out
}

/** The sum of every series of `name` (all label sets), optionally only those whose labels match. */
export function metricSum(metrics: Metrics, name: string, labels?: RegExp): number {
  let sum = 0
  for (const [key, value] of metrics) {
    const brace = key.indexOf('{')
    const base = brace < 0 ? key : key.slice(0, brace)
    if (base === name && (!labels || labels.test(key))) sum += value
  }
  return sum
}

/** A running target. */
export class TargetProcess {
  constructor(
    readonly proc: CliProcess,
    readonly dir: string,
    readonly dataDir: string,
    readonly ports: TargetPorts,
    readonly peerId: string,
    readonly addresses: string[],
    readonly control: { url: string; token: string },
    private readonly cleanup: () => Promise<void>,
  ) {}

  get pid(): number {
    return this.proc.pid!
  }

  /** The TCP address with /p2p/<id>. */
  get tcp(): string {
    const a = this.addresses.find((x) => x.includes('/tcp/') && !x.includes('/p2p-circuit'))
    if (!a) throw new Error(`the target listens on no TCP address: ${this.addresses.join(', ')}`)
    return a
  }

  get quic(): string | undefined {
    return this.addresses.find((x) => x.includes('/quic-v1'))
  }

  /** Whether the process still runs. */
  get alive(): boolean {
    return this.proc.exit === undefined
  }

  /** Every output line (stdout, then stderr) so far. */
  get lines(): { stdout: string[]; stderr: string[] } {
    return { stdout: this.proc.stdoutLines, stderr: this.proc.stderrLines }
  }

  get logLines(): number {
    return this.proc.stdoutLines.length + this.proc.stderrLines.length
  }

  /** Samples /proc/<pid>: CPU ticks, RSS, fds, threads; undefined once the process is gone. */
  async sample(): Promise<ProcSample | undefined> {
    const at = Date.now()
    try {
      const [stat, status, fds] = await Promise.all([
        readFile(`/proc/${this.pid}/stat`, 'utf8'),
        readFile(`/proc/${this.pid}/status`, 'utf8'),
        readdir(`/proc/${this.pid}/fd`),
      ])
      // fields after the command name (which may hold spaces and parentheses)
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after "pid (comm) "
      const cpuTicks = Number(fields[11]) + Number(fields[12])
      const threads = Number(fields[17])
      const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
      return { at, cpuTicks, rssKb, fds: fds.length, threads, logLines: this.logLines }
    } catch {
      return undefined
    }
  }

  /** GET a control API path (bounded); the parsed JSON, or the text for /metrics. */
  async get(path: string, timeoutMs = 5000): Promise<unknown> {
    const res = await fetch(`${this.control.url}${path}`, {
      headers: { authorization: `Bearer ${this.control.token}` },
      signal: AbortSignal.timeout(timeoutMs),
    })
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`)
    return path === '/metrics' ? res.text() : res.json()
  }

  async metrics(): Promise<Metrics> {
    return parseMetrics((await this.get('/metrics')) as string)
  }

  /** Stops the process (SIGTERM, then SIGKILL after `timeoutMs`) and removes its temp dir. */
  async stop(timeoutMs = 10_000): Promise<{ code: number | null; signal: string | null; ms: number }> {
    try {
      if (this.alive) {
        const exit = await this.proc.signal('SIGTERM', { timeoutMs }).catch(async () => {
          await this.proc.kill()
          return { code: null, signal: 'SIGKILL', ms: timeoutMs }
        })
        return { code: exit.code, signal: exit.signal, ms: exit.ms }
      }
      return { code: this.proc.exit?.code ?? null, signal: this.proc.exit?.signal ?? null, ms: 0 }
    } finally {
      await this.proc.kill()
      await this.cleanup()
    }
  }
}

/**
 * Starts `mesh start` in a temp project with a `mesh.config.json` of {@link allPlugins} (or
 * `options.plugins`), waits for its control API and reads its peer id and addresses from it.
 */
export async function startTarget(options: TargetOptions = {}): Promise<TargetProcess> {
  const { dir, cleanup } = await tempDir('meshkit-hostile-target-')
  const ports: TargetPorts = {
    stun: await freeTcpUdpPort(),
    probe: [await freeTcpUdpPort(), await freeTcpUdpPort()],
  }
  const config = {
    name: 'target',
    logLevel: options.logLevel ?? 'info',
    listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1'],
    connections: { allow: ['/ip4/127.0.0.1'] },
    // loopback plays the internet here: every 127/8 address counts as public, victims included (on the
    // internet a victim has a public address too), so what protects them is the node's own defences
    // (proofs, budgets, one dial per peer's word), not the address scope
    network: { addressScope: 'public', publicCidrs: ['127.0.0.0/8'] },
    ...options.config,
    plugins: (options.plugins ?? allPlugins)(ports),
  }
  await writeFile(join(dir, 'mesh.config.json'), JSON.stringify(config, null, 2))
  const dataDir = join(dir, 'data')
  const proc = spawnCli(['start', '--data-dir', dataDir], { cwd: dir })
  try {
    const timeoutMs = options.startTimeoutMs ?? 30_000
    const line = await proc.waitForStdout(/control: http:\/\/127\.0\.0\.1:\d+/, {
      timeoutMs,
      what: 'the control API line',
    })
    const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line)![1]
    const token = (await readFile(join(dataDir, 'control.token'), 'utf8')).trim()
    const res = await fetch(`${url}/api/status`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(5000),
    })
    const status = (await res.json()) as { peerId: string; addresses: string[] }
    return new TargetProcess(
      proc,
      dir,
      dataDir,
      ports,
      status.peerId,
      status.addresses,
      { url, token },
      cleanup,
    )
  } catch (err) {
    await proc.kill()
    await cleanup()
    throw err
  }
}
