/**
 * gossip(): 20 nodes on loopback in one process, connected as a ring with diameters (each node has 3
 * neighbours, every other member is 2 to 5 hops away; a connection gater keeps it that sparse). Every
 * node publishes on `lobby` (all 20 are members) twice, after one warm-up message; each message must
 * reach all 19 other members within 1 s, also the ones with no connection to the publisher. A second topic, `quiet`, has 10 members:
 * its messages reach them, and nobody else.
 *
 * The delivery latencies (publish call to the receiver's handler, one clock: one process) are printed
 * for the closing note.
 */
import { expect } from 'chai'
import { directlyConnected, GossipMesh, type GossipNode } from './fixtures/gossip-mesh.js'
import { tempDir, waitFor } from './helpers.js'

const N = 20
const ROUNDS = 2
const BOUND_MS = 1000
const QUIET = 10

const pct = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN

describe('gossip: 20 nodes on loopback, sparse (ring + diameters)', function () {
  this.timeout(180_000)
  let dir: string
  let cleanup: () => Promise<void>
  let mesh: GossipMesh
  const nodes: GossipNode[] = []
  const topicsOf = (n: GossipNode) => (nodes.indexOf(n) < QUIET ? ['lobby', 'quiet'] : ['lobby'])

  before(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-gossip-mesh-'))
    mesh = new GossipMesh(() => dir)
    const t0 = Date.now()
    for (let i = 0; i < N; i++)
      nodes.push(await mesh.start(`n${i}`, i < QUIET ? ['lobby', 'quiet'] : ['lobby']))
    const links: Array<[number, number]> = []
    for (let i = 0; i < N; i++) links.push([i, (i + 1) % N])
    for (let i = 0; i < N / 2; i++) links.push([i, i + N / 2])
    await Promise.all(links.map(([a, b]) => mesh.link(nodes[a], nodes[b])))
    await mesh.settled(topicsOf)
    console.log(`      ${N} nodes started, linked and meshed in ${Date.now() - t0} ms`)
    // the nodes' startup work (kad-dht's first self-lookups, identify) passes before anything is measured
    await new Promise((r) => setTimeout(r, 2000))
  })

  after(async () => {
    await mesh?.closeAll()
    await cleanup?.()
  })

  it('each message reaches every member of its topic within 1 s, also members not connected to the publisher', async () => {
    const latencies: number[] = []
    let farDeliveries = 0
    let warmUp = 0
    // round -1: one message, warming up the code paths (JIT) of the one process all 20 nodes share; it
    // is held to the same bound but left out of the figures
    for (let round = -1; round < ROUNDS; round++) {
      for (const [i, publisher] of (round < 0 ? nodes.slice(0, 1) : nodes).entries()) {
        const text = `hello ${round}-${i}`
        const others = nodes.filter((n) => n !== publisher)
        const far = others.filter((n) => !directlyConnected(publisher, n))
        expect(far.length, `node ${i} has members it is not connected to`).to.be.at.least(N - 1 - 3)
        const started = performance.now()
        const result = await publisher.gossip.publish('lobby', text)
        expect(result.recipients.length, `node ${i} sent to its neighbours`).to.be.within(1, 3)
        const arrival = (n: GossipNode) => n.received.find((m) => m.text === text)
        await waitFor(() => others.every((n) => arrival(n) !== undefined), {
          timeoutMs: BOUND_MS * 3,
          intervalMs: 5,
          what: `${text} at every member`,
        }).catch(() => {
          const missing = others.filter((n) => !arrival(n)).map((n) => `n${nodes.indexOf(n)}`)
          throw new Error(`${text} did not reach ${missing.join(', ')}`)
        })
        for (const n of others) {
          const m = arrival(n)!
          expect(m.atMs - started, `${text} at n${nodes.indexOf(n)}`).to.be.below(BOUND_MS)
          if (round < 0) warmUp = Math.max(warmUp, m.atMs - started)
          else latencies.push(m.atMs - started)
          expect(m.from).to.equal(publisher.peerId)
          expect(m.id).to.equal(result.id)
          if (far.includes(n) && round >= 0) {
            expect(m.via, 'a far member got it from a neighbour').not.to.equal(publisher.peerId)
            farDeliveries++
          }
        }
      }
    }
    const sorted = [...latencies].sort((a, b) => a - b)
    const [p50, p99, max] = [pct(sorted, 0.5), pct(sorted, 0.99), sorted.at(-1) ?? Number.NaN]
    console.log(
      `      ${N * ROUNDS} messages, ${latencies.length} deliveries (${farDeliveries} to members not connected to the publisher): latency p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms (warm-up message: max ${warmUp.toFixed(1)} ms)`,
    )
    expect(latencies).to.have.length(N * ROUNDS * (N - 1))
    expect(farDeliveries).to.be.greaterThan(0)
    expect(max, 'every delivery within 1 s').to.be.below(BOUND_MS)
    // each message was handed to each member's handler once
    for (const n of nodes) expect(new Set(n.received.map((m) => m.id)).size).to.equal(n.received.length)
  })

  it("a topic's messages reach its members, and nobody else", async () => {
    const members = nodes.slice(0, QUIET)
    const publisher = members[0]
    const text = 'only for the quiet ones'
    await publisher.gossip.publish('quiet', text)
    const others = members.slice(1)
    await waitFor(() => others.every((n) => n.received.some((m) => m.topic === 'quiet' && m.text === text)), {
      timeoutMs: BOUND_MS * 3,
      what: 'the quiet message at every quiet member',
    })
    // the far end of the quiet members is 5+ hops from the publisher: a leak would have arrived by now
    await new Promise((r) => setTimeout(r, 300))
    for (const n of nodes.slice(QUIET)) expect(n.received.some((m) => m.text === text)).to.equal(false)
    const stats = nodes.at(-1)!.gossip.stats()
    expect(stats.topics.map((t) => t.topic)).to.deep.equal(['lobby'])
    expect(stats.dropped.unknownTopic, 'non-members were never sent it').to.equal(0)
  })
})
