/**
 * `lockDataDir()`: one running node per data dir (and so per peer id). The pieces are beside it:
 * lock-record.ts (the lock file and the verdict on its holder), lock-socket.ts (the abstract socket),
 * lock-takeover.ts (replacing a stale lock, exclusive creation, leftovers).
 */
import { randomBytes } from 'node:crypto'
import { realpath, stat, unlink, utimes, writeFile } from 'node:fs/promises'
import type { Server } from 'node:net'
import { join, resolve } from 'node:path'
import { meshError, reasonOf } from './errors.js'
import {
  held,
  judgeNow,
  LOCK_FILE,
  type LockFile,
  type LockRecord,
  readLockFile,
  sha256,
  type Verdict,
} from './lock-record.js'
import { bindLockSocket, probeLockSocket, tagOf } from './lock-socket.js'
import { createExclusive, sweep, takeOver } from './lock-takeover.js'
import type { Logger } from './logger.js'
import { selfIdentity } from './process-identity.js'

export { LOCK_FILE } from './lock-record.js'

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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

function lockedError(dataDir: string, holder?: { pid?: number; host?: string }) {
  const who =
    holder?.pid === undefined
      ? 'Another process'
      : `Process ${holder.pid}${holder.host && holder.host !== selfIdentity().host ? ` on ${holder.host}` : ''}`
  return meshError('MESH_ERR_DATA_DIR_LOCKED', [dataDir], {
    hint: `${who} runs a node on it: stop it, or give this node its own --data-dir.`,
  })
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
  await sweep(dataDir, staleMs, me)

  let released = false
  let beating = false
  let lost = false
  // the inode this process wrote: a takeover links or renames another file in its place, so a beat is
  // a stat and a utimes (the record is read only when the inode changed): 2 file operations on libuv's
  // pool instead of 5, for every node of a process, every beat
  const mine = await stat(file).catch(() => undefined)
  const beat = async () => {
    const now = await stat(file).catch(() => undefined)
    const same = mine && now && now.ino === mine.ino && now.dev === mine.dev
    if (!same && released) return // it unlinked its file meanwhile: whatever is there is no takeover
    const current = same ? undefined : await readLockFile(file)
    if (same || current?.record?.nonce === nonce) {
      const at = new Date()
      await utimes(file, at, at)
    } else if (!lost) {
      lost = true
      options.logger?.error(
        `${file} no longer names this process: another process (pid ${current?.record?.pid ?? 'unknown'}) took the data dir's lock; stop one of the two nodes.`,
      )
    }
  }
  // every staleMs / 5, spread by ±20% so that nodes started together do not beat together
  const period = Math.max(50, Math.floor(staleMs / 5))
  let heartbeat: ReturnType<typeof setTimeout>
  const next = () => {
    heartbeat = setTimeout(
      () => {
        if (released) return
        if (!beating) {
          beating = true
          beat()
            .catch(() => {})
            .finally(() => {
              beating = false
            })
        }
        next()
      },
      Math.round(period * (0.8 + 0.4 * Math.random())),
    )
    heartbeat.unref()
  }
  next()

  return async () => {
    if (released) return
    released = true
    clearTimeout(heartbeat)
    held.delete(nonce)
    const current = await readLockFile(file).catch(() => undefined)
    if (current?.record?.nonce === nonce) await unlink(file).catch(() => {})
    // after the file: a process that binds the name next finds no lock of ours
    server?.close()
  }
}
