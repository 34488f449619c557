/**
 * Crash safety (issue 12): a node's data dir survives SIGKILL at any moment. Two anchor nodes run a
 * topic; the victim (`mesh start`, or `mesh dev` for config reloads) uses one data dir with a persistent
 * datastore (kad-dht records, peer store), a peer cache written every 50 ms when it changed, and a topic
 * of the anchors', so that it writes all the time. Each cycle starts it and SIGKILLs it at a random moment:
 *
 * - `start`  (the rest): `mesh start` on the data dir, killed 0 to `maxDelayMs` after the spawn (start-up,
 *   lock, identity load, datastore open, first dials, peer-cache and datastore writes);
 * - `fresh`  (a fifth of the others, ~15%): a new data dir, killed 0 to 1.5 s after the spawn (identity
 *   creation, first writes); the following cycles use that dir;
 * - `reload` (`reloadShare`, 30%, spread evenly): `mesh dev` on the data dir; once started, its config is
 *   rewritten (topics, the peer-cache interval, a transport, alternately: applied in place or a new node
 *   with the same identity) and it is killed 0 to 1.5 s after the write.
 *
 * After every kill the data dir is checked: identity.key is the key it was (or, never made before, absent
 * or a whole key); peer-cache.json is absent or a valid cache (parseCacheFile finds no problem) and no
 * `.corrupt` backup appeared; the datastore (LevelDB) opens and every entry reads; files left behind by
 * the killed process (`*.tmp`) are counted and must be gone after the next start. Every process that got
 * to `started` must have had the data dir's peer id, and none may exit on its own with an error. A final
 * clean start checks the same and that the cache is used.
 */
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LevelDatastore } from 'datastore-level'
import { parseCacheFile } from '../../plugins/peer-cache/index.js'
import { mulberry32, randomSeed } from '../lib/random.js'
import { MeshProc, sleep, writeConfig } from './fleet.js'

export interface CrashOptions {
  /** Cycles (kills). */
  cycles: number
  /** A fresh, empty directory for everything. */
  root: string
  seed?: number
  /** Longest delay of a `start` kill after the spawn. @default 3500 */
  maxDelayMs?: number
  /**
   * Share of the cycles that are config reloads (`mesh dev`, the slowest cycles: a dev start first).
   * @default 0.3
   */
  reloadShare?: number
  log?: (text: string) => void
}

export type CrashMode = 'start' | 'fresh' | 'reload'

export interface CrashCycle {
  cycle: number
  mode: CrashMode
  /** ms from the spawn (start, fresh) or from the config write (reload) to the SIGKILL. */
  killAfterMs: number
  /** The process printed `started` before the kill. */
  started: boolean
  /** It exited by itself (an error) before the kill. */
  exitedEarly: boolean
  /** Files of the killed process left behind (`*.tmp`), relative to the data dir. */
  leftovers: string[]
  problems: string[]
}

export interface CrashReport {
  cycles: number
  kills: number
  byMode: Record<CrashMode, number>
  /** Cycles whose process reached `started`, all with the data dir's identity. */
  startedSameIdentity: number
  startedOtherIdentity: number
  /** Kills while the identity did not exist yet, and what they left: a whole key or none. */
  killedBeforeIdentity: number
  /** After each kill: a valid peer cache / no cache file yet / invalid. */
  peerCacheValid: number
  peerCacheAbsent: number
  peerCacheInvalid: number
  /** `.corrupt` backups the node made (it found a corrupt cache). */
  corruptBackups: number
  datastoreOk: number
  datastoreFailed: number
  /** Kills that left `*.tmp` files, and of those how many were still there after the next start. */
  killsWithLeftovers: number
  leftoversSurvivingRestart: number
  leftoverNames: string[]
  finalStart: { started: boolean; sameIdentity: boolean; cachedPeers: number; problems: string[] }
  problems: string[]
  ms: number
}

const TOPIC = 'crash-topic'

