/**
 * One connection per pair: which of the connections to one peer are redundant. Two peers that meet
 * through a topic may dial each other at once, and an upgrade leaves the relayed connection it replaced;
 * each keeps a relay slot (and its 2 min / 128 KiB budget) busy, and libp2p may pick either for a stream.
 */

/** What the rule needs to know of one open connection to the peer. */
export interface PairConnection {
  id: string
  direction: 'inbound' | 'outbound'
  /** Limited or through a relay. */
  relayed: boolean
  /** tcp, quic, webrtc, relay, ... */
  transport: string
  /** When it opened (ms). */
  opened: number
  /**
   * A two-way path is proven: any direct connection, an outbound WebRTC connection (ICE connected), an
   * inbound one once identify ran over it. An unproven one is neither kept nor closed here.
   */
  proven: boolean
}

/**
 * The ids of the connections to close so that the best one remains:
 * - once a proven unlimited connection exists, every relayed one (either side may close them);
 * - of several proven unlimited ones, all but the best (direct TCP/QUIC before WebRTC, then the oldest),
 *   and of several relayed ones without any unlimited one, all but the lower-id side's own outbound one
 *   (the connection its strategy upgrades), else the oldest: decided by the side with the lower peer id
 *   only (`lowerId`), so that the two sides never close both.
 */
export function redundantConnections(connections: readonly PairConnection[], lowerId: boolean): string[] {
  const proven = connections.filter((c) => !c.relayed && c.proven)
  const relayed = connections.filter((c) => c.relayed)
  const close: string[] = []
  if (proven.length > 0) {
    close.push(...relayed.map((c) => c.id))
    if (lowerId && proven.length > 1) {
      const best = [...proven].sort(
        (a, b) => Number(a.transport === 'webrtc') - Number(b.transport === 'webrtc') || a.opened - b.opened,
      )[0]
      close.push(...proven.filter((c) => c !== best).map((c) => c.id))
    }
    return close
  }
  if (lowerId && relayed.length > 1 && connections.every((c) => c.relayed)) {
    const byAge = [...relayed].sort((a, b) => a.opened - b.opened)
    const keep = byAge.find((c) => c.direction === 'outbound') ?? byAge[0]
    close.push(...relayed.filter((c) => c !== keep).map((c) => c.id))
  }
  return close
}
