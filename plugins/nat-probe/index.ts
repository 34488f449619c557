/**
 * NAT type classification (issue 4, part 2).
 *
 * - `natProbeServer()`, run by public nodes: an RFC 5780-style probe on two UDP ports and two TCP ports of
 *   one or two IPs (see wire.ts and server.ts), and the libp2p protocol `/mesh/nat-probe/1.0.0` that tells
 *   a connected peer where the probe is.
 * - `natClassifier()`: classifies this node's NAT for UDP and TCP separately (client.ts), with the evidence
 *   and a confidence; at start, when the node's addresses change, and on demand (`classify()`). Each
 *   verdict is emitted as `nat:classified`.
 */

import { networkInterfaces } from 'node:os'
import type { Connection, Stream } from '@libp2p/interface'
import { definePlugin, durationSchema, multiaddrSchema, type PluginContext, z } from 'meshkit'
import {
  gatherTcp,
  gatherUdp,
  judge,
  type NatType,
  type ProbeOptions,
  type ProtocolEvidence,
  type ProtocolVerdict,
} from './client.js'
import { ask, fetchEndpoints, parseRequest, readLine, writeLine } from './protocol.js'
import { ProbeServer } from './server.js'
import { DEFAULT_PROBE_PORTS, isIpv4, NAT_PROBE_PROTOCOL, parseServerAddress, RateLimiter } from './wire.js'

export type {
  FilteringObservation,
  MappingObservation,
  NatType,
  ProtocolEvidence,
  ProtocolVerdict,
} from './client.js'
export { judge } from './client.js'
export { ProbeServer, type ProbeServerOptions } from './server.js'
export { DEFAULT_PROBE_PORTS, NAT_PROBE_PROTOCOL, parseMessage, RateLimiter } from './wire.js'

const port = z.number().int().min(1).max(65535)
const ipv4 = z.string().refine(isIpv4, { message: 'expected an IPv4 address such as 198.51.100.10' })
/** A probe server's libp2p address: its probe endpoints are asked over /mesh/nat-probe/1.0.0. */
const isPeerAddress = (s: string) => /^\/ip4\/[^/]+\/tcp\/\d+\/p2p\/[A-Za-z0-9]+$/.test(s)
const serverAddress = z.string().refine((s) => isPeerAddress(s) || parseServerAddress(s) !== undefined, {
  message:
    "expected a probe address 'ip:port' or '/ip4/<ip>/udp/<port>', or a probe server's peer address '/ip4/<ip>/tcp/<port>/p2p/<id>'",
})

const serverOptions = z
  .strictObject({
    /** The two UDP ports (the second answers "reply from the other port"). @default [3478, 3479] */
    udpPorts: z.tuple([port, port]).default([...DEFAULT_PROBE_PORTS] as [number, number]),
    /** The TCP ports. @default the UDP ports */
    tcpPorts: z.array(port).min(1).max(2).optional(),
    /** The (one or two) IPv4 addresses to serve on. @default this host's first two non-internal IPv4 addresses */
    addresses: z.array(ipv4).min(1).max(2).optional(),
    /** Serve TCP too. @default true */
    tcp: z.boolean().default(true),
    /**
     * Other probe servers' libp2p addresses ('/ip4/<ip>/tcp/<port>[/p2p/<id>]'): they answer "from another
     * IP" for this one when its host has one IP, and this one for them (list each other). @default []
     */
    partners: z.array(multiaddrSchema("'/ip4/198.51.100.11/tcp/4001'")).max(4).default([]),
  })
  .default({ udpPorts: [...DEFAULT_PROBE_PORTS] as [number, number], tcp: true, partners: [] })

/** What `natProbeServer()` offers (`node.api('nat-probe-server')`). */
export interface NatProbeServerApi {
  /** The probe endpoints served (ip:port). */
  endpoints(): { udp: string[]; tcp: string[] }
  stats(): ProbeServer['stats'] | undefined
}

/** The IPv4 address of a multiaddr string, if any. */
const ipOfMultiaddr = (a: string) => /^\/ip4\/([^/]+)/.exec(a)?.[1]
const peerOfMultiaddr = (a: string) => /\/p2p\/([^/]+)/.exec(a)?.[1]

