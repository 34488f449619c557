/**
 * The client's side of a circuit relay v2 reservation (`/libp2p/circuit/relay/0.2.0/hop`, RESERVE), over
 * libp2p's public stream API: the relay-client makes its own reservations instead of driving the circuit
 * relay transport's private reservation store.
 *
 * Wire format (libp2p circuit-relay-v2 spec): one length-prefixed (uvarint) protobuf `HopMessage` each
 * way. Request `{type: RESERVE}`; answer `{type: STATUS, status, reservation: {expire, addrs, voucher},
 * limit: {duration, data}}`. Only the fields used here are decoded; unknown fields are skipped.
 */
import type { Connection } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'

export const HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'
/** Longest answer accepted. */
export const MAX_HOP_MESSAGE_BYTES = 4096

/** The spec's status codes (names as the relay server logs them). */
export const HOP_STATUS: Record<number, string> = {
  100: 'OK',
  200: 'RESERVATION_REFUSED',
  201: 'RESOURCE_LIMIT_EXCEEDED',
  202: 'PERMISSION_DENIED',
  203: 'CONNECTION_FAILED',
  204: 'NO_RESERVATION',
  400: 'MALFORMED_MESSAGE',
  401: 'UNEXPECTED_MESSAGE',
}

export interface HopAnswer {
  type?: number
  status?: number
  reservation?: { expire: bigint; addrs: Uint8Array[] }
  limit?: { duration?: number; data?: bigint }
}

/** `{type: RESERVE}`: field 1, varint 0. */
export const RESERVE_REQUEST = Uint8Array.of(0x08, 0x00)

class Reader {
  pos = 0
  constructor(private readonly buf: Uint8Array) {}
  get done() {
    return this.pos >= this.buf.length
  }
  varint(): bigint {
    let result = 0n
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint')
      const b = this.buf[this.pos++]
      result |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return result
    }
    throw new Error('varint too long')
  }
  bytes(): Uint8Array {
    const n = Number(this.varint())
    if (this.pos + n > this.buf.length) throw new Error('truncated field')
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }
  skip(wire: number): void {
    if (wire === 0) this.varint()
    else if (wire === 2) this.bytes()
    else if (wire === 1) this.pos += 8
    else if (wire === 5) this.pos += 4
    else throw new Error(`unsupported wire type ${wire}`)
    if (this.pos > this.buf.length) throw new Error('truncated field')
  }
  /** Calls `field(number, wireType)` for each field; it returns false to have the field skipped. */
  each(field: (n: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = Number(this.varint())
      const [n, wire] = [key >>> 3, key & 7]
      if (!field(n, wire)) this.skip(wire)
    }
  }
}

/** Decodes a HopMessage (the fields a RESERVE answer uses). Throws on malformed input. */
export function decodeHopAnswer(buf: Uint8Array): HopAnswer {
  const out: HopAnswer = {}
  const r = new Reader(buf)
  r.each((n, wire) => {
    if (n === 1 && wire === 0) out.type = Number(r.varint())
    else if (n === 5 && wire === 0) out.status = Number(r.varint())
    else if (n === 3 && wire === 2) {
      const res = { expire: 0n, addrs: [] as Uint8Array[] }
      const inner = new Reader(r.bytes())
      inner.each((m, w) => {
        if (m === 1 && w === 0) res.expire = inner.varint()
        else if (m === 2 && w === 2) res.addrs.push(inner.bytes())
        else return false
        return true
      })
      out.reservation = res
    } else if (n === 4 && wire === 2) {
      const limit: NonNullable<HopAnswer['limit']> = {}
      const inner = new Reader(r.bytes())
      inner.each((m, w) => {
        if (m === 1 && w === 0) limit.duration = Number(inner.varint())
        else if (m === 2 && w === 0) limit.data = inner.varint()
        else return false
        return true
      })
      out.limit = limit
    } else return false
    return true
  })
  return out
}

export interface Reservation {
  /** Expiry as the relay granted it (ms since the epoch). */
  expires: number
  /** The circuit addresses (`<relay address>/p2p/<relay>/p2p-circuit`) this node can be reached at. */
  addrs: Multiaddr[]
  limit?: HopAnswer['limit']
}

/**
 * Asks the relay at the other end of `connection` for a reservation (or to refresh one). Throws
 * `reservation failed with status <NAME>` when the relay refuses.
 */
export async function reserve(connection: Connection, signal: AbortSignal): Promise<Reservation> {
  const stream = await connection.newStream(HOP_PROTOCOL, { signal })
  let answer: HopAnswer
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_HOP_MESSAGE_BYTES })
    await lp.write(RESERVE_REQUEST, { signal })
    answer = decodeHopAnswer((await lp.read({ signal })).subarray())
    await stream.close({ signal })
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
  if (answer.status !== 100 || !answer.reservation) {
    const name = HOP_STATUS[answer.status ?? -1] ?? String(answer.status)
    throw new Error(`reservation failed with status ${name}`)
  }
  const relay = connection.remotePeer.toString()
  // as libp2p's own client does: the address we reached the relay at, then those the relay names
  const seen = new Set<string>()
  const addrs: Multiaddr[] = []
  for (const raw of [connection.remoteAddr, ...answer.reservation.addrs.map((b) => multiaddr(b))]) {
    let a = raw
    if (!a.getComponents().some((c) => c.name === 'p2p')) a = a.encapsulate(`/p2p/${relay}`)
    const circuit = a.encapsulate('/p2p-circuit')
    if (seen.has(circuit.toString())) continue
    seen.add(circuit.toString())
    addrs.push(circuit)
  }
  return { expires: Number(answer.reservation.expire) * 1000, addrs, limit: answer.limit }
}
