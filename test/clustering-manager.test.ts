import { expect } from 'chai'
import { MeshError } from 'meshkit'
import {
  type Clock,
  type ClusterEventName,
  ClusterManager,
  type ClusterManagerOptions,
  compareMembers,
} from '../plugins/jaccard-clusters/cluster-manager.js'

/** A manual clock: `advance(ms)` moves time and fires due intervals in time order. */
class FakeClock implements Clock {
  t = 1_000_000
  private timers = new Map<number, { fn: () => void; ms: number; next: number }>()
  private seq = 0
  now(): number {
    return this.t
  }
  setInterval(fn: () => void, ms: number): unknown {
    const id = ++this.seq
    this.timers.set(id, { fn, ms, next: this.t + ms })
    return id
  }
  clearInterval(handle: unknown): void {
    this.timers.delete(handle as number)
  }
  get pending(): number {
    return this.timers.size
  }
  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      let due: { fn: () => void; ms: number; next: number } | undefined
      for (const timer of this.timers.values())
        if (timer.next <= end && (!due || timer.next < due.next)) due = timer
      if (!due) break
      this.t = due.next
      due.next += due.ms
      due.fn()
    }
    this.t = end
  }
}

function setup(options: ClusterManagerOptions = {}) {
  const clock = new FakeClock()
  const manager = new ClusterManager({ clock, ...options })
  const events: string[] = []
  manager.on('*', (fields, event: ClusterEventName) => {
    const f = fields as { clusterId: string; peerId?: string; reason?: string }
    events.push([event, f.clusterId, f.peerId, f.reason].filter(Boolean).join(' '))
  })
  return { clock, manager, events }
}

