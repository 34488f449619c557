/**
 * A small topic (fewer members than connectionsPerTopic) is short for good. Its members used to query
 * the DHT for it on every backoff step (up to lookupMax) forever: every query reaches the nodes near the
 * topic key and brings ~20 peer records per answer into each asker's peer store and routing table. After
 * a third of a 15-process mesh was killed, the survivors spent 16 % of a core each for 10 s on it, and
 * the replacements' start waited for the CPU. Now a query that found nobody new is not repeated while the
 * topic has peers (until refreshInterval); a member with no topic peer keeps querying on the backoff.
 */
import type { Libp2p } from '@libp2p/interface'
import { expect } from 'chai'
import { type TopicNode, TopicTestMesh } from './fixtures/topics.js'

const TOPIC = 'small'
/** DHT queries for anything (findProviders calls) on `libp2p` from now on. */
function countQueries(libp2p: Libp2p): { count: number } {
  const dht = (libp2p.services as { dht: { findProviders: (...args: unknown[]) => unknown } }).dht
  const counter = { count: 0 }
  const original = dht.findProviders.bind(dht)
  dht.findProviders = (...args: unknown[]) => {
    counter.count++
    return original(...args)
  }
  return counter
}

describe('kad-topics: the DHT lookups of a small topic', function () {
  this.timeout(60_000)
  let mesh: TopicTestMesh

  before(async () => {
    mesh = await TopicTestMesh.create('meshkit-topics-small-')
  })
  after(async () => {
    await mesh?.stop()
  })

  it('stop once a query finds nobody new while the topic has peers, and go on for a member alone', async () => {
    await mesh.startBootstrap(1)
    // 3 members who want 5 peers: short for good; quick lookups (the old code queried every 2 s: the
    // exchange poll's quick ceiling)
    const kad = { connectionsPerTopic: 5, lookupInitial: '50ms', lookupMax: '400ms' } as const
    const members: TopicNode[] = await Promise.all(
      [0, 1, 2].map((i) => mesh.start({ topics: [TOPIC], kad, label: `member ${i}` })),
    )
    await Promise.all(
      members.map((m) =>
        m.waitForEvent('topic:peer', () => (m.everPeers.get(TOPIC)?.size ?? 0) >= 2, {
          timeoutMs: 30_000,
          what: 'both other members',
        }),
      ),
    )
    // past the first lookups, which find the members
    await new Promise((r) => setTimeout(r, 1500))
    const counters = members.map((m) => countQueries(m.libp2p))
    await new Promise((r) => setTimeout(r, 6000))
    const quiet = counters.map((c) => c.count)
    for (const m of members) expect(m.api.peers(TOPIC)).to.have.length(2)
    // at most the one fruitless query each (the old schedule: 3 each in 6 s)
    for (const n of quiet) expect(n, `queries per member in 6 s: ${quiet}`).to.be.at.most(1)

    // the other two leave the mesh: the last member has no topic peer and searches again
    const [alone, ...gone] = members
    await Promise.all(gone.map((m) => m.mesh.close()))
    await alone.waitForEvent('topic:peer:lost', () => alone.api.peers(TOPIC).length === 0, {
      timeoutMs: 15_000,
      what: 'losing both topic peers',
    })
    const before = counters[0].count
    await new Promise((r) => setTimeout(r, 3000))
    expect(counters[0].count - before, 'queries of a member alone in 3 s').to.be.at.least(2)
  })
})
