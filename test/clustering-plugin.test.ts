import { expect } from 'chai'
import {
  type ConfigEnv,
  isMeshError,
  type MeshConfig,
  type MeshEvent,
  MeshKernel,
  resolveConfig,
} from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { type ClusterManager, jaccardClusters } from '../plugins/jaccard-clusters/index.js'
import { tempDir, waitFor } from './helpers.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }

describe('clustering: jaccardClusters plugin', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  const kernels: MeshKernel[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
  })
  afterEach(async () => {
    for (const k of kernels.splice(0)) await k.close().catch(() => {})
    await cleanup()
  })

  const config = (sub: string, extra: MeshConfig['plugins'] = []): MeshConfig => ({
    dataDir: `${dir}/${sub}`,
    datastore: 'memory',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    logLevel: 'silent',
    network: { addressScope: 'all' },
    plugins: [identify(), ping(), noise(), yamux(), tcp(), ...extra],
  })
  const resolve = (c: MeshConfig) => resolveConfig(c, { env, registry: builtinPlugins })

  it('validates its options with the config', () => {
    let err: unknown
    try {
      resolve(config('a', [jaccardClusters({ threshold: 1.5 })]))
    } catch (e) {
      err = e
    }
    expect(isMeshError(err)).to.equal(true)
    expect(String((err as Error).message)).to.contain('threshold')
  })

  it('provides the clustering slot: the manager as API, events on the bus, connection metrics', async () => {
    const k = new MeshKernel({ env })
    kernels.push(k)
    const events: MeshEvent[] = []
    k.events.on('*', (e) => {
      if (e.event.startsWith('cluster:')) events.push(e)
    })
    const a = await k.build(resolve(config('a', [jaccardClusters({ threshold: 0.5, inactiveAfter: '10m' })])))
    await k.swap(a)
    const other = new MeshKernel({ env })
    kernels.push(other)
    const b = await other.build(resolve(config('b')))
    await other.swap(b)

    const clusters = a.api<ClusterManager>('clustering')
    expect(clusters.threshold).to.equal(0.5)
    expect(clusters.inactiveAfter).to.equal(600_000)
    const bId = b.peerId.toString()
    expect(clusters.assignPeer(bId, ['ml', 'nn'])).to.deep.equal(['tags:ml,nn'])
    expect(events.map((e) => e.event)).to.deep.equal(['cluster:created', 'cluster:peer-added'])
    expect(events[1]).to.include({ clusterId: 'tags:ml,nn', peerId: bId })

    await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
    await waitFor(() => clusters.bestPeers('tags:ml,nn', 1)[0]?.metrics.method === 'direct', {
      what: 'direct connection recorded',
    })
    expect(clusters.bestPeers('tags:ml,nn', 1)[0].metrics.connectedSince).to.be.a('number')
    await a.libp2p.hangUp(b.peerId)
    await waitFor(() => clusters.bestPeers('tags:ml,nn', 1)[0]?.metrics.connectedSince === undefined, {
      what: 'disconnect recorded',
    })
  })

  /** A custom clustering strategy written against the public plugin API only. */
  const fixedClusters = definePlugin({
    name: 'fixed-clusters',
    provides: ['clustering'],
    create: () => ({ setup: () => ({ strategy: 'fixed', clusters: () => ['everyone'] }) }),
  })

  it('a custom clustering plugin replaces the default through the public plugin API', async () => {
    const k = new MeshKernel({ env })
    kernels.push(k)
    const node = await k.build(resolve(config('a', [fixedClusters()])))
    await k.swap(node)
    expect(node.api<{ strategy: string }>('clustering').strategy).to.equal('fixed')
  })

  it('refuses two clustering plugins at once (exclusive slot)', () => {
    let err: unknown
    try {
      resolve(config('a', [jaccardClusters(), fixedClusters()]))
    } catch (e) {
      err = e
    }
    expect(isMeshError(err)).to.equal(true)
    expect(String((err as Error).message)).to.contain('clustering')
  })
})
