import { constants } from 'node:fs'
import { open, readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { meshError, reasonOf } from './errors.js'

/** The lock file that keeps two running nodes from sharing one data dir (and so one peer id). */
export const LOCK_FILE = 'node.lock'

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes `<dataDir>/node.lock` for this process; a lock left by a process that no longer runs is taken
 * over. Returns the release function. Throws MESH_ERR_DATA_DIR_LOCKED when a live process holds it.
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = join(dataDir, LOCK_FILE)
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
      await handle.writeFile(String(process.pid))
      await handle.close()
      return () => unlink(file).catch(() => {})
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw meshError('MESH_ERR_DATA_DIR', [dataDir, `cannot create ${LOCK_FILE}: ${reasonOf(err)}`], {
          cause: err,
        })
      }
    }
    const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10)
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
      throw meshError('MESH_ERR_DATA_DIR_LOCKED', [dataDir], {
        hint: `Process ${pid} runs a node on it: stop it, or give this node its own --data-dir.`,
      })
    }
    await unlink(file).catch(() => {}) // stale: its process is gone
  }
  throw meshError('MESH_ERR_DATA_DIR_LOCKED', [dataDir])
}
