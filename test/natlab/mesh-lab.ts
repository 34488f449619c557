/**
 * A Meshkit mesh in the NAT lab (issue 12): real `mesh start --json` processes in lab namespaces, with
 * the configs a user would write from the relay and nat templates (JSON configs naming built-ins):
 *
 * - relays: public hosts; identify, ping, noise, yamux, tcp, kadTopics (DHT server, rendezvous point),
 *   relayServer, stunServer; listening on their lab address, port 4001; static peers: the other relays.
 * - peers: one per NAT site (behaviours given); identify, ping, noise, yamux, tcp, kadTopics (the topic,
 *   `connectionsPerTopic`), staticPeers(relays), relayClient(relays), holePunch(the relays' STUN servers),
 *   peerCache; listening on 0.0.0.0 (TCP) and /webrtc.
 *
 * Both: `network.publicCidrs` = the lab's "internet" (documentation ranges, which libp2p counts as
 * private), so that the relays' and routers' addresses are dialled and LAN addresses (198.18/15) are not:
 * two NATed peers reach each other only through a relay, then hole-punched (WebRTC) where the NATs allow.
 *
 * {@link NatMesh} starts them, tracks every peer's topic view (topic:peer / topic:peer:lost) and how each
 * connection was made (connection:method from holePunch), and can kill a relay.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { MeshProc, sleep } from '../../bench/churn/fleet.js'
import { type Lab, type LabHost, type NatBehaviour, SEGMENTS } from './lab.js'

export const LAB_PUBLIC_CIDRS = [SEGMENTS.a.subnet, SEGMENTS.b.subnet]
const RELAY_PORT = 4001
const STUN_PORT = 3478
/** The NAT probe's UDP ports on the relays (STUN has 3478). */
const PROBE_PORTS = [3490, 3491]

export interface NatPeer {
  name: string
  behaviour: NatBehaviour
  host: LabHost
  proc: MeshProc
  /** Topic peers now. */
  view: Set<string>
  /** Peer id -> how the connection to it was made (the latest connection:method). */
  methods: Map<string, { method: string; transport: string; at: number }>
  /** Connections open now: connection id -> {peer, transport}. */
  conns: Map<string, { peer: string; transport: string; relayed: boolean; remoteAddr: string }>
}

export interface NatRelay {
  name: string
  host: LabHost
  proc: MeshProc
  address: string
}

export interface NatMeshOptions {
  lab: Lab
  /** Where configs and data dirs go. */
  dir: string
  topic?: string
  /** connectionsPerTopic. @default 8 */
  k?: number
  /** relayClient minReservations. @default 2 */
  minReservations?: number
  /** Extra holePunch options. */
  holePunch?: Record<string, unknown>
  /**
   * Peers classify their NAT (natClassifier() against the first relay's natProbeServer(), UDP): the
   * hole-punch strategy then knows both types (a birthday punch for port-restricted cone + symmetric).
   * The relays' hosts need two addresses. @default true
   */
  classifier?: boolean
  log?: (text: string) => void
}

const parseLine = (l: { event: string; [k: string]: unknown }) => l

/** The relays and peers of one mesh in a lab. */
export class NatMesh {
  readonly relays: NatRelay[] = []
  readonly peers: NatPeer[] = []
  readonly procs = new Set<MeshProc>()
  readonly topic: string
  readonly k: number

  constructor(readonly options: NatMeshOptions) {
    this.topic = options.topic ?? 'lab-topic'
    this.k = options.k ?? 8
  }