export const natProbeServer = definePlugin({
  name: 'nat-probe-server',
  provides: ['nat-probe-server'],
  options: serverOptions,
  create: (opts) => {
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
    const onStream = async (stream: Stream, connection: Connection) => {
      const request = parseRequest(await readLine(stream, 5000))
      try {
        if (!request || !server) {
          stream.abort(new Error('bad request'))
          return
        }
        if (request.t === 'endpoints') writeLine(stream, server.ownEndpoints())
        else {
          const peer = connection.remotePeer.toString()
          const ip = ipOfMultiaddr(connection.remoteAddr.toString())
          const partner = partnerPeers.has(peer) || (ip !== undefined && partnerIps.has(ip))
          if (!partner) writeLine(stream, { ok: false, reason: 'not a partner' })
          else if (!relayIn.allow(peer)) writeLine(stream, { ok: false, reason: 'rate' })
          else {
            if (request.proto === 'udp') server.sendSeen(request.to, request.id)
            else server.callbackTo(request.to, request.id)
            writeLine(stream, { ok: true })
          }
        }
        await stream.close({ signal: AbortSignal.timeout(2000) })
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      }
    }
    return {
      setup: () => api,
      start: async (ctx) => {
        const addresses =
          opts.addresses ??
          Object.values(networkInterfaces())
            .flat()
            .filter((i) => i?.family === 'IPv4' && !i.internal)
            .map((i) => i!.address)
            .slice(0, 2)
        if (addresses.length === 0) throw new Error('nat-probe-server: no IPv4 address to serve on')
        const relayOtherIp = (proto: 'udp' | 'tcp', to: string, id: string): boolean => {
          if (opts.partners.length === 0 || ctx.signal.aborted || !relayOut.allow('all')) return false
          const partner = opts.partners[nextPartner++ % opts.partners.length]
          ask(
            ctx.libp2p,
            target(partner),
            NAT_PROBE_PROTOCOL,
            { v: 1, t: 'relay', proto, to, id },
            3000,
          ).then(
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
      },
    }
  },
})

const classifierOptions = z
  .strictObject({
    /**
     * Probe servers (natProbeServer()): a probe address ('ip:port' or '/ip4/<ip>/udp/<port>', UDP and TCP on
     * that port), or a server's peer address ('/ip4/<ip>/tcp/<port>/p2p/<id>'), asked for its probe
     * endpoints over /mesh/nat-probe/1.0.0. Each server's answers name its other endpoints (and its
     * partners'): one server with two IPs (or one partner) is enough.
     */
    servers: z.array(serverAddress).min(1).max(4),
    /** STUN servers ('ip:port' or '/ip4/<ip>/udp/<port>'): extra UDP mapping evidence. @default [] */
    stun: z
      .array(
        z.string().refine((s) => !isPeerAddress(s) && parseServerAddress(s) !== undefined, {
          message: "expected a STUN server as 'ip:port'",
        }),
      )
      .max(4)
      .default([]),
    /** Classify UDP. @default true */
    udp: z.boolean().default(true),
    /** Classify TCP. @default true */
    tcp: z.boolean().default(true),
    /** Classify at start and when the node's addresses change. @default true */
    auto: z.boolean().default(true),
    /** Local IPv4 address to probe from. @default every interface */
    localAddress: ipv4.optional(),
    /** Longest wait for one answer. @default '1500ms' */
    timeout: durationSchema("'1500ms'").default(1500),
    /** Shortest time between two automatic re-checks. @default '30s' */
    minRecheckInterval: durationSchema("'30s'").default(30_000),
  })
  .refine((o) => o.udp || o.tcp, { message: 'at least one of udp and tcp must be true' })

/** The verdict for both protocols. */
export interface NatReport {
  udp?: ProtocolVerdict
  tcp?: ProtocolVerdict
  /** What started this classification. */
  trigger: 'start' | 'address-change' | 'demand'
  /** When it finished (ISO). */
  at: string
  ms: number
}

/** What `natClassifier()` offers (`node.api('nat-classification')`). */
export interface NatClassificationApi {
  /** Runs the tests now (joins one already running) and returns the verdict. */
  classify(): Promise<NatReport>
  /** The last verdict, if any. */
  report(): NatReport | undefined
}

const verdictOf = (e: ProtocolEvidence, ms: number): ProtocolVerdict => ({ ...judge(e), evidence: e, ms })

export const natClassifier = definePlugin({
  name: 'nat-classifier',
  provides: ['nat-classification'],
  options: classifierOptions,
  create: (opts) => {
    let last: NatReport | undefined
    let running: Promise<NatReport> | undefined
    let started = false
    let ctxRef: PluginContext | undefined
    let lastRun = 0
    let recheck: NodeJS.Timeout | undefined
    let addresses = ''
    /** Each server's main UDP and TCP probe endpoint; peer addresses are asked for theirs. */
    const resolveServers = async (ctx: PluginContext) => {
      const udp: string[] = []
      const tcp: string[] = []
      const notes: string[] = []
      await Promise.all(
        opts.servers.map(async (s) => {
          if (!isPeerAddress(s)) {
            udp.push(parseServerAddress(s)!)
            tcp.push(parseServerAddress(s)!)
            return
          }
          try {
            const e = await fetchEndpoints(
              ctx.libp2p,
              s,
              NAT_PROBE_PROTOCOL,
              Math.max(3000, opts.timeout * 2),
            )
            if (e.udp[0]) udp.push(e.udp[0])
            if (e.tcp[0]) tcp.push(e.tcp[0])
          } catch (err) {
            notes.push(
              `${s}: could not get its probe endpoints (${err instanceof Error ? err.message : err})`,
            )
          }
        }),
      )
      return { udp, tcp, notes }
    }
    const probeOptions = (servers: string[], tcpServers: string[], signal?: AbortSignal): ProbeOptions => ({
      servers,
      tcpServers,
      stun: opts.stun.map((s) => parseServerAddress(s)!),
      localAddress: opts.localAddress,
      timeoutMs: opts.timeout,
      retransmitMs: Math.max(50, Math.min(250, Math.floor(opts.timeout / 6))),
      signal,
    })
    const run = (trigger: NatReport['trigger']): Promise<NatReport> => {
      if (running) return running
      running = (async () => {
        const t0 = Date.now()
        const signal = ctxRef?.signal
        const resolved = await resolveServers(ctxRef!)
        const timed = async (f: (o: ProbeOptions) => Promise<ProtocolEvidence>) => {
          const t = Date.now()
          const e = await f(probeOptions(resolved.udp, resolved.tcp, signal))
          e.notes.unshift(...resolved.notes)
          return verdictOf(e, Date.now() - t)
        }
        const [udp, tcp] = await Promise.all([
          opts.udp ? timed(gatherUdp) : undefined,
          opts.tcp ? timed(gatherTcp) : undefined,
        ])
        // a run cut short by stop is partial evidence: not a verdict
        if (signal?.aborted) throw new Error('nat-classifier stopped during the classification')
        const report: NatReport = { udp, tcp, trigger, at: new Date().toISOString(), ms: Date.now() - t0 }
        last = report
        lastRun = Date.now()
        ctxRef?.events.emit('nat:classified', {
          udp: udp?.type,
          tcp: tcp?.type,
          udpConfidence: udp?.confidence,
          tcpConfidence: tcp?.confidence,
          trigger,
          ms: report.ms,
          report,
        })
        return report
      })().finally(() => {
        running = undefined
      })
      return running
    }
    const api: NatClassificationApi = {
      classify: () => {
        if (!started) return Promise.reject(new Error('nat-classifier is not started; classify after start'))
        return run('demand')
      },
      report: () => last,
    }
    return {
      setup: () => api,
      start: async (ctx) => {
        ctxRef = ctx
        started = true
        addresses = ctx.libp2p.getMultiaddrs().map(String).sort().join(' ')
        const onUpdate = () => {
          const now = ctx.libp2p.getMultiaddrs().map(String).sort().join(' ')
          if (now === addresses || !opts.auto) return
          addresses = now
          if (recheck) return
          // debounced, and never more often than minRecheckInterval
          const wait = Math.max(1000, lastRun + opts.minRecheckInterval - Date.now())
          recheck = setTimeout(() => {
            recheck = undefined
            if (!ctx.signal.aborted)
              run('address-change').catch((err) => ctx.logger.warn(`re-check failed: ${err}`))
          }, wait)
          recheck.unref()
        }
        ctx.libp2p.addEventListener('self:peer:update', onUpdate)
        ctx.signal.addEventListener(
          'abort',
          () => ctx.libp2p.removeEventListener('self:peer:update', onUpdate),
          {
            once: true,
          },
        )
        if (opts.auto) run('start').catch((err) => ctx.logger.warn(`classification failed: ${err}`))
      },
      stop: async () => {
        started = false
        if (recheck) clearTimeout(recheck)
        recheck = undefined
        // the running classification ends early (its waits follow ctx.signal)
        await running?.catch(() => {})
        ctxRef = undefined
      },
    }
  },
})

/** The NAT types, most open first. */
export const NAT_TYPES: readonly NatType[] = [
  'public',
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
  'unknown',
]
