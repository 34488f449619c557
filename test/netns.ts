/**
 * Linux network namespaces for tests: a private network stack (its own `lo`, routes, multicast) in which
 * processes can run, so tests can send multicast or build small topologies (veth pairs, routers, NATs)
 * without any packet reaching the host's networks.
 *
 * Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2's `ip`; check with {@link netnsUnavailableReason}
 * and skip otherwise. Every namespace made by {@link createNetns} and every process started by
 * {@link netnsSpawn} is tracked: call {@link killNetnsProcesses} and {@link deleteNetns} (or
 * {@link deleteAllNetns}) in an after hook. A namespace still tracked when the process exits is deleted
 * by a last-chance exit handler. Every command here is bounded by a timeout.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'

const IP_CANDIDATES = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']

/** The `ip` binary: iproute2's usual places first (root's PATH may lack /usr/sbin), else PATH. */
export const IP = IP_CANDIDATES.find((p) => existsSync(p)) ?? 'ip'

const NFT_CANDIDATES = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft', '/bin/nft']

/** The `nft` binary (nftables), found like {@link IP}. */
export const NFT = NFT_CANDIDATES.find((p) => existsSync(p)) ?? 'nft'

/** How long one `ip` command may take. */
const COMMAND_TIMEOUT_MS = 10_000

export interface CommandResult {
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Killed (SIGKILL) after this long. @default 10 s */
  timeoutMs?: number
  /** Written to the command's stdin (which is closed after it). */
  input?: string
}

/** Runs a command to completion (killed after `timeoutMs`); rejects with its stderr when it fails. */
export function run(
  cmd: string,
  args: readonly string[],
  { timeoutMs = COMMAND_TIMEOUT_MS, input }: RunOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      [...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (err) {
          const detail = String(stderr).trim() || err.message
          reject(Object.assign(new Error(`${cmd} ${args.join(' ')}: ${detail}`), { cause: err, stderr }))
        } else resolve({ stdout: String(stdout), stderr: String(stderr) })
      },
    )
    // a command that exits without reading its input must not fail the run with EPIPE
    child.stdin?.on('error', () => {})
    child.stdin?.end(input)
  })
}

/** Runs `ip ...args` (in the root namespace). */
export function ip(args: readonly string[], options?: RunOptions): Promise<CommandResult> {
  return run(IP, args, options)
}

/** Runs `ip -n <name> ...args`: an `ip` command (link, addr, route, ...) inside the namespace. */
export function netnsIp(name: string, args: readonly string[], options?: RunOptions): Promise<CommandResult> {
  return run(IP, ['-n', name, ...args], options)
}

/**
 * Runs several `ip` commands inside the namespace in one process (`ip -n <name> -batch -`), one command
 * (without the leading `ip`) per entry: much cheaper than one process each. Stops at the first failure.
 */
export function netnsIpBatch(
  name: string,
  commands: readonly string[],
  options?: RunOptions,
): Promise<CommandResult> {
  return run(IP, ['-n', name, '-batch', '-'], { ...options, input: `${commands.join('\n')}\n` })
}

let probed: Promise<string | undefined> | undefined

/**
 * Why network namespaces cannot be used here (not Linux, not root, no `ip`, or creating one fails,
 * e.g. in a container without CAP_SYS_ADMIN), or undefined when they can. Probed once (a throwaway
 * namespace is created and deleted).
 */
export function netnsUnavailableReason(): Promise<string | undefined> {
  probed ??= (async () => {
    if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
    if (process.getuid?.() !== 0) return 'network namespaces need root (run the tests as root)'
    try {
      await ip(['-V'])
    } catch {
      return "iproute2's `ip` command is missing (install iproute2)"
    }
    const name = uniqueNetnsName('mk-probe')
    try {
      await createNetns(name)
    } catch (err) {
      return `cannot create a network namespace: ${err instanceof Error ? err.message : String(err)}`
    } finally {
      await deleteNetns(name).catch(() => {})
    }
    return undefined
  })()
  return probed
}

let nftProbed: Promise<string | undefined> | undefined

/**
 * Why nftables rules cannot be loaded into namespaces here (no namespaces, see
 * {@link netnsUnavailableReason}, or no `nft` command), or undefined when they can.
 */
export function nftUnavailableReason(): Promise<string | undefined> {
  nftProbed ??= (async () => {
    const why = await netnsUnavailableReason()
    if (why) return why
    try {
      await run(NFT, ['--version'])
    } catch {
      return 'the `nft` command is missing (install nftables: apt-get install -y nftables)'
    }
    return undefined
  })()
  return nftProbed
}

/** True when tests can create network namespaces (see {@link netnsUnavailableReason} for why not). */
export async function canUseNetns(): Promise<boolean> {
  return (await netnsUnavailableReason()) === undefined
}

