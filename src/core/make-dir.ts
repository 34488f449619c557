import { mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'

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
