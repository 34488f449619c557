import { randomBytes, timingSafeEqual } from 'node:crypto'
import { chmod, link, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { makeDir, sweepTempFiles, tempFileFor } from 'meshkit/plugin'

/** The control API token's file name in the data dir. */
export const CONTROL_TOKEN_FILE = 'control.token'

/** A token is 32 random bytes, base64url (43 characters). */
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/

/**
 * The control API token of a data dir: read from `<dataDir>/control.token`, or created there once
 * (32 random bytes, mode 0600, written to a temp file and linked into place so concurrent creators
 * agree on one token and a reader never sees a half-written file). A file with a wrong mode is
 * tightened to 0600; a file that does not hold a token (e.g. emptied by hand) is replaced.
 */
export async function loadOrCreateToken(dataDir: string): Promise<string> {
  await makeDir(dataDir, 0o700)
  const file = join(dataDir, CONTROL_TOKEN_FILE)
  await sweepTempFiles(file)
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = await readToken(file)
    if (existing) {
      const mode = (await stat(file)).mode & 0o777
      if (mode !== 0o600) await chmod(file, 0o600)
      return existing
    }
    if (existing === '') await rm(file, { force: true })
    const token = randomBytes(32).toString('base64url')
    const temp = tempFileFor(file)
    await writeFile(temp, `${token}\n`, { mode: 0o600, flag: 'wx' })
    try {
      await link(temp, file)
      return token
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      // another process created it first: use theirs (next loop)
    } finally {
      await rm(temp, { force: true })
    }
  }
  throw new Error(`could not create ${file}`)
}

/** The token in `file`; undefined when there is no file, '' when the file holds no valid token. */
export async function readToken(file: string): Promise<string | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  const token = text.trim()
  return TOKEN_PATTERN.test(token) ? token : ''
}

/** Compares a presented token with the expected one in constant time (for equal lengths). */
export function tokenMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false
  const a = Buffer.from(expected)
  const b = Buffer.from(presented)
  // compare against itself when lengths differ, so the time does not depend on where they differ
  if (a.length !== b.length) {
    timingSafeEqual(a, a)
    return false
  }
  return timingSafeEqual(a, b)
}
