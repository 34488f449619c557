/**
 * NAT traversal as users deploy it (issue 11), in the NAT lab: a relay started with `mesh start` (relay
 * template: kadTopics DHT server, relayServer, stunServer, natProbeServer), and per try two NATed peers
 * started at the same moment with `mesh start --topic <t>` (nat template: kadTopics, staticPeers and
 * relayClient on the relay, natClassifier, holePunch), which meet through the topic: nobody dials anyone
 * by hand, the NAT classification races the first contact.
 *
 * Each peer's config also has a lab-only witness plugin (written into the temp project) that prints every
 * connection opened and closed, and checks each unlimited connection to the other peer with an echo over
 * that very connection: a connection counts as direct only when the echo comes back (a WebRTC connection
 * without a two-way UDP path cannot carry it). The runner compares that with what the nodes report
 * (`connection:method`): a `hole-punched` report without a verified connection is a phantom, a verified
 * connection its dialler reported as `relayed` (or not at all) is missed.
 *
 * Scenarios: pairs of NAT behaviours, 10% loss on both peers' links, two peers behind the same NAT, and a
 * double NAT (a port-restricted cone behind another). `node dist/test/natlab/matrix.js --user-flow
 * [--tries N] [--scenario name]` prints one JSON line per try and a summary per scenario; user-flow.test.ts
 * asserts them on fewer tries.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CLI_MAIN } from '../cli-helpers.js'
import { type ConfigProject, configProject } from '../fixtures/configs/project.js'
import type { NetnsProcess } from '../netns.js'
import { createLab, type Lab, type LabHost, type NatBehaviour, type NatSite } from './lab.js'

/** The lab's "internet": public for every node's address scope. */
const LAB_PUBLIC_CIDRS = ['198.51.100.0/24', '203.0.113.0/24']
/** The relay's NAT probe ports (its STUN server has 3478). */
const PROBE_PORTS: [number, number] = [3490, 3491]
const STUN_PORT = 3478

type Nat = Exclude<NatBehaviour, 'none'>

export interface UserFlowScenario {
  name: string
  /** Peer A's NAT (the inner one for a double NAT). */
  a: Nat
  b: Nat
  /** Packet loss (%) on both peers' links: at each peer's router, each direction. */
  loss?: number
  /** Both peers behind one router (of behaviour `a`). */
  sameNat?: boolean
  /** A sits behind its router `a`, which sits behind a second router of this behaviour. */
  outer?: Nat
  /** What the pair should end with. */
  expect: 'direct' | 'relayed'
  /**
   * After the direct connection, keep the peers running this long: libp2p's connection monitor pings
   * every connection every 10 s, and the peers log its aborts (`DEBUG=libp2p:connection-monitor*`).
   */
  holdMs?: number
  /**
   * How long after both peers started a try waits for a direct connection (default: the run's
   * `observeMs`, 20 s). With loss, the background attempts after two failed ones (holePunch's
   * `laterAttempts`) land 20-40 s in.
   */
  observeMs?: number
}

/**
 * Issue 11's ping-collision check: cone + cone kept up 60 s with kadTopics, the relay and hole punching,
 * each peer also pinging its direct peers every 700 ms through the ping service (as kad-dht, clustering
 * and relayClient do); no connection of the two healthy peers may be closed (by the connection monitor,
 * whose own pings met those, or anything else).
 */
export const HOLD_SCENARIO: UserFlowScenario = {
  name: 'cone+cone held 60 s',
  a: 'port-restricted-cone',
  b: 'port-restricted-cone',
  expect: 'direct',
  holdMs: 60_000,
}

/** The user-flow scenarios of the NAT lab (issue 11). */
export const USER_FLOW_SCENARIOS: readonly UserFlowScenario[] = [
  { name: 'cone+cone', a: 'port-restricted-cone', b: 'port-restricted-cone', expect: 'direct' },
  { name: 'full-cone+symmetric', a: 'full-cone', b: 'symmetric', expect: 'direct' },
  { name: 'restricted+cone', a: 'restricted-cone', b: 'port-restricted-cone', expect: 'direct' },
  { name: 'port-restricted+symmetric', a: 'port-restricted-cone', b: 'symmetric', expect: 'direct' },
  { name: 'symmetric+symmetric', a: 'symmetric', b: 'symmetric', expect: 'relayed' },
  {
    name: 'cone+cone 10% loss',
    a: 'port-restricted-cone',
    b: 'port-restricted-cone',
    loss: 10,
    expect: 'direct',
    observeMs: 45_000,
  },
  {
    name: 'same NAT',
    a: 'port-restricted-cone',
    b: 'port-restricted-cone',
    sameNat: true,
    expect: 'direct',
  },
  {
    name: 'same NAT (symmetric)',
    a: 'symmetric',
    b: 'symmetric',
    sameNat: true,
    expect: 'direct',
  },
  {
    name: 'double NAT (cone behind cone) + cone',
    a: 'port-restricted-cone',
    outer: 'port-restricted-cone',
    b: 'port-restricted-cone',
    expect: 'direct',
  },
]

