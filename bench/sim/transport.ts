/**
 * A libp2p transport over the simulated network (net.ts): `/ip4/10.x.y.z/tcp/<port>` addresses, dialled
 * and listened on in memory with the link delays of the simulation. It is given to simulated nodes by
 * the `simTransport()` plugin (the `transport` slot), so everything above it (encryption, yamux,
 * identify, kad-dht, kad-topics) is the real code.
 */
import {
  type Connection,
  ConnectionFailedError,
  type CreateListenerOptions,
  type DialTransportOptions,
  type Listener,
  type ListenerEvents,
  type Logger,
  serviceCapabilities,
  type Transport,
  transportSymbol,
  type Upgrader,
} from '@libp2p/interface'
import { AbstractMultiaddrConnection, type SendResult } from '@libp2p/utils'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { TypedEventEmitter } from 'main-event'
import { definePlugin, z } from 'meshkit/plugin'
import type { Uint8ArrayList } from 'uint8arraylist'
import { isSimIp, type SimNet, type SimSocket } from './net.js'

/** The IPv4 address and TCP port of `/ip4/<ip>/tcp/<port>[/p2p/...]`, or undefined. */
export function ipPort(ma: Multiaddr): { ip: string; port: number } | undefined {
  const c = ma.getComponents()
  if (c.length < 2 || c[0].name !== 'ip4' || c[1].name !== 'tcp') return undefined
  if (c.slice(2).some((x) => x.name !== 'p2p')) return undefined
  const ip = c[0].value ?? ''
  if (!isSimIp(ip)) return undefined
  return { ip, port: Number(c[1].value) }
}

class SimMultiaddrConnection extends AbstractMultiaddrConnection {
  constructor(
    private readonly socket: SimSocket,
    init: { remoteAddr: Multiaddr; direction: 'inbound' | 'outbound'; log: Logger; localAddr?: Multiaddr },
  ) {
    super(init)
    socket.attach(
      (chunk) => this.onData(chunk),
      (err) => (err ? this.abort(err) : this.onTransportClosed()),
    )
  }

  sendData(data: Uint8ArrayList): SendResult {
    const bytes = data.byteLength
    // one packet per write; a copy, since the writer may reuse its buffers
    this.socket.send(data.slice())
    return { sentBytes: bytes, canSendMore: true }
  }

  sendReset(): void {
    this.socket.reset()
  }

  async sendClose(): Promise<void> {
    this.socket.end()
  }

  sendPause(): void {
    // no read back-pressure in the simulation (no bandwidth limit either)
  }

  sendResume(): void {}
}

class SimListener extends TypedEventEmitter<ListenerEvents> implements Listener {
  #addr?: Multiaddr
  #bound?: { ip: string; port: number }
  readonly #shutdown = new AbortController()

  constructor(
    private readonly net: SimNet,
    private readonly ownIp: string,
    private readonly upgrader: Upgrader,
    private readonly log: Logger,
  ) {
    super()
  }

  async listen(ma: Multiaddr): Promise<void> {
    const where = ipPort(ma)
    if (!where) throw new Error(`the simulated transport cannot listen on ${ma}`)
    if (where.ip !== this.ownIp) throw new Error(`this node's address is ${this.ownIp}, not ${where.ip}`)
    const port = where.port === 0 ? 4001 : where.port
    this.net.listen(where.ip, port, (socket) => this.#onConnection(socket))
    this.#bound = { ip: where.ip, port }
    this.#addr = multiaddr(`/ip4/${where.ip}/tcp/${port}`)
    queueMicrotask(() => this.safeDispatchEvent('listening'))
  }

  #onConnection(socket: SimSocket): void {
    const maConn = new SimMultiaddrConnection(socket, {
      remoteAddr: multiaddr(`/ip4/${socket.remoteIp}/tcp/${socket.remotePort}`),
      direction: 'inbound',
      localAddr: this.#addr,
      log: this.log.newScope('connection'),
    })
    this.upgrader.upgradeInbound(maConn, { signal: this.#shutdown.signal }).catch((err) => maConn.abort(err))
  }

  getAddrs(): Multiaddr[] {
    return this.#addr ? [this.#addr] : []
  }

  updateAnnounceAddrs(): void {}

  async close(): Promise<void> {
    if (this.#bound) this.net.unlisten(this.#bound.ip, this.#bound.port)
    this.#shutdown.abort()
    queueMicrotask(() => this.safeDispatchEvent('close'))
  }
}

export class SimTransport implements Transport {
  readonly [transportSymbol] = true as const
  readonly [Symbol.toStringTag] = '@meshkit/sim-transport'
  readonly [serviceCapabilities] = ['@libp2p/transport']
  readonly #log: Logger

  constructor(
    components: { logger: { forComponent(name: string): Logger } },
    private readonly net: SimNet,
    private readonly ip: string,
  ) {
    this.#log = components.logger.forComponent('libp2p:sim-transport')
  }

  async dial(ma: Multiaddr, options: DialTransportOptions): Promise<Connection> {
    const where = ipPort(ma)
    if (!where) throw new ConnectionFailedError(`the simulated transport cannot dial ${ma}`)
    let socket: SimSocket
    try {
      socket = await this.net.connect(this.ip, where.ip, where.port, options.signal)
    } catch (err) {
      throw new ConnectionFailedError(`${(err as Error).message} (${ma})`)
    }
    const maConn = new SimMultiaddrConnection(socket, {
      remoteAddr: ma,
      direction: 'outbound',
      log: this.#log.newScope('connection'),
    })
    try {
      return await options.upgrader.upgradeOutbound(maConn, options)
    } catch (err) {
      maConn.abort(err as Error)
      throw err
    }
  }

  createListener(options: CreateListenerOptions): Listener {
    return new SimListener(this.net, this.ip, options.upgrader, this.#log)
  }

  listenFilter = (multiaddrs: Multiaddr[]): Multiaddr[] => multiaddrs.filter((ma) => ipPort(ma) !== undefined)

  dialFilter = (multiaddrs: Multiaddr[]): Multiaddr[] => multiaddrs.filter((ma) => ipPort(ma) !== undefined)
}

/** The SimNet of this thread (set by the host before any node starts). */
let currentNet: SimNet | undefined

export function useSimNet(net: SimNet): void {
  currentNet = net
}

/**
 * The simulated transport as a Meshkit plugin (the `transport` slot), for simulated nodes only: the node
 * with address `ip` (in 10.0.0.0/8) listens on `/ip4/<ip>/tcp/4001`.
 */
export const simTransport = definePlugin({
  name: 'sim-transport',
  provides: ['transport'],
  dependencies: ['connection-encrypter', 'stream-muxer'],
  options: z.strictObject({ ip: z.string().refine(isSimIp, 'an address in 10.0.0.0/8') }),
  create: (opts) => ({
    libp2p: () => {
      const net = currentNet
      if (!net) throw new Error('sim-transport: no simulated network in this thread (useSimNet)')
      return {
        transports: [
          (components: { logger: { forComponent(name: string): Logger } }) =>
            new SimTransport(components, net, opts.ip),
        ],
        addresses: { listen: [`/ip4/${opts.ip}/tcp/4001`] },
      }
    },
  }),
})
