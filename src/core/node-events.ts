/** libp2p's peer and connection events, forwarded to the kernel's event bus with plain JSON details. */
import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import type { MeshEventBus } from './events.js'

/** How a connection was made, judged from its address and limits. */
export function describeConnection(connection: Connection) {
  const addr = connection.remoteAddr.toString()
  const relayed = connection.limits !== undefined
  // a relayed connection's address names the relay's own transport first (…/tcp/…/p2p-circuit/…);
  // a WebRTC connection signalled through a relay ends in /webrtc
  const transport = addr.includes('/webrtc')
    ? 'webrtc'
    : addr.includes('/p2p-circuit')
      ? 'relay'
      : addr.includes('/quic-v1')
        ? 'quic'
        : addr.includes('/tcp/')
          ? 'tcp'
          : 'unknown'
  return {
    connectionId: connection.id,
    peerId: connection.remotePeer.toString(),
    remoteAddr: addr,
    direction: connection.direction,
    transport,
    relayed,
  }
}

/**
 * Emits `peer:connect`, `peer:disconnect`, `connection:open` and `connection:close` on `events` for
 * libp2p's events of those names; returns the functions that remove the listeners.
 */
export function forwardLibp2pEvents(libp2p: Libp2p, events: MeshEventBus): Array<() => void> {
  const offs: Array<() => void> = []
  const on = <E extends 'peer:connect' | 'peer:disconnect' | 'connection:open' | 'connection:close'>(
    name: E,
    map: (detail: never) => Record<string, unknown>,
  ) => {
    const listener = (evt: CustomEvent) => events.emit(name, map(evt.detail as never))
    libp2p.addEventListener(name, listener as never)
    offs.push(() => libp2p.removeEventListener(name, listener as never))
  }
  on('peer:connect', (peer: PeerId) => ({ peerId: peer.toString() }))
  on('peer:disconnect', (peer: PeerId) => ({ peerId: peer.toString() }))
  on('connection:open', (c: Connection) => describeConnection(c))
  on('connection:close', (c: Connection) => ({ connectionId: c.id, peerId: c.remotePeer.toString() }))
  return offs
}
