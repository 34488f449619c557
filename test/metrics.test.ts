/**
 * metrics() (plugins/prometheus-metrics) on real loopback nodes: libp2p's metrics and Meshkit's in one
 * per-node registry, served by the control API at GET /metrics.
 */
import { request } from 'node:http'
import { expect } from 'chai'
import type { MeshPlugin } from 'meshkit'
import { CONNECTION_METHODS_CAPABILITY, type ConnectionMethodSource, definePlugin } from 'meshkit/plugin'
import {
  identify,
  jaccardClusters,
  kadTopics,
  metrics,
  noise,
  type PrometheusMetricsApi,
  ping,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { type ControlServer, startControlServer } from '../src/control/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

const basePlugins = (): MeshPlugin[] => [
  identify(),
  ping(),
  noise(),
  yamux(),
  tcp(),
  kadTopics({ addressScope: 'all', records: 'memory' }),
]

/** The value of one sample (`name{labels} value`) in Prometheus text; undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line)
    if (!m || m[1] !== name) continue
    const got = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    )
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3])
  }
  return undefined
}

function get(
  url: string,
  token: string,
): Promise<{ status: number; contentType: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}` }, timeout: 10_000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        text += c
      })
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], text }),
      )
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url}`)))
    req.on('error', reject)
    req.end()
  })
}

describe('metrics(): Prometheus metrics', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const servers: ControlServer[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-metrics-'))
    nodes = new LoopbackNodes(() => dir, basePlugins)
  })
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close()
    await nodes.closeAll()
    await cleanup()
  })

  const serve = async (n: TestNode) => {
    const s = await startControlServer({ kernel: n.kernel, dataDir: n.node.config.dataDir })
    servers.push(s)
    return s
  }

  it('serves libp2p and Meshkit metrics with the right values at GET /metrics', async () => {
    const a = await nodes.start('a', { plugins: [jaccardClusters({ tags: ['red', 'blue'] }), metrics()] })
    const server = await serve(a)
    await a.node.api<{ join(t: string): Promise<void> }>('discovery').join('metrics-topic')
    const b = await nodes.start('b', {
      plugins: [jaccardClusters({ tags: ['red', 'blue'] })],
      dial: [a.address],
    })
    await b.node.api<{ join(t: string): Promise<void> }>('discovery').join('metrics-topic')
    const discovery = a.node.api<{ peers(t: string): string[] }>('discovery')
    await waitFor(() => discovery.peers('metrics-topic').includes(b.peerId), {
      timeoutMs: 20_000,
      what: 'b as a topic peer of a',
    })
    const clustering = a.node.api<{ clusters(): unknown[]; ownClusters(): string[] }>('clustering')
    await waitFor(() => clustering.clusters().length > 0, { timeoutMs: 20_000, what: 'a cluster on a' })

    const res = await get(`${server.url}/metrics`, server.token)
    expect(res.status).to.equal(200)
    expect(res.contentType).to.match(/^text\/plain; version=0\.0\.4/)
    const text = res.text
    // libp2p's metrics (from @libp2p/prometheus-metrics) and process metrics
    expect(text).to.include('# TYPE libp2p_connection_manager_connections gauge')
    expect(
      sample(text, 'libp2p_connection_manager_connections', {
        libp2p_connection_manager_connections: 'inbound',
      }),
    ).to.equal(a.node.libp2p.getConnections().filter((c) => c.direction === 'inbound').length)
    expect(text).to.include('libp2p_data_transfer_bytes_total')
    expect(sample(text, 'nodejs_memory_usage_bytes', { memory: 'rss' })).to.be.greaterThan(0)
    // Meshkit's, against the node's real state
    const connections = a.node.libp2p.getConnections()
    expect(sample(text, 'meshkit_peers')).to.equal(a.node.libp2p.getPeers().length)
    expect(sample(text, 'meshkit_peers')).to.equal(1)
    expect(sample(text, 'meshkit_connections', { method: 'direct', transport: 'tcp' })).to.equal(
      connections.length,
    )
    expect(sample(text, 'meshkit_topics_joined')).to.equal(1)
    expect(sample(text, 'meshkit_topic_peers', { topic: 'metrics-topic' })).to.equal(
      discovery.peers('metrics-topic').length,
    )
    expect(sample(text, 'meshkit_clusters')).to.equal(clustering.clusters().length)
    expect(sample(text, 'meshkit_clusters_own')).to.equal(clustering.ownClusters().length)
    expect(sample(text, 'meshkit_cluster_members')).to.be.at.least(1)
    expect(sample(text, 'meshkit_events_total', { event: 'peer:connect' })).to.equal(
      a.events.filter((e) => e.event === 'peer:connect').length,
    )
    expect(sample(text, 'meshkit_events_total', { event: 'topic:joined' })).to.equal(1)
    expect(
      sample(text, 'meshkit_connection_methods_total', { method: 'relayed', transport: 'none' }),
    ).to.equal(0)
  })

  it('counts connection methods from connection:method events (as a hole-punching plugin emits them)', async () => {
    const a = await nodes.start('a', { plugins: [metrics()] })
    const api = a.node.api<PrometheusMetricsApi>('metrics')
    const b = await nodes.start('b', { dial: [a.address] })
    await waitFor(() => a.node.libp2p.getPeers().length === 1, { what: 'b connected to a' })
    a.kernel.events.emit('connection:method', {
      peerId: b.peerId,
      method: 'hole-punched',
      transport: 'tcp',
      attempts: 1,
      msToFirst: 40,
      msToDirect: 700,
    })
    a.kernel.events.emit('connection:method', {
      peerId: 'other',
      method: 'relayed',
      transport: 'relay',
      attempts: 0,
    })
    a.kernel.events.emit('connection:method', { peerId: 'x', method: 'bogus', transport: 'tcp' })
    const text = await api.render()
    expect(
      sample(text, 'meshkit_connection_methods_total', { method: 'hole-punched', transport: 'tcp' }),
    ).to.equal(1)
    expect(
      sample(text, 'meshkit_connection_methods_total', { method: 'relayed', transport: 'relay' }),
    ).to.equal(1)
    expect(text).to.not.include('bogus')
    // attempts and timings of the classified connections
    expect(sample(text, 'meshkit_hole_punch_attempts_total', { method: 'hole-punched' })).to.equal(1)
    expect(
      sample(text, 'meshkit_connection_first_seconds_bucket', { method: 'hole-punched', le: '0.05' }),
    ).to.equal(1)
    expect(
      sample(text, 'meshkit_connection_direct_seconds_bucket', { method: 'hole-punched', le: '0.5' }),
    ).to.equal(0)
    expect(
      sample(text, 'meshkit_connection_direct_seconds_bucket', { method: 'hole-punched', le: '1' }),
    ).to.equal(1)
    expect(sample(text, 'meshkit_connection_direct_seconds_sum', { method: 'hole-punched' })).to.equal(0.7)
    // the open TCP connection to b is now told hole-punched (e.g. a connection reversal or DCUtR)
    expect(sample(text, 'meshkit_connections', { method: 'hole-punched', transport: 'tcp' })).to.equal(
      a.node.libp2p.getConnections().length,
    )
    expect(sample(text, 'meshkit_connections', { method: 'direct', transport: 'tcp' })).to.equal(undefined)
    expect(api.contentType).to.match(/^text\/plain/)
  })

  it("reads connection methods from the declared 'connection-methods' providers (no container access)", async () => {
    // two providers of the multi-provider capability; the second one knows the peer
    let asked = 0
    const source = (name: string, says: (peer: string) => 'hole-punched' | undefined) =>
      definePlugin({
        name,
        provides: [CONNECTION_METHODS_CAPABILITY],
        create: () => ({
          setup: (): ConnectionMethodSource => ({
            methodOf: (peer) => {
              asked++
              return says(peer)
            },
          }),
        }),
      })()
    let punched = ''
    const a = await nodes.start('a', {
      plugins: [
        metrics(),
        source('knows-nothing', () => undefined),
        source('punched', (p) => (p === punched ? 'hole-punched' : undefined)),
      ],
    })
    const api = a.node.api<PrometheusMetricsApi>('metrics')
    const b = await nodes.start('b', { dial: [a.address] })
    await waitFor(() => a.node.libp2p.getPeers().length === 1, { what: 'b connected to a' })
    const open = a.node.libp2p.getConnections().length
    expect(
      sample(await api.render(), 'meshkit_connections', { method: 'direct', transport: 'tcp' }),
    ).to.equal(open)
    expect(asked).to.be.greaterThan(0)
    punched = b.peerId
    const text = await api.render()
    expect(sample(text, 'meshkit_connections', { method: 'hole-punched', transport: 'tcp' })).to.equal(open)
    expect(sample(text, 'meshkit_connections', { method: 'direct', transport: 'tcp' })).to.equal(undefined)
    // the sources are declared: metrics starts after them
    const order = a.node.plugins.map((p) => p.plugin.name)
    expect(order.indexOf('prometheus-metrics')).to.be.greaterThan(order.indexOf('punched'))
  })

  it('keeps one registry per node: two nodes in one process report their own values', async () => {
    const a = await nodes.start('a', { plugins: [metrics()] })
    await a.node.api<{ join(t: string): Promise<void> }>('discovery').join('only-a')
    const b = await nodes.start('b', { plugins: [metrics()] })
    const apiA = a.node.api<PrometheusMetricsApi>('metrics')
    const apiB = b.node.api<PrometheusMetricsApi>('metrics')
    expect(apiA.registry).to.not.equal(apiB.registry)
    expect(sample(await apiA.render(), 'meshkit_topics_joined')).to.equal(1)
    expect(sample(await apiB.render(), 'meshkit_topics_joined')).to.equal(0)
    // b's libp2p metrics are in b's registry
    expect(await apiB.render()).to.include('libp2p_connection_manager_connections')
  })

  it('leaves libp2p metrics out with { libp2p: false } but keeps Meshkit and process metrics', async () => {
    const a = await nodes.start('a', { plugins: [metrics({ libp2p: false })] })
    const text = await a.node.api<PrometheusMetricsApi>('metrics').render()
    expect(text).to.not.include('libp2p_')
    expect(sample(text, 'meshkit_peers')).to.equal(0)
    expect(text).to.include('process_cpu_user_seconds_total')
  })
})
