import type { Connection, Libp2p, PeerId } from '@libp2p/interface'

/**
 * Member exchanges one limited (relayed) connection carries, at most, each way: the one its opening
 * starts, and a few while the topic is short (the relay's data budget, 128 KiB and 2 min by default per
 * circuit, is mostly kept for hole punching's signalling).
 */
export const LIMITED_EXCHANGES = 3
/** The largest exchange message (request or response) on a limited connection. */
export const LIMITED_MESSAGE_BYTES = 8 * 1024

/**
 * The connection a member exchange with `peer` runs on: an open unlimited one, else an open limited
 * (relayed) one that has not carried its LIMITED_EXCHANGES yet, or none. An exchange never dials
 * (libp2p's `dialProtocol()` does not reuse a limited connection: it dials a new circuit through the
 * relay, then closes it as a duplicate, and that connection's `connection:open` asked for the next
 * exchange: dozens of relayed connections opened and closed a second). Over a relayed connection the
 * exchange is small and counted (LIMITED_MESSAGE_BYTES, LIMITED_EXCHANGES): a pair that stays relayed
 * (symmetric + symmetric) still learns on both sides that the other joined the topic.
 */
export function exchangeConnection(
  libp2p: Pick<Libp2p, 'getConnections'>,
  peer: PeerId,
  used: WeakMap<Connection, number>,
): Connection | undefined {
  const open = libp2p.getConnections(peer).filter((c) => c.status === 'open')
  return open.find((c) => c.limits === undefined) ?? open.find((c) => (used.get(c) ?? 0) < LIMITED_EXCHANGES)
}

/** Counts one exchange on a limited connection; false when it carried its share already. */
export function takeLimited(connection: Connection, used: WeakMap<Connection, number>): boolean {
  if (connection.limits === undefined) return true
  const n = used.get(connection) ?? 0
  if (n >= LIMITED_EXCHANGES) return false
  used.set(connection, n + 1)
  return true
}
