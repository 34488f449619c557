import { decodeJsonObject } from 'meshkit/plugin'
import type { Uint8ArrayList } from 'uint8arraylist'
/** The tag exchange: peers tell each other their topic tags, as one length-prefixed UTF-8 JSON message. */
export const TAGS_PROTOCOL = '/mesh/tags/1.0.0'

/** Hard limits on what a peer may send; anything beyond resets the stream. */
export const TAG_LIMITS = {
  /** Bytes in one length-prefixed message. */
  maxMessageBytes: 8 * 1024,
  /** Tags in one set. */
  maxTags: 64,
  /** Characters per tag. */
  maxTagLength: 64,
} as const

/** `{ v: 1, tags: [...] }`: the sender's whole tag set (it replaces what was known before). */
export interface TagsMessage {
  v: 1
  tags: string[]
}

export class TagsWireError extends Error {
  override name = 'TagsWireError'
}

function fail(reason: string): never {
  throw new TagsWireError(`malformed tags message: ${reason}`)
}

/**
 * Checks a tag list against the limits (non-empty strings of at most `maxTagLength` characters, at most
 * `maxTags` of them) and returns it without duplicates, in first-seen order.
 */
export function checkTags(value: unknown): string[] {
  if (!Array.isArray(value)) fail('tags is not an array')
  if (value.length > TAG_LIMITS.maxTags) fail(`${value.length} tags (max ${TAG_LIMITS.maxTags})`)
  for (const t of value)
    if (typeof t !== 'string' || t.length === 0 || t.length > TAG_LIMITS.maxTagLength) fail('bad tag')
  return [...new Set(value as string[])]
}

export function encodeTags(tags: readonly string[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ v: 1, tags: [...tags] } satisfies TagsMessage))
}

export function decodeTags(bytes: Uint8Array): TagsMessage {
  const m: { v?: unknown; tags?: unknown } = decodeJsonObject(bytes, TAG_LIMITS.maxMessageBytes, fail)
  if (m.v !== 1) fail('unknown version')
  return { v: 1, tags: checkTags(m.tags) }
}

/** Bytes of a length prefix for messages up to `maxMessageBytes` (a varint: 7 bits a byte). */
const MAX_LENGTH_BYTES = Math.ceil(Math.log2(TAG_LIMITS.maxMessageBytes + 1) / 7)

/**
 * The length-prefix decoder for `lpStream(stream, { lengthDecoder })`. @libp2p/utils reads a prefix byte
 * by byte while its decoder throws a RangeError ("need more bytes"), and checks `maxLengthLength` only
 * once a varint ended: a peer that sends bytes with the continuation bit set forever is read (and
 * buffered) until the stream ends or times out. This decoder gives up after the bytes a prefix for
 * `maxMessageBytes` can take.
 */
export function decodeLengthPrefix(data: Uint8ArrayList): number {
  let value = 0
  for (let i = 0; i < data.byteLength; i++) {
    const byte = data.get(i)
    value += (byte & 0x7f) * 2 ** (7 * i)
    if ((byte & 0x80) === 0) return value
    if (i + 1 >= MAX_LENGTH_BYTES) fail(`length prefix longer than ${MAX_LENGTH_BYTES} bytes`)
  }
  throw new RangeError('incomplete length prefix')
}