/** One try of a scenario: what happened, from both nodes' JSON lines and the witness's checks. */
export interface UserFlowRow {
  scenario: string
  try: number
  /** Both `started` lines came. */
  started: boolean
  /** ms from spawn to `started`, per peer. */
  msToStartA?: number
  msToStartB?: number
  /** natClassifier's first UDP verdict per peer, and ms after that peer's `started`. */
  classifiedA?: string
  classifiedB?: string
  msToClassifiedA?: number
  msToClassifiedB?: number
  /** ms after each peer's `started` to its first relay reservation. */
  msToReservedA?: number
  msToReservedB?: number
  /** ms after each peer's `started` to its first `topic:peer` (undefined: none). */
  msToTopicPeerA?: number
  msToTopicPeerB?: number
  /** Some connection between the two peers was open at the end. */
  connected: boolean
  /** An unlimited connection between them carried an echo, and was open at the end. */
  direct: boolean
  /** Its transport (webrtc, tcp, ...). */
  transport?: string
  /** ms after the later `started` to the first unlimited connection whose echo came back. */
  msToDirect?: number
  /** The NAT types of the first `connection:method` of each side: `local/remote`. */
  firstContactA?: string
  firstContactB?: string
  /**
   * First decisions (either side) that used `unknown` for a side whose classification then gave a type:
   * contact came before classification, and the strategy did not wait for it.
   */
  prematureUnknown: number
  /** `connection:method` events per side (method, transport, attempts, localNat, remoteNat, ...). */
  reportsA: Array<Record<string, unknown>>
  reportsB: Array<Record<string, unknown>>
  /** WebRTC upgrade attempts both sides reported. */
  attempts: number
  /** A birthday punch prepared the upgrade (some report says technique 'birthday'). */
  birthday: boolean
  /** `hole-punched` reports without an echo-verified connection behind them (both sides). */
  phantoms: number
  /** Verified unlimited connections its dialler did not report as direct or hole-punched. */
  missed: number
  /** Connections between the two peers open at the end, as each side sees them. */
  openAtEndA: number
  openAtEndB: number
  /** Every connection between the two peers each side saw (`<direction> <transport>[ limited] <opened ms>-<closed ms|open>[ pruned]`), for a failure's message. */
  connectionsA: string[]
  connectionsB: string[]
  /** The lines of the connection monitor's failed pings (the first few), for a failure's message. */
  monitorAbortLines: string[]
  /** Unlimited connections that closed while their node ran, but not on purpose (`hole-punch:closed`). */
  unlimitedClosed: number
  /** Connections to the relay that closed while their node ran. */
  relayClosed: number
  /** Held pairs: connections between the two peers opened (either side) after the hold began. */
  openedDuringHold?: number
  /** Lines of libp2p's connection monitor about a failed ping (aborted connections). */
  monitorAborts: number
  /** Wall time of the try (sites to teardown). */
  wallMs: number
  error?: string
}

export interface UserFlowOptions {
  scenarios?: readonly UserFlowScenario[]
  /** Tries per scenario. @default 10 */
  tries?: number
  /** Tries run at once (2 shared cores). @default 2 */
  concurrency?: number
  /** After both peers started: the longest wait for the outcome. @default 20000 */
  observeMs?: number
  onLab?: (lab: Lab) => void
  onRow?: (row: UserFlowRow) => void
  /** Extra environment for the peers (e.g. DEBUG). */
  env?: NodeJS.ProcessEnv
}

