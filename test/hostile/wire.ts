/**
 * Byte-level helpers for hostile peers: varints, length prefixes, a minimal protobuf encoder/decoder
 * (kad-dht, identify and circuit relay messages are written by hand so that any field can be forged),
 * and stream I/O that never waits unbounded.
 */
import { randomBytes } from 'node:crypto'
import type { Stream } from '@libp2p/interface'
import type { Tally } from './report.js'

/** Unsigned LEB128 varint of `n` (up to 2^53). */
export function varint(n: number | bigint): Uint8Array {
  let v = BigInt(n)
  const out: number[] = []
  do {
    let byte = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) byte |= 0x80
    out.push(byte)
  } while (v > 0n)
  return Uint8Array.from(out)
}

/** Reads a varint at `offset`: [value, bytes used], or undefined when the buffer ends first. */
export function readVarint(buf: Uint8Array, offset = 0): [number, number] | undefined {
  let value = 0
  let shift = 0
  for (let i = offset; i < buf.length && i < offset + 10; i++) {
    value += (buf[i] & 0x7f) * 2 ** shift
    shift += 7
    if ((buf[i] & 0x80) === 0) return [value, i - offset + 1]
  }
  return undefined
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** `bytes` with a varint length prefix (libp2p's `lp` framing). */
export const lp = (bytes: Uint8Array): Uint8Array => concat([varint(bytes.length), bytes])

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)

export const json = (value: unknown): Uint8Array => utf8(JSON.stringify(value))

/** Random bytes (crypto-strong; fuzz input needs no reproducibility, only variety). */
export const noise = (n: number): Uint8Array => new Uint8Array(randomBytes(n))

/** A random integer in [min, max]. */
export const between = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))

/** A random lowercase hex string of `n` characters. */
export const hex = (n: number): string =>
  randomBytes(Math.ceil(n / 2))
    .toString('hex')
    .slice(0, n)

// --- protobuf ------------------------------------------------------------------------------------

/** A protobuf field: varint (wire type 0) for numbers, length-delimited (2) for bytes and strings. */
export type PbValue = number | bigint | string | Uint8Array

/** Encodes fields in the given order: `[fieldNumber, value]` pairs (repeat a number for a repeated field). */
export function pb(fields: ReadonlyArray<readonly [number, PbValue | undefined]>): Uint8Array {
  const parts: Uint8Array[] = []
  for (const [field, value] of fields) {
    if (value === undefined) continue
    if (typeof value === 'number' || typeof value === 'bigint') {
      parts.push(varint(field * 8), varint(value))
    } else {
      const bytes = typeof value === 'string' ? utf8(value) : value
      parts.push(varint(field * 8 + 2), varint(bytes.length), bytes)
    }
  }
  return concat(parts)
}

/** Decoded protobuf fields: field number -> values (numbers for varints, bytes for length-delimited). */
export type PbFields = Map<number, Array<number | Uint8Array>>

/** Decodes one protobuf message (varint and length-delimited fields; others end the decoding). */
export function unpb(buf: Uint8Array): PbFields {
  const fields: PbFields = new Map()
  let at = 0
  while (at < buf.length) {
    const key = readVarint(buf, at)
    if (!key) break
    at += key[1]
    const field = Math.floor(key[0] / 8)
    const type = key[0] % 8
    let value: number | Uint8Array
    if (type === 0) {
      const v = readVarint(buf, at)
      if (!v) break
      at += v[1]
      value = v[0]
    } else if (type === 2) {
      const len = readVarint(buf, at)
      if (!len || at + len[1] + len[0] > buf.length) break
      at += len[1]
      value = buf.subarray(at, at + len[0])
      at += len[0]
    } else break
    const list = fields.get(field) ?? []
    list.push(value)
    fields.set(field, list)
  }
  return fields
}

/** The length-delimited values of `field` as UTF-8 strings. */
export const pbStrings = (fields: PbFields, field: number): string[] =>
  (fields.get(field) ?? []).filter((v) => v instanceof Uint8Array).map((v) => new TextDecoder().decode(v))

// --- streams -------------------------------------------------------------------------------------

const toBytes = (data: Uint8Array | { subarray(): Uint8Array }): Uint8Array =>
  data instanceof Uint8Array ? data : data.subarray()

