import type { GossipSub, GossipsubMessage, Message, SubscriptionChangeData } from '@libp2p/gossipsub'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import { type Budget, type DiscoverySlotApi, type PluginContext, TokenBucket } from 'meshkit/plugin'
import type { AdmissionRefusal, InvalidMessage } from './admission.js'
import { OwnPublisher } from './own-publish.js'
import { previewOf } from './preview.js'
import { gossipTopicName } from './topic-name.js'
import type { GossipMessage, GossipPublishResult, GossipStats, GossipValidator } from './types.js'
import { ValidatorRunner } from './validators.js'

/** GossipSub as the router uses it: `getMeshPeers` is on the class, not (yet) on its interface. */
export type GossipService = GossipSub & { getMeshPeers(topic: string): string[] }

/** Handlers and validators by topic: registered at any time (before start, across restarts). */
export interface GossipRegistry {
  handlers: Map<string, Set<(message: GossipMessage) => void | Promise<void>>>
  validators: Map<string, Set<GossipValidator>>
}

export interface RouterSettings {
  /** The `namespace` option; undefined: the discovery plugin's, else 'meshkit'. */
  namespace?: string
  maxMessageBytes: number
  previewChars: number
  validatorTimeout: number
  /** How often the bound to discovery's topics is checked besides its events, ms. */
  reconcileInterval: number
  /** The publisher budget peers hold this node to (the same numbers as theirs): kept on publish. */
  publisherRate: number
  publisherBurst: number
  publisherBytesPerMinute: number
}

interface JoinedTopic {
  gossipTopic: string
  /** Connected peers subscribed to it (as last reported in events). */
  peers: Set<string>
}

/** A `gossip:rejected` and `gossip:peer` event flood (a peer decides how often) is cut to these rates. */
const REJECT_EVENTS_PER_SECOND = 10
const PEER_EVENTS_PER_SECOND = 50

/**
 * Binds GossipSub to the topics the node joins through the `discovery` slot: subscribed to
 * `/<namespace>/gossip/<topic>` for each joined topic, unsubscribed when it is left. Runs the topic
 * validators and the publishers' budget on received messages, hands accepted ones to the topic's
 * handlers and the event bus, penalizes peers that send what no honest peer sends.
 */
