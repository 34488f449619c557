/**
 * Terminal output for the CLI: colours and progress feedback for long steps.
 *
 * - Colours are on only when the output is a TTY, `NO_COLOR` is unset (or empty, per no-color.org)
 *   and `TERM` is not `dumb`; `FORCE_COLOR` (not `0`) turns them on anywhere, `NO_COLOR` still wins.
 * - Progress: in a TTY, one live status line (a spinner, the running steps, their elapsed time),
 *   redrawn in place; a step's result replaces it as a normal line. When not a TTY (pipes, CI logs),
 *   plain lines only: one when a step starts, one when it ends; nothing is redrawn.
 * - Log lines written through {@link Output.log} clear the live line first and redraw it after, so
 *   stderr logs and the stdout status line never garble each other in a terminal.
 */
import type { MeshEventBus, MeshNode } from 'meshkit'

/** Where and how output is written. */
export interface OutputOptions {
  /** Writes to stdout (or wherever the output goes). */
  write: (text: string) => void
  /** Writes a log line's text (with its newline) to stderr. @default process.stderr.write */
  writeLog?: (text: string) => void
  /** Whether `write` goes to a terminal. */
  isTTY: boolean
  /** Environment read for `NO_COLOR`, `FORCE_COLOR` and `TERM`. @default process.env */
  env?: NodeJS.ProcessEnv
  /** Spinner frame interval in ms. @default 80 */
  intervalMs?: number
}

/** Style functions; each returns the text unchanged when colours are off. */
export interface Colors {
  readonly enabled: boolean
  bold(text: string): string
  dim(text: string): string
  red(text: string): string
  green(text: string): string
  yellow(text: string): string
  cyan(text: string): string
}

/** A running step, shown on the live line in a TTY. */
export interface ProgressStep {
  /** Changes the step's text (redrawn in a TTY; in plain mode printed only if `plain` is set). */
  update(text: string, opts?: { plain?: boolean }): void
  /** Ends the step successfully: prints `✔ text` (default: the step's text and elapsed time). */
  succeed(text?: string): void
  /** Ends the step as failed: prints `✖ text`. */
  fail(text?: string): void
  /** Ends the step with a warning: prints `! text`. */
  warn(text?: string): void
  /** Ends the step without printing anything. */
  stop(): void
  /** ms since the step started. */
  readonly elapsedMs: number
}

export interface Output {
  readonly colors: Colors
  readonly isTTY: boolean
  /** Writes a line (a newline is added), clearing and redrawing the live line around it. */
  line(text?: string): void
  /** Writes a log line to stderr, clearing and redrawing the live line around it. */
  log(text: string): void
  /** Starts a step. */
  step(text: string): ProgressStep
  /** Ends every running step silently and clears the live line. */
  close(): void
}

const ESC = '\u001b['
const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']

/** Whether colours are on for an output with this TTY state and environment. */
export function colorsEnabled(isTTY: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '') return env.FORCE_COLOR !== '0'
  if (env.TERM === 'dumb') return false
  return isTTY
}

/** Colour functions (ANSI SGR codes), or identity functions when `enabled` is false. */
export function createColors(enabled: boolean): Colors {
  const style = (open: number, close: number) => (text: string) =>
    enabled ? `${ESC}${open}m${text}${ESC}${close}m` : text
  return {
    enabled,
    bold: style(1, 22),
    dim: style(2, 22),
    red: style(31, 39),
    green: style(32, 39),
    yellow: style(33, 39),
    cyan: style(36, 39),
  }
}

