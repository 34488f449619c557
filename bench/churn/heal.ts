/**
 * Heal timeline (issue 12): one small wave, seen from every survivor. A bootstrap node (no topic) and
 * `peers` (11) `mesh start` processes in one topic (k = 8) form a mesh; then `kill` (3) of them are
 * SIGKILLed at once, and every survivor's own `--json` lines tell, on one clock (ms after the kill):
 *
 *   closes    each connection to a dead peer: when it closed and its transport (tcp / quic), and how
 *             (`reset`: a TCP connection closed within 1 s, by the reset of the dead peer's kernel; `ping`:
 *             libp2p's connection monitor aborted it, seen in its log line; `idle`: otherwise, the QUIC
 *             idle timeout)
 *   left      when each dead peer left its topic view, and the reason
 *   added     topic peers it added after the kill
 *   healed    when it had min(k, live members - 1) live topic peers again (in its view, with an open
 *             connection, alive)
 *
 * Then a fresh node (new identity) joins the healed mesh: spawn -> started -> each topic peer, with its
 * connection opens (outbound = its own dials), so what paces its k-th topic peer shows.
 *
 *   node dist/bench/churn/heal.js [--runs 3 --peers 11 --kill 3 --k 8 --transports tcp,quic
 *     --quic '{"maxIdleTimeout":30000}' --kad '{}' --config '{}' --timeline --dump-dir dir]
 *
 * Output: per run one JSON line (summary + per-survivor timelines with --timeline), then the medians over
 * runs. Heavy (peers + 2 processes): run it under `flock /tmp/meshkit-heavy.lock`.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { mulberry32, randomSeed } from '../lib/random.js'
import {
  loopbackListen,
  type MeshLine,
  MeshProc,
  machineLoad,
  peerConfig,
  percentile,
  sleep,
  writeConfig,
} from './fleet.js'

export interface HealOptions {
  peers: number
  kill: number
  k: number
  transports: Array<'tcp' | 'quic'>
  quic?: Record<string, unknown>
  kadTopics?: Record<string, unknown>
  config?: Record<string, unknown>
  /** How long after the kill survivors are watched. @default 25000 */
  windowMs?: number
  /** How long the newcomer is watched. @default 30000 */
  joinWindowMs?: number
  /**
   * When the newcomer is spawned: this many ms after the kill (the mesh may not have healed; members
   * still pass on the dead), or (undefined) once every survivor healed.
   */
  joinDelayMs?: number
  seed?: number
  dumpDir?: string
  log?: (text: string) => void
}

/** What one process saw (its own lines, its own clock = the machine's). */
class View {
  readonly conns = new Map<string, { peer: string; transport: string; direction: string; at: number }>()
  readonly topic = new Set<string>()
  readonly lines: MeshLine[] = []
  readonly monitorAborts: number[] = []

  constructor(readonly proc: MeshProc) {
    proc.on((l) => {
      this.lines.push(l)
      const t = typeof l.time === 'number' ? l.time : Date.now()
      if (l.event === 'connection:open')
        this.conns.set(String(l.connectionId), {
          peer: String(l.peerId),
          transport: /\/quic/.test(String(l.remoteAddr ?? l.address ?? '')) ? 'quic' : 'tcp',
          direction: String(l.direction),
          at: t,
        })
      else if (l.event === 'connection:close') this.conns.delete(String(l.connectionId))
      else if (l.event === 'topic:peer') this.topic.add(String(l.peerId))
      else if (l.event === 'topic:peer:lost') this.topic.delete(String(l.peerId))
    })
    // libp2p's connection monitor logs its aborts (DEBUG=libp2p:connection-monitor*, on stderr)
    proc.child.stderr?.on('data', (chunk: Buffer | string) => {
      const text = String(chunk)
      let i = text.indexOf('aborting connection due to ping failure')
      while (i >= 0) {
        this.monitorAborts.push(Date.now())
        i = text.indexOf('aborting connection due to ping failure', i + 1)
      }
    })
  }

  /** Open connections to `peer`. */
  linked(peer: string): boolean {
    for (const c of this.conns.values()) if (c.peer === peer) return true
    return false
  }
}

export interface SurvivorTimeline {
  name: string
  closes: Array<{ dead: string; transport: string; ms: number; how: 'reset' | 'ping' | 'idle' }>
  /** Connections to dead peers still open at the end of the window. */
  open_at_end: number
  left: Array<{ dead: string; ms: number; reason: string }>
  /** Dead peers still in its view at the end of the window. */
  in_view_at_end: number
  added: Array<{ ms: number; direction: string }>
  healed_ms: number | null
}

