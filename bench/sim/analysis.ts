/**
 * From what the hosts measured to the figures of a run: rendezvous times by topic class, members that
 * never reached their target, messages and bytes per join by protocol, bootstrap load against ordinary
 * nodes, DHT lookups, memory. Pure functions of the hosts' reports (model.ts reads the same results).
 */
import { REGISTRY_LIMITS } from '../../plugins/kad-topics/topic-manager.js'
import type { HostFinal, LookupRecord, MembershipRecord, NodeReport } from './host.js'
import type { LedgerSnapshot } from './ledger.js'
import type { SimOptions } from './scenario.js'

/** Nearest-rank percentile; undefined for an empty list. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]
}

const r1 = (v: number | undefined) =>
  v === undefined || !Number.isFinite(v) ? undefined : Math.round(v * 10) / 10
const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0)
const mean = (values: readonly number[]) => (values.length === 0 ? 0 : sum(values) / values.length)

/**
 * Protocols that are keep-alive, not join work: libp2p's connection monitor pings every connection every
 * 10 s whatever happens. Per-join figures leave them out (they are in `background`).
 */
export const KEEPALIVE = new Set(['ping'])

/** Topics of at most this many members are "rare". */
export const RARE_MAX = 5
export const SIZE_CLASSES: Array<[string, number, number]> = [
  ['2', 2, 2],
  ['3-5', 3, 5],
  ['6-20', 6, 20],
  ['21-100', 21, 100],
  ['>100', 101, Number.POSITIVE_INFINITY],
]

export interface RunPhases {
  /** ms since t0: end of the join phase (everybody arrived and settled, or the settle time ran out). */
  joinEnd: number
  /** ms since t0: end of the background window. */
  backgroundEnd: number
  wallMs: number
  rssBaseMb: number
  rssMaxMb: number
  rssJoinMb: number
  /** CPU ms per host at the snapshots. */
  cpuAtJoin: Record<number, number>
  cpuAtBackground: Record<number, number>
}

interface ClassStats {
  members: number
  p50?: number
  p99?: number
  max?: number
  within10s: number
  neverFound: number
}

function rendezvous(memberships: MembershipRecord[]) {
  // when did `target` other members join? (a member cannot have more topic peers than members that joined)
  const joins = new Map<string, number[]>()
  for (const m of memberships) {
    if (m.joinedAt === undefined) continue
    const list = joins.get(m.topic) ?? []
    list.push(m.joinedAt)
    joins.set(m.topic, list)
  }
  for (const list of joins.values()) list.sort((a, b) => a - b)
  const rows: Array<{ m: MembershipRecord; ms?: number; possible: boolean }> = []
  for (const m of memberships) {
    if (m.left || m.joinedAt === undefined || m.target <= 0) continue
    const list = joins.get(m.topic) ?? []
    // the target-th join among the others (the list includes this member's own join once)
    const others = [...list]
    others.splice(others.indexOf(m.joinedAt), 1)
    const possibleAt = others.length >= m.target ? Math.max(m.joinedAt, others[m.target - 1]) : undefined
    if (possibleAt === undefined) {
      rows.push({ m, possible: false })
      continue
    }
    rows.push({
      m,
      possible: true,
      ms: m.reachedAt === undefined ? undefined : Math.max(0, m.reachedAt - possibleAt),
    })
  }
  const stats = (filter: (m: MembershipRecord) => boolean): ClassStats => {
    const sel = rows.filter((r) => r.possible && filter(r.m))
    const times = sel.filter((r) => r.ms !== undefined).map((r) => r.ms!)
    return {
      members: sel.length,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      max: times.length ? Math.max(...times) : undefined,
      within10s: sel.length
        ? r1((100 * sel.filter((r) => r.ms !== undefined && r.ms <= 10_000).length) / sel.length)!
        : 100,
      neverFound: sel.filter((r) => r.ms === undefined).length,
    }
  }
  const neverFound = rows.filter((r) => r.possible && r.ms === undefined)
  return {
    all: stats(() => true),
    rare: stats((m) => m.size <= RARE_MAX),
    popular: stats((m) => m.size > RARE_MAX),
    bySize: Object.fromEntries(
      SIZE_CLASSES.map(([name, lo, hi]) => [name, stats((m) => m.size >= lo && m.size <= hi)]),
    ),
    neverFound: neverFound.length,
    noPeerEver: rows.filter((r) => r.possible && r.m.peersEver === 0).length,
    // why the short ones are short at the end: too few members known (discovery), or members known but
    // not connected (the fill: dial failures, spread rules, full peers)
    neverFoundWhy: {
      knewTooFew: neverFound.filter((r) => r.m.knownAtEnd !== undefined && r.m.knownAtEnd < r.m.target)
        .length,
      knewEnough: neverFound.filter((r) => r.m.knownAtEnd !== undefined && r.m.knownAtEnd >= r.m.target)
        .length,
      knownConnectedEnough: neverFound.filter(
        (r) => r.m.connectedKnownAtEnd !== undefined && r.m.connectedKnownAtEnd >= r.m.target,
      ).length,
      // their known members that are not topic peers, by state (waiting, connected, backed-off, ...)
      knownNotPeers: neverFound.reduce<Record<string, number>>((acc, r) => {
        for (const [state, n] of Object.entries(r.m.knownStates ?? {}))
          if (state !== 'peer') acc[state] = (acc[state] ?? 0) + n
        return acc
      }, {}),
    },
    impossible: rows.filter((r) => !r.possible).length,
    neverFoundSamples: neverFound.slice(0, 10).map((r) => ({
      node: r.m.node,
      topic: r.m.topic,
      target: r.m.target,
      peersAtEnd: r.m.peersAtEnd,
      peersMax: r.m.peersMax,
      knownAtEnd: r.m.knownAtEnd,
      connectedKnownAtEnd: r.m.connectedKnownAtEnd,
      knownStates: r.m.knownStates,
    })),
  }
}

