/**
 * Runs the real `mesh` CLI (dist/src/cli/main.js) as a child process, for integration tests.
 * Every process spawned here is tracked; call `killAll()` in an after/afterEach hook.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LOOPBACK_LISTEN, tempDir } from './helpers.js'

/** dist/src/cli/main.js, seen from dist/test/cli-helpers.js. */
export const CLI_MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js')

/** `--listen` flags for the loopback-only addresses every test node must use. */
export const LOOPBACK_LISTEN_ARGS: string[] = LOOPBACK_LISTEN.flatMap((a) => ['--listen', a])

/** A `--json` event line. */
export interface JsonEvent {
  event: string
  [field: string]: unknown
}

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface SpawnCliOptions {
  /** The working directory (where a config is searched). Use a temp dir. */
  cwd: string
  env?: NodeJS.ProcessEnv
}

export interface WaitOptions {
  timeoutMs?: number
  what?: string
}

const live = new Set<CliProcess>()

/** A running CLI process whose stdout and stderr are collected line by line. */
export class CliProcess {
  readonly child: ChildProcess
  readonly stdoutLines: string[] = []
  readonly stderrLines: string[] = []
  /** When the process was spawned (ms since epoch). */
  readonly spawnedAt = Date.now()
  /** Resolves when the process has exited and its output is fully read. */
  readonly exited: Promise<ExitInfo>
  exit?: ExitInfo
  /** When the process exited (ms since epoch). */
  exitedAt?: number
  #waiters = new Set<() => void>()

  constructor(
    readonly args: string[],
    options: SpawnCliOptions,
  ) {
    this.child = spawn(process.execPath, [CLI_MAIN, ...args], {
      cwd: options.cwd,
      env: { ...process.env, DEBUG: undefined, NODE_OPTIONS: undefined, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    live.add(this)
    this.#collect(this.child.stdout!, this.stdoutLines)
    this.#collect(this.child.stderr!, this.stderrLines)
    this.exited = new Promise<ExitInfo>((resolve) => {
      // 'close' fires after the exit and after stdout/stderr have ended: no output is lost
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal }
        this.exitedAt = Date.now()
        live.delete(this)
        this.#notify()
        resolve(this.exit)
      })
      this.child.once('error', (err) => {
        this.stderrLines.push(`(spawn error: ${err.message})`)
        this.exit = { code: null, signal: null }
        this.exitedAt = Date.now()
        live.delete(this)
        this.#notify()
        resolve(this.exit)
      })
    })
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get stdout(): string {
    return this.stdoutLines.join('\n')
  }

  get stderr(): string {
    return this.stderrLines.join('\n')
  }

  /** Every stdout line parsed as JSON (throws on the first line that is not JSON). */
  get events(): JsonEvent[] {
    return this.stdoutLines.map((line) => JSON.parse(line) as JsonEvent)
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
    const tail = (lines: string[]) => lines.slice(-20).join('\n    ')
    return `mesh ${this.args.join(' ')}\n  exit: ${JSON.stringify(this.exit ?? 'running')}\n  stdout:\n    ${tail(this.stdoutLines)}\n  stderr:\n    ${tail(this.stderrLines)}`
  }

  /**
   * Resolves with the first value `check` returns (not undefined) while output arrives; rejects after
   * `timeoutMs`, or when the process exits first.
   */
  waitUntil<T>(
    check: () => T | undefined,
    { timeoutMs = 15_000, what = 'output' }: WaitOptions = {},
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

  /** Waits for a `--json` event line matching `predicate` (each stdout line must be JSON). */
  waitForEvent(predicate: (e: JsonEvent) => boolean, options: WaitOptions = {}): Promise<JsonEvent> {
    return this.waitUntil(() => this.events.find(predicate), options)
  }

  /** Waits for a stdout line matching `pattern`. */
  waitForStdout(pattern: RegExp, options: WaitOptions = {}): Promise<string> {
    return this.waitUntil(() => this.stdoutLines.find((l) => pattern.test(l)), options)
  }

  /** Waits for a stderr line matching `pattern`. */
  waitForStderr(pattern: RegExp, options: WaitOptions = {}): Promise<string> {
    return this.waitUntil(() => this.stderrLines.find((l) => pattern.test(l)), options)
  }

  /** Waits for the exit, at most `timeoutMs`. */
  async waitForExit({ timeoutMs = 10_000 }: { timeoutMs?: number } = {}): Promise<ExitInfo> {
    await this.waitUntil(() => this.exit, { timeoutMs, what: 'the exit' }).catch((err) => {
      if (!this.exit) throw err
    })
    return this.exit!
  }

  /** Sends `signal` and waits for the exit; returns it with the ms it took. */
  async signal(signal: NodeJS.Signals, { timeoutMs = 10_000 } = {}): Promise<ExitInfo & { ms: number }> {
    const sent = Date.now()
    this.child.kill(signal)
    const exit = await this.waitForExit({ timeoutMs })
    return { ...exit, ms: (this.exitedAt ?? Date.now()) - sent }
  }

  /** Kills the process (SIGKILL) unless it has exited, and waits for it (bounded). */
  async kill(): Promise<void> {
    if (!this.exit) {
      this.child.kill('SIGKILL')
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000).unref())])
    }
    live.delete(this)
  }
}

