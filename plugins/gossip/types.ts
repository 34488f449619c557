/** A message of a joined topic, as handlers and validators see it. */
export interface GossipMessage {
  /** The topic (as joined through the `discovery` slot, e.g. `lobby`). */
  topic: string
  /** GossipSub's message id (publisher key + sequence number), base64url; '' for a message not yet published. */
  id: string
  /** The peer that published it: its signature is verified (GossipSub's StrictSign). */
  from: string
  /** The connected peer that handed it to this node (`from` for a direct neighbour). */
  via: string
  /** The payload, at most `maxMessageBytes`. */
  data: Uint8Array
  /** When this node received it (ms since the epoch). */
  receivedAt: number
}

/**
 * What a validator says about a message: `accept` (deliver and forward), `ignore` (drop it, nobody is
 * blamed) or `reject` (drop it and penalize the peer that forwarded it: a peer running the same
 * validator would never have sent it).
 */
export type GossipVerdict = 'accept' | 'reject' | 'ignore'

/**
 * A topic validator: runs on every message of its topic before the message is delivered or forwarded,
 * and on this node's own messages before they are published. Keep it fast (it holds up the peer's
 * stream); past `validatorTimeout` the message is ignored, and one that throws ignores it too.
 */
export type GossipValidator = (message: GossipMessage) => GossipVerdict | Promise<GossipVerdict>

/** What `publish()` resolves with. */
export interface GossipPublishResult {
  topic: string
  /** The message id (as receivers see it in `GossipMessage.id`). */
  id: string
  bytes: number
  /**
   * The connected peers it was sent to directly (mesh peers of the topic, or with `floodPublish` every
   * subscribed peer); they forward it to the rest. Empty: no subscribed peer is connected yet, so nobody
   * got it.
   */
  recipients: string[]
}

/** Counters since start, and the topics bound now. */
export interface GossipStats {
  topics: Array<{
    topic: string
    /** The GossipSub topic it is bound to (`/<namespace>/gossip/<topic>`). */
    gossipTopic: string
    /** Connected peers subscribed to it. */
    peers: number
    /** Of those, the ones in this node's GossipSub mesh of the topic. */
    meshPeers: number
  }>
  /** Messages of other peers delivered to this node. */
  received: number
  /** Messages this node published. */
  published: number
  /** Dropped, and the peer that sent them penalized. */
  rejected: {
    /** Over `maxMessageBytes`. */
    oversize: number
    /** Rejected by a topic validator. */
    validator: number
    /** GossipSub's own checks failed: a bad signature, seqno or publisher key. */
    invalid: number
  }
  /** Dropped without blaming the peer that sent them. */
  dropped: {
    /** For a topic this node is not subscribed to. */
    unknownTopic: number
    /** Over the sending peer's `peerRate` / `peerBytesPerSecond`. */
    peerRate: number
    /** Over `globalRate` / `globalBytesPerSecond` (the node was busy). */
    globalRate: number
    /** Over the publisher's `publisherRate` / `publisherBytesPerMinute` (the publisher is penalized). */
    publisherRate: number
    /** Published by a peer this node has banned (forwarded by another). */
    bannedPublisher: number
    /** A topic validator said `ignore` (or failed, or took too long). */
    validator: number
  }
  /** `gossip:rejected` / `gossip:peer` events left out because too many came at once. */
  eventsDropped: number
}

/** What `gossip()` offers other plugins (`ctx.use('gossip')`) and apps (`node.api('gossip')`). */
export interface GossipApi {
  /**
   * Publishes `data` (a string is sent as UTF-8) to a joined topic. Throws MESH_ERR_INVALID_ARGUMENT
   * (with a hint) when the node has not joined the topic, the message is over `maxMessageBytes`, or the
   * topic's validators do not accept it. Resolves once it is sent to the directly connected peers.
   */
  publish(topic: string, data: Uint8Array | string): Promise<GossipPublishResult>
  /**
   * Calls `handler` with every message of `topic` other peers publish, while the node is a member of
   * the topic (joined through the `discovery` slot: subscribing does not join). This node's own messages
   * are not handed back. Returns the function that removes the handler.
   */
  subscribe(topic: string, handler: (message: GossipMessage) => void | Promise<void>): () => void
  /**
   * Adds a validator for `topic` (they run in the order added; the first verdict that is not `accept`
   * wins). Returns the function that removes it.
   */
  addValidator(topic: string, validator: GossipValidator): () => void
  /** The topics GossipSub is bound to: the joined ones. */
  topics(): string[]
  /** The connected peers subscribed to a joined topic (the ones messages flow with). */
  peers(topic: string): string[]
  /** Of those, the peers in this node's GossipSub mesh of the topic. */
  meshPeers(topic: string): string[]
  /** The payload limit (`maxMessageBytes`). */
  readonly maxMessageBytes: number
  stats(): GossipStats
}