/** The witness plugin, bundled into each peer's config: connection events and echo checks. */
const WITNESS = `
import { definePlugin } from 'meshkit/plugin'

const ECHO = '/meshkit-lab/echo/1.0.0'
const relay = process.env.LAB_RELAY_ID
const bytes = (chunk) => (chunk instanceof Uint8Array ? chunk : chunk.subarray())
const transportOf = (c) => {
  const a = c.remoteAddr.toString()
  if (c.limits !== undefined) return 'relay'
  if (a.includes('/webrtc')) return 'webrtc'
  if (a.includes('/quic')) return 'quic'
  if (a.includes('/tcp/')) return 'tcp'
  return 'other'
}
const describe = (c) => ({
  id: c.id,
  peer: c.remotePeer.toString(),
  direction: c.direction,
  limited: c.limits !== undefined,
  transport: transportOf(c),
  addr: c.remoteAddr.toString(),
})

async function echo(c) {
  const t0 = Date.now()
  const data = crypto.getRandomValues(new Uint8Array(16))
  let stream
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('echo timed out')), 4000).unref())
  try {
    const run = (async () => {
      stream = await c.newStream(ECHO, { signal: AbortSignal.timeout(4000) })
      stream.send(data)
      const got = []
      for await (const chunk of stream) {
        got.push(...bytes(chunk))
        if (got.length >= data.length) break
      }
      await stream.close().catch(() => {})
      return got.length >= data.length && data.every((b, i) => got[i] === b)
    })()
    const ok = await Promise.race([run, timeout])
    return { ok, ms: Date.now() - t0 }
  } catch (err) {
    stream?.abort(err)
    return { ok: false, ms: Date.now() - t0, error: String(err?.message ?? err) }
  }
}

export const labWitness = definePlugin({
  name: 'lab-witness',
  create: () => {
    let timer
    let pinger
    return {
      start: async (ctx) => {
        const node = ctx.libp2p
        await node.handle(
          ECHO,
          async (stream) => {
            try {
              let n = 0
              for await (const chunk of stream) {
                const b = bytes(chunk)
                stream.send(b)
                n += b.length
                if (n >= 16) break
              }
              await stream.close()
            } catch (err) {
              stream.abort(err)
            }
          },
          { maxInboundStreams: 8 },
        )
        const check = async (c, why) => {
          if (c.status !== 'open') return
          const r = await echo(c)
          ctx.events.emit('lab:echo', { ...describe(c), why, ...r })
        }
        const checkable = (c) => c.limits === undefined && c.remotePeer.toString() !== relay
        node.addEventListener('connection:open', (e) => {
          const c = e.detail
          ctx.events.emit('lab:open', describe(c))
          if (checkable(c)) setTimeout(() => void check(c, 'open'), 200).unref()
        })
        node.addEventListener('connection:close', (e) => ctx.events.emit('lab:close', describe(e.detail)))
        // every 5 s: each unlimited connection to a peer still carries data
        timer = setInterval(() => {
          for (const c of node.getConnections()) if (checkable(c)) void check(c, 'periodic')
        }, 5000)
        timer.unref()
        // LAB_PINGER=<ms>: ping every directly connected peer that often through the ping service, as
        // services do (kad-dht checking a contact, clustering's RTT, a relay's liveness): libp2p's
        // connection monitor pings each connection every 10 s besides, on the same protocol
        const every = Number(process.env.LAB_PINGER ?? 0)
        if (every > 0) {
          pinger = setInterval(() => {
            const peers = new Set(
              node
                .getConnections()
                .filter((c) => c.limits === undefined && c.status === 'open')
                .map((c) => c.remotePeer),
            )
            for (const p of peers)
              node.services.ping?.ping(p, { signal: AbortSignal.timeout(3000) }).catch(() => {})
          }, every)
          pinger.unref()
        }
      },
      stop: () => {
        clearInterval(timer)
        clearInterval(pinger)
      },
    }
  },
})
`

function relayConfig(ip: string, ip2: string): string {
  return `import { defineConfig } from 'meshkit'
import { identify, kadTopics, natProbeServer, noise, ping, quic, relayServer, stunServer, tcp, yamux } from 'meshkit/plugins'

// the relay template, on the lab's public address
const announce = ['/ip4/${ip}/tcp/4001', '/ip4/${ip}/udp/4001/quic-v1']
export default defineConfig({
  name: 'relay',
  datastore: 'memory',
  logLevel: 'warn',
  listen: announce,
  announce,
  plugins: [
    identify(),
    ping(),
    noise(),
    yamux(),
    tcp(),
    quic(),
    kadTopics({ dhtMode: 'server', addressScope: 'public' }),
    // the lab's NAT routers all sit in 203.0.113.0/24 and a run holds dozens of peers (killed peers'
    // reservations last until they expire): the per-IP and per-subnet limits are off here
    relayServer({ announce, maxReservations: 1024, maxReservationsPerIp: 0, maxReservationsPerSubnet: 0 }),
    stunServer({ port: ${STUN_PORT}, host: '${ip}' }),
    natProbeServer({ addresses: ['${ip}', '${ip2}'], udpPorts: ${JSON.stringify(PROBE_PORTS)} }),
  ],
  bootstrap: { minConnections: 0 },
  connections: { maxConnections: 1000 },
  network: { addressScope: 'public', publicCidrs: ${JSON.stringify(LAB_PUBLIC_CIDRS)} },
})
`
}

