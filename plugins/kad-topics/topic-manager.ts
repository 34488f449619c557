import type { Connection, Libp2p, PeerId, PeerInfo, Stream } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { coalescePerKey, type Logger, type MeshEventBus } from 'meshkit'
import type { CID } from 'multiformats/cid'
import { MemberRegistry } from './member-registry.js'
import { topicKey } from './topic-key.js'
import {
  decodeRequest,
  decodeResponse,
  encode,
  LIMITS,
  TOPICS_PROTOCOL,
  type TopicsRequest,
  type TopicsResponse,
  type WireMember,
} from './wire.js'

export interface TopicManagerSettings {
  namespace: string
  connectionsPerTopic: number
  queryTimeout: number
  memberExchange: boolean
  lookupBackoff: { initial: number; max: number }
  refreshInterval: number
  memberTtl: number
}

interface JoinedTopic {
  topic: string
  key: string
  cid: CID
  /** Connected peers that are members (emitted as topic:peer). */
  peers: Set<string>
  /** Members being dialled for this topic. */
  dialing: Set<string>
  /** When the topic was joined (ms since epoch). */
  since: number
  abort: AbortController
  wake?: () => void
}

const TOPIC_TAG = 'meshkit-topic'
/** Longest pause between asking connected peers for members while a topic is short. */
const EXCHANGE_POLL_MAX_MS = 2000
/** How long after joining a topic only "higher" members are dialled (see #fill). */
const DIAL_GRACE_MS = 750

/**
 * The connection a member exchange with `peer` runs on: an open, unlimited one, or none. An exchange
 * never dials. libp2p's `dialProtocol()` does not reuse a limited (relayed) connection: it dials a new
 * circuit through the relay, then closes it as a duplicate of the one already open (same address), and
 * that new connection's `connection:open` asked for the next exchange: a peer reached only through a
 * relay got dozens of relayed connections opened and closed a second. Exchanges stay off relayed
 * connections (the relay's budget, 128 KiB and 2 min by default, is kept for hole punching); they run
 * once the peer has a direct or hole-punched connection, whose `connection:open` starts one.
 */
function exchangeConnection(libp2p: Pick<Libp2p, 'getConnections'>, peer: PeerId): Connection | undefined {
  return libp2p.getConnections(peer).find((c) => c.status === 'open' && c.limits === undefined)
}

/**
 * Joins and leaves topics: announces them on the DHT, looks members up (DHT provider records and the
 * member exchange with every connected peer), keeps up to `connectionsPerTopic` members connected and
 * emits `topic:peer` / `topic:peer:lost`. The member exchange runs on connections that are up, direct or
 * hole-punched, never dialling: a peer reached only through a relay is asked once an unlimited
 * connection to it opens (see exchangeConnection()).
 */
export class TopicManager {
  readonly registry: MemberRegistry
  readonly #joined = new Map<string, JoinedTopic>()
  readonly #keyToTopic = new Map<string, string>()
  /** What each connected peer said it joined (topic keys). */
  readonly #remoteJoined = new Map<string, Set<string>>()
  readonly #dialing = new Set<string>()
  readonly #failedUntil = new Map<string, number>()
  readonly #self: string
  #off: Array<() => void> = []
  private readonly settings: TopicManagerSettings

  constructor(
    private readonly libp2p: Libp2p,
    readonly dht: KadDHT,
    settings: TopicManagerSettings,
    private readonly logger: Logger,
    private readonly events: MeshEventBus,
    private readonly signal: AbortSignal,
    private readonly onDiscovered: (peer: PeerInfo) => void,
    registry?: MemberRegistry,
  ) {
    this.#self = libp2p.peerId.toString()
    this.settings = { ...settings, lookupBackoff: { ...settings.lookupBackoff } }
    this.registry = registry ?? new MemberRegistry({ maxKeys: 4096, maxMembers: 64, ttl: settings.memberTtl })
    if (registry) registry.setTtl(settings.memberTtl)
  }

