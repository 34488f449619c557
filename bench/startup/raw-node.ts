/**
 * The hand-written baseline for `bench/startup`: a plain `createLibp2p` script with the same modules and
 * options as `mesh start` with the default config (tcp + quic + noise + yamux + identify + ping, the
 * Ed25519 key from `<data-dir>/identity.key`, datastore-level in `<data-dir>/datastore`), no Meshkit code.
 *
 *   node dist/bench/startup/raw-node.js --data-dir <dir> --listen <multiaddr>... [--datastore level|memory]
 *
 * Prints `{"event":"started",...}` on stdout once listening (like `mesh start --json`), stops on
 * SIGTERM/SIGINT and prints `{"event":"stopped"}`.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { quic } from '@chainsafe/libp2p-quic'
import { yamux } from '@chainsafe/libp2p-yamux'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import { createLibp2p } from 'libp2p'

const { values } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    listen: { type: 'string', multiple: true },
    datastore: { type: 'string', default: 'level' },
  },
})
const dataDir = values['data-dir']
if (!dataDir) {
  process.stderr.write('raw-node: --data-dir is required\n')
  process.exit(2)
}

// Same defaults as Meshkit's built-in plugins and resolved config (plugins/*, src/core/resolve-config.ts).
const privateKey = privateKeyFromProtobuf(await readFile(join(dataDir, 'identity.key')))
const datastore =
  values.datastore === 'memory' ? new MemoryDatastore() : new LevelDatastore(join(dataDir, 'datastore'))
if (datastore instanceof LevelDatastore) await datastore.open()

const node = await createLibp2p({
  privateKey,
  datastore,
  start: false,
  addresses: { listen: values.listen ?? ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1'] },
  transports: [
    tcp({ inboundSocketInactivityTimeout: 30_000, outboundSocketInactivityTimeout: 30_000 }),
    quic({ maxIdleTimeout: 30_000, keepAliveInterval: 5_000 }),
  ],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify({ protocolPrefix: 'ipfs' }), ping: ping() },
  connectionManager: { maxConnections: 300, dialTimeout: 10_000 },
})
await node.start()

const started = {
  event: 'started',
  peerId: node.peerId.toString(),
  addresses: node.getMultiaddrs().map(String),
  // Self-reported for reference only; run.ts measures every process from outside (/proc/<pid>/status).
  rss: process.memoryUsage.rss(),
  time: Date.now(),
}
process.stdout.write(`${JSON.stringify(started)}\n`)

let stopping = false
const stop = async () => {
  if (stopping) process.exit(1)
  stopping = true
  await node.stop()
  if (datastore instanceof LevelDatastore) await datastore.close()
  process.stdout.write(`${JSON.stringify({ event: 'stopped', time: Date.now() })}\n`)
  process.exit(0)
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
