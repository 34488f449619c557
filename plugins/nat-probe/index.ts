/**
 * NAT type classification (issue 4, part 2).
 *
 * - `natProbeServer()`, run by public nodes: an RFC 5780-style probe on two UDP ports and two TCP ports of
 *   one or two IPs (see wire.ts and server.ts), and the libp2p protocol `/mesh/nat-probe/1.0.0` that tells
 *   a connected peer where the probe is.
 * - `natClassifier()`: classifies this node's NAT for UDP and TCP separately (client.ts), with the evidence
 *   and a confidence, weighed against identify's observed addresses and AutoNAT v2 (observed.ts); at
 *   start, when the node's addresses change (coalesced, rate limited), and on demand (`classify()`). Each
 *   verdict is emitted as `nat:classified`, a change of type as `nat:changed`.
 */

import { networkInterfaces } from 'node:os'
import type { Connection, IdentifyResult, Stream } from '@libp2p/interface'
import {
  type Budget,
  createAddressScope,
  definePlugin,
  durationSchema,
  multiaddrSchema,
  type PluginContext,
  sleep,
  z,
} from 'meshkit/plugin'
import {
  gatherTcp,
  gatherUdp,
  judge,
  lackedAnswers,
  type ProbeOptions,
  type ProtocolEvidence,
  type ProtocolVerdict,
  probeMapping,
} from './client.js'
import {
  type AutonatEvidence,
  adjustConfidence,
  autonatCorroboration,
  autonatEvidence,
  identifyCorroboration,
  type ObservedAddress,
  ObservedAddresses,
} from './observed.js'
import { ask, fetchEndpoints, parseRequest, readLine, writeLine } from './protocol.js'
import { ProbeServer } from './server.js'
import {
  DEFAULT_PROBE_PORTS,
  isIpv4,
  NAT_PROBE_PROTOCOL,
  parseServerAddress,
  RateLimiter,
  splitAddr,
} from './wire.js'

export type {
  FilteringObservation,
  MappingObservation,
  NatType,
  ProtocolEvidence,
  ProtocolVerdict,
} from './client.js'
export { judge } from './client.js'
export {
  type AutonatEvidence,
  adjustConfidence,
  autonatCorroboration,
  autonatEvidence,
  type Corroboration,
  identifyCorroboration,
  type ObservedAddress,
  ObservedAddresses,
} from './observed.js'
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
  // its UDP ports, and its TCP ports (the UDP ones unless set), on each address it serves
  ports: (opts) => {
    const tcpPorts = opts.tcp ? (opts.tcpPorts ?? opts.udpPorts) : []
    const hosts: Array<string | undefined> = opts.addresses ?? [undefined]
    return hosts.flatMap((host) => [
      ...opts.udpPorts.map((port) => ({ protocol: 'udp' as const, port, host, what: 'NAT probe' })),
      ...tcpPorts.map((port) => ({ protocol: 'tcp' as const, port, host, what: 'NAT probe' })),
    ])
  },
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
        budget = undefined
        ctxRef = undefined
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
    /** Classify at start and again when the node's addresses change (see `minRecheckInterval`). @default true */
    auto: z.boolean().default(true),
    /** Local IPv4 address to probe from. @default every interface */
    localAddress: ipv4.optional(),
    /**
     * Longest wait for one answer, counted in time this process could run (a stalled event loop does not
     * eat it up). A protocol's test left without answers is tried once more with twice this wait.
     * @default '1500ms'
     */
    timeout: durationSchema("'1500ms'").default(1500),
    /**
     * With `auto`: the shortest time between two automatic re-checks (triggers are coalesced meanwhile),
     * and how often the node looks for a change: its network interfaces, and a quick UDP mapping check
     * (one fresh socket, one probe to each of two server IPs) whose new external IP, or mapping turned
     * endpoint-dependent (or back), triggers a re-check. A full re-check also runs every 30 times this
     * long (15 min by default), for changes of filtering only. @default '30s'
     */
    minRecheckInterval: durationSchema("'30s'").default(30_000),
  })
  .refine((o) => o.udp || o.tcp, { message: 'at least one of udp and tcp must be true' })

