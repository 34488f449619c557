/**
 * Soak benchmark (issue 12): one node in a loopback mesh with steady churn, sampled for a long time.
 *
 *   npm run bench:soak [-- --duration 30m --peers 12 --churn-every 20s --sample-every 10s --warmup 3m]
 *
 * The subject is a `mesh start` process (default plugins + peerCache, two topics) that is never killed;
 * around it `--bootstraps` (1) bootstrap node and `--peers` (12) peers (each in one or both topics) of
 * which one, picked at random, is SIGKILLed every `--churn-every` and replaced at once (alternately on
 * its old data dir and as a new identity). Every `--sample-every` the subject's probe (bench/churn/
 * probe.ts) gives RSS, heap after a full GC, open descriptors, active timers and handles, and the
 * event-loop delay since the previous sample.
 *
 * Output: stdout one JSON line per sample, then last `{"summary": {...}}` with, after `--warmup`, the
 * least-squares slope per hour of RSS, heap, descriptors, timers and handles (and their first/last
 * values), the event-loop delay (median of the samples' p99, the worst max), the subject's topic peers
 * at each sample (min), the churn done and the machine's load. Goal: heap slope < 5 MB/h after warm-up.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseDuration } from 'meshkit'
import {
  loopbackListen,
  MeshProc,
  machineLoad,
  type ProbeSample,
  peerConfig,
  percentile,
  sleep,
  writeConfig,
} from '../churn/fleet.js'
import { mulberry32, randomSeed } from '../lib/random.js'

const { values: opt } = parseArgs({
  options: {
    duration: { type: 'string', default: '30m' },
    peers: { type: 'string', default: '12' },
    bootstraps: { type: 'string', default: '1' },
    'churn-every': { type: 'string', default: '20s' },
    'sample-every': { type: 'string', default: '10s' },
    warmup: { type: 'string', default: '3m' },
    seed: { type: 'string' },
    'keep-dirs': { type: 'boolean', default: false },
  },
})

function duration(name: string, value: string | undefined): number {
  const ms = parseDuration(/^\d+$/.test(value ?? '') ? Number(value) : value)
  if (ms === undefined) throw new Error(`--${name}: not a duration (${value}); e.g. 30m, 20s`)
  return ms
}

const DURATION = duration('duration', opt.duration)
const CHURN_EVERY = duration('churn-every', opt['churn-every'])
const SAMPLE_EVERY = duration('sample-every', opt['sample-every'])
const WARMUP = duration('warmup', opt.warmup)
const PEERS = Number(opt.peers)
const BOOTSTRAPS = Number(opt.bootstraps)
const TOPICS = ['soak-a', 'soak-b']
const T0 = Date.now()
const log = (text: string) =>
  process.stderr.write(`[soak +${((Date.now() - T0) / 1000).toFixed(0)}s] ${text}\n`)

const seed = opt.seed ? Number(opt.seed) : randomSeed()
const random = mulberry32(seed)

/** Least-squares slope of (t ms, v) per hour; NaN with fewer than 2 points. */
export function slopePerHour(points: ReadonlyArray<[number, number]>): number {
  if (points.length < 2) return Number.NaN
  const n = points.length
  const mt = points.reduce((a, [t]) => a + t, 0) / n
  const mv = points.reduce((a, [, v]) => a + v, 0) / n
  let num = 0
  let den = 0
  for (const [t, v] of points) {
    num += (t - mt) * (v - mv)
    den += (t - mt) ** 2
  }
  return den === 0 ? Number.NaN : (num / den) * 3_600_000
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'meshkit-soak-'))
  const procs = new Set<MeshProc>()
  const spawn = (name: string, cwd: string, dataDir: string, topics: string[], probe = false) => {
    const p = new MeshProc({
      name,
      cwd,
      probe,
      args: [
        '--local',
        '--data-dir',
        dataDir,
        ...loopbackListen(['tcp', 'quic']),
        ...topics.flatMap((t) => ['--topic', t]),
      ],
    })
    procs.add(p)
    void p.exited.then(() => procs.delete(p))
    return p
  }
  const cleanup = async () => {
    await Promise.all([...procs].map((p) => p.kill()))
    if (!opt['keep-dirs']) await rm(root, { recursive: true, force: true }).catch(() => {})
  }
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)))
  const loadBefore = machineLoad()
  log(`load ${loadBefore.load1}; ${DURATION / 60_000} min, ${PEERS} peers, churn every ${CHURN_EVERY} ms`)
  try {
    const bootDir = join(root, 'boot')
    await mkdir(bootDir, { recursive: true })
    await writeConfig(bootDir, peerConfig({ bootstrap: [], peerCache: false }))
    const boots = Array.from({ length: BOOTSTRAPS }, (_, i) =>
      spawn(`boot${i}`, bootDir, join(bootDir, `b${i}`), []),
    )
    await Promise.all(boots.map((b) => b.waitStarted(60_000)))
    const peerDir = join(root, 'peers')
    await mkdir(peerDir, { recursive: true })
    await writeConfig(peerDir, peerConfig({ bootstrap: boots.flatMap((b) => b.addresses) }))

    // the subject: its topic view from its own lines
    const subject = spawn('subject', peerDir, join(peerDir, 'subject'), TOPICS, true)
    const view = new Map<string, Set<string>>(TOPICS.map((t) => [t, new Set<string>()]))
    subject.on((l) => {
      if (l.event === 'topic:peer') view.get(String(l.topic))?.add(String(l.peerId))
      if (l.event === 'topic:peer:lost') view.get(String(l.topic))?.delete(String(l.peerId))
    })
    await subject.waitStarted(60_000)

    const topicsOf = (i: number) => (i % 3 === 0 ? TOPICS : [TOPICS[i % 2]])
    const slots = Array.from({ length: PEERS }, (_, i) => ({
      i,
      gen: 0,
      dataDir: join(peerDir, `p${i}-0`),
      proc: spawn(`p${i}.0`, peerDir, join(peerDir, `p${i}-0`), topicsOf(i)),
    }))
    await Promise.all(slots.map((s) => s.proc.waitStarted(120_000)))
    log('mesh up; sampling')

    const samples: Array<ProbeSample & { topicPeers: number }> = []
    let kills = 0
    const start = Date.now()
    let nextChurn = start + CHURN_EVERY
    let nextSample = start
    while (Date.now() - start < DURATION) {
      const now = Date.now()
      if (now >= nextSample) {
        nextSample += SAMPLE_EVERY
        const s = await subject.probe()
        if (!s) throw new Error(`the subject did not answer a probe\n${subject.describe()}`)
        const topicPeers = Math.min(...TOPICS.map((t) => view.get(t)!.size))
        const line = { ...s, topicPeers, t: s.time - start, kills }
        samples.push(line)
        process.stdout.write(`${JSON.stringify(line)}\n`)
      }
      if (now >= nextChurn) {
        nextChurn += CHURN_EVERY
        const slot = slots[Math.floor(random() * slots.length)]
        await slot.proc.kill()
        kills++
        slot.gen++
        const restart = slot.gen % 2 === 1
        if (!restart) {
          void rm(slot.dataDir, { recursive: true, force: true }).catch(() => {})
          slot.dataDir = join(peerDir, `p${slot.i}-${slot.gen}`)
        }
        slot.proc = spawn(`p${slot.i}.${slot.gen}`, peerDir, slot.dataDir, topicsOf(slot.i))
      }
      await sleep(Math.max(10, Math.min(nextSample, nextChurn) - Date.now()))
    }
    const after = samples.filter((s) => s.time - start >= WARMUP)
    const series = (pick: (s: ProbeSample) => number) =>
      after.map((s) => [s.time - start, pick(s)] as [number, number])
    const trend = (pick: (s: ProbeSample) => number, d = 2) => ({
      slope_per_h: round(slopePerHour(series(pick)), d),
      first: after.length ? pick(after[0]) : null,
      last: after.length ? pick(after[after.length - 1]) : null,
    })
    const loadAfter = machineLoad()
    const summary = {
      heap_slope_mb_per_h: round(slopePerHour(series((s) => s.heapUsedMb))),
      rss_slope_mb_per_h: round(slopePerHour(series((s) => s.rssMb))),
      fd_slope_per_h: round(slopePerHour(series((s) => s.fds))),
      timer_slope_per_h: round(slopePerHour(series((s) => s.timers))),
      heap_mb: trend((s) => s.heapUsedMb),
      rss_mb: trend((s) => s.rssMb, 1),
      fds: trend((s) => s.fds, 1),
      timers: trend((s) => s.timers, 1),
      handles: trend((s) => s.handles, 1),
      eld_p99_median_ms: percentile(
        after.map((s) => s.eldP99Ms),
        50,
      ),
      eld_max_ms: Math.max(...after.map((s) => s.eldMaxMs)),
      topic_peers_min_after_warmup: Math.min(...after.map((s) => s.topicPeers)),
      duration_ms: Date.now() - start,
      warmup_ms: WARMUP,
      samples: samples.length,
      samples_after_warmup: after.length,
      kills,
      peers: PEERS,
      churn_every_ms: CHURN_EVERY,
      cpu_s: samples.length
        ? round((samples.at(-1)!.cpuUserMs + samples.at(-1)!.cpuSystemMs) / 1000, 1)
        : null,
      load_before: loadBefore.load1,
      load_after: loadAfter.load1,
      cores: loadBefore.cores,
    }
    process.stdout.write(`${JSON.stringify({ summary })}\n`)
  } finally {
    await cleanup()
  }
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`)
  process.exit(1)
})