  /**
   * Applies new timing and size settings to the running manager (joined topics, loops and the member
   * registry keep going): loops wake up and re-read them, and topics are filled up to a larger
   * `connectionsPerTopic` at once. `namespace` and `memberExchange` cannot change here.
   */
  update(
    settings: Pick<
      TopicManagerSettings,
      'connectionsPerTopic' | 'queryTimeout' | 'lookupBackoff' | 'refreshInterval' | 'memberTtl'
    >,
  ): void {
    this.registry.setTtl(settings.memberTtl)
    this.settings.connectionsPerTopic = settings.connectionsPerTopic
    this.settings.queryTimeout = settings.queryTimeout
    this.settings.lookupBackoff = { ...settings.lookupBackoff }
    this.settings.refreshInterval = settings.refreshInterval
    this.settings.memberTtl = settings.memberTtl
    for (const joined of this.#joined.values()) {
      joined.wake?.()
      this.#fill(joined)
    }
  }

  async start(): Promise<void> {
    if (this.settings.memberExchange) {
      await this.libp2p.handle(TOPICS_PROTOCOL, (stream, connection) => this.#serve(stream, connection), {
        maxInboundStreams: 8,
        maxOutboundStreams: 8,
      })
      const onOpen = (evt: CustomEvent<Connection>) => {
        if (evt.detail.direction === 'outbound') void this.#exchange(evt.detail.remotePeer)
      }
      this.libp2p.addEventListener('connection:open', onOpen)
      this.#off.push(() => this.libp2p.removeEventListener('connection:open', onOpen))
    }
    const onDisconnect = (evt: CustomEvent<PeerId>) => this.#peerGone(evt.detail.toString())
    this.libp2p.addEventListener('peer:disconnect', onDisconnect)
    this.#off.push(() => this.libp2p.removeEventListener('peer:disconnect', onDisconnect))
  }

  async stop(): Promise<void> {
    for (const off of this.#off.splice(0)) off()
    for (const joined of this.#joined.values()) joined.abort.abort()
    this.#joined.clear()
    this.#keyToTopic.clear()
    await this.libp2p.unhandle(TOPICS_PROTOCOL).catch(() => {})
  }

  topics(): string[] {
    return [...this.#joined.keys()]
  }

  /** Connected members of a joined topic. */
  peers(topic: string): string[] {
    return [...(this.#joined.get(topic)?.peers ?? [])]
  }

  keyOf(topic: string): Promise<CID> {
    return topicKey(this.settings.namespace, topic)
  }

  async join(topic: string): Promise<void> {
    if (this.#joined.has(topic)) return
    const cid = await this.keyOf(topic)
    if (this.#joined.has(topic) || this.signal.aborted) return
    const joined: JoinedTopic = {
      topic,
      key: cid.toString(),
      cid,
      peers: new Set(),
      dialing: new Set(),
      since: Date.now(),
      abort: new AbortController(),
    }
    this.#joined.set(topic, joined)
    this.#keyToTopic.set(joined.key, topic)
    this.events.emit('topic:joined', { topic, key: joined.key })
    // members learned before joining (e.g. as a rendezvous point) were never reported to libp2p
    for (const [id, member] of this.registry.members(joined.key)) {
      if (member.addrs.length === 0) continue
      try {
        this.onDiscovered({ id: peerIdFromString(id), multiaddrs: member.addrs.map((a) => multiaddr(a)) })
      } catch {
        // a PeerInfo that cannot be built is skipped
      }
    }
    // members first (exchange with everyone connected, DHT lookup), the announcement in the background
    for (const peer of this.libp2p.getPeers()) {
      const id = peer.toString()
      if (this.#remoteJoined.get(id)?.has(joined.key)) this.#markTopicPeer(joined, id)
    }
    if (this.settings.memberExchange) for (const peer of this.libp2p.getPeers()) void this.#exchange(peer)
    this.#fill(joined)
    void this.#lookupLoop(joined)
    void this.#announceLoop(joined)
  }

  async leave(topic: string): Promise<void> {
    const joined = this.#joined.get(topic)
    if (!joined) return
    joined.abort.abort()
    this.#joined.delete(topic)
    this.#keyToTopic.delete(joined.key)
    await this.dht.cancelReprovide(joined.cid).catch(() => {})
    for (const peer of joined.peers) this.#lost(joined, peer, 'left')
    this.events.emit('topic:left', { topic, key: joined.key })
    // tell connected peers, so rendezvous points stop handing us out for this topic
    if (this.settings.memberExchange) for (const peer of this.libp2p.getPeers()) void this.#exchange(peer)
  }

  /** Announces the topic on the DHT once (provider record under its key). */
  async announce(cid: CID, signal?: AbortSignal): Promise<void> {
    const opts = { signal: AbortSignal.any([this.signal, ...(signal ? [signal] : [])]) }
    for await (const _ of this.dht.provide(cid, opts)) {
      // drain the query
    }
  }

  /** Members of `topic`: those already known, then what a DHT lookup finds. Never yields this node. */
  async *find(topic: string, signal?: AbortSignal): AsyncGenerator<PeerInfo> {
    const cid = await this.keyOf(topic)
    const key = cid.toString()
    const seen = new Set<string>([this.#self])
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
        this.#learn(key, id, provider.multiaddrs.map(String), true)
        yield provider
      }
    }
  }

  // --- DHT loops -------------------------------------------------------------------------------

  /**
   * While a topic is short of peers: ask every connected non-member again (rendezvous points learn
   * new members all the time) each round, and query the DHT from the second round on (DHT queries
   * open connections, the exchange reuses them). Rounds back off from `lookupBackoff.initial` to `max`.
   */
  async #lookupLoop(joined: JoinedTopic): Promise<void> {
    const { initial, max } = this.settings.lookupBackoff
    // asking connected peers is cheap: at most EXCHANGE_POLL_MAX_MS apart while short; DHT queries open
    // connections: they back off up to `max`, and run only when the exchange brought nothing new
    let pollDelay = initial
    let dhtDelay = Math.max(initial * 4, 1000)
    let nextDht = Date.now() + (this.settings.memberExchange ? dhtDelay : 0)
    const signal = joined.abort.signal
    const short = () => joined.peers.size < this.settings.connectionsPerTopic
    while (!signal.aborted && !this.signal.aborted) {
      await this.#sleep(joined, short() ? pollDelay : this.settings.refreshInterval)
      if (signal.aborted || this.signal.aborted) return
      if (!short()) {
        pollDelay = initial
        continue
      }
      let learned = false
      if (this.settings.memberExchange) {
        const before = this.registry.members(joined.key).length
        const others = this.libp2p.getPeers().filter((p) => !joined.peers.has(p.toString()))
        await Promise.all(others.map((p) => this.#exchange(p)))
        learned = this.registry.members(joined.key).length > before
      }
      if (short() && !learned && Date.now() >= nextDht) {
        try {
          for await (const _ of this.find(joined.topic, signal)) this.#fill(joined)
        } catch (err) {
          if (signal.aborted) return
          this.logger.debug(`lookup of ${joined.topic} failed: ${(err as Error).message}`)
        }
        nextDht = Date.now() + dhtDelay
        dhtDelay = Math.min(dhtDelay * 2, max)
      }
      this.#fill(joined)
      pollDelay = Math.min(pollDelay * 2, EXCHANGE_POLL_MAX_MS)
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

  // --- membership --------------------------------------------------------------------------------

  #learn(key: string, id: string, addrs: readonly string[], direct: boolean, short = false): void {
    if (id === this.#self) return
    // a connected peer's own word on what it joined beats rumours and (possibly stale) DHT records
    if (this.#remoteJoined.get(id)?.has(key) === false) return
    const isNew = this.registry.add(key, id, addrs, direct, short)
    if (isNew && this.#keyToTopic.has(key) && addrs.length > 0) {
      try {
        this.onDiscovered({ id: peerIdFromString(id), multiaddrs: addrs.map((a) => multiaddr(a)) })
      } catch {
        // addresses were validated on the wire; a PeerInfo that cannot be built is skipped
      }
    }
  }

  /** Applies what `peer` said it joined: registry entries, topic-peer status. */
  #applyRemoteJoined(
    peer: string,
    joinedKeys: readonly string[],
    addrs: readonly string[],
    shortKeys: readonly string[] = [],
  ): void {
    const short = new Set(shortKeys)
    const next = new Set(joinedKeys)
    const previous = this.#remoteJoined.get(peer)
    for (const key of previous ?? []) if (!next.has(key)) this.registry.remove(key, peer)
    this.#remoteJoined.set(peer, next)
    const knownAddrs = addrs.length > 0 ? addrs : this.#addrsOf(peer)
    for (const key of next) this.#learn(key, peer, knownAddrs, true, short.has(key))
    for (const joined of this.#joined.values()) {
      if (next.has(joined.key)) this.#markTopicPeer(joined, peer)
      else if (joined.peers.has(peer)) this.#lost(joined, peer, 'left')
    }
  }

  #markTopicPeer(joined: JoinedTopic, peer: string): void {
    if (joined.peers.has(peer)) return
    if (!this.libp2p.getPeers().some((p) => p.toString() === peer)) return
    joined.peers.add(peer)
    this.events.emit('topic:peer', { topic: joined.topic, peerId: peer })
    void this.libp2p.peerStore
      .merge(peerIdFromString(peer), { tags: { [TOPIC_TAG]: { value: 50 } } })
      .catch(() => {})
  }

  #lost(joined: JoinedTopic, peer: string, reason: string): void {
    if (!joined.peers.delete(peer)) return
    this.events.emit('topic:peer:lost', { topic: joined.topic, peerId: peer, reason })
    joined.wake?.()
  }

  #peerGone(peer: string): void {
    this.#remoteJoined.delete(peer)
    for (const joined of this.#joined.values()) {
      if (joined.peers.has(peer)) {
        this.#lost(joined, peer, 'disconnected')
        this.#fill(joined)
      }
    }
  }

  #addrsOf(peer: string): string[] {
    const conn = this.libp2p.getConnections(peerIdFromString(peer))[0]
    return conn ? [conn.remoteAddr.toString()] : []
  }

  #selfAddrs(): string[] {
    return this.libp2p
      .getMultiaddrs()
      .slice(0, LIMITS.maxAddrs)
      .map((ma) => ma.toString())
  }

  /** Dials known members of a topic until it has `connectionsPerTopic` connected members. */
  #fill(joined: JoinedTopic): void {
    if (this.signal.aborted || joined.abort.signal.aborted) return
    // At most half the target in flight: members dial each other at the same time, and an inbound
    // connection that lands meanwhile fills the topic as well as an outbound one.
    const inFlight = this.#pendingFor(joined)
    const cap = Math.ceil(this.settings.connectionsPerTopic / 2)
    let deficit = Math.min(this.settings.connectionsPerTopic - joined.peers.size - inFlight, cap - inFlight)
    if (deficit <= 0) return
    const now = Date.now()
    // Two members who learn of each other at once would both dial: each pair is dialled by the peer
    // with the lower id, unless the topic is still short after a grace period (then anyone dials).
    const grace = now - joined.since > DIAL_GRACE_MS
    const candidates = this.registry
      .members(joined.key)
      .filter(([id, m]) => grace || id > this.#self || (m.short && m.direct))
    for (const [id, member] of candidates) {
      if (deficit <= 0) break
      if (id === this.#self || joined.peers.has(id) || this.#dialing.has(id)) continue
      if ((this.#failedUntil.get(id) ?? 0) > now) continue
      if (member.addrs.length === 0) continue
      const connected = this.libp2p.getConnections(peerIdFromString(id)).length > 0
      if (connected) {
        // connected but not (yet) known as a member: ask it
        if (this.settings.memberExchange && !this.#remoteJoined.has(id))
          void this.#exchange(peerIdFromString(id))
        continue
      }
      deficit--
      void this.#dial(id, member.addrs, joined)
    }
  }

  #pendingFor(joined: JoinedTopic): number {
    return joined.dialing.size
  }

  async #dial(id: string, addrs: readonly string[], joined: JoinedTopic): Promise<void> {
    this.#dialing.add(id)
    joined.dialing.add(id)
    try {
      const peerId = peerIdFromString(id)
      await this.libp2p.peerStore.merge(peerId, { multiaddrs: addrs.map((a) => multiaddr(a)) })
      await this.libp2p.dial(peerId, { signal: AbortSignal.any([this.signal, AbortSignal.timeout(10_000)]) })
      this.#failedUntil.delete(id)
    } catch (err) {
      if (this.signal.aborted) return
      this.#failedUntil.set(id, Date.now() + 5_000)
      this.logger.debug(`dialling topic member ${id} failed: ${(err as Error).message}`)
    } finally {
      this.#dialing.delete(id)
      joined.dialing.delete(id)
    }
    // A member we dialled is known as one (from the DHT or a rendezvous point): it counts as a topic
    // peer as soon as the connection is up; the exchange on that connection confirms it, or reports it
    // left (then it is `topic:peer:lost` with reason 'left').
    if (
      this.libp2p.getConnections(peerIdFromString(id)).length > 0 &&
      this.#joined.get(joined.topic) === joined
    ) {
      this.#markTopicPeer(joined, id)
    }
    this.#fill(joined)
  }

  // --- member exchange -----------------------------------------------------------------------

  #request(): TopicsRequest {
    const short = [...this.#joined.values()]
      .filter((j) => j.peers.size < this.settings.connectionsPerTopic)
      .map((j) => j.key)
    return { v: 1, joined: [...this.#keyToTopic.keys()], addrs: this.#selfAddrs(), short }
  }

  /** One exchange per peer at a time; a request made while one runs makes one follow-up exchange. */
  readonly #exchange = coalescePerKey(
    (peer: PeerId) => this.#exchangeOnce(peer),
    (peer) => peer.toString(),
    () => !this.signal.aborted,
  )

  async #exchangeOnce(peer: PeerId): Promise<void> {
    const id = peer.toString()
    let stream: Stream | undefined
    try {
      const connection = exchangeConnection(this.libp2p, peer)
      if (!connection) return // not connected, or only over a relay: see exchangeConnection()
      const signal = AbortSignal.any([this.signal, AbortSignal.timeout(10_000)])
      stream = await connection.newStream(TOPICS_PROTOCOL, { signal })
      const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
      await lp.write(encode(this.#request()), { signal })
      const response: TopicsResponse = decodeResponse((await lp.read({ signal })).subarray())
      await stream.close({ signal }).catch(() => {})
      const sent = Object.values(response.members).reduce((n, list) => n + list.length, 0)
      this.logger.debug(
        `exchange with ${id}: it joined ${response.joined.length} topics, told us ${sent} members`,
      )
      this.#applyRemoteJoined(id, response.joined, response.addrs, response.short)
      for (const [key, members] of Object.entries(response.members)) {
        if (!this.#keyToTopic.has(key)) continue
        for (const member of members) this.#learn(key, member.id, member.addrs, false, member.short)
      }
      for (const joined of this.#joined.values()) this.#fill(joined)
    } catch (err) {
      stream?.abort(err as Error)
      if (!this.signal.aborted)
        this.logger.debug(`topic exchange with ${id} failed: ${(err as Error).message}`)
    }
  }

  /** Answers a peer's exchange request. Malformed or oversized input resets the stream. */
  async #serve(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    try {
      const signal = AbortSignal.any([this.signal, AbortSignal.timeout(10_000)])
      const lp = lpStream(stream, { maxDataLength: LIMITS.maxMessageBytes })
      const request = decodeRequest((await lp.read({ signal })).subarray())
      this.#applyRemoteJoined(peer, request.joined, request.addrs, request.short)
      const members: Record<string, WireMember[]> = {}
      for (const key of request.joined) {
        const list = this.registry
          .members(key)
          .filter(([id]) => id !== peer)
          .slice(0, LIMITS.maxMembersPerTopic)
          .map(([id, m]) => ({
            id,
            addrs: m.addrs.slice(0, LIMITS.maxAddrs),
            ...(m.short ? { short: true } : {}),
          }))
        if (list.length > 0) members[key] = list
      }
      const response: TopicsResponse = { ...this.#request(), members }
      this.logger.debug(
        `served ${peer}: it joined ${request.joined.length} topics; sending ${Object.keys(members).length} member lists`,
      )
      await lp.write(encode(response), { signal })
      await stream.close({ signal }).catch(() => {})
      for (const joined of this.#joined.values()) this.#fill(joined)
    } catch (err) {
      stream.abort(err as Error)
      this.logger.debug(`bad topic exchange from ${peer}: ${(err as Error).message}`)
      this.events.emit('topic:protocol-error', { peerId: peer, error: (err as Error).message })
    }
  }
}
