/**
 * `/mesh/nat-type/1.0.0`: two peers tell each other their NAT types (from the 'nat-classification'
 * capability), over whatever connection they have, relayed ones included (`runOnLimitedConnection`).
 * The dialer sends one line, the listener answers one line, both close. A line is JSON of at most
 * {@link MAX_NAT_TYPE_BYTES} bytes, newline-terminated: `{"v":1,"udp":"<type>","tcp":"<type>","addrs":[...]}`
 * (`addrs`: at most 8 direct multiaddrs, sent only by a public node; `"classifying":true` when the
 * sender's classification is still running: it sends the message again, on a new stream, once its type
 * is known or changes; `ip`: the sender's external IPv4 address as its classification saw it, sent by a
 * NATed node, so that two peers behind the same NAT know it). Anything else resets the stream; unknown
 * fields are ignored.
 */
import type { Stream } from '@libp2p/interface'
import { isNatType, type NatType } from 'meshkit/plugin'

export const NAT_TYPE_PROTOCOL = '/mesh/nat-type/1.0.0'
export const MAX_NAT_TYPE_BYTES = 1024

/** A peer's NAT type: the `nat-classification` vocabulary (core's `NatType`). */
export type PeerNatType = NatType
export { isNatType }

export interface NatTypeMessage {
  v: 1
  udp: PeerNatType
  tcp: PeerNatType
  /** Direct addresses (public nodes only). */
  addrs?: string[]
  /** The sender's classification is running: its type will follow in another message. */
  classifying?: boolean
  /** The sender's external IPv4 address (NATed senders): the same as ours means the same NAT. */
  ip?: string
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/

/** Parses one line; undefined for anything malformed, oversized or of another version. */
export function parseNatType(line: string | undefined): NatTypeMessage | undefined {
  if (line === undefined || new TextEncoder().encode(line).length > MAX_NAT_TYPE_BYTES) return undefined
  let m: unknown
  try {
    m = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return undefined
  const o = m as Record<string, unknown>
  if (o.v !== 1 || typeof o.udp !== 'string' || typeof o.tcp !== 'string') return undefined
  if (!isNatType(o.udp) || !isNatType(o.tcp)) return undefined
  let addrs: string[] | undefined
  if (o.addrs !== undefined) {
    if (
      !Array.isArray(o.addrs) ||
      o.addrs.length > 8 ||
      !o.addrs.every((a) => typeof a === 'string' && a.length <= 200 && /^\/ip[46]\/[^\s]+$/.test(a))
    )
      return undefined
    addrs = o.addrs as string[]
  }
  if (o.classifying !== undefined && typeof o.classifying !== 'boolean') return undefined
  if (o.ip !== undefined && (typeof o.ip !== 'string' || !IPV4.test(o.ip))) return undefined
  return {
    v: 1,
    udp: o.udp as PeerNatType,
    tcp: o.tcp as PeerNatType,
    ...(addrs ? { addrs } : {}),
    ...(o.classifying === true ? { classifying: true } : {}),
    ...(typeof o.ip === 'string' ? { ip: o.ip } : {}),
  }
}

export function encodeNatType(m: NatTypeMessage): Uint8Array {
  const bytes = new TextEncoder().encode(`${JSON.stringify(m)}\n`)
  if (bytes.length > MAX_NAT_TYPE_BYTES) throw new Error('nat-type message too large')
  return bytes
}

/** One line read from a stream, or why there is none (nothing in time, the stream ended, too long). */
export type NatTypeRead = { line: string } | { why: 'timeout' | 'ended' | 'oversized' }

/** Reads one newline-terminated line of at most MAX_NAT_TYPE_BYTES, bounded in time. */
export async function readNatTypeLine(stream: Stream, timeoutMs: number): Promise<NatTypeRead> {
  const bytes: number[] = []
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<NatTypeRead>((resolve) => {
    timer = setTimeout(() => resolve({ why: 'timeout' }), timeoutMs)
  })
  const read = (async (): Promise<NatTypeRead> => {
    for await (const chunk of stream) {
      const data = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      for (const b of data) {
        if (b === 0x0a) return { line: new TextDecoder().decode(Uint8Array.from(bytes)) }
        bytes.push(b)
        if (bytes.length > MAX_NAT_TYPE_BYTES) return { why: 'oversized' }
      }
    }
    return { why: 'ended' }
  })().catch((): NatTypeRead => ({ why: 'ended' }))
  try {
    return await Promise.race([read, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Whether a plain UDP punch can work between two NAT types (docs/nat.md: 13 of the 15 pairs; port-restricted cone + symmetric needs the birthday punch). */
export function canPunch(a: PeerNatType, b: PeerNatType): boolean {
  const hard = (x: PeerNatType, y: PeerNatType) =>
    x === 'symmetric' && (y === 'symmetric' || y === 'port-restricted-cone')
  return !hard(a, b) && !hard(b, a)
}
