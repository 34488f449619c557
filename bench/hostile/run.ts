/**
 * `npm run bench:hostile -- [--duration 60] [--idle 30] [--attacks all|name,name] [--intensity 1]
 * [--parallel 3] [--slice <s>] [--without plugin,plugin] [--list]`: one hostile-peer run against a `mesh start` node with every built-in
 * plugin (see test/hostile). Prints one JSON line per phase (start, baseline, attack, idle), then
 * `{"summary": {...}}`. The acceptance: survived, idle_cpu_pct < 2, rss_ratio <= 1.3,
 * background_dials_after 0, log_lines a few hundred at most.
 */
import { parseArgs } from 'node:util'
import { ALL_PLUGIN_NAMES, ATTACKS, allPlugins, runHostile } from '../../test/hostile/index.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '60' },
    idle: { type: 'string', default: '30' },
    attacks: { type: 'string', default: 'all' },
    intensity: { type: 'string', default: '1' },
    parallel: { type: 'string', default: '3' },
    slice: { type: 'string' },
    without: { type: 'string', default: '' },
    list: { type: 'boolean', default: false },
  },
})

if (values.list) {
  for (const a of ATTACKS) process.stdout.write(`${a.attackName}\t${a.description}\n`)
  process.exit(0)
}

const seconds = (name: string, v: string | undefined) => {
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`--${name} takes a number of seconds (got ${v})\n`)
    process.exit(2)
  }
  return n * 1000
}

const without = values.without
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0)
const unknownPlugins = without.filter((p) => !ALL_PLUGIN_NAMES.includes(p))
if (unknownPlugins.length > 0) {
  process.stderr.write(
    `--without: unknown plugin(s) ${unknownPlugins.join(', ')}; the target runs ${ALL_PLUGIN_NAMES.join(', ')}\n`,
  )
  process.exit(2)
}

const result = await runHostile({
  target: {
    plugins: (ports) =>
      allPlugins(ports).filter((p) => !without.includes(typeof p === 'string' ? p : p.plugin)),
  },
  durationMs: seconds('duration', values.duration),
  idleMs: seconds('idle', values.idle),
  attacks:
    values.attacks === 'all'
      ? 'all'
      : values.attacks
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0),
  intensity: Number(values.intensity),
  parallel: Number(values.parallel),
  sliceMs: values.slice === undefined ? undefined : seconds('slice', values.slice),
  onPhase: (phase) => process.stdout.write(`${JSON.stringify(phase)}\n`),
})
process.stdout.write(`${JSON.stringify({ summary: result.summary })}\n`)
// hostile peers' sockets may linger a moment; the run is over
process.exit(0)
