/**
 * `/mesh/nat-probe/1.0.0`, a one-request libp2p protocol between probe servers (and clients):
 * - `{"v":1,"t":"endpoints"}` -> `{"udp":[...],"tcp":[...]}`: where this node's probe listens.
 * - `{"v":1,"t":"relay","proto":"udp"|"tcp","to":"ip:port","id":"..."}` -> `{"ok":true}`: "answer this
 *   probe from your address", asked by a partner server whose own host has one IP, for the other-IP test.
 *   Accepted only from configured partners (by peer id or by connection IP), rate-limited per partner.
 *   The asking server relays only for the source address of a probe it has just received, and only
 *   when the reply fits in that probe's size: a partner never sends more than the client sent.
 * Every line is newline-terminated JSON of at most 1 KiB; every read is bounded in time.
 */
import type { Libp2p, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { isAddr } from './wire.js'

export const MAX_LINE_BYTES = 1024

export type ProtocolRequest =
  | { v: 1; t: 'endpoints' }
  | { v: 1; t: 'relay'; proto: 'udp' | 'tcp'; to: string; id: string }

/** Reads one newline-terminated line (at most MAX_LINE_BYTES), or undefined on timeout / close / excess. */
export async function readLine(stream: Stream, timeoutMs: number): Promise<string | undefined> {
  let text = ''
  const timeout = new Promise<undefined>((resolve) => {
    const t = setTimeout(() => resolve(undefined), timeoutMs)
    t.unref?.()
  })
  const read = (async () => {
    for await (const chunk of stream) {
      text += new TextDecoder().decode(chunk instanceof Uint8Array ? chunk : chunk.subarray())
      const nl = text.indexOf('\n')
      if (nl >= 0) return text.slice(0, nl)
      if (text.length > MAX_LINE_BYTES) return undefined
    }
    return undefined
  })().catch(() => undefined)
  const line = await Promise.race([read, timeout])
  if (line === undefined) stream.abort(new Error('no valid line in time'))
  return line
}

export function writeLine(stream: Stream, value: unknown): void {
  stream.send(new TextEncoder().encode(`${JSON.stringify(value)}\n`))
}

export function parseRequest(line: string | undefined): ProtocolRequest | undefined {
  if (line === undefined) return undefined
  try {
    const m = JSON.parse(line)
    if (m?.v !== 1) return undefined
    if (m.t === 'endpoints') return m
    if (
      m.t === 'relay' &&
      (m.proto === 'udp' || m.proto === 'tcp') &&
      isAddr(m.to) &&
      typeof m.id === 'string' &&
      /^[A-Za-z0-9._-]{1,64}$/.test(m.id)
    )
      return m
  } catch {
    // not JSON
  }
  return undefined
}

/** Asks the peer at `addr` (a multiaddr, with or without /p2p/) one request; its answer line, parsed. */
export async function ask(
  libp2p: Libp2p,
  addr: string,
  protocol: string,
  request: ProtocolRequest,
  timeoutMs: number,
  force = false,
): Promise<Record<string, unknown> & { peer: string }> {
  const signal = AbortSignal.timeout(timeoutMs)
  // dial, then open the stream on the connection: its peer id lets callers reuse the connection next
  // time (an address without /p2p/ would be dialled anew each time); `force`: a new connection anyway
  const connection = await libp2p.dial(multiaddr(addr), { signal, force })
  const stream = await connection.newStream(protocol, { signal })
  try {
    writeLine(stream, request)
    const line = await readLine(stream, timeoutMs)
    if (line === undefined) throw new Error(`no answer from ${addr}`)
    const answer = JSON.parse(line)
    if (typeof answer !== 'object' || answer === null) throw new Error(`bad answer from ${addr}`)
    return { ...(answer as Record<string, unknown>), peer: connection.remotePeer.toString() }
  } finally {
    await stream
      .close({ signal: AbortSignal.timeout(1000) })
      .catch(() => stream.abort(new Error('close failed')))
  }
}

/** The probe endpoints a peer serves (over the protocol). */
export async function fetchEndpoints(
  libp2p: Libp2p,
  addr: string,
  protocol: string,
  timeoutMs: number,
  force = false,
): Promise<{ udp: string[]; tcp: string[]; peer: string }> {
  const a = await ask(libp2p, addr, protocol, { v: 1, t: 'endpoints' }, timeoutMs, force)
  const list = (v: unknown) => (Array.isArray(v) ? v.filter(isAddr).slice(0, 8) : [])
  return { udp: list(a.udp), tcp: list(a.tcp), peer: a.peer }
}