function addStats(
  into: Record<string, { msgs: number; bytes: number; streams: number }>,
  snap: LedgerSnapshot,
  sign = 1,
) {
  for (const [family, s] of Object.entries(snap.protocols)) {
    into[family] ??= { msgs: 0, bytes: 0, streams: 0 }
    const e = into[family]
    e.msgs += sign * s.msgsSent
    e.bytes += sign * s.bytesSent
    e.streams += sign * s.streamsOut
  }
}

function lookupStats(lookups: LookupRecord[]) {
  const out: Record<string, unknown> = {}
  for (const kind of ['findProviders', 'provide', 'getClosestPeers'] as const) {
    const l = lookups.filter((x) => x.kind === kind)
    if (l.length === 0) continue
    const prov = l.filter((x) => x.hopsToProvider !== undefined).map((x) => x.hopsToProvider!)
    out[kind] = {
      count: l.length,
      hopsP50: percentile(
        l.map((x) => x.hops),
        50,
      ),
      hopsP99: percentile(
        l.map((x) => x.hops),
        99,
      ),
      hopsMax: Math.max(...l.map((x) => x.hops)),
      hopsToProviderP50: percentile(prov, 50),
      hopsToProviderP99: percentile(prov, 99),
      queriedP50: percentile(
        l.map((x) => x.queried),
        50,
      ),
      queriedP99: percentile(
        l.map((x) => x.queried),
        99,
      ),
      msP50: percentile(
        l.map((x) => x.ms),
        50,
      ),
      msP99: percentile(
        l.map((x) => x.ms),
        99,
      ),
      foundNone: l.filter((x) => kind === 'findProviders' && x.providers === 0).length,
    }
  }
  return out
}

