/**
 * The simulated network: reliable, ordered byte streams (TCP-like) between simulated hosts with a
 * one-way delay per link, inside one process. Nodes live in several worker threads ("hosts"); links
 * between threads go over MessagePorts and are delivered at the time the sender computed (send time
 * plus the link's delay), so a link has the same delay whichever threads its ends live in.
 *
 * What is modelled: connection set-up (SYN, SYN-ACK: the dialler can send after one round trip, the
 * listener sees the connection after one one-way delay), a refused connection (no listener: an error
 * after one round trip), FIFO delivery per direction, FIN (clean close) and RST (reset), a host that
 * vanishes (crash: everything to and from its address is dropped, nobody gets a FIN). Not modelled:
 * bandwidth, loss and retransmission, NAT. Every address is an IPv4 address in 10.0.0.0/8; nothing here
 * opens a socket.
 */
import type { MessagePort } from 'node:worker_threads'
import { vnow } from './clock.js'

/** The simulated internet: every address is in 10.0.0.0/8 (nothing leaves the process). */
export const SIM_CIDR = '10.0.0.0/8'

export function isSimIp(ip: string): boolean {
  return /^10\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(ip)
}

/** Milliseconds since the epoch, sub-millisecond: the simulation's (virtual) clock, the same in every thread. */
export const now = vnow

/** A min-heap of timed callbacks behind one timer: cheaper than a setTimeout per packet. */
export class Scheduler {
  readonly #heap: Array<{ at: number; seq: number; fn: () => void }> = []
  #seq = 0
  #timer: NodeJS.Timeout | undefined
  #armedAt = Number.POSITIVE_INFINITY

  at(at: number, fn: () => void): void {
    const item = { at, seq: this.#seq++, fn }
    const h = this.#heap
    h.push(item)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (this.#less(h[p], h[i])) break
      ;[h[p], h[i]] = [h[i], h[p]]
      i = p
    }
    this.#arm()
  }

  #less(a: { at: number; seq: number }, b: { at: number; seq: number }): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq)
  }

  #pop(): { at: number; seq: number; fn: () => void } | undefined {
    const h = this.#heap
    if (h.length === 0) return undefined
    const top = h[0]
    const last = h.pop()!
    if (h.length > 0) {
      h[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < h.length && this.#less(h[l], h[m])) m = l
        if (r < h.length && this.#less(h[r], h[m])) m = r
        if (m === i) break
        ;[h[m], h[i]] = [h[i], h[m]]
        i = m
      }
    }
    return top
  }

  #arm(): void {
    const next = this.#heap[0]
    if (!next) return
    if (this.#timer && next.at >= this.#armedAt) return
    if (this.#timer) clearTimeout(this.#timer)
    this.#armedAt = next.at
    this.#timer = setTimeout(() => this.#run(), Math.max(0, next.at - now()))
  }

  #run(): void {
    this.#timer = undefined
    this.#armedAt = Number.POSITIVE_INFINITY
    const t = now() + 0.5
    let n = 0
    while (this.#heap.length > 0 && this.#heap[0].at <= t && n < 10_000) {
      const item = this.#pop()!
      n++
      try {
        item.fn()
      } catch (err) {
        process.emitWarning(`sim scheduler: ${(err as Error).stack ?? err}`)
      }
    }
    this.#arm()
  }

  get size(): number {
    return this.#heap.length
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#heap.length = 0
  }
}

/** One end of a simulated connection. */
export class SimSocket {
  onData?: (chunk: Uint8Array) => void
  /** Called once: undefined for a clean close (FIN), an error for a reset. */
  onEnd?: (err?: Error) => void
  #buffered: Array<Uint8Array | { end: Error | undefined }> = []
  /** Delivery time of the last chunk sent, for FIFO order. */
  lastAt = 0
  closed = false

  constructor(
    readonly net: SimNet,
    readonly id: string,
    /** 'a' is the dialling end, 'b' the listening end. */
    readonly side: 'a' | 'b',
    readonly localIp: string,
    readonly localPort: number,
    readonly remoteIp: string,
    readonly remotePort: number,
  ) {}

  /** Attaches the receivers; anything that arrived before is delivered now. */
  attach(onData: (chunk: Uint8Array) => void, onEnd: (err?: Error) => void): void {
    this.onData = onData
    this.onEnd = onEnd
    for (const item of this.#buffered.splice(0)) {
      if (item instanceof Uint8Array) onData(item)
      else this.#end(item.end)
    }
  }

  send(chunk: Uint8Array): void {
    if (this.closed) return
    this.net.transmit(this, { kind: 'data', bytes: chunk })
  }

  /** Clean close (FIN). */
  end(): void {
    if (this.closed) return
    this.closed = true
    this.net.transmit(this, { kind: 'fin' })
    this.net.forget(this)
  }

  /** Reset (RST). */
  reset(): void {
    if (this.closed) return
    this.closed = true
    this.net.transmit(this, { kind: 'rst' })
    this.net.forget(this)
  }