/** Waits before each new start classification when one reached no probe server (lossy link, slow dial). */
const START_RETRIES = [1000, 2000, 4000]

/** Nothing answered the UDP probes of `report` (no mapping learnt): the servers were out of reach. */
const reachedNothing = (report: NatReport): boolean =>
  report.udp !== undefined &&
  report.udp.type === 'unknown' &&
  !report.udp.evidence.mappings.some((m) => m.mapped)

/** A full re-check runs every PERIODIC_FACTOR × minRecheckInterval even when nothing seems to change. */
const PERIODIC_FACTOR = 30

/** The verdict for both protocols. */
export interface NatReport {
  udp?: ProtocolVerdict
  tcp?: ProtocolVerdict
  /** What started this classification. */
  trigger: 'start' | 'address-change' | 'periodic' | 'demand'
  /** The changes that led to an automatic re-check, coalesced (e.g. `self:peer:update`, `new external IP ...`). */
  reasons: string[]
  /** Identify's observed addresses of this node (the latest per peer), counted or not, with why. */
  observed: ObservedAddress[]
  /** AutoNAT v2 as libp2p's public surface shows it. */
  autonat: AutonatEvidence
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
  /**
   * The newest verdict for one protocol: a running classification's as soon as that protocol is judged
   * (`nat:verdict {protocol, type, confidence, trigger}` says so; UDP's usually comes seconds before
   * TCP's), else the last report's.
   */
  verdict(protocol: 'udp' | 'tcp'): ProtocolVerdict | undefined
  /**
   * A classification runs now, or the first one is about to (with `auto`, from start until it ends): a
   * verdict (or a new one) is coming soon. holePunch() waits for it before it decides on a connection.
   */
  classifying(): boolean
  /** Identify's observed addresses of this node so far (the latest per peer). */
  observed(): ObservedAddress[]
}

const verdictOf = (e: ProtocolEvidence, ms: number): ProtocolVerdict => ({ ...judge(e), evidence: e, ms })

/** Adds identify's and AutoNAT v2's say to a probe verdict (confidence adjusted, probe's kept). */
function corroborate(
  v: ProtocolVerdict,
  observed: ObservedAddress[],
  autonat: AutonatEvidence,
): ProtocolVerdict {
  const said = [
    identifyCorroboration(v, observed, v.evidence.hostAddresses),
    autonatCorroboration(v, v.evidence.protocol, autonat),
  ]
  const probeConfidence = v.probeConfidence ?? v.confidence
  return {
    ...v,
    probeConfidence,
    confidence: adjustConfidence(probeConfidence, v.type, said),
    corroboration: said,
  }
}

/**
 * What the quick UDP mapping check is compared by: the external IPs seen, and whether two server IPs saw
 * one mapping (`same`) or two (`different`). `none`: no answer.
 */
function mappingSignature(mapped: Array<string | undefined>): string {
  const got = mapped.filter((m): m is string => m !== undefined)
  if (got.length === 0) return 'none'
  const ips = [...new Set(got.map((m) => splitAddr(m).ip))].sort().join(',')
  const shape = got.length < 2 ? 'single' : new Set(got).size === 1 ? 'same' : 'different'
  return `${ips}/${shape}`
}

/** The two UDP endpoints (different server IPs) of the last verdict's mapping test, and what they saw. */
function watchedEndpoints(v: ProtocolVerdict | undefined) {
  const probes = v?.evidence.mappings.filter((m) => m.source === 'probe') ?? []
  const first = probes.find((m) => m.mapped) ?? probes[0]
  if (!first) return undefined
  const ip = splitAddr(first.server).ip
  const second = probes.find((m) => m.mapped && splitAddr(m.server).ip !== ip)
  const chosen = second ? [first, second] : [first]
  return { endpoints: chosen.map((m) => m.server), signature: mappingSignature(chosen.map((m) => m.mapped)) }
}

