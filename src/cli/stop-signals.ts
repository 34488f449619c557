/** SIGINT/SIGTERM handling shared by the long-running commands (`start`, `dev`, `demo`). */

export interface StopSignalsOptions {
  /** Told about each signal: the first asks for a graceful stop, a second one exits at once. */
  say?: (text: string, signal: NodeJS.Signals, again: boolean) => void
  /** Called on the first signal (e.g. to abort a startup in progress). */
  onFirst?: (signal: NodeJS.Signals) => void
  /** Called on a second signal, right before `process.exit(1)` (e.g. to remove temp files). */
  beforeExit?: () => void
}

export interface StopSignals {
  /** The first signal received, if any. */
  readonly received: NodeJS.Signals | undefined
  /** Resolves on the first signal (at once when one came already, e.g. during startup). */
  untilSignal(): Promise<NodeJS.Signals>
  /** Removes the handlers. */
  dispose(): void
}

/**
 * Installs the handlers at once, before anything starts, so that a signal during startup is never
 * Node's default handler (killed, nothing stopped). `on`, not `once`: a second signal must reach the
 * handler too.
 */
export function handleStopSignals(options: StopSignalsOptions = {}): StopSignals {
  let received: NodeJS.Signals | undefined
  const waiters: Array<(signal: NodeJS.Signals) => void> = []
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) {
      options.say?.(`${signal} again: exiting without waiting`, signal, true)
      options.beforeExit?.()
      process.exit(1)
    }
    received = signal
    options.say?.(`${signal}: stopping`, signal, false)
    options.onFirst?.(signal)
    for (const wake of waiters.splice(0)) wake(signal)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return {
    get received() {
      return received
    },
    untilSignal() {
      return received ? Promise.resolve(received) : new Promise((resolve) => waiters.push(resolve))
    },
    dispose() {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}

/**
 * Runs `close` and exits the process (code 1) when it takes longer than `timeoutMs`: a graceful stop
 * must not hang forever (`shutdownTimeout` in the config).
 */
export async function closeWithin(
  close: () => Promise<void>,
  timeoutMs: number,
  onTimeout: (text: string) => void,
): Promise<void> {
  const timeout = setTimeout(() => {
    onTimeout(`stop took longer than ${timeoutMs} ms; exiting`)
    process.exit(1)
  }, timeoutMs)
  timeout.unref()
  try {
    await close()
  } finally {
    clearTimeout(timeout)
  }
}