export function analyze(options: SimOptions, finals: HostFinal[], phases: RunPhases, topicCount: number) {
  const nodes: NodeReport[] = finals.flatMap((f) => f.nodes)
  const memberships = finals.flatMap((f) => f.memberships)
  const lookups = finals.flatMap((f) => f.lookups)
  const boots = nodes.filter((n) => n.role === 'bootstrap')
  const peers = nodes.filter((n) => n.role === 'peer')
  const joins = peers.filter((n) => n.readyAt !== undefined).length

  // traffic: cumulative at the end of the join phase, and the background window's difference
  const joinTotals: Record<string, { msgs: number; bytes: number; streams: number }> = {}
  const bgTotals: Record<string, { msgs: number; bytes: number; streams: number }> = {}
  let wireJoin = 0
  let wireBg = 0
  let dialsJoin = 0
  let dialsBg = 0
  for (const n of nodes) {
    const j = n.snapshots.join
    const b = n.snapshots.background
    if (j) {
      addStats(joinTotals, j)
      wireJoin += j.wireSent ?? 0
      dialsJoin += j.dialsOut ?? 0
    }
    if (b) {
      addStats(bgTotals, b)
      wireBg += b.wireSent ?? 0
      dialsBg += b.dialsOut ?? 0
      if (j) {
        addStats(bgTotals, j, -1)
        wireBg -= j.wireSent ?? 0
        dialsBg -= j.dialsOut ?? 0
      }
    }
  }
  // node-seconds alive during the join phase (to take the settled mesh's background out of a join's cost)
  const aliveMs = (n: NodeReport, from: number, to: number) => {
    if (n.readyAt === undefined) return 0
    const a = Math.max(from, n.readyAt)
    const b = Math.min(to, n.leftAt ?? Number.POSITIVE_INFINITY)
    return Math.max(0, b - a)
  }
  const nodeSecJoin = sum(nodes.map((n) => aliveMs(n, 0, phases.joinEnd))) / 1000
  const nodeSecBg = sum(nodes.map((n) => aliveMs(n, phases.joinEnd, phases.backgroundEnd))) / 1000
  const perJoin: Record<
    string,
    {
      msgs: number
      bytes: number
      streams: number
      bgMsgsPerNodeSec: number
      bgBytesPerNodeSec: number
      bgStreamsPerNodeSec: number
    }
  > = {}
  let msgsRaw = 0
  let bytesRaw = 0
  let msgsNet = 0
  let bytesNet = 0
  let msgsJoin = 0
  let bytesJoin = 0
  for (const [family, t] of Object.entries(joinTotals)) {
    const bg = bgTotals[family] ?? { msgs: 0, bytes: 0, streams: 0 }
    const bgMsgRate = nodeSecBg > 0 ? bg.msgs / nodeSecBg : 0
    const bgByteRate = nodeSecBg > 0 ? bg.bytes / nodeSecBg : 0
    const netMsgs = Math.max(0, t.msgs - bgMsgRate * nodeSecJoin)
    const netBytes = Math.max(0, t.bytes - bgByteRate * nodeSecJoin)
    perJoin[family] = {
      msgs: r1(netMsgs / Math.max(1, joins))!,
      bytes: Math.round(netBytes / Math.max(1, joins)),
      streams: r1(t.streams / Math.max(1, joins))!,
      bgMsgsPerNodeSec: Math.round(bgMsgRate * 1000) / 1000,
      bgBytesPerNodeSec: Math.round(bgByteRate),
      bgStreamsPerNodeSec: nodeSecBg > 0 ? Math.round((bg.streams / nodeSecBg) * 1000) / 1000 : 0,
    }
    msgsRaw += t.msgs
    bytesRaw += t.bytes
    msgsNet += netMsgs
    bytesNet += netBytes
    if (!KEEPALIVE.has(family)) {
      msgsJoin += t.msgs
      bytesJoin += t.bytes
    }
  }

  /** Inbound streams `nodes` served during the join phase, by protocol family, divided by `per`. */
  const servedByProtocol = (nodes: NodeReport[], per: number): Record<string, number> => {
    const out: Record<string, number> = {}
    for (const n of nodes)
      for (const [family, st] of Object.entries(n.snapshots.join?.protocols ?? {}))
        out[family] = (out[family] ?? 0) + st.streamsIn
    return Object.fromEntries(
      Object.entries(out).map(([k, v]) => [k, Math.round((v / Math.max(1, per)) * 10) / 10]),
    )
  }
  // load: requests served per second (inbound protocol streams), bytes, connections, registry
  const servedIn = (n: NodeReport, from: string | undefined, to: string) =>
    (n.snapshots[to]?.requestsServed ?? 0) - (from ? (n.snapshots[from]?.requestsServed ?? 0) : 0)
  const bytesIn = (n: NodeReport, from: string | undefined, to: string) =>
    (n.snapshots[to]?.wireReceived ?? 0) +
    (n.snapshots[to]?.wireSent ?? 0) -
    (from ? (n.snapshots[from]?.wireReceived ?? 0) + (n.snapshots[from]?.wireSent ?? 0) : 0)
  const rate = (
    n: NodeReport,
    from: string | undefined,
    to: string,
    start: number,
    end: number,
    f = servedIn,
  ) => {
    const alive = aliveMs(n, start, end) / 1000
    return alive > 0.5 ? f(n, from, to) / alive : undefined
  }
  const livePeers = peers.filter((n) => n.readyAt !== undefined)
  const load = (phase: 'join' | 'background') => {
    const [from, to, start, end] =
      phase === 'join'
        ? [undefined, 'join', 0, phases.joinEnd]
        : ['join', 'background', phases.joinEnd, phases.backgroundEnd]
    const bootRps = boots.map((n) => rate(n, from, to, start as number, end as number) ?? 0)
    const peerRps = livePeers
      .map((n) => rate(n, from, to, start as number, end as number))
      .filter((x): x is number => x !== undefined)
    const bootBps = boots.map((n) => rate(n, from, to, start as number, end as number, bytesIn) ?? 0)
    const peerBps = livePeers
      .map((n) => rate(n, from, to, start as number, end as number, bytesIn))
      .filter((x): x is number => x !== undefined)
    return {
      bootstrapRps: bootRps.map((x) => r1(x)),
      bootstrapMaxRps: r1(Math.max(...bootRps)),
      ordinaryMeanRps: r1(mean(peerRps)),
      ordinaryP99Rps: r1(percentile(peerRps, 99)),
      ratioRps: r1(Math.max(...bootRps) / Math.max(1e-9, mean(peerRps))),
      bootstrapMaxBytesPerSec: Math.round(Math.max(...bootBps)),
      ordinaryMeanBytesPerSec: Math.round(mean(peerBps)),
      ratioBytes: r1(Math.max(...bootBps) / Math.max(1e-9, mean(peerBps))),
    }
  }
  const peak = (n: NodeReport, until: number) =>
    Math.max(0, ...n.servedPerSecond.slice(0, Math.ceil(until / 1000)))
  const bootCpu = (at: Record<number, number>) => at[0] ?? 0
  const peerCpu = (at: Record<number, number>) =>
    sum(
      Object.entries(at)
        .filter(([h]) => h !== '0')
        .map(([, v]) => v),
    )
  const cpuJoinBoot = bootCpu(phases.cpuAtJoin) / Math.max(1, boots.length)
  const cpuJoinPeer = peerCpu(phases.cpuAtJoin) / Math.max(1, livePeers.length)
  const cpuBgBoot = (bootCpu(phases.cpuAtBackground) - bootCpu(phases.cpuAtJoin)) / Math.max(1, boots.length)
  const cpuBgPeer =
    (peerCpu(phases.cpuAtBackground) - peerCpu(phases.cpuAtJoin)) / Math.max(1, livePeers.length)

  const rv = rendezvous(memberships)
  const kadReq: Record<string, number> = {}
  for (const n of nodes)
    for (const [t, c] of Object.entries(n.snapshots.join?.kadRequests ?? {})) kadReq[t] = (kadReq[t] ?? 0) + c
  const bootstrapKeys = boots.map((n) => n.toldKeys)
  const bootstrapProviderKeys = boots.map((n) => n.providerKeys)
  const totalNodes = nodes.filter((n) => n.readyAt !== undefined).length
  const result = {
    options,
    encrypter: 'sim-plaintext (no encryption: Noise replaced in the simulator only)',
    transport: `simulated TCP, one-way ${options.latency} ms${options.jitter ? ` +-${options.jitter * 100}%` : ''}, no bandwidth limit, no loss`,
    nodes: {
      ordinary: peers.length,
      bootstrap: boots.length,
      joins,
      startErrors: nodes.filter((n) => n.startError).length,
      /** Exceptions nobody caught, in all hosts: each would have crashed a real node. */
      uncaughtErrors: sum(finals.map((f) => f.uncaught.count)),
      left: nodes.filter((n) => n.leftAt !== undefined).length,
    },
    topics: topicCount,
    memberships: memberships.length,
    topicsPerNode: r1(memberships.length / Math.max(1, peers.length)),
    phases: {
      joinEndMs: phases.joinEnd,
      backgroundMs: phases.backgroundEnd - phases.joinEnd,
      wallMs: phases.wallMs,
    },
    rendezvous: rv,
    perJoin: {
      /** Messages (length-prefixed protocol messages) all nodes sent during the join phase, per join, pings left out. */
      msgs: r1(msgsJoin / Math.max(1, joins)),
      bytes: Math.round(bytesJoin / Math.max(1, joins)),
      /** The same less the settled mesh's background rate over the join phase (a lower bound). */
      msgsNet: r1(msgsNet / Math.max(1, joins)),
      bytesNet: Math.round(bytesNet / Math.max(1, joins)),
      dials: r1(dialsJoin / Math.max(1, joins)),
      msgsRaw: r1(msgsRaw / Math.max(1, joins)),
      bytesRaw: Math.round(bytesRaw / Math.max(1, joins)),
      wireBytesRaw: Math.round(wireJoin / Math.max(1, joins)),
      byProtocol: perJoin,
      kadRequestsRaw: Object.fromEntries(
        Object.entries(kadReq).map(([k, v]) => [k, r1(v / Math.max(1, joins))]),
      ),
    },
    background: {
      msgsPerNodeSec: r1(nodeSecBg > 0 ? sum(Object.values(bgTotals).map((x) => x.msgs)) / nodeSecBg : 0),
      bytesPerNodeSec: Math.round(
        nodeSecBg > 0 ? sum(Object.values(bgTotals).map((x) => x.bytes)) / nodeSecBg : 0,
      ),
      wireBytesPerNodeSec: Math.round(nodeSecBg > 0 ? wireBg / nodeSecBg : 0),
      /** Connections opened per node and second once settled (connection churn). */
      dialsPerNodeSec: nodeSecBg > 0 ? Math.round((dialsBg / nodeSecBg) * 1000) / 1000 : 0,
    },
    load: {
      join: load('join'),
      background: load('background'),
      bootstrapPeakRps: boots.map((n) => peak(n, phases.joinEnd)),
      ordinaryPeakRpsMax: Math.max(0, ...livePeers.map((n) => peak(n, phases.joinEnd))),
      /** Requests (inbound protocol streams) bootstrap nodes served during the join phase, per join: all of them, and the busiest one. */
      bootstrapServedPerJoin: r1(sum(boots.map((n) => servedIn(n, undefined, 'join'))) / Math.max(1, joins)),
      bootstrapMaxServedPerJoin: r1(
        Math.max(0, ...boots.map((n) => servedIn(n, undefined, 'join'))) / Math.max(1, joins),
      ),
      /** The same by protocol family (member exchange `topics`, DHT `kad`, `identify`, `ping`, ...). */
      bootstrapServedPerJoinByProtocol: servedByProtocol(boots, joins),
      /** Requests an ordinary node served during the join phase (mean over nodes). */
      ordinaryServedMean: r1(mean(livePeers.map((n) => servedIn(n, undefined, 'join')))),
      /** The same by protocol family. */
      ordinaryServedMeanByProtocol: servedByProtocol(livePeers, livePeers.length),
      bootstrapConnections: boots.map((n) => n.connections),
      ordinaryConnectionsMean: r1(
        mean(livePeers.filter((n) => n.leftAt === undefined).map((n) => n.connections)),
      ),
      bootstrapToldKeys: bootstrapKeys,
      ordinaryToldKeysMean: r1(mean(livePeers.map((n) => n.toldKeys))),
      bootstrapProviderKeys,
      ordinaryProviderKeysMax: Math.max(0, ...livePeers.map((n) => n.providerKeys)),
      cpuMsPerNode: {
        joinBootstrap: Math.round(cpuJoinBoot),
        joinOrdinary: Math.round(cpuJoinPeer),
        backgroundBootstrap: Math.round(cpuBgBoot),
        backgroundOrdinary: Math.round(cpuBgPeer),
        ratioJoin: r1(cpuJoinBoot / Math.max(1e-9, cpuJoinPeer)),
        ratioBackground: r1(cpuBgBoot / Math.max(1e-9, cpuBgPeer)),
      },
    },
    dht: { lookupsPerJoin: r1(lookups.length / Math.max(1, joins)), ...lookupStats(lookups) },
    memory: {
      rssBaseMb: Math.round(phases.rssBaseMb),
      rssJoinMb: Math.round(phases.rssJoinMb),
      rssMaxMb: Math.round(phases.rssMaxMb),
      perNodeMb: r1((phases.rssMaxMb - phases.rssBaseMb) / Math.max(1, totalNodes)),
    },
    hosts: finals.map((f) => ({
      host: f.host,
      nodes: f.nodes.length,
      cpuMs: f.cpuMs,
      elu: r1(f.elu * 100),
      lagP50Ms: f.lagP50Ms,
      lagP99Ms: f.lagP99Ms,
      lagMaxMs: f.lagMaxMs,
      gc: f.gc,
      uncaught: f.uncaught.count,
      uncaughtSamples: f.uncaught.samples.slice(0, 3),
      logLines: f.logs.count,
      logSamples: f.logs.samples.slice(0, 8),
    })),
  }
  const summary = {
    nodes: peers.length,
    topics: topicCount,
    rendezvous_p99_ms_rare: rv.rare.p99 ?? null,
    rendezvous_p99_ms_popular: rv.popular.p99 ?? null,
    never_found: rv.neverFound,
    msgs_per_join: result.perJoin.msgs,
    bytes_per_join: result.perJoin.bytes,
    bootstrap_max_rps: result.load.join.bootstrapMaxRps,
    bootstrap_registry_max: Math.max(0, ...bootstrapKeys.map((k) => Math.min(k, REGISTRY_LIMITS.maxKeys))),
    rss_mb_per_node: result.memory.perNodeMb,
  }
  return { result, summary }
}

export type SimResult = ReturnType<typeof analyze>['result']
export type SimSummary = ReturnType<typeof analyze>['summary']
