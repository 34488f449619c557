import type { Connection, Libp2p, PeerId, PeerInfo, PrivateKey, Stream } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import {
  type Budget,
  coalescePerKey,
  type Logger,
  type MeshEventBus,
  type PeerAddressPolicy,
  type PeerReputation,
} from 'meshkit/plugin'
import type { CID } from 'multiformats/cid'
import { DIAL_GUARD_DEFAULTS, DialGuard } from './dial-guard.js'
import {
  MemberSigner,
  MemberVerifier,
  type RecordVerdict,
  type SignedMember,
  VERIFIER_DEFAULTS,
} from './member-record.js'
import { type AddResult, type KnownMember, type MemberProof, MemberRegistry } from './member-registry.js'
import { netGroupOf } from './net-group.js'
import { topicKey } from './topic-key.js'
import {
  decodeRequest,
  decodeResponse,
  encode,
  LIMITS,
  TOPICS_PROTOCOL,
  TOPICS_PROTOCOL_V1,
  type TopicsRequest,
  type TopicsResponse,
  WIRE_VERSION,
  WireError,
  type WireMember,
} from './wire.js'
import { WorkQueue } from './work-queue.js'

export interface TopicManagerSettings {
  namespace: string
  connectionsPerTopic: number
  queryTimeout: number
  memberExchange: boolean
  lookupBackoff: { initial: number; max: number }
  refreshInterval: number
  memberTtl: number
  /** Topic peers of one topic from one /24 (IPv4) or /48 (IPv6) while members elsewhere can be had. */
  maxPeersPerNetwork: number
}

/** What the manager needs from the node's security services (the plugin context). */
export interface TopicSecurity {
  /** Signs this node's member records. */
  privateKey: PrivateKey
  reputation: PeerReputation
  /** `ctx.peerAddresses`: member and provider addresses are checked with it. */
  addresses: PeerAddressPolicy
  /** The member exchange's per-peer and global budget (both protocol versions share it). */
  budget: Budget
}

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

/** Signature checks one message may cost (cache hits are free). */
const MAX_CHECKS_PER_MESSAGE = 128
/** Connected peers asked for members per lookup round (at random when there are more). */
const EXCHANGE_FANOUT = 32

interface JoinedTopic {
  topic: string
  key: string
  cid: CID
  /** Connected peers that are members (emitted as topic:peer). */
  peers: Set<string>
  /** Connected members held back because their network has its share of this topic's peers. */
  waiting: Set<string>
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

/** Errors that mean the peer broke the wire format (penalized), not that the stream failed. */
const MALFORMED = new Set([
  'WireError',
  'InvalidDataLengthError',
  'InvalidDataLengthLengthError',
  'InvalidMessageLengthError',
])
const isMalformed = (err: unknown) => err instanceof WireError || MALFORMED.has((err as Error)?.name)

class ForgedError extends Error {
  override name = 'ForgedError'
}

/**
 * Member exchanges one limited (relayed) connection carries, at most, each way: the one its opening
 * starts, and a few while the topic is short (the relay's data budget, 128 KiB and 2 min by default per
 * circuit, is mostly kept for hole punching's signalling).
 */
const LIMITED_EXCHANGES = 3
/** The largest exchange message (request or response) on a limited connection. */
const LIMITED_MESSAGE_BYTES = 8 * 1024

/**
 * The connection a member exchange with `peer` runs on: an open unlimited one, else an open limited
 * (relayed) one that has not carried its LIMITED_EXCHANGES yet, or none. An exchange never dials
 * (libp2p's `dialProtocol()` does not reuse a limited connection: it dials a new circuit through the
 * relay, then closes it as a duplicate, and that connection's `connection:open` asked for the next
 * exchange: dozens of relayed connections opened and closed a second). Over a relayed connection the
 * exchange is small and counted (LIMITED_MESSAGE_BYTES, LIMITED_EXCHANGES): a pair that stays relayed
 * (symmetric + symmetric) still learns on both sides that the other joined the topic.
 */
function exchangeConnection(
  libp2p: Pick<Libp2p, 'getConnections'>,
  peer: PeerId,
  used: WeakMap<Connection, number>,
): Connection | undefined {
  const open = libp2p.getConnections(peer).filter((c) => c.status === 'open')
  return open.find((c) => c.limits === undefined) ?? open.find((c) => (used.get(c) ?? 0) < LIMITED_EXCHANGES)
}

/** Counts one exchange on a limited connection; false when it carried its share already. */
function takeLimited(connection: Connection, used: WeakMap<Connection, number>): boolean {
  if (connection.limits === undefined) return true
  const n = used.get(connection) ?? 0
  if (n >= LIMITED_EXCHANGES) return false
  used.set(connection, n + 1)
  return true
}

/** `n` entries of `items` picked at random (all of them when there are fewer). */
function sample<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items
  const copy = [...items]
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(Math.random() * (copy.length - i))
    ;[copy[i], copy[j]] = [copy[j], copy[i]]
  }
  return copy.slice(0, n)
}

