import { peerIdFromString } from '@libp2p/peer-id'
/**
 * 20 Meshkit nodes with jaccardClusters on loopback, every node connected to every other (each dials the
 * nodes started before it): 4 groups of 5 with overlapping tag sets (Jaccard 9/11 inside a group, 1/19
 * across) form exactly the 4 expected clusters on every node, and a node that goes silent is cleaned up
 * `inactiveAfter` after it left.
 */
import { expect } from 'chai'
import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { type ClusteringService, jaccardClusters } from '../plugins/jaccard-clusters/index.js'
import { eventsOf, LoopbackNodes, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

const GROUPS = 4
const PER_GROUP = 5
const INACTIVE_MS = 2_000

/** Group g: 8 group tags, a tag every node has, and one of the node's own. */
const tagsOf = (g: number, i: number) => [
  ...Array.from({ length: 8 }, (_, t) => `g${g}-t${t}`),
  'mesh',
  `node-${g}-${i}`,
]

describe('clustering: 20-node loopback mesh', function () {
  this.timeout(90_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const all: Array<{ n: TestNode; group: number }> = []

  before(async () => {
    ;({ dir, cleanup } = await tempDir())
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
    for (let g = 0; g < GROUPS; g++) {
      for (let i = 0; i < PER_GROUP; i++) {
        const n = await nodes.start(`n${g}-${i}`, {
          dial: all.map((x) => x.n.address),
          plugins: [
            jaccardClusters({
              tags: tagsOf(g, i),
              inactiveAfter: `${INACTIVE_MS}ms`,
              cleanupInterval: '500ms',
              pingInterval: '2s',
              maintainInterval: '1s',
            }),
          ],
        })
        all.push({ n, group: g })
      }
    }
  })
  after(async () => {
    await nodes?.closeAll()
    await cleanup?.()
  })

  const clustering = (n: TestNode) => n.node.api<ClusteringService>('clustering')
  /** Members of the clusters `n` belongs to. */
  const ownMembers = (n: TestNode) => {
    const c = clustering(n)
    return new Set(c.ownClusters().flatMap((id) => [...(c.getCluster(id)?.members.keys() ?? [])]))
  }
  const groupPeers = (g: number, except?: string) =>
    all.filter((x) => x.group === g && x.n.peerId !== except).map((x) => x.n.peerId)

  it('forms one cluster per group, with exactly that group on every node', async () => {
    await waitFor(
      () =>
        all.every(
          ({ n }) =>
            clustering(n).clusters().length === GROUPS &&
            clustering(n)
              .clusters()
              .every((c) => c.members.size >= PER_GROUP - 1),
        ),
      {
        timeoutMs: 40_000,
        intervalMs: 200,
        what: 'every node sees 4 full clusters',
      },
    ).catch((err) => {
      // what each node had, to tell lost connections from lost tag exchanges
      for (const { n } of all)
        console.log(
          n.peerId.slice(-6),
          'conns',
          n.node.libp2p.getPeers().length,
          'clusters',
          clustering(n)
            .clusters()
            .map((c) => c.members.size)
            .join(','),
          'dialfail',
          eventsOf(n, 'dial:failed').length,
          'removed',
          eventsOf(n, 'cluster:peer-removed')
            .map((e) => e.reason)
            .join(','),
          'perr',
          eventsOf(n, 'clustering:protocol-error')
            .map((e) => e.error)
            .slice(0, 2)
            .join(' | '),
          n.logs.slice(0, 3).join(' | '),
        )
      throw err
    })
    for (const { n, group } of all) {
      const c = clustering(n)
      expect(c.ownClusters(), `${n.peerId}: one own cluster`).to.have.length(1)
      expect([...ownMembers(n)].sort(), `${n.peerId}: own cluster = its group`).to.deep.equal(
        groupPeers(group, n.peerId).sort(),
      )
      // the other groups' clusters hold exactly those groups
      for (const cluster of c.clusters()) {
        const ids = [...cluster.members.keys()]
        const g = all.find((x) => x.n.peerId === ids[0])!.group
        expect(ids.sort()).to.deep.equal(groupPeers(g, n.peerId).sort())
      }
    }
    // the 3 best of the own group are protected on every node
    await waitFor(() => all.every(({ n }) => clustering(n).protectedPeers().length === 3), {
      timeoutMs: 10_000,
      what: '3 protected peers per node',
    })
    for (const { n, group } of all)
      expect(groupPeers(group)).to.include.members(clustering(n).protectedPeers())
    // the rest of the own group carries a lower tag value: libp2p prunes the lowest values first
    const { n: first, group: firstGroup } = all[0]
    const values = await Promise.all(
      groupPeers(firstGroup, first.peerId).map(async (id) => {
        const peer = await first.node.libp2p.peerStore.get(peerIdFromString(id))
        return peer.tags.get('meshkit-cluster')?.value ?? 0
      }),
    )
    expect(values.filter((v) => v === 100)).to.have.length(3)
    expect(values.filter((v) => v > 0 && v < 100)).to.have.length(1)
  })

  it('removes a node that went silent after inactiveAfter, everywhere', async () => {
    const gone = all.find((x) => x.group === 0)!
    const rest = all.filter((x) => x !== gone)
    const stoppedAt = Date.now()
    await gone.n.close()
    await waitFor(() => rest.every(({ n }) => clustering(n).clustersOf(gone.n.peerId).length === 0), {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: 'the silent node removed everywhere',
    })
    for (const { n, group } of rest) {
      const removed = eventsOf(n, 'cluster:peer-removed').filter((e) => e.peerId === gone.n.peerId)
      expect(
        removed.map((e) => e.reason),
        n.peerId,
      ).to.deep.equal(['inactive'])
      const after = Number(removed[0].at ?? 0) - stoppedAt
      // last seen about one cleanup tick (500 ms, plus timer lag) before it stopped; removed within a tick of the limit
      expect(after, 'ms from stop to removal').to.be.within(INACTIVE_MS - 1_000, INACTIVE_MS + 4_000)
      if (group === 0) expect(ownMembers(n).size).to.equal(PER_GROUP - 2)
    }
    // everyone else is still there
    for (const { n, group } of rest)
      expect([...ownMembers(n)].sort()).to.deep.equal(
        groupPeers(group, n.peerId)
          .filter((p) => p !== gone.n.peerId)
          .sort(),
      )
  })
})
