/** What an event says about a message's payload: a bounded text preview, never the payload itself. */
export interface PayloadPreview {
  /** The first characters of the payload as UTF-8 text; unset when its start is not UTF-8. */
  text?: string
  /** True when `text` is only the start of the payload. */
  truncated?: boolean
  /** True when the payload's start is not UTF-8 text. */
  binary?: boolean
}

/**
 * A preview of at most `maxChars` characters, decoded from at most `4 * maxChars` bytes of `data`
 * (O(maxChars), whatever the payload's size).
 */
export function previewOf(data: Uint8Array, maxChars: number): PayloadPreview {
  if (maxChars <= 0) return { truncated: data.byteLength > 0 }
  const head = data.subarray(0, maxChars * 4)
  let decoded: string
  try {
    // stream: an incomplete sequence cut at the end of `head` is held back, not an error
    decoded = new TextDecoder('utf-8', { fatal: true }).decode(head, {
      stream: head.byteLength < data.byteLength,
    })
  } catch {
    return { binary: true }
  }
  const chars = Array.from(decoded)
  if (chars.length > maxChars) return { text: chars.slice(0, maxChars).join(''), truncated: true }
  return { text: decoded, truncated: head.byteLength < data.byteLength }
}

/** The whole payload as text when it is valid UTF-8, else undefined. */
export function utf8OrUndefined(data: Uint8Array): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(data)
  } catch {
    return undefined
  }
}
