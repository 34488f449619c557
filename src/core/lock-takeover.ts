/** Taking over a stale lock (one taker per stale lock), exclusive creation, and sweeping leftovers. */
import { link, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  judgeNow,
  LOCK_FILE,
  type LockFile,
  type LockRecord,
  readLockFile,
  type Verdict,
} from './lock-record.js'
import type { ProcessIdentity } from './process-identity.js'

/**
 * Replaces the stale lock `staleId` with this process's (`temp`), unless another process is doing so:
 * the taker of a stale lock is whoever creates `node.lock.takeover.<staleId>` (link(2): exactly one);
 * a marker left by a taker that died is itself taken over the same way, by its own id. The lock is
 * replaced (rename over it) only while it is still `staleId`. Returns whether this process holds the lock.
 */
export async function takeOver(
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
export async function createExclusive(temp: string, path: string): Promise<boolean> {
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

/**
 * Removes takeover markers and temp files that acquirers which died left in the data dir: at once when
 * the record in one names a process of this host that is gone (a SIGKILL during a start leaves its temp
 * file, and the next start follows within a second), otherwise once older than `staleMs` (a writer on
 * another host or namespace, or no record). This process's own files are left to age: they may belong
 * to an acquisition still under way here.
 */
export async function sweep(dataDir: string, staleMs: number, me: ProcessIdentity): Promise<void> {
  const names = await readdir(dataDir).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(`${LOCK_FILE}.`)) continue
    if (!name.startsWith(`${LOCK_FILE}.takeover.`) && !name.endsWith('.tmp')) continue
    const path = join(dataDir, name)
    const found = await readLockFile(path).catch(() => undefined)
    if (!found) continue
    const writerGone =
      found.record !== undefined && found.record.pid !== me.pid && judgeNow(found, me, false) === 'stale'
    if (writerGone || Date.now() - found.mtimeMs > staleMs) await unlink(path).catch(() => {})
  }
}
