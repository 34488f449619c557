/**
 * The kad-topics integration test: 30 Meshkit nodes (+ 2 topic-less bootstrap nodes every node dials) on
 * loopback, in 3 overlapping topics. Every node must find every member of each of its topics with
 * findPeersForTopic(); then one node leaves a topic: its peers there see it go ('left'), it stops
 * announcing the topic, and the member exchange stops handing it out.
 *
 * Timings are printed (console.log) for the closing note.
 */

import { noise as noiseEncrypter } from '@chainsafe/libp2p-noise'
import { yamux as yamuxMuxer } from '@chainsafe/libp2p-yamux'
import { tcp as tcpTransport } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import { createLibp2p, type Libp2p } from 'libp2p'
import { collectPeers, rawExchange, type TopicNode, TopicTestMesh } from './fixtures/topics.js'
import { waitFor } from './helpers.js'

const N = 30
const BOOTSTRAP = 2
const TOPICS = ['alpha', 'beta', 'gamma'] as const
type Topic = (typeof TOPICS)[number]
/** ~3x the rendezvous time observed on a loaded 2-core machine (see the console output). */
const RENDEZVOUS_BOUND_MS = 90_000

/** Which topics node i joins: alpha if i%3 != 2, beta if i even, gamma if i%5 < 2 (or if in none). */
function topicsOf(i: number): Topic[] {
  const t: Topic[] = []
  if (i % 3 !== 2) t.push('alpha')
  if (i % 2 === 0) t.push('beta')
  if (i % 5 < 2) t.push('gamma')
  return t.length > 0 ? t : ['gamma']
}

const ms = (n: number) => `${(n / 1000).toFixed(1)} s`
const stats = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
  return `median ${ms(at(0.5))}, p90 ${ms(at(0.9))}, max ${ms(sorted.at(-1) ?? Number.NaN)}`
}

