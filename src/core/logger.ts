import type { LogLevel } from './config-types.js'

const RANK: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 }
export const LOG_LEVELS = Object.keys(RANK) as LogLevel[]

/** A levelled logger. Meshkit logs to stderr so stdout stays free for `--json` events. */
export interface Logger {
  error(message: string, ...details: unknown[]): void
  warn(message: string, ...details: unknown[]): void
  info(message: string, ...details: unknown[]): void
  debug(message: string, ...details: unknown[]): void
  trace(message: string, ...details: unknown[]): void
  /** A logger whose lines carry `scope` (e.g. a plugin name). */
  child(scope: string): Logger
  level: LogLevel
}

export interface LoggerOptions {
  level?: LogLevel
  /** Where lines go. @default process.stderr */
  write?: (line: string) => void
  scope?: string
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`))
  const state = { level: options.level ?? 'info' }
  const make = (scope: string | undefined): Logger => {
    const log =
      (level: Exclude<LogLevel, 'silent'>) =>
      (message: string, ...details: unknown[]) => {
        if (RANK[level] > RANK[state.level]) return
        const extra = details.map((d) =>
          d instanceof Error ? d.message : typeof d === 'string' ? d : JSON.stringify(d),
        )
        const prefix = scope ? `[${scope}] ` : ''
        write(
          `${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${prefix}${[message, ...extra].join(' ')}`,
        )
      }
    return {
      error: log('error'),
      warn: log('warn'),
      info: log('info'),
      debug: log('debug'),
      trace: log('trace'),
      child: (s) => make(scope ? `${scope}:${s}` : s),
      get level() {
        return state.level
      },
      set level(l: LogLevel) {
        state.level = l
      },
    }
  }
  return make(options.scope)
}
