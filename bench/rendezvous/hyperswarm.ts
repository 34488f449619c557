/**
 * (a) hyperswarm on a local @hyperswarm/testnet: 5 testnet DHT nodes on 127.0.0.1 as bootstrap, each peer a
 * Hyperswarm on its own ephemeral DHT node from `testnet.createNode()`, joining sha256(TOPIC) as server and
 * client. A topic peer is a remote public key with an open 'connection' on that swarm.
 *
 * Peers that join at the same moment miss each other: each join is one announce query whose lookup runs
 * before the others' announcements are stored, and hyperswarm's next refresh of a topic is 10 min (+ up
 * to 2 min jitter) later (lib/peer-discovery.js). So, like the raw libp2p findProviders loop, each peer
 * calls `discovery.refresh()` (announce + lookup again) every REFRESH_PAUSE_MS while it has fewer than
 * min(5, N-1) topic peers. Every peer's DHT node bootstraps from all 5 testnet nodes (testnet.bootstrap
 * itself lists only the first one).
 *
 * Loopback only — the gotchas:
 *  - `new Hyperswarm()` without `dht` builds a HyperDHT with the PUBLIC bootstrap nodes
 *    (node{1,2,3}.hyperdht.org:49737, hyperdht/lib/constants.js) bound on 0.0.0.0; and hyperswarm forwards
 *    only bootstrap/nodes/port/deferRandomPunch/randomPunchInterval to it, never `host`. So each swarm gets
 *    `dht: testnet.createNode()`: `{ ephemeral: true, bootstrap: testnet.bootstrap, host: '127.0.0.1' }`.
 *  - The host matters beyond binding: hyperdht advertises a socket's local addresses to peers
 *    (holepuncher.localAddresses) and only a socket bound to 127.0.0.1 advertises 127.0.0.1 alone; on
 *    0.0.0.0 it advertises every non-internal interface address (e.g. the eth0 address) and LAN-pings it.
 *  - createTestnet(5) binds its nodes on 127.0.0.1 with `bootstrap: []` for the first node (an empty list
 *    is kept as is: `opts.bootstrap || BOOTSTRAP_NODES` only falls back on a missing list).
 *  - Public IP discovery in dht-rpc is only the NAT sampler: the address the bootstrap nodes saw us from
 *    (127.0.0.1 here); there is no STUN or external lookup.
 * As a belt-and-braces check, udx-native sockets are patched for this process: any UDP send, bind or
 * stream connect to a non-loopback address is counted and dropped (reported as `loopback_guard`).
 */
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import createTestnet, { type HostPort, type Testnet } from '@hyperswarm/testnet'
import Hyperswarm from 'hyperswarm'
import {
  BOOTSTRAP_NODES,
  type Harness,
  meanOf,
  measure,
  type RunResult,
  reason,
  sleep,
  TARGET_PEERS,
  TOPIC,
} from './common.js'

/** Pause between two refreshes of a peer short of topic peers (the raw libp2p loop pauses as long). */
const REFRESH_PAUSE_MS = 250

const isLoopback = (host: string | undefined) =>
  host === undefined || host === '127.0.0.1' || host === 'localhost' || host === '::1'

export interface LoopbackGuard {
  installed: boolean
  error?: string
  blocked_sends: number
  blocked_connects: number
  non_loopback_binds: number
  hosts: string[]
}

type Fn = (this: unknown, ...args: unknown[]) => unknown

