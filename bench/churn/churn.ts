/**
 * The churn run (see run.ts for what it does and measures), as a function: `npm run bench:churn` runs it
 * at full size, test/resilience-churn.test.ts with a handful of processes.
 */
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { mulberry32, randomSeed } from '../lib/random.js'
import { analyze, type WaveInput, type WaveResult } from './analyze.js'
import {
  loopbackListen,
  MeshProc,
  machineLoad,
  type ProbeSample,
  peerConfig,
  percentile,
  sleep,
  writeConfig,
} from './fleet.js'
import { type Incarnation, Timeline, upsert } from './timeline.js'

export interface ChurnOptions {
  peers: number
  waves: number
  /** A wave's window: from its kill to the next wave's. */
  intervalMs: number
  /** @default 3 */
  bootstraps?: number
  /** @default 0.3 */
  killFraction?: number
  /** @default 3 */
  topics?: number
  /** Peers never killed (their RSS, heap, descriptors and timers are compared). @default 5 */
  sentinels?: number
  /** Peers started at once at the beginning. @default 10 */
  batch?: number
  /** @default 240000 */
  formationTimeoutMs?: number
  /** Pause between formation and the first probe / wave. @default 5000 */
  settleMs?: number
  seed?: number
  /** kad-topics options (addressScope 'all' is always set). */
  kadTopics?: Record<string, unknown>
  /** quic plugin options. */
  quic?: Record<string, unknown>
  /** Extra top-level config fields. */
  config?: Record<string, unknown>
  /** @default ['tcp', 'quic'] */
  transports?: Array<'tcp' | 'quic'>
  /** Peers run peerCache(). @default true */
  peerCache?: boolean
  /**
   * How a victim goes: `kill` (SIGKILL: the kernel closes its TCP connections at once, its QUIC ones go
   * silent) or `freeze` (SIGSTOP: every connection goes silent, as a laptop that sleeps or a phone that
   * changes networks; frozen until the next wave, then SIGKILLed). With `freeze`, a restart runs on a
   * copy of the frozen peer's data dir (same identity, peer cache, datastore), as the same device
   * coming back elsewhere. @default 'kill'
   */
  vanish?: 'kill' | 'freeze'
  /** Where the data dirs go (else a temp dir, removed at the end unless keepDirs). */
  root?: string
  keepDirs?: boolean
  /** Every process's output to `<dumpDir>/<name>.log`. */
  dumpDir?: string
  /** DEBUG for the processes. */
  debug?: string
  log?: (text: string) => void
  /** Called with the cleanup (kill all, remove dirs), e.g. for a SIGINT handler. */
  onCleanup?: (cleanup: () => Promise<void>) => void
}

export interface ChurnOutput {
  waves: WaveResult[]
  details: Record<string, unknown>
  summary: Record<string, number | null>
}

interface Slot {
  name: string
  index: number
  topics: string[]
  sentinel: boolean
  dataDir: string
  generation: number
  proc: MeshProc
  inc: Incarnation
}

