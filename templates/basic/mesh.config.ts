import { defineConfig } from 'meshkit'
import { identify, kadTopics, noise, peerCache, ping, quic, staticPeers, tcp, yamux } from 'meshkit/plugins'

/**
 * Bootstrap peers: full multiaddrs with /p2p/<peer id>, comma-separated in MESH_BOOTSTRAP, e.g. the
 * addresses a node made with `mesh init --template relay` prints when it starts.
 */
const bootstrap = (process.env.MESH_BOOTSTRAP ?? '')
  .split(',')
  .map((a) => a.trim())
  .filter((a) => a.length > 0)

/** The topics this node joins (MESH_TOPICS, comma-separated). */
const topics = (process.env.MESH_TOPICS ?? 'hello-meshkit')
  .split(',')
  .map((t) => t.trim())
  .filter((t) => t.length > 0)

export default defineConfig(({ mode }) => {
  // `mesh start --mode local` (npm run start:local): a mesh of nodes on this machine, for trying things
  // out. Loopback addresses then count as peer addresses, and peers on 127.0.0.1 are not rate-limited.
  // Never use it on the internet: the defaults below keep private addresses out of the DHT.
  const local = mode === 'local'
  return {
    name: 'my-node',
    plugins: [
      identify(),
      ping(),
      noise(),
      yamux(),
      tcp(),
      quic(),
      kadTopics({ topics, addressScope: local ? 'all' : 'public' }),
      bootstrap.length > 0 && staticPeers({ peers: bootstrap }),
      peerCache(),
    ],
    ...(local
      ? {
          listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1'],
          connections: { allow: ['/ip4/127.0.0.1'] },
          // every peer is on this machine: loopback addresses are the ones to dial
          network: { addressScope: 'all' },
        }
      : {}),
  }
})
