import { createHash, randomBytes } from 'node:crypto'
import {
  link,
  open,
  readdir,
  readFile,
  realpath,
  rename,
  stat,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises'
import { connect, createServer, type Server } from 'node:net'
import { join, resolve } from 'node:path'
import { meshError, reasonOf } from './errors.js'
import type { Logger } from './logger.js'
import { type ProcessIdentity, pidExists, processState, selfIdentity } from './process-identity.js'

/** The lock file that keeps two running nodes from sharing one data dir (and so one peer id). */
export const LOCK_FILE = 'node.lock'

export interface LockDataDirOptions {
  /**
   * A lock whose holder this process cannot check directly (another host, PID or network namespace,
   * or a file that is not a lock record) counts as stale once its heartbeat, the file's mtime, which
   * the holder refreshes every `staleMs / 5`, has not moved for this long. @default 10000
   */
  staleMs?: number
  /** Also hold an abstract unix socket named after the data dir (Linux only). @default true */
  socket?: boolean
  /** Warns when the lock is found taken over while held. */
  logger?: Logger
}

/** What `node.lock` holds: who holds the lock, precisely enough to tell it from a reused pid. */
interface LockRecord extends ProcessIdentity {
  v: 1
  /** 32 hex characters, new for each lock taken. */
  nonce: string
  /** Whether the holder holds the data dir's abstract socket too. */
  socket: boolean
  at: string
}

/** A lock (or takeover marker) file as read: `id` changes whenever the file is replaced. */
interface LockFile {
  id: string
  mtimeMs: number
  record?: LockRecord
  /** The pid of a lock written by Meshkit 0.1 (the file held only the pid). */
  legacyPid?: number
}

type Verdict = 'alive' | 'stale' | 'changed'

/** Nonces of the locks this process holds now. */
const held = new Set<string>()

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex')
/** What the lock socket tells a prober: not the nonce itself, so that nothing of the file is revealed. */
const tagOf = (nonce: string) => sha256(`meshkit-lock-tag:${nonce}`).slice(0, 32)

function lockedError(dataDir: string, holder?: { pid?: number; host?: string }) {
  const who =
    holder?.pid === undefined
      ? 'Another process'
      : `Process ${holder.pid}${holder.host && holder.host !== selfIdentity().host ? ` on ${holder.host}` : ''}`
  return meshError('MESH_ERR_DATA_DIR_LOCKED', [dataDir], {
    hint: `${who} runs a node on it: stop it, or give this node its own --data-dir.`,
  })
}

function parseRecord(text: string): LockRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<LockRecord>
    if (r?.v !== 1 || typeof r.nonce !== 'string' || !/^[0-9a-f]{32}$/.test(r.nonce)) return undefined
    if (typeof r.pid !== 'number' || typeof r.host !== 'string') return undefined
    for (const k of ['start', 'boot', 'pidns', 'netns'] as const)
      if (r[k] !== undefined && typeof r[k] !== 'string') return undefined
    return { ...r, socket: r.socket === true } as LockRecord
  } catch {
    return undefined
  }
}

/** Reads a lock or marker file in one go (content and the stat of that very inode); undefined if none. */
async function readLockFile(path: string): Promise<LockFile | undefined> {
  let handle: Awaited<ReturnType<typeof open>>
  try {
    handle = await open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const s = await handle.stat()
    const buf = Buffer.alloc(4096)
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0)
    const bytes = buf.subarray(0, bytesRead)
    const text = bytes.toString('utf8')
    const record = parseRecord(text)
    if (record) return { id: `n${record.nonce}`, mtimeMs: s.mtimeMs, record }
    // not a record: empty, partial, foreign or from Meshkit 0.1; identified by content and inode
    const id = `r${sha256(Buffer.concat([bytes, Buffer.from(`\0${s.ino}\0${s.mtimeMs}\0${s.ctimeMs}`)])).slice(0, 32)}`
    const legacy = /^\s*(\d{1,10})\s*$/.exec(text)
    return { id, mtimeMs: s.mtimeMs, legacyPid: legacy ? Number(legacy[1]) : undefined }
  } finally {
    await handle.close()
  }
}