  /** The remote end's data, FIN or RST arrived. */
  receive(kind: 'data' | 'fin' | 'rst', bytes?: Uint8Array): void {
    if (kind === 'data') {
      if (this.closed) return
      if (this.onData) this.onData(bytes!)
      else this.#buffered.push(bytes!)
      return
    }
    const err =
      kind === 'rst'
        ? Object.assign(new Error('connection reset by peer'), { code: 'ECONNRESET' })
        : undefined
    if (this.onEnd) this.#end(err)
    else this.#buffered.push({ end: err })
  }

  #end(err?: Error): void {
    const wasClosed = this.closed
    this.closed = true
    this.net.forget(this)
    if (!wasClosed || err) this.onEnd?.(err)
  }
}

type Packet = { kind: 'data'; bytes: Uint8Array } | { kind: 'fin' } | { kind: 'rst' }

/** Messages between hosts (threads). */
export type WireMessage =
  | { t: 'syn'; id: string; fromIp: string; fromPort: number; toIp: string; toPort: number; at: number }
  | { t: 'synack'; id: string; ok: boolean; at: number }
  | { t: 'pkt'; id: string; to: 'a' | 'b'; kind: 'data' | 'fin' | 'rst'; bytes?: Uint8Array; at: number }

export interface NetCounters {
  bytesSent: number
  bytesReceived: number
  packetsSent: number
  dialsOut: number
  dialsIn: number
  refused: number
}

/** The link delay between two addresses (one way, ms). */
export type LatencyFn = (fromIp: string, toIp: string) => number

export interface SimNetOptions {
  host: number
  /** Which host (thread) holds an address; undefined: nobody (the connection is refused). */
  hostOf: (ip: string) => number | undefined
  latency: LatencyFn
  /** Ports to the other hosts, by host index. */
  ports?: Map<number, MessagePort>
}

/**
 * The network as one thread sees it: its listeners, its sockets, and the ports to the other threads.
 */
export class SimNet {
  readonly scheduler = new Scheduler()
  readonly #listeners = new Map<string, (socket: SimSocket) => void>()
  readonly #sockets = new Map<string, SimSocket>()
  readonly #pendingDials = new Map<string, { resolve: (ok: boolean) => void }>()
  readonly #dead = new Set<string>()
  readonly #counters = new Map<string, NetCounters>()
  readonly #outbox = new Map<number, WireMessage[]>()
  #flushQueued = false
  #nextId = 0
  #nextPort = 40_000

  constructor(private readonly opts: SimNetOptions) {
    for (const [host, port] of opts.ports ?? []) {
      port.on('message', (batch: WireMessage[]) => {
        for (const m of batch) this.#onWire(host, m)
      })
    }
  }

  counters(ip: string): NetCounters {
    let c = this.#counters.get(ip)
    if (!c) {
      c = { bytesSent: 0, bytesReceived: 0, packetsSent: 0, dialsOut: 0, dialsIn: 0, refused: 0 }
      this.#counters.set(ip, c)
    }
    return c
  }

