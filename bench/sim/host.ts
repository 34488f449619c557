/**
 * A simulation host: a worker thread running some of the simulated nodes, each a real Meshkit node
 * (`startMesh()`: kernel, identity, bootstrap, kadTopics, jaccardClusters, identify, ping, yamux) over
 * the simulated network. It starts and stops its nodes on the scenario's schedule, follows their topic
 * events and accounts their traffic, and answers the coordinator (run.ts) with progress and results.
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import v8 from 'node:v8'
import { type MessagePort, parentPort, workerData } from 'node:worker_threads'
import type { KadDHT, QueryEvent } from '@libp2p/kad-dht'
import {
  createEventBus,
  createLogger,
  type MeshConfig,
  type MeshEvent,
  type RunningMesh,
  startMesh,
} from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import {
  identify,
  jaccardClusters,
  ping,
  staticPeers,
  type TopicDiscovery,
  topicKey,
  yamux,
} from 'meshkit/plugins'
import { slowdown } from './clock.js'
import { type LedgerSnapshot, NodeLedger, SimMetrics } from './ledger.js'
import { now, SIM_CIDR, SimNet } from './net.js'
import { simPlaintext } from './plaintext.js'
import type { NodeSpec, SimOptions } from './scenario.js'
import { simTransport, useSimNet } from './transport.js'

export interface HostInit {
  host: number
  nodes: NodeSpec[]
  /** Every node's address and host (for routing). */
  routes: Array<[string, number]>
  options: SimOptions
  topicSize: Record<string, number>
  root: string
  ports: Array<[number, MessagePort]>
  /** Time dilation and its epoch (clock.ts), installed by host-entry.ts. */
  slowdown: number
  epoch: number
}

export type HostCommand =
  | { cmd: 'go'; t0: number; bootstrapAddrs: string[] }
  | { cmd: 'epoch'; t0: number }
  | { cmd: 'progress' }
  | { cmd: 'snapshot'; name: string }
  | { cmd: 'final' }
  | { cmd: 'stop' }

/** One (node, topic) membership as measured. */
export interface MembershipRecord {
  node: number
  topic: string
  size: number
  target: number
  /** When the node's kadTopics joined the topic (ms since t0). */
  joinedAt?: number
  /** First time it had `target` topic peers (ms since t0). */
  reachedAt?: number
  /** Topic peers at the end, and the most it had. */
  peersAtEnd: number
  peersMax: number
  /** Distinct topic peers ever. */
  peersEver: number
  /** Live members the node knew of at the end (its kadTopics registry), connected or not. */
  knownAtEnd?: number
  /** Of those, members it had a connection to at the end (topic peer or not). */
  connectedKnownAtEnd?: number
  /** The known members at the end by what the node did with them (TopicDiscovery.knownMembers()). */
  knownStates?: Record<string, number>
  /** The node left (churn) before the end. */
  left: boolean
}

export interface LookupRecord {
  kind: 'findProviders' | 'provide' | 'getClosestPeers'
  /** Longest chain of referrals to a peer that answered (1: a peer from the routing table). */
  hops: number
  /** Hops to the first peer that named a provider (findProviders), or undefined. */
  hopsToProvider?: number
  queried: number
  ms: number
  providers: number
}

export interface NodeReport {
  index: number
  role: 'bootstrap' | 'peer'
  dhtServer: boolean
  startedAt?: number
  readyAt?: number
  leftAt?: number
  startError?: string
  connections: number
  /** Topic keys peers told this node they joined (member-exchange requests it served). */
  toldKeys: number
  /** Distinct keys of ADD_PROVIDER requests it received (provider records it was asked to keep). */
  providerKeys: number
  wireBytesSent: number
  wireBytesReceived: number
  dialsIn: number
  dialsOut: number
  servedPerSecond: number[]
  snapshots: Record<string, LedgerSnapshot>
}

