/**
 * natClassifier()'s machinery: classifications (both protocols' tests, client.ts, then corroboration,
 * verdicts.ts), their events, and with `auto` the re-checks: at start (retried while no probe server is
 * reached), when the node's addresses or interfaces change, when identify sees a new external IP, when the
 * quick mapping check sees a change, and periodically; coalesced and rate limited (`minRecheckInterval`).
 */
import type { IdentifyResult } from '@libp2p/interface'
import { createAddressScope, type PluginContext, type PluginHooks, sleep } from 'meshkit/plugin'
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
import type { ClassifierOptions, NatClassificationApi, NatReport } from './index.js'
import { autonatEvidence, ObservedAddresses } from './observed.js'
import { isPeerAddress, ProbeEndpoints } from './probe-endpoints.js'
import {
  corroborate,
  interfaceSignature,
  keepKnown,
  mappingSignature,
  reachedNothing,
  verdictOf,
  watchedEndpoints,
} from './verdicts.js'
import { parseServerAddress, splitAddr } from './wire.js'

/** Waits before each new start classification when one reached no probe server (lossy link, slow dial). */
const START_RETRIES = [1000, 2000, 4000]

/** A full re-check runs every PERIODIC_FACTOR × minRecheckInterval even when nothing seems to change. */
const PERIODIC_FACTOR = 30

/** natClassifier()'s hooks for `opts`. */
export function createClassifier(
  opts: ClassifierOptions,
): PluginHooks<NatClassificationApi, ClassifierOptions> {
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
  const probeEndpoints = new ProbeEndpoints(opts)
  const timers: NodeJS.Timeout[] = []
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
      const resolved = await probeEndpoints.resolve(ctx)
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
        const protocol = v.evidence.protocol
        const judged = keepKnown(
          last?.[protocol],
          corroborate(v, observed?.list() ?? [], autonatNow(ctx)),
          reasons,
        )!
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
      const udp = keepKnown(last?.udp, udpProbe && corroborate(udpProbe, seen, autonat), reasons)
      const tcp = keepKnown(last?.tcp, tcpProbe && corroborate(tcpProbe, seen, autonat), reasons)
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
          .map((s) => (isPeerAddress(s) ? probeEndpoints.known(s)?.udp : parseServerAddress(s)))
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
}
