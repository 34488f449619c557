import type { Libp2p, PeerId, PeerInfo } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger, MeshEventBus } from 'meshkit/plugin'
import type { CID } from 'multiformats/cid'
import { DIAL_GUARD_DEFAULTS, DialGuard } from './dial-guard.js'
import { MemberExchange } from './member-exchange.js'
import { MemberRegistry } from './member-registry.js'
import { nextPoll, quickPoll } from './poll-schedule.js'
import { keyDistance, RendezvousPoints } from './rendezvous-points.js'
import { topicKey } from './topic-key.js'
import { TopicPeers } from './topic-peers.js'
import type {
  JoinedTopic,
  KnownTopicMember,
  TopicManagerSettings,
  TopicSecurity,
  TopicState,
} from './topic-state.js'
import { LIMITS } from './wire.js'

export type { TopicManagerSettings, TopicSecurity } from './topic-state.js'

/** Limits of the registry every manager of a node shares. */
export const REGISTRY_LIMITS = { maxKeys: 4096, maxMembers: 64, maxKeysPerPeer: LIMITS.maxJoined }

/** The budget of `/mesh/topics/*` (see docs/discovery.md). */
export const TOPICS_BUDGET = {
  ratePerSecond: 2,
  burst: 20,
  concurrency: 2,
  bytesPerMinute: 2 * 1024 * 1024,
  globalConcurrency: 32,
  globalRatePerSecond: 100,
}

/**
 * Joins and leaves topics: announces them on the DHT, looks members up (DHT provider records and the
 * member exchange with every connected peer, see MemberExchange), keeps up to `connectionsPerTopic`
 * members connected (TopicPeers) and emits `topic:peer` / `topic:peer:lost`.
 *
 * Hostile peers: member records are signed by the members (relayers cannot forge them), addresses are
 * checked against the node's address scope before they are kept, dialled or passed on, dials on other
 * peers' words are bounded (DialGuard), a topic's peers are spread across networks, and every request
 * costs bounded work within the exchange's budget.
 */
export class TopicManager {
  readonly registry: MemberRegistry
  readonly #state: TopicState
  readonly #peers: TopicPeers
  readonly #exchange: MemberExchange
  readonly #points: RendezvousPoints
  #off: Array<() => void> = []
  private readonly settings: TopicManagerSettings

