/**
 * jaccardClusters against hostile peers (security issue 10): memory bounds of the cluster manager (a
 * cluster per tag set, Sybils, own-looking sets, memberships, peers), the per-peer budget of
 * /mesh/tags/1.0.0, and the dial-back of Sybils that claim this node's own tags.
 */
import { randomBytes } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { noise as plainNoise } from '@chainsafe/libp2p-noise'
import { yamux as plainYamux } from '@chainsafe/libp2p-yamux'
import type { Libp2p } from '@libp2p/interface'
import { tcp as plainTcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p } from 'libp2p'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { ClusterManager } from '../plugins/jaccard-clusters/cluster-manager.js'
import {
  type ClusteringService,
  jaccardClusters,
  TAGS_BUDGET,
  TAGS_PROTOCOL,
} from '../plugins/jaccard-clusters/index.js'
import { LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { lengthPrefixed } from './fixtures/topics.js'
import { tempDir, waitFor } from './helpers.js'
import { discoverTarget, Sentinels, tagsClusterFlood, tagsDialBack } from './hostile/index.js'

const RANDOM = randomBytes(4096).toString('hex')
/** A random tag of 16-60 characters, as the cluster-flood attack sends. */
const randomTag = () => {
  const length = 16 + Math.floor(Math.random() * 45)
  const at = Math.floor(Math.random() * (RANDOM.length - length))
  return `t-${Math.random().toString(36).slice(2, 10)}${RANDOM.slice(at, at + length - 10)}`
}
/** A random set of `n` tags (64: the most a message may carry). */
const randomTags = (n = 64) => Array.from({ length: n }, randomTag)

/** A full garbage collection: `gc` with --expose-gc, else the flag turned on at run time (V8 allows it). */
function collector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (exposed) return exposed
  try {
    setFlagsFromString('--expose-gc')
    return runInNewContext('gc') as () => void
  } catch {
    return undefined
  }
}
const gc = collector()
/** Heap in use after full collections (or, without a collector, after letting the collector run). */
async function heapUsed(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    if (gc) gc()
    else await new Promise((r) => setTimeout(r, 50))
  }
  return process.memoryUsage().heapUsed
}
const MiB = 1024 * 1024

