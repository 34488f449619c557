/**
 * A Meshkit node for the NAT lab, run as its own process inside a lab namespace:
 * `ip netns exec <ns> node dist/test/natlab/node-script.js '<json NodeScriptConfig>'`.
 * Prints JSON lines on stdout: `{"event":"started",peerId,addresses}`, `{"event":"classified",udp,tcp}`
 * (natClassifier()'s verdict, when `probeServer` is given), `{"event":"reserved",addresses}` (a relay
 * reservation is held), the kernel bus's `connection:method` events, and, for a node told to dial, one
 * `{"event":"result",...}` (after its own classification). Exits by itself after `lifetimeMs` (or when
 * killed).
 *
 * Roles:
 * - `relay`: a public node: stock circuitRelayServer (a test-only plugin here), the `stunServer()` plugin,
 *   and `natProbeServer()` on the host's two addresses (`probeAddresses`).
 * - `peer` with `mode: 'meshkit'`: `natClassifier()` + the `holePunch({ classifier: true })` plugin
 *   (circuit relay client + WebRTC + the strategy from both sides' NAT types).
 * - `peer` with `mode: 'stock'`: stock js-libp2p (circuit relay client + DCUtR), for comparison; it runs
 *   `natClassifier()` too, only to report its NAT type (the classifier does not change the traversal).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import type { Connection } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { createEventBus, describeConnection, type MeshPlugin, startMesh, z } from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
// the plugins one by one, not 'meshkit/plugins' (which loads kad-dht, mdns, quic: seconds of start-up here)
import type { HolePunchApi } from '../../plugins/hole-punch/index.js'
import { identify } from '../../plugins/identify/index.js'
import type { NatClassificationApi } from '../../plugins/nat-probe/index.js'
import { noise } from '../../plugins/noise/index.js'
import { ping } from '../../plugins/ping/index.js'
import { tcp } from '../../plugins/tcp/index.js'
import { yamux } from '../../plugins/yamux/index.js'

/** The last /p2p/<id> of an address. */
const peerIdOf = (address: string) => /\/p2p\/([^/]+)\/?$/.exec(address)?.[1]

export interface NodeScriptConfig {
  role: 'relay' | 'peer'
  mode?: 'meshkit' | 'stock'
  /** The host's own address: public nodes listen on and announce it. */
  ip: string
  /** Public host (no NAT): listen on `ip` itself (not 0.0.0.0, whose expansion includes 127.0.0.1). */
  public?: boolean
  /** TCP port to listen on. @default 4001 on a public host, else 0 */
  port?: number
  stunPort?: number
  stunServers?: string[]
  relays?: string[]
  /** Dial this address once the relay reservation is held, and report a `result`. */
  dial?: string
  /** Or: wait (at most 150 s) for this file to hold the address to dial (lets the runner start both peers at once). */
  dialFile?: string
  /** Stock mode: how long to wait for DCUtR to give a direct connection. @default 8000 */
  directWaitMs?: number
  /** Upgrade timeout (meshkit mode). @default 6000 */
  upgradeTimeout?: number
  /** Exit after this long. @default 60000 */
  lifetimeMs?: number
  /** Relay: serve the NAT probe on these (two) addresses. */
  probeAddresses?: string[]
  /** Relay: the probe's UDP (and TCP) ports. @default [3490, 3491] (3478 is the STUN server's) */
  probePorts?: [number, number]
  /** Peer: classify this node's NAT against this probe server ('ip:port') before anything else. */
  probeServer?: string
}

