import { type GossipSubComponents, type GossipsubOpts, gossipsub, StrictSign } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import {
  definePlugin,
  durationSchema,
  type Libp2pContribution,
  MeshError,
  multiaddrSchema,
  type PluginContext,
  z,
} from 'meshkit/plugin'
import { Admission, guardValidation } from './admission.js'
import { GOSSIP_ERRORS, invalid } from './errors.js'
import { fastMessageId, messageIdBytes, messageIdString } from './message-id.js'
import { type GossipRegistry, GossipRouter, type GossipService } from './router.js'
import type { GossipApi } from './types.js'

export type { PayloadPreview } from './preview.js'
export { gossipTopicName } from './topic-name.js'
export type {
  GossipApi,
  GossipMessage,
  GossipPublishResult,
  GossipStats,
  GossipValidator,
  GossipVerdict,
} from './types.js'

const MiB = 1024 * 1024
const topicName = z.string().min(1).max(128)

const options = z
  .strictObject({
    /**
     * Namespace of the GossipSub topic names (`/<namespace>/gossip/<topic>`), so that meshes with
     * different namespaces never mix messages, even over a shared peer. @default the `namespace` option
     * of the discovery plugin (kadTopics()), else 'meshkit'
     */
    namespace: z.string().min(1).max(64).optional(),
    /**
     * Largest payload, in bytes. Bigger messages are refused on publish, and dropped on receipt (never
     * forwarded) with the peer that sent one penalized: keep it the same on every node of a mesh.
     * @default 65536
     */
    maxMessageBytes: z
      .number()
      .int()
      .positive()
      .max(4 * MiB)
      .default(64 * 1024),
    /** GossipSub's target mesh degree D per topic (Dlo, Dhi, Dout follow from it). @default 6 */
    meshDegree: z.number().int().min(1).max(32).default(6),
    /**
     * Send this node's own messages to every subscribed peer (above the publish score threshold) rather
     * than to its mesh peers only: faster first hop, more traffic. @default false
     */
    floodPublish: z.boolean().default(false),
    /**
     * Peers to always exchange messages with, whatever their score (GossipSub direct peers), as
     * multiaddrs with `/p2p/<peer id>`; GossipSub keeps them connected. Only peers you trust. @default []
     */
    directPeers: z.array(multiaddrSchema("'/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...'")).max(64).default([]),
    /** How long message ids are remembered to drop repeats. @default '2m' */
    seenTtl: durationSchema("'2m'").default(120_000),
    /** Messages per second one publisher (the signer) may have this node relay. @default 20 */
    publisherRate: z.number().positive().max(10_000).default(20),
    /** Payload bytes per minute one publisher may have this node relay. @default 8388608 (8 MiB) */
    publisherBytesPerMinute: z
      .number()
      .int()
      .positive()
      .default(8 * MiB),
    /** Messages per second one connected peer may hand this node (whoever published them). @default 100 */
    peerRate: z.number().positive().max(100_000).default(100),
    /** Payload bytes per second one connected peer may hand this node. @default 1048576 (1 MiB) */
    peerBytesPerSecond: z.number().int().positive().default(MiB),
    /** Messages per second from all peers together. @default 500 */
    globalRate: z.number().positive().max(100_000).default(500),
    /** Payload bytes per second from all peers together. @default 4194304 (4 MiB) */
    globalBytesPerSecond: z
      .number()
      .int()
      .positive()
      .default(4 * MiB),
    /** Longest a topic validator may take; then the message is ignored. @default '1s' */
    validatorTimeout: durationSchema("'1s'").default(1000),
    /** Characters of a message's text in `gossip:message` events (the payload itself never is). @default 200 */
    previewChars: z.number().int().min(0).max(4096).default(200),
  })
  .prefault({})

type GossipOptions = z.output<typeof options>

/** Penalty points (node reputation) under which a peer's GossipSub score stays 0. */
const PENALTY_GRACE = 10

/**
 * GossipSub's peer score: the node's reputation (ctx.reputation: malformed, forged, over-budget
 * messages of every protocol) as the application-specific score P5, IP colocation P6 and behaviour
 * penalties P7 on. Topic scores (P1-P4) stay off: their delivery-rate parameters need each topic's
 * message rate, which apps decide at run time (a quiet chat room would look like a failing peer);
 * invalid messages reach the score through the reputation instead.
 */
