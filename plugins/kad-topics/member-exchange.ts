import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { coalescePerKey, LruMap } from 'meshkit/plugin'
import {
  exchangeConnection,
  LIMITED_EXCHANGES,
  LIMITED_MESSAGE_BYTES,
  takeLimited,
} from './limited-connection.js'
import {
  MemberSigner,
  MemberVerifier,
  type RecordVerdict,
  type SignedMember,
  VERIFIER_DEFAULTS,
} from './member-record.js'
import type { MemberProof } from './member-registry.js'
import { replyMembers } from './member-reply.js'
import type { TopicPeers } from './topic-peers.js'
import type { TopicSecurity, TopicState } from './topic-state.js'
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
} from './wire.js'
import { WorkQueue } from './work-queue.js'

/** Signature checks one message may cost (cache hits are free). */
const MAX_CHECKS_PER_MESSAGE = 128

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
 * The member exchange (`/mesh/topics/*`): with every connected peer, this node tells the topics it
 * joined and hears theirs, and rendezvous points pass on the members they know. It runs on connections
 * that are up, direct or hole-punched, never dialling: a peer reached only through a relay is asked
 * once an unlimited connection to it opens (see exchangeConnection()).
 *
 * Hostile peers: member records are signed by the members (relayers cannot forge them; a forged one
 * drops the message and penalizes its sender), addresses are checked against the node's address scope
 * before they are kept or passed on, and every request costs bounded work within the exchange's budget.
 */
export class MemberExchange {
  readonly #verifier: MemberVerifier
  readonly #signer: MemberSigner
  readonly #queue = new WorkQueue()
  /** Exchanges made (asked) and served per limited connection (see exchangeConnection()). */
  readonly #limitedAsked = new WeakMap<Connection, number>()
  readonly #limitedServed = new WeakMap<Connection, number>()
  /** Orders claims: a counter, and per peer the count when its last claim was applied (bounded). */
  #claimSeq = 0
  readonly #claimApplied = new LruMap<string, number>(4096)
  #ownAddrs?: { at: number; addrs: string[] }

  constructor(
    private readonly state: TopicState,
    private readonly security: TopicSecurity,
    private readonly peers: TopicPeers,
  ) {
    this.#verifier = new MemberVerifier({ ...VERIFIER_DEFAULTS, ttl: () => state.settings.memberTtl })
    this.#signer = new MemberSigner(security.privateKey, () => state.settings.memberTtl / 3)
  }

