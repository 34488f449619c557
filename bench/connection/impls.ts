/**
 * The connection benchmark's subjects. Each builds one server and `clients` client nodes in this process
 * (all started before anything is measured) and connects client `i` to the server on demand.
 *
 *   raw_tcp         createLibp2p: tcp + noise + yamux + identify (what Meshkit's default wires, no DHT)
 *   raw_quic        createLibp2p: @chainsafe/libp2p-quic + identify
 *   meshkit         Meshkit's default node (`defaultConfig()`: identify, ping, noise, yamux, tcp, quic,
 *                   kadTopics with no topic), dialled over TCP
 *   meshkit_quic    the same node, dialled over QUIC
 *   meshkit_topics  the default node + jaccardClusters (3 tags); the server and every client have joined a
 *                   topic, so a connection also runs the member and tag exchanges
 *   hyperswarm      Hyperswarm on a 3-node @hyperswarm/testnet, client `joinPeer(server key)`
 *
 * "Established": libp2p: `dial()` resolved and the client has identified the server (`peer:identify`);
 * Hyperswarm: the client's `connection` event. Everything after that (the server's identify, Meshkit's
 * exchanges, DHT work) is in the CPU figure through the settle time the worker waits after the last one.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Libp2p } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

export const IMPLS = [
  'raw_tcp',
  'raw_quic',
  'meshkit',
  'meshkit_quic',
  'meshkit_topics',
  'hyperswarm',
] as const
export type ImplName = (typeof IMPLS)[number]

export interface Subject {
  /** Creates and starts the server and `clients` clients (not measured). */
  setup(clients: number): Promise<void>
  /** Connects client `i` to the server; resolves once the connection is established (see above). */
  connect(i: number): Promise<void>
  /** Connections the server holds now, and to how many distinct peers. */
  serverConnections(): { connections: number; peers: number }
  stop(): Promise<void>
}

const IDENTIFY_TIMEOUT_MS = 10_000

/** `n` results of `make()`, 10 at a time (setup is not measured; this only shortens it). */
async function inBatches<T>(n: number, make: () => Promise<T>): Promise<T[]> {
  const out: T[] = []
  while (out.length < n) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(10, n - out.length) }, make))))
  }
  return out
}

/** Resolves when `node` has identified `peer` (or after a bounded wait: the dial already succeeded). */
function identified(node: Libp2p, peer: string): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      node.removeEventListener('peer:identify', onIdentify)
      resolve()
    }
    const onIdentify = (evt: CustomEvent<{ peerId: { toString(): string } }>) => {
      if (evt.detail.peerId.toString() === peer) done()
    }
    const timer = setTimeout(done, IDENTIFY_TIMEOUT_MS)
    node.addEventListener('peer:identify', onIdentify)
  })
}

async function dialAndIdentify(client: Libp2p, server: Libp2p, addr: Multiaddr): Promise<void> {
  const seen = identified(client, server.peerId.toString())
  await client.dial(addr)
  await seen
}

function libp2pConnections(node: Libp2p) {
  const conns = node.getConnections()
  return { connections: conns.length, peers: new Set(conns.map((c) => c.remotePeer.toString())).size }
}

function rawSubject(kind: 'tcp' | 'quic'): Subject {
  let server: Libp2p
  let addr: Multiaddr
  const clients: Libp2p[] = []
  const create = async () => {
    const [{ createLibp2p }, { identify }] = await Promise.all([import('libp2p'), import('@libp2p/identify')])
    const connectionManager = {
      maxConnections: 300,
      allow: ['/ip4/127.0.0.1/ipcidr/32'],
      inboundConnectionThreshold: 10_000,
      maxIncomingPendingConnections: 1_000,
    }
    if (kind === 'quic') {
      const { quic } = await import('@chainsafe/libp2p-quic')
      return createLibp2p({
        addresses: { listen: ['/ip4/127.0.0.1/udp/0/quic-v1'] },
        transports: [quic()],
        services: { identify: identify() },
        connectionManager,
      })
    }
    const [{ tcp }, { noise }, { yamux }] = await Promise.all([
      import('@libp2p/tcp'),
      import('@chainsafe/libp2p-noise'),
      import('@chainsafe/libp2p-yamux'),
    ])
    return createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify() },
      connectionManager,
    })
  }
  return {
    async setup(n) {
      server = await create()
      addr = server.getMultiaddrs()[0]
      clients.push(...(await inBatches(n, create)))
    },
    connect: (i) => dialAndIdentify(clients[i], server, addr),
    serverConnections: () => libp2pConnections(server),
    async stop() {
      await Promise.allSettled([server, ...clients].map((n) => n.stop()))
    },
  }
}

interface MeshHandle {
  libp2p: Libp2p
  close(): Promise<void>
}