const print = (event: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...fields, t: Date.now() })}\n`)

/** Test-only: the stock relay server, with room for every peer of a matrix run. */
const relayServer = definePlugin({
  name: 'test-relay-server',
  dependencies: ['identify'],
  create: () => ({
    libp2p: () => ({
      services: {
        relay: circuitRelayServer({ reservations: { maxReservations: 1024 } }),
      },
    }),
  }),
})

/** Test-only: stock js-libp2p NAT traversal: circuit relay client + DCUtR (no WebRTC). */
const stockTraversal = definePlugin({
  name: 'stock-traversal',
  dependencies: ['transport', 'identify'],
  options: z.strictObject({ relays: z.array(z.string()) }),
  create: (opts) => ({
    libp2p: () => ({
      transports: [circuitRelayTransport()],
      services: { dcutr: dcutr() },
      addresses: { listen: opts.relays.map((r) => `${r}/p2p-circuit`) },
    }),
  }),
})

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as NodeScriptConfig
  const lifetime = setTimeout(() => process.exit(0), cfg.lifetimeMs ?? 60_000)
  const dataDir = await mkdtemp(join(tmpdir(), 'natlab-node-'))
  const events = createEventBus()
  events.on('connection:method', (e) => print('connection:method', { ...e }))
  const relays = cfg.relays ?? []
  const port = cfg.port ?? (cfg.public ? 4001 : 0)
  const plugins: MeshPlugin[] = [
    identify(),
    ping(),
    noise(),
    yamux(),
    // a public node listens on its lab address only: listening on 0.0.0.0 would make it advertise
    // 127.0.0.1 too (a relay's reservations hand out its addresses, and peers then dial themselves)
    tcp({ listen: [`/ip4/${cfg.public ? cfg.ip : '0.0.0.0'}/tcp/${port}`] }),
  ]
  // @libp2p/webrtc is loaded only where it is used (not by stock peers)
  const holePunchPlugins = () => import('../../plugins/hole-punch/index.js')
  const natProbe = () => import('../../plugins/nat-probe/index.js')
  if (cfg.role === 'relay') {
    plugins.push(relayServer(), (await holePunchPlugins()).stunServer({ port: cfg.stunPort ?? 3478 }))
    if (cfg.probeAddresses)
      plugins.push(
        (await natProbe()).natProbeServer({
          addresses: cfg.probeAddresses,
          udpPorts: cfg.probePorts ?? [3490, 3491],
        }),
      )
  } else {
    // classified once, on demand below (auto: the re-check after the relay reservation would only add load)
    if (cfg.probeServer)
      plugins.push((await natProbe()).natClassifier({ servers: [cfg.probeServer], auto: false }))
    if (cfg.mode === 'stock') plugins.push(stockTraversal({ relays }))
    else {
      const { holePunch } = await holePunchPlugins()
      plugins.push(
        holePunch({
          stunServers: cfg.stunServers ?? [],
          relays,
          upgradeTimeout: cfg.upgradeTimeout ?? 6000,
          classifier: cfg.probeServer !== undefined,
        }),
      )
    }
  }
  const mesh = await startMesh({
    config: {
      dataDir,
      datastore: 'memory',
      logLevel: 'silent',
      plugins,
      bootstrap: { minConnections: 0 },
      // the lab's "internet" uses documentation ranges, which libp2p counts as private
      network: { publicCidrs: ['198.51.100.0/24', '203.0.113.0/24'] },
    },
    events,
  })
  let closing = false
  const close = async (code: number) => {
    if (closing) return
    closing = true
    clearTimeout(lifetime)
    await Promise.race([mesh.close().catch(() => {}), new Promise((r) => setTimeout(r, 3000))])
    await rm(dataDir, { recursive: true, force: true }).catch(() => {})
    process.exit(code)
  }
  process.once('SIGTERM', () => void close(0))
  process.once('SIGINT', () => void close(0))
  const libp2p = mesh.node.libp2p
  print('started', { peerId: libp2p.peerId.toString(), addresses: libp2p.getMultiaddrs().map(String) })

  // the NAT classification runs while the relay reservation is made; the dial waits for both
  const classified =
    cfg.role === 'peer' && cfg.probeServer
      ? mesh.node
          .api<NatClassificationApi>('nat-classification')
          .classify()
          .then(
            (r) => {
              print('classified', {
                udp: r.udp?.type,
                tcp: r.tcp?.type,
                udpConfidence: r.udp?.confidence,
                tcpConfidence: r.tcp?.confidence,
                // why, for a failing test's message
                udpReason: [r.udp?.reason, ...(r.udp?.evidence.notes ?? [])].join('; '),
                tcpReason: [r.tcp?.reason, ...(r.tcp?.evidence.notes ?? [])].join('; '),
                ms: r.ms,
              })
              return true
            },
            (err) => {
              print('classified', { udp: 'unknown', tcp: 'unknown', error: String(err) })
              return false
            },
          )
      : Promise.resolve(true)

  if (cfg.role === 'peer' && relays.length > 0) {
    const deadline = Date.now() + 45_000
    while (!libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit'))) {
      if (Date.now() > deadline) {
        print('error', { error: 'no relay reservation after 45 s' })
        return close(1)
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    print('reserved', { addresses: libp2p.getMultiaddrs().map(String) })
  }

  let target = cfg.dial
  if (cfg.role === 'peer' && !target && cfg.dialFile) {
    const deadline = Date.now() + 150_000
    while (!target) {
      target = (await readFile(cfg.dialFile, 'utf8').catch(() => '')).trim() || undefined
      if (target) break
      if (Date.now() > deadline) {
        print('error', { error: `nothing to dial in ${cfg.dialFile} after 150 s` })
        return close(1)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  if (cfg.role === 'peer' && target) {
    // bounded: the classifier's own waits are (a few probe timeouts)
    await Promise.race([classified, new Promise((r) => setTimeout(r, 30_000))])
    const peer = peerIdOf(target)!
    try {
      if (cfg.mode === 'stock') {
        const t0 = Date.now()
        const first = await libp2p.dial(multiaddr(target), { signal: AbortSignal.timeout(15_000) })
        const msToFirst = Date.now() - t0
        let best: Connection = first
        const until = Date.now() + (cfg.directWaitMs ?? 8000)
        while (best.limits !== undefined && Date.now() < until) {
          const direct = libp2p
            .getConnections()
            .find((c) => c.remotePeer.toString() === peer && c.limits === undefined && c.status === 'open')
          if (direct) best = direct
          else await new Promise((r) => setTimeout(r, 100))
        }
        const relayed = best.limits !== undefined
        print('result', {
          connected: true,
          method: relayed ? 'relayed' : first === best ? 'direct' : 'hole-punched',
          transport: relayed ? 'relay' : describeConnection(best).transport,
          attempts: 0,
          msToFirst,
          msToDirect: relayed ? undefined : Date.now() - t0,
          remoteAddr: best.remoteAddr.toString(),
        })
      } else {
        const api = mesh.node.api<HolePunchApi>('hole-punch')
        const r = await api.connect(target, { signal: AbortSignal.timeout(30_000) })
        print('result', { connected: true, ...r, stats: api.stats() })
      }
    } catch (err) {
      print('result', { connected: false, error: String(err) })
    }
    return close(0)
  }
}

main().catch((err) => {
  print('error', { error: String(err?.stack ?? err) })
  process.exit(1)
})
