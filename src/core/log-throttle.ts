/** A log function that writes at most `max` lines per window and sums up the rest. */
export interface ThrottledLog {
  (message: string): void
  /** Writes the summary of the current window now (if lines were held back) and stops the timer. */
  flush(): void
}

export interface ThrottleLogOptions {
  /** Lines written per window. @default 5 */
  max?: number
  /** @default 10000 */
  windowMs?: number
  /** What the held-back lines were, for the summary: `… and 37 more <what> in the last 10 s`. @default 'lines like it' */
  what?: string
}

/**
 * For log lines a remote peer can cause (a connection, a refused request, a ban): each such kind of line
 * is written at most `max` times per window, and the lines held back are summed up in one line when the
 * window ends. Under attack the log stays readable and bounded; in a quiet mesh every line is written.
 */
export function throttleLog(log: (message: string) => void, options: ThrottleLogOptions = {}): ThrottledLog {
  const { max = 5, windowMs = 10_000, what = 'lines like it' } = options
  let written = 0
  let held = 0
  let timer: NodeJS.Timeout | undefined
  const summarize = () => {
    timer = undefined
    if (held > 0) log(`… and ${held} more ${what} in the last ${Math.round(windowMs / 1000)} s`)
    written = 0
    held = 0
  }
  const throttled = ((message: string) => {
    if (!timer) {
      timer = setTimeout(summarize, windowMs)
      timer.unref()
    }
    if (written < max) {
      written++
      log(message)
    } else held++
  }) as ThrottledLog
  throttled.flush = () => {
    clearTimeout(timer)
    summarize()
  }
  return throttled
}
