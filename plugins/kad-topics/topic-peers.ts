import type { PeerId, PeerInfo } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { LruMap } from 'meshkit/plugin'
import type { AddResult, KnownMember } from './member-registry.js'
import { netGroupOf } from './net-group.js'
import type { JoinedTopic, TopicState } from './topic-state.js'

const TOPIC_TAG = 'meshkit-topic'
/** How long after joining a topic, or learning of a member, only "higher" members are dialled (see fill()). */
const DIAL_GRACE_MS = 750
/** A connected member that has not confirmed itself is asked again at most this often (see fill()). */
const ASK_AGAIN_MS = 5_000

/**
 * The members of joined topics and which of them are topic peers: members learned go into the registry
 * and to libp2p's peer discovery; connected members become topic peers (`topic:peer`) spread across
 * networks (`maxPeersPerNetwork`: the others wait, and step in when there is room); known members are
 * dialled until each topic has `connectionsPerTopic` peers.
 */
export class TopicPeers {
  #snapshot?: { peers: Set<string>; groups: Map<string, string | undefined> }
  /** When fill() last asked a connected member to confirm itself (bounded). */
  readonly #asked = new LruMap<string, number>(1024)
  /** When this node first learned of a member of a joined topic (`<key> <id>`, bounded). */
  readonly #learnedAt = new LruMap<string, number>(4096)

  constructor(
    private readonly state: TopicState,
    /** Tells libp2p's peer discovery of a member. */
    private readonly onDiscovered: (peer: PeerInfo) => void,
    /** Asks a connected peer for members (the member exchange). */
    private readonly ask: (peer: PeerId) => void,
  ) {}

  /** Keeps a member of `key` in the registry; a new member of a joined topic is reported to libp2p. */
  learn(key: string, id: string, member: Omit<KnownMember, 'lastSeen'> & { lastSeen?: number }): AddResult {
    const { state } = this
    if (id === state.self) return 'ignored'
    // a connected peer's own word on what it joined beats rumours and (possibly stale) DHT records
    if (member.source !== id && state.remoteJoined.get(id)?.has(key) === false) return 'ignored'
    const before = state.registry.get(key, id)?.addrs.join(' ')
    const result = state.registry.add(key, id, member)
    if (result === 'added' && state.keyToTopic.has(key)) {
      this.#learnedAt.set(`${key} ${id}`, Date.now())
      this.report(id, member.addrs)
    }
    if (result !== 'updated' || before === undefined) return result
    // a member at new addresses (it moved, e.g. reserved on another relay when its relay died): dialled
    // there at the next fill, not after the backoff its old, dead addresses earned
    const now = state.registry.get(key, id)?.addrs ?? []
    if (now.join(' ') !== before) {
      state.dials.moved(id)
      if (state.keyToTopic.has(key)) this.report(id, now)
    }
    return result
  }

  /** Tells libp2p's peer discovery of a member (addresses already in scope). */
  report(id: string, addrs: readonly string[]): void {
    if (addrs.length === 0) return
    try {
      this.onDiscovered({ id: peerIdFromString(id), multiaddrs: addrs.map((a) => multiaddr(a)) })
    } catch {
      // a PeerInfo that cannot be built is skipped
    }
  }

  /**
   * Makes a connected member a topic peer, unless its network has its share of the topic's peers
   * (`maxPeersPerNetwork`) and either a member from another network can be had or the topic is full:
   * then it waits (connected, not a topic peer) until there is room.
   */
  mark(joined: JoinedTopic, peer: string): void {
    if (joined.peers.has(peer)) return
    const { libp2p, settings, events } = this.state
    if (!libp2p.getPeers().some((p) => p.toString() === peer)) return
    const group = this.#groupOfPeer(peer)
    if (group !== undefined && this.#countIn(joined.peers, group) >= this.#perNetwork()) {
      if (joined.peers.size >= settings.connectionsPerTopic || this.#hasAlternative(joined, group, peer)) {
        joined.waiting.add(peer)
        return
      }
    }
    joined.waiting.delete(peer)
    joined.peers.add(peer)
    events.emit('topic:peer', { topic: joined.topic, peerId: peer })
    void libp2p.peerStore
      .merge(peerIdFromString(peer), { tags: { [TOPIC_TAG]: { value: 50 } } })
      .catch(() => {})
    this.#rebalance(joined)
  }