describe('clustering: cluster manager', () => {
  describe('clusters and members', () => {
    it('adds and removes clusters and peers, with an event for every change', () => {
      const { manager, events } = setup()
      expect(manager.addCluster('ai', ['ml', 'nn'])).to.equal(true)
      expect(manager.addCluster('ai', ['x'])).to.equal(false)
      expect(manager.addPeerToCluster('ai', 'p1')).to.equal(true)
      expect(manager.addPeerToCluster('nope', 'p1')).to.equal(false)
      expect(manager.addPeerToCluster('ai', 'p2', { rttMs: 5 })).to.equal(true)
      expect(manager.getCluster('ai')?.members.get('p2')?.metrics).to.deep.equal({ failures: 0, rttMs: 5 })
      expect(manager.removePeerFromCluster('ai', 'p1')).to.equal(true)
      expect(manager.removePeerFromCluster('ai', 'p1')).to.equal(false)
      expect(manager.clustersOf('p2')).to.deep.equal(['ai'])
      expect(manager.removeCluster('ai')).to.equal(true)
      expect(manager.removeCluster('ai')).to.equal(false)
      expect(manager.clustersOf('p2')).to.deep.equal([])
      expect(events).to.deep.equal([
        'cluster:created ai',
        'cluster:peer-added ai p1',
        'cluster:peer-added ai p2',
        'cluster:peer-removed ai p1 removed',
        'cluster:peer-removed ai p2 removed',
        'cluster:removed ai removed',
      ])
    })

    it('returns copies: callers cannot change its state', () => {
      const { manager } = setup()
      manager.addCluster('a', ['x'])
      manager.addPeerToCluster('a', 'p', { rttMs: 1 })
      const view = manager.getCluster('a')!
      ;(view.tags as Set<string>).add('y')
      view.members.get('p')!.metrics.rttMs = 99
      expect([...manager.getCluster('a')!.tags]).to.deep.equal(['x'])
      expect(manager.bestPeers('a', 1)[0].metrics.rttMs).to.equal(1)
    })

    it('a throwing listener does not break the manager', () => {
      const { manager } = setup()
      manager.on('cluster:created', () => {
        throw new Error('boom')
      })
      expect(manager.addCluster('a', ['x'])).to.equal(true)
      expect(manager.size).to.equal(1)
    })
  })

  describe('similarity', () => {
    it('findSimilarClusters sorts by Jaccard similarity, excludes itself, threshold configurable', () => {
      const { manager } = setup()
      const ten = Array.from({ length: 10 }, (_, i) => `t${i}`)
      manager.addCluster('ten', ten)
      manager.addCluster('nine', ten.slice(0, 9)) // 0.9
      manager.addCluster('seven', ten.slice(0, 7)) // 0.7: exactly at the default threshold, included
      manager.addCluster('six', ten.slice(0, 6)) // 0.6
      manager.addCluster('far', ['zzz'])
      expect(manager.findSimilarClusters('ten')).to.deep.equal([
        { id: 'nine', similarity: 0.9 },
        { id: 'seven', similarity: 0.7 },
      ])
      expect(manager.findSimilarClusters('ten', 0.6).map((c) => c.id)).to.deep.equal(['nine', 'seven', 'six'])
      expect(manager.findSimilarClusters('missing')).to.deep.equal([])
      expect(manager.similarity('ten', 'six')).to.equal(0.6)
    })

    it('uses the MinHash index when asked, with the same answers on clear cases', () => {
      const { manager } = setup({ index: { minhash: { bands: 32, rows: 2 } } })
      manager.addCluster('a', ['1', '2', '3', '4'])
      manager.addCluster('b', ['1', '2', '3', '4'])
      manager.addCluster('c', ['x', 'y'])
      expect(manager.findSimilarClusters('a')).to.deep.equal([{ id: 'b', similarity: 1 }])
    })
  })

  describe('assignPeer', () => {
    it('joins every cluster reaching the threshold, else creates one; empty tags do nothing', () => {
      const { manager, events } = setup()
      manager.addCluster('ai', ['ml', 'nn', 'gpu'])
      manager.addCluster('ai2', ['ml', 'nn', 'gpu', 'tpu'])
      manager.addCluster('web', ['css', 'html'])
      expect(manager.assignPeer('p1', ['ml', 'nn', 'gpu'])).to.deep.equal(['ai', 'ai2'])
      expect(manager.assignPeer('p2', ['rust', 'wasm'])).to.deep.equal(['tags:rust,wasm'])
      expect(manager.getCluster('tags:rust,wasm')?.members.has('p2')).to.equal(true)
      expect(manager.assignPeer('p3', [])).to.deep.equal([])
      expect(events).to.include('cluster:created tags:rust,wasm')
      expect(manager.size).to.equal(4)
    })

    it('does not create clusters when autoCreate is off', () => {
      const { manager } = setup({ autoCreate: false })
      expect(manager.assignPeer('p', ['a'])).to.deep.equal([])
      expect(manager.size).to.equal(0)
    })

    it('moves a peer whose tags changed out of assigned clusters, keeping manual memberships', () => {
      const { manager, events } = setup()
      manager.addCluster('ai', ['ml', 'nn'])
      manager.addCluster('manual', ['zzz'])
      manager.addPeerToCluster('manual', 'p')
      manager.assignPeer('p', ['ml', 'nn'])
      events.length = 0
      expect(manager.assignPeer('p', ['css', 'html'])).to.deep.equal(['tags:css,html'])
      expect(manager.clustersOf('p').sort()).to.deep.equal(['manual', 'tags:css,html'])
      expect(events).to.deep.equal([
        'cluster:created tags:css,html',
        'cluster:peer-removed ai p reassigned',
        'cluster:peer-added tags:css,html p',
      ])
    })
  })

  describe('cleanup (fake clock)', () => {
    it('removes a member exactly inactiveAfter after it was last seen, at the next tick', () => {
      const { clock, manager, events } = setup({ inactiveAfter: 60_000, cleanupInterval: 10_000 })
      manager.addCluster('c', ['x'])
      manager.addPeerToCluster('c', 'quiet')
      manager.addPeerToCluster('c', 'chatty')
      manager.start()
      for (let i = 0; i < 5; i++) {
        clock.advance(10_000)
        manager.touchPeer('chatty')
      }
      clock.advance(9_999) // 59 999 ms after quiet was last seen: kept
      expect(manager.getCluster('c')?.members.has('quiet')).to.equal(true)
      clock.advance(1) // 60 000 ms: tick, removed
      expect(manager.getCluster('c')?.members.has('quiet')).to.equal(false)
      expect(manager.getCluster('c')?.members.has('chatty')).to.equal(true)
      expect(events).to.include('cluster:peer-removed c quiet inactive')
      manager.stop()
      expect(clock.pending).to.equal(0)
    })

    it('removes empty clusters once they stayed empty for inactiveAfter, unless disabled', () => {
      const { clock, manager, events } = setup({ inactiveAfter: 300_000 })
      expect(manager.cleanupInterval).to.equal(60_000)
      manager.addCluster('lonely', ['x'])
      manager.addCluster('busy', ['y'])
      manager.addPeerToCluster('busy', 'p')
      manager.start()
      clock.advance(240_000)
      expect(manager.size).to.equal(2)
      manager.touchPeer('p')
      clock.advance(60_000) // lonely has been empty 300 s: removed; busy's member was seen 60 s ago
      expect(manager.getCluster('lonely')).to.equal(undefined)
      expect(events).to.include('cluster:removed lonely empty')
      clock.advance(300_000) // p silent for 360 s: removed at t+300 s; busy then empty since then
      expect(manager.getCluster('busy')?.members.size).to.equal(0)
      clock.advance(300_000)
      expect(manager.size).to.equal(0)
      manager.stop()

      const keep = setup({ inactiveAfter: 1000, removeEmptyClusters: false })
      keep.manager.addCluster('c', ['x'])
      keep.clock.advance(10_000)
      expect(keep.manager.cleanup()).to.deep.equal({ peersRemoved: 0, clustersRemoved: 0 })
      expect(keep.manager.size).to.equal(1)
    })

    it('recordFailure is not a sign of life; stop() ends the ticks', () => {
      const { clock, manager } = setup({ inactiveAfter: 1000, cleanupInterval: 1000 })
      manager.addCluster('c', ['x'])
      manager.addPeerToCluster('c', 'p')
      manager.start()
      manager.start() // idempotent
      clock.advance(500)
      manager.recordFailure('p')
      manager.stop()
      clock.advance(10_000)
      expect(manager.getCluster('c')?.members.get('p')?.metrics.failures).to.equal(1)
      expect(manager.cleanup().peersRemoved).to.equal(1)
    })
  })

  describe('bestPeers', () => {
    it('ranks direct > hole-punched > relayed > unknown, then RTT, uptime, failures, id', () => {
      const { clock, manager } = setup()
      const now = clock.now()
      manager.addCluster('c', ['x'])
      manager.addPeerToCluster('c', 'relayed-fast', { method: 'relayed', rttMs: 1, failures: 0 })
      manager.addPeerToCluster('c', 'punched', { method: 'hole-punched', rttMs: 50 })
      manager.addPeerToCluster('c', 'direct-slow', { method: 'direct', rttMs: 80 })
      manager.addPeerToCluster('c', 'direct-fast', { method: 'direct', rttMs: 20 })
      manager.addPeerToCluster('c', 'direct-fast-old', {
        method: 'direct',
        rttMs: 20,
        connectedSince: now - 1000,
      })
      manager.addPeerToCluster('c', 'direct-fast-new', {
        method: 'direct',
        rttMs: 20,
        connectedSince: now - 10,
      })
      manager.addPeerToCluster('c', 'unknown')
      manager.addPeerToCluster('c', 'direct-norrt', { method: 'direct' })
      expect(manager.bestPeers('c', 100).map((m) => m.peerId)).to.deep.equal([
        'direct-fast-old',
        'direct-fast-new',
        'direct-fast',
        'direct-slow',
        'direct-norrt',
        'punched',
        'relayed-fast',
        'unknown',
      ])
      expect(manager.bestPeers('c', 2).map((m) => m.peerId)).to.deep.equal([
        'direct-fast-old',
        'direct-fast-new',
      ])
      expect(manager.bestPeers('c', 0)).to.deep.equal([])
      expect(manager.bestPeers('missing', 3)).to.deep.equal([])
    })

    it('fewer failures win among otherwise equal peers; disconnect loses uptime', () => {
      const { manager } = setup()
      manager.addCluster('c', ['x'])
      manager.addPeerToCluster('c', 'a', { method: 'direct', rttMs: 10, connectedSince: 5 })
      manager.addPeerToCluster('c', 'b', { method: 'direct', rttMs: 10, connectedSince: 5 })
      manager.recordFailure('a')
      expect(manager.bestPeers('c', 2).map((m) => m.peerId)).to.deep.equal(['b', 'a'])
      manager.peerDisconnected('b')
      expect(manager.bestPeers('c', 2).map((m) => m.peerId)).to.deep.equal(['a', 'b'])
      const [a, b] = manager.bestPeers('c', 2)
      expect(compareMembers(a, b)).to.be.lessThan(0)
    })
  })

  it('validates its options', () => {
    expect(() => new ClusterManager({ threshold: 0 }))
      .to.throw(MeshError)
      .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
    expect(() => new ClusterManager({ threshold: 1.5 }))
      .to.throw(MeshError)
      .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
    expect(() => new ClusterManager({ inactiveAfter: 0 }))
      .to.throw(MeshError)
      .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
  })
})

