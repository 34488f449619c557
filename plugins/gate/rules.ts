/**
 * The gate's lists and its decision. An entry is a peer id (`12D3KooW...`, also as `/p2p/<id>`), an IP
 * address (`127.0.0.2`, `::1`) or a range (`127.0.0.0/24`, `fd00::/8`, also as `/ip4/<ip>/ipcidr/<n>`).
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net'
import { peerIdFromString } from '@libp2p/peer-id'
import { unmapIp } from 'meshkit/plugin'

/** One list (allow or deny), parsed. */
export interface EntryList {
  readonly peers: ReadonlySet<string>
  readonly ips: BlockList
  readonly size: number
  readonly hasPeers: boolean
  readonly hasIps: boolean
}

/** What is known about a connection at one step of it. `undefined`: not known (yet, or ever). */
export interface Facts {
  peer?: string
  ip?: string
  /** Facts that are not known now but will be at a later step (which decides then). */
  later?: { peer?: boolean; ip?: boolean }
}

/** `allowed`, or why not: `denied` (a deny entry matches) or `not-allowed` (allow is set and nothing matches). */
export type Verdict = 'allowed' | 'denied' | 'not-allowed'

/** Why an entry is not one (for the options schema). */
export function entryProblem(entry: string): string | undefined {
  try {
    parseEntry(entry)
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

type Entry = { peer: string } | { ip: string; prefix: number; family: 'ipv4' | 'ipv6' }

function parseEntry(raw: string): Entry {
  const text = raw.trim()
  const ma = /^\/ip([46])\/([^/]+)(?:\/ipcidr\/(\d+))?$/.exec(text)
  const p2p = /^\/p2p\/([^/]+)$/.exec(text)
  if (p2p) return peerEntry(p2p[1])
  let ip: string
  let prefixText: string | undefined
  if (ma) {
    ip = ma[2]
    prefixText = ma[3]
  } else if (text.includes('.') || text.includes(':')) {
    const slash = text.indexOf('/')
    ip = slash < 0 ? text : text.slice(0, slash)
    prefixText = slash < 0 ? undefined : text.slice(slash + 1)
  } else return peerEntry(text)
  ip = unmapIp(ip)
  const family = isIPv4(ip) ? 'ipv4' : isIPv6(ip) ? 'ipv6' : undefined
  if (!family) throw new TypeError(`'${ip}' is not an IP address`)
  const max = family === 'ipv4' ? 32 : 128
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText))
    throw new TypeError(`'${prefixText}' is not a prefix length`)
  const prefix = prefixText === undefined ? max : Number(prefixText)
  if (prefix > max) throw new TypeError(`a ${family} prefix is 0 to ${max}, got ${prefix}`)
  return { ip, prefix, family }
}

function peerEntry(text: string): Entry {
  try {
    return { peer: peerIdFromString(text).toString() }
  } catch {
    throw new TypeError(`'${text}' is neither a peer id nor an IP address or range`)
  }
}

/** Parses a list (entries already checked by the options schema). */
export function parseList(entries: readonly string[]): EntryList {
  const peers = new Set<string>()
  const ips = new BlockList()
  let ipCount = 0
  for (const raw of entries) {
    const e = parseEntry(raw)
    if ('peer' in e) peers.add(e.peer)
    else {
      ips.addSubnet(e.ip, e.prefix, e.family)
      ipCount++
    }
  }
  return { peers, ips, size: peers.size + ipCount, hasPeers: peers.size > 0, hasIps: ipCount > 0 }
}

function ipMatches(list: EntryList, ip: string): boolean {
  if (!list.hasIps) return false
  const addr = unmapIp(ip)
  const family = isIPv4(addr) ? 'ipv4' : isIPv6(addr) ? 'ipv6' : undefined
  return family !== undefined && list.ips.check(addr, family)
}

/**
 * The verdict on what is known. Deny wins: a known fact on the deny list refuses. With a non-empty allow
 * list, a known fact on it allows; when nothing known matches, a fact still to come that could match
 * defers the decision (`allowed` now, decided at that later step); otherwise it is refused.
 */
export function judge(allow: EntryList, deny: EntryList, facts: Facts): Verdict {
  const { peer, ip } = facts
  if (peer !== undefined && deny.peers.has(peer)) return 'denied'
  if (ip !== undefined && ipMatches(deny, ip)) return 'denied'
  if (allow.size === 0) return 'allowed'
  if (peer !== undefined && allow.peers.has(peer)) return 'allowed'
  if (ip !== undefined && ipMatches(allow, ip)) return 'allowed'
  if (facts.later?.peer && allow.hasPeers) return 'allowed'
  if (facts.later?.ip && allow.hasIps) return 'allowed'
  return 'not-allowed'
}