export async function runCrashCycles(options: CrashOptions): Promise<CrashReport> {
  const t0 = Date.now()
  const log = options.log ?? (() => {})
  const seed = options.seed ?? randomSeed()
  const random = mulberry32(seed)
  const maxDelay = options.maxDelayMs ?? 3500
  const reloadShare = Math.min(0.85, Math.max(0, options.reloadShare ?? 0.3))
  const procs = new Set<MeshProc>()
  const spawn = (name: string, cwd: string, args: string[], command: 'start' | 'dev' = 'start') => {
    const p = new MeshProc({ name, cwd, command, args: ['--local', ...args] })
    procs.add(p)
    void p.exited.then(() => procs.delete(p))
    return p
  }
  const report: CrashReport = {
    cycles: options.cycles,
    kills: 0,
    byMode: { start: 0, fresh: 0, reload: 0 },
    startedSameIdentity: 0,
    startedOtherIdentity: 0,
    killedBeforeIdentity: 0,
    peerCacheValid: 0,
    peerCacheAbsent: 0,
    peerCacheInvalid: 0,
    corruptBackups: 0,
    datastoreOk: 0,
    datastoreFailed: 0,
    killsWithLeftovers: 0,
    leftoversSurvivingRestart: 0,
    leftoverNames: [],
    finalStart: { started: false, sameIdentity: false, cachedPeers: 0, problems: [] },
    problems: [],
    ms: 0,
  }
  try {
    // two anchors with the topic: the victim connects, exchanges members, caches them, stores records
    const anchorDir = join(options.root, 'anchors')
    await mkdir(anchorDir, { recursive: true })
    await writeConfig(anchorDir, {
      plugins: [
        'identify',
        'ping',
        'noise',
        'yamux',
        'tcp',
        { plugin: 'kad-topics', options: { addressScope: 'all' } },
      ],
    })
    const anchors = [0, 1].map((i) =>
      spawn(`anchor${i}`, anchorDir, [
        '--data-dir',
        join(anchorDir, `a${i}`),
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--topic',
        TOPIC,
      ]),
    )
    await Promise.all(anchors.map((a) => a.waitStarted(60_000)))
    const anchorAddrs = anchors.flatMap((a) => a.addresses)

    const victimDir = join(options.root, 'victim')
    await mkdir(victimDir, { recursive: true })
    // the reload cycles switch between these configs (in place: topics / interval; new node: + quic)
    const configs = [0, 1, 2, 3].map((variant) => ({
      plugins: [
        'identify',
        'ping',
        'noise',
        'yamux',
        'tcp',
        ...(variant === 3 ? ['quic'] : []),
        {
          plugin: 'kad-topics',
          options: { addressScope: 'all', topics: variant === 1 ? [TOPIC, `${TOPIC}-b`] : [TOPIC] },
        },
        { plugin: 'peer-cache', options: { flushInterval: variant === 2 ? '80ms' : '50ms' } },
        { plugin: 'static-peers', options: { peers: anchorAddrs } },
      ],
    }))
    await writeConfig(victimDir, configs[0])
    let generation = 0
    let dataDir = join(victimDir, `d${generation}`)
    /** The data dir's identity as last seen (bytes and peer id), once it exists. */
    let identity: { bytes: Buffer; peerId: string } | undefined
    let pendingLeftovers: string[] = []
    /** Leftovers already counted (one that stays is counted once, when found). */
    const known = new Set<string>()

    for (let cycle = 1; cycle <= options.cycles; cycle++) {
      const r = random()
      // reloads spread evenly (their count is the share's, whatever the seed), the rest at random
      const reload = Math.floor(cycle * reloadShare) > Math.floor((cycle - 1) * reloadShare)
      const mode: CrashMode = cycle === 1 || (!reload && r < 0.2) ? 'fresh' : reload ? 'reload' : 'start'
      if (mode === 'fresh' && cycle > 1) {
        generation++
        dataDir = join(victimDir, `d${generation}`)
        identity = undefined
        pendingLeftovers = []
      }
      const c: CrashCycle = {
        cycle,
        mode,
        killAfterMs: 0,
        started: false,
        exitedEarly: false,
        leftovers: [],
        problems: [],
      }
      const hadIdentity = identity !== undefined
      await writeConfig(victimDir, configs[0])
      const args = ['--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0']
      let proc: MeshProc
      if (mode === 'reload') {
        proc = spawn(`victim${cycle}`, victimDir, args, 'dev')
        try {
          await proc.waitStarted(60_000)
          // let it connect and write a little before the change
          await sleep(100 + random() * 700)
          const variant = 1 + Math.floor(random() * 3)
          await writeConfig(victimDir, configs[variant])
          c.killAfterMs = Math.round(random() * 1500)
        } catch (err) {
          c.problems.push(`mesh dev did not start: ${(err as Error).message.split('\n')[0]}`)
        }
      } else {
        proc = spawn(`victim${cycle}`, victimDir, args)
        c.killAfterMs = Math.round(random() * (mode === 'fresh' ? 1500 : maxDelay))
      }
      await Promise.race([sleep(c.killAfterMs), proc.exited])
      c.exitedEarly = proc.exit !== undefined
      c.started = proc.peerId !== undefined
      await proc.kill()
      report.kills++
      report.byMode[mode]++
      if (c.exitedEarly) c.problems.push(`exited by itself before the kill: ${proc.describe()}`)
      if (c.started) {
        if (identity && proc.peerId !== identity.peerId) {
          report.startedOtherIdentity++
          c.problems.push(`started as ${proc.peerId}, the data dir's identity is ${identity.peerId}`)
        } else report.startedSameIdentity++
      }
      const corruptLines = proc.stderrTail.filter((l) => /corrupt|unusable|cannot read/i.test(l))
      if (corruptLines.length > 0) c.problems.push(`warnings: ${corruptLines.join(' | ')}`)

      // the previous kill's leftovers must be gone now that a process started on the dir again
      if (c.started && pendingLeftovers.length > 0) {
        const still = await listTemps(dataDir)
        const surviving = pendingLeftovers.filter((f) => still.includes(f))
        report.leftoversSurvivingRestart += surviving.length
        if (surviving.length > 0)
          c.problems.push(`left by an earlier kill, still there after a start: ${surviving.join(', ')}`)
        // counted once: a start that did not remove them will not remove them later either
        pendingLeftovers = []
      }

      // the data dir after the kill
      const keyFile = join(dataDir, 'identity.key')
      const bytes = await readFile(keyFile).catch(() => undefined)
      if (!hadIdentity) report.killedBeforeIdentity += bytes ? 0 : 1
      if (bytes) {
        try {
          const peerId = peerIdFromPrivateKey(privateKeyFromProtobuf(bytes)).toString()
          if (identity && !identity.bytes.equals(bytes)) c.problems.push('identity.key changed')
          if (c.started && proc.peerId !== peerId)
            c.problems.push(`identity.key is ${peerId}, the node ran as ${proc.peerId}`)
          identity ??= { bytes, peerId }
        } catch (err) {
          c.problems.push(`identity.key is not a key (${bytes.length} bytes): ${(err as Error).message}`)
        }
      } else if (identity) c.problems.push('identity.key is gone')

      const cacheText = await readFile(join(dataDir, 'peer-cache.json'), 'utf8').catch(() => undefined)
      if (cacheText === undefined) report.peerCacheAbsent++
      else {
        const parsed = parseCacheFile(cacheText)
        if (parsed.problems.length === 0) report.peerCacheValid++
        else {
          report.peerCacheInvalid++
          c.problems.push(`peer-cache.json invalid: ${parsed.problems.join('; ')}`)
        }
      }
      const names = await readdir(dataDir).catch(() => [] as string[])
      const corrupt = names.filter((n) => n.includes('.corrupt'))
      if (corrupt.length > report.corruptBackups) {
        c.problems.push(`corrupt backups: ${corrupt.join(', ')}`)
        report.corruptBackups = corrupt.length
      }
      const ds = await checkDatastore(join(dataDir, 'datastore'))
      if (ds === undefined) report.datastoreOk++
      else {
        report.datastoreFailed++
        c.problems.push(`datastore: ${ds}`)
      }
      c.leftovers = (await listTemps(dataDir)).filter((f) => !known.has(`${dataDir}/${f}`))
      for (const f of c.leftovers) known.add(`${dataDir}/${f}`)
      if (c.leftovers.length > 0) {
        report.killsWithLeftovers++
        for (const f of c.leftovers) {
          const kind = f.replace(/\.\d+\.[0-9a-f]+\.tmp$/, '.<pid>.<hex>.tmp')
          if (!report.leftoverNames.includes(kind)) report.leftoverNames.push(kind)
        }
        pendingLeftovers.push(...c.leftovers)
      }
      for (const p of c.problems) report.problems.push(`cycle ${cycle} (${mode}, ${c.killAfterMs} ms): ${p}`)
      log(
        `cycle ${cycle} ${mode.padEnd(6)} kill at ${String(c.killAfterMs).padStart(4)} ms ${c.started ? 'started' : '       '} ${c.leftovers.length ? `leftovers ${c.leftovers.join(',')}` : ''}${c.problems.length ? ` PROBLEMS: ${c.problems.join(' / ')}` : ''}`,
      )
    }

    // a clean start: same identity, the cache used, the leftovers gone
    const final = spawn('final', victimDir, ['--data-dir', dataDir, '--listen', '/ip4/127.0.0.1/tcp/0'])
    try {
      await final.waitStarted(60_000)
      report.finalStart.started = true
      report.finalStart.sameIdentity = identity === undefined || final.peerId === identity.peerId
      if (!report.finalStart.sameIdentity) report.finalStart.problems.push(`final start as ${final.peerId}`)
      await final
        .waitFor((l) => l.event === 'topic:peer', 20_000, 'a topic peer')
        .catch((err: Error) => {
          report.finalStart.problems.push(err.message)
        })
      await sleep(300)
      const still = (await listTemps(dataDir)).filter((f) => pendingLeftovers.includes(f))
      if (still.length > 0) {
        report.leftoversSurvivingRestart += still.length
        report.finalStart.problems.push(`leftovers still there after the final start: ${still.join(', ')}`)
      }
    } catch (err) {
      report.finalStart.problems.push((err as Error).message.split('\n')[0])
    }
    await final.stop(10_000)
    if (final.exit?.code !== 0)
      report.finalStart.problems.push(`the final stop exited ${JSON.stringify(final.exit)}`)
    const cacheText = await readFile(join(dataDir, 'peer-cache.json'), 'utf8').catch(() => undefined)
    report.finalStart.cachedPeers = cacheText ? parseCacheFile(cacheText).peers.length : 0
    report.problems.push(...report.finalStart.problems.map((p) => `final start: ${p}`))
    await Promise.all(anchors.map((a) => a.stop(10_000)))
  } finally {
    await Promise.all([...procs].map((p) => p.kill()))
    report.ms = Date.now() - t0
  }
  return report
}

/** `*.tmp` files anywhere in the data dir (not inside the datastore: LevelDB's own files). */
async function listTemps(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name === 'datastore') continue
    if (name.endsWith('.tmp')) out.push(name)
    const s = await lstat(join(dir, name)).catch(() => undefined)
    if (s?.isDirectory())
      for (const inner of await readdir(join(dir, name)).catch(() => [] as string[]))
        if (inner.endsWith('.tmp')) out.push(`${name}/${inner}`)
  }
  return out
}

/** Opens the LevelDB datastore and reads every entry; undefined when fine, else the error. */
async function checkDatastore(path: string): Promise<string | undefined> {
  const exists = await lstat(path).then(
    () => true,
    () => false,
  )
  if (!exists) return undefined
  const store = new LevelDatastore(path)
  try {
    await store.open()
    let n = 0
    for await (const entry of store.query({})) {
      if (!(entry.value instanceof Uint8Array)) return `entry ${entry.key} has no value`
      n++
    }
    void n
    return undefined
  } catch (err) {
    return (err as Error).message
  } finally {
    await store.close().catch(() => {})
  }
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
}
