import type { GossipSub } from '@libp2p/gossipsub'
import type { RPC } from '@libp2p/gossipsub/message'
import { MessageStatus, RejectReason, type ValidateError } from '@libp2p/gossipsub/types'
import type { PeerId } from '@libp2p/interface'
import { LruMap, TokenBucket } from 'meshkit/plugin'

/** What the admission lets through, before GossipSub checks a signature or caches anything. */
export interface AdmissionLimits {
  maxMessageBytes: number
  /** Messages and bytes per second one connected peer may hand us (whoever published them). */
  peerRate: number
  peerBytesPerSecond: number
  /** Messages and bytes per second from all peers together. */
  globalRate: number
  globalBytesPerSecond: number
}

/** Why the admission stopped a message. */
export type AdmissionRefusal = 'unknown-topic' | 'oversize' | 'peer-rate' | 'global-rate'

/** Connected peers whose rates are tracked at once (the least recently active is forgotten first). */
const MAX_TRACKED_PEERS = 4096

interface PeerBuckets {
  messages: TokenBucket
  bytes: TokenBucket
}

/**
 * The first, cheap look at every message a peer hands us (O(1)), before GossipSub verifies its
 * signature, computes its id or puts it in the seen cache and the message cache:
 *
 * - a topic this node is not subscribed to: dropped (no penalty: it may be an unsubscribe in flight);
 * - a payload over `maxMessageBytes`: rejected, and the peer that sent it is to blame (an honest peer
 *   checks the same limit before it forwards anything);
 * - over the peer's own rate or the global rate (messages and bytes): dropped without blame (an honest
 *   peer may relay a flood it did not make; the publisher's own budget is checked later, once its
 *   signature is verified).
 *
 * So the work GossipSub does per second, and what its time-bounded caches hold, is bounded by the global
 * rates: the seen cache by `globalRate * seenTtl` ids, the message cache by about
 * `globalBytesPerSecond * 5 s` (five 1 s heartbeats).
 */
export class Admission {
  readonly #peers = new LruMap<string, PeerBuckets>(MAX_TRACKED_PEERS)
  readonly #globalMessages: TokenBucket
  readonly #globalBytes: TokenBucket

  constructor(
    private readonly limits: AdmissionLimits,
    /** Whether `gossipTopic` is one this node is subscribed to. */
    private readonly subscribed: (gossipTopic: string) => boolean,
  ) {
    this.#globalMessages = new TokenBucket(limits.globalRate, limits.globalRate * 2)
    this.#globalBytes = new TokenBucket(
      limits.globalBytesPerSecond,
      Math.max(limits.globalBytesPerSecond * 2, limits.maxMessageBytes * 4),
    )
  }

  /** Why `message` from `peer` must not go further, or undefined when it may. */
  check(peer: string, topic: string, size: number): AdmissionRefusal | undefined {
    if (!this.subscribed(topic)) return 'unknown-topic'
    if (size > this.limits.maxMessageBytes) return 'oversize'
    let buckets = this.#peers.get(peer)
    if (!buckets) {
      const { peerRate, peerBytesPerSecond, maxMessageBytes } = this.limits
      buckets = {
        messages: new TokenBucket(peerRate, peerRate * 2),
        bytes: new TokenBucket(peerBytesPerSecond, Math.max(peerBytesPerSecond * 2, maxMessageBytes * 2)),
      }
      this.#peers.set(peer, buckets)
    }
    if (!buckets.messages.take() || !buckets.bytes.take(size)) return 'peer-rate'
    if (!this.#globalMessages.take() || !this.#globalBytes.take(size)) return 'global-rate'
    return undefined
  }
}

/** What GossipSub says about a message it could not accept (its own checks: signature, seqno, ...). */
export type InvalidMessage = `${ValidateError}`

/** The shape of GossipSub's internal validation result that the guard reads and returns. */
type ValidationResult =
  | { code: MessageStatus.invalid; reason: RejectReason; error?: ValidateError; msgIdStr?: string }
  | { code: MessageStatus.duplicate | MessageStatus.valid; [key: string]: unknown }

interface Validating {
  validateReceivedMessage(source: PeerId, message: RPC.Message): Promise<ValidationResult>
}

/**
 * Puts `admission` in front of GossipSub's validation of received messages, and tells `onInvalid` of
 * each message GossipSub itself found invalid (a bad signature, a missing seqno, a key that is not the
 * publisher's): with topic scores off (see the plugin's docs), GossipSub would not count those against
 * the peer, so the plugin does, through the node's reputation.
 *
 * This wraps `validateReceivedMessage`, an internal method of @libp2p/gossipsub 17 (the one place that
 * sees the forwarding peer and the raw message before the signature check and the caches). Returns
 * false when the method is missing (another version): the caller must then refuse to run rather than run
 * unguarded; the gossip tests check that the guard is in force.
 */
export function guardValidation(
  service: GossipSub,
  admission: Admission,
  onRefused: (peer: string, topic: string, why: AdmissionRefusal, size: number) => void,
  onInvalid: (peer: string, topic: string, error: InvalidMessage | undefined) => void,
): boolean {
  const target = service as unknown as Validating
  const original = target.validateReceivedMessage
  if (typeof original !== 'function') return false
  const validate = original.bind(service)
  target.validateReceivedMessage = async (source, message) => {
    const peer = source.toString()
    const size = message.data?.byteLength ?? 0
    const refused = admission.check(peer, message.topic, size)
    if (refused) {
      onRefused(peer, message.topic, refused, size)
      // no message id: GossipSub counts it against the peer only in scored topics (none: see index.ts)
      return {
        code: MessageStatus.invalid,
        reason: refused === 'oversize' ? RejectReason.Reject : RejectReason.Ignore,
      }
    }
    const result = await validate(source, message)
    if (result.code === MessageStatus.invalid && result.reason === RejectReason.Error)
      onInvalid(peer, message.topic, result.error)
    return result
  }
  return true
}
