/**
 * A relayed connection to the target without any relay: circuit relay v2's STOP protocol
 * (`/libp2p/circuit/relay/0.2.0/stop`) is served by every node with the circuit relay transport, and it
 * accepts a STOP CONNECT from any connected peer, relay of ours or not. A hostile peer H opens a STOP
 * stream to the target saying "peer S wants you", the target answers OK and treats the stream as an
 * inbound relayed connection from S; S (another hostile identity, same process) runs noise and yamux over
 * it. The target then has a limited (relayed) connection from S, which is what its hole-punch strategy
 * reacts to (nat-type reversal dials, birthday punches). As a side effect, each STOP stream makes the
 * target try to listen on H as a relay.
 *
 * `forgedCircuitTransport(open)` is S's transport for `/p2p-circuit` addresses: `open` supplies the STOP
 * stream (already answered OK), the transport upgrades it as S's outbound connection.
 */
import type {
  AbortOptions,
  Connection,
  CreateListenerOptions,
  DialTransportOptions,
  Listener,
  Stream,
  Transport,
} from '@libp2p/interface'
import { transportSymbol } from '@libp2p/interface'
import { AbstractMultiaddrConnection, type SendResult } from '@libp2p/utils'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Uint8ArrayList } from 'uint8arraylist'
import { closeSoon, lp, pb, StreamReader, unpb } from './wire.js'

export const RELAY_STOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/stop'
export const RELAY_HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'

/** Circuit relay v2 status codes. */
export const RELAY_STATUS = {
  OK: 100,
  RESERVATION_REFUSED: 200,
  RESOURCE_LIMIT_EXCEEDED: 201,
  PERMISSION_DENIED: 202,
  CONNECTION_FAILED: 203,
  NO_RESERVATION: 204,
  MALFORMED_MESSAGE: 400,
  UNEXPECTED_MESSAGE: 401,
} as const

/** A StopMessage CONNECT for `peerMultihash`, with a limit (so the target marks the connection relayed). */
export function stopConnect(
  peerMultihash: Uint8Array,
  limit: { seconds: number; bytes: number } | undefined = { seconds: 120, bytes: 1 << 20 },
  addrs: Uint8Array[] = [],
): Uint8Array {
  return pb([
    [1, 0], // type CONNECT
    [2, pb([[1, peerMultihash], ...addrs.map((a) => [2, a] as const)])],
    ...(limit
      ? [
          [
            3,
            pb([
              [1, limit.seconds],
              [2, limit.bytes],
            ]),
          ] as const,
        ]
      : []),
  ])
}

/** Opens the STOP stream for a forged circuit to the target at `ma`; resolves with it once answered OK. */
export type ForgedCircuitOpener = (ma: Multiaddr, options: AbortOptions) => Promise<StopOpened>

export interface StopOpened {
  stream: Stream
  /** Bytes that arrived after the STOP answer (the target's first noise bytes, if any). */
  rest: Uint8Array
}

/**
 * Sends STOP CONNECT on a fresh stream of `connection` (H's connection to the target) and waits for the
 * answer; resolves with the stream when the status is OK, else rejects with the status.
 */
export async function openStop(
  connection: Connection,
  peerMultihash: Uint8Array,
  options: AbortOptions & { timeoutMs?: number; limit?: { seconds: number; bytes: number } } = {},
): Promise<StopOpened> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(options.timeoutMs ?? 5000),
    ...(options.signal ? [options.signal] : []),
  ])
  const stream = await connection.newStream(RELAY_STOP_PROTOCOL, { signal })
  const reader = new StreamReader(stream)
  stream.send(lp(stopConnect(peerMultihash, options.limit)))
  const answer = await reader.readLp(options.timeoutMs ?? 5000, signal)
  if (!answer) {
    await closeSoon(stream)
    throw new Error(`no STOP answer (${reader.ended ?? 'timeout'})`)
  }
  const status = unpb(answer).get(4)?.[0]
  if (status !== RELAY_STATUS.OK) {
    await closeSoon(stream)
    throw new Error(`STOP refused with status ${String(status)}`)
  }
  return { stream, rest: reader.bytes() }
}

/** A STOP stream as S's raw connection (like circuit-relay-v2's own stream-to-conn). */
class StopStreamConnection extends AbstractMultiaddrConnection {
  constructor(
    private readonly stream: Stream,
    remoteAddr: Multiaddr,
    rest: Uint8Array,
  ) {
    super({ remoteAddr, direction: 'outbound', log: stream.log.newScope('forged-circuit') })
    stream.addEventListener('close', (evt) => this.onTransportClosed(evt.error))
    stream.addEventListener('remoteCloseWrite', () => {
      this.onRemoteCloseWrite()
      this.close().catch((err) => this.abort(err))
    })
    stream.addEventListener('message', (evt) => this.onData(evt.data))
    stream.addEventListener('drain', () => this.safeDispatchEvent('drain'))
    if (rest.length > 0) queueMicrotask(() => this.onData(rest))
  }

  sendData(data: Uint8ArrayList): SendResult {
    return { sentBytes: data.byteLength, canSendMore: this.stream.send(data) }
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    await this.stream.close(options)
  }

  sendReset(): void {
    this.stream.abort(new Error('forged circuit reset'))
  }

  sendPause(): void {
    this.stream.pause()
  }

  sendResume(): void {
    this.stream.resume()
  }
}

class ForgedCircuitTransport implements Transport {
  readonly [Symbol.toStringTag] = 'hostile/forged-circuit'
  readonly [transportSymbol] = true as const

  constructor(private readonly open: ForgedCircuitOpener) {}

  async dial(ma: Multiaddr, options: DialTransportOptions): Promise<Connection> {
    const { stream, rest } = await this.open(ma, options)
    const maConn = new StopStreamConnection(stream, ma, rest)
    try {
      return await options.upgrader.upgradeOutbound(maConn, { signal: options.signal })
    } catch (err) {
      maConn.abort(err as Error)
      throw err
    }
  }

  createListener(_options: CreateListenerOptions): Listener {
    throw new Error('a forged circuit transport does not listen')
  }

  listenFilter = (): Multiaddr[] => []

  dialFilter = (mas: Multiaddr[]): Multiaddr[] => mas.filter((ma) => ma.toString().includes('/p2p-circuit'))
}

/** S's transport for `/p2p-circuit` addresses, fed by `open` (usually {@link openStop} on H's connection). */
export function forgedCircuitTransport(open: ForgedCircuitOpener): () => Transport {
  return () => new ForgedCircuitTransport(open)
}
