/**
 * Whether a connection has a two-way path, asked over that very connection: one ping round trip. An
 * inbound WebRTC connection whose identify did not finish within `inboundSettleMs` (a loaded host, or a
 * peer that does not speak identify) is asked this before it is judged to have carried nothing.
 */
import type { Connection, Stream } from '@libp2p/interface'

/** libp2p's ping protocol: every libp2p node answers it, or refuses it after a protocol negotiation. */
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const PING_BYTES = 32
/** Ids of identified connections remembered (identify may finish before the strategy looks). */
const MAX_IDENTIFIED = 512
/** The round trip that proves a connection whose identify did not finish in time. */
const PATH_PROBE_TIMEOUT_MS = 5000

/** Which connections have a two-way path: identify ran over them, or a round trip did. */
export class PathProof {
  /** Recently identified connection ids, and who waits for one. */
  readonly #identified = new Set<string>()
  readonly #waiters = new Map<string, () => void>()

  /** Identify ran over connection `id` (libp2p's `peer:identify`). */
  identified(id: string): void {
    this.#identified.add(id)
    if (this.#identified.size > MAX_IDENTIFIED)
      this.#identified.delete(this.#identified.values().next().value!)
    this.#waiters.get(id)?.()
  }

  /**
   * Whether `c` has a two-way path: identify ran over it (waiting at most `settleMs`), or else one round
   * trip over it within {@link PATH_PROBE_TIMEOUT_MS}. Identify can miss the wait on a loaded host (CI saw
   * a punched connection that carried the lab's echo closed as 'no-path'), or the peer may not speak it.
   */
  async carried(c: Connection, settleMs: number, signal: AbortSignal): Promise<boolean> {
    if (await this.#identifiedWithin(c, settleMs, signal)) return true
    if (c.status !== 'open' || signal.aborted) return false
    return roundTrip(c, AbortSignal.any([signal, AbortSignal.timeout(PATH_PROBE_TIMEOUT_MS)]))
  }

  #identifiedWithin(c: Connection, settleMs: number, signal: AbortSignal): Promise<boolean> {
    if (this.#identified.has(c.id)) return Promise.resolve(true)
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer)
        this.#waiters.delete(c.id)
        signal.removeEventListener('abort', finish)
        resolve(this.#identified.has(c.id) && c.status === 'open')
      }
      const timer = setTimeout(finish, settleMs)
      this.#waiters.set(c.id, finish)
      signal.addEventListener('abort', finish, { once: true })
    })
  }
}

/**
 * One round trip over `connection` within `signal`: a ping echoed back, or a negotiation that ended in
 * the remote refusing ping (it answered: a round trip too). False when nothing came back in time.
 */
export async function roundTrip(connection: Connection, signal: AbortSignal): Promise<boolean> {
  let stream: Stream | undefined
  const onAbort = () => stream?.abort(new Error('path probe timed out'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    stream = await connection.newStream(PING_PROTOCOL, { signal })
    if (signal.aborted) throw signal.reason
    const sent = crypto.getRandomValues(new Uint8Array(PING_BYTES))
    stream.send(sent)
    const got = new Uint8Array(PING_BYTES)
    let n = 0
    for await (const chunk of stream) {
      const bytes = chunk.subarray()
      got.set(bytes.subarray(0, PING_BYTES - n), n)
      n += Math.min(bytes.byteLength, PING_BYTES - n)
      if (n >= PING_BYTES) break
    }
    await stream.close({ signal }).catch(() => {})
    return n === PING_BYTES && sent.every((b, i) => got[i] === b)
  } catch (err) {
    stream?.abort(err instanceof Error ? err : new Error(String(err)))
    return (err as Error | undefined)?.name === 'UnsupportedProtocolError'
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}
