/**
 * How a connection was made (relayed, hole-punched, direct): the shared judgement of `meshkit/plugin`
 * (`connectionMethod()`, src/contracts), and the addresses of a relayed peer.
 */
import type { Connection } from '@libp2p/interface'
import { type ConnectionMethod, connectionMethod } from 'meshkit/plugin'

/**
 * The method of one connection by itself (no event, no other source): relayed when it has limits or is
 * a circuit (a relay may grant one without limits); WebRTC (even signalled through a relay, whose
 * address still names /p2p-circuit) is hole-punched; anything else direct.
 */
export const methodOfConnection = (c: Connection): ConnectionMethod => connectionMethod(c)

/** A relayed connection (see {@link methodOfConnection}). */
export const isRelayed = (c: Connection) => connectionMethod(c) === 'relayed'

/** The last /p2p/<id> of an address (the target peer), or undefined. */
export function peerIdOf(address: string): string | undefined {
  return /\/p2p\/([^/]+)\/?$/.exec(address)?.[1]
}

/** `<relay>/p2p-circuit/p2p/<peer>` -> `<relay>/p2p-circuit/webrtc/p2p/<peer>`. */
export function webrtcAddressOf(relayed: string, peer: string): string {
  const circuit = relayed.indexOf('/p2p-circuit')
  if (circuit < 0) throw new Error(`not a relayed address: ${relayed}`)
  return `${relayed.slice(0, circuit)}/p2p-circuit/webrtc/p2p/${peer}`
}
