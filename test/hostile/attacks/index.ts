/** Every attack, by name, in the order a run rotates through them. */
import type { Attack } from '../attack.js'
import { kadAddProvider, kadFindNode, kadPutValue, kadTopicPoison } from './kad.js'
import { birthdayCone, natProbe, natTypeReversal, relayHop, relayStop, stunFlood } from './nat-relay.js'
import { identifyLies, pingFlood } from './services.js'
import {
  streamChurn,
  streamConcurrency,
  streamOversizedLength,
  streamRandom,
  streamSlowloris,
} from './streams.js'
import {
  tagsClusterFlood,
  tagsDialBack,
  topicsAmplification,
  topicsForgedMembers,
  topicsKeyFlood,
} from './topics-tags.js'
import { connChurn, noiseStall, tcpGarbage, tcpSilent } from './transport.js'

export * from './kad.js'
export * from './nat-relay.js'
export * from './services.js'
export * from './streams.js'
export * from './topics-tags.js'
export * from './transport.js'

export const ATTACKS: readonly Attack[] = [
  tcpSilent,
  noiseStall,
  tcpGarbage,
  connChurn,
  streamRandom,
  streamOversizedLength,
  streamSlowloris,
  streamConcurrency,
  streamChurn,
  topicsKeyFlood,
  topicsAmplification,
  topicsForgedMembers,
  tagsClusterFlood,
  tagsDialBack,
  natTypeReversal,
  birthdayCone,
  natProbe,
  stunFlood,
  relayStop,
  relayHop,
  kadAddProvider,
  kadTopicPoison,
  kadPutValue,
  kadFindNode,
  identifyLies,
  pingFlood,
]

/** The attacks named in `names` ('all' or a list), in registry order; throws on an unknown name. */
export function selectAttacks(names: 'all' | readonly string[]): Attack[] {
  if (names === 'all') return [...ATTACKS]
  const known = new Map(ATTACKS.map((a) => [a.attackName, a]))
  const unknown = names.filter((n) => !known.has(n))
  if (unknown.length > 0)
    throw new Error(`unknown attack(s): ${unknown.join(', ')}; known: ${[...known.keys()].join(', ')}`)
  return ATTACKS.filter((a) => names.includes(a.attackName))
}