export async function runChurn(o: ChurnOptions): Promise<ChurnOutput> {
  const T0 = Date.now()
  const log = o.log ?? (() => {})
  const N = o.peers
  const BOOTSTRAPS = o.bootstraps ?? 3
  const WAVES = o.waves
  const INTERVAL = o.intervalMs
  const KILL_FRACTION = o.killFraction ?? 0.3
  const TOPIC_COUNT = o.topics ?? 3
  const SENTINELS = Math.min(o.sentinels ?? 5, N)
  const BATCH = Math.max(1, o.batch ?? 10)
  const FORMATION_TIMEOUT = o.formationTimeoutMs ?? 240_000
  const KAD = o.kadTopics ?? {}
  const TRANSPORTS = o.transports ?? ['tcp', 'quic']
  const K = typeof KAD.connectionsPerTopic === 'number' ? KAD.connectionsPerTopic : 8
  if (!(N >= 2) || !(WAVES >= 0) || !(KILL_FRACTION > 0 && KILL_FRACTION < 1) || !(TOPIC_COUNT >= 1))
    throw new Error('bad options: peers >= 2, waves >= 0, 0 < killFraction < 1, topics >= 1')
  const SEED = o.seed ?? randomSeed()
  /** a run can be repeated with the same seed */
  const random = mulberry32(SEED)
  const TOPICS = Array.from({ length: TOPIC_COUNT }, (_, i) => `churn-${i}`)
  /** Slot i joins every topic but topic (i mod topics) (with one topic: that one). */
  const topicsOf = (i: number) =>
    TOPIC_COUNT === 1 ? TOPICS : TOPICS.filter((_, t) => t !== i % TOPIC_COUNT)
  /** The plugin list with the experiment's plugin options applied. */
  const configFor = (bootstrap: string[], withCache: boolean) => {
    const config = peerConfig({
      bootstrap,
      kadTopics: KAD,
      peerCache: withCache,
      transports: TRANSPORTS,
      extra: o.config,
    })
    if (o.quic && Object.keys(o.quic).length > 0)
      config.plugins = (config.plugins as unknown[]).map((p) =>
        p === 'quic' ? { plugin: 'quic', options: o.quic } : p,
      )
    return config
  }
  void T0
  const loadBefore = machineLoad()
  log(
    `seed ${SEED}; load ${loadBefore.load1} (${loadBefore.cores} cores); ${N} peers, ${BOOTSTRAPS} bootstrap nodes, ${WAVES} waves every ${INTERVAL} ms, kill ${KILL_FRACTION}`,
  )
  const root = o.root ?? (await mkdtemp(join(tmpdir(), 'meshkit-churn-')))
  if (o.dumpDir) await mkdir(o.dumpDir, { recursive: true })
  const timeline = new Timeline(K)
  const procs = new Set<MeshProc>()
  const spawn = (name: string, cwd: string, dataDir: string, topics: string[]) => {
    const proc = new MeshProc({
      name,
      cwd,
      probe: true,
      dumpFile: o.dumpDir ? join(o.dumpDir, `${name}.log`) : undefined,
      env: o.debug ? { DEBUG: o.debug } : undefined,
      args: [
        '--local',
        '--data-dir',
        dataDir,
        ...loopbackListen(TRANSPORTS),
        ...topics.flatMap((t) => ['--topic', t]),
      ],
    })
    procs.add(proc)
    void proc.exited.then(() => procs.delete(proc))
    return proc
  }
  const cleanup = async () => {
    await Promise.all([...procs].map((p) => p.kill()))
    if (!o.keepDirs) await rm(root, { recursive: true, force: true }).catch(() => {})
  }
  o.onCleanup?.(cleanup)
  try {
    // bootstrap nodes
    const bootDir = join(root, 'boot')
    await mkdir(bootDir, { recursive: true })
    await writeConfig(bootDir, configFor([], false))
    const boots = Array.from({ length: BOOTSTRAPS }, (_, i) => {
      const proc = spawn(`boot${i}`, bootDir, join(bootDir, `boot${i}`), [])
      const inc = timeline.track(proc, `boot${i}`, [], 0, 'bootstrap')
      return { proc, inc }
    })
    await Promise.all(boots.map((b) => b.proc.waitStarted(60_000)))
    const bootstrap = boots.flatMap((b) => b.proc.addresses)
    log(`bootstrap nodes up: ${boots.map((b) => b.proc.peerId).join(', ')}`)

    const peerDir = join(root, 'peers')
    await mkdir(peerDir, { recursive: true })
    await writeConfig(peerDir, configFor(bootstrap, o.peerCache ?? true))

    // a live check of the mesh before any kill: every member's topic view (events only)
    const viewSize = new Map<MeshProc, Map<string, Set<string>>>()
    const watch = (proc: MeshProc) => {
      const views = new Map<string, Set<string>>()
      viewSize.set(proc, views)
      proc.on((l) => {
        if (l.event !== 'topic:peer' && l.event !== 'topic:peer:lost') return
        const topic = String(l.topic)
        const s = upsert(views, topic, () => new Set<string>())
        if (l.event === 'topic:peer') s.add(String(l.peerId))
        else s.delete(String(l.peerId))
      })
    }

    const slots: Slot[] = []
    const startSlot = (index: number, wave: number, kind: Incarnation['kind'], old?: Slot): Slot => {
      const name = `p${index}`
      const generation = old ? old.generation + 1 : 0
      const dataDir =
        kind === 'restart' && old && o.vanish !== 'freeze'
          ? old.dataDir
          : join(peerDir, `${name}-${generation}`)
      const topics = topicsOf(index)
      const proc = spawn(`${name}.${generation}`, peerDir, dataDir, topics)
      watch(proc)
      const inc = timeline.track(proc, name, topics, wave, kind)
      return { name, index, topics, sentinel: index < SENTINELS, dataDir, generation, proc, inc }
    }
    const initialStart = Date.now()
    for (let i = 0; i < N; i += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => startSlot(i + j, 0, 'initial'))
      slots.push(...batch)
      await Promise.all(batch.map((s) => s.proc.waitStarted(120_000)))
    }
    log(`${N} peers started in ${Date.now() - initialStart} ms`)

    const need = (topic: string) => Math.min(K, slots.filter((s) => s.topics.includes(topic)).length - 1)
    const formed = () =>
      slots.every((s) => s.topics.every((t) => (viewSize.get(s.proc)?.get(t)?.size ?? 0) >= need(t)))
    const formationDeadline = Date.now() + FORMATION_TIMEOUT
    while (!formed() && Date.now() < formationDeadline) await sleep(250)
    const formedLive = formed()
    log(
      formedLive
        ? `mesh formed ${Date.now() - initialStart} ms after the first peer's spawn`
        : 'mesh NOT formed before the timeout: waves run anyway',
    )
    await sleep(o.settleMs ?? 5000)

    const survivors = () => [
      ...boots.map((b) => ({ name: b.proc.name, proc: b.proc })),
      ...slots.filter((s) => s.sentinel).map((s) => ({ name: s.name, proc: s.proc })),
    ]
    const probeAll = async () => {
      const out: Record<string, ProbeSample | undefined> = {}
      for (const s of survivors()) out[s.name] = await s.proc.probe()
      return out
    }
    const baseline = await probeAll()
    const series: Array<{ wave: number; samples: Record<string, ProbeSample | undefined> }> = [
      { wave: 0, samples: baseline },
    ]

    const waves: WaveInput[] = []
    const frozen: MeshProc[] = []
    for (let w = 1; w <= WAVES; w++) {
      const candidates = slots.filter((s) => !s.sentinel)
      const count = Math.min(candidates.length, Math.round(KILL_FRACTION * N))
      for (let i = candidates.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[candidates[i], candidates[j]] = [candidates[j], candidates[i]]
      }
      const victims = candidates.slice(0, count)
      // the previous wave's frozen peers go for good now (their window is over)
      await Promise.all(frozen.splice(0).map((p) => p.kill()))
      const killAt = Date.now()
      for (const v of victims) {
        v.proc.killedAt = killAt
        timeline.died(v.inc, killAt)
        v.proc.child.kill(o.vanish === 'freeze' ? 'SIGSTOP' : 'SIGKILL')
      }
      if (o.vanish === 'freeze') frozen.push(...victims.map((v) => v.proc))
      else await Promise.all(victims.map((v) => v.proc.kill()))
      const replacements: Incarnation[] = []
      for (const [i, v] of victims.entries()) {
        const kind = i % 2 === 0 ? 'restart' : 'new'
        // the same device back elsewhere: its data as it was when it froze (not the lock or control files)
        if (kind === 'restart' && o.vanish === 'freeze')
          await cp(v.dataDir, join(peerDir, `${v.name}-${v.generation + 1}`), {
            recursive: true,
            filter: (src) => !/(node\.lock|control\.(json|token))[^/]*$/.test(src),
          })
        const next = startSlot(v.index, w, kind, v)
        slots[slots.indexOf(v)] = next
        replacements.push(next.inc)
        if (kind === 'new' && o.vanish !== 'freeze')
          void rm(v.dataDir, { recursive: true, force: true }).catch(() => {})
      }
      waves.push({ wave: w, killAt, victims: victims.map((v) => v.inc), replacements })
      log(
        `wave ${w}: killed ${victims.length} (${victims.map((v) => v.name).join(' ')}); replacements spawned`,
      )
      const windowEnd = killAt + INTERVAL
      await Promise.all(
        slots.map((s) => s.proc.waitStarted(Math.max(1000, windowEnd - Date.now())).catch(() => {})),
      )
      const healedAt = Date.now()
      while (!formed() && Date.now() < windowEnd - 2000) await sleep(100)
      log(
        `wave ${w}: all started after ${healedAt - killAt} ms; topic views full (dead peers may still count) after ${Date.now() - killAt} ms`,
      )
      await sleep(Math.max(0, windowEnd - 1500 - Date.now()))
      series.push({ wave: w, samples: await probeAll() })
      await sleep(Math.max(0, windowEnd - Date.now()))
    }
    const end = Date.now()
    const final = series.at(-1)!.samples
    const loadAfter = machineLoad()
    if (o.dumpDir)
      await writeFile(
        join(o.dumpDir, 'waves.json'),
        JSON.stringify(
          waves.map((w) => ({
            wave: w.wave,
            killAt: w.killAt,
            victims: w.victims.map((i) => ({ slot: i.slot, peerId: i.peerId })),
            replacements: w.replacements.map((i) => ({ slot: i.slot, peerId: i.peerId, kind: i.kind })),
          })),
        ),
      )
    log('stopping')
    await Promise.all(frozen.splice(0).map((p) => p.kill()))
    await Promise.all([...procs].map((p) => p.stop(10_000)))

    const result = analyze(
      timeline,
      TOPICS,
      slots.length ? timeline.incarnations.filter((i) => i.kind === 'initial') : [],
      waves,
      end,
    )
    const growth = survivors().map((s) => {
      const a = baseline[s.name]
      const b = final[s.name]
      return {
        name: s.name,
        rss_mb: a && b ? round1(b.rssMb - a.rssMb) : null,
        rss_pct: a && b ? round1(((b.rssMb - a.rssMb) / a.rssMb) * 100) : null,
        heap_mb: a && b ? round1(b.heapUsedMb - a.heapUsedMb) : null,
        fds: a && b ? b.fds - a.fds : null,
        timers: a && b ? b.timers - a.timers : null,
        handles: a && b ? b.handles - a.handles : null,
        before: a
          ? { rss: a.rssMb, heap: a.heapUsedMb, fds: a.fds, timers: a.timers, handles: a.handles }
          : null,
        after: b
          ? { rss: b.rssMb, heap: b.heapUsedMb, fds: b.fds, timers: b.timers, handles: b.handles }
          : null,
      }
    })
    const num = (xs: Array<number | null>) => xs.filter((x): x is number => typeof x === 'number')
    const details = {
      seed: SEED,
      formation_ms: result.formation_ms,
      formed_before_waves: formedLive,
      satisfied_fraction_all_samples: result.satisfied_fraction_all,
      stale_censored: result.stale_censored,
      survivors: growth,
      series: series.map((s) => ({
        wave: s.wave,
        rss: Object.fromEntries(Object.entries(s.samples).map(([k, v]) => [k, v?.rssMb])),
        heap: Object.fromEntries(Object.entries(s.samples).map(([k, v]) => [k, v?.heapUsedMb])),
        fds: Object.fromEntries(Object.entries(s.samples).map(([k, v]) => [k, v?.fds])),
      })),
      timeline_records: timeline.records,
    }
    const heals = result.waves.map((w) => w.heal_ms ?? w.window_ms)
    const survivorHeals = result.waves.map((w) => w.survivors_heal_ms ?? w.window_ms)
    const joins = result.waves.flatMap((w) =>
      w.replacement_join_ms.max === null ? [] : [w.replacement_join_ms.max],
    )
    const rssGrowth = num(growth.map((g) => g.rss_mb))
    const rssPct = num(growth.map((g) => g.rss_pct))
    const fdGrowth = num(growth.map((g) => g.fds))
    const timerGrowth = num(growth.map((g) => g.timers))
    const heapGrowth = num(growth.map((g) => g.heap_mb))
    const summary = {
      heal_p50_ms: percentile(heals, 50),
      heal_p99_ms: percentile(heals, 99),
      satisfied_fraction: result.satisfied_fraction,
      stale_p99_ms: percentile(result.stale_all_ms, 99),
      survivor_rss_growth_mb: percentile(rssGrowth, 50),
      survivor_fd_growth: Math.max(...fdGrowth),
      waves: WAVES,
      peers: N,
      unhealed_waves: result.waves.filter((w) => w.heal_ms === null).length,
      survivors_heal_p50_ms: percentile(survivorHeals, 50),
      survivors_heal_p99_ms: percentile(survivorHeals, 99),
      replacement_join_max_p50_ms: percentile(joins, 50),
      stale_p50_ms: percentile(result.stale_all_ms, 50),
      satisfied_fraction_all: result.satisfied_fraction_all,
      formation_ms: result.formation_ms,
      survivor_rss_growth_max_mb: Math.max(...rssGrowth),
      survivor_rss_growth_max_pct: Math.max(...rssPct),
      survivor_heap_growth_max_mb: Math.max(...heapGrowth),
      survivor_timer_growth_max: Math.max(...timerGrowth),
      bootstraps: BOOTSTRAPS,
      kill_fraction: KILL_FRACTION,
      interval_ms: INTERVAL,
      k: K,
      load_before: loadBefore.load1,
      load_after: loadAfter.load1,
      cores: loadBefore.cores,
    }
    return { waves: result.waves, details, summary }
  } finally {
    await cleanup()
  }
}

const round1 = (n: number) => Math.round(n * 10) / 10