  #spawn(name: string, host: LabHost, cwd: string, args: string[]): MeshProc {
    const proc = new MeshProc({
      name,
      cwd,
      netns: host.netns,
      // NATMESH_LOG_LEVEL=debug: the nodes' own logs (stderr, in the NATMESH_DUMP files)
      args: process.env.NATMESH_LOG_LEVEL ? [...args, '--log-level', process.env.NATMESH_LOG_LEVEL] : args,
      env: process.env.NATMESH_DEBUG ? { DEBUG: process.env.NATMESH_DEBUG } : undefined,
      dumpFile: process.env.NATMESH_DUMP ? join(process.env.NATMESH_DUMP, `${name}.log`) : undefined,
    })
    this.procs.add(proc)
    void proc.exited.then(() => this.procs.delete(proc))
    return proc
  }

  /** Starts relays on `hosts` (public hosts), one after the other (each knows the earlier ones). */
  async startRelays(hosts: LabHost[]): Promise<NatRelay[]> {
    for (const host of hosts) {
      const name = `relay${this.relays.length}`
      const cwd = join(this.options.dir, name)
      await mkdir(cwd, { recursive: true })
      const others = this.relays.map((r) => r.address)
      await writeFile(
        join(cwd, 'mesh.config.json'),
        JSON.stringify({
          plugins: [
            'identify',
            'ping',
            'noise',
            'yamux',
            'tcp',
            { plugin: 'kad-topics', options: { dhtMode: 'server' } },
            { plugin: 'relay-server', options: { maxReservations: 256 } },
            { plugin: 'stun-server', options: { port: STUN_PORT } },
            ...(host.addresses.length >= 2
              ? [
                  {
                    plugin: 'nat-probe-server',
                    options: { addresses: host.addresses.slice(0, 2), udpPorts: PROBE_PORTS },
                  },
                ]
              : []),
            ...(others.length > 0 ? [{ plugin: 'static-peers', options: { peers: others } }] : []),
          ],
          bootstrap: { minConnections: others.length },
          network: { publicCidrs: LAB_PUBLIC_CIDRS },
        }),
      )
      const proc = this.#spawn(name, host, cwd, [
        '--data-dir',
        join(cwd, 'data'),
        '--listen',
        `/ip4/${host.ip}/tcp/${RELAY_PORT}`,
        '--no-control',
      ])
      await proc.waitStarted(90_000)
      const relay = { name, host, proc, address: `/ip4/${host.ip}/tcp/${RELAY_PORT}/p2p/${proc.peerId}` }
      this.relays.push(relay)
      this.options.log?.(`${name} up at ${relay.address}`)
    }
    return this.relays
  }

  /** The peers' config (written once the relays run). */
  async #peerDir(): Promise<string> {
    const cwd = join(this.options.dir, 'peers')
    await mkdir(cwd, { recursive: true })
    const relays = this.relays.map((r) => r.address)
    await writeFile(
      join(cwd, 'mesh.config.json'),
      JSON.stringify({
        plugins: [
          'identify',
          'ping',
          'noise',
          'yamux',
          'tcp',
          { plugin: 'kad-topics', options: { connectionsPerTopic: this.k } },
          { plugin: 'static-peers', options: { peers: relays } },
          {
            plugin: 'relay-client',
            options: { relays, minReservations: this.options.minReservations ?? 2 },
          },
          {
            plugin: 'hole-punch',
            options: {
              stunServers: this.relays.map((r) => `stun:${r.host.ip}:${STUN_PORT}`),
              ...this.options.holePunch,
            },
          },
          'peer-cache',
          ...(this.options.classifier !== false && this.relays[0].host.addresses.length >= 2
            ? [
                {
                  plugin: 'nat-classifier',
                  options: { servers: [`${this.relays[0].host.ip}:${PROBE_PORTS[0]}`], tcp: false },
                },
              ]
            : []),
        ],
        network: { publicCidrs: LAB_PUBLIC_CIDRS },
      }),
    )
    return cwd
  }

  /** Starts a peer on `host` (a NAT site's host) with the topic; does not wait for it. */
  async startPeer(host: LabHost, behaviour: NatBehaviour): Promise<NatPeer> {
    const cwd = await this.#peerDir()
    const name = `peer${this.peers.length}-${behaviour}`
    const proc = this.#spawn(name, host, cwd, [
      '--data-dir',
      join(cwd, name),
      '--listen',
      '/ip4/0.0.0.0/tcp/0',
      '--listen',
      '/webrtc',
      '--topic',
      this.topic,
      '--no-control',
    ])
    const peer: NatPeer = {
      name,
      behaviour,
      host,
      proc,
      view: new Set(),
      methods: new Map(),
      conns: new Map(),
    }
    proc.on((raw) => {
      const l = parseLine(raw)
      if (l.event === 'topic:peer') peer.view.add(String(l.peerId))
      else if (l.event === 'topic:peer:lost') peer.view.delete(String(l.peerId))
      else if (l.event === 'connection:method')
        peer.methods.set(String(l.peerId), {
          method: String(l.method),
          transport: String(l.transport),
          at: Number(l.time),
        })
      else if (l.event === 'connection:open')
        peer.conns.set(String(l.connectionId), {
          peer: String(l.peerId),
          transport: String(l.transport),
          relayed: l.relayed === true,
          remoteAddr: String(l.remoteAddr),
        })
      else if (l.event === 'connection:close') peer.conns.delete(String(l.connectionId))
    })
    this.peers.push(peer)
    return peer
  }

  /** Peer ids of the live peers. */
  livePeers(): NatPeer[] {
    return this.peers.filter((p) => p.proc.alive && p.proc.peerId)
  }

  /**
   * Whether `peer` has min(k, members - 1) live topic peers: `view` (what `mesh topics` shows): peers in
   * its own topic view that it is connected to; `connected` (the mesh as a whole): members it has an
   * open connection to (direct, hole-punched or relayed) that count it or it counts as a topic peer.
   */
  satisfied(peer: NatPeer, by: 'view' | 'connected' = 'view'): boolean {
    const live = this.livePeers()
    const need = Math.min(this.k, live.length - 1)
    let n = 0
    for (const other of live) {
      const id = other.proc.peerId!
      if (other === peer || !this.connectedTo(peer, id)) continue
      if (peer.view.has(id) || (by === 'connected' && other.view.has(peer.proc.peerId!))) n++
    }
    return n >= need
  }

  /** Whether `peer` has an open connection to `id` (any: direct, hole-punched or relayed). */
  connectedTo(peer: NatPeer, id: string): boolean {
    for (const c of peer.conns.values()) if (c.peer === id) return true
    return false
  }

  /** Whether `peer` has a direct (not relayed) connection to `id`. */
  directTo(peer: NatPeer, id: string): boolean {
    for (const c of peer.conns.values()) if (c.peer === id && !c.relayed) return true
    return false
  }

  /** Waits until every live peer is satisfied (see {@link satisfied}); ms, or null after `timeoutMs`. */
  async waitSatisfied(timeoutMs: number, by: 'view' | 'connected' = 'view'): Promise<number | null> {
    const t0 = Date.now()
    while (Date.now() - t0 < timeoutMs) {
      if (this.livePeers().every((p) => this.satisfied(p, by))) return Date.now() - t0
      await sleep(100)
    }
    return null
  }

  /** How the live peers are connected to each other: pairs by the best connection they have. */
  pairSummary(): { direct: number; holePunched: number; relayed: number; none: number } {
    const out = { direct: 0, holePunched: 0, relayed: 0, none: 0 }
    const peers = this.livePeers()
    for (let i = 0; i < peers.length; i++)
      for (let j = i + 1; j < peers.length; j++) {
        const a = peers[i]
        const b = peers[j]
        const conns = [...a.conns.values()].filter((c) => c.peer === b.proc.peerId)
        if (conns.length === 0) out.none++
        else if (conns.some((c) => c.transport === 'webrtc')) out.holePunched++
        else if (conns.some((c) => !c.relayed)) out.direct++
        else out.relayed++
      }
    return out
  }

  async close(): Promise<void> {
    await Promise.all([...this.procs].map((p) => p.kill()))
  }
}
