/**
 * (b) js-libp2p wired by hand with the modules Meshkit uses (tcp, noise, yamux, identify, plus ping, which
 * kad-dht requires) and @libp2p/kad-dht as a server on a private protocol, all on 127.0.0.1.
 *
 * 5 bootstrap nodes are DHT servers; every peer dials all 5 at start (and redials any it is not connected
 * to before each round: under load many first dials time out), then `provide(cid)` and a
 * `findProviders(cid)` loop (a short pause between rounds) that dials the providers it finds until it has
 * min(5, N-1) topic peers. Topic CID: CIDv1 raw sha256(TOPIC). A topic peer is a peer that is known (from
 * findProviders) to provide the topic and has an open connection to this node, whoever dialled.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import {
  BOOTSTRAP_NODES,
  type Harness,
  meanOf,
  measure,
  type PeerSink,
  type RunResult,
  reason,
  sleep,
  TARGET_PEERS,
  TOPIC,
} from './common.js'

export const KAD_PROTOCOL = '/bench/kad/1.0.0'
const LISTEN = '/ip4/127.0.0.1/tcp/0'
/** Pause between two findProviders rounds. */
const ROUND_PAUSE_MS = 250
/** A findProviders round is aborted after this long (the loop then starts the next one). */
const ROUND_TIMEOUT_MS = 5_000
/** provide() is retried this often at most while it fails (e.g. before the routing table has anyone). */
const PROVIDE_ATTEMPTS = 5

export async function topicCid(topic = TOPIC): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(topic)))
}