export interface HostProgress {
  host: number
  started: number
  scheduled: number
  /** All of its arrivals are done (started or failed). */
  arrivalsDone: boolean
  pairs: number
  reached: number
  startErrors: number
  cpuMs: number
  lagP99Ms: number
  schedulerQueue: number
  gcMs: number
  gcMaxMs: number
  gcByKind: Record<string, number>
  heapMb: number
  heapLimitMb: number
  externalMb: number
}

export interface HostFinal {
  host: number
  nodes: NodeReport[]
  memberships: MembershipRecord[]
  lookups: LookupRecord[]
  cpuMs: number
  elu: number
  lagP50Ms: number
  lagP99Ms: number
  lagMaxMs: number
  /** Garbage collection (real ms). */
  gc: { ms: number; maxMs: number; count: number; byKind: Record<string, number> }
  logs: { count: number; samples: string[] }
  /** Exceptions nobody caught (each would have crashed a real node's process). */
  uncaught: { count: number; samples: string[] }
}

interface LiveNode {
  spec: NodeSpec
  mesh?: RunningMesh
  ledger: NodeLedger
  toldKeys: Map<string, number>
  providerKeys: Set<string>
  topics: Map<
    string,
    { target: number; size: number; peers: Set<string>; ever: Set<string>; rec: MembershipRecord }
  >
  startedAt?: number
  readyAt?: number
  leftAt?: number
  startError?: string
  snaps: Record<string, LedgerSnapshot>
}

function latencyFn(o: SimOptions) {
  if (o.jitter <= 0) return () => o.latency
  // a fixed spread per link, the same both ways
  const cache = new Map<string, number>()
  return (a: string, b: string): number => {
    const key = a < b ? `${a}|${b}` : `${b}|${a}`
    let v = cache.get(key)
    if (v === undefined) {
      let h = 2166136261
      for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619)
      const u = ((h >>> 0) / 4294967296) * 2 - 1
      v = Math.max(1, o.latency * (1 + o.jitter * u))
      cache.set(key, v)
    }
    return v
  }
}

async function loadKadTopics(impl: string) {
  if (impl === 'main') return (await import('meshkit/plugins')).kadTopics
  const mod = (await import(`./prototypes/${impl}/index.js`)) as { kadTopics?: unknown }
  if (typeof mod.kadTopics !== 'function') throw new Error(`prototype ${impl} exports no kadTopics`)
  return mod.kadTopics as typeof import('meshkit/plugins').kadTopics
}