export interface HealRun {
  load: number
  formation_ms: number | null
  /** Every survivor healed (ms after the kill). */
  heal_ms: number | null
  heal_p50_ms: number | null
  /** Every dead peer gone from every survivor's view and connections. */
  stale_max_ms: number | null
  stale_p50_ms: number | null
  closes_by_how: Record<string, number>
  /**
   * Connections closed while both ends were alive (from formation to the end of the window, every
   * process, by transport): what a too short idle timeout would add to.
   */
  live_closes: Record<string, number>
  /** Connections libp2p's connection monitor aborted (its log lines, every survivor and the bootstrap node). */
  monitor_aborts: number
  newcomer: {
    start_ms: number | null
    first_peer_ms: number | null
    k_peers_ms: number | null
    target: number
    /** ms after `started` of each topic peer, in order. */
    peers_ms: number[]
    /** ms after `started` of each failed dial of a topic member (kad-topics' debug lines). */
    failed_dials_ms: number[]
    /** ms after `started` of each outbound / inbound connection open. */
    outbound_ms: number[]
    inbound_ms: number[]
  }
  survivors?: SurvivorTimeline[]
}

export async function runHeal(o: HealOptions): Promise<HealRun> {
  const log = o.log ?? (() => {})
  const TOPIC = 'heal'
  const windowMs = o.windowMs ?? 25_000
  const root = await mkdtemp(join(tmpdir(), 'meshkit-heal-'))
  if (o.dumpDir) await mkdir(o.dumpDir, { recursive: true })
  const procs: MeshProc[] = []
  const debug = 'libp2p:connection-monitor*'
  const spawn = (name: string, cwd: string, topic: boolean, extraDebug = '') => {
    const proc = new MeshProc({
      name,
      cwd,
      env: { DEBUG: `${debug}${extraDebug}` },
      dumpFile: o.dumpDir ? join(o.dumpDir, `${name}.log`) : undefined,
      args: [
        '--local',
        '--data-dir',
        join(cwd, name),
        ...loopbackListen(o.transports),
        ...(topic ? ['--topic', TOPIC] : []),
      ],
    })
    procs.push(proc)
    return proc
  }
  const config = (bootstrap: string[]) => {
    const c = peerConfig({
      bootstrap,
      kadTopics: { connectionsPerTopic: o.k, ...o.kadTopics },
      peerCache: false,
      transports: o.transports,
      extra: o.config,
    })
    if (o.quic && Object.keys(o.quic).length > 0)
      c.plugins = (c.plugins as unknown[]).map((p) =>
        p === 'quic' ? { plugin: 'quic', options: o.quic } : p,
      )
    return c
  }
  const seed = o.seed ?? randomSeed()
  const random = mulberry32(seed)
  try {
    const bootDir = join(root, 'boot')
    await mkdir(bootDir, { recursive: true })
    await writeConfig(bootDir, config([]))
    const boot = spawn('boot', bootDir, false)
    const bootView = new View(boot)
    await boot.waitStarted(60_000)
    const peerDir = join(root, 'peers')
    await mkdir(peerDir, { recursive: true })
    await writeConfig(peerDir, config(boot.addresses))
    const t0 = Date.now()
    const peers = Array.from({ length: o.peers }, (_, i) => spawn(`p${i}`, peerDir, true))
    const views = peers.map((p) => new View(p))
    await Promise.all(peers.map((p) => p.waitStarted(120_000)))
    const need = (n: number) => Math.min(o.k, n - 1)
    const liveCount = (v: View, dead: Set<string>) => {
      let n = 0
      for (const p of v.topic) if (!dead.has(p) && v.linked(p)) n++
      return n
    }
    const formed = () => views.every((v) => liveCount(v, new Set()) >= need(peers.length))
    const deadline = Date.now() + 90_000
    while (!formed() && Date.now() < deadline) await sleep(100)
    const formation = formed() ? Date.now() - t0 : null
    log(`formed: ${formation} ms`)
    await sleep(3000)

    // the kill
    const order = peers.map((_, i) => i)
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1))
      ;[order[i], order[j]] = [order[j], order[i]]
    }
    const victims = order.slice(0, o.kill).map((i) => peers[i])
    const dead = new Set(victims.map((v) => v.peerId!))
    const survivors = views.filter((v) => !dead.has(v.proc.peerId!))
    // each survivor's connections to the dead at the kill
    const before = survivors.map((v) => new Map(v.conns))
    const killAt = Date.now()
    for (const v of victims) v.child.kill('SIGKILL')
    await Promise.all(victims.map((v) => v.kill()))
    log(`killed ${victims.map((v) => v.name).join(' ')}`)
    const target = need(peers.length - o.kill)
    const healedAt = new Map<View, number>()
    const staleDone = new Map<string, number>() // `${survivor}|${dead}` -> ms
    const end = killAt + windowMs
    // closes between live processes, counted over the whole run (the dead: closes after their kill)
    const liveCloses: Record<string, number> = {}
    const countLive = (v: View, until: number) => {
      const opened = new Map<string, string>()
      for (const l of v.lines) {
        const t = (l.time as number) ?? 0
        if (t > until) break
        if (l.event === 'connection:open') opened.set(String(l.connectionId), String(l.transport))
        else if (l.event === 'connection:close') {
          const transport = opened.get(String(l.connectionId)) ?? '?'
          if (dead.has(String(l.peerId)) && t >= killAt) continue
          liveCloses[transport] = (liveCloses[transport] ?? 0) + 1
        }
      }
    }
    // the newcomer, early: spawned while survivors heal
    const startNewcomer = () => {
      const nc = spawn('newcomer', peerDir, true, ',meshkit:kad-topics')
      const view = new View(nc)
      const failedDials: number[] = []
      nc.child.stderr?.on('data', (chunk: Buffer | string) => {
        for (const _ of String(chunk).matchAll(/dialling topic member \S+ failed/g))
          failedDials.push(Date.now())
      })
      return { nc, ncView: view, failedDials }
    }
    let early: Promise<ReturnType<typeof startNewcomer>> | undefined
    if (o.joinDelayMs !== undefined) early = sleep(o.joinDelayMs).then(startNewcomer)
    while (Date.now() < end) {
      const now = Date.now()
      for (const v of survivors) {
        if (!healedAt.has(v) && liveCount(v, dead) >= target) healedAt.set(v, now - killAt)
        for (const d of dead) {
          const key = `${v.proc.name}|${d}`
          if (!staleDone.has(key) && !v.linked(d) && !v.topic.has(d)) staleDone.set(key, now - killAt)
        }
      }
      if (healedAt.size === survivors.length && staleDone.size === survivors.length * dead.size) break
      await sleep(50)
    }
    const timelines: SurvivorTimeline[] = survivors.map((v, i) => {
      const closes: SurvivorTimeline['closes'] = []
      for (const l of v.lines) {
        const t = (l.time as number) ?? 0
        if (t < killAt) continue
        if (l.event === 'connection:close' && dead.has(String(l.peerId))) {
          const c = before[i].get(String(l.connectionId))
          const ms = t - killAt
          // the monitor's ping times out after >= 5 s; its log line may also follow a close it did not cause
          const pinged = ms >= 4500 && v.monitorAborts.some((a) => Math.abs(a - t) < 500)
          const how = c?.transport === 'tcp' && ms < 1000 ? 'reset' : pinged ? 'ping' : 'idle'
          closes.push({ dead: String(l.peerId).slice(-6), transport: c?.transport ?? '?', ms, how })
        }
      }
      const left = v.lines
        .filter(
          (l) => (l.time as number) >= killAt && l.event === 'topic:peer:lost' && dead.has(String(l.peerId)),
        )
        .map((l) => ({
          dead: String(l.peerId).slice(-6),
          ms: (l.time as number) - killAt,
          reason: String(l.reason),
        }))
      const added = v.lines
        .filter((l) => (l.time as number) >= killAt && l.event === 'topic:peer')
        .map((l) => ({
          ms: (l.time as number) - killAt,
          direction: [...v.conns.values()].find((c) => c.peer === String(l.peerId))?.direction ?? '?',
        }))
      return {
        name: v.proc.name,
        closes,
        open_at_end: [...v.conns.values()].filter((c) => dead.has(c.peer)).length,
        left,
        in_view_at_end: [...v.topic].filter((p) => dead.has(p)).length,
        added,
        healed_ms: healedAt.get(v) ?? null,
      }
    })
    // the bootstrap node's connections to the dead count as stale too (`mesh peers`)
    const bootStale = [...bootView.conns.values()].filter((c) => dead.has(c.peer)).length
    if (bootStale > 0) log(`bootstrap node still has ${bootStale} connections to dead peers`)
    for (const v of [...survivors, bootView]) countLive(v, Date.now())
    const heals = [...healedAt.values()]
    const stale = [...staleDone.values()]
    const closesByHow: Record<string, number> = {}
    for (const t of timelines)
      for (const c of t.closes)
        closesByHow[`${c.transport}:${c.how}`] = (closesByHow[`${c.transport}:${c.how}`] ?? 0) + 1

    // a fresh node joins the healed mesh
    const { nc, ncView, failedDials } = early ? await early : startNewcomer()
    const spawnedAt = nc.spawnedAt
    await nc.waitStarted(60_000)
    const started = nc.startedAt ?? Date.now()
    const ncTarget = need(peers.length - o.kill + 1)
    const joinEnd = Date.now() + (o.joinWindowMs ?? 30_000)
    while (Date.now() < joinEnd && liveCount(ncView, dead) < ncTarget) await sleep(50)
    const peerTimes = ncView.lines
      .filter((l) => l.event === 'topic:peer')
      .map((l) => (l.time as number) - started)
    const opens = (dir: string) =>
      ncView.lines
        .filter((l) => l.event === 'connection:open' && l.direction === dir)
        .map((l) => (l.time as number) - started)
    return {
      load: machineLoad().load1,
      formation_ms: formation,
      heal_ms: heals.length === survivors.length ? Math.max(...heals) : null,
      heal_p50_ms: heals.length ? percentile(heals, 50) : null,
      stale_max_ms: stale.length === survivors.length * dead.size ? Math.max(...stale) : null,
      stale_p50_ms: stale.length ? percentile(stale, 50) : null,
      closes_by_how: closesByHow,
      live_closes: liveCloses,
      monitor_aborts: [...survivors, bootView].reduce((n, v) => n + v.monitorAborts.length, 0),
      newcomer: {
        start_ms: started - spawnedAt,
        first_peer_ms: peerTimes[0] ?? null,
        k_peers_ms: liveCount(ncView, dead) >= ncTarget ? (peerTimes[ncTarget - 1] ?? null) : null,
        target: ncTarget,
        peers_ms: peerTimes,
        failed_dials_ms: failedDials.map((t) => t - started),
        outbound_ms: opens('outbound'),
        inbound_ms: opens('inbound'),
      },
      survivors: timelines,
    }
  } finally {
    await Promise.all(procs.map((p) => p.kill()))
    await rm(root, { recursive: true, force: true }).catch(() => {})
  }
}