/** Counts (and drops) UDP traffic to anything but loopback, for every udx-native socket of this process. */
export function installLoopbackGuard(): LoopbackGuard {
  const guard: LoopbackGuard = {
    installed: false,
    blocked_sends: 0,
    blocked_connects: 0,
    non_loopback_binds: 0,
    hosts: [],
  }
  const note = (host: unknown) => {
    const h = String(host)
    if (guard.hosts.length < 10 && !guard.hosts.includes(h)) guard.hosts.push(h)
  }
  try {
    const require = createRequire(import.meta.url)
    const Socket = require('udx-native/lib/socket.js') as { prototype: Record<string, Fn> }
    const Stream = require('udx-native/lib/stream.js') as { prototype: Record<string, Fn> }
    for (const method of ['send', 'trySend'] as const) {
      const original = Socket.prototype[method]
      Socket.prototype[method] = function (this: unknown, ...args: unknown[]) {
        const host = args[2] as string | undefined
        if (!isLoopback(host)) {
          guard.blocked_sends++
          note(host)
          return method === 'send' ? Promise.resolve(false) : undefined
        }
        return original.apply(this, args)
      }
    }
    const bind = Socket.prototype.bind
    Socket.prototype.bind = function (this: unknown, ...args: unknown[]) {
      const host = args[1] as string | undefined
      if (host !== '127.0.0.1') {
        guard.non_loopback_binds++
        note(`bind:${host ?? '(any)'}`)
      }
      return bind.apply(this, args)
    }
    const connect = Stream.prototype.connect
    Stream.prototype.connect = function (this: unknown, ...args: unknown[]) {
      const host = typeof args[3] === 'string' ? args[3] : undefined
      if (!isLoopback(host)) {
        guard.blocked_connects++
        note(host)
        throw new Error(`loopback guard: refusing a UDX stream to ${host}`)
      }
      return connect.apply(this, args)
    }
    guard.installed = true
  } catch (err) {
    guard.error = reason(err)
  }
  return guard
}

export function hyperswarmHarness(n: number): Harness {
  const topic = createHash('sha256').update(TOPIC).digest()
  const guard = installLoopbackGuard()
  let testnet: Testnet | undefined
  let bootstrap: HostPort[] = []
  const swarms: Hyperswarm[] = []
  const loops: Promise<void>[] = []
  let stopped = false
  const stats = { refreshes: 0 }
  return {
    async setup() {
      testnet = await createTestnet(BOOTSTRAP_NODES, { host: '127.0.0.1' })
      bootstrap = testnet.nodes.map((node) => {
        const address = node.address()
        if (address?.host !== '127.0.0.1')
          throw new Error(`a testnet node is not on loopback: ${JSON.stringify(address)}`)
        return { host: address.host, port: address.port }
      })
    },
    async startPeer(index, sink) {
      if (!testnet) throw new Error('setup() first')
      const target = index >= n ? Math.min(TARGET_PEERS, n) : Math.min(TARGET_PEERS, n - 1)
      // { ephemeral: true, host: '127.0.0.1' } from createNode, with all 5 testnet nodes to bootstrap from
      const dht = testnet.createNode({ bootstrap })
      const swarm = new Hyperswarm({ dht })
      swarms.push(swarm)
      // a remote key is a topic peer while at least one connection to it is open (duplicates get replaced)
      const open = new Map<string, number>()
      swarm.on('connection', (conn) => {
        const key = conn.remotePublicKey.toString('hex')
        conn.on('error', () => {})
        open.set(key, (open.get(key) ?? 0) + 1)
        sink.up(key)
        conn.once('close', () => {
          const left = (open.get(key) ?? 1) - 1
          if (left > 0) open.set(key, left)
          else {
            open.delete(key)
            sink.down(key)
          }
        })
      })
      const discovery = swarm.join(topic, { server: true, client: true })
      loops.push(
        (async () => {
          await discovery.flushed()
          while (!stopped && open.size < target) {
            await sleep(REFRESH_PAUSE_MS)
            if (stopped || open.size >= target) break
            stats.refreshes++
            await discovery.refresh().catch(() => false)
          }
        })(),
      )
    },
    async stop() {
      stopped = true
      await Promise.allSettled(swarms.map((s) => s.destroy()))
      await Promise.allSettled(loops)
      // the testnet owns the peers' DHT nodes too (createNode); destroying them twice is harmless
      await testnet?.destroy()
    },
    snapshot: () => ({ connections_per_peer_at_end: meanOf(swarms.map((s) => s.connections.size)) }),
    details: () => ({ hyperswarm: stats, loopback_guard: guard }),
  }
}

export function runHyperswarm(n: number, options: { timeoutMs: number }): Promise<RunResult> {
  return measure('hyperswarm', hyperswarmHarness(n), n, options)
}