/** Formats a duration for humans: `850 ms`, `2.4 s`, `1 min 5 s`. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`
}

interface StepState {
  text: string
  startedAt: number
}

/** Creates an output for a stream: live status line in a TTY, plain lines otherwise. */
export function createOutput(options: OutputOptions): Output {
  const { write, isTTY } = options
  const writeLog = options.writeLog ?? ((text: string) => process.stderr.write(text))
  const colors = createColors(colorsEnabled(isTTY, options.env ?? process.env))
  const steps = new Set<StepState>()
  let frame = 0
  let drawn = false
  let timer: NodeJS.Timeout | undefined

  const clear = () => {
    if (drawn) write(`\r${ESC}2K`)
    drawn = false
  }
  const render = () => {
    if (!isTTY) return
    clear()
    if (steps.size === 0) return
    const now = Date.now()
    const parts = [...steps].map((s) => {
      const elapsed = now - s.startedAt
      return elapsed >= 1000 ? `${s.text} ${colors.dim(`(${formatMs(elapsed)})`)}` : s.text
    })
    write(`${colors.cyan(SPINNER[frame % SPINNER.length])} ${parts.join(colors.dim('  ·  '))}`)
    drawn = true
  }
  const ensureTimer = () => {
    if (!isTTY || timer || steps.size === 0) return
    timer = setInterval(() => {
      frame++
      render()
    }, options.intervalMs ?? 80)
    timer.unref()
  }
  const stopTimerIfIdle = () => {
    if (steps.size > 0 || !timer) return
    clearInterval(timer)
    timer = undefined
  }
  const line = (text = '') => {
    clear()
    write(`${text}\n`)
    render()
  }

  const step = (initial: string): ProgressStep => {
    const state: StepState = { text: initial, startedAt: Date.now() }
    let done = false
    steps.add(state)
    if (isTTY) {
      render()
      ensureTimer()
    } else {
      write(`… ${initial}\n`)
    }
    const end = (symbol: string, text: string | undefined) => {
      if (done) return
      done = true
      steps.delete(state)
      stopTimerIfIdle()
      if (symbol) line(`${symbol} ${text ?? `${state.text} (${formatMs(Date.now() - state.startedAt)})`}`)
      else render()
    }
    return {
      update(text, opts) {
        if (done) return
        state.text = text
        if (isTTY) render()
        else if (opts?.plain) write(`  ${text}\n`)
      },
      succeed: (text) => end(colors.green('✔'), text),
      fail: (text) => end(colors.red('✖'), text),
      warn: (text) => end(colors.yellow('!'), text),
      stop: () => end('', undefined),
      get elapsedMs() {
        return Date.now() - state.startedAt
      },
    }
  }

  return {
    colors,
    isTTY,
    line,
    log(text) {
      clear()
      writeLog(`${text}\n`)
      render()
    },
    step,
    close() {
      steps.clear()
      stopTimerIfIdle()
      clear()
    },
  }
}

/** The output of a CLI command: on stdout, TTY and colours detected from the process. */
export function processOutput(env: NodeJS.ProcessEnv = process.env): Output {
  return createOutput({
    write: (text) => process.stdout.write(text),
    writeLog: (text) => process.stderr.write(text),
    isTTY: process.stdout.isTTY === true,
    env,
  })
}

/** The part of the 'nat-classification' capability (natClassifier()) read here. */
interface NatReportReader {
  report(): { udp?: { type: string }; tcp?: { type: string } } | undefined
}

/**
 * Progress for `mesh start`'s long startup steps, in human mode: waiting for the first peer when the
 * node bootstraps (a `bootstrap` plugin or `dial` addresses), and the NAT classification when a
 * plugin provides 'nat-classification'. Returns a function that ends the steps (call it on stop).
 */
export function showStartupProgress(node: MeshNode, events: MeshEventBus, output: Output): () => void {
  const offs: Array<() => void> = []
  const provides = (cap: string) => node.has(cap)
  const config = node.config
  const bootstraps =
    config.bootstrap.minConnections > 0 && (provides('bootstrap') || (config.dial?.length ?? 0) > 0)
  if (bootstraps && node.libp2p.getConnections().length === 0) {
    const waiting = output.step('waiting for the first peer')
    offs.push(
      () => waiting.stop(),
      events.on('peer:connect', (e) => {
        waiting.succeed(`connected to ${String(e.peerId)} (${formatMs(waiting.elapsedMs)})`)
      }),
      events.on('bootstrap:retry', (e) => {
        const delay = typeof e.delayMs === 'number' ? ` in ${formatMs(e.delayMs)}` : ''
        waiting.update(`waiting for the first peer (no peer yet; retry ${String(e.attempt)}${delay})`, {
          plain: true,
        })
      }),
    )
  }
  if (provides('nat-classification')) {
    const describe = (udp: unknown, tcp: unknown) =>
      `NAT type: UDP ${typeof udp === 'string' ? udp : 'not tested'}, TCP ${typeof tcp === 'string' ? tcp : 'not tested'}`
    const known = node.api<NatReportReader>('nat-classification').report()
    if (known) output.line(`${output.colors.green('✔')} ${describe(known.udp?.type, known.tcp?.type)}`)
    else {
      const detecting = output.step('detecting the NAT type')
      offs.push(
        () => detecting.stop(),
        events.on('nat:classified', (e) => {
          detecting.succeed(`${describe(e.udp, e.tcp)} (${formatMs(detecting.elapsedMs)})`)
        }),
      )
    }
  }
  return () => {
    for (const off of offs.splice(0)) off()
  }
}