  /**
   * Serves both protocol versions and asks every peer this node dials, while it joined a topic.
   * Returns what removes the listener (the handlers go with unhandle()).
   */
  async handle(): Promise<() => void> {
    const { libp2p } = this.state
    for (const protocol of [TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1]) {
      const version = WIRE_VERSION[protocol]
      await libp2p.handle(protocol, (stream, connection) => this.#serve(stream, connection, version), {
        maxInboundStreams: 8,
        maxOutboundStreams: 8,
        // small and counted there (LIMITED_EXCHANGES, LIMITED_MESSAGE_BYTES): see exchangeConnection()
        runOnLimitedConnection: true,
      })
    }
    // A node that joined no topic has nothing to tell and nothing to ask: no exchange stream on its
    // connections (join() exchanges with every connected peer; members ask it while they are short).
    const onOpen = (evt: CustomEvent<Connection>) => {
      if (evt.detail.direction === 'outbound' && this.state.joined.size > 0)
        void this.exchange(evt.detail.remotePeer)
    }
    libp2p.addEventListener('connection:open', onOpen)
    return () => libp2p.removeEventListener('connection:open', onOpen)
  }

  async unhandle(): Promise<void> {
    await this.state.libp2p.unhandle([TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1]).catch(() => {})
  }

  /** This node's own part of a message: its joined keys, addresses and (version 2) signatures. */
  async #own(version: 1 | 2): Promise<TopicsRequest> {
    const joined = [...this.state.keyToTopic.keys()].slice(0, LIMITS.maxJoined)
    const keys = new Set(joined)
    const short = [...this.state.joined.values()]
      .filter((j) => keys.has(j.key) && j.peers.size < this.state.settings.connectionsPerTopic)
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
  readonly exchange = coalescePerKey(
    (peer: PeerId) => this.#exchangeOnce(peer),
    (peer) => peer.toString(),
    () => !this.state.signal.aborted,
  )

  async #exchangeOnce(peer: PeerId): Promise<void> {
    const id = peer.toString()
    // claims of this peer applied from now on are fresher than what its answer to this request says
    const asked = ++this.#claimSeq
    let stream: Stream | undefined
    try {
      const connection = exchangeConnection(this.state.libp2p, peer, this.#limitedAsked)
      if (!connection) return // not connected, or a relayed connection that carried its share
      const limited = connection.limits !== undefined
      const maxBytes = limited ? LIMITED_MESSAGE_BYTES : LIMITS.maxMessageBytes
      const signal = AbortSignal.any([this.state.signal, AbortSignal.timeout(10_000)])
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
      await this.#applyResponse(id, response, connection, asked)
      this.peers.fillAll()
    } catch (err) {
      stream?.abort(err as Error)
      if (this.state.signal.aborted) return
      if (isMalformed(err)) {
        this.security.reputation.penalize(id, 'malformed', `topics response: ${(err as Error).message}`)
      }
      this.state.logger.debug(`topic exchange with ${id} failed: ${(err as Error).message}`)
    }
  }

  /**
   * Applies a response: first every signature in it is checked (bounded, see MemberVerifier), and a
   * forged one drops the whole response (and penalizes its sender); then the sender's own claims, then
   * the members it relayed for keys this node joined: signed ones only, and only addresses in scope.
   */
  async #applyResponse(
    peer: string,
    response: TopicsResponse,
    connection: Connection,
    asked: number,
  ): Promise<void> {
    const own = await this.#verify(peer, this.#ownRecords(peer, response), 'response')
    const relayed: Array<SignedMember & { short: boolean }> = []
    let unsigned = 0
    for (const [key, members] of Object.entries(response.members)) {
      if (!this.state.keyToTopic.has(key)) continue
      for (const m of members) {
        if (m.id === this.state.self || m.id === peer) continue
        if (m.ts === undefined || m.sig === undefined) {
          unsigned++
          continue
        }
        const known = this.state.registry.get(key, m.id)
        if (known && !known.direct && known.lastSeen >= m.ts) continue // nothing newer
        relayed.push({ id: m.id, key, addrs: m.addrs, ts: m.ts, sig: m.sig, short: m.short === true })
      }
    }
    const verdicts = await this.#verify(peer, relayed, 'response')
    this.state.logger.debug(
      `exchange with ${peer}: it joined ${response.joined.length} topics, relayed ${relayed.length} signed members` +
        (unsigned > 0 ? ` and ${unsigned} unsigned ones (dropped)` : ''),
    )
    await this.#work(() => this.#learnResponse(peer, response, own, relayed, verdicts, connection, asked))
  }

  #learnResponse(
    peer: string,
    response: TopicsResponse,
    own: RecordVerdict[],
    relayed: Array<SignedMember & { short: boolean }>,
    verdicts: RecordVerdict[],
    connection: Connection,
    asked: number,
  ): void {
    // the peer told this node something newer meanwhile (its own request, e.g. after leaving a topic,
    // served while this answer was on its way): the answer's claims are stale, its relayed members not
    if ((this.#claimApplied.get(peer) ?? 0) <= asked) this.#applyClaims(peer, response, own, connection)
    relayed.forEach((r, i) => {
      if (verdicts[i] !== 'valid') return
      const addrs = this.security.addresses.filter(r.addrs)
      if (addrs.length === 0) return
      const proof =
        addrs.length === r.addrs.length ? { addrs: [...r.addrs], ts: r.ts, sig: r.sig } : undefined
      this.peers.learn(r.key, r.id, {
        addrs,
        direct: false,
        short: r.short,
        source: peer,
        proof,
        lastSeen: r.ts,
      })
    })
  }

  /** Answers a peer's exchange request. Malformed, forged or oversized input resets the stream. */
  async #serve(stream: Stream, connection: Connection, version: 1 | 2): Promise<void> {
    const peer = connection.remotePeer.toString()
    const ticket = this.security.budget.admit(peer)
    if (!ticket.ok) {
      this.state.logger.debug(`refused an exchange of ${peer}: over budget (${ticket.reason})`)
      stream.abort(new Error(`topics: over budget (${ticket.reason})`))
      return
    }
    try {
      const limited = connection.limits !== undefined
      // a relayed connection carries a few small exchanges (see exchangeConnection()); more are refused
      if (!takeLimited(connection, this.#limitedServed))
        throw new Error(`topics: this relayed connection carried its ${LIMITED_EXCHANGES} exchanges`)
      const maxBytes = limited ? LIMITED_MESSAGE_BYTES : LIMITS.maxMessageBytes
      const signal = AbortSignal.any([this.state.signal, AbortSignal.timeout(10_000)])
      const lp = lpStream(stream, { maxDataLength: maxBytes })
      const bytes = (await lp.read({ signal })).subarray()
      if (!ticket.spend(bytes.byteLength)) throw new Error('topics: over its byte budget')
      const request = await this.#work(() => decodeRequest(bytes, version))
      const verdicts = await this.#verify(peer, this.#ownRecords(peer, request), 'request')
      const own = await this.#own(version)
      const { members, encoded } = await this.#work(() => {
        this.#applyClaims(peer, request, verdicts, connection)
        const room = maxBytes - encode({ ...own, members: {} }).byteLength - 16
        const members = replyMembers(
          this.state.registry,
          this.#verifier,
          request.joined,
          peer,
          room,
          this.#connectedNow(),
        )
        return { members, encoded: encode({ ...own, members } satisfies TopicsResponse) }
      })
      if (encoded.byteLength > maxBytes) throw new Error('topics: response too large') // own part too big
      this.state.logger.debug(
        `served ${peer}: it joined ${request.joined.length} topics; sending ${Object.keys(members).length} member lists (${encoded.byteLength} bytes)`,
      )
      await lp.write(encoded, { signal })
      await stream.close({ signal }).catch(() => {})
      this.peers.fillAll()
    } catch (err) {
      stream.abort(err as Error)
      if (isMalformed(err))
        this.security.reputation.penalize(peer, 'malformed', `topics request: ${(err as Error).message}`)
      this.state.logger.debug(`bad topic exchange from ${peer}: ${(err as Error).message}`)
      this.state.events.emit('topic:protocol-error', { peerId: peer, error: (err as Error).message })
    } finally {
      ticket.release()
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
    this.#claimApplied.set(peer, ++this.#claimSeq)
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
    const previous = this.state.remoteJoined.get(peer)
    for (const key of previous ?? []) if (!next.has(key)) this.state.registry.remove(key, peer)
    this.state.remoteJoined.set(peer, next)
    claim.joined.forEach((key, i) => {
      const proof: MemberProof | undefined =
        verdicts[i] === 'valid' && relayable && claim.ts !== undefined && claim.sigs
          ? { addrs: [...claim.addrs], ts: claim.ts, sig: claim.sigs[i] }
          : undefined
      if (!proof && !this.state.keyToTopic.has(key)) return
      this.peers.learn(key, peer, {
        addrs: dialable,
        direct: true,
        short: short.has(key),
        source: peer,
        proof,
      })
    })
    for (const joined of this.state.joined.values()) {
      if (next.has(joined.key)) this.peers.mark(joined, peer)
      else if (joined.peers.has(peer)) this.peers.lost(joined, peer, 'left')
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
   * Whether this node has a connection to a peer, by id: the connections are read once, at the first
   * question (an answer asks for at most the members of the keys it covers).
   */
  #connectedNow(): (id: string) => boolean {
    let ids: Set<string> | undefined
    return (id) => {
      ids ??= new Set(this.state.libp2p.getConnections().map((c) => c.remotePeer.toString()))
      return ids.has(id)
    }
  }

  /** This node's addresses in its own scope (at most 16), read from libp2p at most once a second. */
  #selfAddrs(): string[] {
    const now = Date.now()
    if (this.#ownAddrs && now - this.#ownAddrs.at < 1000) return this.#ownAddrs.addrs
    const addrs = this.security.addresses
      .filter(this.state.libp2p.getMultiaddrs())
      .map((ma) => ma.toString())
      .filter((a) => a.length <= LIMITS.maxStringLength)
      .slice(0, LIMITS.maxAddrs)
    this.#ownAddrs = { at: now, addrs }
    return addrs
  }
}