/**
 * Takes the data dir's lock for this process and returns the function that releases it. Throws
 * MESH_ERR_DATA_DIR_LOCKED (with the holder's pid in the hint) when a live process holds it.
 *
 * Two mechanisms, both released by the kernel or by time when a process dies:
 * - On Linux, an abstract unix socket named after the data dir's real path. Binding is atomic and the
 *   kernel frees the name when the process dies, so within one network namespace exactly one process
 *   gets past it, and the socket answers probes with its pid (a name squatted by a process that does
 *   not hold the lock file is ignored: the file decides then).
 * - `<dataDir>/node.lock`: a record `{ pid, start, boot, pidns, netns, host, nonce, socket }` written to
 *   a temp file and hard-linked into place (no empty or partial lock is ever visible), whose mtime the
 *   holder refreshes every `staleMs / 5` (a heartbeat). It covers processes in other namespaces or on
 *   other hosts that share the directory.
 *
 * A lock is stale when its holder is gone: a pid that no longer runs or runs another process (another
 * start time: pid reuse), this process's own pid with a nonce it does not hold (a container's PID 1
 * after a restart), a holder of the socket in this network namespace when this process now holds the
 * socket. Where none of that can be checked (another host or namespace, a file that is no record), it
 * is stale once its mtime stays unchanged for `staleMs`. A stale lock is replaced under a takeover
 * marker (`node.lock.takeover.<id of the stale lock>`, created with link(2): one taker per stale lock)
 * and only if the lock is still that stale one, so concurrent starts never both win.
 */