describe('clustering: bounds against hostile tag sets (cluster manager)', function () {
  this.timeout(60_000)

  it('10k random tag sets from one peer leave at most one cluster and bounded heap', async () => {
    const manager = new ClusterManager()
    manager.addCluster('app', ['ml', 'nn']) // the app's own cluster stays
    const before = await heapUsed()
    for (let i = 0; i < 10_000; i++) manager.assignPeer('sybil', randomTags())
    const after = await heapUsed()
    // the peer holds the cluster of its latest set; every earlier one went as it left it
    expect(manager.size).to.equal(2)
    expect(manager.clustersOf('sybil')).to.have.length(1)
    expect(manager.getCluster('app')).to.not.equal(undefined)
    // 10k clusters of 64 tags took ~24 KiB each (about 240 MiB); what is left: one cluster, and tokens
    // of removed sets the index drops at its next rebuild (at most ~1024 sets' worth)
    const growth = (after - before) / MiB
    expect(growth, `heap growth ${growth.toFixed(1)} MiB (gc ${gc ? 'run' : 'not available'})`).to.be.below(
      gc ? 16 : 32,
    )
  })

  it('10k Sybils leave at most maxClusters clusters and maxPeers peers', () => {
    const manager = new ClusterManager({ maxClusters: 256, maxPeers: 512 })
    manager.addCluster('app', ['ml', 'nn'])
    // a random set each: the first 255 make a cluster each, the others none (no cluster is empty)
    for (let i = 0; i < 10_000; i++) manager.assignPeer(`sybil-${i}`, randomTags(8))
    let stats = manager.stats()
    expect(stats.clusters).to.equal(256)
    expect(stats.creationsRefused).to.equal(10_000 - 255)
    expect(stats.peers).to.equal(255)
    // the app's set each: one cluster, whose members are bounded by maxPeers (least recently active go)
    for (let i = 0; i < 10_000; i++) manager.assignPeer(`member-${i}`, ['ml', 'nn'])
    stats = manager.stats()
    expect(stats.peers).to.equal(512)
    expect(stats.peersEvicted).to.equal(10_000 + 255 - 512)
    expect(manager.clustersOf('member-9999')).to.have.length(1)
    expect(manager.clustersOf('sybil-0')).to.have.length(0)
    // the Sybils' clusters went with their last members: room again for new ones
    expect(stats.clusters).to.equal(1)
    expect(manager.assignPeer('late', ['a', 'b'])).to.deep.equal(['tags:a,b'])
  })

  it('sets that look like its own clusters are kept when empty, within maxClusters (oldest empty gives way)', () => {
    const own = Array.from({ length: 10 }, (_, i) => `own-${i}`)
    /** Keeps, like the clustering service, the clusters whose tags reach 0.7 with `own`. */
    class OwnManager extends ClusterManager {
      protected override keepWhenEmpty(tags: ReadonlySet<string>): boolean {
        return [...tags].filter((t) => own.includes(t)).length / new Set([...tags, ...own]).size >= 0.7
      }
    }
    const manager = new OwnManager({ maxClusters: 64 })
    // own tags + 4 random ones: each reaches 10/14 = 0.71 with `own` but only 10/18 with another one
    for (let i = 0; i < 2_000; i++) manager.assignPeer('sybil', [...own, ...randomTags(4)])
    const stats = manager.stats()
    expect(stats.clusters).to.equal(64)
    expect(stats.emptyAuto).to.equal(63)
    expect(stats.clustersEvicted).to.be.at.least(2_000 - 64)
    expect(manager.clustersOf('sybil')).to.have.length(1)
  })

  it('joins at most maxClustersPerPeer matching clusters, the most similar first', () => {
    const manager = new ClusterManager({ threshold: 0.5, maxClustersPerPeer: 3 })
    const base = ['a', 'b', 'c', 'd']
    manager.addCluster('same', base)
    for (let i = 0; i < 20; i++) manager.addCluster(`near-${i}`, [...base, `x${i}`])
    const joined = manager.assignPeer('p', base)
    expect(joined).to.have.length(3)
    expect(joined[0]).to.equal('same')
  })

  it('a peer that has not been active longest is evicted beyond maxPeers; touched peers stay', () => {
    const manager = new ClusterManager({ maxPeers: 3 })
    manager.addCluster('c', ['x'])
    for (const p of ['p1', 'p2', 'p3']) manager.addPeerToCluster('c', p)
    manager.touchPeer('p1')
    manager.addPeerToCluster('c', 'p4')
    expect([...manager.getCluster('c')!.members.keys()].sort()).to.deep.equal(['p1', 'p3', 'p4'])
    expect(manager.stats().peersEvicted).to.equal(1)
  })
})

