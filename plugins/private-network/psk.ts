/**
 * Pre-shared keys in the pnet key file format (as go-libp2p, IPFS and @libp2p/pnet read them):
 *
 * ```
 * /key/swarm/psk/1.0.0/
 * /base16/
 * <64 hex digits: 32 random bytes>
 * ```
 *
 * A key is a secret: its text never appears in an error, a log line, a config diff or `JSON.stringify`.
 * What may be shown is its fingerprint (the first 8 bytes of its SHA-256, in hex).
 */
import { createHash, randomBytes } from 'node:crypto'
import { constants, type Stats } from 'node:fs'
import { open } from 'node:fs/promises'
import { inspect } from 'node:util'

export const PSK_HEADER = '/key/swarm/psk/1.0.0/'
export const PSK_ENCODING = '/base16/'
/** Bytes of the key itself. */
export const PSK_KEY_BYTES = 32
/** Largest key file read (a valid one is about 95 bytes). */
export const PSK_FILE_MAX_BYTES = 1024

/** Why a value is not a pre-shared key; its message never contains the value. */
export class PskFormatError extends Error {
  override name = 'PskFormatError'
}

const decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * A parsed pre-shared key. It prints (`String()`, `JSON.stringify`, `util.inspect`) as its fingerprint
 * only; `fileBytes()` gives the pnet file bytes @libp2p/pnet takes. Parsing the same key twice in a
 * process gives the same object (config reloads see an unchanged key as unchanged).
 */
export class PreSharedKey {
  readonly #key: Uint8Array
  /** The first 8 bytes of the key's SHA-256, in hex: safe to show, tells keys apart. */
  readonly fingerprint: string

  private constructor(key: Uint8Array, digest: string) {
    this.#key = key
    this.fingerprint = digest.slice(0, 16)
  }

  /** The key in the pnet file format, as bytes (a copy). */
  fileBytes(): Uint8Array {
    return new TextEncoder().encode(formatPsk(this.#key))
  }

  toString(): string {
    return `[pre-shared key ${this.fingerprint}]`
  }

  toJSON(): string {
    return this.toString()
  }

  [inspect.custom](): string {
    return this.toString()
  }

  /** @internal the one object per key (held weakly: a key no config uses any more is forgotten). */
  static of(key: Uint8Array): PreSharedKey {
    const digest = createHash('sha256').update(key).digest('hex')
    const known = interned.get(digest)?.deref()
    if (known) return known
    for (const [d, ref] of interned) if (ref.deref() === undefined) interned.delete(d)
    const psk = new PreSharedKey(Uint8Array.from(key), digest)
    interned.set(digest, new WeakRef(psk))
    return psk
  }
}

const interned = new Map<string, WeakRef<PreSharedKey>>()

function formatPsk(key: Uint8Array): string {
  return `${PSK_HEADER}\n${PSK_ENCODING}\n${Buffer.from(key).toString('hex')}\n`
}

/**
 * Parses a key in the pnet file format (a string or its UTF-8 bytes; `\n` or `\r\n` line ends, a final
 * newline optional). Throws a {@link PskFormatError} saying what is wrong, never what it read.
 */
export function parsePsk(input: string | Uint8Array): PreSharedKey {
  let text: string
  if (typeof input === 'string') text = input
  else {
    if (input.byteLength > PSK_FILE_MAX_BYTES)
      throw new PskFormatError(`more than ${PSK_FILE_MAX_BYTES} bytes`)
    try {
      text = decoder.decode(input)
    } catch {
      throw new PskFormatError('not UTF-8 text')
    }
  }
  if (text.length > PSK_FILE_MAX_BYTES) throw new PskFormatError(`more than ${PSK_FILE_MAX_BYTES} characters`)
  const lines = text.split(/\r?\n/)
  while (lines.length > 3 && lines.at(-1) === '') lines.pop()
  if (lines.length !== 3) throw new PskFormatError(`${lines.length} lines, expected 3`)
  const [header, encoding, hex] = lines.map((l) => l.trim())
  if (header !== PSK_HEADER) throw new PskFormatError(`the first line is not ${PSK_HEADER}`)
  if (encoding !== PSK_ENCODING)
    throw new PskFormatError(`the second line is not ${PSK_ENCODING} (other encodings are not supported)`)
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw new PskFormatError('the third line is not hexadecimal')
  if (hex.length !== PSK_KEY_BYTES * 2)
    throw new PskFormatError(`the key is ${Math.floor(hex.length / 2)} bytes, expected ${PSK_KEY_BYTES}`)
  return PreSharedKey.of(Buffer.from(hex, 'hex'))
}

/** A `psk` option that is not a key: why (the value itself is never kept; it prints as a placeholder). */
export class InvalidPsk {
  constructor(readonly reason: string) {}
  toJSON(): string {
    return '[invalid pre-shared key]'
  }
}

/** A new random key, as the text of a pnet key file. */
export function generatePsk(): string {
  return formatPsk(randomBytes(PSK_KEY_BYTES))
}

/** Why a key file could not be used (its `code`: `missing`, `unreadable`, `malformed`); never its content. */
export class PskFileError extends Error {
  override name = 'PskFileError'
  constructor(
    readonly file: string,
    readonly code: 'missing' | 'unreadable' | 'malformed',
    reason: string,
  ) {
    super(`the pre-shared key file ${file} ${reason}`)
  }
}

/** A key file as read: the key, and the file's permission bits (for a warning when others may read it). */
export interface PskFile {
  psk: PreSharedKey
  mode: number
}

/** Reads and parses a key file: a regular file of at most 1 KiB. */
export async function readPskFile(file: string): Promise<PskFile> {
  let handle: Awaited<ReturnType<typeof open>>
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw new PskFileError(file, 'missing', 'does not exist')
    throw new PskFileError(file, 'unreadable', `cannot be opened (${code ?? (err as Error).message})`)
  }
  try {
    let stat: Stats
    try {
      stat = await handle.stat()
    } catch (err) {
      throw new PskFileError(file, 'unreadable', `cannot be read (${(err as NodeJS.ErrnoException).code})`)
    }
    if (!stat.isFile()) throw new PskFileError(file, 'unreadable', 'is not a regular file')
    if (stat.size > PSK_FILE_MAX_BYTES)
      throw new PskFileError(file, 'malformed', `is ${stat.size} bytes (a key file is about 95)`)
    const buffer = new Uint8Array(PSK_FILE_MAX_BYTES + 1)
    let length = 0
    try {
      for (;;) {
        const { bytesRead } = await handle.read(buffer, length, buffer.byteLength - length)
        if (bytesRead === 0) break
        length += bytesRead
        if (length > PSK_FILE_MAX_BYTES) break
      }
    } catch (err) {
      throw new PskFileError(file, 'unreadable', `cannot be read (${(err as NodeJS.ErrnoException).code})`)
    }
    try {
      const psk = parsePsk(buffer.subarray(0, length))
      return { psk, mode: stat.mode & 0o777 }
    } catch (err) {
      throw new PskFileError(file, 'malformed', `is not a pnet key file: ${(err as Error).message}`)
    } finally {
      buffer.fill(0)
    }
  } finally {
    await handle.close().catch(() => {})
  }
}
