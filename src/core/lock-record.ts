/**
 * The data dir's lock file: what it holds (who holds the lock), reading it in one go, and the verdict
 * on a holder from what the record says (see data-dir-lock.ts for the whole scheme).
 */
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import { type ProcessIdentity, pidExists, processState } from './process-identity.js'

/** The lock file that keeps two running nodes from sharing one data dir (and so one peer id). */
export const LOCK_FILE = 'node.lock'

/** What `node.lock` holds: who holds the lock, precisely enough to tell it from a reused pid. */
export interface LockRecord extends ProcessIdentity {
  v: 1
  /** 32 hex characters, new for each lock taken. */
  nonce: string
  /** Whether the holder holds the data dir's abstract socket too. */
  socket: boolean
  at: string
}

/** A lock (or takeover marker) file as read: `id` changes whenever the file is replaced. */
export interface LockFile {
  id: string
  mtimeMs: number
  record?: LockRecord
  /** The pid of a lock written by Meshkit 0.1 (the file held only the pid). */
  legacyPid?: number
}

export type Verdict = 'alive' | 'stale' | 'changed'

/** Nonces of the locks this process holds now. */
export const held = new Set<string>()

export const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex')

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
export async function readLockFile(path: string): Promise<LockFile | undefined> {
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

/** A verdict from what the record says, or 'watch' when only the heartbeat can tell. */
export function judgeNow(found: LockFile, me: ProcessIdentity, holdsSocket: boolean): Verdict | 'watch' {
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
