/**
 * Sentinels: loopback TCP listeners and UDP sockets that only count who reaches them. An attack hands the
 * target a sentinel's address (as a "victim" it should never contact, or as the attacker's own address
 * to see whether the target dials back), and the sentinel records every TCP connection and datagram,
 * with its time, so that dials made after the attack ended show up as background work.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, type Server } from 'node:net'

/** One contact with a sentinel. */
export interface SentinelHit {
  /** The sentinel's label (which attack planted the address, and what for). */
  label: string
  kind: 'tcp' | 'udp'
  /** ms since epoch. */
  at: number
  /** Bytes of the datagram (udp) or received before the sentinel closed the connection (tcp). */
  bytes: number
}

/** One listening address (TCP and UDP on the same ip:port). */
export interface Sentinel {
  label: string
  ip: string
  port: number
  /** `/ip4/<ip>/tcp/<port>` */
  tcp: string
  /** `/ip4/<ip>/udp/<port>` */
  udp: string
  /** `ip:port` */
  endpoint: string
}

/** Binds a TCP server on `ip:port` (0: any free port); resolves with the port, or rejects. */
function listenTcp(server: Server, ip: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: ip, port, backlog: 511, exclusive: true }, () => {
      server.off('error', reject)
      resolve((server.address() as { port: number }).port)
    })
  })
}

function bindUdp(socket: UdpSocket, ip: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind(port, ip, () => {
      socket.off('error', reject)
      resolve()
    })
  })
}

/** Every sentinel of a run, and their hits. Close it at the end (it closes every listener). */
export class Sentinels {
  readonly hits: SentinelHit[] = []
  readonly #servers: Server[] = []
  readonly #sockets: UdpSocket[] = []
  readonly #list: Sentinel[] = []
  #closed = false

  /** The sentinels opened so far. */
  get list(): readonly Sentinel[] {
    return this.#list
  }

  /**
   * Opens a sentinel labelled `label` on `ip` (default 127.0.0.1): TCP and UDP on the same port, a free
   * one unless `port` is given (then it must be free, e.g. the port a hostile peer dialled from).
   */
  async open(label: string, ip = '127.0.0.1', port = 0): Promise<Sentinel> {
    if (this.#closed) throw new Error('sentinels are closed')
    for (let attempt = 0; ; attempt++) {
      const server = createServer((socket) => {
        let bytes = 0
        socket.on('data', (d) => {
          bytes += d.length
        })
        socket.on('error', () => {})
        // hold it a moment (a dialler sees a real accept), then drop it: the dial fails at the handshake
        setTimeout(() => {
          this.hits.push({ label, kind: 'tcp', at: Date.now(), bytes })
          socket.destroy()
        }, 50).unref()
      })
      server.on('error', () => {})
      const udp = createSocket({ type: 'udp4' })
      udp.on('error', () => {})
      try {
        const bound = await listenTcp(server, ip, port)
        await bindUdp(udp, ip, bound)
        udp.on('message', (msg) => this.hits.push({ label, kind: 'udp', at: Date.now(), bytes: msg.length }))
        this.#servers.push(server)
        this.#sockets.push(udp)
        const s: Sentinel = {
          label,
          ip,
          port: bound,
          tcp: `/ip4/${ip}/tcp/${bound}`,
          udp: `/ip4/${ip}/udp/${bound}`,
          endpoint: `${ip}:${bound}`,
        }
        this.#list.push(s)
        return s
      } catch (err) {
        server.close()
        udp.close()
        // a random TCP port may be taken for UDP: try another (only when the port was ours to pick)
        if (port !== 0 || attempt >= 20) throw err
      }
    }
  }

  /** Hits since `since` (ms since epoch), optionally for labels starting with `prefix`. */
  since(since: number, prefix = ''): SentinelHit[] {
    return this.hits.filter((h) => h.at >= since && h.label.startsWith(prefix))
  }

  /** Hit counts by label (tcp and udp together) since `since`. */
  countByLabel(since = 0): Record<string, number> {
    const out: Record<string, number> = {}
    for (const h of this.since(since)) out[h.label] = (out[h.label] ?? 0) + 1
    return out
  }

  async close(): Promise<void> {
    this.#closed = true
    await Promise.all([
      ...this.#servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...this.#sockets.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))),
    ])
  }
}
