/** The longest duration a Node.js timer can wait (2^31 - 1 ms, about 24.8 days). */
export const MAX_DURATION_MS = 2_147_483_647

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/

/** Parses a duration (ms number or `'5s'`-style string) to milliseconds; undefined when malformed or negative. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  const match = PATTERN.exec(value.trim())
  if (!match) return undefined
  return Math.round(Number(match[1]) * UNITS[match[2]])
}

const UNIT_ALIASES: Record<string, string> = {
  msec: 'ms',
  msecs: 'ms',
  millis: 'ms',
  millisecond: 'ms',
  milliseconds: 'ms',
  sec: 's',
  secs: 's',
  second: 's',
  seconds: 's',
  min: 'm',
  mins: 'm',
  minute: 'm',
  minutes: 'm',
  hr: 'h',
  hrs: 'h',
  hour: 'h',
  hours: 'h',
}

/** For a near-miss such as `'5 seconds'`, `'2min'` or `'5000'`, the duration string that was meant. */
export function suggestDuration(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim())
  if (!match) return undefined
  const unit = match[2].toLowerCase()
  if (unit === '') return `${match[1]}ms`
  const known = Object.hasOwn(UNITS, unit)
    ? unit
    : Object.hasOwn(UNIT_ALIASES, unit)
      ? UNIT_ALIASES[unit]
      : undefined
  return known ? `${match[1]}${known}` : undefined
}