function scoreParams(ctx: PluginContext) {
  return {
    appSpecificScore: (peer: string) => {
      const penalty = ctx.reputation.penalty(peer)
      return penalty < PENALTY_GRACE ? 0 : -penalty
    },
    appSpecificWeight: 1,
    IPColocationFactorWeight: -5,
    IPColocationFactorThreshold: 10,
    behaviourPenaltyWeight: -10,
    behaviourPenaltyThreshold: 6,
    behaviourPenaltyDecay: 0.9,
    decayInterval: 1000,
    decayToZero: 0.01,
    // what a peer did is remembered by the reputation; GossipSub's own counters need not outlive it long
    retainScore: 60_000,
  }
}

/**
 * Score thresholds: under -10 (e.g. one malformed message, 25 points) no gossip to or from the peer
 * and it leaves the meshes; under -50 not even flood-published to; under -80 everything it sends is
 * ignored; at 100 points the reputation bans it. PX (peer exchange) is never accepted: this node does
 * not dial peers on another peer's word.
 */
const SCORE_THRESHOLDS = {
  gossipThreshold: -10,
  publishThreshold: -50,
  graylistThreshold: -80,
  acceptPXThreshold: Number.MAX_SAFE_INTEGER,
  opportunisticGraftThreshold: 1,
}

function gossipsubInit(opts: GossipOptions, ctx: PluginContext): Partial<GossipsubOpts> {
  const D = opts.meshDegree
  const Dlo = Math.max(1, Math.floor((D * 2) / 3))
  return {
    globalSignaturePolicy: StrictSign,
    // own messages come back as events: how publish() learns their id (never handed to handlers)
    emitSelf: true,
    floodPublish: opts.floodPublish,
    fallbackToFloodsub: false,
    doPX: false,
    allowPublishToZeroTopicPeers: true,
    D,
    Dlo,
    Dhi: 2 * D,
    Dout: Math.min(2, Math.floor(D / 2), Dlo - 1),
    Dscore: Math.min(4, D),
    Dlazy: D,
    seenTTL: opts.seenTtl,
    // validate() has checked that each ends with a peer id
    directPeers: opts.directPeers.map((a) => ({ id: peerIdOf(a)!, addrs: [multiaddr(a)] })),
    scoreParams: scoreParams(ctx),
    scoreThresholds: SCORE_THRESHOLDS,
    // one RPC of a peer at a time, one message at a time: a flood waits in the peer's own stream
    awaitRpcHandler: true,
    awaitRpcMessageHandler: true,
    // an RPC frame may carry a few full messages (an IWANT answer) and control messages
    maxInboundDataLength: Math.max(MiB, 16 * opts.maxMessageBytes),
    maxOutboundBufferSize: Math.max(4 * MiB, 32 * opts.maxMessageBytes),
    maxInboundStreams: 4,
    maxOutboundStreams: 4,
    // about 250 topics a peer may be subscribed to, as this node tracks it
    maxTopicBytesPerPeer: 256 * 1024,
    // GossipSub's defaults, but subscriptions: more than ~250 per RPC cannot be tracked anyway
    decodeRpcLimits: {
      maxSubscriptions: 512,
      maxMessages: 5000,
      maxIhaveMessageIDs: 5000,
      maxIwantMessageIDs: 5000,
      maxIdontwantMessageIDs: 512,
      maxControlMessages: 5000,
      maxPeerInfos: 16,
    },
    msgIdFn: messageIdBytes,
    fastMsgIdFn: fastMessageId,
    msgIdToStrFn: messageIdString,
    debugName: 'meshkit:gossip',
  }
}

/** The peer id a direct peer's address ends with (`/p2p/<id>`), or undefined. */
function peerIdOf(address: string) {
  const id = /\/p2p\/([^/]+)$/.exec(address)?.[1]
  if (!id) return undefined
  try {
    return peerIdFromString(id)
  } catch {
    return undefined
  }
}

/**
 * Topic messaging with GossipSub (@libp2p/gossipsub, v1.1/1.2): `publish(topic, bytes)` reaches every
 * member of a topic, also members this node has no connection to (each forwards to its own mesh
 * peers). Bound to the `discovery` slot: the node is subscribed to exactly the topics it joined (config
 * topics and runtime joins), under `/<namespace>/gossip/<topic>`.
 *
 * Hostile peers: messages are signed and checked (StrictSign); a message over `maxMessageBytes`, one a
 * topic validator rejects and one with a bad signature is dropped and its sender penalized; per-peer,
 * per-publisher and global rates bound the work and what GossipSub's time-bounded caches hold; peer
 * scoring is on (see scoreParams). Events: `gossip:message`, `gossip:published`, `gossip:rejected`,
 * `gossip:peer`, `gossip:peer:lost` (see docs/gossip.md).
 */