  listen(ip: string, port: number, onConnection: (socket: SimSocket) => void): void {
    const key = `${ip}:${port}`
    if (this.#listeners.has(key)) throw new Error(`address in use: ${key}`)
    this.#listeners.set(key, onConnection)
  }

  unlisten(ip: string, port: number): void {
    this.#listeners.delete(`${ip}:${port}`)
  }

  /** The host at `ip` vanished: nothing is delivered to or from it any more, nobody is told. */
  kill(ip: string): void {
    this.#dead.add(ip)
    for (const key of [...this.#listeners.keys()]) if (key.startsWith(`${ip}:`)) this.#listeners.delete(key)
    for (const [id, s] of this.#sockets) {
      if (s.localIp === ip) {
        s.closed = true
        this.#sockets.delete(id)
      }
    }
  }

  isDead(ip: string): boolean {
    return this.#dead.has(ip)
  }

  /**
   * Opens a connection from `fromIp` to `toIp:toPort`: resolves with the dialling end after one round
   * trip, or rejects (refused after one round trip, or aborted).
   */
  connect(fromIp: string, toIp: string, toPort: number, signal: AbortSignal): Promise<SimSocket> {
    signal.throwIfAborted()
    const id = `${this.opts.host}.${this.#nextId++}`
    const fromPort = this.#nextPort++
    if (this.#nextPort > 65_000) this.#nextPort = 40_000
    const socket = new SimSocket(this, id, 'a', fromIp, fromPort, toIp, toPort)
    this.counters(fromIp).dialsOut++
    const lat = this.opts.latency(fromIp, toIp)
    const host = this.opts.hostOf(toIp)
    return new Promise<SimSocket>((resolve, reject) => {
      let settled = false
      const onAbort = () => finish(false, signal.reason ?? new Error('aborted'))
      const finish = (ok: boolean, err?: Error) => {
        if (settled) return
        settled = true
        this.#pendingDials.delete(id)
        signal.removeEventListener('abort', onAbort)
        if (ok) {
          this.#sockets.set(id, socket)
          resolve(socket)
        } else {
          // a connection accepted after the dialler gave up is reset
          if (err && host !== undefined) socket.reset()
          reject(
            err ??
              Object.assign(new Error(`connection refused: ${toIp}:${toPort}`), { code: 'ECONNREFUSED' }),
          )
        }
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.#pendingDials.set(id, {
        resolve: (ok) => {
          if (ok && (this.#dead.has(fromIp) || signal.aborted)) {
            // accepted, but we are gone or gave up: tell the other end
            this.#sockets.set(id, socket)
            socket.reset()
            return finish(false, new Error('aborted'))
          }
          finish(ok)
        },
      })
      const at = now() + lat
      if (host === undefined || this.#dead.has(fromIp)) {
        // nobody there: refused after a round trip (a silent drop would be a timeout; refusal is kinder)
        this.scheduler.at(at + lat, () => this.#pendingDials.get(id)?.resolve(false))
        return
      }
      const syn: WireMessage = { t: 'syn', id, fromIp, fromPort, toIp, toPort, at }
      if (host === this.opts.host) this.scheduler.at(at, () => this.#onSyn(this.opts.host, syn))
      else this.#post(host, syn)
    })
  }

  /** A SYN arrived (at its delivery time): accept when someone listens, answer either way. */
  #onSyn(fromHost: number, m: Extract<WireMessage, { t: 'syn' }>): void {
    const listener = this.#listeners.get(`${m.toIp}:${m.toPort}`)
    const ok = listener !== undefined && !this.#dead.has(m.toIp)
    const lat = this.opts.latency(m.toIp, m.fromIp)
    const at = now() + lat
    let socket: SimSocket | undefined
    if (ok) {
      socket = new SimSocket(this, m.id, 'b', m.toIp, m.toPort, m.fromIp, m.fromPort)
      socket.lastAt = at
      this.#sockets.set(`${m.id}/b`, socket)
      this.counters(m.toIp).dialsIn++
    } else if (listener === undefined) {
      this.counters(m.toIp).refused++
    }
    // the SYN-ACK goes out before anything the listener sends (same delivery time, earlier in order)
    const synack: WireMessage = { t: 'synack', id: m.id, ok, at }
    if (fromHost === this.opts.host) this.scheduler.at(at, () => this.#pendingDials.get(m.id)?.resolve(ok))
    else this.#post(fromHost, synack)
    if (socket && listener) listener(socket)
  }

  #onWire(fromHost: number, m: WireMessage): void {
    if (m.t === 'syn') this.scheduler.at(m.at, () => this.#onSyn(fromHost, m))
    else if (m.t === 'synack') this.scheduler.at(m.at, () => this.#pendingDials.get(m.id)?.resolve(m.ok))
    else this.scheduler.at(m.at, () => this.#deliver(m.id, m.to, m.kind, m.bytes))
  }

  #key(id: string, side: 'a' | 'b'): string {
    return side === 'a' ? id : `${id}/b`
  }

  #deliver(id: string, to: 'a' | 'b', kind: 'data' | 'fin' | 'rst', bytes?: Uint8Array): void {
    const socket = this.#sockets.get(this.#key(id, to))
    if (!socket || this.#dead.has(socket.localIp)) return
    if (kind === 'data') this.counters(socket.localIp).bytesReceived += bytes!.byteLength
    socket.receive(kind, bytes)
  }

  /** Sends a packet from `socket` to its remote end. */
  transmit(socket: SimSocket, packet: Packet): void {
    if (this.#dead.has(socket.localIp)) return
    const lat = this.opts.latency(socket.localIp, socket.remoteIp)
    const at = Math.max(now() + lat, socket.lastAt)
    socket.lastAt = at
    const c = this.counters(socket.localIp)
    if (packet.kind === 'data') {
      c.bytesSent += packet.bytes.byteLength
      c.packetsSent++
    }
    const to = socket.side === 'a' ? 'b' : 'a'
    const host = this.opts.hostOf(socket.remoteIp)
    if (host === undefined) return
    if (host === this.opts.host) {
      const bytes = packet.kind === 'data' ? packet.bytes : undefined
      this.scheduler.at(at, () => this.#deliver(socket.id, to, packet.kind, bytes))
    } else {
      this.#post(host, {
        t: 'pkt',
        id: socket.id,
        to,
        kind: packet.kind,
        ...(packet.kind === 'data' ? { bytes: packet.bytes } : {}),
        at,
      })
    }
  }

  forget(socket: SimSocket): void {
    this.#sockets.delete(this.#key(socket.id, socket.side))
  }

  get openSockets(): number {
    return this.#sockets.size
  }

  #post(host: number, m: WireMessage): void {
    let box = this.#outbox.get(host)
    if (!box) {
      box = []
      this.#outbox.set(host, box)
    }
    box.push(m)
    if (!this.#flushQueued) {
      this.#flushQueued = true
      queueMicrotask(() => this.#flush())
    }
  }

  #flush(): void {
    this.#flushQueued = false
    for (const [host, box] of this.#outbox) {
      if (box.length === 0) continue
      this.opts.ports?.get(host)?.postMessage(box)
      this.#outbox.set(host, [])
    }
  }

  stop(): void {
    this.scheduler.stop()
    for (const port of this.opts.ports?.values() ?? []) port.close()
  }
}
