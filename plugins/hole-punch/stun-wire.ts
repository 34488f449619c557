/**
 * STUN (RFC 5389/8489) binding messages, IPv4 only, and Meshkit's mapping attestation.
 *
 * A plain binding request gets the plain answer every STUN client understands: a success response with
 * one XOR-MAPPED-ADDRESS. A request that carries the comprehension-optional attribute
 * {@link ATTEST_REQUEST} (padding, so that the request is at least as large as the answer: the server
 * never sends more bytes than it got) also gets {@link ATTESTATION}: the address the server saw, the
 * time, and a signature by the server's libp2p key over both and the request's transaction id. A peer
 * that sends its binding request with a transaction id another peer chose (a nonce) and forwards the
 * attestation proves to that peer that the address is its own: only a host that receives at an address
 * gets the answer sent there (see docs/nat.md, "Birthday punch").
 *
 * The signed bytes: `meshkit/stun-attestation/1`, a 0 byte, the transaction id (12 bytes), then the
 * attestation's value up to its signature. The value: version (1), family (1: IPv4), IP (4), port (2),
 * time (8, ms since the epoch), key length (2), the server's public key (libp2p protobuf), signature.
 */
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPublicKey } from '@libp2p/peer-id'

export const MAGIC_COOKIE = 0x2112a442
export const BINDING_REQUEST = 0x0001
export const BINDING_SUCCESS = 0x0101
const MAPPED_ADDRESS = 0x0001
const XOR_MAPPED_ADDRESS = 0x0020
/** Comprehension-optional (0x8000-0xFFFF): a plain STUN server ignores it and answers as usual. */
export const ATTEST_REQUEST = 0xc3a0
/** Comprehension-optional: plain STUN clients skip it. */
export const ATTESTATION = 0xc3a1
const HEADER = 20
/** Longest binding request answered (bytes); longer ones are dropped unread. */
export const MAX_REQUEST_BYTES = 512
/** Most attributes a request may carry. */
const MAX_ATTRIBUTES = 32
/** Size of an attested binding request: larger than the attested answer (Ed25519 or secp256k1 keys). */
export const ATTESTED_REQUEST_BYTES = 180
/** Longest public key an attestation carries (Ed25519: 36 bytes, secp256k1: 37; RSA keys do not fit). */
export const MAX_ATTESTATION_KEY_BYTES = 64
const DOMAIN = new TextEncoder().encode('meshkit/stun-attestation/1\0')
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/

export interface BindingRequest {
  transactionId: Uint8Array
  /** The request asks for an attestation. */
  attest: boolean
  /** Its size in bytes (an answer is never larger). */
  size: number
}

export interface BindingResponse {
  transactionId: Uint8Array
  mapped: { ip: string; port: number }
  /** The ATTESTATION value, when the server gave one. */
  attestation?: Uint8Array
}

const pad4 = (n: number) => (n + 3) & ~3

/** Walks the attributes after the header; undefined when they do not fill the message exactly. */
function attributes(buf: Uint8Array): Array<{ type: number; value: Uint8Array }> | undefined {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: Array<{ type: number; value: Uint8Array }> = []
  let pos = HEADER
  while (pos < buf.length) {
    if (pos + 4 > buf.length || out.length >= MAX_ATTRIBUTES) return undefined
    const type = view.getUint16(pos)
    const length = view.getUint16(pos + 2)
    if (pos + 4 + pad4(length) > buf.length) return undefined
    out.push({ type, value: buf.subarray(pos + 4, pos + 4 + length) })
    pos += 4 + pad4(length)
  }
  return out
}

/** The header's fields, when `buf` is a well-formed STUN message (RFC 5389 framing, magic cookie). */
function header(buf: Uint8Array): { type: number; transactionId: Uint8Array } | undefined {
  if (buf.length < HEADER || buf.length % 4 !== 0) return undefined
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const type = view.getUint16(0)
  if ((type & 0xc000) !== 0) return undefined
  if (view.getUint16(2) !== buf.length - HEADER) return undefined
  if (view.getUint32(4) !== MAGIC_COOKIE) return undefined
  return { type, transactionId: buf.subarray(8, HEADER) }
}

