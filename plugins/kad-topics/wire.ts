import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { decodeJsonObject } from 'meshkit'

/** The member-exchange protocol: peers tell each other which topic keys they joined and who else did. */
export const TOPICS_PROTOCOL = '/mesh/topics/1.0.0'

/** Hard limits on what a peer may send; anything beyond resets the stream. */
export const LIMITS = {
  /** Bytes in one length-prefixed message. */
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
  /** The member said it is short of peers in this topic (a good one to dial). */
  short?: boolean
}

/** Request: "I joined these keys (reachable at these addrs); who else is in them?" */
export interface TopicsRequest {
  v: 1
  joined: string[]
  addrs: string[]
  /** The joined keys in which the sender has fewer peers than it wants. */
  short?: string[]
}

/** Response: the responder's own keys, and members it knows for the requested keys. */
export interface TopicsResponse {
  v: 1
  joined: string[]
  addrs: string[]
  short?: string[]
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

function parseJson(bytes: Uint8Array): Record<string, unknown> {
  const value = decodeJsonObject(bytes, LIMITS.maxMessageBytes, fail)
  if (value.v !== 1) fail('unknown version')
  return value
}

export function encode(message: TopicsRequest | TopicsResponse): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(message))
}

export function decodeRequest(bytes: Uint8Array): TopicsRequest {
  const m = parseJson(bytes)
  return {
    v: 1,
    joined: stringList(m.joined, LIMITS.maxJoined, 'joined'),
    addrs: stringList(m.addrs ?? [], LIMITS.maxAddrs, 'addrs', checkAddr),
    short: stringList(m.short ?? [], LIMITS.maxJoined, 'short'),
  }
}

export function decodeResponse(bytes: Uint8Array): TopicsResponse {
  const m = parseJson(bytes)
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
      const { id, addrs, short } = member as { id?: unknown; addrs?: unknown; short?: unknown }
      if (typeof id !== 'string' || id.length > LIMITS.maxStringLength) fail('member id is not a string')
      checkPeerId(id)
      if (short !== undefined && typeof short !== 'boolean') fail('member short is not a boolean')
      return {
        id,
        addrs: stringList(addrs, LIMITS.maxAddrs, 'member addrs', checkAddr),
        short: short === true,
      }
    })
  }
  return {
    v: 1,
    joined: stringList(m.joined, LIMITS.maxJoined, 'joined'),
    addrs: stringList(m.addrs ?? [], LIMITS.maxAddrs, 'addrs', checkAddr),
    short: stringList(m.short ?? [], LIMITS.maxJoined, 'short'),
    members: parsed,
  }
}
