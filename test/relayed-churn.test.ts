import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLogger, type MeshConfig, MeshKernel, type MeshNode, resolveConfig } from 'meshkit'
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
import type { ClusteringService } from '../plugins/jaccard-clusters/index.js'
import { relayClient } from '../plugins/relay-client/index.js'
import { TEST_ENV } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

/** How long connection opens to the relayed peer are counted. */
const WATCH_MS = 3_000

/**
 * A peer reached only through a relay (a limited connection) must keep that one connection: the
 * kad-topics member exchange and the jaccard-clusters tag exchange (and ping) used to go through
 * `libp2p.dialProtocol()`, which never reuses a limited connection: each dialled a new circuit, libp2p
 * closed it as a duplicate, and its `connection:open` asked for the next exchange (dozens a second).
 */
describe('relayed peer: no connection churn from kad-topics / jaccard-clusters', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  const kernels: MeshKernel[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-relayed-churn-'))
  })
  afterEach(async () => {
    for (const k of kernels.splice(0).reverse()) await k.close().catch(() => {})
    await cleanup()
  })

  /** A loopback node (a node with `listen: []` has no address until it reserves on a relay). */
  async function start(name: string, extra: MeshConfig): Promise<{ kernel: MeshKernel; node: MeshNode }> {
    const kernel = new MeshKernel({ env: TEST_ENV, logger: createLogger({ write: () => {} }) })
    kernels.push(kernel)
    const config = resolveConfig(
      {
        dataDir: `${dir}/${name}`,
        datastore: 'memory',
        logLevel: 'silent',
        listen: ['/ip4/127.0.0.1/tcp/0'],
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        ...extra,
        plugins: [identify(), ping(), noise(), yamux(), tcp(), ...(extra.plugins ?? [])],
      },
      { env: TEST_ENV, registry: builtinPlugins },
    )
    return { kernel, node: await kernel.start(config) }
  }

  /**
   * Starts a relay and a node behind it (no listen address: reachable only through its reservation),
   * dials it from `observer` through the relay, runs `after` and counts, for WATCH_MS, the connections
   * the observer opens to it.
   */
  async function opensToRelayedPeer(
    observer: MeshConfig['plugins'],
    behind: MeshConfig['plugins'] = [],
    after: (obs: MeshNode) => void = () => {},
  ) {
    const obs = await start('obs', { plugins: [...(observer ?? []), relayClient({ minReservations: 0 })] })
    const relay = await start('relay', { plugins: [relayServer()] })
    const relayAddr = relay.node.libp2p.getMultiaddrs()[0].toString()
    const far = await start('behind', {
      listen: [],
      plugins: [
        ...(behind ?? []),
        relayClient({ relays: [relayAddr], retryInitial: '100ms', timeout: '3s' }),
      ],
    })
    const farId = far.node.peerId.toString()
    await waitFor(() => far.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')), {
      what: 'a circuit address for the node behind the relay',
    })
    let opens = 0
    let closes = 0
    obs.kernel.events.on('connection:open', (e) => {
      if (e.peerId === farId) opens++
    })
    obs.kernel.events.on('connection:close', (e) => {
      if (e.peerId === farId) closes++
    })
    const conn = await obs.node.libp2p.dial(multiaddr(`${relayAddr}/p2p-circuit/p2p/${farId}`), {
      signal: AbortSignal.timeout(5_000),
    })
    expect(conn.limits, 'the connection is relayed (limited)').to.not.equal(undefined)
    after(obs.node)
    await new Promise((r) => setTimeout(r, WATCH_MS))
    const open = obs.node.libp2p.getConnections(far.node.peerId).filter((c) => c.status === 'open')
    return { opens, closes, open: open.length, obs: obs.node, far: far.node }
  }

  it('kadTopics (a joined topic) + jaccardClusters: one relayed connection, no re-dials', async () => {
    const r = await opensToRelayedPeer([
      kadTopics({ addressScope: 'all', topics: ['a'] }),
      jaccardClusters({ tags: ['a'] }),
    ])
    expect(r.opens, `connection opens to the relayed peer in ${WATCH_MS} ms`).to.be.at.most(2)
    expect(r.closes).to.be.at.most(1)
    expect(r.open, 'the relayed peer stays connected').to.be.at.least(1)
  })

  it('the same when the relayed peer runs both plugins; they exchange once a direct connection opens', async () => {
    const plugins = () => [
      kadTopics({ addressScope: 'all', topics: ['a'] }),
      jaccardClusters({ tags: ['a'] }),
    ]
    const r = await opensToRelayedPeer(plugins(), plugins())
    expect(r.opens, `connection opens to the relayed peer in ${WATCH_MS} ms`).to.be.at.most(2)
    expect(r.open, 'the relayed peer stays connected').to.be.at.least(1)
    // a direct (unlimited) connection, as a hole punch or a connection reversal makes: the exchanges run
    const direct = await r.far.libp2p.dial(r.obs.libp2p.getMultiaddrs()[0], {
      signal: AbortSignal.timeout(5_000),
    })
    expect(direct.limits).to.equal(undefined)
    const farId = r.far.peerId.toString()
    await waitFor(() => r.obs.api<{ peers(t: string): string[] }>('discovery').peers('a').includes(farId), {
      what: 'the peer behind the relay as a topic peer',
    })
    await waitFor(() => r.obs.api<ClusteringService>('clustering').clustersOf(farId).length > 0, {
      what: 'the peer behind the relay in a cluster',
    })
  })

  it('kadTopics alone with a joined topic: its member exchange does not re-dial the relayed peer', async () => {
    const r = await opensToRelayedPeer([kadTopics({ addressScope: 'all', topics: ['a'] })])
    expect(r.opens, `connection opens to the relayed peer in ${WATCH_MS} ms`).to.be.at.most(2)
    expect(r.open, 'the relayed peer stays connected').to.be.at.least(1)
  })

  it('jaccardClusters alone: new tags sent to connected peers do not re-dial the relayed one', async () => {
    const r = await opensToRelayedPeer([jaccardClusters({ tags: ['a'] })], [], (obs) => {
      setTimeout(() => obs.api<ClusteringService>('clustering').setTags(['b']), 300).unref()
    })
    expect(r.opens, `connection opens to the relayed peer in ${WATCH_MS} ms`).to.be.at.most(2)
    expect(r.open, 'the relayed peer stays connected').to.be.at.least(1)
  })

  it('jaccardClusters: a relayed cluster member is not re-dialled by the periodic ping', async () => {
    const r = await opensToRelayedPeer(
      [jaccardClusters({ tags: ['a'], pingInterval: '200ms', maintainInterval: '200ms' })],
      [],
      (obs) => {
        // a member whose tags came earlier (e.g. over a direct connection since closed)
        const far = obs.libp2p.getConnections().find((c) => c.limits !== undefined)!.remotePeer
        obs.api<ClusteringService>('clustering').assignPeer(far.toString(), ['a'])
      },
    )
    expect(r.opens, `connection opens to the relayed peer in ${WATCH_MS} ms`).to.be.at.most(2)
    expect(r.open, 'the relayed peer stays connected').to.be.at.least(1)
  })
})
