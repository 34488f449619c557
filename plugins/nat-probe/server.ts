/**
 * The probe server: UDP sockets and TCP listeners on two ports of one or two IPs, answering with the
 * address each request came from, and, on request, from its other port / other IP (see wire.ts).
 *
 * Never an amplifier: a UDP request gets at most one datagram back, no larger than the request, sent only
 * to the request's source; TCP callbacks go only to the source address of the connection that asked for
 * them (verified by the TCP handshake), at most 4 attempts each, rate-limited per source IP, per source
 * /24 and in total, with a cap on the callbacks in progress (per source IP and in total).
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { connect, createServer, type Server, type Socket as TcpSocket } from 'node:net'
import {
  encodeMessage,
  joinAddr,
  MAX_MESSAGE_BYTES,
  type ProbeMessage,
  parseMessage,
  RateLimiter,
  splitAddr,
  subnetOf,
  type Via,
} from './wire.js'

export interface ProbeServerOptions {
  /** The (up to two) IPs to serve on. */
  addresses: string[]
  udpPorts: number[]
  tcpPorts: number[]
  /** Per source IP: UDP requests. */
  udpRate?: { burst: number; perSecond: number }
  /** Per source IP: TCP connections. */
  tcpRate?: { burst: number; perSecond: number }
  /** Per source IP: TCP callbacks. @default burst 8, 0.2/s */
  callbackRate?: { burst: number; perSecond: number }
  /** Per source /24 (IPv4): TCP callbacks. @default burst 32, 1/s */
  callbackSubnetRate?: { burst: number; perSecond: number }
  /** In total: TCP callbacks. @default burst 32, 5/s */
  callbackGlobalRate?: { burst: number; perSecond: number }
  /** TCP callbacks in progress at once, in total (per source IP: a quarter of it, at least 1). @default 32 */
  maxPendingCallbacks?: number
  /** Most TCP connections open at once (in + callbacks). @default 256 */
  maxConnections?: number
  log?: (msg: string) => void
  /**
   * Asked for an answer from another IP when this host has only one: hands the job to a partner server
   * (the answer goes to `to`, the probe's own source). Returns false when no partner can take it.
   */
  relayOtherIp?: (proto: 'udp' | 'tcp', to: string, id: string) => boolean
}

export interface ProbeServerStats {
  udpAnswered: number
  udpDropped: number
  tcpAnswered: number
  tcpDropped: number
  callbacks: number
  /** Callback requests refused (over a rate, or too many in progress). */
  callbacksRefused: number
  /** Other-IP answers handed to a partner. */
  relayed: number
}

/** Delays (ms after the request) of the callback attempts: the client needs a moment to start listening. */
const CALLBACK_DELAYS = [150, 500, 1000, 1800]
const CALLBACK_CONNECT_TIMEOUT_MS = 1000
const TCP_IDLE_MS = 3000

export class ProbeServer {
  readonly #udp = new Map<string, Socket>()
  readonly #tcp = new Map<string, Server>()
  readonly #open = new Set<TcpSocket>()
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #udpLimit: RateLimiter
  readonly #tcpLimit: RateLimiter
  readonly #callbackLimit: RateLimiter
  readonly #callbackSubnetLimit: RateLimiter
  /** Callbacks in progress, per target IP. */
  readonly #pending = new Map<string, number>()
  #pendingTotal = 0
  readonly #sweep: NodeJS.Timeout
  #closed = false
  readonly stats: ProbeServerStats = {
    udpAnswered: 0,
    udpDropped: 0,
    tcpAnswered: 0,
    tcpDropped: 0,
    callbacks: 0,
    callbacksRefused: 0,
    relayed: 0,
  }
  /** Partner servers' endpoints, advertised with ours (clients probe them for the mapping test). */
  #partnerEndpoints: { udp: string[]; tcp: string[] } = { udp: [], tcp: [] }

