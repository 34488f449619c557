/**
 * The `/mesh/birthday/1.0.0` wire format (see birthday.ts for the punch): JSON lines of at most
 * {@link MAX_BIRTHDAY_LINE_BYTES} bytes, parsed strictly (anything else is no message), and a bounded
 * reader of successive lines.
 */
import type { Stream } from '@libp2p/interface'
import { decodeJsonObject } from 'meshkit/plugin'

export const BIRTHDAY_PROTOCOL = '/mesh/birthday/1.0.0'
export const MAX_BIRTHDAY_LINE_BYTES = 512
/** Longest proof (a base64 STUN attestation, see stun-wire.ts). */
const MAX_PROOF_CHARS = 344

export type BirthdayMessage =
  | { v: 1; t: 'nonce'; nonce: string }
  | { v: 1; t: 'cone'; mapped: string; token: string; proof: string }
  | { v: 1; t: 'random'; ip: string; proof: string }
  | { v: 1; t: 'hit' }
  | { v: 1; t: 'miss'; reason: string }
  | { v: 1; t: 'pinned' }

/** A dotted IPv4 address. */
export const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/
const TOKEN = /^[0-9a-f]{24}$/
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
const isProof = (s: unknown): s is string =>
  typeof s === 'string' && s.length <= MAX_PROOF_CHARS && s.length % 4 === 0 && BASE64.test(s)
const isEndpoint = (s: unknown): s is string => {
  if (typeof s !== 'string') return false
  const i = s.lastIndexOf(':')
  const port = Number(s.slice(i + 1))
  return i > 0 && IPV4.test(s.slice(0, i)) && Number.isInteger(port) && port > 0 && port < 65536
}

/** One line (without its newline) as a birthday message; undefined for anything else. */
export function parseBirthdayMessage(line: string | undefined): BirthdayMessage | undefined {
  if (line === undefined) return undefined
  let o: Record<string, unknown>
  try {
    o = decodeJsonObject(new TextEncoder().encode(line), MAX_BIRTHDAY_LINE_BYTES, (reason) => {
      throw new Error(reason)
    })
  } catch {
    return undefined
  }
  if (o.v !== 1) return undefined
  const keys = Object.keys(o).length
  if (o.t === 'nonce' && typeof o.nonce === 'string' && TOKEN.test(o.nonce) && keys === 3)
    return { v: 1, t: 'nonce', nonce: o.nonce }
  if (
    o.t === 'cone' &&
    isEndpoint(o.mapped) &&
    typeof o.token === 'string' &&
    TOKEN.test(o.token) &&
    isProof(o.proof) &&
    keys === 5
  )
    return { v: 1, t: 'cone', mapped: o.mapped, token: o.token, proof: o.proof }
  if (o.t === 'random' && typeof o.ip === 'string' && IPV4.test(o.ip) && isProof(o.proof) && keys === 4)
    return { v: 1, t: 'random', ip: o.ip, proof: o.proof }
  if ((o.t === 'hit' || o.t === 'pinned') && keys === 2) return { v: 1, t: o.t }
  // printable ASCII only: the reason ends up in logs and events
  if (o.t === 'miss' && typeof o.reason === 'string' && /^[\x20-\x7e]{0,160}$/.test(o.reason) && keys === 3)
    return { v: 1, t: 'miss', reason: o.reason }
  return undefined
}

export function encodeBirthdayMessage(m: BirthdayMessage): Uint8Array {
  const bytes = new TextEncoder().encode(`${JSON.stringify(m)}\n`)
  if (bytes.byteLength > MAX_BIRTHDAY_LINE_BYTES) throw new Error('birthday message too large')
  return bytes
}

/** Why a {@link LineReader} returned no line: nothing in time, the stream ended, or a line too long. */
export type NoLine = 'timeout' | 'ended' | 'oversized'

/** Reads successive lines; `why` says why the last read gave none. */
export interface LineReader {
  (timeoutMs: number): Promise<string | undefined>
  readonly why: NoLine | undefined
}

/** Successive lines of a stream (each at most MAX_BIRTHDAY_LINE_BYTES), each read bounded. */
export function lineReader(stream: Stream): LineReader {
  const it = stream[Symbol.asyncIterator]()
  let buffered: number[] = []
  let pending: Promise<IteratorResult<Uint8Array | { subarray(): Uint8Array }>> | undefined
  let ended = false
  let why: NoLine | undefined
  const read = async (timeoutMs: number): Promise<string | undefined> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const nl = buffered.indexOf(0x0a)
      if (nl >= 0 && nl <= MAX_BIRTHDAY_LINE_BYTES) {
        const line = new TextDecoder().decode(Uint8Array.from(buffered.slice(0, nl)))
        buffered = buffered.slice(nl + 1)
        why = undefined
        return line
      }
      if (nl > MAX_BIRTHDAY_LINE_BYTES || buffered.length > MAX_BIRTHDAY_LINE_BYTES) {
        why = 'oversized'
        return undefined
      }
      if (ended) {
        why = 'ended'
        return undefined
      }
      pending ??= it.next()
      let timer: NodeJS.Timeout | undefined
      const r = await Promise.race([
        pending.catch(() => ({ done: true as const, value: undefined })),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()))
        }),
      ])
      clearTimeout(timer)
      if (r === undefined) {
        why = 'timeout'
        return undefined
      }
      pending = undefined
      if (r.done) {
        ended = true
        continue
      }
      const chunk = r.value instanceof Uint8Array ? r.value : r.value.subarray()
      for (const b of chunk) buffered.push(b)
    }
  }
  return Object.defineProperty(read, 'why', { get: () => why }) as LineReader
}
