/**
 * natProbeServer()'s machinery: the probe server (server.ts) on its addresses and ports, and
 * `/mesh/nat-probe/1.0.0`, which tells a connected peer where the probe is and lets partner servers ask
 * this one to answer "from another IP" (partners only, budgeted, rate limited).
 */
import { networkInterfaces } from 'node:os'
import type { Connection, Stream } from '@libp2p/interface'
import type { Budget, PluginContext, PluginHooks } from 'meshkit/plugin'
import type { NatProbeServerApi, ProbeServerPluginOptions } from './index.js'
import { ask, fetchEndpoints, parseRequest, readLine, writeLine } from './protocol.js'
import { ProbeServer } from './server.js'
import { NAT_PROBE_PROTOCOL, RateLimiter } from './wire.js'

/** The IPv4 address of a multiaddr string, if any. */
const ipOfMultiaddr = (a: string) => /^\/ip4\/([^/]+)/.exec(a)?.[1]
const peerOfMultiaddr = (a: string) => /\/p2p\/([^/]+)/.exec(a)?.[1]

/** natProbeServer()'s hooks for `opts`. */
export function createProbeServer(
  opts: ProbeServerPluginOptions,
): PluginHooks<NatProbeServerApi, ProbeServerPluginOptions> {
  let server: ProbeServer | undefined
  let nextPartner = 0
  const partnerPeers = new Set(opts.partners.map(peerOfMultiaddr).filter((p) => p !== undefined))
  const partnerIps = new Set(opts.partners.map(ipOfMultiaddr).filter((p) => p !== undefined))
  // relays asked of partners (outbound) and accepted from partners (inbound), in total
  const relayOut = new RateLimiter({ burst: 100, perSecond: 50 }, { burst: 100, perSecond: 50 }, 1)
  const relayIn = new RateLimiter({ burst: 100, perSecond: 50 }, { burst: 200, perSecond: 100 }, 64)
  const api: NatProbeServerApi = {
    endpoints: () => server?.endpoints() ?? { udp: [], tcp: [] },
    stats: () => server?.stats,
  }
  /** Partner addresses completed with the peer id seen, so that asks reuse the connection. */
  const partnerTargets = new Map<string, string>()
  const target = (partner: string) => partnerTargets.get(partner) ?? partner
  const learnPeer = (partner: string, peer: string) => {
    if (!peerOfMultiaddr(partner)) partnerTargets.set(partner, `${partner}/p2p/${peer}`)
  }
  let budget: Budget | undefined
  let ctxRef: PluginContext | undefined
  const onStream = async (stream: Stream, connection: Connection) => {
    const peer = connection.remotePeer.toString()
    const ticket = budget?.admit(peer)
    if (!ticket?.ok) {
      stream.abort(new Error(`nat-probe: refused (${ticket?.reason ?? 'not started'})`))
      return
    }
    try {
      const line = await readLine(stream, 5000)
      const request = parseRequest(line)
      if (!request || !server) {
        // a line that is no request is the peer's doing; silence or a slow peer is not
        if (line !== undefined && !request)
          ctxRef?.reputation.penalize(peer, 'malformed', 'a bad nat-probe request')
        stream.abort(new Error('bad request'))
        return
      }
      ticket.spend(line?.length ?? 0)
      if (request.t === 'endpoints') writeLine(stream, server.ownEndpoints())
      else {
        const ip = ipOfMultiaddr(connection.remoteAddr.toString())
        const partner = partnerPeers.has(peer) || (ip !== undefined && partnerIps.has(ip))
        if (!partner) {
          ctxRef?.reputation.penalize(
            peer,
            'abuse',
            "a nat-probe 'relay' request from a peer that is no partner",
          )
          writeLine(stream, { ok: false, reason: 'not a partner' })
        } else if (!relayIn.allow(peer)) writeLine(stream, { ok: false, reason: 'rate' })
        else if (request.proto === 'udp') {
          server.sendSeen(request.to, request.id)
          writeLine(stream, { ok: true })
        } else if (server.callbackTo(request.to, request.id)) writeLine(stream, { ok: true })
        else writeLine(stream, { ok: false, reason: 'rate' })
      }
      await stream.close({ signal: AbortSignal.timeout(2000) })
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      ticket.release()
    }
  }
  return {
    setup: (ctx) => {
      // configured partners are dialled whatever network.addressScope says
      for (const partner of opts.partners) ctx.peerAddresses.trust(partner)
      return api
    },
    start: async (ctx) => {
      const addresses =
        opts.addresses ??
        Object.values(networkInterfaces())
          .flat()
          .filter((i) => i?.family === 'IPv4' && !i.internal)
          .map((i) => i!.address)
          .slice(0, 2)
      if (addresses.length === 0) throw new Error('nat-probe-server: no IPv4 address to serve on')
      ctxRef = ctx
      // a client asks once per classification (its endpoints); partners relay at most relayIn's rate
      budget = ctx.budget('nat-probe', {
        ratePerSecond: 2,
        burst: 20,
        concurrency: 4,
        bytesPerMinute: 64 * 1024,
      })
      const relayOtherIp = (proto: 'udp' | 'tcp', to: string, id: string): boolean => {
        if (opts.partners.length === 0 || ctx.signal.aborted || !relayOut.allow('all')) return false
        const partner = opts.partners[nextPartner++ % opts.partners.length]
        ask(ctx.libp2p, target(partner), NAT_PROBE_PROTOCOL, { v: 1, t: 'relay', proto, to, id }, 3000).then(
          (answer) => learnPeer(partner, answer.peer),
          (err) => ctx.logger.debug(`relay to ${partner} failed: ${err}`),
        )
        return true
      }
      server = await ProbeServer.start({
        addresses,
        udpPorts: opts.udpPorts,
        tcpPorts: opts.tcp ? (opts.tcpPorts ?? opts.udpPorts) : [],
        log: (m) => ctx.logger.debug(m),
        relayOtherIp,
      })
      if (addresses.length < 2 && opts.partners.length === 0)
        ctx.logger.warn(
          'nat-probe-server: one IP and no partners; clients cannot tell full cone from restricted cone (give two addresses or a partner)',
        )
      await ctx.libp2p.handle(NAT_PROBE_PROTOCOL, onStream, { maxInboundStreams: 16 })
      // the partners' endpoints are advertised with ours; partners may start later: retry, bounded each time
      const learn = async () => {
        const found = { udp: [] as string[], tcp: [] as string[] }
        let missing = 0
        for (const partner of opts.partners) {
          try {
            const e = await fetchEndpoints(ctx.libp2p, target(partner), NAT_PROBE_PROTOCOL, 5000)
            learnPeer(partner, e.peer)
            found.udp.push(...e.udp)
            found.tcp.push(...e.tcp)
          } catch (err) {
            missing++
            ctx.logger.debug(`partner ${partner}: ${err}`)
          }
        }
        server?.setPartnerEndpoints(found)
        if (missing > 0 && !ctx.signal.aborted) {
          const t = setTimeout(() => void learn(), 5000)
          ctx.signal.addEventListener('abort', () => clearTimeout(t), { once: true })
        } else if (opts.partners.length > 0) ctx.events.emit('nat-probe:partners', found)
      }
      if (opts.partners.length > 0) void learn()
      ctx.events.emit('nat-probe:listening', api.endpoints())
    },
    stop: async (ctx) => {
      await ctx.libp2p.unhandle(NAT_PROBE_PROTOCOL).catch(() => {})
      await server?.close()
      server = undefined
      budget = undefined
      ctxRef = undefined
    },
  }
}
