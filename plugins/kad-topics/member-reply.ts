import type { MemberVerifier } from './member-record.js'
import type { MemberRegistry } from './member-registry.js'
import { LIMITS, type WireMember } from './wire.js'

const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8')

/**
 * Members to tell `requester` for the keys it asked about: signed records only, picked round-robin
 * across the keys (each key's best first) until `budget` bytes of JSON are used, so that one key full
 * of long addresses cannot crowd out the others, and the response fits what requesters accept.
 * A key's best: members this node is connected to right now (`connected`: alive a moment ago), then the
 * others, each group in the registry's order (told by themselves first, most recently seen first). A
 * member that died without a goodbye stays known until `memberTtl`, but once its connections closed it
 * is handed out after every live one, not in place of one.
 */
export function replyMembers(
  registry: MemberRegistry,
  verifier: Pick<MemberVerifier, 'age'>,
  keys: readonly string[],
  requester: string,
  budget: number,
  connected: (id: string) => boolean = () => false,
): Record<string, WireMember[]> {
  const lists = keys.map((key) => {
    const usable = registry
      .members(key)
      .filter(([id, m]) => id !== requester && m.proof !== undefined && !verifier.age(m.proof.ts))
    const live: typeof usable = []
    const rest: typeof usable = []
    for (const entry of usable) (connected(entry[0]) ? live : rest).push(entry)
    return live.length === 0 ? rest : [...live, ...rest]
  })
  const out: Record<string, WireMember[]> = {}
  let used = 2 // {}
  const longest = Math.min(LIMITS.maxMembersPerTopic, Math.max(0, ...lists.map((l) => l.length)))
  for (let round = 0; round < longest; round++) {
    keys.forEach((key, i) => {
      const entry = lists[i][round]
      if (!entry || key === '__proto__') return
      const [id, m] = entry
      const proof = m.proof!
      const member: WireMember = { id, addrs: proof.addrs, ts: proof.ts, sig: proof.sig }
      if (m.short && m.direct) member.short = true
      const list = out[key]
      // `"key":[` + `]` and a comma between keys for a new list; the member and a comma otherwise
      const cost = utf8Length(JSON.stringify(member)) + 1 + (list ? 0 : utf8Length(JSON.stringify(key)) + 4)
      if (used + cost > budget) return
      used += cost
      if (list) list.push(member)
      else out[key] = [member]
    })
  }
  return out
}