async function createNode(): Promise<Libp2p> {
  return createLibp2p({
    start: false,
    addresses: { listen: [LISTEN] },
    // the same transport/muxer/encrypter settings as Meshkit's tcp/noise/yamux/identify plugins
    transports: [tcp({ inboundSocketInactivityTimeout: 30_000, outboundSocketInactivityTimeout: 30_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify({ protocolPrefix: 'ipfs' }),
      ping: ping(),
      dht: kadDHT({ protocol: KAD_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper }),
    },
    connectionManager: {
      // Meshkit's defaults
      maxConnections: 300,
      dialTimeout: 10_000,
      // dozens of peers dialling from one host: no per-host inbound rate limit, no pending cap, no pruning
      allow: ['/ip4/127.0.0.1/ipcidr/32'],
      inboundConnectionThreshold: 10_000,
      maxIncomingPendingConnections: 1_000,
    },
  })
}

export function rawLibp2pHarness(n: number): Harness {
  const bootstrap: Libp2p[] = []
  const peers: Libp2p[] = []
  const loops: Promise<void>[] = []
  const stopping = new AbortController()
  let bootstrapAddrs: string[] = []
  let cid: CID | undefined
  const stats = {
    find_rounds: 0,
    provide_failures: 0,
    dial_failures: 0,
    bootstrap_dial_failures: 0,
    bootstrap_redials: 0,
  }

  async function runPeer(index: number, node: Libp2p, sink: PeerSink): Promise<void> {
    const target = index >= n ? Math.min(TARGET_PEERS, n) : Math.min(TARGET_PEERS, n - 1)
    const self = node.peerId.toString()
    const providers = new Set<string>()
    const connected = (id: string) => node.getConnections().some((c) => c.remotePeer.toString() === id)
    const count = () => [...providers].filter(connected).length
    // the current findProviders round: ended early once the peer has its topic peers
    let round = new AbortController()
    const up = (id: string) => {
      sink.up(id)
      if (count() >= target) round.abort()
    }
    node.addEventListener('peer:connect', (evt) => {
      const id = evt.detail.toString()
      if (providers.has(id)) up(id)
    })
    node.addEventListener('peer:disconnect', (evt) => sink.down(evt.detail.toString()))

    // Dial the bootstrap nodes; redialled (below) while any of them is not connected: with dozens of
    // nodes starting in one process, a good part of the first dials time out in the noise handshake.
    const bootstrapIds = bootstrapAddrs.map((a) => a.slice(a.lastIndexOf('/p2p/') + 5))
    const dialBootstrap = () =>
      Promise.allSettled(
        bootstrapAddrs.map((a, i) =>
          connected(bootstrapIds[i])
            ? undefined
            : node.dial(multiaddr(a), { signal: stopping.signal }).catch((err: unknown) => {
                stats.bootstrap_dial_failures++
                throw err
              }),
        ),
      )
    await dialBootstrap()
    const key = cid as CID
    void (async () => {
      for (let attempt = 0; attempt < PROVIDE_ATTEMPTS && !stopping.signal.aborted; attempt++) {
        try {
          await node.contentRouting.provide(key, { signal: stopping.signal })
          return
        } catch {
          stats.provide_failures++
          await sleep(ROUND_PAUSE_MS)
        }
      }
    })()

    const dialling = new Set<string>()
    const learn = (id: PeerId) => {
      const s = id.toString()
      if (s === self) return
      if (!providers.has(s)) {
        providers.add(s)
        if (connected(s)) up(s)
      }
      if (connected(s) || dialling.has(s) || count() + dialling.size >= target) return
      dialling.add(s)
      node
        .dial(id, { signal: stopping.signal })
        .catch(() => {
          stats.dial_failures++
        })
        .finally(() => dialling.delete(s))
    }
    while (!stopping.signal.aborted && count() < target) {
      stats.find_rounds++
      if (bootstrapIds.some((id) => !connected(id))) {
        stats.bootstrap_redials++
        void dialBootstrap()
      }
      round = new AbortController()
      const signal = AbortSignal.any([stopping.signal, round.signal, AbortSignal.timeout(ROUND_TIMEOUT_MS)])
      try {
        for await (const provider of node.contentRouting.findProviders(key, { signal })) {
          learn(provider.id)
          if (count() >= target) break
        }
      } catch {
        // aborted round or query error: try again after the pause
      }
      if (count() >= target) break
      await sleep(ROUND_PAUSE_MS)
    }
  }

  return {
    async setup() {
      cid = await topicCid()
      for (let i = 0; i < BOOTSTRAP_NODES; i++) bootstrap.push(await createNode())
      await Promise.all(bootstrap.map((b) => b.start()))
      bootstrapAddrs = bootstrap.map((b) => {
        const addr = b.getMultiaddrs().find((a) => a.toString().startsWith('/ip4/127.0.0.1/tcp/'))
        if (!addr) throw new Error('a bootstrap node has no 127.0.0.1 address')
        const s = addr.toString()
        return s.includes('/p2p/') ? s : `${s}/p2p/${b.peerId}`
      })
      // the bootstrap nodes know each other, like a running network would
      await Promise.allSettled(
        bootstrap.flatMap((b, i) => bootstrapAddrs.slice(i + 1).map((a) => b.dial(multiaddr(a)))),
      )
    },
    async startPeer(index, sink) {
      const node = await createNode()
      peers.push(node)
      await node.start()
      // the findProviders loop runs in the background; the peer counts as started once it has joined
      loops.push(
        runPeer(index, node, sink).catch((err: unknown) => {
          if (!stopping.signal.aborted) throw new Error(`peer ${index}: ${reason(err)}`)
        }),
      )
    },
    async stop() {
      stopping.abort()
      await Promise.allSettled(loops)
      await Promise.allSettled([...peers, ...bootstrap].map((node) => node.stop()))
    },
    snapshot: () => ({ connections_per_peer_at_end: meanOf(peers.map((p) => p.getConnections().length)) }),
    details: () => ({ raw_libp2p: stats }),
  }
}

export function runRawLibp2p(n: number, options: { timeoutMs: number }): Promise<RunResult> {
  return measure('raw_libp2p', rawLibp2pHarness(n), n, options)
}
