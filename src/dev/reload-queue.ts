/**
 * The order of a `mesh dev` session's reloads: file changes closer than `debounceMs` make one reload,
 * reloads run one at a time in order, each report is emitted, and `idle()` waits for the queue.
 */
import type { Logger } from 'meshkit'
import type { ReloadReport } from './reload-report.js'

export interface ReloadQueueInit {
  debounceMs: number
  logger: Logger
  /** Reloads for the changed files (`since`: the first change seen, performance.now()). */
  reloadChanged(files: string[], since: number): Promise<ReloadReport | undefined>
  /** Told every report, in order. */
  emit(report: ReloadReport): void
}

export interface ReloadQueue {
  /** A watched file changed: reload `debounceMs` after the last change. */
  changed(file: string): void
  /** Runs `job` after every reload queued before it; emits its report. */
  enqueue(job: () => Promise<ReloadReport | undefined>): Promise<ReloadReport | undefined>
  /** Resolves once no reload is waiting (debounce) or running. */
  idle(): Promise<void>
  /** Takes no more changes, lets the running reload finish and wakes `idle()` waiters. */
  close(): Promise<void>
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export function createReloadQueue(init: ReloadQueueInit): ReloadQueue {
  const { logger } = init
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let firstChange: number | undefined
  const pendingFiles = new Set<string>()
  let running: Promise<unknown> = Promise.resolve()
  /** Reloads waiting or running. */
  let queued = 0
  let idleWaiters: Array<() => void> = []
  const isIdle = () => queued === 0 && timer === undefined
  const settleIdle = () => {
    if (!isIdle()) return
    for (const wake of idleWaiters.splice(0)) wake()
  }

  /** Runs reloads one at a time, in order; emits each report; tracks idleness for `idle()`. */
  const enqueue = (job: () => Promise<ReloadReport | undefined>): Promise<ReloadReport | undefined> => {
    queued++
    const run = running.then(async () => {
      const report = await job()
      if (report) init.emit(report)
      return report
    })
    running = run
      .catch((err: unknown) => logger.error(`reload failed unexpectedly: ${reasonOf(err)}`))
      .finally(() => {
        queued--
        settleIdle()
      })
    return run
  }
  const schedule = () =>
    enqueue(async () => {
      if (closed || pendingFiles.size === 0) return undefined
      const files = [...pendingFiles]
      pendingFiles.clear()
      const since = firstChange ?? performance.now()
      firstChange = undefined
      return init.reloadChanged(files, since)
    })

  return {
    changed: (file) => {
      if (closed) return
      pendingFiles.add(file)
      firstChange ??= performance.now()
      clearTimeout(timer)
      timer = setTimeout(() => {
        timer = undefined
        // a failure is logged where the queue catches it
        schedule().catch(() => {})
      }, init.debounceMs)
    },
    enqueue,
    idle: () => {
      if (isIdle()) return Promise.resolve()
      return new Promise((resolveIdle) => idleWaiters.push(resolveIdle))
    },
    close: async () => {
      closed = true
      clearTimeout(timer)
      timer = undefined
      await running
      for (const wake of idleWaiters.splice(0)) wake()
      idleWaiters = []
    },
  }
}