/** A fresh namespace name, `<prefix>-<6 hex>`: unique, and short enough to derive interface names from. */
export function uniqueNetnsName(prefix = 'mk'): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`
}

const created = new Set<string>()
let exitHookInstalled = false

/** Deletes what is still tracked, synchronously: the last-chance cleanup on exit or on a fatal signal. */
function deleteTrackedNetnsSync(): void {
  for (const name of [...created]) {
    try {
      for (const pid of execFileSync(IP, ['netns', 'pids', name], { timeout: 5000 })
        .toString()
        .split(/\s+/)
        .filter(Boolean))
        process.kill(Number(pid), 'SIGKILL')
      execFileSync(IP, ['netns', 'delete', name], { timeout: 5000, stdio: 'ignore' })
      created.delete(name)
    } catch {
      // best effort: the process is exiting
    }
  }
}

/**
 * Deletes what is still tracked when the test process exits without its after hooks having run, and
 * also when it is ended by SIGINT, SIGTERM or SIGHUP (which skip 'exit' handlers): then the signal is
 * raised again, so the process still ends by it unless someone else handles it.
 */
function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', deleteTrackedNetnsSync)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      deleteTrackedNetnsSync()
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
}

export interface CreateNetnsOptions {
  /** Bring `lo` up (127.0.0.1 and ::1 work only then). @default true */
  loopback?: boolean
  /**
   * Let `lo` carry multicast (mDNS, SSDP) between the namespace's processes: turns its multicast flag
   * on and routes 224.0.0.0/4 to it. @default false
   */
  loopbackMulticast?: boolean
}

/** Creates network namespace `name` (tracked for cleanup). */
export async function createNetns(name: string, options: CreateNetnsOptions = {}): Promise<void> {
  installExitHook()
  await ip(['netns', 'add', name])
  created.add(name)
  try {
    if (options.loopback ?? true) await netnsIp(name, ['link', 'set', 'lo', 'up'])
    if (options.loopbackMulticast) {
      await netnsIp(name, ['link', 'set', 'lo', 'multicast', 'on'])
      await netnsIp(name, ['route', 'add', '224.0.0.0/4', 'dev', 'lo'])
    }
  } catch (err) {
    await deleteNetns(name).catch(() => {})
    throw err
  }
}

/** The ids of the processes running in namespace `name` (empty when it does not exist). */
export async function netnsPids(name: string): Promise<number[]> {
  try {
    const { stdout } = await ip(['netns', 'pids', name])
    return stdout.split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** The namespaces that exist now (`ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await ip(['netns', 'list'])
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0])
    .filter(Boolean)
}

/**
 * Deletes namespace `name`: first kills (SIGKILL) every process still inside it, which only tests put
 * there, since a namespace with processes in it outlives `ip netns delete`. No error when it is gone.
 */
export async function deleteNetns(name: string, { timeoutMs = 10_000 } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const pids = await netnsPids(name)
    if (pids.length === 0) break
    if (Date.now() > deadline) throw new Error(`processes ${pids.join(', ')} in netns ${name} do not die`)
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  try {
    await ip(['netns', 'delete', name])
  } catch (err) {
    if (!/No such file|not found|does not exist/i.test((err as { stderr?: string }).stderr ?? '')) throw err
  }
  created.delete(name)
}

/** Deletes every namespace created by {@link createNetns} in this process. */
export async function deleteAllNetns(): Promise<void> {
  const errors: unknown[] = []
  for (const name of [...created]) await deleteNetns(name).catch((err) => errors.push(err))
  if (errors.length > 0) throw new AggregateError(errors, 'could not delete every network namespace')
}

export interface VethEnd {
  /** The namespace this end goes into. */
  netns: string
  /** Interface name (at most 15 characters). */
  ifname: string
  /** An address with prefix, e.g. '198.18.0.1/24' (documentation/benchmark ranges only). */
  address?: string
}

/** Joins two namespaces with a veth pair, moves each end into its namespace, addresses it and brings it up. */
export async function createVethPair(a: VethEnd, b: VethEnd): Promise<void> {
  await netnsIp(a.netns, [
    'link',
    'add',
    a.ifname,
    'type',
    'veth',
    'peer',
    'name',
    b.ifname,
    'netns',
    b.netns,
  ])
  for (const end of [a, b]) {
    if (end.address) await netnsIp(end.netns, ['addr', 'add', end.address, 'dev', end.ifname])
    await netnsIp(end.netns, ['link', 'set', end.ifname, 'up'])
  }
}

/** Runs `cmd ...args` to completion inside namespace `name`; rejects when it fails or times out. */
export function netnsExec(
  name: string,
  cmd: string,
  args: readonly string[] = [],
  options?: RunOptions,
): Promise<CommandResult> {
  return run(IP, ['netns', 'exec', name, cmd, ...args], options)
}

