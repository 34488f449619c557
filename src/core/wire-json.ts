/**
 * Strict decoding of a JSON message from the network, for plugins' small protocols: at most `maxBytes`,
 * valid UTF-8, a JSON object (not an array or a primitive). Anything else is handed to `fail` with the
 * reason, which throws the protocol's own error.
 */
export function decodeJsonObject(
  bytes: Uint8Array,
  maxBytes: number,
  fail: (reason: string) => never,
): Record<string, unknown> {
  if (bytes.byteLength > maxBytes) fail(`${bytes.byteLength} bytes (max ${maxBytes})`)
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch {
    fail('not UTF-8 JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail('not an object')
  return value as Record<string, unknown>
}

/** Resolves after `ms`, or at once when `signal` aborts (never rejects): for bounded waits in loops. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const t = setTimeout(resolve, ms)
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t)
        resolve()
      },
      { once: true },
    )
  })
}