  /**
   * More topic peers than wanted while a network has more than its share (they were let in when there
   * was nobody else): peers of the most crowded network step back to waiting (`topic:peer:lost`,
   * reason 'rebalanced') until the topic has `connectionsPerTopic` peers or no network is over its share.
   */
  #rebalance(joined: JoinedTopic): void {
    while (joined.peers.size > this.state.settings.connectionsPerTopic) {
      const counts = this.#groupCounts(joined.peers)
      let crowded: string | undefined
      let most = this.#perNetwork()
      for (const [group, n] of counts) {
        if (n > most) {
          most = n
          crowded = group
        }
      }
      if (crowded === undefined) return
      const peer = [...joined.peers].findLast((p) => this.#groupOfPeer(p) === crowded)
      if (!peer) return
      joined.peers.delete(peer)
      joined.waiting.add(peer)
      this.state.events.emit('topic:peer:lost', { topic: joined.topic, peerId: peer, reason: 'rebalanced' })
    }
  }

  /** Waiting members become topic peers while there is room: under-represented networks first. */
  promote(joined: JoinedTopic): void {
    const { connectionsPerTopic } = this.state.settings
    if (joined.waiting.size === 0 || joined.peers.size >= connectionsPerTopic) return
    const counts = this.#groupCounts(joined.peers)
    const waiting = [...joined.waiting].sort(
      (a, b) => (counts.get(this.#groupOfPeer(a) ?? '') ?? 0) - (counts.get(this.#groupOfPeer(b) ?? '') ?? 0),
    )
    for (const peer of waiting) {
      if (joined.peers.size >= this.state.settings.connectionsPerTopic) return
      joined.waiting.delete(peer)
      this.mark(joined, peer)
    }
  }

  /**
   * Topic peers to replace: those over their network's share (`maxPeersPerNetwork`) while members of
   * other networks can be had. O(peers + maxMembers) per crowded network.
   */
  #crowdedExcess(joined: JoinedTopic): number {
    let excess = 0
    for (const [group, n] of this.#groupCounts(joined.peers)) {
      if (n > this.#perNetwork() && this.#hasAlternative(joined, group, '')) excess += n - this.#perNetwork()
    }
    return excess
  }

  /** Whether the topic wants more peers: fewer than `connectionsPerTopic`, or some to replace. */
  short(joined: JoinedTopic): boolean {
    return joined.peers.size < this.state.settings.connectionsPerTopic || this.#crowdedExcess(joined) > 0
  }

  /** A topic peer is no longer one (`topic:peer:lost` with `reason`); a waiting member may step in. */
  lost(joined: JoinedTopic, peer: string, reason: string): void {
    joined.waiting.delete(peer)
    if (!joined.peers.delete(peer)) return
    this.state.events.emit('topic:peer:lost', { topic: joined.topic, peerId: peer, reason })
    joined.wake?.()
    if (this.state.joined.get(joined.topic) === joined) this.promote(joined)
  }

  /** A peer disconnected: it is no topic peer any more, and its topics look for others. */
  gone(peer: string): void {
    this.state.remoteJoined.delete(peer)
    for (const joined of this.state.joined.values()) {
      joined.waiting.delete(peer)
      if (joined.peers.has(peer)) {
        this.lost(joined, peer, 'disconnected')
        this.fill(joined)
      }
    }
  }

  #perNetwork(): number {
    return this.state.settings.maxPeersPerNetwork
  }

  /** The network of the peer's first open connection (a relayed one: the relay's). */
  #groupOfPeer(peer: string): string | undefined {
    return this.#connections().groups.get(peer)
  }

