/**
 * Protocol-agnostic stream fuzzing, for every protocol the target advertises (identify) plus Meshkit's
 * known ones: random bytes, absurd length prefixes, never-finished messages (slowloris), more concurrent
 * streams than allowed, and rapid open/abort.
 */
import type { Stream } from '@libp2p/interface'
import { type AttackContext, ConnectionKeeper, defineAttack, loops } from '../attack.js'
import { HostilePool } from '../hostile-node.js'
import type { Tally } from '../report.js'
import { between, closeSoon, concat, noise, pause, send, varint } from '../wire.js'

/** Meshkit's protocols and the libp2p ones its plugins serve, attacked even when identify hides them. */
export const KNOWN_PROTOCOLS: readonly string[] = [
  '/mesh/topics/1.0.0',
  '/mesh/tags/1.0.0',
  '/mesh/nat-type/1.0.0',
  '/mesh/birthday/1.0.0',
  '/mesh/nat-probe/1.0.0',
  '/mesh/kad/1.0.0',
  '/ipfs/id/1.0.0',
  '/ipfs/id/push/1.0.0',
  '/ipfs/ping/1.0.0',
  '/libp2p/circuit/relay/0.2.0/hop',
  '/libp2p/circuit/relay/0.2.0/stop',
  '/webrtc-signaling/0.0.1',
]

/** Every protocol to fuzz: the target's own list and the known ones, without duplicates. */
export function protocolsOf(ctx: Pick<AttackContext, 'target'>): string[] {
  return [...new Set([...ctx.target.protocols, ...KNOWN_PROTOCOLS])]
}

/** How a stream we wrote to ended: waits (bounded) for the target to close or reset it. */
function watch(stream: Stream, tally: Tally): Promise<'reset' | 'closed' | 'open'> & { bytes: () => number } {
  let bytes = 0
  stream.addEventListener('message', (evt) => {
    const n = evt.data.byteLength
    bytes += n
    tally.received(n)
  })
  const ended = new Promise<'reset' | 'closed' | 'open'>((resolve) => {
    stream.addEventListener('close', (evt) => resolve(evt.error ? 'reset' : 'closed'))
    stream.addEventListener('remoteCloseWrite', () => resolve('closed'))
  })
  return Object.assign(ended, { bytes: () => bytes })
}

const raceTimeout = <T>(p: Promise<T>, ms: number, value: T): Promise<T> =>
  Promise.race([p, new Promise<T>((r) => setTimeout(() => r(value), ms).unref())])

