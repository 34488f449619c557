/**
 * (c) Meshkit with the kad-topics discovery plugin: every node (5 bootstrap nodes and N peers) is a
 * `startMesh()` with its own kernel, in-memory datastore and data dir (identity key + lock) under a temp
 * dir, listening on 127.0.0.1 only. Bootstrap nodes run kad-topics with no topics; peers dial the
 * bootstrap nodes (`dial`) and join TOPIC_NAME. A topic peer is a `topic:peer` event on the node's kernel
 * bus (`topic:peer:lost` takes it away).
 *
 * Kept apart from the other implementations so it can follow the plugin's API as it settles. Until
 * `meshkit/plugins` exports `kadTopics`, `meshkitAvailability()` says so and run.ts skips this impl.
 *
 * Note: kad-topics declares a dependency on the `ping` capability, so the plugin list has ping() too.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { MeshConfig, MeshEventBus, RunningMesh } from 'meshkit'
import { BOOTSTRAP_NODES, type Harness, meanOf, measure, type RunResult } from './common.js'

/** The topic name the peers join (kad-topics namespaces and hashes it itself). */
export const TOPIC_NAME = 'bench'
export const UNAVAILABLE = 'meshkit: kadTopics not available yet'
/** Transport for the meshkit impl: MESHKIT_TRANSPORT=quic|tcp. @default 'tcp' (as raw_libp2p) */
const TRANSPORT = process.env.MESHKIT_TRANSPORT === 'quic' ? 'quic' : 'tcp'
const LISTEN = TRANSPORT === 'quic' ? '/ip4/127.0.0.1/udp/0/quic-v1' : '/ip4/127.0.0.1/tcp/0'

type PluginEntry = NonNullable<MeshConfig['plugins']>[number]
type Factory = (options?: Record<string, unknown>) => PluginEntry

interface KadTopicsOptions {
  topics: string[]
  addressScope: 'all' | 'public'
  dhtMode: 'server' | 'client' | 'auto'
  [option: string]: unknown
}

interface MeshkitModules {
  startMesh: typeof import('meshkit').startMesh
  createEventBus: typeof import('meshkit').createEventBus
  builtinPlugins: typeof import('meshkit/plugins').builtinPlugins
  defaultConfig: typeof import('meshkit/plugins').defaultConfig
  identify: Factory
  noise: Factory
  ping: Factory
  yamux: Factory
  tcp: Factory
  quic: Factory
  staticPeers: (options: { peers: string[] }) => PluginEntry
  kadTopics: (options: KadTopicsOptions) => PluginEntry
}

/** Loads meshkit and meshkit/plugins; `undefined` (with the reason) when `kadTopics` is not exported yet. */
export async function loadMeshkit(): Promise<{ modules?: MeshkitModules; reason?: string }> {
  const [core, plugins] = await Promise.all([import('meshkit'), import('meshkit/plugins')])
  const p = plugins as unknown as Record<string, unknown>
  if (typeof p.kadTopics !== 'function') return { reason: UNAVAILABLE }
  return {
    modules: {
      startMesh: core.startMesh,
      createEventBus: core.createEventBus,
      builtinPlugins: plugins.builtinPlugins,
      defaultConfig: plugins.defaultConfig,
      identify: p.identify as Factory,
      noise: p.noise as Factory,
      ping: p.ping as Factory,
      yamux: p.yamux as Factory,
      tcp: p.tcp as Factory,
      quic: p.quic as Factory,
      staticPeers: p.staticPeers as MeshkitModules['staticPeers'],
      kadTopics: p.kadTopics as MeshkitModules['kadTopics'],
    },
  }
}

/** Whether the meshkit impl can run: `{ available: true }` or the skip reason. */
export async function meshkitAvailability(): Promise<{ available: boolean; reason?: string }> {
  try {
    const { modules, reason } = await loadMeshkit()
    return modules ? { available: true } : { available: false, reason }
  } catch (err) {
    return { available: false, reason: `meshkit: cannot load (${err instanceof Error ? err.message : err})` }
  }
}

