/** `<dataDir>/control.json`: how the CLI finds a running control API (written while the server runs). */
import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { type ProcessIdentity, selfIdentity } from 'meshkit'
import { sweepTempFiles, tempFileFor } from 'meshkit/plugin'

/** The discovery file of a running control API in the data dir: `{ url, pid, peerId, startedAt }`. */
export const CONTROL_DISCOVERY_FILE = 'control.json'

export interface DiscoveryInfo {
  url: string
  socketPath?: string
  peerId?: string
  /** When the server started (ms since the epoch). */
  startedAt: number
}

/** Writes the discovery file (mode 0600) in one step: a temp file renamed into place. */
export async function writeDiscovery(path: string, server: DiscoveryInfo): Promise<void> {
  const me: ProcessIdentity = selfIdentity()
  const info = {
    url: server.url,
    socketPath: server.socketPath,
    pid: process.pid,
    processStart: me.start,
    boot: me.boot,
    pidns: me.pidns,
    peerId: server.peerId,
    startedAt: new Date(server.startedAt).toISOString(),
  }
  // a server killed between writing its temp file and the rename left that file behind
  await sweepTempFiles(path)
  const temp = tempFileFor(path)
  await writeFile(temp, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
  await rename(temp, path)
}

/** Removes control.json unless another server has replaced it meanwhile. */
export async function removeOwnDiscovery(file: string, url: string): Promise<void> {
  try {
    const info = JSON.parse(await readFile(file, 'utf8')) as { url?: string; pid?: number }
    if (info.url !== url || info.pid !== process.pid) return
  } catch {
    // missing or unreadable: nothing of ours to remove
    return
  }
  await rm(file, { force: true })
}
