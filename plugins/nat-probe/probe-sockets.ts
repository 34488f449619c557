/**
 * Local sockets and ids for probes: this host's addresses, a fresh id per request, and local ports no
 * probe of this process used lately (UDP sockets and TCP ports), so that a filtering test starts from a
 * mapping that contacted the main server only.
 */
import { createSocket, type Socket } from 'node:dgram'
import { createServer } from 'node:net'
import { networkInterfaces } from 'node:os'

/** This host's IPv4 addresses, loopback included. */
export function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i?.family === 'IPv4')
    .map((i) => i!.address)
}

let nextId = 0
/** A fresh request id. */
export const newId = (tag: string) => `${tag}-${process.pid}-${Date.now().toString(36)}-${nextId++}`

/**
 * Local ports this process used for probes lately, per protocol. A filtering test must run from a port
 * whose NAT mapping has contacted only the main server: a cone NAT keeps a mapping (and, when
 * restricted, the remote IPs it contacted) for minutes after its last packet, and the kernel may hand a
 * just-released port out again (Node's servers bind with SO_REUSEADDR). A reused port that had contacted
 * the server's other IP lets the other-IP test in and turns a restricted cone into a "full cone".
 */
const recentPorts = { udp: new Map<number, number>(), tcp: new Map<number, number>() }
/** Longer than the mapping lifetime of common NATs (and the lab's 180 s). */
const RECENT_PORT_MS = 300_000

/** Remembers `port` as used for `protocol` probes now. */
function markUsed(protocol: 'udp' | 'tcp', port: number): void {
  const now = Date.now()
  const used = recentPorts[protocol]
  for (const [p, at] of used) if (now - at > RECENT_PORT_MS) used.delete(p)
  used.set(port, now)
}

/** Whether `port` was used for `protocol` probes within {@link RECENT_PORT_MS}. */
function usedLately(protocol: 'udp' | 'tcp', port: number): boolean {
  const at = recentPorts[protocol].get(port)
  return at !== undefined && Date.now() - at <= RECENT_PORT_MS
}

/** A UDP socket on a port no probe of this process used lately (see {@link recentPorts}); marked used. */
export async function bindFreshUdp(ip?: string): Promise<Socket> {
  for (let tries = 0; ; tries++) {
    const s = await bindUdp(ip)
    const port = s.address().port
    if (!usedLately('udp', port) || tries >= 20) {
      markUsed('udp', port)
      return s
    }
    s.close()
  }
}

function bindUdp(ip = '0.0.0.0', port = 0): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    s.once('error', reject)
    s.bind(port, ip, () => {
      s.off('error', reject)
      s.on('error', () => {})
      resolve(s)
    })
  })
}

/**
 * A free local TCP port that no probe of this process used lately (see {@link recentPorts}) and not in
 * `avoid`; marked used.
 */
export async function freshTcpPort(
  ip: string | undefined,
  avoid: ReadonlySet<number> = new Set(),
): Promise<number> {
  for (let tries = 0; ; tries++) {
    const port = await freePort(ip)
    if ((!usedLately('tcp', port) && !avoid.has(port)) || tries >= 20) {
      markUsed('tcp', port)
      return port
    }
  }
}

/** A free local TCP port (asked from the kernel, then released). */
function freePort(ip = '0.0.0.0'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, ip, () => {
      const a = srv.address()
      const port = typeof a === 'object' && a ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}