/** Random bytes (1 B to 16 KiB) on a stream of every protocol in turn; how each stream ends is tallied. */
export const streamRandom = defineAttack(
  'stream-random',
  'random bytes on streams of every protocol (identify list + known ones)',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const protocols = protocolsOf(ctx)
    let i = 0
    try {
      const keepers = Array.from({ length: ctx.scaled(2) }, () => new ConnectionKeeper(ctx, pool))
      await loops(ctx.scaled(6), ctx.signal, ctx.tally, async (w) => {
        const protocol = protocols[i++ % protocols.length]
        const stream = await keepers[w % keepers.length].open(protocol)
        if (!stream) return
        const ended = watch(stream, ctx.tally)
        try {
          await send(stream, noise(between(1, 16 * 1024)), ctx.tally, ctx.signal)
        } catch (err) {
          ctx.tally.error(err)
        }
        const end = await raceTimeout(ended, 2000, 'open')
        ctx.tally.inc(`end_${end}`)
        if (ended.bytes() > 0) ctx.tally.note(`${protocol} answered ${ended.bytes()} bytes to random input`)
        if (end === 'open') stream.abort(new Error('done'))
      })
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * A length prefix announcing 2 GiB (or 2^40) then junk, streamed until the target resets the stream (at
 * most 1 MiB): how many bytes each protocol swallows before it refuses.
 */
export const streamOversizedLength = defineAttack(
  'stream-oversized-length',
  'absurd varint length prefixes then junk, until the target resets (max 1 MiB per stream)',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const protocols = protocolsOf(ctx)
    let i = 0
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      await loops(ctx.scaled(3), ctx.signal, ctx.tally, async () => {
        const protocol = protocols[i++ % protocols.length]
        const stream = await keeper.open(protocol)
        if (!stream) return
        const ended = watch(stream, ctx.tally)
        let state: 'reset' | 'closed' | 'open' = 'open'
        void ended.then((s) => {
          state = s
        })
        let accepted = 0
        const prefix = varint(Math.random() < 0.5 ? 2 ** 31 : 2 ** 40)
        try {
          await send(stream, concat([prefix, noise(1024)]), ctx.tally, ctx.signal)
          accepted += prefix.length + 1024
          while (state === 'open' && accepted < 1 << 20 && !ctx.signal.aborted) {
            await send(
              stream,
              noise(16 * 1024),
              ctx.tally,
              AbortSignal.any([ctx.signal, AbortSignal.timeout(2000)]),
            )
            accepted += 16 * 1024
            await pause(5)
          }
        } catch {
          // the target reset the stream under our writes: that is the expected refusal
        }
        const end = await raceTimeout(ended, 2000, state)
        ctx.tally.inc(`end_${end}`)
        ctx.tally.max(`max_accepted_bytes:${protocol}`, accepted)
        if (end === 'open' && accepted >= 1 << 20)
          ctx.tally.note(`${protocol} took 1 MiB after a ${2 ** 31}-byte length prefix without resetting`)
        stream.abort(new Error('done'))
      })
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * Slowloris: on every protocol, streams that start a message (a 200-byte length prefix, or an unfinished
 * JSON line) and add one byte every 2 s, never finishing. Tallies how long the target holds each stream
 * and how many it still held when the attack ended.
 */
export const streamSlowloris = defineAttack(
  'stream-slowloris',
  'never-finished messages on every protocol: a byte every 2 s; how long the target holds them',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const perProtocol = ctx.scaled(4)
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      await Promise.all(
        protocolsOf(ctx).flatMap((protocol) =>
          Array.from({ length: perProtocol }, async (_, k) => {
            await pause(k * 150, ctx.signal)
            while (!ctx.signal.aborted) {
              let stream: Stream | undefined
              try {
                stream = await keeper.open(protocol)
              } catch (err) {
                ctx.tally.error(err)
              }
              if (!stream) {
                await pause(1000, ctx.signal)
                continue
              }
              const ended = watch(stream, ctx.tally)
              let state: 'reset' | 'closed' | 'open' = 'open'
              void ended.then((s) => {
                state = s
              })
              const opened = Date.now()
              try {
                await send(stream, Uint8Array.from([0xc8, 0x01, 0x7b]), ctx.tally, ctx.signal)
                while (state === 'open' && !ctx.signal.aborted) {
                  await pause(2000, ctx.signal)
                  if (state === 'open' && !ctx.signal.aborted)
                    await send(stream, Uint8Array.from([0x20]), ctx.tally, ctx.signal)
                }
              } catch {
                // reset under a write
              }
              const held = Date.now() - opened
              if (ctx.signal.aborted && state === 'open') {
                ctx.tally.inc(`held_to_end:${protocol}`)
                ctx.tally.max(`max_held_ms:${protocol}`, held)
                stream.abort(new Error('done'))
                return
              }
              ctx.tally.inc(`ended_by_target_${state === 'open' ? stream.status : state}`)
              ctx.tally.max(`max_held_ms:${protocol}`, held)
            }
          }),
        ),
      )
    } finally {
      await pool.stopAll()
    }
  },
)

/** Opens many streams of each protocol at once (no bytes): how many the target accepts. */
export const streamConcurrency = defineAttack(
  'stream-concurrency',
  'many simultaneous streams per protocol; counts accepted vs refused',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const burst = ctx.scaled(64)
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      const protocols = protocolsOf(ctx)
      let i = 0
      while (!ctx.signal.aborted) {
        const protocol = protocols[i++ % protocols.length]
        const opened = await Promise.all(
          Array.from({ length: burst }, () => keeper.open(protocol).catch(() => undefined)),
        )
        const streams = opened.filter((s): s is Stream => s !== undefined)
        ctx.tally.max(`max_accepted_at_once:${protocol}`, streams.length)
        // hold them a moment: the target's handlers run (and wait for input) meanwhile
        await pause(1000, ctx.signal)
        const stillOpen = streams.filter((s) => s.status === 'open').length
        ctx.tally.max(`max_open_after_1s:${protocol}`, stillOpen)
        for (const s of streams) s.abort(new Error('done'))
      }
    } finally {
      await pool.stopAll()
    }
  },
)

/** Opens streams and aborts them at once, as fast as possible, cycling protocols. */
export const streamChurn = defineAttack(
  'stream-open-close',
  'rapid stream open + immediate reset, cycling protocols',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const protocols = protocolsOf(ctx)
    let i = 0
    try {
      const keeper = new ConnectionKeeper(ctx, pool)
      await loops(ctx.scaled(8), ctx.signal, ctx.tally, async () => {
        const stream = await keeper.open(protocols[i++ % protocols.length])
        if (!stream) return
        if (Math.random() < 0.5) stream.abort(new Error('churn'))
        else await closeSoon(stream, 200)
        ctx.tally.inc('streams_churned')
      })
    } finally {
      await pool.stopAll()
    }
  },
)