  /** Whether the node has a connection to `peer` (open or closing). */
  #connected(peer: string): boolean {
    return this.#connections().peers.has(peer)
  }

  /**
   * The node's connections by peer id and the network of each peer's first open one, read once per
   * synchronous burst of calls (dropped at the next microtask: connections only change in other tasks).
   * fill(), short() and mark() ask these for every topic peer and every known member; asking libp2p
   * each time (a peer id parsed from its string, then a lookup) made the network-spread checks the
   * largest of kad-topics' costs in a 50-member rendezvous (~0.9 of 14.6 s of CPU).
   */
  #connections(): { peers: Set<string>; groups: Map<string, string | undefined> } {
    if (this.#snapshot) return this.#snapshot
    const peers = new Set<string>()
    const groups = new Map<string, string | undefined>()
    for (const c of this.state.libp2p.getConnections()) {
      const id = c.remotePeer.toString()
      peers.add(id)
      if (c.status === 'open' && !groups.has(id)) groups.set(id, netGroupOf(c.remoteAddr))
    }
    this.#snapshot = { peers, groups }
    queueMicrotask(() => {
      this.#snapshot = undefined
    })
    return this.#snapshot
  }

  #groupCounts(peers: Iterable<string>): Map<string, number> {
    const counts = new Map<string, number>()
    for (const p of peers) {
      const g = this.#groupOfPeer(p)
      if (g !== undefined) counts.set(g, (counts.get(g) ?? 0) + 1)
    }
    return counts
  }

  #countIn(peers: Iterable<string>, group: string): number {
    let n = 0
    for (const p of peers) if (this.#groupOfPeer(p) === group) n++
    return n
  }

  /**
   * Whether the topic can get a peer from a network other than `group` that still has room: a waiting
   * member, or a known member not connected, not backed off, with a usable address there. O(maxMembers).
   */
  #hasAlternative(joined: JoinedTopic, group: string, except: string): boolean {
    const { registry, dials, self } = this.state
    const counts = this.#groupCounts(joined.peers)
    const room = (g: string | undefined) =>
      g !== group && (g === undefined || (counts.get(g) ?? 0) < this.#perNetwork())
    for (const p of joined.waiting) if (p !== except && room(this.#groupOfPeer(p))) return true
    for (const [id, m] of registry.members(joined.key)) {
      if (id === self || id === except || joined.peers.has(id) || dials.backedOff(id)) continue
      if (this.#connected(id)) continue
      if (dials.usable(m.addrs).some((a) => room(netGroupOf(a)))) return true
    }
    return false
  }

  /** fill() for every joined topic. */
  fillAll(): void {
    for (const joined of this.state.joined.values()) this.fill(joined)
  }

  /**
   * Dials known members of a topic until it has `connectionsPerTopic` connected members (and, while
   * some network has more than its share, members of other networks to replace them): at most half
   * of them in flight, members of networks below their share first (a network at its share only to
   * reach `connectionsPerTopic`, when no other member can be dialled), each dial within the DialGuard's
   * budgets and backoffs.
   */
  fill(joined: JoinedTopic): void {
    const { settings, registry, dials, self, signal } = this.state
    if (signal.aborted || joined.abort.signal.aborted) return
    // At most half the target in flight: members dial each other at the same time, and an inbound
    // connection that lands meanwhile fills the topic as well as an outbound one.
    const inFlight = joined.dialing.size
    const cap = Math.ceil(settings.connectionsPerTopic / 2) - inFlight
    const missing = settings.connectionsPerTopic - joined.peers.size - inFlight
    const replace =
      joined.peers.size >= settings.connectionsPerTopic ? this.#crowdedExcess(joined) - inFlight : 0
    let deficit = Math.min(Math.max(missing, replace), cap)
    if (deficit <= 0) return
    const now = Date.now()
    // Two members who learn of each other at once would both dial (and both connections stay until the
    // duplicate is closed): each pair is dialled by the peer with the lower id, unless the grace period
    // after joining and after learning of that member is over (then anyone dials). The grace runs from
    // the later of the two: in a CPU-bound start members learn of each other seconds after joining, and
    // a grace from the join alone was over by then (bench:rendezvous: 2-3 duplicates of a peer's ~11
    // connections at 10 peers). Dialled at once all the same: a member not known to be short (it has its
    // peers and dials nobody), and one whose record was signed well before this node joined (it was
    // there first: it learns of this node later, from this node's registration, and does not dial at
    // the same moment). A node joining a warm mesh used to wait out the grace, up to the next poll
    // (~1 s), when every member it heard of had a lower id.
    const earlier = joined.since - DIAL_GRACE_MS
    const counts = this.#groupCounts(joined.peers)
    const perNetwork = this.#perNetwork()
    const first: Array<{ id: string; addrs: string[]; source: string }> = []
    const later: typeof first = []
    for (const [id, member] of registry.members(joined.key)) {
      const early =
        id > self ||
        (member.short && member.direct) ||
        !member.short ||
        (member.proof !== undefined && member.proof.ts <= earlier)
      if (
        !early &&
        now - Math.max(joined.since, this.#learnedAt.peek(`${joined.key} ${id}`) ?? 0) <= DIAL_GRACE_MS
      )
        continue
      if (id === self || joined.peers.has(id) || this.state.dialing.has(id)) continue
      if (this.#connected(id)) {
        // connected, known as a member, but it has not said so itself (no exchange yet, or one from before
        // it joined): ask it, at most every ASK_AGAIN_MS (a rumour of a member that left costs that much);
        // asking needs no address and no dial, so a backoff from an earlier failed dial (two members
        // dialling each other at once) does not hold it back
        if (settings.memberExchange && !this.state.remoteJoined.get(id)?.has(joined.key))
          this.#askAgain(id, now)
        continue
      }
      if (member.addrs.length === 0 || dials.backedOff(id)) continue
      const addrs = dials.usable(member.addrs)
      if (addrs.length === 0) continue
      const group = netGroupOf(addrs[0])
      const candidate = { id, addrs, source: member.source }
      if (group !== undefined && (counts.get(group) ?? 0) >= perNetwork) later.push(candidate)
      else {
        first.push(candidate)
        if (group !== undefined) counts.set(group, (counts.get(group) ?? 0) + 1)
      }
    }
    let dialled = 0
    const dial = (c: (typeof first)[number]) => {
      if (!dials.take(c.source)) return
      deficit--
      dialled++
      void this.#dial(c.id, c.addrs, joined)
    }
    for (const c of first) if (deficit > 0) dial(c)
    // members of networks at their share: only to reach connectionsPerTopic
    deficit = Math.min(deficit, missing - dialled)
    for (const c of later) if (deficit > 0) dial(c)
    // nobody to dial: members held back by the network share step in
    if (dialled === 0 && inFlight === 0) this.promote(joined)
  }

  /** Asks a connected peer for its claims, unless fill() did so within ASK_AGAIN_MS. */
  #askAgain(id: string, now: number): void {
    const last = this.#asked.get(id)
    if (last !== undefined && now - last < ASK_AGAIN_MS) return
    this.#asked.set(id, now)
    this.ask(peerIdFromString(id))
  }

  async #dial(id: string, addrs: readonly string[], joined: JoinedTopic): Promise<void> {
    const { libp2p, dials, signal } = this.state
    this.state.dialing.add(id)
    joined.dialing.add(id)
    const suffix = `/p2p/${id}`
    const targets = addrs
      .map((a) => (a.endsWith(suffix) ? a : `${a}${suffix}`))
      .flatMap((a) => {
        try {
          return [multiaddr(a)]
        } catch {
          return []
        }
      })
    try {
      const connection = await libp2p.dial(targets, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]),
      })
      dials.succeeded(id, [connection.remoteAddr.toString()])
    } catch (err) {
      if (signal.aborted) return
      dials.failed(id, addrs)
      this.state.logger.debug(`dialling topic member ${id} failed: ${(err as Error).message}`)
    } finally {
      this.state.dialing.delete(id)
      joined.dialing.delete(id)
    }
    // A member we dialled is known as one (from the DHT or a rendezvous point): it counts as a topic
    // peer as soon as the connection is up; the exchange on that connection confirms it, or reports it
    // left (then it is `topic:peer:lost` with reason 'left').
    if (
      libp2p.getConnections(peerIdFromString(id)).length > 0 &&
      this.state.joined.get(joined.topic) === joined
    ) {
      this.mark(joined, id)
    }
    this.fill(joined)
  }
}
