import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Budget, Logger, MeshEventBus, PeerAddressPolicy, PeerReputation } from 'meshkit/plugin'
import type { CID } from 'multiformats/cid'
import type { DialGuard } from './dial-guard.js'
import type { MemberRegistry } from './member-registry.js'

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
  /** `ctx.isSeed`: lookup rounds spare the operator's bootstrap nodes (RendezvousPoints). */
  isSeed?: (peer: string) => boolean
}

/** A known member of a joined topic, as TopicDiscovery.knownMembers() reports it. */
export interface KnownTopicMember {
  peerId: string
  /**
   * - `peer`: a topic peer (connected, confirmed by its own word or the dial that found it)
   * - `waiting`: connected, held back while its network has its share of the topic's peers
   * - `connected`: connected, not (yet) confirmed as a member by itself: it is asked
   * - `dialling`: a dial is under way
   * - `backed-off`: dials failed; not dialled again before the backoff ends
   * - `idle`: not connected: dialled while the topic is short (within the dial budgets)
   */
  state: 'peer' | 'waiting' | 'connected' | 'dialling' | 'backed-off' | 'idle'
  /** Told by the member itself (or the DHT); false: relayed by a third peer. */
  direct: boolean
  /** When the member was last confirmed (ms since epoch). */
  lastSeen: number
}

/** A topic this node joined. */
export interface JoinedTopic {
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

/**
 * What the parts of one topic manager share: the node, the settings (`TopicManager.update()` changes
 * them in place), the member registry and dial guard, and the joined topics.
 */
export interface TopicState {
  readonly libp2p: Libp2p
  readonly settings: TopicManagerSettings
  readonly registry: MemberRegistry
  readonly dials: DialGuard
  readonly logger: Logger
  readonly events: MeshEventBus
  /** Aborted when the manager's node stops. */
  readonly signal: AbortSignal
  /** This node's peer id. */
  readonly self: string
  /** Joined topics by name. */
  readonly joined: Map<string, JoinedTopic>
  /** Topic names by key, for joined topics. */
  readonly keyToTopic: Map<string, string>
  /** What each connected peer said it joined (topic keys). */
  readonly remoteJoined: Map<string, Set<string>>
  /** Members being dialled (for any topic). */
  readonly dialing: Set<string>
}