function meshkitSubject(variant: 'default' | 'quic' | 'topics'): Subject {
  let root = ''
  let server: MeshHandle
  let addr: Multiaddr
  const clients: MeshHandle[] = []
  let dirs = 0
  const start = async (role: 'server' | 'client'): Promise<MeshHandle> => {
    const [core, plugins] = await Promise.all([import('meshkit'), import('meshkit/plugins')])
    const defaults = plugins.defaultConfig()
    const base = defaults.plugins ?? []
    const extra =
      variant === 'topics'
        ? [plugins.jaccardClusters({ tags: ['bench', 'loopback', role === 'server' ? 'server' : 'client'] })]
        : []
    const topics = variant === 'topics' ? ['bench'] : []
    const pluginList = [
      ...base.map((p) =>
        typeof p === 'object' && p !== null && 'name' in p && p.name === 'kad-topics'
          ? plugins.kadTopics({ topics, dhtMode: role === 'server' ? 'server' : 'client' })
          : p,
      ),
      ...extra,
    ]
    const mesh = await core.startMesh({
      config: {
        dataDir: join(root, String(dirs++)),
        // what users run (the default): the peer store writes go to LevelDB in the data dir
        datastore: 'persistent',
        listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1'],
        logLevel: 'info',
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: pluginList,
      },
      // Meshkit's logger at its default level, writing nowhere (the worker's stdout is its result)
      logger: core.createLogger({ write: () => {} }),
      registry: plugins.builtinPlugins,
      defaults,
      cwd: root,
    })
    return { libp2p: mesh.node.libp2p, close: () => mesh.close() }
  }
  return {
    async setup(n) {
      root = await mkdtemp(join(tmpdir(), 'meshkit-bench-connection-'))
      server = await start('server')
      const want = variant === 'quic' ? '/quic-v1' : '/tcp/'
      const found = server.libp2p.getMultiaddrs().find((a) => a.toString().includes(want))
      if (!found) throw new Error(`the server has no ${want} address`)
      addr = found
      clients.push(...(await inBatches(n, () => start('client'))))
    },
    connect: (i) => dialAndIdentify(clients[i].libp2p, server.libp2p, addr),
    serverConnections: () => libp2pConnections(server.libp2p),
    async stop() {
      await Promise.allSettled([server, ...clients].map((m) => m.close()))
      if (root) await rm(root, { recursive: true, force: true })
    },
  }
}

function hyperswarmSubject(): Subject {
  type Swarm = import('hyperswarm').default
  let testnet: import('@hyperswarm/testnet').Testnet | undefined
  let server: Swarm
  const clients: Swarm[] = []
  return {
    async setup(n) {
      const [{ default: createTestnet }, { default: Hyperswarm }, { installLoopbackGuard }] =
        await Promise.all([
          import('@hyperswarm/testnet'),
          import('hyperswarm'),
          import('../rendezvous/hyperswarm.js'),
        ])
      const guard = installLoopbackGuard()
      if (!guard.installed) throw new Error(`hyperswarm: no loopback guard (${guard.error})`)
      const net = await createTestnet(3, { host: '127.0.0.1' })
      testnet = net
      const bootstrap = net.nodes.map((node) => {
        const a = node.address()
        if (a?.host !== '127.0.0.1') throw new Error('a testnet node is not on loopback')
        return { host: a.host, port: a.port }
      })
      const swarm = async () => {
        const dht = net.createNode({ bootstrap })
        await dht.fullyBootstrapped()
        const s = new Hyperswarm({ dht, maxPeers: 1000 })
        s.on('connection', (conn) => conn.on('error', () => {}))
        return s
      }
      server = await swarm()
      await server.listen()
      clients.push(...(await inBatches(n, swarm)))
    },
    connect(i) {
      const client = clients[i]
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('hyperswarm: no connection within 20 s')), 20_000)
        client.once('connection', () => {
          clearTimeout(timer)
          resolve()
        })
        client.joinPeer(server.keyPair.publicKey)
      })
    },
    serverConnections() {
      const conns = [...server.connections]
      return {
        connections: conns.length,
        peers: new Set(conns.map((c) => c.remotePublicKey.toString('hex'))).size,
      }
    },
    async stop() {
      await Promise.allSettled([server, ...clients].map((s) => s.destroy()))
      await testnet?.destroy()
    },
  }
}

export function subject(impl: ImplName): Subject {
  switch (impl) {
    case 'raw_tcp':
      return rawSubject('tcp')
    case 'raw_quic':
      return rawSubject('quic')
    case 'meshkit':
      return meshkitSubject('default')
    case 'meshkit_quic':
      return meshkitSubject('quic')
    case 'meshkit_topics':
      return meshkitSubject('topics')
    case 'hyperswarm':
      return hyperswarmSubject()
  }
}