export const gossip = definePlugin({
  name: 'gossip',
  provides: ['gossip'],
  dependencies: ['transport', 'identify', 'discovery'],
  options,
  validate: (opts) =>
    opts.directPeers
      .filter((a) => !peerIdOf(a))
      .map((a) => ({
        message: `gossip directPeers: ${a} does not end with /p2p/<peer id>`,
        hint: 'A direct peer is trusted by its id: write its address with /p2p/<peer id> at the end.',
      })),
  create: (opts) => {
    const registry: GossipRegistry = { handlers: new Map(), validators: new Map() }
    let service: GossipService | undefined
    let router: GossipRouter | undefined
    const need = (): GossipRouter => {
      if (!router) throw GOSSIP_ERRORS.create('MESH_ERR_GOSSIP_NOT_STARTED', [])
      return router
    }
    const validTopic = (topic: string) => {
      const parsed = topicName.safeParse(topic)
      if (!parsed.success)
        throw invalid(
          'gossip topic',
          `${JSON.stringify(topic)?.slice(0, 40)} is not a string of 1 to 128 characters`,
          'Name the topic as you joined it through discovery (1 to 128 characters).',
        )
      return parsed.data
    }
    /** Adds `item` to the topic's set; returns the function that removes it. */
    const addTo = <T>(map: Map<string, Set<T>>, topic: string, item: T) => {
      const set = map.get(topic) ?? new Set<T>()
      map.set(topic, set)
      set.add(item)
      return () => {
        set.delete(item)
        if (set.size === 0 && map.get(topic) === set) map.delete(topic)
      }
    }
    const api: GossipApi = {
      maxMessageBytes: opts.maxMessageBytes,
      publish: (topic, data) =>
        need().publish(validTopic(topic), typeof data === 'string' ? new TextEncoder().encode(data) : data),
      subscribe: (topic, handler) => addTo(registry.handlers, validTopic(topic), handler),
      addValidator: (topic, validator) => addTo(registry.validators, validTopic(topic), validator),
      topics: () => router?.topics() ?? [],
      peers: (topic) => router?.peers(topic) ?? [],
      meshPeers: (topic) => router?.meshPeers(topic) ?? [],
      stats: () => need().stats(),
    }
    return {
      setup: (ctx) => {
        for (const a of opts.directPeers) ctx.peerAddresses.trust(a)
        return api
      },
      libp2p: (ctx): Libp2pContribution => ({
        services: {
          pubsub: (components: GossipSubComponents) => {
            const made = gossipsub(gossipsubInit(opts, ctx))(components)
            const admission = new Admission(opts, (topic) => router?.subscribed(topic) ?? false)
            const guarded = guardValidation(
              made,
              admission,
              (peer, topic, why, size) => router?.refused(peer, topic, why, size),
              (peer, topic, error) => router?.invalidMessage(peer, topic, error),
            )
            if (!guarded || typeof (made as Partial<GossipService>).getMeshPeers !== 'function')
              throw new MeshError(
                'MESH_ERR_NODE_CREATE_FAILED',
                'Could not create the libp2p node: this @libp2p/gossipsub lacks validateReceivedMessage() or getMeshPeers(), which the gossip plugin relies on',
                { hint: 'Install the @libp2p/gossipsub version Meshkit names in its package.json (17.x).' },
              )
            service = made as GossipService
            return made
          },
        } as unknown as Libp2pContribution['services'],
      }),
      start: (ctx) => {
        if (!service) throw new Error('the gossipsub service was not created')
        const publisherBurst = Math.max(10, Math.ceil(opts.publisherRate * 5))
        const publishers = ctx.budget('gossip-publishers', {
          ratePerSecond: opts.publisherRate,
          burst: publisherBurst,
          // each in-flight message holds a ticket while its validators run
          concurrency: 64,
          bytesPerMinute: opts.publisherBytesPerMinute,
          globalConcurrency: 256,
          globalRatePerSecond: opts.globalRate,
        })
        router = new GossipRouter(
          ctx,
          service,
          {
            namespace: opts.namespace,
            maxMessageBytes: opts.maxMessageBytes,
            previewChars: opts.previewChars,
            validatorTimeout: opts.validatorTimeout,
            reconcileInterval: 5000,
            publisherRate: opts.publisherRate,
            publisherBurst,
            publisherBytesPerMinute: opts.publisherBytesPerMinute,
          },
          registry,
          publishers,
          (message) => messageIdString(messageIdBytes(message)),
        )
        router.start()
      },
      stop: () => {
        router?.stop()
        router = undefined
      },
    }
  },
})
