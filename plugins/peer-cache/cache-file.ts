/** The cache file: its format, how it is read and checked, written atomically, and moved aside. */
import { constants } from 'node:fs'
import { lstat, open, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { makeDir, tempFileFor, z } from 'meshkit/plugin'
import { type CachedPeer, dialable, MAX_ADDRESS_CHARS, stripPeer, validPeerId } from './cached-peer.js'

/** A cache file larger than this is not read (it is treated as corrupt and kept aside). */
export const MAX_CACHE_FILE_BYTES = 4 * 1024 * 1024

/** The version of the file's format (`{ version, updated, peers }`). */
export const FORMAT_VERSION = 1

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const time = z.number().min(0).max(8.64e15)
const entrySchema = z.object({
  id: z.string().min(1).max(200),
  addrs: z.array(z.string().max(MAX_ADDRESS_CHARS)).max(1000),
  successes: count,
  failures: count,
  lastSeen: time,
  lastFailure: time.optional(),
  streak: count.optional(),
  uptime: time.optional(),
  heard: z.array(z.string().max(MAX_ADDRESS_CHARS)).max(1000).optional(),
})
const fileSchema = z.object({ version: z.literal(FORMAT_VERSION), peers: z.array(z.unknown()).max(100_000) })

/** Reads and checks a cache file's text: the good entries, and what was wrong with the rest. */
export function parseCacheFile(
  text: string,
  maxAddressesPerPeer = 64,
): { peers: CachedPeer[]; problems: string[] } {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    return { peers: [], problems: [`not JSON (${err instanceof Error ? err.message : String(err)})`] }
  }
  const top = fileSchema.safeParse(json)
  if (!top.success) {
    const version = (json as { version?: unknown } | null)?.version
    return {
      peers: [],
      problems: [
        typeof version === 'number' && version !== FORMAT_VERSION
          ? `format version ${version}, expected ${FORMAT_VERSION}`
          : `not a peer cache (expected { version: ${FORMAT_VERSION}, peers: [...] })`,
      ],
    }
  }
  const peers = new Map<string, CachedPeer>()
  let bad = 0
  for (const raw of top.data.peers) {
    const entry = entrySchema.safeParse(raw)
    if (!entry.success || !validPeerId(entry.data.id) || peers.has(entry.data.id)) {
      bad++
      continue
    }
    const clean = (list: string[]) =>
      [...new Set(list.map((a) => stripPeer(a, entry.data.id)))].filter(dialable)
    const addrs = clean(entry.data.addrs)
    const heard = clean(entry.data.heard ?? [])
    if (addrs.length !== entry.data.addrs.length || heard.length !== (entry.data.heard ?? []).length) bad++
    if (addrs.length === 0 && heard.length === 0) continue
    const { heard: _, ...rest } = entry.data
    peers.set(entry.data.id, {
      ...rest,
      addrs: addrs.slice(0, maxAddressesPerPeer),
      ...(addrs.length === 0 ? { heard: heard.slice(0, maxAddressesPerPeer) } : {}),
    })
  }
  return { peers: [...peers.values()], problems: bad > 0 ? [`${bad} malformed entries dropped`] : [] }
}

/**
 * The best of `peers` (best first) whose entries fit in a file its next start reads (MAX_CACHE_FILE_BYTES,
 * as `JSON.stringify(file, null, 2)` writes it): a big cache (`maxPeers`, `maxAddressesPerPeer` at their
 * largest) of long addresses, e.g. told by peers, must not grow a file the next start sets aside whole.
 */
export function fitInFile<T extends object>(peers: readonly T[]): T[] {
  let room = MAX_CACHE_FILE_BYTES - 4096 // the file's own lines
  const out: T[] = []
  for (const p of peers) {
    const text = JSON.stringify(p, null, 2)
    // each line indented by 4 more inside the file's peers array, and ",\n" after the entry
    room -= Buffer.byteLength(text) + 4 * (text.split('\n').length + 1)
    if (room < 0) break
    out.push(p)
  }
  return out
}

/** A free name for a backup of `file`: `<file>.corrupt`, else `<file>.corrupt.1`, `.2`, ... */
export async function backupName(file: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const candidate = i === 0 ? `${file}.corrupt` : `${file}.corrupt.${i}`
    const exists = await lstat(candidate).then(
      () => true,
      () => false,
    )
    if (!exists) return candidate
  }
  return `${file}.corrupt.${Date.now()}`
}

/** Writes `text` to `file` atomically: a private temp file (0600) beside it, synced, then renamed over it. */
export async function writeAtomic(file: string, text: string): Promise<void> {
  await makeDir(dirname(file), 0o700)
  const temp = tempFileFor(file)
  try {
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}