async function main(): Promise<void> {
  const init = workerData as HostInit
  const o = init.options
  const routes = new Map(init.routes)
  const net = new SimNet({
    host: init.host,
    hostOf: (ip) => routes.get(ip),
    latency: latencyFn(o),
    ports: new Map(init.ports),
  })
  useSimNet(net)
  const kadTopics = await loadKadTopics(o.impl)
  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()
  const gc = { ms: 0, maxMs: 0, count: 0, byKind: {} as Record<string, number> }
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.ms += e.duration
      gc.count++
      gc.maxMs = Math.max(gc.maxMs, e.duration)
      const kind = String((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? '?')
      gc.byKind[kind] = Math.round((gc.byKind[kind] ?? 0) + e.duration)
    }
  }).observe({ entryTypes: ['gc'] })
  // An exception nobody catches would end the thread and the run. Counted and reported instead: a real
  // node (one process) would crash on it (see docs/scale.md: yamux writes a window update on a stream
  // whose connection closed in between).
  const uncaught = { count: 0, samples: [] as string[] }
  process.on('uncaughtException', (err) => {
    uncaught.count++
    if (uncaught.samples.length < 5) uncaught.samples.push(String(err?.stack ?? err).slice(0, 600))
  })
  const cpu0 = process.threadCpuUsage()
  const elu0 = performance.eventLoopUtilization()
  const logs = { count: 0, samples: [] as string[] }
  const logger = createLogger({
    write: (line) => {
      logs.count++
      if (logs.samples.length < 30) logs.samples.push(line.slice(0, 400))
    },
  })
  const debugNodes = new Set((process.env.SIM_DEBUG_NODES ?? '').split(',').filter(Boolean).map(Number))
  // topic name <-> key (member-exchange requests carry keys)
  const keyOfTopic = new Map<string, string>()
  for (const name of Object.keys(init.topicSize))
    keyOfTopic.set(name, (await topicKey('meshkit', name)).toString())

  let t0 = now()
  let bootstrapAddrs: string[] = []
  const live = new Map<number, LiveNode>()
  const lookups: LookupRecord[] = []
  let started = 0
  let arrivalsDone = false
  let stopping = false

  const rel = () => Math.round(now() - t0)

  const observer = (node: LiveNode) =>
    definePlugin({
      name: 'sim-observer',
      enforce: 'pre',
      create: () => ({
        libp2p: () => ({ metrics: () => new SimMetrics(node.ledger) }),
        start: (ctx) => {
          const dht = (ctx.libp2p.services as { dht?: KadDHT }).dht
          if (dht) observeDht(dht)
          if (process.env.SIM_CLOSE_TRACE) traceCloses(ctx.libp2p)
        },
      }),
    })()

  /** Debugging (SIM_CLOSE_TRACE=1): who closes connections, by call site, printed when the run stops. */
  const closers = new Map<string, number>()
  const traceCloses = (libp2p: {
    addEventListener: (e: 'connection:open', f: (e: CustomEvent) => void) => void
  }) => {
    libp2p.addEventListener('connection:open', (evt) => {
      const conn = evt.detail as {
        close: (...a: unknown[]) => Promise<void>
        abort: (...a: unknown[]) => void
      }
      for (const m of ['close', 'abort'] as const) {
        const original = conn[m].bind(conn)
        conn[m] = ((...a: unknown[]) => {
          const site = (new Error().stack ?? '')
            .split('\n')
            .slice(2, 9)
            .map((l) =>
              l
                .trim()
                .replace(/^at /, '')
                .replace(/\(.*\/(node_modules|dist)\//, '('),
            )
            .join(' < ')
          closers.set(`${m}: ${site}`, (closers.get(`${m}: ${site}`) ?? 0) + 1)
          return original(...a)
        }) as never
      }
    })
  }

  const observeDht = (dht: KadDHT) => {
    for (const kind of ['findProviders', 'provide', 'getClosestPeers'] as const) {
      const original = (dht[kind] as (...a: unknown[]) => AsyncIterable<QueryEvent>).bind(dht)
      ;(dht as unknown as Record<string, unknown>)[kind] = async function* (...args: unknown[]) {
        const started = now()
        const depth = new Map<string, number>()
        let hops = 0
        let hopsToProvider: number | undefined
        let queried = 0
        let providers = 0
        try {
          for await (const e of original(...args)) {
            if (e.name === 'SEND_QUERY') {
              queried++
              if (!depth.has(e.to.toString())) depth.set(e.to.toString(), 1)
            } else if (e.name === 'PEER_RESPONSE') {
              const d = depth.get(e.from.toString()) ?? 1
              hops = Math.max(hops, d)
              for (const p of e.closer) if (!depth.has(p.id.toString())) depth.set(p.id.toString(), d + 1)
              if (e.providers.length > 0 && hopsToProvider === undefined) hopsToProvider = d
              providers += e.providers.length
            } else if (e.name === 'PROVIDER' && hopsToProvider === undefined) {
              hopsToProvider = depth.get(e.from.toString()) ?? 0
            }
            yield e
          }
        } finally {
          if (lookups.length < 200_000)
            lookups.push({ kind, hops, hopsToProvider, queried, ms: Math.round(now() - started), providers })
        }
      }
    }
  }

  const configOf = (node: LiveNode): MeshConfig => {
    const spec = node.spec
    const peer = spec.role === 'peer'
    return {
      name: `sim-${spec.index}`,
      dataDir: join(init.root, String(spec.index)),
      datastore: 'memory',
      logLevel: debugNodes.has(spec.index) ? 'debug' : 'warn',
      listen: [`/ip4/${spec.ip}/tcp/4001`],
      network: { addressScope: o.scope, ...(o.scope === 'public' ? { publicCidrs: [SIM_CIDR] } : {}) },
      plugins: [
        observer(node),
        identify(),
        ping(),
        simPlaintext(),
        yamux(),
        simTransport({ ip: spec.ip }),
        ...(peer ? [staticPeers({ peers: spec.bootstrapOrder.map((b) => bootstrapAddrs[b]) })] : []),
        kadTopics({
          topics: spec.topics,
          dhtMode: spec.dhtServer ? 'server' : 'client',
          records: 'memory',
          ...(o.scope === 'all' ? { addressScope: 'all' } : {}),
          ...(o.perTopic ? { connectionsPerTopic: o.perTopic } : {}),
        }),
        ...(peer && o.clusters ? [jaccardClusters({ tags: spec.topics.slice(0, 64) })] : []),
      ],
    }
  }

  const startNode = async (spec: NodeSpec) => {
    const node: LiveNode = {
      spec,
      ledger: undefined as unknown as NodeLedger,
      toldKeys: new Map(),
      providerKeys: new Set(),
      topics: new Map(),
      snaps: {},
    }
    node.ledger = new NodeLedger(() => t0, {
      onTopicsRequest: (keys) => {
        const t = rel()
        for (const k of keys) node.toldKeys.set(k, t)
      },
      onAddProvider: (key) => {
        node.providerKeys.add(Buffer.from(key).toString('hex'))
      },
    })
    for (const name of spec.topics) {
      const size = init.topicSize[name]
      const target = Math.min(o.k, size - 1)
      node.topics.set(name, {
        size,
        target,
        peers: new Set(),
        ever: new Set(),
        rec: {
          node: spec.index,
          topic: name,
          size,
          target,
          peersAtEnd: 0,
          peersMax: 0,
          peersEver: 0,
          left: false,
        },
      })
    }
    live.set(spec.index, node)
    const bus = createEventBus()
    bus.on('*', (e: MeshEvent) => {
      if (process.env.SIM_TRACE) process.stderr.write(`${rel()} n${spec.index} ${JSON.stringify(e)}\n`)
      const topic = node.topics.get(String(e.topic))
      if (!topic) return
      if (e.event === 'topic:joined') topic.rec.joinedAt ??= rel()
      else if (e.event === 'topic:peer') {
        const id = String(e.peerId)
        topic.peers.add(id)
        topic.ever.add(id)
        topic.rec.peersMax = Math.max(topic.rec.peersMax, topic.peers.size)
        if (topic.peers.size >= topic.target && topic.rec.reachedAt === undefined) topic.rec.reachedAt = rel()
      } else if (e.event === 'topic:peer:lost') topic.peers.delete(String(e.peerId))
    })
    node.startedAt = rel()
    await mkdir(join(init.root, String(spec.index)), { recursive: true, mode: 0o700 })
    try {
      node.mesh = await startMesh({
        config: configOf(node),
        events: bus,
        // SIM_DEBUG_NODES=44,84: those nodes' debug log on stderr, each line with the simulated time
        logger: debugNodes.has(spec.index)
          ? createLogger({
              write: (line) => process.stderr.write(`${rel()} n${spec.index} LOG ${line}\n`),
            })
          : logger,
        env: { command: 'start', mode: 'production' },
      })
      node.readyAt = rel()
      // a member whose target is 0 (alone in its topic) has reached it at once
      for (const t of node.topics.values()) if (t.target <= 0) t.rec.reachedAt ??= t.rec.joinedAt ?? rel()
    } catch (err) {
      node.startError = (err as Error).message
    }
    started++
    return node
  }

  const leave = async (node: LiveNode) => {
    node.leftAt = rel()
    for (const t of node.topics.values()) t.rec.left = true
    if (o.churnMode === 'crash') {
      net.kill(node.spec.ip)
      // its timers and state go with it: stopping it sends nothing (its address is dead)
      void node.mesh?.close().catch(() => {})
    } else await node.mesh?.close().catch(() => {})
  }

  const schedule = async () => {
    const mine = [...init.nodes].sort((a, b) => a.arriveAt - b.arriveAt)
    const queue = [...mine]
    const workers = Array.from({ length: Math.max(1, o.startConcurrency) }, async () => {
      while (queue.length > 0 && !stopping) {
        const spec = queue.shift()!
        const wait = t0 + spec.arriveAt - now()
        if (wait > 0) await new Promise((r) => setTimeout(r, wait))
        if (stopping) return
        const node = await startNode(spec)
        if (spec.leaveAt !== undefined) {
          const delay = Math.max(0, t0 + spec.leaveAt - now())
          setTimeout(() => void leave(node), delay)
        }
      }
    })
    await Promise.all(workers)
    arrivalsDone = true
  }

  const progress = (): HostProgress => {
    let pairs = 0
    let reached = 0
    for (const node of live.values()) {
      if (node.leftAt !== undefined || node.startError) continue
      for (const t of node.topics.values()) {
        pairs++
        if (t.rec.reachedAt !== undefined) reached++
      }
    }
    let startErrors = 0
    for (const node of live.values()) if (node.startError) startErrors++
    const cpu = process.threadCpuUsage(cpu0)
    return {
      host: init.host,
      started,
      scheduled: init.nodes.length,
      arrivalsDone,
      pairs,
      reached,
      startErrors,
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      lagP99Ms: Math.round(lag.percentile(99) / 1e6 / slowdown()),
      schedulerQueue: net.scheduler.size,
      gcMs: Math.round(gc.ms),
      gcMaxMs: Math.round(gc.maxMs),
      gcByKind: gc.byKind,
      heapMb: Math.round(v8.getHeapStatistics().used_heap_size / 1e6),
      heapLimitMb: Math.round(v8.getHeapStatistics().heap_size_limit / 1e6),
      externalMb: Math.round(process.memoryUsage().external / 1e6),
    }
  }

  const snapshot = (name: string) => {
    for (const node of live.values()) {
      const c = net.counters(node.spec.ip)
      node.snaps[name] = {
        ...node.ledger.snapshot(),
        wireSent: c.bytesSent,
        wireReceived: c.bytesReceived,
        dialsOut: c.dialsOut,
      }
    }
    const cpu = process.threadCpuUsage(cpu0)
    return { host: init.host, name, at: rel(), cpuMs: Math.round((cpu.user + cpu.system) / 1000) }
  }

  const final = (): HostFinal => {
    const nodes: NodeReport[] = []
    const memberships: MembershipRecord[] = []
    for (const node of live.values()) {
      const c = net.counters(node.spec.ip)
      nodes.push({
        index: node.spec.index,
        role: node.spec.role,
        dhtServer: node.spec.dhtServer,
        startedAt: node.startedAt,
        readyAt: node.readyAt,
        leftAt: node.leftAt,
        startError: node.startError,
        connections: node.leftAt === undefined ? (node.mesh?.node.libp2p.getConnections().length ?? 0) : 0,
        toldKeys: node.toldKeys.size,
        providerKeys: node.providerKeys.size,
        wireBytesSent: c.bytesSent,
        wireBytesReceived: c.bytesReceived,
        dialsIn: c.dialsIn,
        dialsOut: c.dialsOut,
        servedPerSecond: node.ledger.servedPerSecond,
        snapshots: node.snaps,
      })
      const alive = node.leftAt === undefined && node.mesh !== undefined
      const discovery = alive ? node.mesh!.node.api<TopicDiscovery>('discovery') : undefined
      const connected = new Set(
        alive ? node.mesh!.node.libp2p.getPeers().map((p) => p.toString()) : ([] as string[]),
      )
      for (const [name, t] of node.topics) {
        t.rec.peersAtEnd = t.peers.size
        t.rec.peersEver = t.ever.size
        if (discovery) {
          const known = discovery.knownMembers(name)
          t.rec.knownAtEnd = known.length
          t.rec.connectedKnownAtEnd = known.filter((m) => connected.has(m.peerId)).length
          t.rec.knownStates = {}
          for (const m of known) t.rec.knownStates[m.state] = (t.rec.knownStates[m.state] ?? 0) + 1
        }
        memberships.push(t.rec)
      }
    }
    const cpu = process.threadCpuUsage(cpu0)
    return {
      host: init.host,
      nodes,
      memberships,
      lookups,
      cpuMs: Math.round((cpu.user + cpu.system) / 1000),
      elu: performance.eventLoopUtilization(elu0).utilization,
      lagP50Ms: Math.round(lag.percentile(50) / 1e6 / slowdown()),
      lagP99Ms: Math.round(lag.percentile(99) / 1e6 / slowdown()),
      lagMaxMs: Math.round(lag.max / 1e6 / slowdown()),
      gc: { ms: Math.round(gc.ms), maxMs: Math.round(gc.maxMs), count: gc.count, byKind: gc.byKind },
      logs,
      uncaught,
    }
  }

  const stop = async () => {
    stopping = true
    const closing = [...live.values()]
      .filter((n) => n.mesh && n.leftAt === undefined)
      .map((n) => n.mesh!.close().catch(() => {}))
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 20_000))])
    net.stop()
  }

  const port = parentPort!
  port.on('message', async (m: HostCommand & { id: number }) => {
    try {
      let result: unknown
      if (m.cmd === 'go') {
        t0 = m.t0
        bootstrapAddrs = m.bootstrapAddrs
        const done = schedule()
        if (init.nodes.every((n) => n.role === 'bootstrap')) {
          await done
          result = init.nodes.map((spec) => {
            const mesh = live.get(spec.index)?.mesh
            if (!mesh)
              throw new Error(
                `bootstrap node ${spec.index} did not start: ${live.get(spec.index)?.startError}`,
              )
            return `/ip4/${spec.ip}/tcp/4001/p2p/${mesh.node.peerId.toString()}`
          })
        }
      } else if (m.cmd === 'epoch') {
        // bootstrap nodes start before the run's time 0: their times count from it too
        const shift = m.t0 - t0
        t0 = m.t0
        for (const node of live.values()) {
          if (node.startedAt !== undefined) node.startedAt -= shift
          if (node.readyAt !== undefined) node.readyAt -= shift
        }
        result = true
      } else if (m.cmd === 'progress') result = progress()
      else if (m.cmd === 'snapshot') result = snapshot(m.name)
      else if (m.cmd === 'final') {
        result = final()
        if (process.env.SIM_HEAPSNAP && init.host === 1) {
          const { writeHeapSnapshot } = await import('node:v8')
          writeHeapSnapshot(process.env.SIM_HEAPSNAP)
        }
      } else if (m.cmd === 'stop') {
        if (process.env.SIM_CLOSE_TRACE)
          for (const [site, n] of [...closers].sort((a, b) => b[1] - a[1]).slice(0, 12))
            process.stderr.write(`[close x${n}] ${site}\n`)
        await stop()
        result = true
      }
      port.postMessage({ id: m.id, result })
    } catch (err) {
      port.postMessage({ id: m.id, error: (err as Error).stack ?? String(err) })
    }
  })
  port.postMessage({ ready: true, host: init.host })
}

await main().catch((err) => {
  parentPort?.postMessage({ fatal: (err as Error).stack ?? String(err) })
})