/** The nat template (a NATed node of the mesh) with the lab's address scope, plus the witness. */
function peerConfig(): string {
  return `import { defineConfig } from 'meshkit'
import { holePunch, identify, kadTopics, natClassifier, noise, ping, quic, relayClient, staticPeers, tcp, yamux } from 'meshkit/plugins'
import { labWitness } from './lab-witness.ts'

const relay = process.env.LAB_RELAY
const relayIp = /^\\/ip4\\/([^/]+)\\//.exec(relay)[1]
export default defineConfig({
  name: 'peer',
  datastore: 'memory',
  logLevel: process.env.LAB_LOG_LEVEL ?? 'warn',
  plugins: [
    identify(),
    ping(),
    noise(),
    yamux(),
    tcp(),
    quic(),
    kadTopics(),
    staticPeers({ peers: [relay] }),
    relayClient({ relays: [relay] }),
    natClassifier({ servers: [relay] }),
    holePunch({ stunServers: [\`stun:\${relayIp}:${STUN_PORT}\`] }),
    labWitness(),
  ],
  network: { publicCidrs: ${JSON.stringify(LAB_PUBLIC_CIDRS)} },
})
`
}

interface Line {
  event: string
  time?: number
  [k: string]: unknown
}

function lines(proc: NetnsProcess): Line[] {
  return proc.stdoutLines.flatMap((l) => {
    try {
      const v = JSON.parse(l)
      return typeof v === 'object' && v && typeof v.event === 'string' ? [v as Line] : []
    } catch {
      return []
    }
  })
}

async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The relay, the lab and the temp project of one run. */
interface Run {
  lab: Lab
  project: ConfigProject
  relayAddr: string
  relayId: string
  relayProc: NetnsProcess
}

async function startRelay(lab: Lab, project: ConfigProject): Promise<Run> {
  const host = await lab.addPublicHost({ addresses: 2 })
  await writeFile(project.path('relay.config.ts'), relayConfig(host.addresses[0], host.addresses[1]))
  const relayProc = lab.spawn(
    host,
    process.execPath,
    [
      CLI_MAIN,
      'start',
      '--json',
      '--no-control',
      '--config',
      project.path('relay.config.ts'),
      '--data-dir',
      project.path('data/relay'),
    ],
    { cwd: project.dir, env: { ...process.env, NODE_OPTIONS: undefined, DEBUG: undefined } },
  )
  const started = await relayProc.waitUntil(() => lines(relayProc).find((l) => l.event === 'started'), {
    timeoutMs: 90_000,
    what: 'the relay started',
  })
  const relayId = String(started.peerId)
  return { lab, project, relayProc, relayId, relayAddr: `/ip4/${host.ip}/tcp/4001/p2p/${relayId}` }
}

/** Builds the sites of one try: the two peers' hosts. */
async function sitesFor(
  lab: Lab,
  s: UserFlowScenario,
): Promise<{ a: LabHost; b: LabHost; sites: NatSite[] }> {
  if (s.sameNat) {
    const site = await lab.addNatSite(s.a, { hosts: 2 })
    return { a: site.hosts[0], b: site.hosts[1], sites: [site] }
  }
  let siteA: NatSite
  const sites: NatSite[] = []
  if (s.outer) {
    const outer = await lab.addNatSite(s.outer, { hosts: 0 })
    siteA = await lab.addNatSite(s.a, { behind: outer })
    sites.push(outer)
  } else siteA = await lab.addNatSite(s.a)
  const siteB = await lab.addNatSite(s.b)
  sites.push(siteA, siteB)
  return { a: siteA.host, b: siteB.host, sites }
}

