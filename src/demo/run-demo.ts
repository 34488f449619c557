/**
 * `mesh demo` as a library: a local mesh on loopback in this process (a bootstrap + relay node that also
 * observes every topic, plus N peers with overlapping topics and clustering tags), the dashboard served
 * from the observer's control API, rendezvous and clusters tracked until stopped.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  type ClusteringSlotApi,
  type ClusterView,
  createLogger,
  type DiscoverySlotApi,
  definePlugin,
  type Logger,
  type LogLevel,
  type MeshConfig,
  type MeshPlugin,
  type RunningMesh,
  startMesh,
} from 'meshkit'
import {
  builtinPlugins,
  identify,
  jaccardClusters,
  kadTopics,
  noise,
  ping,
  relayServer,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { type ControlServer, startControlServer } from '../control/index.js'
import { checkDemoPlan, DEFAULT_DEMO_PEERS, DEFAULT_DEMO_TOPICS, demoMembers, demoTopicsOf } from './plan.js'

/** Topic members each peer keeps connected (kadTopics' default). */
const CONNECTIONS_PER_TOPIC = 8
const CHECK_INTERVAL_MS = 200

export interface DemoOptions {
  /** Peers besides the observer. @default 20 */
  peers?: number
  /** Topics the peers join (overlapping). @default ['alpha', 'beta', 'gamma'] */
  topics?: string[]
  /** Nodes started at once (a 2-core machine starts ~4 at a time without timeouts). @default 4 */
  concurrency?: number
  /** TCP port of the dashboard / control API on 127.0.0.1. @default 0 (a free one) */
  controlPort?: number
  /** Where the temp dir (data dirs, control token) is made; it is removed on stop. @default os.tmpdir() */
  tmpRoot?: string
  /** Log level of the nodes' loggers (on stderr unless `logger` is given). @default 'error' */
  logLevel?: LogLevel
  logger?: Logger
  /** Told about every step (for progress output). */
  onProgress?: (event: DemoProgress) => void
  /** Aborting it stops a starting demo: started nodes are closed, startDemo() rejects with an AbortError. */
  signal?: AbortSignal
}

export type DemoProgress =
  | {
      type: 'observer-started'
      peerId: string
      /** The dashboard's address (no credential in it). */
      url: string
      dir: string
      /** A new one-time login link to the dashboard (a function: progress events may be printed as JSON). */
      loginUrl: () => string
    }
  | { type: 'peer-started'; index: number; count: number; peerId: string; topics: string[] }
  | { type: 'mesh-up'; peers: number; ms: number }
  | { type: 'topic-rendezvous'; topic: string; members: number; ms: number; sinceStartMs: number }
  | { type: 'rendezvous-complete'; topics: number; ms: number }
  | { type: 'cluster-created'; clusterId: string; tags: string[] }
  | { type: 'stopping'; nodes: number }
  | { type: 'stopped'; ms: number }

export interface DemoTopicSummary {
  topic: string
  /** Peers that joined the topic. */
  members: number
  /** Topic peers every member must have connected (itself excluded, the observer included). */
  target: number
  /** When every member had `target` topic peers: ms after its last member started. */
  rendezvousMs?: number
  /** The same moment, in ms since the demo started. */
  sinceStartMs?: number
  /** Members that have reached `target` now. */
  ready: number
}

export interface DemoClusterSummary {
  id: string
  tags: string[]
  members: number
}

export interface DemoSummary {
  peers: number
  /** ms from the start until every peer had started. */
  startupMs?: number
  /** ms the demo ran. */
  runMs: number
  topics: DemoTopicSummary[]
  /** Every topic rendezvoused. */
  complete: boolean
  /** The observer's clusters (peers grouped by their topic tags). */
  clusters: DemoClusterSummary[]
}

export interface DemoPeer {
  index: number
  peerId: string
  topics: string[]
  mesh: RunningMesh
  startedAt: number
}