  constructor(
    private readonly libp2p: Libp2p,
    readonly dht: KadDHT,
    settings: TopicManagerSettings,
    private readonly logger: Logger,
    private readonly events: MeshEventBus,
    private readonly signal: AbortSignal,
    onDiscovered: (peer: PeerInfo) => void,
    private readonly security: TopicSecurity,
    registry?: MemberRegistry,
    dials?: DialGuard,
  ) {
    this.settings = { ...settings, lookupBackoff: { ...settings.lookupBackoff } }
    this.#points = new RendezvousPoints(undefined, security.isSeed)
    this.registry =
      registry ??
      new MemberRegistry({
        ...REGISTRY_LIMITS,
        ttl: settings.memberTtl,
        distance: keyDistance(libp2p.peerId),
      })
    if (registry) registry.setTtl(settings.memberTtl)
    this.#state = {
      libp2p,
      settings: this.settings,
      registry: this.registry,
      dials: dials ?? new DialGuard(DIAL_GUARD_DEFAULTS),
      logger,
      events,
      signal,
      self: libp2p.peerId.toString(),
      joined: new Map(),
      keyToTopic: new Map(),
      remoteJoined: new Map(),
      dialing: new Set(),
    }
    this.#peers = new TopicPeers(this.#state, onDiscovered, (peer) => void this.#exchange.exchange(peer))
    this.#exchange = new MemberExchange(this.#state, security, this.#peers)
  }

  /** The dial guard (kept across a manager rebuild with the registry). */
  get dials(): DialGuard {
    return this.#state.dials
  }

  /**
   * Applies new timing and size settings to the running manager (joined topics, loops and the member
   * registry keep going): loops wake up and re-read them, and topics are filled up to a larger
   * `connectionsPerTopic` at once. `namespace` and `memberExchange` cannot change here.
   */
  update(
    settings: Pick<
      TopicManagerSettings,
      | 'connectionsPerTopic'
      | 'queryTimeout'
      | 'lookupBackoff'
      | 'refreshInterval'
      | 'memberTtl'
      | 'maxPeersPerNetwork'
    >,
  ): void {
    this.registry.setTtl(settings.memberTtl)
    this.settings.connectionsPerTopic = settings.connectionsPerTopic
    this.settings.queryTimeout = settings.queryTimeout
    this.settings.lookupBackoff = { ...settings.lookupBackoff }
    this.settings.refreshInterval = settings.refreshInterval
    this.settings.memberTtl = settings.memberTtl
    this.settings.maxPeersPerNetwork = settings.maxPeersPerNetwork
    for (const joined of this.#state.joined.values()) {
      joined.wake?.()
      this.#peers.promote(joined)
      this.#peers.fill(joined)
    }
  }

  async start(): Promise<void> {
    if (this.settings.memberExchange) this.#off.push(await this.#exchange.handle())
    const onDisconnect = (evt: CustomEvent<PeerId>) => this.#peers.gone(evt.detail.toString())
    this.libp2p.addEventListener('peer:disconnect', onDisconnect)
    this.#off.push(() => this.libp2p.removeEventListener('peer:disconnect', onDisconnect))
  }

  async stop(): Promise<void> {
    for (const off of this.#off.splice(0)) off()
    for (const joined of this.#state.joined.values()) {
      joined.abort.abort()
      this.registry.unpin(joined.key)
    }
    this.#state.joined.clear()
    this.#state.keyToTopic.clear()
    await this.#exchange.unhandle()
  }

  topics(): string[] {
    return [...this.#state.joined.keys()]
  }

  /** Connected members of a joined topic. */
  peers(topic: string): string[] {
    return [...(this.#state.joined.get(topic)?.peers ?? [])]
  }

  /** Live members of a joined topic this node knows of, connected or not (see TopicDiscovery). */
  knownMembers(topic: string): KnownTopicMember[] {
    const joined = this.#state.joined.get(topic)
    if (!joined) return []
    const connected = new Set(this.libp2p.getConnections().map((c) => c.remotePeer.toString()))
    const state = (id: string): KnownTopicMember['state'] => {
      if (joined.peers.has(id)) return 'peer'
      if (joined.waiting.has(id)) return 'waiting'
      if (connected.has(id)) return 'connected'
      if (this.#state.dialing.has(id)) return 'dialling'
      if (this.#state.dials.backedOff(id)) return 'backed-off'
      return 'idle'
    }
    return this.registry
      .members(joined.key)
      .map(([id, m]) => ({ peerId: id, state: state(id), direct: m.direct, lastSeen: m.lastSeen }))
  }

  keyOf(topic: string): Promise<CID> {
    return topicKey(this.settings.namespace, topic)
  }

  async join(topic: string): Promise<void> {
    if (this.#state.joined.has(topic)) return
    const cid = await this.keyOf(topic)
    if (this.#state.joined.has(topic) || this.signal.aborted) return
    const joined: JoinedTopic = {
      topic,
      key: cid.toString(),
      cid,
      peers: new Set(),
      waiting: new Set(),
      dialing: new Set(),
      since: Date.now(),
      abort: new AbortController(),
    }
    this.#state.joined.set(topic, joined)
    this.#state.keyToTopic.set(joined.key, topic)
    this.registry.pin(joined.key)
    this.events.emit('topic:joined', { topic, key: joined.key })
    // members learned before joining (e.g. as a rendezvous point) were never reported to libp2p
    for (const [id, member] of this.registry.members(joined.key)) this.#peers.report(id, member.addrs)
    // members first (exchange with everyone connected, DHT lookup), the announcement in the background
    for (const peer of this.libp2p.getPeers()) {
      const id = peer.toString()
      if (this.#state.remoteJoined.get(id)?.has(joined.key)) this.#peers.mark(joined, id)
    }
    if (this.settings.memberExchange)
      for (const peer of this.libp2p.getPeers()) void this.#exchange.exchange(peer)
    this.#peers.fill(joined)
    void this.#lookupLoop(joined)
    void this.#announceLoop(joined)
  }

  async leave(topic: string): Promise<void> {
    const joined = this.#state.joined.get(topic)
    if (!joined) return
    joined.abort.abort()
    this.#state.joined.delete(topic)
    this.#state.keyToTopic.delete(joined.key)
    this.registry.unpin(joined.key)
    await this.dht.cancelReprovide(joined.cid).catch(() => {})
    joined.waiting.clear()
    for (const peer of joined.peers) this.#peers.lost(joined, peer, 'left')
    this.events.emit('topic:left', { topic, key: joined.key })
    // tell connected peers, so rendezvous points stop handing us out for this topic
    if (this.settings.memberExchange)
      for (const peer of this.libp2p.getPeers()) void this.#exchange.exchange(peer)
  }

  /** Announces the topic on the DHT once (provider record under its key). */
  async announce(cid: CID, signal?: AbortSignal): Promise<void> {
    const opts = { signal: AbortSignal.any([this.signal, ...(signal ? [signal] : [])]) }
    for await (const _ of this.dht.provide(cid, opts)) {
      // drain the query
    }
  }

  /**
   * Members of `topic`: those already known, then what a DHT lookup finds (addresses outside the
   * node's address scope dropped). Never yields this node.
   */
  async *find(topic: string, signal?: AbortSignal): AsyncGenerator<PeerInfo> {
    const cid = await this.keyOf(topic)
    const key = cid.toString()
    const seen = new Set<string>([this.#state.self])
    for (const [id, member] of this.registry.members(key)) {
      seen.add(id)
      yield { id: peerIdFromString(id), multiaddrs: member.addrs.map((a) => multiaddr(a)) }
    }
    const querySignal = AbortSignal.any([
      this.signal,
      AbortSignal.timeout(this.settings.queryTimeout),
      ...(signal ? [signal] : []),
    ])
    for await (const event of this.dht.findProviders(cid, { signal: querySignal })) {
      if (event.name !== 'PROVIDER') continue
      for (const provider of event.providers) {
        const id = provider.id.toString()
        if (seen.has(id)) continue
        seen.add(id)
        const multiaddrs = this.security.addresses.filter(provider.multiaddrs).slice(0, LIMITS.maxAddrs)
        this.#peers.learn(key, id, {
          addrs: multiaddrs.map(String),
          direct: true,
          short: false,
          source: `dht:${event.from.toString()}`,
        })
        yield { ...provider, multiaddrs }
      }
    }
  }

  // --- DHT loops -------------------------------------------------------------------------------

  /**
   * While a topic is short of peers: ask connected non-members again (rendezvous points learn new
   * members all the time) each round, the few closest to the topic key and a few others
   * (RendezvousPoints), and query the DHT from the second round on (DHT queries open connections, the exchange reuses them). Rounds back off from
   * `lookupBackoff.initial` to `max`; the exchange poll is quick (at most 2 s apart) while rounds learn
   * something, and slows down when they keep learning nothing (poll-schedule.ts: a small topic is short
   * for good). A DHT query that found nobody new is not repeated while the topic has peers, until
   * `refreshInterval`, once the node has been in the topic for `max` (before, members are still
   * announcing) (each query brings ~20 peer records per answer into the peer store and routing
   * table of the asker: a killed third of a mesh kept the survivors' CPU busy with it); a member with no
   * topic peer keeps querying on the backoff.
   */
  async #lookupLoop(joined: JoinedTopic): Promise<void> {
    const { initial, max } = this.settings.lookupBackoff
    // asking connected peers is cheap: quick while it learns something; DHT queries open connections:
    // they back off up to `max`, and run only when the exchange brought nothing new
    let poll = quickPoll(initial)
    let peersBefore = joined.peers.size
    let dhtDelay = Math.max(initial * 4, 1000)
    let nextDht = Date.now() + (this.settings.memberExchange ? dhtDelay : 0)
    // when the last DHT query found no member this node did not know (-Infinity: it found some)
    let fruitlessDhtAt = Number.NEGATIVE_INFINITY
    const signal = joined.abort.signal
    const short = () => this.#peers.short(joined)
    while (!signal.aborted && !this.signal.aborted) {
      await this.#sleep(joined, short() ? poll.delay : this.settings.refreshInterval)
      if (signal.aborted || this.signal.aborted) return
      if (!short()) {
        poll = quickPoll(initial)
        peersBefore = joined.peers.size
        continue
      }
      let learned = false
      if (this.settings.memberExchange) {
        const before = this.registry.members(joined.key).length
        const others = this.libp2p
          .getPeers()
          .filter((p) => !joined.peers.has(p.toString()) && !joined.waiting.has(p.toString()))
        const asked = this.#points.pick(joined.key, joined.cid.multihash.bytes, others)
        await Promise.all(asked.map((p) => this.#exchange.exchange(p)))
        learned = this.registry.members(joined.key).length > before
      }
      // a fruitless query is not repeated while the topic has peers, until refreshInterval: their
      // exchanges hear of every newcomer that reaches a member, and a small topic is short for good;
      // not in the topic's first `max` (members still announcing while a mesh forms)
      const now = Date.now()
      const dhtDue =
        now >= nextDht &&
        (joined.peers.size === 0 ||
          now - joined.since < max ||
          now - fruitlessDhtAt >= this.settings.refreshInterval)
      if (short() && !learned && dhtDue) {
        const before = this.registry.members(joined.key).length
        try {
          for await (const _ of this.find(joined.topic, signal)) this.#peers.fill(joined)
          // only a query that ran to its end says that the DHT knows nobody new
          fruitlessDhtAt =
            this.registry.members(joined.key).length > before ? Number.NEGATIVE_INFINITY : Date.now()
        } catch (err) {
          if (signal.aborted) return
          this.logger.debug(`lookup of ${joined.topic} failed: ${(err as Error).message}`)
        }
        nextDht = Date.now() + dhtDelay
        dhtDelay = Math.min(dhtDelay * 2, max)
      }
      this.#peers.fill(joined)
      const changed = joined.peers.size !== peersBefore
      peersBefore = joined.peers.size
      poll = nextPoll(poll, learned || changed, { initial, max })
    }
  }

  async #announceLoop(joined: JoinedTopic): Promise<void> {
    let delay = 1000
    while (!joined.abort.signal.aborted && !this.signal.aborted) {
      try {
        await this.announce(joined.cid, joined.abort.signal)
        this.events.emit('topic:announced', { topic: joined.topic, key: joined.key })
        return // kad-dht re-provides it before the record expires, until leave() cancels that
      } catch (err) {
        if (joined.abort.signal.aborted) return
        this.logger.debug(
          `announcing ${joined.topic} failed (retrying in ${delay} ms): ${(err as Error).message}`,
        )
      }
      await this.#sleep(joined, delay)
      delay = Math.min(delay * 2, 60_000)
    }
  }

  #sleep(joined: JoinedTopic, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = joined.abort.signal
      const done = () => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        if (joined.wake === done) joined.wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', done, { once: true })
      joined.wake = done
    })
  }
}