/** A well-formed binding request (at most {@link MAX_REQUEST_BYTES}); undefined for anything else. */
export function parseBindingRequest(buf: Uint8Array): BindingRequest | undefined {
  if (buf.length > MAX_REQUEST_BYTES) return undefined
  const h = header(buf)
  if (h?.type !== BINDING_REQUEST) return undefined
  const attrs = attributes(buf)
  if (!attrs) return undefined
  return {
    transactionId: Uint8Array.from(h.transactionId),
    attest: attrs.some((a) => a.type === ATTEST_REQUEST),
    size: buf.length,
  }
}

function message(type: number, transactionId: Uint8Array, attrs: Array<[number, Uint8Array]>): Buffer {
  const length = attrs.reduce((n, [, v]) => n + 4 + pad4(v.length), 0)
  const buf = Buffer.alloc(HEADER + length)
  buf.writeUInt16BE(type, 0)
  buf.writeUInt16BE(length, 2)
  buf.writeUInt32BE(MAGIC_COOKIE, 4)
  buf.set(transactionId.subarray(0, 12), 8)
  let pos = HEADER
  for (const [t, v] of attrs) {
    buf.writeUInt16BE(t, pos)
    buf.writeUInt16BE(v.length, pos + 2)
    buf.set(v, pos + 4)
    pos += 4 + pad4(v.length)
  }
  return buf
}

const ipBytes = (ip: string) => Uint8Array.from(ip.split('.').map(Number))

/** A binding request; with `attest`, padded to {@link ATTESTED_REQUEST_BYTES} and asking for an attestation. */
export function encodeBindingRequest(transactionId: Uint8Array, attest = false): Buffer {
  if (transactionId.length !== 12) throw new RangeError('a STUN transaction id has 12 bytes')
  const attrs: Array<[number, Uint8Array]> = attest
    ? [[ATTEST_REQUEST, new Uint8Array(ATTESTED_REQUEST_BYTES - HEADER - 4)]]
    : []
  return message(BINDING_REQUEST, transactionId, attrs)
}

/** A success response: XOR-MAPPED-ADDRESS for `ip:port` (IPv4), and the attestation when given. */
export function encodeBindingResponse(
  transactionId: Uint8Array,
  ip: string,
  port: number,
  attestation?: Uint8Array,
): Buffer {
  const xor = Buffer.alloc(8)
  xor.writeUInt8(0, 0)
  xor.writeUInt8(0x01, 1)
  xor.writeUInt16BE(port ^ (MAGIC_COOKIE >>> 16), 2)
  xor.writeUInt32BE((Buffer.from(ipBytes(ip)).readUInt32BE(0) ^ MAGIC_COOKIE) >>> 0, 4)
  const attrs: Array<[number, Uint8Array]> = [[XOR_MAPPED_ADDRESS, xor]]
  if (attestation) attrs.push([ATTESTATION, attestation])
  return message(BINDING_SUCCESS, transactionId, attrs)
}

/** The size of the answer to a request, with an attestation of `attestationBytes` (0: none). */
export function responseSize(attestationBytes: number): number {
  return HEADER + 12 + (attestationBytes > 0 ? 4 + pad4(attestationBytes) : 0)
}

function decodeAddress(value: Uint8Array, xor: boolean): { ip: string; port: number } | undefined {
  if (value.length !== 8 || value[1] !== 0x01) return undefined
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength)
  const port = view.getUint16(2) ^ (xor ? MAGIC_COOKIE >>> 16 : 0)
  const raw = (view.getUint32(4) ^ (xor ? MAGIC_COOKIE : 0)) >>> 0
  return { ip: [raw >>> 24, (raw >>> 16) & 255, (raw >>> 8) & 255, raw & 255].join('.'), port }
}

