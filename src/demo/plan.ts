/** Which topics each demo peer joins: overlapping, so some peers are in one topic, some in two or three. */
import { MeshError } from 'meshkit'

export const DEFAULT_DEMO_TOPICS: readonly string[] = ['alpha', 'beta', 'gamma']
export const DEFAULT_DEMO_PEERS = 20
/** More peers than this in one process is no longer a demo on a laptop. */
export const MAX_DEMO_PEERS = 100
/** Topic members each peer keeps connected (kadTopics' default). */
export const CONNECTIONS_PER_TOPIC = 8

/**
 * The topics of peer `i` (0-based) among `topics`: its own topic `topics[i % k]`; every second peer also
 * the next topic, every fifth the one after. Deterministic, so a demo run is repeatable.
 */
export function demoTopicsOf(i: number, topics: readonly string[]): string[] {
  const k = topics.length
  const chosen = new Set<string>([topics[i % k]])
  if (k > 1 && i % 2 === 0) chosen.add(topics[(i + 1) % k])
  if (k > 2 && i % 5 === 0) chosen.add(topics[(i + 2) % k])
  return [...chosen]
}

/** The members (peer indexes) of each topic. */
export function demoMembers(peers: number, topics: readonly string[]): Map<string, number[]> {
  const members = new Map<string, number[]>(topics.map((t) => [t, []]))
  for (let i = 0; i < peers; i++) for (const t of demoTopicsOf(i, topics)) members.get(t)?.push(i)
  return members
}

/** Checks the demo's size: a whole number of peers, 1-32 distinct valid topics, 2 members per topic at least. */
export function checkDemoPlan(peers: number, topics: readonly string[]): void {
  if (!Number.isInteger(peers) || peers < 2 || peers > MAX_DEMO_PEERS)
    throw new MeshError(
      'MESH_ERR_INVALID_ARGUMENT',
      `Invalid --peers: ${peers} is not a number from 2 to ${MAX_DEMO_PEERS}.`,
      {
        hint: `Try \`mesh demo --peers ${DEFAULT_DEMO_PEERS}\`.`,
      },
    )
  if (topics.length === 0 || topics.length > 32)
    throw new MeshError(
      'MESH_ERR_INVALID_ARGUMENT',
      `Invalid --topics: give 1 to 32 topics, got ${topics.length}.`,
      {
        hint: 'Separate topics with commas: `--topics alpha,beta,gamma`.',
      },
    )
  const bad = topics.find((t) => t.length === 0 || t.length > 64 || /[,\s]/.test(t))
  if (bad !== undefined)
    throw new MeshError(
      'MESH_ERR_INVALID_ARGUMENT',
      `Invalid --topics: ${JSON.stringify(bad)} is not a topic name.`,
      {
        hint: 'A topic is 1 to 64 characters without spaces or commas: `--topics alpha,beta`.',
      },
    )
  if (new Set(topics).size !== topics.length)
    throw new MeshError('MESH_ERR_INVALID_ARGUMENT', 'Invalid --topics: a topic is named twice.', {
      hint: 'Name each topic once.',
    })
  for (const [topic, members] of demoMembers(peers, topics)) {
    if (members.length < 2)
      throw new MeshError(
        'MESH_ERR_INVALID_ARGUMENT',
        `Invalid --peers: ${peers} peers are too few for ${topics.length} topics (topic ${topic} would have ${members.length} member).`,
        { hint: `Use --peers ${2 * topics.length} or more, or fewer topics.` },
      )
  }
}
