/**
 * The NAT probe's wire format (RFC 5780 in spirit, JSON instead of STUN attributes).
 *
 * UDP: one datagram per request, one per reply.
 * - request `{v:1, t:'probe', id, via?, pad?}`: `via` asks for the reply from the server's `other-port`
 *   (same IP), `other-ip` (same port) or `other-both`; without it the receiving socket answers.
 * - reply `{v:1, t:'seen', id, seen, from, udp?, tcp?}`: `seen` is the source address:port the server
 *   saw (the mapped address), `from` the server address that sends the reply; `udp`/`tcp` list the server's
 *   probe endpoints (RFC 5780's OTHER-ADDRESS), only when the reply stays no larger than the request (the
 *   client pads its requests): a probe server never sends more bytes than it received.
 *
 * TCP: one newline-terminated JSON line each way per connection, then the server closes.
 * - `{v:1, t:'probe', id}` -> `{v:1, t:'seen', id, seen, from, udp, tcp}`
 * - `{v:1, t:'callback', id, via}` -> `{v:1, t:'callback-ok', id, seen}`; then the server connects to
 *   `seen` (the connection's own source address, never an address named by the client) from `via` and
 *   sends `{v:1, t:'hello', id, from}`: the TCP filtering test.
 */

export const PROBE_VERSION = 1
/** Longest accepted datagram / TCP line (bytes). */
export const MAX_MESSAGE_BYTES = 512
/** Requests are padded to this size so that replies (with the endpoint lists) fit in as many bytes. */
export const CLIENT_REQUEST_BYTES = 480
export const DEFAULT_PROBE_PORTS: readonly [number, number] = [3478, 3479]
/** The libp2p protocol a probe server serves: a one-line JSON answer with its probe endpoints. */
export const NAT_PROBE_PROTOCOL = '/mesh/nat-probe/1.0.0'

export type Via = 'other-port' | 'other-ip' | 'other-both'
export const VIAS: readonly Via[] = ['other-port', 'other-ip', 'other-both']

export type ProbeMessage =
  | { v: 1; t: 'probe'; id: string; via?: Via; pad?: string }
  | { v: 1; t: 'seen'; id: string; seen: string; from: string; udp?: string[]; tcp?: string[] }
  | { v: 1; t: 'callback'; id: string; via: Via }
  | { v: 1; t: 'callback-ok'; id: string; seen: string }
  | { v: 1; t: 'hello'; id: string; from: string }
  | { v: 1; t: 'error'; id: string; reason: string }

const ID = /^[A-Za-z0-9._-]{1,64}$/
const ADDR = /^(\d{1,3}\.){3}\d{1,3}:\d{1,5}$/

export function isIpv4(ip: string): boolean {
  const parts = ip.split('.')
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)
}

export function isAddr(a: unknown): a is string {
  if (typeof a !== 'string' || !ADDR.test(a)) return false
  const { ip, port } = splitAddr(a)
  return isIpv4(ip) && port > 0 && port <= 65535
}

export const joinAddr = (ip: string, port: number): string => `${ip}:${port}`

/** The /24 of an IPv4 address (`198.51.100.0/24`), for limits per source network; anything else as is. */
export function subnetOf(ip: string): string {
  const m = /^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$/.exec(ip)
  return m ? `${m[1]}.0/24` : ip
}

export function splitAddr(a: string): { ip: string; port: number } {
  const i = a.lastIndexOf(':')
  return { ip: a.slice(0, i), port: Number(a.slice(i + 1)) }
}

const addrList = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 8 && v.every(isAddr)

/** Parses and validates one message (datagram or line); undefined for anything malformed or oversized. */
export function parseMessage(buf: Uint8Array | string): ProbeMessage | undefined {
  if (buf.length > MAX_MESSAGE_BYTES) return undefined
  let m: Record<string, unknown>
  try {
    m = JSON.parse(typeof buf === 'string' ? buf : Buffer.from(buf).toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof m !== 'object' || m === null || m.v !== PROBE_VERSION) return undefined
  if (typeof m.id !== 'string' || !ID.test(m.id)) return undefined
  const via = m.via === undefined || VIAS.includes(m.via as Via)
  switch (m.t) {
    case 'probe':
      return via && (m.pad === undefined || typeof m.pad === 'string') ? (m as ProbeMessage) : undefined
    case 'callback':
      return m.via !== undefined && via ? (m as ProbeMessage) : undefined
    case 'seen':
      return isAddr(m.seen) &&
        isAddr(m.from) &&
        (m.udp === undefined || addrList(m.udp)) &&
        (m.tcp === undefined || addrList(m.tcp))
        ? (m as ProbeMessage)
        : undefined
    case 'callback-ok':
      return isAddr(m.seen) ? (m as ProbeMessage) : undefined
    case 'hello':
      return isAddr(m.from) ? (m as ProbeMessage) : undefined
    case 'error':
      return typeof m.reason === 'string' ? (m as ProbeMessage) : undefined
    default:
      return undefined
  }
}

export function encodeMessage(m: ProbeMessage): Buffer {
  return Buffer.from(JSON.stringify(m), 'utf8')
}

/**
 * A probe server address as configs give it: `ip:port`, or a multiaddr `/ip4/<ip>/udp/<port>` or
 * `/ip4/<ip>/tcp/<port>` (the server serves UDP and TCP on the same ports by default). Undefined if invalid.
 */
export function parseServerAddress(s: string): string | undefined {
  const ma = /^\/ip4\/([^/]+)\/(udp|tcp)\/(\d+)(\/.*)?$/.exec(s)
  const a = ma ? joinAddr(ma[1], Number(ma[3])) : s
  return isAddr(a) ? a : undefined
}

/**
 * A token bucket per key (source IP) plus a global one. Bounded: at most `maxKeys` keys are tracked; past
 * that, unknown keys are refused until old ones are swept.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>()
  #global: { tokens: number; at: number }

  constructor(
    private readonly perKey: { burst: number; perSecond: number },
    private readonly global: { burst: number; perSecond: number },
    private readonly maxKeys = 10_000,
  ) {
    this.#global = { tokens: global.burst, at: Date.now() }
  }

  #take(b: { tokens: number; at: number }, rate: { burst: number; perSecond: number }, now: number): boolean {
    b.tokens = Math.min(rate.burst, b.tokens + (Math.max(0, now - b.at) / 1000) * rate.perSecond)
    b.at = Math.max(b.at, now)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  allow(key: string, now = Date.now()): boolean {
    let b = this.#buckets.get(key)
    if (!b) {
      if (this.#buckets.size >= this.maxKeys) this.sweep(now)
      if (this.#buckets.size >= this.maxKeys) return false
      b = { tokens: this.perKey.burst, at: now }
      this.#buckets.set(key, b)
    }
    // the per-key bucket is checked first: one flooding source cannot drain the global one
    if (!this.#take(b, this.perKey, now)) return false
    return this.#take(this.#global, this.global, now)
  }

  /** Forgets keys whose buckets are full again. */
  sweep(now = Date.now()): void {
    for (const [k, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.perKey.perSecond >= this.perKey.burst)
        this.#buckets.delete(k)
    }
  }

  get size(): number {
    return this.#buckets.size
  }
}
