/**
 * Churn benchmark (issue 12): a loopback mesh of real `mesh start` processes in which, wave after wave,
 * a fraction of the peers is SIGKILLed (no goodbye) and replaced: half restarted on their old data dir
 * (same identity, peer cache, datastore), half as new identities.
 *
 *   npm run bench:churn [-- --peers 50 --waves 10 --interval 40s --kill-fraction 0.3 ...]
 *
 * Setup: `--bootstraps` (3) bootstrap nodes (kad-topics, no topics: rendezvous points), then `--peers`
 * (50) peers started `--batch` (10) at a time, each `mesh start --local --json` with a mesh.config.json of
 * the default plugins (TCP + QUIC, noise, yamux, identify, ping, kadTopics) plus peerCache() and
 * staticPeers(bootstrap nodes). Topics: `--topics` (3) topics, each peer in all but one of them (3
 * topics: every peer in 2, every topic has 2/3 of the peers). The first `--sentinels` (5) peers and the
 * bootstrap nodes are never killed: they are the survivors whose RSS, heap, descriptors and timers are
 * compared before the first wave and after the last (the probe: a full GC first, see probe.ts).
 *
 * Per wave: round(kill fraction x peers) victims at random among the other peers, SIGKILLed at once; their
 * replacements spawned right after (the same slots, so the same topics). The wave's window lasts
 * `--interval`; then the next wave. Measured from every process's own `--json` lines (timeline.ts):
 *   heal_ms            kill -> every live member of every topic has min(k, members - 1) live topic peers
 *                      (k = connectionsPerTopic; replacements count from their topic:joined, and heal
 *                      needs all of them joined). A live topic peer: in the topic view, with an open
 *                      connection to that peer's current live process.
 *   survivors_heal_ms  the same over the members that were there before the kill
 *   stale_ms           how long a survivor kept showing a dead process after the kill: a connection of it
 *                      (`mesh peers`) or its id in a topic view without a live connection
 *   satisfied_fraction sampled moments (every 250 ms) with every live member satisfied, outside heal
 *                      windows (formation to the end)
 *
 * Output: stdout one JSON line per wave, a `details` line (formation, survivors' samples), and last
 * `{"summary": {heal_p50_ms, heal_p99_ms, satisfied_fraction, stale_p99_ms, survivor_rss_growth_mb,
 * survivor_fd_growth, waves, peers, ...}}`. Progress on stderr. The machine's load is in the summary:
 * 53 processes on 2 cores is heavy; measure on a quiet machine.
 *
 * Options: --peers N --bootstraps N --waves N --interval 40s --kill-fraction 0.3 --topics 3
 * --sentinels 5 --batch 10 --formation-timeout 240s --seed N --keep-dirs, and for experiments
 * --kad '<json kad-topics options>' --quic '<json quic options>' --config '<json extra config fields>'
 * --transports tcp,quic --no-peer-cache; --vanish freeze (SIGSTOP instead of SIGKILL: no connection is
 * closed by the kernel, as a laptop going to sleep; see churn.ts); --dump-dir <dir> (every process's
 * output), --debug <DEBUG pattern>; MESHKIT_BENCH_CLI=<main.js> runs another build's CLI.
 */
import { parseArgs } from 'node:util'
import { parseDuration } from 'meshkit'
import { runChurn } from './churn.js'

const { values: opt } = parseArgs({
  options: {
    peers: { type: 'string', default: '50' },
    bootstraps: { type: 'string', default: '3' },
    waves: { type: 'string', default: '10' },
    interval: { type: 'string', default: '40s' },
    'kill-fraction': { type: 'string', default: '0.3' },
    topics: { type: 'string', default: '3' },
    sentinels: { type: 'string', default: '5' },
    batch: { type: 'string', default: '10' },
    'formation-timeout': { type: 'string', default: '240s' },
    seed: { type: 'string' },
    'keep-dirs': { type: 'boolean', default: false },
    kad: { type: 'string', default: '{}' },
    quic: { type: 'string', default: '{}' },
    config: { type: 'string', default: '{}' },
    transports: { type: 'string', default: 'tcp,quic' },
    'no-peer-cache': { type: 'boolean', default: false },
    'dump-dir': { type: 'string' },
    debug: { type: 'string' },
    vanish: { type: 'string', default: 'kill' },
  },
})

/** A duration option ('40s', '500ms', a number of ms); throws with the option's name when it is not one. */
function duration(name: string, value: string | undefined): number {
  const ms = parseDuration(/^\d+$/.test(value ?? '') ? Number(value) : value)
  if (ms === undefined) throw new Error(`--${name}: not a duration (${value}); e.g. 40s, 500ms, 2m`)
  return ms
}

const T0 = Date.now()
const log = (text: string) =>
  process.stderr.write(`[churn +${((Date.now() - T0) / 1000).toFixed(1)}s] ${text}\n`)

async function main(): Promise<void> {
  const out = await runChurn({
    peers: Number(opt.peers),
    bootstraps: Number(opt.bootstraps),
    waves: Number(opt.waves),
    intervalMs: duration('interval', opt.interval),
    killFraction: Number(opt['kill-fraction']),
    topics: Number(opt.topics),
    sentinels: Number(opt.sentinels),
    batch: Number(opt.batch),
    formationTimeoutMs: duration('formation-timeout', opt['formation-timeout']),
    seed: opt.seed === undefined ? undefined : Number(opt.seed),
    keepDirs: opt['keep-dirs'],
    kadTopics: JSON.parse(opt.kad!),
    quic: JSON.parse(opt.quic!),
    config: JSON.parse(opt.config!),
    transports: opt.transports!.split(',').map((t) => t.trim()) as Array<'tcp' | 'quic'>,
    peerCache: !opt['no-peer-cache'],
    dumpDir: opt['dump-dir'],
    debug: opt.debug,
    vanish: opt.vanish === 'freeze' ? 'freeze' : 'kill',
    log,
    onCleanup: (cleanup) => process.once('SIGINT', () => void cleanup().then(() => process.exit(130))),
  })
  for (const w of out.waves) process.stdout.write(`${JSON.stringify(w)}\n`)
  process.stdout.write(`${JSON.stringify({ details: out.details })}\n`)
  process.stdout.write(`${JSON.stringify({ summary: out.summary })}\n`)
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`)
  process.exit(1)
})
