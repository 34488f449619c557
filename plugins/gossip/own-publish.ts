import type { PeerId } from '@libp2p/interface'
import { type PluginContext, TokenBucket } from 'meshkit/plugin'
import { invalid } from './errors.js'
import { previewOf } from './preview.js'
import type { GossipService, RouterSettings } from './router.js'
import type { GossipPublishResult, GossipStats } from './types.js'
import type { ValidatorRunner } from './validators.js'

/**
 * This node's own publishing: held to the publisher budget its peers hold it to (they drop and
 * penalize a publisher over it), checked by the topic's validators as peers would, then handed to
 * GossipSub. Every refusal is a coded error with a fix.
 */
export class OwnPublisher {
  readonly #rate: TokenBucket
  readonly #bytes: TokenBucket
  /** Ids of this node's own messages, by payload object, between GossipSub's dispatch and publish()'s return. */
  readonly #ids = new Map<Uint8Array, string>()
  readonly #self: string

  constructor(
    private readonly ctx: PluginContext,
    private readonly service: GossipService,
    private readonly settings: RouterSettings,
    private readonly validators: ValidatorRunner,
    /** The router's counters (`published` is counted here). */
    private readonly stats: Pick<GossipStats, 'published'>,
  ) {
    this.#self = ctx.peerId.toString()
    this.#rate = new TokenBucket(settings.publisherRate, settings.publisherBurst)
    this.#bytes = new TokenBucket(settings.publisherBytesPerMinute / 60, settings.publisherBytesPerMinute)
  }

  /** GossipSub dispatched this node's own message (emitSelf): publish() reads its id. */
  dispatched(data: Uint8Array, msgId: string): void {
    this.#ids.set(data, msgId)
  }

  /** Publishes `data` on `topic`, bound to `gossipTopic` (undefined: the node has not joined it). */
  async publish(
    topic: string,
    gossipTopic: string | undefined,
    data: Uint8Array,
  ): Promise<GossipPublishResult> {
    if (gossipTopic === undefined)
      throw invalid(
        'gossip topic',
        `this node has not joined '${topic}', so it has no peers to send to there`,
        `Join it first: node.api('discovery').join('${topic}'), \`mesh topics join ${topic}\`, or list it in kadTopics({ topics }).`,
      )
    const max = this.settings.maxMessageBytes
    if (data.byteLength > max)
      throw invalid(
        'gossip message',
        `${data.byteLength} bytes is more than the limit of ${max}`,
        'Send less (split it up), or raise gossip({ maxMessageBytes }) on every node of the mesh: a node drops and penalizes messages over its own limit.',
      )
    // peers drop (and penalize) a publisher over its budget: an honest node stays under it
    if (this.#rate.available < 1 || this.#bytes.available < data.byteLength)
      throw invalid(
        'gossip publish',
        `it would go over this node's publisher budget (${this.settings.publisherRate} messages/s in bursts of ${this.settings.publisherBurst}, ${this.settings.publisherBytesPerMinute} bytes/min)`,
        'Publish more slowly (peers drop and penalize a publisher over its budget), or raise publisherRate / publisherBytesPerMinute on every node of the mesh.',
      )
    this.#rate.take()
    this.#bytes.take(data.byteLength)
    // the payload is copied: the caller may reuse its buffer, and the copy identifies the message below
    const payload = data.slice()
    const verdict = await this.validators.run(topic, {
      topic,
      id: '',
      from: this.#self,
      via: this.#self,
      data: payload,
      receivedAt: Date.now(),
    })
    if (verdict !== 'accept')
      throw invalid(
        'gossip message',
        `the validator of topic '${topic}' says '${verdict}' to it`,
        'Peers running the same validator would drop it (and penalize this node for a rejected one): send a message the validator accepts.',
      )
    let sentTo: PeerId[]
    let id: string
    try {
      sentTo = (await this.service.publish(gossipTopic, payload)).recipients
    } finally {
      // GossipSub tells the id (emitSelf, see dispatched()) before its publish() resolves
      id = this.#ids.get(payload) ?? ''
      this.#ids.delete(payload)
    }
    const recipients = sentTo.map(String).filter((p) => p !== this.#self)
    this.stats.published++
    this.ctx.events.emit('gossip:published', {
      topic,
      id,
      bytes: payload.byteLength,
      recipients: recipients.length,
      ...previewOf(payload, this.settings.previewChars),
    })
    return { topic, id, bytes: payload.byteLength, recipients }
  }
}
