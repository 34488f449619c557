/** How a connection was made (relayed, hole-punched, direct), and the addresses of a relayed peer. */
import type { Connection } from '@libp2p/interface'
import { describeConnection } from 'meshkit/plugin'
import type { ConnectionMethod } from './index.js'

/**
 * Relayed = the connection has limits, or is a circuit (a relay may grant one without limits); a WebRTC
 * connection signalled through a relay still names /p2p-circuit in its address, and is direct.
 */
export const isRelayed = (c: Connection) =>
  c.limits !== undefined || describeConnection(c).transport === 'relay'

export function methodOfConnection(c: Connection): ConnectionMethod {
  if (isRelayed(c)) return 'relayed'
  return describeConnection(c).transport === 'webrtc' ? 'hole-punched' : 'direct'
}

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