const interfaceSignature = () =>
  Object.values(networkInterfaces())
    .flat()
    .filter((i) => i?.family === 'IPv4' && !i.internal)
    .map((i) => i!.address)
    .sort()
    .join(' ')

/**
 * Classifies this node's NAT for UDP and TCP (the probe protocol, plus STUN mappings when configured),
 * then weighs the verdict against identify's observed addresses and AutoNAT v2 (corroboration only).
 *
 * With `auto`, it classifies at start and re-checks when something suggests a change: the node's own
 * addresses (`self:peer:update`), a network interface address, an external IP that identify reports and
 * the last verdict did not see, or the quick mapping check (every `minRecheckInterval`); plus a full
 * re-check every 30 × `minRecheckInterval`. Triggers are coalesced and rate limited (`minRecheckInterval`).
 *
 * Events: `nat:verdict {protocol, type, confidence, trigger}` as soon as one protocol is judged (UDP's
 * usually seconds before TCP's: hole punching needs only UDP's); `nat:classified {udp, tcp, udpConfidence,
 * tcpConfidence, trigger, reasons, ms, report}` after every classification; `nat:changed {udp: {from, to}, tcp: {from, to}, trigger, reasons}` when the type
 * changed for either protocol (not after the first one); `nat:evidence {udp, tcp, udpConfidence,
 * tcpConfidence, report}` when a later identify observation changes what corroborates the last verdict.
 */