export interface RunningDemo {
  /** The dashboard's address (no credential in it: `control.loginUrl()` makes a one-time login link). */
  readonly url: string
  readonly control: ControlServer
  /** The bootstrap + relay node whose dashboard is shown; it joins every topic to see its members. */
  readonly observer: RunningMesh
  readonly peers: readonly DemoPeer[]
  /** The temp dir of the data dirs (removed by stop()). */
  readonly dir: string
  /** Resolves when every topic has rendezvoused (never rejects; stop() ends the wait). */
  readonly rendezvous: Promise<void>
  summary(): DemoSummary
  /** Stops every node and the control server, removes the temp dir; returns the final summary. Idempotent. */
  stop(): Promise<DemoSummary>
}

/** libp2p timeouts for many nodes in one process on a small machine (defaults: 6 s dial, 10 s upgrade). */
const patientConnections = definePlugin({
  name: 'demo-patient-connections',
  create: () => ({
    libp2p: () => ({ connectionManager: { addressDialTimeout: 30_000, inboundUpgradeTimeout: 30_000 } }),
  }),
})

const abortError = () => new DOMException('the demo was stopped while starting', 'AbortError')

/** Starts the demo mesh and its dashboard. See {@link runDemo} to run it until a signal or a duration. */
export async function startDemo(options: DemoOptions = {}): Promise<RunningDemo> {
  const peerCount = options.peers ?? DEFAULT_DEMO_PEERS
  const topics = options.topics ?? [...DEFAULT_DEMO_TOPICS]
  checkDemoPlan(peerCount, topics)
  const { signal } = options
  if (signal?.aborted) throw abortError()
  const progress = options.onProgress ?? (() => {})
  const logLevel = options.logLevel ?? 'error'
  const logger = options.logger ?? createLogger({ level: logLevel })
  const t0 = Date.now()
  const dir = await mkdtemp(join(options.tmpRoot ?? tmpdir(), 'meshkit-demo-'))

  const meshes: RunningMesh[] = []
  let control: ControlServer | undefined
  const teardown = async () => {
    await control?.close().catch(() => {})
    // the peers all at once (one by one, the ones still running would spend the CPU on reconnecting
    // to those that left), then the observer
    const [observer, ...rest] = meshes
    await Promise.all(rest.map((m) => m.close().catch(() => {})))
    await observer?.close().catch(() => {})
    await rm(dir, { recursive: true, force: true }).catch(() => {})
  }

  const nodeConfig = (name: string, plugins: MeshPlugin[], dial: string[]): MeshConfig => ({
    name,
    dataDir: join(dir, name),
    datastore: 'memory',
    logLevel,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    dial,
    connections: { allow: ['/ip4/127.0.0.1'] },
    network: { addressScope: 'all' },
    plugins: [identify(), ping(), noise(), yamux(), tcp(), ...plugins, patientConnections()],
  })
  const start = async (config: MeshConfig): Promise<RunningMesh> => {
    const mesh = await startMesh({
      config,
      registry: builtinPlugins,
      env: { command: 'start', mode: 'demo' },
      logger: logger.child(String(config.name)),
    })
    meshes.push(mesh)
    return mesh
  }

  try {
    // the observer: bootstrap (rendezvous point of the member exchange) and relay; it joins every
    // topic so that its dashboard shows each topic's members, and clusters the peers by their tags
    const observer = await start(
      nodeConfig(
        'observer',
        [
          kadTopics({ addressScope: 'all', topics, connectionsPerTopic: Math.min(256, peerCount) }),
          jaccardClusters({ maintainInterval: '2s', targetConnectionsPerCluster: 0 }),
          relayServer(),
        ],
        [],
      ),
    )
    const observerAddr = `${observer.node.libp2p.getMultiaddrs()[0]}`
    control = await startControlServer({
      kernel: observer.kernel,
      dataDir: join(dir, 'observer'),
      port: options.controlPort ?? 0,
      dashboard: true,
      logger,
    })
    const url = `${control.url}/`
    const loginUrl = control.loginUrl
    observer.kernel.events.on('cluster:created', (e) =>
      progress({
        type: 'cluster-created',
        clusterId: String(e.clusterId),
        tags: Array.isArray(e.tags) ? e.tags.map(String) : [],
      }),
    )
    progress({ type: 'observer-started', peerId: observer.node.peerId.toString(), url, dir, loginUrl })
    if (signal?.aborted) throw abortError()

    const peers: DemoPeer[] = []
    const concurrency = Math.max(1, options.concurrency ?? 4)
    let next = 0
    let failed = false
    const worker = async () => {
      while (next < peerCount && !signal?.aborted && !failed) {
        const index = next++
        const peerTopics = demoTopicsOf(index, topics)
        const mesh = await start(
          nodeConfig(
            `peer-${index}`,
            [
              kadTopics({
                addressScope: 'all',
                topics: peerTopics,
                connectionsPerTopic: CONNECTIONS_PER_TOPIC,
                // look again every 2 s at most while short of topic peers (default 30 s): a demo is watched
                lookupMax: '2s',
              }),
              jaccardClusters({ tags: peerTopics, maintainInterval: '2s' }),
            ],
            [observerAddr],
          ),
        )
        const peer = {
          index,
          peerId: mesh.node.peerId.toString(),
          topics: peerTopics,
          mesh,
          startedAt: Date.now(),
        }
        peers.push(peer)
        progress({ type: 'peer-started', index, count: peerCount, peerId: peer.peerId, topics: peerTopics })
      }
    }
    // settled, not all: a failed start must not leave the other workers starting nodes after teardown
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(concurrency, peerCount) }, () =>
        worker().catch((err: unknown) => {
          failed = true
          throw err
        }),
      ),
    )
    const failure = results.find((r) => r.status === 'rejected')
    if (failure) throw failure.reason
    if (signal?.aborted) throw abortError()
    peers.sort((a, b) => a.index - b.index)
    const startupMs = Date.now() - t0
    progress({ type: 'mesh-up', peers: peers.length, ms: startupMs })

    return trackDemo({ url, control, observer, peers, dir, t0, startupMs, topics, progress, teardown })
  } catch (err) {
    await teardown()
    throw err
  }
}