  private constructor(private readonly opts: ProbeServerOptions) {
    this.#udpLimit = new RateLimiter(opts.udpRate ?? { burst: 100, perSecond: 50 }, {
      burst: 4000,
      perSecond: 2000,
    })
    this.#tcpLimit = new RateLimiter(opts.tcpRate ?? { burst: 30, perSecond: 5 }, {
      burst: 500,
      perSecond: 200,
    })
    this.#callbackLimit = new RateLimiter(
      opts.callbackRate ?? { burst: 8, perSecond: 0.2 },
      opts.callbackGlobalRate ?? { burst: 32, perSecond: 5 },
    )
    // the global bucket is the one above: this one only bounds each /24
    this.#callbackSubnetLimit = new RateLimiter(opts.callbackSubnetRate ?? { burst: 32, perSecond: 1 }, {
      burst: Number.MAX_SAFE_INTEGER,
      perSecond: Number.MAX_SAFE_INTEGER,
    })
    this.#sweep = setInterval(() => {
      this.#udpLimit.sweep()
      this.#tcpLimit.sweep()
      this.#callbackLimit.sweep()
      this.#callbackSubnetLimit.sweep()
    }, 30_000)
    this.#sweep.unref()
  }

  static async start(opts: ProbeServerOptions): Promise<ProbeServer> {
    const server = new ProbeServer(opts)
    try {
      for (const ip of opts.addresses) {
        for (const port of opts.udpPorts) await server.#bindUdp(ip, port)
        for (const port of opts.tcpPorts) await server.#listenTcp(ip, port)
      }
    } catch (err) {
      await server.close()
      throw err
    }
    return server
  }

  /** The probe endpoints (ip:port) served here. */
  ownEndpoints(): { udp: string[]; tcp: string[] } {
    return { udp: [...this.#udp.keys()], tcp: [...this.#tcp.keys()] }
  }

  /** The probe endpoints advertised to clients: ours, then our partners' (at most 8 each). */
  endpoints(): { udp: string[]; tcp: string[] } {
    const own = this.ownEndpoints()
    const merge = (a: string[], b: string[]) => [...new Set([...a, ...b])].slice(0, 8)
    return {
      udp: merge(own.udp, this.#partnerEndpoints.udp),
      tcp: merge(own.tcp, this.#partnerEndpoints.tcp),
    }
  }

  setPartnerEndpoints(e: { udp: string[]; tcp: string[] }): void {
    this.#partnerEndpoints = { udp: e.udp.slice(0, 8), tcp: e.tcp.slice(0, 8) }
  }

  /** A partner's request: one 'seen' datagram to `to` (a probe's source), from our first UDP socket. */
  sendSeen(to: string, id: string): void {
    const [from, socket] = [...this.#udp][0] ?? []
    if (this.#closed || !from || !socket) return
    const { ip, port } = splitAddr(to)
    this.stats.udpAnswered++
    socket.send(encodeMessage({ v: 1, t: 'seen', id, seen: to, from }), port, ip, () => {})
  }

  /** A partner's request: the TCP callback to `to` from our first IP (within the same callback limits). */
  callbackTo(to: string, id: string): boolean {
    const first = [...this.#tcp.keys()][0]
    if (!first || this.#refuseCallback(splitAddr(to).ip) !== undefined) return false
    this.#callback(id, splitAddr(first).ip, to)
    return true
  }

  /**
   * Why a callback to `ip` is refused now (undefined: taken, and counted): too many in progress (for it,
   * or in all), or over the rate of its IP, its /24, or all.
   */
  #refuseCallback(ip: string): string | undefined {
    const max = this.opts.maxPendingCallbacks ?? 32
    const perIp = Math.max(1, Math.floor(max / 4))
    let reason: string | undefined
    if (this.#pendingTotal >= max || (this.#pending.get(ip) ?? 0) >= perIp) reason = 'busy'
    else if (!this.#callbackSubnetLimit.allow(subnetOf(ip)) || !this.#callbackLimit.allow(ip)) reason = 'rate'
    if (reason) this.stats.callbacksRefused++
    return reason
  }

  /** The local endpoint to answer from for `via`, relative to `at` (the endpoint that got the request). */
  #other(at: string, via: Via | undefined, list: string[]): string | undefined {
    if (!via) return at
    const { ip, port } = splitAddr(at)
    const others = list.map(splitAddr)
    const pick = (f: (o: { ip: string; port: number }) => boolean) => {
      const o = others.find(f)
      return o && joinAddr(o.ip, o.port)
    }
    if (via === 'other-port') return pick((o) => o.ip === ip && o.port !== port)
    if (via === 'other-ip') return pick((o) => o.ip !== ip && o.port === port) ?? pick((o) => o.ip !== ip)
    return pick((o) => o.ip !== ip && o.port !== port)
  }

  async #bindUdp(ip: string, port: number): Promise<void> {
    const socket = createSocket({ type: 'udp4' })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind(port, ip, () => {
        socket.off('error', reject)
        resolve()
      })
    })
    socket.on('error', (err) => this.opts.log?.(`udp ${ip}:${port}: ${err.message}`))
    const at = joinAddr(ip, socket.address().port)
    this.#udp.set(at, socket)
    socket.on('message', (buf, rinfo) => this.#onUdp(at, buf, rinfo))
  }

  #onUdp(at: string, buf: Buffer, rinfo: RemoteInfo): void {
    if (this.#closed || rinfo.family !== 'IPv4' || !this.#udpLimit.allow(rinfo.address)) {
      this.stats.udpDropped++
      return
    }
    const m = parseMessage(buf)
    if (m?.t !== 'probe') {
      this.stats.udpDropped++
      return
    }
    const from = this.#other(at, m.via, [...this.#udp.keys()])
    const socket = from && this.#udp.get(from)
    const seen = joinAddr(rinfo.address, rinfo.port)
    if (!from || !socket) {
      // no other IP here: a partner may answer, if its answer is no larger than this request
      const fits =
        encodeMessage({ v: 1, t: 'seen', id: m.id, seen, from: '255.255.255.255:65535' }).length <= buf.length
      if (m.via === 'other-ip' && fits && this.opts.relayOtherIp?.('udp', seen, m.id)) this.stats.relayed++
      else this.stats.udpDropped++
      return
    }
    const { udp, tcp } = this.endpoints()
    let reply = encodeMessage({ v: 1, t: 'seen', id: m.id, seen, from, udp, tcp })
    // never more bytes out than in: drop the endpoint lists when they do not fit
    if (reply.length > buf.length) reply = encodeMessage({ v: 1, t: 'seen', id: m.id, seen, from })
    if (reply.length > buf.length) {
      this.stats.udpDropped++
      return
    }
    this.stats.udpAnswered++
    socket.send(reply, rinfo.port, rinfo.address, () => {})
  }

  async #listenTcp(ip: string, port: number): Promise<void> {
    const server = createServer({ allowHalfOpen: false }, (socket) => this.#onTcp(at, socket))
    server.maxConnections = this.opts.maxConnections ?? 256
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: ip, port, backlog: 64 }, () => {
        server.off('error', reject)
        resolve()
      })
    })
    server.on('error', (err) => this.opts.log?.(`tcp ${ip}:${port}: ${err.message}`))
    const address = server.address()
    const at = joinAddr(ip, typeof address === 'object' && address ? address.port : port)
    this.#tcp.set(at, server)
  }

  #onTcp(at: string, socket: TcpSocket): void {
    const remoteIp = socket.remoteAddress?.replace(/^::ffff:/, '')
    const remotePort = socket.remotePort
    if (this.#closed || !remoteIp || !remotePort || !this.#tcpLimit.allow(remoteIp)) {
      this.stats.tcpDropped++
      socket.destroy()
      return
    }
    this.#open.add(socket)
    socket.on('close', () => this.#open.delete(socket))
    socket.on('error', () => {})
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy())
    const seen = joinAddr(remoteIp, remotePort)
    let buffered = ''
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8')
      const nl = buffered.indexOf('\n')
      if (nl < 0) {
        if (buffered.length > MAX_MESSAGE_BYTES) socket.destroy()
        return
      }
      socket.removeAllListeners('data')
      const m = parseMessage(buffered.slice(0, nl))
      const reply = (r: ProbeMessage) => socket.end(`${JSON.stringify(r)}\n`)
      if (m?.t === 'probe') {
        this.stats.tcpAnswered++
        reply({ v: 1, t: 'seen', id: m.id, seen, from: at, ...this.endpoints() })
      } else if (m?.t === 'callback') {
        const from = this.#other(at, m.via, [...this.#tcp.keys()])
        const refused = this.#refuseCallback(remoteIp)
        if (refused) return reply({ v: 1, t: 'error', id: m.id, reason: refused })
        if (from) {
          reply({ v: 1, t: 'callback-ok', id: m.id, seen })
          this.#callback(m.id, splitAddr(from).ip, seen)
        } else if (m.via === 'other-ip' && this.opts.relayOtherIp?.('tcp', seen, m.id)) {
          this.stats.relayed++
          reply({ v: 1, t: 'callback-ok', id: m.id, seen })
        } else reply({ v: 1, t: 'error', id: m.id, reason: `no ${m.via} endpoint` })
      } else {
        this.stats.tcpDropped++
        socket.destroy()
      }
    })
  }

  /**
   * Connects to `to` (the requester's own source address) from `ip` (an ephemeral port: Node cannot dial
   * from a listening port, and "another port" is all the test needs), until one attempt gets through.
   */
  #callback(id: string, ip: string, to: string): void {
    const target = splitAddr(to)
    let done = false
    let settled = false
    // in progress until an attempt got through or the last one is over
    this.#pending.set(target.ip, (this.#pending.get(target.ip) ?? 0) + 1)
    this.#pendingTotal++
    const settle = () => {
      if (settled) return
      settled = true
      const n = (this.#pending.get(target.ip) ?? 1) - 1
      if (n <= 0) this.#pending.delete(target.ip)
      else this.#pending.set(target.ip, n)
      this.#pendingTotal = Math.max(0, this.#pendingTotal - 1)
    }
    CALLBACK_DELAYS.forEach((delay, i) => {
      const last = i === CALLBACK_DELAYS.length - 1
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        if (done || this.#closed || this.#open.size >= (this.opts.maxConnections ?? 256)) {
          if (last) settle()
          return
        }
        const socket = connect({ host: target.ip, port: target.port, localAddress: ip })
        this.#open.add(socket)
        socket.on('close', () => {
          this.#open.delete(socket)
          if (last) settle()
        })
        socket.on('error', () => {})
        socket.setTimeout(CALLBACK_CONNECT_TIMEOUT_MS, () => socket.destroy())
        socket.on('connect', () => {
          if (done) return socket.destroy()
          done = true
          settle()
          this.stats.callbacks++
          socket.end(
            `${JSON.stringify({ v: 1, t: 'hello', id, from: joinAddr(ip, socket.localPort ?? 0) } satisfies ProbeMessage)}\n`,
          )
        })
      }, delay)
      this.#timers.add(timer)
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweep)
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    for (const s of this.#open) s.destroy()
    await Promise.all([
      ...[...this.#udp.values()].map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...[...this.#tcp.values()].map((s) => new Promise<void>((r) => s.close(() => r()))),
    ])
    this.#udp.clear()
    this.#tcp.clear()
  }
}