async function runTry(
  run: Run,
  s: UserFlowScenario,
  index: number,
  sites: Promise<{ a: LabHost; b: LabHost; sites: NatSite[] }>,
  options: UserFlowOptions,
): Promise<UserFlowRow> {
  const t0 = Date.now()
  const row: UserFlowRow = {
    scenario: s.name,
    try: index,
    started: false,
    connected: false,
    direct: false,
    reportsA: [],
    reportsB: [],
    attempts: 0,
    birthday: false,
    phantoms: 0,
    missed: 0,
    prematureUnknown: 0,
    openAtEndA: 0,
    openAtEndB: 0,
    connectionsA: [],
    connectionsB: [],
    monitorAbortLines: [],
    unlimitedClosed: 0,
    relayClosed: 0,
    monitorAborts: 0,
    wallMs: 0,
  }
  const procs: NetnsProcess[] = []
  try {
    const { a, b, sites: built } = await sites
    if (s.loss)
      for (const site of built.filter((x) => x.hosts.length > 0)) await run.lab.setLoss(site, s.loss)
    const topic = `t-${s.name.replace(/[^a-z0-9]+/gi, '-')}-${index}-${Math.random().toString(16).slice(2, 8)}`
    const env = {
      ...process.env,
      NODE_OPTIONS: undefined,
      // USERFLOW_DEBUG=<pattern>: DEBUG for the peers (their logs end up in USERFLOW_DUMP files)
      DEBUG:
        [process.env.USERFLOW_DEBUG, s.holdMs ? 'libp2p:connection-monitor*' : undefined]
          .filter(Boolean)
          .join(',') || undefined,
      ...(s.holdMs ? { LAB_PINGER: '700' } : {}),
      ...options.env,
      LAB_RELAY: run.relayAddr,
      LAB_RELAY_ID: run.relayId,
    }
    const spawnPeer = (host: LabHost, name: string) =>
      run.lab.spawn(
        host,
        process.execPath,
        [
          CLI_MAIN,
          'start',
          '--json',
          '--no-control',
          '--config',
          run.project.path('peer.config.ts'),
          '--data-dir',
          run.project.path(`data/${topic}-${name}`),
          '--topic',
          topic,
        ],
        { cwd: run.project.dir, env },
      )
    // started together
    const spawnedAt = Date.now()
    const pa = spawnPeer(a, 'a')
    const pb = spawnPeer(b, 'b')
    procs.push(pa, pb)
    const started = (p: NetnsProcess) =>
      p.waitUntil(() => lines(p).find((l) => l.event === 'started'), {
        timeoutMs: 90_000,
        what: 'started',
      })
    const [sa, sb] = await Promise.all([started(pa), started(pb)])
    row.started = true
    const idA = String(sa.peerId)
    const idB = String(sb.peerId)
    const tA = Number(sa.time)
    const tB = Number(sb.time)
    row.msToStartA = tA - spawnedAt
    row.msToStartB = tB - spawnedAt
    const tBoth = Math.max(tA, tB)
    // the outcome: a verified direct connection on one connection per side for 3 s, or the deadline
    const observe = (s.observeMs ?? options.observeMs ?? 20_000) + (s.holdMs ?? 0)
    let directSince: number | undefined
    while (Date.now() < tBoth + observe) {
      await sleep(250)
      if (pa.exit || pb.exit) throw new Error(`a peer exited: ${pa.exit ? 'a' : 'b'}`)
      const va = view(lines(pa), idB, run.relayId)
      const vb = view(lines(pb), idA, run.relayId)
      const single = va.open.length === 1 && vb.open.length === 1
      // both ends' echo checks came back (with loss one can take seconds: a try that ended on one side's
      // echo counted the other side's punched connection, unchecked yet, as a phantom)
      if (va.verifiedOpen.length > 0 && vb.verifiedOpen.length > 0 && single) {
        directSince ??= Date.now()
        if (Date.now() - directSince >= 3000 + (s.holdMs ?? 0)) break
      } else if (!s.holdMs) directSince = undefined
    }
    if (s.holdMs && directSince !== undefined) {
      // the end of a hold: a duplicate opened just before is given the prune delay (1 s) and its close
      // to go, then counted as one in `openedDuringHold`
      const until = Date.now() + 3000
      while (Date.now() < until) {
        const va = view(lines(pa), idB, run.relayId)
        const vb = view(lines(pb), idA, run.relayId)
        if (va.open.length === 1 && vb.open.length === 1) break
        await sleep(250)
      }
      const since = directSince
      row.openedDuringHold =
        view(lines(pa), idB, run.relayId).openedSince(since) +
        view(lines(pb), idA, run.relayId).openedSince(since)
    }
    const la = lines(pa)
    const lb = lines(pb)
    const va = view(la, idB, run.relayId)
    const vb = view(lb, idA, run.relayId)
    row.openAtEndA = va.open.length
    row.openAtEndB = vb.open.length
    row.connectionsA = va.describe(tBoth)
    row.connectionsB = vb.describe(tBoth)
    row.connected = va.open.length + vb.open.length > 0
    const verified = [...va.verifiedOpen, ...vb.verifiedOpen]
    row.direct = verified.length > 0
    row.transport = verified[0]?.transport ?? (row.connected ? 'relay' : undefined)
    const firstVerified = [...va.verified, ...vb.verified].map((c) => c.openedAt).sort((x, y) => x - y)[0]
    if (firstVerified !== undefined) row.msToDirect = firstVerified - tBoth
    const side = (l: Line[], t: number, other: string, v: View) => {
      const first = (event: string, pred: (x: Line) => boolean = () => true) =>
        l.find((x) => x.event === event && pred(x))
      const classified = first('nat:classified')
      const reserved = first('relay:reserved')
      const topicPeer = first('topic:peer', (x) => x.peerId === other)
      const reports = l
        .filter((x) => x.event === 'connection:method' && x.peerId === other)
        .map(({ event: _e, ...rest }) => rest)
      // a hole-punched report needs a verified WebRTC connection of that side; a verified connection that
      // side dialled needs a direct or hole-punched report
      const punchedReports = reports.filter((r) => r.method === 'hole-punched').length
      const directReports = reports.filter((r) => r.method === 'direct' || r.method === 'hole-punched').length
      // with loss, a punched connection that closed before the echo got through is not counted as a phantom
      // (it was a WebRTC connection, ICE-connected; it is counted in unlimitedClosed instead)
      const punchedSeen = s.loss ? v.webrtcSeen : v.verified.filter((c) => c.transport === 'webrtc').length
      const phantoms = Math.max(0, punchedReports - punchedSeen)
      const missed = Math.max(0, v.verified.filter((c) => c.direction === 'outbound').length - directReports)
      return {
        classified: classified?.udp as string | undefined,
        msToClassified: classified ? Number(classified.time) - t : undefined,
        msToReserved: reserved ? Number(reserved.time) - t : undefined,
        msToTopicPeer: topicPeer ? Number(topicPeer.time) - t : undefined,
        reports,
        // the first decision this side took (a listener's inbound reports carry no NAT types)
        firstContact: ((r) => (r ? `${r.localNat}/${r.remoteNat}` : undefined))(
          reports.find((r) => r.localNat !== undefined),
        ),
        phantoms,
        missed,
      }
    }
    const A = side(la, tA, idB, va)
    const B = side(lb, tB, idA, vb)
    row.classifiedA = A.classified
    row.classifiedB = B.classified
    row.msToClassifiedA = A.msToClassified
    row.msToClassifiedB = B.msToClassified
    row.msToReservedA = A.msToReserved
    row.msToReservedB = B.msToReserved
    row.msToTopicPeerA = A.msToTopicPeer
    row.msToTopicPeerB = B.msToTopicPeer
    row.firstContactA = A.firstContact
    row.firstContactB = B.firstContact
    const premature = (contact: string | undefined, local?: string, remote?: string) => {
      const [l, r] = contact?.split('/') ?? []
      return Number(l === 'unknown' && local !== 'unknown') + Number(r === 'unknown' && remote !== 'unknown')
    }
    row.prematureUnknown =
      premature(A.firstContact, A.classified, B.classified) +
      premature(B.firstContact, B.classified, A.classified)
    row.reportsA = A.reports
    row.reportsB = B.reports
    row.attempts = [...A.reports, ...B.reports].reduce((n, r) => n + Number(r.attempts ?? 0), 0)
    row.birthday = [...A.reports, ...B.reports].some((r) => r.technique === 'birthday')
    row.phantoms = A.phantoms + B.phantoms
    row.missed = A.missed + B.missed
    row.unlimitedClosed = va.unlimitedClosed + vb.unlimitedClosed
    row.relayClosed = va.relayClosed + vb.relayClosed
    const monitorLines = [...pa.stdoutLines, ...pa.stderrLines, ...pb.stdoutLines, ...pb.stderrLines].filter(
      (l) => /ping failure|TooManyOutboundProtocolStreams/.test(l),
    )
    row.monitorAborts = monitorLines.length
    // the heartbeat's own error line (why the ping failed) comes just before "aborting connection"
    row.monitorAbortLines = [...pa.stdoutLines, ...pa.stderrLines, ...pb.stdoutLines, ...pb.stderrLines]
      .filter((l) => /connection-monitor/.test(l))
      .slice(0, 6)
      .map((l) => l.slice(0, 400))
  } catch (err) {
    const tails = procs.map(
      (p) =>
        `${p.netns}: exit ${JSON.stringify(p.exit ?? 'running')}, stderr: ${p.stderrLines.slice(-6).join(' | ')}`,
    )
    row.error = `${err instanceof Error ? err.message.split('\n')[0] : String(err)} [${tails.join('; ')}]`
  } finally {
    if (process.env.USERFLOW_VERBOSE) for (const p of procs) process.stderr.write(`${p.describe()}\n`)
    // USERFLOW_DUMP=<dir>: every line of both peers, for a closer look
    if (process.env.USERFLOW_DUMP)
      await Promise.all(
        procs.map((p, i) =>
          writeFile(
            join(
              process.env.USERFLOW_DUMP!,
              `${s.name.replace(/[^a-z0-9]+/gi, '-')}-${index}-${'ab'[i]}.log`,
            ),
            [...p.stdoutLines, '--- stderr', ...p.stderrLines].join('\n'),
          ).catch(() => {}),
        ),
      )
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    row.wallMs = Date.now() - t0
  }
  return row
}