export async function lockDataDir(
  dataDir: string,
  options: LockDataDirOptions = {},
): Promise<() => Promise<void>> {
  const staleMs = Math.max(200, options.staleMs ?? 10_000)
  const file = join(dataDir, LOCK_FILE)
  const me = selfIdentity()
  const nonce = randomBytes(16).toString('hex')
  const deadline = Date.now() + 3 * staleMs + 5_000
  let lastHolder: { pid?: number; host?: string } | undefined

  let server: Server | undefined
  if (options.socket !== false && process.platform === 'linux') {
    const real = await realpath(dataDir).catch(() => resolve(dataDir))
    const name = `\0meshkit-lock/${sha256(real).slice(0, 40)}`
    const socketDeadline = Date.now() + staleMs + 2_000
    for (;;) {
      const bound = await bindLockSocket(name, tagOf(nonce))
      if (bound !== 'in-use') {
        server = bound
        break
      }
      const holder = await probeLockSocket(name)
      // nobody answers as a lock holder: a squatter, or the holder just went away; the file decides
      if (!holder) break
      const current = await readLockFile(file).catch(() => undefined)
      if (current?.record && tagOf(current.record.nonce) === holder.tag)
        throw lockedError(dataDir, { pid: holder.pid, host: current.record.host })
      // the holder has not written its lock file yet (or pretends to hold the lock): wait, within bounds
      if (Date.now() > socketDeadline) break
      await sleep(25 + Math.random() * 25)
    }
  }

  const record: LockRecord = {
    v: 1,
    ...me,
    nonce,
    socket: server !== undefined,
    at: new Date().toISOString(),
  }
  const temp = `${file}.${nonce}.tmp`
  const fail = (err: unknown) =>
    meshError('MESH_ERR_DATA_DIR', [dataDir, `cannot create ${LOCK_FILE}: ${reasonOf(err)}`], { cause: err })

  /** Whether a lock (or marker) holder still holds it, watching its heartbeat where nothing else tells. */
  const judge = async (path: string, found: LockFile): Promise<Verdict> => {
    const quick = judgeNow(found, me, server !== undefined)
    if (quick !== 'watch') return quick
    let seen = found
    for (;;) {
      if (Date.now() - seen.mtimeMs > staleMs) return 'stale'
      if (Date.now() > deadline) return 'alive'
      await sleep(Math.min(250, staleMs / 10))
      const now = await readLockFile(path)
      if (!now || now.id !== found.id) return 'changed'
      if (now.mtimeMs !== seen.mtimeMs) return 'alive'
      seen = now
    }
  }

  try {
    await writeFile(temp, JSON.stringify(record), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    server?.close()
    throw fail(err)
  }
  try {
    for (;;) {
      if (Date.now() > deadline) throw lockedError(dataDir, lastHolder)
      try {
        if (await createExclusive(temp, file)) break
      } catch (err) {
        throw fail(err)
      }
      const current = await readLockFile(file).catch((err: unknown) => {
        throw fail(err) // e.g. node.lock is a directory
      })
      if (!current) continue
      lastHolder = current.record ?? { pid: current.legacyPid }
      const verdict = await judge(file, current)
      if (verdict === 'alive') throw lockedError(dataDir, lastHolder)
      if (verdict === 'changed') continue
      if (await takeOver(file, current.id, temp, record, judge)) break
      await sleep(10 + Math.random() * 40)
    }
  } catch (err) {
    server?.close()
    throw err
  } finally {
    await unlink(temp).catch(() => {})
  }
  held.add(nonce)
  await sweep(dataDir, staleMs)

  let released = false
  let beating = false
  let lost = false
  const heartbeat = setInterval(
    () => {
      if (beating || released) return
      beating = true
      readLockFile(file)
        .then(async (current) => {
          if (current?.record?.nonce === nonce) {
            const now = new Date()
            await utimes(file, now, now)
          } else if (!lost) {
            lost = true
            options.logger?.error(
              `${file} no longer names this process: another process (pid ${current?.record?.pid ?? 'unknown'}) took the data dir's lock; stop one of the two nodes.`,
            )
          }
        })
        .catch(() => {})
        .finally(() => {
          beating = false
        })
    },
    Math.max(50, Math.floor(staleMs / 5)),
  )
  heartbeat.unref()

  return async () => {
    if (released) return
    released = true
    clearInterval(heartbeat)
    held.delete(nonce)
    const current = await readLockFile(file).catch(() => undefined)
    if (current?.record?.nonce === nonce) await unlink(file).catch(() => {})
    // after the file: a process that binds the name next finds no lock of ours
    server?.close()
  }
}

/** A verdict from what the record says, or 'watch' when only the heartbeat can tell. */
function judgeNow(found: LockFile, me: ProcessIdentity, holdsSocket: boolean): Verdict | 'watch' {
  const r = found.record
  if (!r) {
    if (found.legacyPid === undefined) return 'watch' // empty or foreign: stale only once old
    // Meshkit 0.1 wrote the bare pid and no heartbeat
    if (found.legacyPid === me.pid || !pidExists(found.legacyPid)) return 'stale'
    return 'watch'
  }
  const sameKernel = r.boot !== undefined && r.boot === me.boot
  if (sameKernel && r.pidns !== undefined && r.pidns === me.pidns) {
    // our own pid: the lock is alive only if this very process took it (a restarted container's
    // PID 1 finds the lock of its previous life under its own pid)
    if (r.pid === me.pid) return r.start === me.start && held.has(r.nonce) ? 'alive' : 'stale'
    const state = processState(r.pid)
    if (state === 'gone') return 'stale'
    if (state !== 'hidden' && r.start !== undefined)
      return state.start === r.start && !state.zombie ? 'alive' : 'stale'
  }
  // the holder held the socket in this network namespace, and the name is ours now: it is gone
  if (sameKernel && holdsSocket && r.socket && r.netns !== undefined && r.netns === me.netns) return 'stale'
  if (me.boot === undefined && r.boot === undefined && r.host === me.host) {
    // no /proc (macOS, BSD): a pid that does not run is conclusive, a running one may be reused
    if (r.pid === me.pid) return held.has(r.nonce) ? 'alive' : 'stale'
    if (!pidExists(r.pid)) return 'stale'
  }
  return 'watch'
}

/**
 * Replaces the stale lock `staleId` with this process's (`temp`), unless another process is doing so:
 * the taker of a stale lock is whoever creates `node.lock.takeover.<staleId>` (link(2): exactly one);
 * a marker left by a taker that died is itself taken over the same way, by its own id. The lock is
 * replaced (rename over it) only while it is still `staleId`. Returns whether this process holds the lock.
 */
async function takeOver(
  file: string,
  staleId: string,
  temp: string,
  record: LockRecord,
  judge: (path: string, found: LockFile) => Promise<Verdict>,
): Promise<boolean> {
  const chain: string[] = []
  let mine: string | undefined
  let id = staleId
  try {
    for (let step = 0; step < 16 && !mine; step++) {
      const marker = `${file}.takeover.${id}`
      const markerTemp = `${marker}.${record.nonce}.tmp`
      await writeFile(markerTemp, JSON.stringify({ ...record, at: new Date().toISOString() }), {
        mode: 0o600,
        flag: 'wx',
      })
      try {
        if (await createExclusive(markerTemp, marker)) {
          mine = marker
          break
        }
      } finally {
        await unlink(markerTemp).catch(() => {})
      }
      const other = await readLockFile(marker)
      if (!other) continue
      const verdict = await judge(marker, other)
      if (verdict === 'alive') return false
      if (verdict === 'changed') continue
      chain.push(marker)
      id = other.id
    }
    if (!mine) return false
    const now = await readLockFile(file)
    if (now?.id !== staleId) return false
    await rename(temp, file)
    return true
  } finally {
    // the markers only order the takers of one stale lock: once it is replaced (or was replaced by
    // someone else), a marker stops nobody, and a taker that still holds one finds the lock changed
    if (mine) await unlink(mine).catch(() => {})
    for (const m of chain) await unlink(m).catch(() => {})
  }
}

/**
 * Makes `path` a copy of the complete file `temp` unless `path` exists (false then): link(2), so that
 * nobody ever sees it empty or half written. Where hard links are not supported, an exclusive create
 * and write: a reader may then see it empty for a moment, which is safe since an empty or partial lock
 * counts as stale only once it is `staleMs` old.
 */
async function createExclusive(temp: string, path: string): Promise<boolean> {
  try {
    await link(temp, path)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return false
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err
  }
  try {
    await writeFile(path, await readFile(temp), { mode: 0o600, flag: 'wx' })
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  }
}

/** Removes takeover markers and temp files that acquirers which died left in the data dir. */
async function sweep(dataDir: string, staleMs: number): Promise<void> {
  const names = await readdir(dataDir).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(`${LOCK_FILE}.`)) continue
    if (!name.startsWith(`${LOCK_FILE}.takeover.`) && !name.endsWith('.tmp')) continue
    const path = join(dataDir, name)
    const s = await stat(path).catch(() => undefined)
    if (s && Date.now() - s.mtimeMs > staleMs) await unlink(path).catch(() => {})
  }
}