/** Sets sysctl `key` (e.g. 'net.ipv4.ip_forward') inside namespace `name` (the net.* keys are per namespace). */
export async function netnsSysctl(name: string, key: string, value: string): Promise<void> {
  const path = `/proc/sys/${key.replaceAll('.', '/')}`
  await netnsExec(name, '/bin/sh', ['-c', 'printf "%s\\n" "$1" > "$2"', 'sysctl', value, path])
}

/** Runs `nft` inside namespace `name`: `script` (an nft file's text) is fed on stdin when given. */
export function netnsNft(name: string, args: readonly string[], script?: string): Promise<CommandResult> {
  return netnsExec(name, NFT, script === undefined ? args : [...args, '-f', '-'], { input: script })
}

export interface NetnsSpawnOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
}

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

const live = new Set<NetnsProcess>()

/**
 * A process running inside a namespace, its stdout and stderr collected line by line. `ip netns exec`
 * execs the command in place, so `pid` is the command's own pid and signals reach it directly.
 */
export class NetnsProcess {
  readonly child: ChildProcess
  readonly stdoutLines: string[] = []
  readonly stderrLines: string[] = []
  readonly exited: Promise<ExitInfo>
  exit?: ExitInfo
  #waiters = new Set<() => void>()

  constructor(
    readonly netns: string,
    readonly cmd: string,
    readonly args: readonly string[],
    options: NetnsSpawnOptions = {},
  ) {
    this.child = spawn(IP, ['netns', 'exec', netns, cmd, ...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    live.add(this)
    this.#collect(this.child.stdout!, this.stdoutLines)
    this.#collect(this.child.stderr!, this.stderrLines)
    this.exited = new Promise<ExitInfo>((resolve) => {
      const done = (exit: ExitInfo) => {
        this.exit ??= exit
        live.delete(this)
        this.#notify()
        resolve(this.exit)
      }
      this.child.once('close', (code, signal) => done({ code, signal }))
      this.child.once('error', (err) => {
        this.stderrLines.push(`(spawn error: ${err.message})`)
        done({ code: null, signal: null })
      })
    })
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  #collect(stream: NodeJS.ReadableStream, lines: string[]): void {
    let rest = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      rest += chunk
      const parts = rest.split('\n')
      rest = parts.pop() ?? ''
      lines.push(...parts)
      this.#notify()
    })
    stream.on('end', () => {
      if (rest) lines.push(rest)
      rest = ''
      this.#notify()
    })
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake()
  }

  /** A diagnostic tail of the output, for failure messages. */
  describe(): string {
    const tail = (lines: string[]) => lines.slice(-30).join('\n    ')
    return `[netns ${this.netns}] ${this.cmd} ${this.args.join(' ')}\n  exit: ${JSON.stringify(this.exit ?? 'running')}\n  stdout:\n    ${tail(this.stdoutLines)}\n  stderr:\n    ${tail(this.stderrLines)}`
  }

  /**
   * Resolves with the first value `check` returns (not undefined), checked as output arrives; rejects
   * after `timeoutMs`, or when the process exits first.
   */
  waitUntil<T>(
    check: () => T | undefined,
    { timeoutMs = 15_000, what = 'output' }: { timeoutMs?: number; what?: string } = {},
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const done = (fn: () => void) => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
        fn()
      }
      const wake = () => {
        let value: T | undefined
        try {
          value = check()
        } catch (err) {
          done(() => reject(err))
          return
        }
        if (value !== undefined) done(() => resolve(value))
        else if (this.exit)
          done(() => reject(new Error(`the process exited before ${what} appeared\n${this.describe()}`)))
      }
      timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.describe()}`)),
          ),
        timeoutMs,
      )
      this.#waiters.add(wake)
      wake()
    })
  }

  /** Sends `signal` unless the process has exited, and waits for the exit (at most `timeoutMs`). */
  async kill(signal: NodeJS.Signals = 'SIGKILL', { timeoutMs = 5000 } = {}): Promise<ExitInfo | undefined> {
    if (!this.exit) {
      this.child.kill(signal)
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, timeoutMs).unref())])
    }
    if (this.exit) live.delete(this)
    return this.exit
  }
}

/** Starts `cmd ...args` inside namespace `name` (tracked: see {@link killNetnsProcesses}). */
export function netnsSpawn(
  name: string,
  cmd: string,
  args: readonly string[] = [],
  options?: NetnsSpawnOptions,
): NetnsProcess {
  return new NetnsProcess(name, cmd, args, options)
}

/** Kills (SIGKILL) every process started by {@link netnsSpawn} that is still running, and waits for them. */
export async function killNetnsProcesses(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill('SIGKILL')))
}