interface TrackInput {
  url: string
  control: ControlServer
  observer: RunningMesh
  peers: DemoPeer[]
  dir: string
  t0: number
  startupMs: number
  topics: string[]
  progress: (event: DemoProgress) => void
  teardown: () => Promise<void>
}

/** Watches every topic until each member has its topic peers; keeps the summary current. */
function trackDemo(input: TrackInput): RunningDemo {
  const { observer, peers, t0, progress } = input
  const members = demoMembers(peers.length, input.topics)
  const byIndex = new Map(peers.map((p) => [p.index, p]))
  const observerId = observer.node.peerId.toString()
  const state = input.topics.map((topic) => {
    const list = (members.get(topic) ?? []).map((i) => byIndex.get(i)!).filter(Boolean)
    const ids = new Set([...list.map((p) => p.peerId), observerId])
    return {
      topic,
      list,
      ids,
      target: Math.min(CONNECTIONS_PER_TOPIC, list.length),
      lastStart: Math.max(...list.map((p) => p.startedAt)),
      ready: 0,
      doneAt: undefined as number | undefined,
    }
  })
  const discovery = (mesh: RunningMesh) => mesh.node.api<DiscoverySlotApi>('discovery')
  const check = () => {
    for (const t of state) {
      if (t.doneAt !== undefined) continue
      t.ready = t.list.filter((p) => {
        const connected = discovery(p.mesh)
          .peers(t.topic)
          .filter((id) => t.ids.has(id) && id !== p.peerId)
        return connected.length >= t.target
      }).length
      if (t.ready === t.list.length) {
        t.doneAt = Date.now()
        progress({
          type: 'topic-rendezvous',
          topic: t.topic,
          members: t.list.length,
          ms: t.doneAt - t.lastStart,
          sinceStartMs: t.doneAt - t0,
        })
      }
    }
  }
  let completeSent = false
  // the observer keeps a connection to every demo peer, so that its dashboard shows the whole mesh
  // (a loaded machine drops a connection now and then; the peers themselves only keep their topic peers)
  const redialing = new Set<string>()
  let stopped = false
  const keepObserverConnected = () => {
    const libp2p = observer.node.libp2p
    const connected = new Set(libp2p.getPeers().map(String))
    for (const p of peers) {
      if (stopped || connected.has(p.peerId) || redialing.has(p.peerId) || redialing.size >= 4) continue
      const addr = p.mesh.node.libp2p.getMultiaddrs()[0]
      if (!addr) continue
      redialing.add(p.peerId)
      libp2p
        .dial(addr, { signal: AbortSignal.timeout(10_000) })
        .catch(() => {})
        .finally(() => redialing.delete(p.peerId))
    }
  }
  const keeper = setInterval(() => {
    if (!stopped) keepObserverConnected()
  }, 2_000)
  let finish: () => void = () => {}
  const rendezvous = new Promise<void>((resolve) => {
    finish = resolve
  })
  const timer = setInterval(() => {
    try {
      check()
    } catch {
      // a node that is stopping cannot answer; the next round (or stop) settles it
    }
    if (state.every((t) => t.doneAt !== undefined) && !completeSent) {
      completeSent = true
      progress({
        type: 'rendezvous-complete',
        topics: state.length,
        ms: Math.max(...state.map((t) => t.doneAt!)) - t0,
      })
      finish()
    }
  }, CHECK_INTERVAL_MS)

  let stoppedAt: number | undefined
  let clustersAtStop: DemoClusterSummary[] | undefined
  const clusters = (): DemoClusterSummary[] => {
    if (clustersAtStop) return clustersAtStop
    try {
      return observer.node
        .api<ClusteringSlotApi>('clustering')
        .clusters()
        .map((c: ClusterView) => ({
          id: c.id,
          tags: [...c.tags].sort(),
          members: c.members instanceof Map ? c.members.size : [...(c.members as Iterable<unknown>)].length,
        }))
        .sort((a, b) => b.members - a.members || a.id.localeCompare(b.id))
    } catch {
      return []
    }
  }
  const summary = (): DemoSummary => {
    const topics = state.map(
      (t): DemoTopicSummary => ({
        topic: t.topic,
        members: t.list.length,
        target: t.target,
        rendezvousMs: t.doneAt === undefined ? undefined : t.doneAt - t.lastStart,
        sinceStartMs: t.doneAt === undefined ? undefined : t.doneAt - t0,
        ready: t.doneAt === undefined ? t.ready : t.list.length,
      }),
    )
    return {
      peers: peers.length,
      startupMs: input.startupMs,
      runMs: (stoppedAt ?? Date.now()) - t0,
      topics,
      complete: topics.every((t) => t.rendezvousMs !== undefined),
      clusters: clusters(),
    }
  }
  let stopping: Promise<DemoSummary> | undefined
  return {
    url: input.url,
    control: input.control,
    observer,
    peers,
    dir: input.dir,
    rendezvous,
    summary,
    stop: () => {
      stopping ??= (async () => {
        clearInterval(timer)
        clearInterval(keeper)
        stopped = true
        stoppedAt = Date.now()
        clustersAtStop = clusters()
        const final = summary()
        finish()
        progress({ type: 'stopping', nodes: peers.length + 1 })
        await input.teardown()
        progress({ type: 'stopped', ms: Date.now() - stoppedAt })
        return final
      })()
      return stopping
    },
  }
}

export interface RunDemoOptions extends DemoOptions {
  /** Stop by itself this many ms after every peer started. @default run until `signal` aborts */
  durationMs?: number
  /** Called once the mesh and the dashboard are up. */
  onReady?: (demo: RunningDemo) => void
}

/**
 * Runs the demo until `signal` aborts or `durationMs` has passed (after every peer started), then stops
 * everything and returns the summary. A signal during startup stops what started and returns
 * undefined.
 */
export async function runDemo(options: RunDemoOptions = {}): Promise<DemoSummary | undefined> {
  let demo: RunningDemo
  try {
    demo = await startDemo(options)
  } catch (err) {
    if (options.signal?.aborted && (err as Error).name === 'AbortError') return undefined
    throw err
  }
  options.onReady?.(demo)
  await new Promise<void>((resolve) => {
    const timer =
      options.durationMs === undefined ? undefined : setTimeout(resolve, Math.max(0, options.durationMs))
    const onAbort = () => {
      clearTimeout(timer)
      resolve()
    }
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  return demo.stop()
}
