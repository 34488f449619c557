import {
  type PeerDiscovery,
  type PeerDiscoveryEvents,
  type PeerInfo,
  peerDiscoverySymbol,
  type Startable,
} from '@libp2p/interface'
import { TypedEventEmitter } from 'main-event'

/**
 * libp2p's PeerDiscovery face of topic discovery: emits a `peer` event for each member of a joined
 * topic this node learns about (from the DHT or a member exchange), between start() and stop().
 */
export class TopicPeerDiscovery
  extends TypedEventEmitter<PeerDiscoveryEvents>
  implements PeerDiscovery, Startable
{
  readonly [peerDiscoverySymbol] = this
  readonly [Symbol.toStringTag] = '@meshkit/kad-topics'
  #started = false

  isStarted(): boolean {
    return this.#started
  }

  start(): void {
    this.#started = true
  }

  stop(): void {
    this.#started = false
  }

  /** Announces a discovered peer to libp2p (ignored while stopped). */
  discovered(peer: PeerInfo): void {
    if (!this.#started) return
    this.safeDispatchEvent('peer', { detail: peer })
  }
}