const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8')

/**
 * Joins and leaves topics: announces them on the DHT, looks members up (DHT provider records and the
 * member exchange with every connected peer), keeps up to `connectionsPerTopic` members connected and
 * emits `topic:peer` / `topic:peer:lost`. The member exchange runs on connections that are up, direct or
 * hole-punched, never dialling: a peer reached only through a relay is asked once an unlimited
 * connection to it opens (see exchangeConnection()).
 *
 * Hostile peers: member records are signed by the members (relayers cannot forge them), addresses are
 * checked against the node's address scope before they are kept, dialled or passed on, dials on other
 * peers' words are bounded (DialGuard), a topic's peers are spread across networks, and every request
 * costs bounded work within the exchange's budget.
 */
export class TopicManager {
  readonly registry: MemberRegistry
  readonly #joined = new Map<string, JoinedTopic>()
  readonly #keyToTopic = new Map<string, string>()
  /** What each connected peer said it joined (topic keys). */
  readonly #remoteJoined = new Map<string, Set<string>>()
  readonly #dialing = new Set<string>()
  readonly #dials: DialGuard
  readonly #verifier: MemberVerifier
  readonly #signer: MemberSigner
  readonly #self: string
  readonly #queue = new WorkQueue()
  /** Exchanges made (asked) and served per limited connection (see exchangeConnection()). */
  readonly #limitedAsked = new WeakMap<Connection, number>()
  readonly #limitedServed = new WeakMap<Connection, number>()
  #ownAddrs?: { at: number; addrs: string[] }
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
    private readonly security: TopicSecurity,
    registry?: MemberRegistry,
    dials?: DialGuard,
  ) {
    this.#self = libp2p.peerId.toString()
    this.settings = { ...settings, lookupBackoff: { ...settings.lookupBackoff } }
    this.registry = registry ?? new MemberRegistry({ ...REGISTRY_LIMITS, ttl: settings.memberTtl })
    if (registry) registry.setTtl(settings.memberTtl)
    this.#dials = dials ?? new DialGuard(DIAL_GUARD_DEFAULTS)
    this.#verifier = new MemberVerifier({ ...VERIFIER_DEFAULTS, ttl: () => this.settings.memberTtl })
    this.#signer = new MemberSigner(security.privateKey, () => this.settings.memberTtl / 3)
  }

  /** The dial guard (kept across a manager rebuild with the registry). */
  get dials(): DialGuard {
    return this.#dials
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
    for (const joined of this.#joined.values()) {
      joined.wake?.()
      this.#promote(joined)
      this.#fill(joined)
    }
  }

  async start(): Promise<void> {
    if (this.settings.memberExchange) {
      for (const protocol of [TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1]) {
        const version = WIRE_VERSION[protocol]
        await this.libp2p.handle(protocol, (stream, connection) => this.#serve(stream, connection, version), {
          maxInboundStreams: 8,
          maxOutboundStreams: 8,
          // small and counted there (LIMITED_EXCHANGES, LIMITED_MESSAGE_BYTES): see exchangeConnection()
          runOnLimitedConnection: true,
        })
      }
      // A node that joined no topic has nothing to tell and nothing to ask: no exchange stream on its
      // connections (join() exchanges with every connected peer; members ask it while they are short).
      const onOpen = (evt: CustomEvent<Connection>) => {
        if (evt.detail.direction === 'outbound' && this.#joined.size > 0)
          void this.#exchange(evt.detail.remotePeer)
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
    for (const joined of this.#joined.values()) {
      joined.abort.abort()
      this.registry.unpin(joined.key)
    }
    this.#joined.clear()
    this.#keyToTopic.clear()
    await this.libp2p.unhandle([TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1]).catch(() => {})
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
      waiting: new Set(),
      dialing: new Set(),
      since: Date.now(),
      abort: new AbortController(),
    }
    this.#joined.set(topic, joined)
    this.#keyToTopic.set(joined.key, topic)
    this.registry.pin(joined.key)
    this.events.emit('topic:joined', { topic, key: joined.key })
    // members learned before joining (e.g. as a rendezvous point) were never reported to libp2p
    for (const [id, member] of this.registry.members(joined.key)) this.#report(id, member.addrs)
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
    this.registry.unpin(joined.key)
    await this.dht.cancelReprovide(joined.cid).catch(() => {})
    joined.waiting.clear()
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

  /**
   * Members of `topic`: those already known, then what a DHT lookup finds (addresses outside the
   * node's address scope dropped). Never yields this node.
   */
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
        const multiaddrs = this.security.addresses.filter(provider.multiaddrs).slice(0, LIMITS.maxAddrs)
        this.#learn(key, id, {
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
   * members all the time) each round, at most EXCHANGE_FANOUT of them, and query the DHT from the second
   * round on (DHT queries open connections, the exchange reuses them). Rounds back off from
   * `lookupBackoff.initial` to `max`.
   */
  async #lookupLoop(joined: JoinedTopic): Promise<void> {
    const { initial, max } = this.settings.lookupBackoff
    // asking connected peers is cheap: at most EXCHANGE_POLL_MAX_MS apart while short; DHT queries open
    // connections: they back off up to `max`, and run only when the exchange brought nothing new
    let pollDelay = initial
    let dhtDelay = Math.max(initial * 4, 1000)
    let nextDht = Date.now() + (this.settings.memberExchange ? dhtDelay : 0)
    const signal = joined.abort.signal
    const short = () => this.#short(joined)
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
        const others = this.libp2p
          .getPeers()
          .filter((p) => !joined.peers.has(p.toString()) && !joined.waiting.has(p.toString()))
        await Promise.all(sample(others, EXCHANGE_FANOUT).map((p) => this.#exchange(p)))
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

  #learn(key: string, id: string, member: Omit<KnownMember, 'lastSeen'> & { lastSeen?: number }): AddResult {
    if (id === this.#self) return 'ignored'
    // a connected peer's own word on what it joined beats rumours and (possibly stale) DHT records
    if (member.source !== id && this.#remoteJoined.get(id)?.has(key) === false) return 'ignored'
    const before = this.registry.get(key, id)?.addrs.join(' ')
    const result = this.registry.add(key, id, member)
    if (result === 'added' && this.#keyToTopic.has(key)) this.#report(id, member.addrs)
    if (result !== 'updated' || before === undefined) return result
    // a member at new addresses (it moved, e.g. reserved on another relay when its relay died): dialled
    // there at the next fill, not after the backoff its old, dead addresses earned
    const now = this.registry.get(key, id)?.addrs ?? []
    if (now.join(' ') !== before) {
      this.#dials.moved(id)
      if (this.#keyToTopic.has(key)) this.#report(id, now)
    }
    return result
  }

  /** Tells libp2p's peer discovery of a member (addresses already in scope). */
  #report(id: string, addrs: readonly string[]): void {
    if (addrs.length === 0) return
    try {
      this.onDiscovered({ id: peerIdFromString(id), multiaddrs: addrs.map((a) => multiaddr(a)) })
    } catch {
      // a PeerInfo that cannot be built is skipped
    }
  }

  /**
   * Applies what `peer` said about itself (its joined keys and addresses) once its signatures were
   * checked (`verdicts`, one per joined key; none for a version 1 peer). A key this node did not join
   * is kept (for passing on) only with a valid signature over addresses all in scope.
   */
  #applyClaims(
    peer: string,
    claim: TopicsRequest,
    verdicts: readonly RecordVerdict[],
    connection?: Connection,
  ): void {
    const inScope = this.security.addresses.filter(claim.addrs)
    const relayable = inScope.length === claim.addrs.length
    // no address given: the one this node dialled it at, if it did (an inbound connection's remote
    // address is the peer's outgoing port)
    const dialable =
      inScope.length > 0
        ? inScope
        : connection?.direction === 'outbound'
          ? this.security.addresses.filter([connection.remoteAddr.toString()])
          : []
    const short = new Set(claim.short)
    const next = new Set(claim.joined)
    const previous = this.#remoteJoined.get(peer)
    for (const key of previous ?? []) if (!next.has(key)) this.registry.remove(key, peer)
    this.#remoteJoined.set(peer, next)
    claim.joined.forEach((key, i) => {
      const proof: MemberProof | undefined =
        verdicts[i] === 'valid' && relayable && claim.ts !== undefined && claim.sigs
          ? { addrs: [...claim.addrs], ts: claim.ts, sig: claim.sigs[i] }
          : undefined
      if (!proof && !this.#keyToTopic.has(key)) return
      this.#learn(key, peer, { addrs: dialable, direct: true, short: short.has(key), source: peer, proof })
    })
    for (const joined of this.#joined.values()) {
      if (next.has(joined.key)) this.#markTopicPeer(joined, peer)
      else if (joined.peers.has(peer)) this.#lost(joined, peer, 'left')
      else joined.waiting.delete(peer)
    }
  }

  /** The sender's own records in a message, to verify. */
  #ownRecords(peer: string, claim: TopicsRequest): SignedMember[] {
    if (claim.v !== 2 || claim.ts === undefined || !claim.sigs) return []
    return claim.joined.map((key, i) => ({
      id: peer,
      key,
      addrs: claim.addrs,
      ts: claim.ts!,
      sig: claim.sigs![i],
    }))
  }

  /** Checks records `peer` sent; throws ForgedError (after penalizing it) when one is forged. */
  async #verify(peer: string, records: SignedMember[], what: string): Promise<RecordVerdict[]> {
    if (records.length === 0) return []
    const verdicts = await this.#verifier.verify(peer, records, MAX_CHECKS_PER_MESSAGE)
    const forged = verdicts.indexOf('forged')
    if (forged >= 0) {
      const r = records[forged]
      const detail = `topics: ${what} with a forged record of ${r.id === peer ? 'itself' : r.id} in ${r.key.slice(0, 20)}`
      this.security.reputation.penalize(peer, 'forged', detail)
      throw new ForgedError(detail)
    }
    return verdicts
  }

  /**
   * Makes a connected member a topic peer, unless its network has its share of the topic's peers
   * (`maxPeersPerNetwork`) and either a member from another network can be had or the topic is full:
   * then it waits (connected, not a topic peer) until there is room.
   */
  #markTopicPeer(joined: JoinedTopic, peer: string): void {
    if (joined.peers.has(peer)) return
    if (!this.libp2p.getPeers().some((p) => p.toString() === peer)) return
    const group = this.#groupOfPeer(peer)
    if (group !== undefined && this.#countIn(joined.peers, group) >= this.#perNetwork()) {
      if (
        joined.peers.size >= this.settings.connectionsPerTopic ||
        this.#hasAlternative(joined, group, peer)
      ) {
        joined.waiting.add(peer)
        return
      }
    }
    joined.waiting.delete(peer)
    joined.peers.add(peer)
    this.events.emit('topic:peer', { topic: joined.topic, peerId: peer })
    void this.libp2p.peerStore
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
    while (joined.peers.size > this.settings.connectionsPerTopic) {
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
      this.events.emit('topic:peer:lost', { topic: joined.topic, peerId: peer, reason: 'rebalanced' })
    }
  }

  /** Waiting members become topic peers while there is room: under-represented networks first. */
  #promote(joined: JoinedTopic): void {
    if (joined.waiting.size === 0 || joined.peers.size >= this.settings.connectionsPerTopic) return
    const counts = this.#groupCounts(joined.peers)
    const waiting = [...joined.waiting].sort(
      (a, b) => (counts.get(this.#groupOfPeer(a) ?? '') ?? 0) - (counts.get(this.#groupOfPeer(b) ?? '') ?? 0),
    )
    for (const peer of waiting) {
      if (joined.peers.size >= this.settings.connectionsPerTopic) return
      joined.waiting.delete(peer)
      this.#markTopicPeer(joined, peer)
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
  #short(joined: JoinedTopic): boolean {
    return joined.peers.size < this.settings.connectionsPerTopic || this.#crowdedExcess(joined) > 0
  }

  #lost(joined: JoinedTopic, peer: string, reason: string): void {
    joined.waiting.delete(peer)
    if (!joined.peers.delete(peer)) return
    this.events.emit('topic:peer:lost', { topic: joined.topic, peerId: peer, reason })
    joined.wake?.()
    if (this.#joined.get(joined.topic) === joined) this.#promote(joined)
  }

  #peerGone(peer: string): void {
    this.#remoteJoined.delete(peer)
    for (const joined of this.#joined.values()) {
      joined.waiting.delete(peer)
      if (joined.peers.has(peer)) {
        this.#lost(joined, peer, 'disconnected')
        this.#fill(joined)
      }
    }
  }

  #perNetwork(): number {
    return this.settings.maxPeersPerNetwork
  }

  /** The network of the peer's first open connection (a relayed one: the relay's). */
  #groupOfPeer(peer: string): string | undefined {
    const conn = this.libp2p.getConnections(peerIdFromString(peer)).find((c) => c.status === 'open')
    return conn ? netGroupOf(conn.remoteAddr) : undefined
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
    const counts = this.#groupCounts(joined.peers)
    const room = (g: string | undefined) =>
      g !== group && (g === undefined || (counts.get(g) ?? 0) < this.#perNetwork())
    for (const p of joined.waiting) if (p !== except && room(this.#groupOfPeer(p))) return true
    for (const [id, m] of this.registry.members(joined.key)) {
      if (id === this.#self || id === except || joined.peers.has(id) || this.#dials.backedOff(id)) continue
      if (this.libp2p.getConnections(peerIdFromString(id)).length > 0) continue
      if (this.#dials.usable(m.addrs).some((a) => room(netGroupOf(a)))) return true
    }
    return false
  }

  /** This node's addresses in its own scope (at most 16), read from libp2p at most once a second. */
  #selfAddrs(): string[] {
    const now = Date.now()
    if (this.#ownAddrs && now - this.#ownAddrs.at < 1000) return this.#ownAddrs.addrs
    const addrs = this.security.addresses
      .filter(this.libp2p.getMultiaddrs())
      .map((ma) => ma.toString())
      .filter((a) => a.length <= LIMITS.maxStringLength)
      .slice(0, LIMITS.maxAddrs)
    this.#ownAddrs = { at: now, addrs }
    return addrs
  }

  /**
   * Dials known members of a topic until it has `connectionsPerTopic` connected members (and, while
   * some network has more than its share, members of other networks to replace them): at most half
   * of them in flight, members of networks below their share first (a network at its share only to
   * reach `connectionsPerTopic`, when no other member can be dialled), each dial within the DialGuard's
   * budgets and backoffs.
   */
  #fill(joined: JoinedTopic): void {
    if (this.signal.aborted || joined.abort.signal.aborted) return
    // At most half the target in flight: members dial each other at the same time, and an inbound
    // connection that lands meanwhile fills the topic as well as an outbound one.
    const inFlight = joined.dialing.size
    const cap = Math.ceil(this.settings.connectionsPerTopic / 2) - inFlight
    const missing = this.settings.connectionsPerTopic - joined.peers.size - inFlight
    const replace =
      joined.peers.size >= this.settings.connectionsPerTopic ? this.#crowdedExcess(joined) - inFlight : 0
    let deficit = Math.min(Math.max(missing, replace), cap)
    if (deficit <= 0) return
    const now = Date.now()
    // Two members who learn of each other at once would both dial: each pair is dialled by the peer
    // with the lower id, unless the topic is still short after a grace period (then anyone dials).
    // Dialled at once all the same: a member not known to be short (it has its peers and dials nobody),
    // and one whose record was signed before the grace period (it joined earlier: past its own grace it
    // does not hold back either). A node joining a warm mesh used to wait out the grace, up to the
    // next poll (~1 s), when every member it heard of had a lower id.
    const grace = now - joined.since > DIAL_GRACE_MS
    const settled = now - DIAL_GRACE_MS
    const counts = this.#groupCounts(joined.peers)
    const perNetwork = this.#perNetwork()
    const first: Array<{ id: string; addrs: string[]; source: string }> = []
    const later: typeof first = []
    for (const [id, member] of this.registry.members(joined.key)) {
      const early = id > this.#self || (member.short && member.direct) || !member.short
      if (!(grace || early || (member.proof && member.proof.ts <= settled))) continue
      if (id === this.#self || joined.peers.has(id) || this.#dialing.has(id)) continue
      if (member.addrs.length === 0 || this.#dials.backedOff(id)) continue
      if (this.libp2p.getConnections(peerIdFromString(id)).length > 0) {
        // connected but not (yet) known as a member: ask it
        if (this.settings.memberExchange && !this.#remoteJoined.has(id))
          void this.#exchange(peerIdFromString(id))
        continue
      }
      const addrs = this.#dials.usable(member.addrs)
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
      if (!this.#dials.take(c.source)) return
      deficit--
      dialled++
      void this.#dial(c.id, c.addrs, joined)
    }
    for (const c of first) if (deficit > 0) dial(c)
    // members of networks at their share: only to reach connectionsPerTopic
    deficit = Math.min(deficit, missing - dialled)
    for (const c of later) if (deficit > 0) dial(c)
    // nobody to dial: members held back by the network share step in
    if (dialled === 0 && inFlight === 0) this.#promote(joined)
  }

  async #dial(id: string, addrs: readonly string[], joined: JoinedTopic): Promise<void> {
    this.#dialing.add(id)
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
      const connection = await this.libp2p.dial(targets, {
        signal: AbortSignal.any([this.signal, AbortSignal.timeout(10_000)]),
      })
      this.#dials.succeeded(id, [connection.remoteAddr.toString()])
    } catch (err) {
      if (this.signal.aborted) return
      this.#dials.failed(id, addrs)
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

  /** This node's own part of a message: its joined keys, addresses and (version 2) signatures. */
  async #own(version: 1 | 2): Promise<TopicsRequest> {
    const joined = [...this.#keyToTopic.keys()].slice(0, LIMITS.maxJoined)
    const keys = new Set(joined)
    const short = [...this.#joined.values()]
      .filter((j) => keys.has(j.key) && j.peers.size < this.settings.connectionsPerTopic)
      .map((j) => j.key)
    const addrs = this.#selfAddrs()
    if (version === 1) return { v: 1, joined, addrs, short }
    const { ts, sigs } = await this.#signer.sign(joined, addrs)
    return { v: 2, joined, addrs, short, ts, sigs }
  }

  /**
   * Runs a message's synchronous work (decoding, applying, building an answer: up to a few ms for the
   * largest messages) in time slices of the node's work queue: many requests at once cannot add up to
   * one long stall of the event loop.
   */
  #work<T>(task: () => T): Promise<T> {
    return this.#queue.run(task)
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
      const connection = exchangeConnection(this.libp2p, peer, this.#limitedAsked)
      if (!connection) return // not connected, or a relayed connection that carried its share
      const limited = connection.limits !== undefined
      const maxBytes = limited ? LIMITED_MESSAGE_BYTES : LIMITS.maxMessageBytes
      const signal = AbortSignal.any([this.signal, AbortSignal.timeout(10_000)])
      // (the request is built before the stream: one that does not fit a relayed connection is not sent)
      let version: 1 | 2 = 2
      let request = encode(await this.#own(version))
      if (request.byteLength > maxBytes || !takeLimited(connection, this.#limitedAsked)) return
      stream = await connection.newStream([TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1], {
        signal,
        runOnLimitedConnection: true,
      })
      if ((WIRE_VERSION[stream.protocol] ?? 2) !== version) {
        version = WIRE_VERSION[stream.protocol]
        request = encode(await this.#own(version))
      }
      const lp = lpStream(stream, { maxDataLength: maxBytes })
      await lp.write(request, { signal })
      const bytes = (await lp.read({ signal })).subarray()
      const response: TopicsResponse = await this.#work(() => decodeResponse(bytes, version))
      await stream.close({ signal }).catch(() => {})
      await this.#applyResponse(id, response, connection)
      for (const joined of this.#joined.values()) this.#fill(joined)
    } catch (err) {
      stream?.abort(err as Error)
      if (this.signal.aborted) return
      if (isMalformed(err)) {
        this.security.reputation.penalize(id, 'malformed', `topics response: ${(err as Error).message}`)
      }
      this.logger.debug(`topic exchange with ${id} failed: ${(err as Error).message}`)
    }
  }

  /**
   * Applies a response: first every signature in it is checked (bounded, see MemberVerifier), and a
   * forged one drops the whole response (and penalizes its sender); then the sender's own claims, then
   * the members it relayed for keys this node joined: signed ones only, and only addresses in scope.
   */
  async #applyResponse(peer: string, response: TopicsResponse, connection: Connection): Promise<void> {
    const own = await this.#verify(peer, this.#ownRecords(peer, response), 'response')
    const relayed: Array<SignedMember & { short: boolean }> = []
    let unsigned = 0
    for (const [key, members] of Object.entries(response.members)) {
      if (!this.#keyToTopic.has(key)) continue
      for (const m of members) {
        if (m.id === this.#self || m.id === peer) continue
        if (m.ts === undefined || m.sig === undefined) {
          unsigned++
          continue
        }
        const known = this.registry.get(key, m.id)
        if (known && !known.direct && known.lastSeen >= m.ts) continue // nothing newer
        relayed.push({ id: m.id, key, addrs: m.addrs, ts: m.ts, sig: m.sig, short: m.short === true })
      }
    }
    const verdicts = await this.#verify(peer, relayed, 'response')
    this.logger.debug(
      `exchange with ${peer}: it joined ${response.joined.length} topics, relayed ${relayed.length} signed members` +
        (unsigned > 0 ? ` and ${unsigned} unsigned ones (dropped)` : ''),
    )
    await this.#work(() => this.#learnResponse(peer, response, own, relayed, verdicts, connection))
  }

  #learnResponse(
    peer: string,
    response: TopicsResponse,
    own: RecordVerdict[],
    relayed: Array<SignedMember & { short: boolean }>,
    verdicts: RecordVerdict[],
    connection: Connection,
  ): void {
    this.#applyClaims(peer, response, own, connection)
    relayed.forEach((r, i) => {
      if (verdicts[i] !== 'valid') return
      const addrs = this.security.addresses.filter(r.addrs)
      if (addrs.length === 0) return
      const proof =
        addrs.length === r.addrs.length ? { addrs: [...r.addrs], ts: r.ts, sig: r.sig } : undefined
      this.#learn(r.key, r.id, { addrs, direct: false, short: r.short, source: peer, proof, lastSeen: r.ts })
    })
  }

  /**
   * Members to tell `requester` for the keys it asked about: signed records only, picked round-robin
   * across the keys (each key's best first) until `budget` bytes of JSON are used, so that one key full
   * of long addresses cannot crowd out the others, and the response fits what requesters accept.
   */
  #replyMembers(keys: readonly string[], requester: string, budget: number): Record<string, WireMember[]> {
    const lists = keys.map((key) =>
      this.registry
        .members(key)
        .filter(([id, m]) => id !== requester && m.proof !== undefined && !this.#verifier.age(m.proof.ts)),
    )
    const out: Record<string, WireMember[]> = {}
    let used = 2 // {}
    const longest = Math.min(LIMITS.maxMembersPerTopic, Math.max(0, ...lists.map((l) => l.length)))
    for (let round = 0; round < longest; round++) {
      keys.forEach((key, i) => {
        const entry = lists[i][round]
        if (!entry || key === '__proto__') return
        const [id, m] = entry
        const proof = m.proof!
        const member: WireMember = { id, addrs: proof.addrs, ts: proof.ts, sig: proof.sig }
        if (m.short && m.direct) member.short = true
        const list = out[key]
        // `"key":[` + `]` and a comma between keys for a new list; the member and a comma otherwise
        const cost = utf8Length(JSON.stringify(member)) + 1 + (list ? 0 : utf8Length(JSON.stringify(key)) + 4)
        if (used + cost > budget) return
        used += cost
        if (list) list.push(member)
        else out[key] = [member]
      })
    }
    return out
  }

  /** Answers a peer's exchange request. Malformed, forged or oversized input resets the stream. */
  async #serve(stream: Stream, connection: Connection, version: 1 | 2): Promise<void> {
    const peer = connection.remotePeer.toString()
    const ticket = this.security.budget.admit(peer)
    if (!ticket.ok) {
      this.logger.debug(`refused an exchange of ${peer}: over budget (${ticket.reason})`)
      stream.abort(new Error(`topics: over budget (${ticket.reason})`))
      return
    }
    try {
      const limited = connection.limits !== undefined
      // a relayed connection carries a few small exchanges (see exchangeConnection()); more are refused
      if (!takeLimited(connection, this.#limitedServed))
        throw new Error(`topics: this relayed connection carried its ${LIMITED_EXCHANGES} exchanges`)
      const maxBytes = limited ? LIMITED_MESSAGE_BYTES : LIMITS.maxMessageBytes
      const signal = AbortSignal.any([this.signal, AbortSignal.timeout(10_000)])
      const lp = lpStream(stream, { maxDataLength: maxBytes })
      const bytes = (await lp.read({ signal })).subarray()
      if (!ticket.spend(bytes.byteLength)) throw new Error('topics: over its byte budget')
      const request = await this.#work(() => decodeRequest(bytes, version))
      const verdicts = await this.#verify(peer, this.#ownRecords(peer, request), 'request')
      const own = await this.#own(version)
      const { members, encoded } = await this.#work(() => {
        this.#applyClaims(peer, request, verdicts, connection)
        const room = maxBytes - encode({ ...own, members: {} }).byteLength - 16
        const members = this.#replyMembers(request.joined, peer, room)
        return { members, encoded: encode({ ...own, members } satisfies TopicsResponse) }
      })
      if (encoded.byteLength > maxBytes) throw new Error('topics: response too large') // own part too big
      this.logger.debug(
        `served ${peer}: it joined ${request.joined.length} topics; sending ${Object.keys(members).length} member lists (${encoded.byteLength} bytes)`,
      )
      await lp.write(encoded, { signal })
      await stream.close({ signal }).catch(() => {})
      for (const joined of this.#joined.values()) this.#fill(joined)
    } catch (err) {
      stream.abort(err as Error)
      if (isMalformed(err))
        this.security.reputation.penalize(peer, 'malformed', `topics request: ${(err as Error).message}`)
      this.logger.debug(`bad topic exchange from ${peer}: ${(err as Error).message}`)
      this.events.emit('topic:protocol-error', { peerId: peer, error: (err as Error).message })
    } finally {
      ticket.release()
    }
  }
}