export function meshkitHarness(m: MeshkitModules, root: string): Harness {
  const bootstrap: RunningMesh[] = []
  const peers: RunningMesh[] = []
  /** Each peer's topic peers (from its topic:peer / topic:peer:lost events), by index. */
  const topicPeers: Set<string>[] = []
  /** Connections the peers opened and closed after their start returned (both ends count). */
  const churn = { opened: 0, closed: 0 }
  let bootstrapAddrs: string[] = []
  let dirs = 0

  /**
   * Bootstrap nodes are DHT servers and rendezvous points; peers are DHT clients (as NATed peers are),
   * reach 2 of the 5 bootstrap nodes (listed in random order, through staticPeers and the bootstrap slot) (spreading the load), keep 5 topic peers (the benchmark's
   * target) and exempt loopback from the per-host inbound limits (every peer here is 127.0.0.1).
   */
  const start = (topics: string[], dial: string[], events?: MeshEventBus) =>
    m.startMesh({
      events,
      config: {
        dataDir: join(root, String(dirs++)),
        datastore: 'memory',
        listen: [LISTEN],
        logLevel: 'silent',
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        // peers reach 2 bootstrap nodes through the bootstrap slot (retried with backoff under load)
        bootstrap: { minConnections: 2, retryInitial: '200ms', retryMax: '2s' },
        plugins: [
          m.identify(),
          m.ping(),
          m.noise(),
          m.yamux(),
          TRANSPORT === 'quic' ? m.quic() : m.tcp(),
          ...(dial.length > 0 ? [m.staticPeers({ peers: dial })] : []),
          m.kadTopics({
            topics,
            addressScope: 'all',
            dhtMode: topics.length === 0 ? 'server' : 'client',
            connectionsPerTopic: 5,
          }),
        ],
      },
      registry: m.builtinPlugins,
      defaults: m.defaultConfig(),
      cwd: root,
    })

  const someBootstrap = () => {
    return [...bootstrapAddrs].sort(() => Math.random() - 0.5)
  }

  return {
    async setup() {
      for (let i = 0; i < BOOTSTRAP_NODES; i++) bootstrap.push(await start([], []))
      bootstrapAddrs = bootstrap.map((b) => {
        const libp2p = b.node.libp2p
        const addr = libp2p.getMultiaddrs().find((a) => a.toString().startsWith('/ip4/127.0.0.1/'))
        if (!addr) throw new Error('a bootstrap node has no 127.0.0.1 address')
        const s = addr.toString()
        return s.includes('/p2p/') ? s : `${s}/p2p/${libp2p.peerId}`
      })
    },
    async startPeer(_index, sink) {
      // the kernel's bus, made here so the listeners are there before start() joins the topic;
      // it is what mesh.kernel.events is
      const events = m.createEventBus()
      const mine = new Set<string>()
      events.on('topic:peer', (e) => {
        if (e.topic !== TOPIC_NAME) return
        mine.add(String(e.peerId))
        sink.up(String(e.peerId))
      })
      events.on('topic:peer:lost', (e) => {
        if (e.topic !== TOPIC_NAME) return
        mine.delete(String(e.peerId))
        sink.down(String(e.peerId))
      })
      const mesh = await start([TOPIC_NAME], someBootstrap(), events)
      peers.push(mesh)
      topicPeers.push(mine)
      mesh.node.libp2p.addEventListener('connection:open', () => churn.opened++)
      mesh.node.libp2p.addEventListener('connection:close', () => churn.closed++)
    },
    snapshot: () => ({
      connections_per_peer_at_end: meanOf(peers.map((p) => p.node.libp2p.getConnections().length)),
      // what each peer's connections go to, per peer: bootstrap nodes, its topic peers, other members
      connections_by_kind_per_peer_at_end: (() => {
        const boot = new Set(bootstrap.map((b) => b.node.libp2p.peerId.toString()))
        const kinds = peers.map((p, i) => {
          const conns = p.node.libp2p.getConnections()
          const remotes = new Set(conns.map((c) => c.remotePeer.toString()))
          let toBootstrap = 0
          let toTopicPeers = 0
          for (const r of remotes) {
            if (boot.has(r)) toBootstrap++
            else if (topicPeers[i]?.has(r)) toTopicPeers++
          }
          const members = conns.filter((c) => !boot.has(c.remotePeer.toString()))
          const outbound = members.filter((c) => c.direction === 'outbound').length
          return {
            toBootstrap,
            toTopicPeers,
            toOthers: remotes.size - toBootstrap - toTopicPeers,
            outbound,
            inbound: members.length - outbound,
          }
        })
        const inbound = kinds.map((k) => k.inbound)
        return {
          bootstrap: meanOf(kinds.map((k) => k.toBootstrap)),
          topic_peers: meanOf(kinds.map((k) => k.toTopicPeers)),
          other_members: meanOf(kinds.map((k) => k.toOthers)),
          member_outbound: meanOf(kinds.map((k) => k.outbound)),
          member_inbound: meanOf(inbound),
          member_inbound_max: Math.max(0, ...inbound),
        }
      })(),
      // open connections beyond one per remote peer (both sides dialled at once, or a re-dial)
      connections_opened_per_peer: peers.length ? churn.opened / peers.length : 0,
      connections_closed_per_peer: peers.length ? churn.closed / peers.length : 0,
      duplicate_connections_per_peer_at_end: meanOf(
        peers.map((p) => {
          const conns = p.node.libp2p.getConnections()
          return conns.length - new Set(conns.map((c) => c.remotePeer.toString())).size
        }),
      ),
    }),
    async stop() {
      await Promise.allSettled([...peers, ...bootstrap].map((mesh) => mesh.close()))
    },
  }
}

export async function runMeshkit(n: number, options: { timeoutMs: number }): Promise<RunResult> {
  const { modules, reason } = await loadMeshkit()
  if (!modules) throw new Error(reason)
  const root = await mkdtemp(join(tmpdir(), 'meshkit-bench-rendezvous-'))
  try {
    return await measure('meshkit', meshkitHarness(modules, root), n, options)
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}