describe('clustering: connection method', () => {
  const conn = (addr: string, limited = false) =>
    ({
      id: 'c',
      direction: 'outbound',
      remotePeer: { toString: () => 'B' },
      remoteAddr: { toString: () => addr },
      limits: limited ? { bytes: 1n } : undefined,
    }) as never

  it("judges as the tools do (the shared connectionMethod): limits or a circuit, WebRTC, then what 'connection-methods' providers say", async () => {
    const { methodOf } = await import('../plugins/jaccard-clusters/service.js')
    const relayed = conn('/ip4/198.51.100.10/tcp/4001/p2p/R/p2p-circuit/p2p/B', true)
    expect(methodOf(relayed)).to.equal('relayed')
    const webrtc = conn('/ip4/198.51.100.10/tcp/4001/p2p/R/p2p-circuit/webrtc/p2p/B')
    expect(methodOf(webrtc)).to.equal('hole-punched')
    const tcp = conn('/ip4/198.51.100.7/tcp/4001/p2p/B')
    expect(methodOf(tcp)).to.equal('direct')
    // a direct connection that holePunch() made (an upgrade of a relayed one) is hole-punched
    expect(methodOf(tcp, [{ methodOf: (p) => (p === 'B' ? 'hole-punched' : undefined) }])).to.equal(
      'hole-punched',
    )
    expect(methodOf(tcp, [{ methodOf: () => undefined }])).to.equal('direct')
  })
})
