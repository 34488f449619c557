import { hostname } from 'node:os'
import type { LogLevel } from './config-types.js'

const RANK: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 }
export const LOG_LEVELS = Object.keys(RANK) as LogLevel[]

/** pino's numeric levels, for `format: 'json'` (pino-pretty and other pino tooling read them). */
const PINO_LEVEL: Record<Exclude<LogLevel, 'silent'>, number> = {
  error: 50,
  warn: 40,
  info: 30,
  debug: 20,
  trace: 10,
}

/** How log lines are written: human text, or one JSON object per line (pino's shape). */
export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']

/** A levelled logger. Meshkit logs to stderr so stdout stays free for `--json` events. */
export interface Logger {
  /**
   * Writes a line at that level. `details` are appended to the message in text; in JSON, plain objects
   * become fields of the line (`{ peerId, ms }`), errors an `err` field, anything else joins the message.
   */
  error(message: string, ...details: unknown[]): void
  warn(message: string, ...details: unknown[]): void
  info(message: string, ...details: unknown[]): void
  debug(message: string, ...details: unknown[]): void
  trace(message: string, ...details: unknown[]): void
  /** Whether a line at `level` would be written (to skip building costly messages). */
  enabled(level: Exclude<LogLevel, 'silent'>): boolean
  /** A logger whose lines carry `scope` (e.g. a plugin name); children of children join with `:`. */
  child(scope: string): Logger
  /** The level of the logger and all its children. */
  level: LogLevel
}

export interface LoggerOptions {
  /** @default 'info' */
  level?: LogLevel
  /** Where lines go. @default process.stderr */
  write?: (line: string) => void
  scope?: string
  /** @default 'text' */
  format?: LogFormat
  /**
   * Scopes that log at `debug` (or `trace`, for `libp2p:*` scopes) whatever `level` says, as `DEBUG`
   * patterns: `meshkit:*` (every Meshkit scope), `meshkit:kad-topics,meshkit:security`,
   * `meshkit:*,-meshkit:bootstrap` (all but one), `libp2p:dialer*` (libp2p's own components).
   * @default process.env.DEBUG
   */
  debug?: string
  /** The `name` field of JSON lines (e.g. the node's name). @default 'meshkit' */
  name?: string
}

/**
 * A `DEBUG`-style matcher: comma/space separated patterns with `*` wildcards; a leading `-` excludes.
 * Returns undefined when nothing is enabled.
 */
export function debugMatcher(spec: string | undefined): ((namespace: string) => boolean) | undefined {
  const parts = (spec ?? '').split(/[\s,]+/).filter(Boolean)
  if (parts.length === 0) return undefined
  const toRegExp = (p: string) =>
    new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')}$`)
  const include = parts.filter((p) => !p.startsWith('-')).map(toRegExp)
  const exclude = parts.filter((p) => p.startsWith('-')).map((p) => toRegExp(p.slice(1)))
  if (include.length === 0) return undefined
  return (namespace) => !exclude.some((r) => r.test(namespace)) && include.some((r) => r.test(namespace))
}

function errorFields(err: Error): Record<string, unknown> {
  return {
    type: err.name,
    message: err.message,
    ...((err as { code?: unknown }).code ? { code: (err as { code?: unknown }).code } : {}),
  }
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`))
  const state = { level: options.level ?? 'info' }
  const format = options.format ?? 'text'
  const matches = debugMatcher(options.debug ?? process.env.DEBUG)
  const base =
    format === 'json' ? { pid: process.pid, hostname: hostname(), name: options.name ?? 'meshkit' } : {}
  /** The most verbose level a scope writes: its DEBUG pattern can lift it above the logger's level. */
  const ceiling = (scope: string | undefined): number => {
    const namespace = scope?.startsWith('libp2p') ? scope : `meshkit${scope ? `:${scope}` : ''}`
    const lifted = matches?.(namespace) ? (namespace.startsWith('libp2p') ? RANK.trace : RANK.debug) : 0
    return Math.max(RANK[state.level], lifted)
  }
  const make = (scope: string | undefined): Logger => {
    const cached = { for: '' as LogLevel | '', rank: 0 }
    const max = () => {
      // the level can change at any time (a reload); the DEBUG lift of a scope cannot
      if (cached.for !== state.level) {
        cached.for = state.level
        cached.rank = ceiling(scope)
      }
      return cached.rank
    }
    const log =
      (level: Exclude<LogLevel, 'silent'>) =>
      (message: string, ...details: unknown[]) => {
        if (RANK[level] > max()) return
        if (format === 'json') {
          const fields: Record<string, unknown> = {}
          const extra: string[] = []
          for (const d of details) {
            if (d instanceof Error) fields.err = errorFields(d)
            else if (d !== null && typeof d === 'object' && !Array.isArray(d)) Object.assign(fields, d)
            else extra.push(typeof d === 'string' ? d : JSON.stringify(d))
          }
          write(
            JSON.stringify({
              level: PINO_LEVEL[level],
              time: Date.now(),
              ...base,
              ...(scope ? { scope } : {}),
              msg: [message, ...extra].join(' '),
              ...fields,
            }),
          )
          return
        }
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
      enabled: (level) => RANK[level] <= max(),
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