const median = (xs: Array<number | null>) => {
  const v = xs.filter((x): x is number => typeof x === 'number')
  return v.length ? percentile(v, 50) : null
}

async function main(): Promise<void> {
  const { values: opt } = parseArgs({
    options: {
      runs: { type: 'string', default: '1' },
      peers: { type: 'string', default: '11' },
      kill: { type: 'string', default: '3' },
      k: { type: 'string', default: '8' },
      transports: { type: 'string', default: 'tcp,quic' },
      quic: { type: 'string', default: '{}' },
      kad: { type: 'string', default: '{}' },
      config: { type: 'string', default: '{}' },
      window: { type: 'string', default: '25000' },
      'join-delay': { type: 'string' },
      seed: { type: 'string' },
      timeline: { type: 'boolean', default: false },
      'dump-dir': { type: 'string' },
    },
  })
  const T0 = Date.now()
  const log = (text: string) =>
    process.stderr.write(`[heal +${((Date.now() - T0) / 1000).toFixed(1)}s] ${text}\n`)
  const runs: HealRun[] = []
  for (let r = 0; r < Number(opt.runs); r++) {
    const run = await runHeal({
      peers: Number(opt.peers),
      kill: Number(opt.kill),
      k: Number(opt.k),
      transports: opt.transports!.split(',') as Array<'tcp' | 'quic'>,
      quic: JSON.parse(opt.quic!),
      kadTopics: JSON.parse(opt.kad!),
      config: JSON.parse(opt.config!),
      windowMs: Number(opt.window),
      joinDelayMs: opt['join-delay'] === undefined ? undefined : Number(opt['join-delay']),
      seed: opt.seed === undefined ? undefined : Number(opt.seed) + r,
      dumpDir: opt['dump-dir'] ? join(opt['dump-dir'], `run${r}`) : undefined,
      log,
    })
    runs.push(run)
    const { survivors, ...rest } = run
    process.stdout.write(`${JSON.stringify(opt.timeline ? run : rest)}\n`)
  }
  process.stdout.write(
    `${JSON.stringify({
      medians: {
        runs: runs.length,
        heal_ms: median(runs.map((r) => r.heal_ms)),
        heal_p50_ms: median(runs.map((r) => r.heal_p50_ms)),
        stale_max_ms: median(runs.map((r) => r.stale_max_ms)),
        stale_p50_ms: median(runs.map((r) => r.stale_p50_ms)),
        newcomer_first_peer_ms: median(runs.map((r) => r.newcomer.first_peer_ms)),
        newcomer_k_peers_ms: median(runs.map((r) => r.newcomer.k_peers_ms)),
        load: runs.map((r) => r.load),
      },
    })}\n`,
  )
}

if (process.argv[1]?.endsWith('heal.js')) {
  main().catch((err) => {
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exit(1)
  })
}