interface ConnView {
  id: string
  direction: string
  transport: string
  limited: boolean
  openedAt: number
  closedAt?: number
  echoOk: boolean
}

interface View {
  /** Connections to the other peer open now. */
  open: ConnView[]
  /** Unlimited connections to the other peer that carried an echo. */
  verified: ConnView[]
  verifiedOpen: ConnView[]
  /**
   * WebRTC connections to the other peer that carried an echo or closed before one could: under loss a
   * punched connection can drop before the lab's echo check gets through.
   */
  webrtcSeen: number
  unlimitedClosed: number
  relayClosed: number
  /** Every connection to the other peer, one line each, times from `t0`. */
  describe(t0: number): string[]
  /** Connections to the other peer opened after `t` (ms since the epoch). */
  openedSince(t: number): number
}

/** One side's connections to `other` (and to the relay), from its witness lines. */
function view(l: Line[], other: string, relay: string): View {
  const conns = new Map<string, ConnView>()
  // closed on purpose by holePunch (a duplicate, or the relayed one an upgrade replaced)
  const pruned = new Set(l.filter((x) => x.event === 'hole-punch:closed').map((x) => String(x.connectionId)))
  let relayClosed = 0
  for (const x of l) {
    if (x.event === 'lab:open' && x.peer === other)
      conns.set(String(x.id), {
        id: String(x.id),
        direction: String(x.direction),
        transport: String(x.transport),
        limited: x.limited === true,
        openedAt: Number(x.time),
        echoOk: false,
      })
    else if (x.event === 'lab:close' && x.peer === other) {
      const c = conns.get(String(x.id))
      if (c) c.closedAt = Number(x.time)
    } else if (x.event === 'lab:close' && x.peer === relay) relayClosed++
    else if (x.event === 'lab:echo' && x.peer === other && x.ok === true) {
      const c = conns.get(String(x.id))
      if (c) c.echoOk = true
    }
  }
  const all = [...conns.values()]
  const verified = all.filter((c) => !c.limited && c.echoOk)
  return {
    open: all.filter((c) => c.closedAt === undefined),
    verified,
    verifiedOpen: verified.filter((c) => c.closedAt === undefined),
    webrtcSeen: all.filter(
      (c) => c.transport === 'webrtc' && !c.limited && (c.echoOk || c.closedAt !== undefined),
    ).length,
    unlimitedClosed: all.filter((c) => !c.limited && c.closedAt !== undefined && !pruned.has(c.id)).length,
    relayClosed,
    openedSince: (t) => all.filter((c) => c.openedAt > t).length,
    describe: (t0) =>
      all.map(
        (c) =>
          `${c.direction} ${c.transport}${c.limited ? ' limited' : ''} ${c.openedAt - t0}-${c.closedAt === undefined ? 'open' : c.closedAt - t0}${pruned.has(c.id) ? ' pruned' : ''}${c.echoOk ? ' echo' : ''}`,
      ),
  }
}

