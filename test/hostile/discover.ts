/**
 * Reconnaissance, as an attacker would do it: connect once, ask identify for the protocol list, ask the
 * topics exchange which topic keys the target joined, and the tags exchange for its clustering tags.
 */
import type { TargetInfo } from './attack.js'
import { HostilePool, identifyTarget } from './hostile-node.js'
import { closeSoon, json, lp, send } from './wire.js'

export const TOPICS_PROTOCOL = '/mesh/topics/1.0.0'
export const TAGS_PROTOCOL = '/mesh/tags/1.0.0'

export interface DiscoverOptions {
  /** The target's STUN server, when known (a public node's is on its announced IP, port 3478 by default). */
  stun?: { host: string; port: number }
  /** The target's NAT probe endpoints, when known. */
  probe?: { udp: string[]; tcp: string[] }
  /** The source IP of the scouting peer. @default '127.0.0.200' */
  sourceIp?: string
}

/** What the attacker learns about the target at `tcp` (a multiaddr with /p2p/<id>). */
export async function discoverTarget(tcp: string, options: DiscoverOptions = {}): Promise<TargetInfo> {
  const m = /^\/ip4\/([^/]+)\/tcp\/(\d+)\/p2p\/([^/]+)$/.exec(tcp)
  if (!m) throw new Error(`expected /ip4/<ip>/tcp/<port>/p2p/<id>, got ${tcp}`)
  const pool = new HostilePool([options.sourceIp ?? '127.0.0.200'])
  try {
    const node = await pool.spawn()
    const connection = await node.dial(tcp)
    const id = await identifyTarget(node, connection)
    const quic = id.listenAddrs.find((a) => a.includes('/quic-v1'))
    const info: TargetInfo = {
      peerId: m[3],
      tcp,
      host: m[1],
      tcpPort: Number(m[2]),
      quic: quic ? `${quic.replace(/\/p2p\/[^/]+$/, '')}/p2p/${m[3]}` : undefined,
      protocols: id.protocols,
      stun: options.stun,
      probe: options.probe,
      topicKeys: [],
      tags: [],
    }
    if (id.protocols.includes(TOPICS_PROTOCOL)) {
      const { stream, reader } = await node.open(connection, TOPICS_PROTOCOL)
      await send(stream, lp(json({ v: 1, joined: [], addrs: [] })))
      const answer = await reader.readLp(5000)
      await closeSoon(stream)
      if (answer) info.topicKeys = (JSON.parse(new TextDecoder().decode(answer)).joined as string[]) ?? []
    }
    if (id.protocols.includes(TAGS_PROTOCOL)) {
      const { stream, reader } = await node.open(connection, TAGS_PROTOCOL)
      await send(stream, lp(json({ v: 1, tags: [] })))
      const answer = await reader.readLp(5000)
      await closeSoon(stream)
      if (answer) info.tags = (JSON.parse(new TextDecoder().decode(answer)).tags as string[]) ?? []
    }
    await connection.close().catch(() => {})
    return info
  } finally {
    await pool.stopAll()
  }
}