export class GossipRouter {
  readonly #topics = new Map<string, JoinedTopic>()
  readonly #byGossip = new Map<string, string>()
  readonly #rejectEvents = new TokenBucket(REJECT_EVENTS_PER_SECOND, REJECT_EVENTS_PER_SECOND * 2)
  readonly #peerEvents = new TokenBucket(PEER_EVENTS_PER_SECOND, PEER_EVENTS_PER_SECOND * 2)
  readonly #offs: Array<() => void> = []
  readonly #validators: ValidatorRunner
  readonly #discovery: DiscoverySlotApi
  /** This node's own publishing, held to the budget its peers hold it to. */
  readonly #publisher: OwnPublisher
  #timer?: NodeJS.Timeout
  readonly #stats: Omit<GossipStats, 'topics'> = {
    received: 0,
    published: 0,
    rejected: { oversize: 0, validator: 0, invalid: 0 },
    dropped: {
      unknownTopic: 0,
      peerRate: 0,
      globalRate: 0,
      publisherRate: 0,
      bannedPublisher: 0,
      validator: 0,
    },
    eventsDropped: 0,
  }

  constructor(
    private readonly ctx: PluginContext,
    private readonly service: GossipService,
    private readonly settings: RouterSettings,
    private readonly registry: GossipRegistry,
    private readonly publishers: Budget,
    private readonly messageId: (message: Message) => string,
  ) {
    this.#discovery = ctx.use<DiscoverySlotApi>('discovery')
    this.#validators = new ValidatorRunner(registry.validators, settings.validatorTimeout, ctx.logger)
    this.#publisher = new OwnPublisher(ctx, service, settings, this.#validators, this.#stats)
  }

  /** Whether `gossipTopic` is one this node is subscribed to. */
  subscribed(gossipTopic: string): boolean {
    return this.#byGossip.has(gossipTopic)
  }

  start(): void {
    const onMessage = (e: CustomEvent<GossipsubMessage>) => this.#onMessage(e.detail)
    const onSubscriptions = (e: CustomEvent<SubscriptionChangeData>) => {
      // one check per topic of ours, however many (repeated) subscriptions the RPC carried
      const topics = new Set<string>()
      for (const s of e.detail.subscriptions) {
        const topic = this.#byGossip.get(s.topic)
        if (topic) topics.add(topic)
      }
      for (const topic of topics) this.#syncPeers(topic)
    }
    // disconnections and unsubscriptions the events above do not tell: checked once a heartbeat (1 s)
    const onHeartbeat = () => {
      for (const topic of this.#topics.keys()) this.#syncPeers(topic)
    }
    this.service.addEventListener('gossipsub:message', onMessage)
    this.service.addEventListener('subscription-change', onSubscriptions)
    this.service.addEventListener('gossipsub:heartbeat', onHeartbeat)
    this.#offs.push(
      () => this.service.removeEventListener('gossipsub:message', onMessage),
      () => this.service.removeEventListener('subscription-change', onSubscriptions),
      () => this.service.removeEventListener('gossipsub:heartbeat', onHeartbeat),
      // the bus is the kernel's (another node's topics may pass by during a swap): each event only
      // triggers a check against this node's own discovery API
      this.ctx.events.on('topic:joined', () => this.reconcile()),
      this.ctx.events.on('topic:left', () => this.reconcile()),
    )
    // a discovery provider that emits no topic events is followed too
    this.#timer = setInterval(() => this.reconcile(), this.settings.reconcileInterval)
    this.#timer.unref()
    this.reconcile()
  }

  stop(): void {
    clearInterval(this.#timer)
    for (const off of this.#offs.splice(0)) off()
    for (const topic of [...this.#topics.keys()]) this.#unsubscribe(topic)
    this.#validators.flush()
  }

  /** The namespace of gossip topic names: the option, else the discovery plugin's `namespace` option. */
  namespace(): string {
    if (this.settings.namespace) return this.settings.namespace
    const provider = this.ctx.config.plugins.find((p) => p.plugin.provides.includes('discovery'))
    const ns = (provider?.options as { namespace?: unknown } | undefined)?.namespace
    return typeof ns === 'string' && ns.length > 0 ? ns : 'meshkit'
  }

  /** Subscribes to the joined topics and unsubscribes from the others. */
  reconcile(): void {
    let joined: Set<string>
    try {
      joined = new Set(this.#discovery.topics())
    } catch (err) {
      this.ctx.logger.debug(`discovery topics could not be read: ${err}`)
      return
    }
    const ns = this.namespace()
    for (const [topic, t] of this.#topics)
      if (!joined.has(topic) || t.gossipTopic !== gossipTopicName(ns, topic)) this.#unsubscribe(topic)
    for (const topic of joined)
      if (!this.#topics.has(topic)) this.#subscribe(topic, gossipTopicName(ns, topic))
  }

  topics(): string[] {
    return [...this.#topics.keys()]
  }

  peers(topic: string): string[] {
    return [...(this.#topics.get(topic)?.peers ?? [])]
  }

  meshPeers(topic: string): string[] {
    const t = this.#topics.get(topic)
    return t ? this.service.getMeshPeers(t.gossipTopic) : []
  }

  stats(): GossipStats {
    return {
      topics: [...this.#topics].map(([topic, t]) => ({
        topic,
        gossipTopic: t.gossipTopic,
        peers: t.peers.size,
        meshPeers: this.service.getMeshPeers(t.gossipTopic).length,
      })),
      ...structuredClone(this.#stats),
    }
  }

  /** Publishes `data` on a joined `topic` (see own-publish.ts). */
  async publish(topic: string, data: Uint8Array): Promise<GossipPublishResult> {
    this.reconcile()
    return this.#publisher.publish(topic, this.#topics.get(topic)?.gossipTopic, data)
  }

  /** Called by the admission guard when it stopped a message. */
  refused(peer: string, gossipTopic: string, why: AdmissionRefusal, size: number): void {
    switch (why) {
      case 'unknown-topic':
        this.#stats.dropped.unknownTopic++
        return
      case 'peer-rate':
        this.#stats.dropped.peerRate++
        return
      case 'global-rate':
        this.#stats.dropped.globalRate++
        return
      case 'oversize': {
        this.#stats.rejected.oversize++
        const max = this.settings.maxMessageBytes
        this.ctx.reputation.penalize(peer, 'malformed', `gossip message of ${size} bytes (limit ${max})`)
        this.#rejectEvent(this.#byGossip.get(gossipTopic) ?? gossipTopic, peer, 'oversize', size)
      }
    }
  }

  /** Called by the admission guard for a message GossipSub found invalid (bad signature, seqno, key). */
  invalidMessage(peer: string, gossipTopic: string, error: InvalidMessage | undefined): void {
    this.#stats.rejected.invalid++
    const forged = error === 'invalid_signature' || error === 'invalid_peerid'
    this.ctx.reputation.penalize(
      peer,
      forged ? 'forged' : 'malformed',
      `gossip message: ${error ?? 'invalid'}`,
    )
    this.#rejectEvent(this.#byGossip.get(gossipTopic) ?? gossipTopic, peer, error ?? 'invalid')
  }

  #subscribe(topic: string, gossipTopic: string): void {
    this.#topics.set(topic, { gossipTopic, peers: new Set() })
    this.#byGossip.set(gossipTopic, topic)
    this.service.topicValidators.set(gossipTopic, (source, message) =>
      this.#validateReceived(topic, source, message),
    )
    this.service.subscribe(gossipTopic)
    this.#syncPeers(topic)
  }

  #unsubscribe(topic: string): void {
    const t = this.#topics.get(topic)
    if (!t) return
    this.#topics.delete(topic)
    this.#byGossip.delete(t.gossipTopic)
    this.service.topicValidators.delete(t.gossipTopic)
    try {
      this.service.unsubscribe(t.gossipTopic)
    } catch (err) {
      // GossipSub already stopped (the node is going down): nothing to tell peers
      this.ctx.logger.debug(`unsubscribe ${t.gossipTopic}: ${err}`)
    }
  }

  /** Brings a topic's peer set in line with GossipSub's subscribers; tells the differences as events. */
  #syncPeers(topic: string): void {
    const t = this.#topics.get(topic)
    if (!t) return
    const now = new Set(this.service.getSubscribers(t.gossipTopic).map(String))
    for (const peer of now)
      if (!t.peers.has(peer)) {
        t.peers.add(peer)
        this.#peerEvent('gossip:peer', { topic, peerId: peer })
      }
    for (const peer of t.peers)
      if (!now.has(peer)) {
        t.peers.delete(peer)
        this.#peerEvent('gossip:peer:lost', { topic, peerId: peer })
      }
  }

  #peerEvent(name: string, fields: Record<string, unknown>): void {
    if (this.#peerEvents.take()) this.ctx.events.emit(name, fields)
    else this.#stats.eventsDropped++
  }

  #rejectEvent(topic: string, peer: string, reason: string, bytes?: number): void {
    if (this.#rejectEvents.take())
      this.ctx.events.emit('gossip:rejected', { topic, peerId: peer, reason, bytes })
    else this.#stats.eventsDropped++
  }

  /** GossipSub's topic validator for `topic`: the publisher's budget, then the app's validators. */
  async #validateReceived(topic: string, source: PeerId, message: Message): Promise<TopicValidatorResult> {
    // StrictSign: GossipSub has verified the signature, so `from` is the publisher
    if (message.type !== 'signed') return TopicValidatorResult.Reject
    const from = message.from.toString()
    const via = source.toString()
    // a banned publisher's messages do not come in through other peers either
    if (this.ctx.reputation.isBanned(from)) {
      this.#stats.dropped.bannedPublisher++
      return TopicValidatorResult.Ignore
    }
    // a publisher over its budget is penalized by the kernel (its signature proves the messages are its)
    const ticket = this.publishers.admit(from)
    if (!ticket.ok) {
      this.#stats.dropped.publisherRate++
      return TopicValidatorResult.Ignore
    }
    try {
      if (!ticket.spend(message.data.byteLength)) {
        this.#stats.dropped.publisherRate++
        return TopicValidatorResult.Ignore
      }
      const verdict = await this.#validators.run(topic, {
        topic,
        id: this.messageId(message),
        from,
        via,
        data: message.data,
        receivedAt: Date.now(),
      })
      if (verdict === 'accept') return TopicValidatorResult.Accept
      if (verdict === 'ignore') {
        this.#stats.dropped.validator++
        return TopicValidatorResult.Ignore
      }
      // an honest peer runs the same validator before it forwards: the one that sent it is to blame
      this.#stats.rejected.validator++
      this.ctx.reputation.penalize(via, 'malformed', `gossip message rejected by the validator of '${topic}'`)
      this.#rejectEvent(topic, via, 'validator', message.data.byteLength)
      return TopicValidatorResult.Reject
    } finally {
      ticket.release()
    }
  }

  #onMessage({ propagationSource, msgId, msg }: GossipsubMessage): void {
    if (propagationSource.equals(this.ctx.peerId)) {
      // this node's own message (emitSelf): publish() reads its id
      this.#publisher.dispatched(msg.data, msgId)
      return
    }
    const topic = this.#byGossip.get(msg.topic)
    if (!topic || msg.type !== 'signed') return
    const message: GossipMessage = {
      topic,
      id: msgId,
      from: msg.from.toString(),
      via: propagationSource.toString(),
      data: msg.data,
      receivedAt: Date.now(),
    }
    this.#stats.received++
    for (const handler of this.registry.handlers.get(topic) ?? []) {
      try {
        const result = handler(message)
        if (result instanceof Promise)
          result.catch((err) => this.ctx.logger.debug(`a gossip handler of '${topic}' failed: ${err}`))
      } catch (err) {
        this.ctx.logger.debug(`a gossip handler of '${topic}' threw: ${err}`)
      }
    }
    this.ctx.events.emit('gossip:message', {
      topic,
      id: msgId,
      from: message.from,
      via: message.via,
      bytes: msg.data.byteLength,
      ...previewOf(msg.data, this.settings.previewChars),
    })
  }
}