/**
 * Everything read from a stream, with how the reading ended: `closed` (the remote closed its end),
 * `reset` (the remote reset or the stream was aborted), `timeout`, `max` (enough bytes) or `aborted`.
 */
export interface ReadResult {
  bytes: Uint8Array
  end: 'closed' | 'reset' | 'timeout' | 'max' | 'aborted'
}

/**
 * Collects what a stream receives. Attach it right after the stream is opened (before writing), so no
 * data is missed; `read()` then waits (bounded) for `maxBytes`, the remote's close, a reset or a timeout.
 */
export class StreamReader {
  readonly #chunks: Uint8Array[] = []
  #length = 0
  #ended?: 'closed' | 'reset'
  #wake?: () => void

  constructor(
    readonly stream: Stream,
    tally?: Tally,
  ) {
    stream.addEventListener('message', (evt) => {
      const bytes = toBytes(evt.data)
      this.#chunks.push(bytes)
      this.#length += bytes.length
      tally?.received(bytes.length)
      this.#wake?.()
    })
    stream.addEventListener('remoteCloseWrite', () => {
      this.#ended ??= 'closed'
      this.#wake?.()
    })
    stream.addEventListener('close', (evt) => {
      this.#ended ??= evt.error ? 'reset' : 'closed'
      if (evt.error && !evt.local) tally?.inc('streams_reset_by_target')
      this.#wake?.()
    })
  }

  get length(): number {
    return this.#length
  }

  /** How the stream ended so far (undefined: still open for reading). */
  get ended(): 'closed' | 'reset' | undefined {
    return this.#ended
  }

  /** All bytes received so far. */
  bytes(): Uint8Array {
    return concat(this.#chunks)
  }

  /** Waits until `maxBytes` arrived, the stream ended, `timeoutMs` passed or `signal` aborted. */
  async read({
    timeoutMs,
    maxBytes = Number.POSITIVE_INFINITY,
    signal,
  }: {
    timeoutMs: number
    maxBytes?: number
    signal?: AbortSignal
  }): Promise<ReadResult> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.#length >= maxBytes) return { bytes: this.bytes(), end: 'max' }
      if (this.#ended) return { bytes: this.bytes(), end: this.#ended }
      if (signal?.aborted) return { bytes: this.bytes(), end: 'aborted' }
      const left = deadline - Date.now()
      if (left <= 0) return { bytes: this.bytes(), end: 'timeout' }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          this.#wake = undefined
          resolve()
        }
        const timer = setTimeout(done, left)
        signal?.addEventListener('abort', done, { once: true })
        this.#wake = done
      })
    }
  }

  /**
   * Reads one varint-length-prefixed message (waits for the whole of it, bounded): the message, or
   * undefined when the stream ended or the time ran out first. Bytes after it stay unread.
   */
  async readLp(timeoutMs: number, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const buf = this.bytes()
      const len = readVarint(buf)
      if (len && buf.length >= len[1] + len[0]) {
        const message = buf.slice(len[1], len[1] + len[0])
        const rest = buf.slice(len[1] + len[0])
        this.#chunks.length = 0
        this.#chunks.push(rest)
        this.#length = rest.length
        return message
      }
      const need = len ? len[1] + len[0] : buf.length + 1
      const r = await this.read({ timeoutMs: Math.max(0, deadline - Date.now()), maxBytes: need, signal })
      if (r.end !== 'max') return undefined
    }
  }
}

/** Sends `bytes`, waiting (bounded by `signal`) for the stream to drain when its buffer is full. */
export async function send(stream: Stream, bytes: Uint8Array, tally?: Tally, signal?: AbortSignal) {
  if (stream.writeStatus !== 'writable') throw new Error(`stream not writable (${stream.writeStatus})`)
  tally?.sent(bytes.length)
  if (!stream.send(bytes)) await stream.onDrain({ signal })
}

/** Closes a stream gracefully within `ms`, else aborts it. Never throws. */
export async function closeSoon(stream: Stream, ms = 1000): Promise<void> {
  try {
    await stream.close({ signal: AbortSignal.timeout(ms) })
  } catch {
    stream.abort(new Error('closed by the hostile peer'))
  }
}

/** Resolves after `ms` or when `signal` aborts (never rejects). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}
