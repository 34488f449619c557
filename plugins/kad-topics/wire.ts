import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { decodeJsonObject } from 'meshkit'
import { SIGNATURE_PATTERN } from './member-record.js'

/**
 * The member-exchange protocol: peers tell each other which topic keys they joined and who else did,
 * with member records signed by the members themselves (see member-record.ts).
 */
export const TOPICS_PROTOCOL = '/mesh/topics/2.0.0'

/**
 * The first version, without signatures, still served and asked for peers that speak only it: their own
 * claims are taken (the connection proves who they are), members they relay are not (nobody signed them).
 */
export const TOPICS_PROTOCOL_V1 = '/mesh/topics/1.0.0'

/** The message version (`v`) each protocol carries. */
export const WIRE_VERSION: Readonly<Record<string, 1 | 2>> = {
  [TOPICS_PROTOCOL]: 2,
  [TOPICS_PROTOCOL_V1]: 1,
}

/** Hard limits on what a peer may send; anything beyond resets the stream. */
export const LIMITS = {
  /** Bytes in one length-prefixed message (a response is built to fit it, too). */
  maxMessageBytes: 64 * 1024,
  /** Topic keys a peer may say it joined. */
  maxJoined: 64,
  /** Topic keys in one member list. */
  maxMemberTopics: 64,
  /** Members per topic key in one message. */
  maxMembersPerTopic: 32,
  /** Addresses per member. */
  maxAddrs: 16,
  /** Characters per address / key / peer id. */
  maxStringLength: 256,
} as const

export interface WireMember {
  id: string
  addrs: string[]
  /** The member said it is short of peers in this topic (a good one to dial). Not signed: a hint. */
  short?: boolean
  /** When the member signed its record (ms since epoch); v2 only. */
  ts?: number
  /** The member's signature (base64url) of `meshkit/member/1|<key>|<ts>|<addrs>`; v2 only. */
  sig?: string
}

/** Request: "I joined these keys (reachable at these addrs); who else is in them?" */
export interface TopicsRequest {
  v: 1 | 2
  joined: string[]
  addrs: string[]
  /** The joined keys in which the sender has fewer peers than it wants. */
  short?: string[]
  /** v2: when the sender signed its own records below (ms since epoch). */
  ts?: number
  /** v2: the sender's signature over `addrs` for each joined key, in the order of `joined`. */
  sigs?: string[]
}

/** Response: the responder's own keys, and members it knows for the requested keys. */
export interface TopicsResponse extends TopicsRequest {
  members: Record<string, WireMember[]>
}

export class WireError extends Error {
  override name = 'WireError'
}

function fail(reason: string): never {
  throw new WireError(`malformed topics message: ${reason}`)
}

function stringList(value: unknown, max: number, what: string, check?: (s: string) => void): string[] {
  if (!Array.isArray(value)) fail(`${what} is not an array`)
  if (value.length > max) fail(`${what} has ${value.length} entries (max ${max})`)
  return value.map((s) => {
    if (typeof s !== 'string' || s.length === 0 || s.length > LIMITS.maxStringLength)
      fail(`bad entry in ${what}`)
    check?.(s)
    return s
  })
}

const checkAddr = (s: string) => {
  try {
    multiaddr(s)
  } catch {
    fail(`bad multiaddr ${JSON.stringify(s.slice(0, 80))}`)
  }
}

const checkPeerId = (s: string) => {
  try {
    peerIdFromString(s)
  } catch {
    fail(`bad peer id ${JSON.stringify(s.slice(0, 80))}`)
  }
}

const checkSig = (s: string) => {
  if (!SIGNATURE_PATTERN.test(s)) fail('bad signature')
}

function timestamp(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) fail(`${what} is not a time`)
  return value
}

function parseJson(bytes: Uint8Array, version?: 1 | 2): Record<string, unknown> {
  const value = decodeJsonObject(bytes, LIMITS.maxMessageBytes, fail)
  if (value.v !== 1 && value.v !== 2) fail('unknown version')
  if (version !== undefined && value.v !== version)
    fail(`version ${value.v} on a version ${version} protocol`)
  return value
}

export function encode(message: TopicsRequest | TopicsResponse): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message))
}

/** The sender's own part of a request or response (v2: its signatures too, one per joined key). */
function own(m: Record<string, unknown>): TopicsRequest {
  const joined = stringList(m.joined, LIMITS.maxJoined, 'joined')
  const out: TopicsRequest = {
    v: m.v as 1 | 2,
    joined,
    addrs: stringList(m.addrs ?? [], LIMITS.maxAddrs, 'addrs', checkAddr),
    short: stringList(m.short ?? [], LIMITS.maxJoined, 'short'),
  }
  if (out.v === 2) {
    out.ts = timestamp(m.ts, 'ts')
    out.sigs = stringList(m.sigs, LIMITS.maxJoined, 'sigs', checkSig)
    if (out.sigs.length !== joined.length) fail(`${out.sigs.length} sigs for ${joined.length} joined keys`)
  }
  return out
}

/** Decodes a request; `version` (from the protocol it came on) must match its `v` when given. */
export function decodeRequest(bytes: Uint8Array, version?: 1 | 2): TopicsRequest {
  return own(parseJson(bytes, version))
}

/** Decodes a response; `version` (from the protocol it came on) must match its `v` when given. */
export function decodeResponse(bytes: Uint8Array, version?: 1 | 2): TopicsResponse {
  const m = parseJson(bytes, version)
  const members = m.members ?? {}
  if (members === null || typeof members !== 'object' || Array.isArray(members))
    fail('members is not an object')
  const entries = Object.entries(members as Record<string, unknown>)
  if (entries.length > LIMITS.maxMemberTopics)
    fail(`members has ${entries.length} keys (max ${LIMITS.maxMemberTopics})`)
  const parsed: Record<string, WireMember[]> = {}
  for (const [key, list] of entries) {
    if (key === '__proto__') continue // never a topic key; assigning it would replace parsed's prototype
    if (key.length > LIMITS.maxStringLength) fail('member key too long')
    if (!Array.isArray(list) || list.length > LIMITS.maxMembersPerTopic)
      fail(`bad member list for ${key.slice(0, 80)}`)
    parsed[key] = list.map((member: unknown) => {
      if (member === null || typeof member !== 'object') fail('member is not an object')
      const { id, addrs, short, ts, sig } = member as Record<string, unknown>
      if (typeof id !== 'string' || id.length > LIMITS.maxStringLength) fail('member id is not a string')
      checkPeerId(id)
      if (short !== undefined && typeof short !== 'boolean') fail('member short is not a boolean')
      const out: WireMember = {
        id,
        addrs: stringList(addrs, LIMITS.maxAddrs, 'member addrs', checkAddr),
        short: short === true,
      }
      if (m.v === 2) {
        out.ts = timestamp(ts, 'member ts')
        if (typeof sig !== 'string') fail('member sig is not a string')
        checkSig(sig)
        out.sig = sig
      }
      return out
    })
  }
  return { ...own(m), members: parsed }
}