describe('kad-topics: a 30-node mesh on loopback', function () {
  this.timeout(300_000)
  let mesh: TopicTestMesh
  let nodes: TopicNode[] = []
  const members = new Map<Topic, Set<string>>(TOPICS.map((t) => [t, new Set<string>()]))
  let probe: Libp2p | undefined

  before(async () => {
    mesh = await TopicTestMesh.create('meshkit-topics-mesh-')
  })
  after(async () => {
    if (probe) await Promise.resolve(probe.stop()).catch(() => {})
    await mesh?.stop()
  })

  it('every node finds every peer of each of its topics (3 overlapping topics)', async () => {
    const perNode = Array.from({ length: N }, (_, i) => topicsOf(i))
    const counts = TOPICS.map((t) => perNode.filter((ts) => ts.includes(t)).length)
    const byCount = [1, 2, 3].map((k) => perNode.filter((ts) => ts.length === k).length)
    expect(Math.min(...counts)).to.be.at.least(8, 'each topic has >= 8 members')
    expect(
      byCount.every((c) => c > 0),
      'nodes in 1, 2 and 3 topics',
    ).to.equal(true)

    const bootstrapStart = Date.now()
    await mesh.startBootstrap(BOOTSTRAP, { patient: true })
    const t0 = Date.now()
    nodes = await Promise.all(
      perNode.map((topics, i) =>
        mesh.start({ topics, patient: true, label: `node ${i} (${topics.join(',')})` }),
      ),
    )
    const startedAt = Date.now()
    perNode.forEach((topics, i) => {
      for (const t of topics) members.get(t)?.add(nodes[i].peerId)
    })

    // each (node, topic) pair is done once findPeersForTopic() has yielded every other member
    const pending = new Map<string, { node: TopicNode; topic: Topic; expected: Set<string> }>()
    perNode.forEach((topics, i) => {
      for (const topic of topics) {
        const expected = new Set([...(members.get(topic) ?? [])].filter((id) => id !== nodes[i].peerId))
        pending.set(`${i}:${topic}`, { node: nodes[i], topic, expected })
      }
    })
    const doneAt = new Map<string, number>()
    const missing = new Map<string, string>()
    const deadline = t0 + RENDEZVOUS_BOUND_MS
    let finds = 0
    // a node whose one-shot bootstrap dials timed out (CPU-starved) dials them again
    const redialled = new Set<string>()
    let rendezvous = true
    const watchdog = (async () => {
      while (rendezvous) {
        await new Promise((r) => setTimeout(r, 1_000))
        if (rendezvous) for (const n of await mesh.redialIsolated()) redialled.add(n.label)
      }
    })()
    // every pair polls findPeersForTopic() once a second: the members the node knows come first
    // (synchronously), then its DHT lookup, cut short here (the node runs its own lookups) so the
    // polling does not load the mesh it measures
    await Promise.all(
      [...pending].map(async ([key, { node, topic, expected }]) => {
        while (Date.now() < deadline) {
          finds++
          const found = await collectPeers((signal) => node.api.findPeersForTopic(topic, { signal }), {
            timeoutMs: 200,
            stopWhen: (ids) => [...expected].every((id) => ids.has(id)),
          })
          const lacking = [...expected].filter((id) => !found.has(id))
          missing.set(key, lacking.map((id) => nodes.find((n) => n.peerId === id)?.label ?? id).join('; '))
          if (lacking.length === 0) {
            doneAt.set(key, Date.now())
            pending.delete(key)
            return
          }
          await new Promise((r) => setTimeout(r, 1_000))
        }
      }),
    )
    const allFoundAt = Date.now()
    rendezvous = false
    await watchdog
    const dialFailures = nodes.filter((n) => n.events('dial:failed').length > 0).length
    // honest nodes never penalize each other into a ban (budgets fit honest traffic)
    const bans = mesh.nodes.flatMap((n) =>
      n.events('peer:banned').map((e) => `${n.label}: ${e.peerId} ${e.reason}`),
    )
    if (pending.size > 0) {
      const worst = [...pending.keys()].map(
        (k) => `${pending.get(k)?.node.label} ${k}: missing ${missing.get(k)}`,
      )
      const state = nodes.map(
        (n, i) =>
          `${n.label}: ${n.libp2p.getConnections().length} connections, dial:failed ${n.events('dial:failed').length}, ${perNode[i].map((t) => `${t} ${n.api.peers(t).length} peers`).join(', ')}${redialled.has(n.label) ? `, re-dialled: ${n.redialErrors.at(-1) ?? 'ok'} (first dial: ${n.events('dial:failed')[0]?.error})` : ''}, protocol errors ${n.events('topic:protocol-error').length} (${[...new Set(n.events('topic:protocol-error').map((e) => String(e.error).slice(0, 60)))].slice(0, 3).join('; ')}), penalties given ${Math.round(mesh.nodes.reduce((sum, o) => sum + n.mesh.node.reputation.penalty(o.peerId), 0))}, taken ${Math.round(mesh.nodes.reduce((sum, o) => sum + o.mesh.node.reputation.penalty(n.peerId), 0))}`,
      )
      throw new Error(
        `after ${ms(allFoundAt - t0)} ${pending.size} (node, topic) pairs still lack members:\n  ${worst.slice(0, 10).join('\n  ')}\nnodes:\n  ${state.join('\n  ')}\nbans:\n  ${bans.slice(0, 10).join('\n  ')}`,
      )
    }
    expect(bans, 'bans among honest nodes').to.deep.equal([])

    // timings for the closing note
    const firstPeer = nodes.map((n) => (n.events('topic:peer')[0]?.at ?? Number.NaN) - t0)
    console.log(
      `      bootstrap (${BOOTSTRAP}) started in ${ms(t0 - bootstrapStart)}; ${N} nodes started in ${ms(startedAt - t0)}`,
    )
    console.log(
      `      ${dialFailures} nodes had a bootstrap dial fail (timeout under load); ${redialled.size} had none left and re-dialled`,
    )
    console.log(`      first topic:peer per node: ${stats(firstPeer)} (from t0)`)
    for (const topic of TOPICS) {
      const times = [...doneAt].filter(([k]) => k.endsWith(`:${topic}`)).map(([, at]) => at - t0)
      const connected = nodes
        .filter((_, i) => perNode[i].includes(topic))
        .map((n) => n.api.peers(topic).length)
      console.log(
        `      ${topic} (${members.get(topic)?.size} members): every peer found by findPeersForTopic: ${stats(times)}; connected topic peers per node ${Math.min(...connected)}..${Math.max(...connected)}`,
      )
    }
    console.log(
      `      all ${doneAt.size} (node, topic) pairs complete ${ms(allFoundAt - t0)} after t0 (${finds} finds, bound ${ms(RENDEZVOUS_BOUND_MS)})`,
    )

    // every member announced its topics on the DHT, and a non-member finds them all there
    await waitFor(
      () =>
        nodes.every((n, i) =>
          perNode[i].every((t) => n.events('topic:announced', (e) => e.topic === t).length > 0),
        ),
      {
        timeoutMs: 90_000, // the announcements queue behind the rendezvous' DHT traffic
        intervalMs: 250,
        what: 'every topic:announced',
      },
    )
    const lastAnnounced = Math.max(...nodes.flatMap((n) => n.events('topic:announced').map((e) => e.at)))
    console.log(`      last topic:announced ${ms(lastAnnounced - t0)} after t0`)
    const bootstrap = mesh.nodes.find((n) => n.label === 'bootstrap 0')!
    for (const topic of TOPICS) {
      const expected = members.get(topic)!
      const cid = await bootstrap.api.topicKey(topic)
      const before = Date.now()
      const found = await collectPeers(
        (signal) => bootstrap.libp2p.contentRouting.findProviders(cid, { signal }),
        { timeoutMs: 30_000, stopWhen: (ids) => [...expected].every((id) => ids.has(id)) },
      )
      const lacking = [...expected].filter((id) => !found.has(id))
      console.log(
        `      DHT findProviders(${topic}) from a bootstrap node: ${found.size}/${expected.size} members in ${ms(Date.now() - before)}`,
      )
      // informational beyond "some": provider records go to the 20 peers closest to the key *as the
      // provider saw them* while routing tables still filled, so some sit off the final closest set
      // until re-provided; the member exchange, not this, is what completes the rendezvous
      expect(
        found.size,
        `DHT providers of ${topic} seen from a bootstrap node (lacking ${lacking})`,
      ).to.be.greaterThan(0)
    }
  })

  it('leaving a topic stops its announcements and its peers see it go', async () => {
    expect(nodes, 'the mesh of the previous test').to.have.length(N)
    const leaver = nodes[0] // in alpha, beta and gamma
    const id = leaver.peerId
    expect(leaver.api.topics()).to.have.members(['alpha', 'beta', 'gamma'])
    const ownPeers = leaver.api.peers('alpha')
    const holders = nodes.filter((n) => n !== leaver && n.api.peers('alpha').includes(id))
    const betaHolders = nodes.filter((n) => n !== leaver && n.api.peers('beta').includes(id))
    expect(ownPeers.length + holders.length, 'the leaver has topic-alpha peers').to.be.greaterThan(0)

    const tLeave = Date.now()
    await leaver.api.leave('alpha')
    expect(leaver.api.topics()).to.have.members(['beta', 'gamma'])
    expect(leaver.api.peers('alpha')).to.deep.equal([])
    expect(leaver.events('topic:left', (e) => e.topic === 'alpha')).to.have.length(1)
    // its own alpha peers are lost with reason 'left'
    const ownLost = leaver.events('topic:peer:lost', (e) => e.topic === 'alpha' && e.at >= tLeave)
    expect(ownLost.map((e) => e.peerId)).to.have.members(ownPeers)
    expect(ownLost.every((e) => e.reason === 'left')).to.equal(true)

    // every node that had it as an alpha peer sees it go, with reason 'left' (or 'disconnected' when
    // the connection happened to close first: CPU-starved pings make libp2p drop a connection now and then)
    const seen = await Promise.all(
      holders.map((n) =>
        n.waitForEvent('topic:peer:lost', (e) => e.topic === 'alpha' && e.peerId === id && e.at >= tLeave, {
          timeoutMs: 20_000,
          what: `topic:peer:lost alpha ${id}`,
        }),
      ),
    )
    const left = seen.filter((e) => e.reason === 'left')
    holders.forEach((n, i) => {
      if (seen[i].reason === 'left') return
      expect(seen[i].reason, n.label).to.equal('disconnected')
      expect(
        n.events('peer:disconnect', (e) => e.peerId === id && e.at >= tLeave),
        n.label,
      ).to.have.length.above(0)
    })
    expect(left.length, "holders that saw 'left'").to.be.at.least(Math.ceil(holders.length / 2))
    for (const n of holders) expect(n.api.peers('alpha')).not.to.include(id)
    console.log(
      `      leave: ${left.length}/${holders.length} nodes saw topic:peer:lost (left) within ${ms(Math.max(0, ...left.map((e) => e.at - tLeave)))}; ${holders.length - left.length} lost the connection first`,
    )

    // no announcement of alpha afterwards, and the other topics are untouched
    await new Promise((r) => setTimeout(r, 3_000))
    expect(leaver.events('topic:announced', (e) => e.topic === 'alpha' && e.at >= tLeave)).to.deep.equal([])
    // (a connection may close and be replaced meanwhile: 'disconnected' is not a leave)
    for (const n of betaHolders) {
      const left = n.events(
        'topic:peer:lost',
        (e) => e.peerId === id && e.reason === 'left' && e.topic !== 'alpha',
      )
      expect(left, `${n.label}: the leaver left only alpha`).to.deep.equal([])
    }
    expect(leaver.api.topics()).to.have.members(['beta', 'gamma'])

    // a fresh member exchange with the members it told no longer lists it, asked by a plain libp2p
    // node. (Members it was not connected to were not told: they keep a relayed entry until memberTtl,
    // and its DHT provider records stay until they expire on the nodes holding them.)
    probe = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcpTransport()],
      connectionEncrypters: [noiseEncrypter()],
      streamMuxers: [yamuxMuxer()],
    })
    const alphaKey = (await leaver.api.topicKey('alpha')).toString()
    const listedBy = async (n: TopicNode) => {
      const reply = await rawExchange(probe!, multiaddr(n.addr), { v: 1, joined: [alphaKey], addrs: [] })
      expect(reply.error, `${n.label} answered`).to.equal(undefined)
      expect(reply.json?.joined, `${n.label} is in alpha`).to.include(alphaKey)
      const members = reply.json?.members as Record<string, Array<{ id: string }>> | undefined
      return (members?.[alphaKey] ?? []).map((m) => m.id)
    }
    const told = holders.filter((_, i) => seen[i].reason === 'left')
    for (const n of told) {
      const listed = await listedBy(n)
      expect(listed.length, `${n.label} lists alpha members`).to.be.greaterThan(0)
      expect(listed, `${n.label} lists the leaver`).not.to.include(id)
    }
    const others = nodes.filter(
      (n, i) => n !== leaver && topicsOf(i).includes('alpha') && !holders.includes(n),
    )
    let stale = 0
    for (const n of others.slice(0, 6)) if ((await listedBy(n)).includes(id)) stale++
    console.log(
      `      after the leave: ${told.length} told members no longer list it; ${stale}/${Math.min(6, others.length)} members it was not connected to still do`,
    )
  })
})
