/**
 * `startDemo()`: the observer (bootstrap, relay, every topic, the dashboard's control API), then the
 * peers, a few at a time; then the demo is tracked (track-demo.ts) until stopped.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  createLogger,
  definePlugin,
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
import {
  CONNECTIONS_PER_TOPIC,
  checkDemoPlan,
  DEFAULT_DEMO_PEERS,
  DEFAULT_DEMO_TOPICS,
  demoTopicsOf,
} from './plan.js'
import { trackDemo } from './track-demo.js'
import type { DemoOptions, DemoPeer, RunningDemo } from './types.js'

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
