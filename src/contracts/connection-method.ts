/**
 * The connection-method contract: how a connection to a peer was made (direct, hole-punched, relayed),
 * and the one judgement the tools use (the control API, `mesh status`, the dashboard, `metrics()`).
 */
import type { Connection } from '@libp2p/interface'
import { describeConnection, type MeshEvent } from '../core/index.js'

/** How a connection was made. */
export type ConnectionMethod = 'direct' | 'hole-punched' | 'relayed'

/** The connection methods, in the order the tools list them. */
export const CONNECTION_METHODS: readonly ConnectionMethod[] = ['direct', 'hole-punched', 'relayed']

/** Whether `m` is one of the {@link CONNECTION_METHODS}. */
export const isConnectionMethod = (m: unknown): m is ConnectionMethod =>
  typeof m === 'string' && (CONNECTION_METHODS as readonly string[]).includes(m)

/**
 * The multi-provider capability of plugins that tell how connections were made: each provider's API
 * is a {@link ConnectionMethodSource}. A reader lists it in `optionalDependencies` and reads
 * `ctx.useAll(CONNECTION_METHODS_CAPABILITY)`.
 */
export const CONNECTION_METHODS_CAPABILITY = 'connection-methods'

/**
 * A plugin whose API has `methodOf` tells how the connection to a peer was made (built-in:
 * `holePunch()`). Such plugins also emit `connection:method` events on the bus:
 * `{ peerId, method, transport, attempts, msToFirst?, msToDirect?, ... }`.
 */
export interface ConnectionMethodSource {
  /** The method of the best connection to `peer` now (undefined: not connected or not known). */
  methodOf(peer: string): ConnectionMethod | undefined
}

/** What a `connection:method` event says about one peer (the last one per peer is what counts). */
export interface ToldMethod {
  readonly method: ConnectionMethod
  /** The transport of the connection the event is about, when the event names it. */
  readonly transport?: string
}

/**
 * The peer and what a `connection:method` event says, or undefined when the event is malformed (no
 * peer id, or a method that is none of {@link CONNECTION_METHODS}).
 */
export function toldMethodOf(event: MeshEvent): ({ peerId: string } & ToldMethod) | undefined {
  if (typeof event.peerId !== 'string' || !isConnectionMethod(event.method)) return undefined
  return {
    peerId: event.peerId,
    method: event.method,
    transport: typeof event.transport === 'string' ? event.transport : undefined,
  }
}

/**
 * How one connection was made: `relayed` when it is limited or a circuit (a relay may grant one without
 * limits; a WebRTC connection signalled through a relay is not one), `hole-punched` when it is WebRTC,
 * or when the peer's last `connection:method` event (`told`, when it is about this connection's
 * transport) or else a method source says so; `direct` otherwise. A source that throws (e.g. not
 * started) is skipped.
 */
export function connectionMethod(
  connection: Connection,
  told?: ToldMethod,
  sources: readonly ConnectionMethodSource[] = [],
): ConnectionMethod {
  const info = describeConnection(connection)
  if (info.relayed || info.transport === 'relay') return 'relayed'
  if (info.transport === 'webrtc') return 'hole-punched'
  if (told && (told.transport === undefined || told.transport === info.transport))
    return told.method === 'hole-punched' ? 'hole-punched' : 'direct'
  for (const source of sources) {
    let said: ConnectionMethod | undefined
    try {
      said = source.methodOf(info.peerId)
    } catch {
      continue
    }
    if (said !== undefined) return said === 'hole-punched' ? 'hole-punched' : 'direct'
  }
  return 'direct'
}