export const natClassifier = definePlugin({
  name: 'nat-classifier',
  provides: ['nat-classification'],
  options: classifierOptions,
  create: (opts) => {
    let last: NatReport | undefined
    let running: Promise<NatReport> | undefined
    let started = false
    /** With `auto`: from start until the first classification settled. */
    let firstPending = false
    let ctxRef: PluginContext | undefined
    let lastRun = 0
    /** The newest verdict per protocol: a running classification's once judged, else the last report's. */
    let latest: { udp?: ProtocolVerdict; tcp?: ProtocolVerdict } = {}
    let recheck: NodeJS.Timeout | undefined
    let observed: ObservedAddresses | undefined
    const pending = new Set<string>()
    /** The probe endpoints each peer-address server gave last. */
    const known = new Map<string, { udp?: string; tcp?: string }>()
    const timers: NodeJS.Timeout[] = []
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
          // a connection that died unnoticed (e.g. the NAT's WAN address changed) fails the first ask: the
          // second dials a new connection. Then the endpoints learnt last time, if any.
          let failure: unknown
          for (let attempt = 0; attempt < 2 && !ctx.signal.aborted; attempt++) {
            try {
              const e = await fetchEndpoints(
                ctx.libp2p,
                s,
                NAT_PROBE_PROTOCOL,
                Math.max(3000, opts.timeout * 2),
                attempt > 0,
              )
              const found = { udp: e.udp[0], tcp: e.tcp[0] }
              known.set(s, found)
              if (found.udp) udp.push(found.udp)
              if (found.tcp) tcp.push(found.tcp)
              return
            } catch (err) {
              failure = err
            }
          }
          const reason = failure instanceof Error ? failure.message : String(failure)
          const cached = known.get(s)
          if (cached) {
            if (cached.udp) udp.push(cached.udp)
            if (cached.tcp) tcp.push(cached.tcp)
          }
          notes.push(
            `${s}: could not get its probe endpoints (${reason})${cached ? '; used the ones it gave last time' : ''}`,
          )
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
    const autonatNow = (ctx: PluginContext) =>
      autonatEvidence({
        protocols: ctx.libp2p.getProtocols(),
        multiaddrs: ctx.libp2p.getMultiaddrs(),
        announce: ctx.config.announce ?? [],
        libp2pScope: createAddressScope([]),
      })
    const run = (trigger: NatReport['trigger'], reasons: string[] = []): Promise<NatReport> => {
      if (running) return running
      running = (async () => {
        const t0 = Date.now()
        const ctx = ctxRef!
        const signal = ctx.signal
        const resolved = await resolveServers(ctx)
        const timed = async (f: (o: ProbeOptions) => Promise<ProtocolEvidence>) => {
          const t = Date.now()
          const base = probeOptions(resolved.udp, resolved.tcp, signal)
          let e = await f(base)
          const first = judge(e)
          // answers that did not come (a server busy, a datagram lost) are not evidence: one more try,
          // with longer waits, before settling on unknown
          if (first.type === 'unknown' && lackedAnswers(e) && !signal.aborted) {
            e = await f({ ...base, timeoutMs: base.timeoutMs * 2 })
            e.notes.unshift(
              `the first try was inconclusive (${first.reason}): tried again with ${base.timeoutMs * 2} ms waits`,
            )
          }
          e.notes.unshift(...resolved.notes)
          return verdictOf(e, Date.now() - t)
        }
        // each protocol's verdict is out as soon as it is judged (UDP's usually seconds before TCP's):
        // hole punching needs only UDP's
        const early = (v: ProtocolVerdict) => {
          if (signal.aborted) return v
          const judged = corroborate(v, observed?.list() ?? [], autonatNow(ctx))
          latest[judged.evidence.protocol] = judged
          ctx.events.emit('nat:verdict', {
            protocol: judged.evidence.protocol,
            type: judged.type,
            confidence: judged.confidence,
            trigger,
          })
          return v
        }
        const [udpProbe, tcpProbe] = await Promise.all([
          opts.udp ? timed(gatherUdp).then(early) : undefined,
          opts.tcp ? timed(gatherTcp).then(early) : undefined,
        ])
        // a run cut short by stop is partial evidence: not a verdict
        if (signal.aborted) throw new Error('nat-classifier stopped during the classification')
        const seen = observed?.list() ?? []
        const autonat = autonatNow(ctx)
        const udp = udpProbe && corroborate(udpProbe, seen, autonat)
        const tcp = tcpProbe && corroborate(tcpProbe, seen, autonat)
        const report: NatReport = {
          udp,
          tcp,
          trigger,
          reasons,
          observed: seen,
          autonat,
          at: new Date().toISOString(),
          ms: Date.now() - t0,
        }
        const previous = last
        last = report
        latest = { udp, tcp }
        lastRun = Date.now()
        ctx.events.emit('nat:classified', {
          udp: udp?.type,
          tcp: tcp?.type,
          udpConfidence: udp?.confidence,
          tcpConfidence: tcp?.confidence,
          trigger,
          reasons,
          ms: report.ms,
          report,
        })
        if (previous && (previous.udp?.type !== udp?.type || previous.tcp?.type !== tcp?.type)) {
          ctx.logger.info(
            `NAT type changed: udp ${previous.udp?.type} -> ${udp?.type}, tcp ${previous.tcp?.type} -> ${tcp?.type} (${reasons.join('; ') || trigger})`,
          )
          ctx.events.emit('nat:changed', {
            udp: { from: previous.udp?.type, to: udp?.type },
            tcp: { from: previous.tcp?.type, to: tcp?.type },
            trigger,
            reasons,
          })
        }
        return report
      })().finally(() => {
        running = undefined
      })
      return running
    }
    /** Asks for a re-check: coalesced with others, at most one per `minRecheckInterval`. */
    const schedule = (reason: string) => {
      const ctx = ctxRef
      if (!ctx || !opts.auto || ctx.signal.aborted) return
      pending.add(reason)
      arm(ctx)
    }
    /** Runs the pending re-check once allowed: after a running classification, minRecheckInterval after the last. */
    const arm = (ctx: PluginContext) => {
      if (recheck) return
      const wait = Math.max(500, lastRun + opts.minRecheckInterval - Date.now())
      recheck = setTimeout(async () => {
        await running?.catch(() => {})
        recheck = undefined
        if (ctx.signal.aborted || pending.size === 0) return
        // a classification (on demand, or the one awaited) ended meanwhile: wait the interval from it
        if (Date.now() < lastRun + opts.minRecheckInterval) return arm(ctx)
        const reasons = [...pending]
        pending.clear()
        const trigger = reasons.every((r) => r === 'periodic') ? 'periodic' : 'address-change'
        run(
          trigger,
          reasons.filter((r) => trigger === 'periodic' || r !== 'periodic'),
        ).catch((err) => ctx.logger.warn(`re-check failed: ${err}`))
      }, wait)
      recheck.unref()
    }
    /**
     * Weighs the last verdict again against the observations now known (no probing): when what a source
     * says changed, the report is updated and `nat:evidence` emitted.
     */
    const refreshEvidence = (ctx: PluginContext) => {
      const report = last
      if (!report || running || !observed) return
      const seen = observed.list()
      const autonat = autonatNow(ctx)
      const udp = report.udp && corroborate(report.udp, seen, autonat)
      const tcp = report.tcp && corroborate(report.tcp, seen, autonat)
      const said = (v?: ProtocolVerdict) => JSON.stringify(v?.corroboration?.map((c) => c.result))
      if (said(udp) === said(report.udp) && said(tcp) === said(report.tcp)) return
      last = { ...report, udp, tcp, observed: seen, autonat }
      latest = { udp, tcp }
      ctx.events.emit('nat:evidence', {
        udp: udp?.type,
        tcp: tcp?.type,
        udpConfidence: udp?.confidence,
        tcpConfidence: tcp?.confidence,
        report: last,
      })
    }
    let watching = false
    /** One watch tick: interfaces, then the quick mapping check against the last verdict's. */
    const watch = async (ctx: PluginContext, interfaces: { now: string }) => {
      if (watching || running || recheck || ctx.signal.aborted) return
      watching = true
      try {
        const now = interfaceSignature()
        if (now !== interfaces.now) {
          interfaces.now = now
          schedule(`network interfaces changed (${now || 'none'})`)
          return
        }
        let v = watchedEndpoints(last?.udp)
        if (!v && last?.udp) {
          // the last run reached no server: watch the endpoints known from before
          const endpoints = opts.servers
            .map((s) => (isPeerAddress(s) ? known.get(s)?.udp : parseServerAddress(s)))
            .filter((e): e is string => e !== undefined)
          if (endpoints.length > 0) v = { endpoints: endpoints.slice(0, 1), signature: 'none' }
        }
        if (!v) return
        const seen = await probeMapping(v.endpoints, probeOptions([], [], ctx.signal))
        if (ctx.signal.aborted || running) return
        const signature = mappingSignature(seen.map((m) => m.mapped))
        if (signature !== v.signature)
          schedule(`UDP mapping check: ${signature} (last classification: ${v.signature})`)
      } catch (err) {
        ctx.logger.debug(`watch failed: ${err}`)
      } finally {
        watching = false
      }
    }
    const api: NatClassificationApi = {
      classify: () => {
        if (!started) return Promise.reject(new Error('nat-classifier is not started; classify after start'))
        return run('demand')
      },
      report: () => last,
      verdict: (protocol) => latest[protocol],
      classifying: () => running !== undefined || firstPending,
      observed: () => observed?.list() ?? [],
    }
    return {
      setup: (ctx) => {
        // configured probe servers are dialled whatever network.addressScope says
        for (const server of opts.servers) if (server.startsWith('/')) ctx.peerAddresses.trust(server)
        return api
      },
      start: async (ctx) => {
        ctxRef = ctx
        started = true
        observed = new ObservedAddresses(createAddressScope(ctx.config.network.publicCidrs))
        let addresses = ctx.libp2p.getMultiaddrs().map(String).sort().join(' ')
        const onUpdate = () => {
          const now = ctx.libp2p.getMultiaddrs().map(String).sort().join(' ')
          if (now === addresses) return
          addresses = now
          schedule('self:peer:update (the node’s addresses changed)')
        }
        const onIdentify = (evt: CustomEvent<IdentifyResult>) => {
          const r = evt.detail
          if (!r.observedAddr || !observed) return
          const change = observed.add({
            observer: r.peerId.toString(),
            observerAddr: r.connection.remoteAddr,
            observed: r.observedAddr,
            direction: r.connection.direction,
            relayed: r.connection.limits !== undefined,
          })
          const ip = change.observation.ip
          if (!change.observation.counted || !ip || !last) return
          refreshEvidence(ctx)
          if (!change.newExternalIp) return
          // an external IP the last verdict did not see (nor is one of this host's): the NAT may have changed.
          // Judged against the verdict of a classification running now, once it is done.
          const observer = change.observation.observer
          void (running ?? Promise.resolve())
            .catch(() => {})
            .then(() => {
              const v = last
              if (!v) return
              const known = [v.udp, v.tcp].some((x) =>
                x?.evidence.mappings.some((m) => m.mapped && splitAddr(m.mapped).ip === ip),
              )
              const local = (v.udp ?? v.tcp)?.evidence.hostAddresses.includes(ip)
              if (!known && !local) schedule(`identify: new external IP ${ip} (seen by ${observer})`)
            })
        }
        ctx.libp2p.addEventListener('self:peer:update', onUpdate)
        ctx.libp2p.addEventListener('peer:identify', onIdentify)
        ctx.signal.addEventListener(
          'abort',
          () => {
            ctx.libp2p.removeEventListener('self:peer:update', onUpdate)
            ctx.libp2p.removeEventListener('peer:identify', onIdentify)
          },
          { once: true },
        )
        if (!opts.auto) return
        const interfaces = { now: interfaceSignature() }
        const watchTimer = setInterval(() => void watch(ctx, interfaces), opts.minRecheckInterval)
        const periodic = setInterval(() => schedule('periodic'), PERIODIC_FACTOR * opts.minRecheckInterval)
        watchTimer.unref()
        periodic.unref()
        timers.push(watchTimer, periodic)
        firstPending = true
        // a start on a lossy link (or while the server's connection is still being set up) may reach no
        // probe server: tried again soon, a few times, and the node stays "classifying" meanwhile (hole
        // punching waits for a type that is coming rather than deciding on 'unknown')
        const first = async () => {
          let report = await run('start')
          for (let i = 0; i < START_RETRIES.length && reachedNothing(report) && !ctx.signal.aborted; i++) {
            ctx.logger.debug(
              `the start classification reached no probe server: again in ${START_RETRIES[i]} ms`,
            )
            await sleep(START_RETRIES[i], ctx.signal).catch(() => {})
            if (ctx.signal.aborted || last !== report) break
            report = await run('start', [`no probe server answered at start (try ${i + 2})`])
          }
        }
        first()
          .catch((err) => ctx.logger.warn(`classification failed: ${err}`))
          .finally(() => {
            firstPending = false
          })
      },
      stop: async () => {
        started = false
        firstPending = false
        for (const t of timers.splice(0)) clearInterval(t)
        if (recheck) clearTimeout(recheck)
        recheck = undefined
        pending.clear()
        // the running classification ends early (its waits follow ctx.signal)
        await running?.catch(() => {})
        ctxRef = undefined
      },
    }
  },
})

/** The NAT types, most open first (the `nat-classification` vocabulary, from core). */
export { NAT_TYPES } from 'meshkit/plugin'
