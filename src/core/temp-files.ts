import { randomBytes } from 'node:crypto'
import { readdir, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Logger } from './logger.js'
import { pidExists } from './process-identity.js'

/** A temp file older than this is removed even when its pid names a live process (a reused pid). */
const STALE_TEMP_MS = 3_600_000

/**
 * The temp file an atomic write of `file` goes through (written in full, then renamed or linked into
 * place): `<file>.<pid>.<12 hex>.tmp`, beside it, unique per call.
 */
export function tempFileFor(file: string): string {
  return `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
}

/**
 * Removes what writers of `file` killed mid-write (SIGKILL, power loss) left beside it: temp files named
 * `<file>.<pid>.<hex>.tmp` whose process is gone, or that are older than an hour. The file itself is never
 * touched: an atomic write replaces it whole or not at all, so only its temp file can be half-written.
 * Returns the names removed; errors (an unreadable directory) remove nothing.
 */
export async function sweepTempFiles(file: string, logger?: Logger): Promise<string[]> {
  const dir = dirname(file)
  const base = basename(file)
  const pattern = new RegExp(
    `^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d{1,10})\\.[0-9a-f]{8,32}\\.tmp$`,
  )
  const names = await readdir(dir).catch(() => [] as string[])
  const removed: string[] = []
  for (const name of names) {
    const match = pattern.exec(name)
    if (!match) continue
    const pid = Number(match[1])
    if (pid === process.pid) continue
    const path = join(dir, name)
    if (pidExists(pid)) {
      const s = await stat(path).catch(() => undefined)
      if (!s || Date.now() - s.mtimeMs < STALE_TEMP_MS) continue
    }
    try {
      await unlink(path)
      removed.push(name)
    } catch {
      // gone already, or not ours to remove: left as it is
    }
  }
  if (removed.length > 0)
    logger?.info(`removed ${removed.length} temp file(s) left by an interrupted write: ${removed.join(', ')}`)
  return removed
}