describe('clustering: hostile peers on the wire', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  let sentinels: Sentinels
  const plains: Libp2p[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
    sentinels = new Sentinels()
  })
  afterEach(async () => {
    for (const p of plains.splice(0)) await Promise.resolve(p.stop()).catch(() => {})
    await sentinels.close()
    await nodes.closeAll()
    await cleanup()
  })

  const clusteringOf = (n: TestNode) => n.node.api<ClusteringService>('clustering')

  it('one peer sending tag set after tag set: refused over its budget, banned, one cluster at most', async () => {
    const a = await nodes.start('a', { plugins: [jaccardClusters({ tags: ['ml', 'nn'] })] })
    const plain = await createLibp2p({
      transports: [plainTcp()],
      connectionEncrypters: [plainNoise()],
      streamMuxers: [plainYamux()],
    })
    plains.push(plain)
    const plainId = plain.peerId.toString()
    let answered = 0
    let refused = 0
    const started = Date.now()
    for (let i = 0; i < 200; i++) {
      try {
        const stream = await plain.dialProtocol(multiaddr(a.address), TAGS_PROTOCOL, {
          signal: AbortSignal.timeout(5_000),
        })
        stream.send(lengthPrefixed(new TextEncoder().encode(JSON.stringify({ v: 1, tags: randomTags() }))))
        await stream.close({ signal: AbortSignal.timeout(5_000) })
        let bytes = 0
        for await (const chunk of stream) bytes += chunk.byteLength
        if (bytes > 0) answered++
        else refused++
      } catch {
        refused++
      }
      if (a.node.reputation.isBanned(plainId)) break
    }
    const seconds = (Date.now() - started) / 1000
    // the burst, then one a second
    expect(answered, `answered in ${seconds.toFixed(1)} s`).to.be.at.most(
      TAGS_BUDGET.burst + Math.ceil(seconds * TAGS_BUDGET.ratePerSecond) + 1,
    )
    expect(refused).to.be.at.least(1)
    expect(a.node.reputation.isBanned(plainId), 'banned after 20 budget overruns').to.equal(true)
    const c = clusteringOf(a)
    expect(c.clustersOf(plainId).length).to.be.at.most(1)
    expect(c.size).to.be.at.most(1)
  })

  it('the cluster-flood attack leaves one cluster per Sybil at most, gone soon after', async () => {
    const a = await nodes.start('a', {
      plugins: [
        jaccardClusters({ tags: ['ml', 'nn'], forgetUntrustedAfter: '2s', maintainInterval: '500ms' }),
      ],
    })
    const target = await discoverTarget(a.address)
    const report = await tagsClusterFlood({ target, sentinels }, { durationMs: 4_000, intensity: 1 })
    expect(report.failed, JSON.stringify(report)).to.equal(undefined)
    const accepted = report.counters.tag_sets_accepted ?? 0
    // each Sybil is one connection (the attack counts `sybils` only for those that sent all 20 sets)
    const sybils = report.counters.connections ?? 0
    // the flood got through (each Sybil within its tags budget: a burst of 5, then refused)
    expect(accepted, JSON.stringify(report.counters)).to.be.at.least(100)
    const c = clusteringOf(a)
    expect(c.size, JSON.stringify({ ...report.counters, ...c.stats() })).to.be.at.most(sybils)
    // the Sybils came and went: their memberships, and so their clusters, go `forgetUntrustedAfter` later
    await waitFor(() => c.size === 0, { timeoutMs: 10_000, what: 'the Sybils forgotten' }).catch((err) => {
      const left = a.node.libp2p.getConnections().length
      throw new Error(`${(err as Error).message}: ${JSON.stringify({ ...c.stats(), connectionsLeft: left })}`)
    })
    expect(c.stats().peers).to.equal(0)
  })

  it('dials back none of the Sybils that claimed its own tags and left', async () => {
    const a = await nodes.start('a', {
      plugins: [jaccardClusters({ tags: ['ml', 'nn', 'gpu'], maintainInterval: '200ms' })],
    })
    const target = await discoverTarget(a.address)
    expect(target.tags).to.deep.equal(['ml', 'nn', 'gpu'])
    const from = Date.now()
    const report = await tagsDialBack({ target, sentinels }, { durationMs: 4_000, intensity: 1 })
    expect(report.failed, JSON.stringify(report)).to.equal(undefined)
    const sybils = report.counters.sybils_in_own_cluster ?? 0
    expect(sybils).to.be.at.least(3)
    // they are members of a's own cluster, short of connections...
    const c = clusteringOf(a)
    await waitFor(() => c.ownClusters().length === 1, { what: 'an own cluster' })
    const members = c.getCluster(c.ownClusters()[0])!.members.size
    expect(members).to.be.at.least(sybils - 1)
    // ...and still not dialled: a few seconds of maintenance after the attack
    await new Promise((r) => setTimeout(r, 3_000))
    const hits = sentinels.since(from, 'attacker:tags-dial-back')
    expect(hits.length, `dials to the Sybils' address (${sybils} Sybils)`).to.equal(0)
  })
})