/** A binding success response (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server); undefined otherwise. */
export function parseBindingResponse(buf: Uint8Array): BindingResponse | undefined {
  const h = header(buf)
  if (h?.type !== BINDING_SUCCESS) return undefined
  const attrs = attributes(buf)
  if (!attrs) return undefined
  const xor = attrs.find((a) => a.type === XOR_MAPPED_ADDRESS)
  const plain = attrs.find((a) => a.type === MAPPED_ADDRESS)
  const mapped = xor ? decodeAddress(xor.value, true) : plain ? decodeAddress(plain.value, false) : undefined
  if (!mapped) return undefined
  const attestation = attrs.find((a) => a.type === ATTESTATION)?.value
  return {
    transactionId: Uint8Array.from(h.transactionId),
    mapped,
    ...(attestation ? { attestation: Uint8Array.from(attestation) } : {}),
  }
}

/** The bytes an attestation signs: the domain, the transaction id, the value up to the signature. */
function signedBytes(transactionId: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(DOMAIN.length + 12 + body.length)
  out.set(DOMAIN, 0)
  out.set(transactionId, DOMAIN.length)
  out.set(body, DOMAIN.length + 12)
  return out
}

/**
 * The server's attestation that a binding request with `transactionId` came from `ip:port` at `time`,
 * signed by `key` (its libp2p identity). Undefined when the key does not fit (RSA).
 */
export async function createAttestation(
  key: PrivateKey,
  transactionId: Uint8Array,
  ip: string,
  port: number,
  time = Date.now(),
): Promise<Uint8Array | undefined> {
  const publicKey = publicKeyToProtobuf(key.publicKey)
  if (publicKey.length > MAX_ATTESTATION_KEY_BYTES || !IPV4.test(ip)) return undefined
  const body = Buffer.alloc(18 + publicKey.length)
  body.writeUInt8(1, 0)
  body.writeUInt8(4, 1)
  body.set(ipBytes(ip), 2)
  body.writeUInt16BE(port, 6)
  body.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(time))), 8)
  body.writeUInt16BE(publicKey.length, 16)
  body.set(publicKey, 18)
  const signature = await key.sign(signedBytes(transactionId, body))
  return Uint8Array.from(Buffer.concat([body, signature]))
}

/** What a valid attestation says. */
export interface Attestation {
  /** The peer id of the STUN server that signed it. */
  signer: string
  ip: string
  port: number
  /** When the server saw the request (ms since the epoch, its clock). */
  time: number
}

/**
 * Checks an attestation for `transactionId` (the nonce this node chose): well-formed, and signed by the
 * key it names. Returns what it attests, or why it is not valid. Who the signer is (trusted or not) and
 * how fresh the time is are for the caller to judge.
 */
export async function verifyAttestation(
  value: Uint8Array,
  transactionId: Uint8Array,
): Promise<Attestation | { error: string }> {
  if (value.length < 18 || value.length > 18 + MAX_ATTESTATION_KEY_BYTES + 132)
    return { error: 'an attestation of the wrong size' }
  const view = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  if (view.readUInt8(0) !== 1 || view.readUInt8(1) !== 4) return { error: 'an unknown attestation version' }
  const keyLength = view.readUInt16BE(16)
  if (keyLength === 0 || keyLength > MAX_ATTESTATION_KEY_BYTES || 18 + keyLength >= value.length)
    return { error: 'an attestation with a bad key length' }
  const body = value.subarray(0, 18 + keyLength)
  const signature = value.subarray(18 + keyLength)
  let signer: string
  try {
    const key = publicKeyFromProtobuf(value.subarray(18, 18 + keyLength))
    if (!(await key.verify(signedBytes(transactionId, body), signature)))
      return { error: 'a bad attestation signature (or another nonce)' }
    signer = peerIdFromPublicKey(key).toString()
  } catch (err) {
    return { error: `an unreadable attestation key (${err instanceof Error ? err.message : String(err)})` }
  }
  return {
    signer,
    ip: [...value.subarray(2, 6)].join('.'),
    port: view.readUInt16BE(6),
    time: Number(view.readBigUInt64BE(8)),
  }
}