/** Runs the scenarios (`tries` each) in one lab with one relay; the lab is destroyed at the end. */
export async function runUserFlow(options: UserFlowOptions = {}): Promise<UserFlowRow[]> {
  const scenarios = options.scenarios ?? USER_FLOW_SCENARIOS
  const tries = options.tries ?? 10
  const lab = await createLab()
  options.onLab?.(lab)
  const project = await configProject({ 'lab-witness.ts': WITNESS, 'peer.config.ts': peerConfig() })
  let relayProc: NetnsProcess | undefined
  try {
    await mkdir(project.path('data'), { recursive: true })
    const run = await startRelay(lab, project)
    relayProc = run.relayProc
    // scenario-major order, interleaved so that a slow moment of the machine hits every scenario alike
    // (a scenario listed twice runs twice as many tries)
    const jobs: Array<[UserFlowScenario, number]> = []
    for (let i = 0; i < tries; i++)
      for (const s of scenarios) jobs.push([s, jobs.filter(([x]) => x.name === s.name).length])
    // sites are built one try ahead, one at a time (`ip` work serializes anyway)
    let chain: Promise<unknown> = Promise.resolve()
    const sites = jobs.map(([s]) => {
      const p = chain.then(() => sitesFor(lab, s))
      p.catch(() => {})
      chain = p.catch(() => {})
      return p
    })
    return await pool(
      jobs.map((j, i) => [...j, i] as const),
      options.concurrency ?? 2,
      async ([s, i, job]) => {
        const row = await runTry(run, s, i, sites[job], options)
        options.onRow?.(row)
        return row
      },
    )
  } finally {
    if (process.env.USERFLOW_DUMP && relayProc)
      await writeFile(
        join(process.env.USERFLOW_DUMP, 'relay.log'),
        [...relayProc.stdoutLines, '--- stderr', ...relayProc.stderrLines].join('\n'),
      ).catch(() => {})
    await lab.destroy()
    await project.cleanup()
  }
}