/** Binds the abstract socket; 'in-use' when another socket has the name, undefined when unsupported. */
function bindLockSocket(name: string, tag: string): Promise<Server | 'in-use' | undefined> {
  return new Promise((resolvePromise) => {
    const answer = `${JSON.stringify({ pid: process.pid, tag })}\n`
    const server = createServer((socket) => {
      socket.on('error', () => {})
      socket.end(answer)
    })
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolvePromise(err.code === 'EADDRINUSE' ? 'in-use' : undefined),
    )
    server.listen(name, () => {
      server.removeAllListeners('error')
      server.on('error', () => {})
      server.unref()
      resolvePromise(server)
    })
  })
}

/** What the process on the abstract socket says it is (pid and lock tag), or undefined (no answer in 1 s). */
function probeLockSocket(name: string): Promise<{ pid: number; tag: string } | undefined> {
  return new Promise((resolvePromise) => {
    let text = ''
    const socket = connect(name)
    const done = (value: { pid: number; tag: string } | undefined) => {
      clearTimeout(timer)
      socket.destroy()
      resolvePromise(value)
    }
    const timer = setTimeout(() => done(undefined), 1_000)
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      text += chunk
      if (text.length > 512) done(undefined)
    })
    socket.on('end', () => {
      try {
        const v = JSON.parse(text) as { pid?: unknown; tag?: unknown }
        if (typeof v.pid === 'number' && typeof v.tag === 'string') done({ pid: v.pid, tag: v.tag })
        else done(undefined)
      } catch {
        done(undefined)
      }
    })
    socket.on('error', () => done(undefined))
  })
}