/** Spawns `node dist/src/cli/main.js ...args`. */
export function spawnCli(args: string[], options: SpawnCliOptions): CliProcess {
  return new CliProcess(args, options)
}

export interface StartNodeOptions extends SpawnCliOptions {
  dataDir: string
  /** @default LOOPBACK_LISTEN_ARGS */
  listen?: string[]
  dial?: string[]
  logLevel?: string
  /** @default true */
  json?: boolean
  extraArgs?: string[]
  startTimeoutMs?: number
}

export interface StartedNode {
  proc: CliProcess
  peerId: string
  addresses: string[]
  /** ms from spawn to the started event. */
  startupMs: number
}

/** The arguments of `mesh start` for these options. */
export function startArgs(options: Omit<StartNodeOptions, 'cwd'>): string[] {
  const args = ['start', '--data-dir', options.dataDir]
  if (options.json ?? true) args.push('--json')
  for (const a of options.listen ?? LOOPBACK_LISTEN) args.push('--listen', a)
  for (const a of options.dial ?? []) args.push('--dial', a)
  if (options.logLevel) args.push('--log-level', options.logLevel)
  args.push(...(options.extraArgs ?? []))
  return args
}

/** Starts `mesh start --json` and waits for its `started` event (the process is killed if that fails). */
export async function startNode(options: StartNodeOptions): Promise<StartedNode> {
  const proc = spawnCli(startArgs({ ...options, json: true }), options)
  try {
    const started = await proc.waitForEvent((e) => e.event === 'started', {
      timeoutMs: options.startTimeoutMs ?? 20_000,
      what: 'the started event',
    })
    return {
      proc,
      peerId: started.peerId as string,
      addresses: started.addresses as string[],
      startupMs: Date.now() - proc.spawnedAt,
    }
  } catch (err) {
    await proc.kill()
    throw err
  }
}

/** Runs the CLI to completion (killed after `timeoutMs`) and returns its exit code and output. */
export async function runCliProcess(
  args: string[],
  options: SpawnCliOptions & { timeoutMs?: number },
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const proc = spawnCli(args, options)
  try {
    const exit = await proc.waitForExit({ timeoutMs: options.timeoutMs ?? 20_000 })
    return { ...exit, stdout: proc.stdout, stderr: proc.stderr }
  } finally {
    await proc.kill()
  }
}

/** Kills every CLI process spawned by these helpers that is still running. */
/** The plugins every loopback CLI test config starts with, named as a JSON config names them. */
export const BASE_PLUGIN_NAMES = ['identify', 'ping', 'noise', 'yamux', 'tcp']

/**
 * A fresh temp dir for each test of the calling `describe` (its beforeEach/afterEach are registered
 * here): after each test every CLI process still running is killed, then the dir is removed.
 */
export function cliTempDirs(prefix: string): () => string {
  let dir = ''
  let cleanup = async () => {}
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir(prefix))
  })
  afterEach(async () => {
    await killAll()
    await cleanup()
  })
  return () => dir
}

export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()))
}

/** True when `text` looks like it contains a JS stack trace. */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+(:\d+:\d+\)?|\(node:.+\))$/m.test(text)
}