export interface UserFlowSummary {
  scenario: string
  tries: number
  direct: number
  connected: number
  /** p50 over both peers of each try that saw a topic peer; `topicPeers` of `2 * tries` did. */
  topicPeerP50Ms?: number
  topicPeerP99Ms?: number
  topicPeers: number
  directP50Ms?: number
  directMaxMs?: number
  /** First contacts (connection:method of either side) where a side's type was still unknown. */
  unknownFirstContacts: number
  /** Of those, how many a side's own classification then contradicted (see UserFlowRow.prematureUnknown). */
  prematureUnknown: number
  firstContacts: number
  phantoms: number
  missed: number
  attempts: number
  /** Tries that ended with more than one connection between the peers (either side). */
  duplicates: number
  birthday: number
  /** libp2p connection-monitor abort lines, and connections closed while their node ran (see UserFlowRow). */
  monitorAborts: number
  unlimitedClosed: number
  relayClosed: number
}

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return undefined
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.ceil(q * s.length) - 1]
}
const p50 = (xs: number[]) => quantile(xs, 0.5)

export function summarize(rows: readonly UserFlowRow[]): UserFlowSummary[] {
  const names = [...new Set(rows.map((r) => r.scenario))]
  return names.map((scenario) => {
    const rs = rows.filter((r) => r.scenario === scenario)
    const topic = rs.flatMap((r) => [r.msToTopicPeerA, r.msToTopicPeerB]).filter((x) => x !== undefined)
    const direct = rs.filter((r) => r.direct)
    const contacts = rs.flatMap((r) => [r.firstContactA, r.firstContactB]).filter((x) => x !== undefined)
    return {
      scenario,
      tries: rs.length,
      direct: direct.length,
      connected: rs.filter((r) => r.connected).length,
      topicPeerP50Ms: p50(topic),
      topicPeerP99Ms: quantile(topic, 0.99),
      topicPeers: topic.length,
      directP50Ms: p50(direct.map((r) => r.msToDirect!).filter((x) => x !== undefined)),
      directMaxMs: direct.length ? Math.max(...direct.map((r) => r.msToDirect ?? 0)) : undefined,
      unknownFirstContacts: contacts.filter((c) => c.includes('unknown')).length,
      prematureUnknown: rs.reduce((n, r) => n + r.prematureUnknown, 0),
      firstContacts: contacts.length,
      phantoms: rs.reduce((n, r) => n + r.phantoms, 0),
      missed: rs.reduce((n, r) => n + r.missed, 0),
      attempts: rs.reduce((n, r) => n + r.attempts, 0),
      duplicates: rs.filter((r) => r.openAtEndA > 1 || r.openAtEndB > 1).length,
      birthday: rs.filter((r) => r.birthday).length,
      monitorAborts: rs.reduce((n, r) => n + r.monitorAborts, 0),
      unlimitedClosed: rs.reduce((n, r) => n + r.unlimitedClosed, 0),
      relayClosed: rs.reduce((n, r) => n + r.relayClosed, 0),
    }
  })
}
