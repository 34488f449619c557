import { chmod, mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import type { Logger } from './logger.js'

/**
 * `mkdir -p`, one level at a time: creates `dir` and its missing parents (each with `mode`), and fails
 * with the first component that cannot be made. Node's `mkdir(..., { recursive: true })` loops forever
 * under a directory where creating fails with ENOENT although the parent exists (e.g. `/proc/x/y`: a
 * `--data-dir` there spun a core at 90% and ignored Ctrl-C); one level at a time ends with that ENOENT.
 * An existing `dir` that is not a directory is an error (ENOTDIR).
 */
export async function makeDir(dir: string, mode = 0o777): Promise<void> {
  const missing: string[] = []
  let at = resolve(dir)
  for (;;) {
    const s = await stat(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    if (s) {
      if (!s.isDirectory()) throw Object.assign(new Error(`${at} is not a directory`), { code: 'ENOTDIR' })
      break
    }
    missing.push(at)
    const parent = dirname(at)
    if (parent === at) break
    at = parent
  }
  for (const d of missing.reverse()) {
    await mkdir(d, { mode }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err
      // another process made it meanwhile: fine if it is a directory
      if (!(await stat(d)).isDirectory())
        throw Object.assign(new Error(`${d} is not a directory`), { code: 'ENOTDIR' })
    })
  }
}

/**
 * Makes `dir` (and missing parents) with mode 0700, or makes an existing `dir` private: a directory that
 * other users may enter or read (any group/other bit) is tightened to 0700 when this user owns it, with a
 * warning naming it and its old mode; when it cannot be (another owner, a read-only mount), a warning
 * names it, since what lies in it (identity key, control token, datastore) is then exposed.
 */
export async function ensurePrivateDir(dir: string, logger?: Logger): Promise<void> {
  await makeDir(dir, 0o700)
  const s = await stat(dir)
  if (!s.isDirectory()) throw Object.assign(new Error(`${dir} is not a directory`), { code: 'ENOTDIR' })
  const mode = s.mode & 0o777
  const uid = process.getuid?.()
  if ((mode & 0o077) === 0 || uid === undefined) return
  const was = `mode ${mode.toString(8).padStart(4, '0')}`
  if (s.uid === uid) {
    try {
      await chmod(dir, 0o700)
      logger?.warn(`${dir} was open to other users (${was}); restricted it to 0700`)
      return
    } catch (err) {
      logger?.warn(
        `${dir} is open to other users (${was}) and could not be restricted (${(err as Error).message}): run chmod 700 ${dir}`,
      )
      return
    }
  }
  logger?.warn(
    `${dir} is open to other users (${was}) and belongs to uid ${s.uid}, not to this user (uid ${uid}): its files can be read by others; have its owner run chmod 700 ${dir}`,
  )
}
