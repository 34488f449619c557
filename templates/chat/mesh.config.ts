import { defineConfig } from 'meshkit'
import {
  gossip,
  identify,
  kadTopics,
  noise,
  peerCache,
  ping,
  quic,
  staticPeers,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { chat } from './plugins/chat.ts'

/** Bootstrap peers (multiaddrs with /p2p/<id>, comma-separated), e.g. a node of the `relay` template. */
const bootstrap = (process.env.MESH_BOOTSTRAP ?? '')
  .split(',')
  .map((a) => a.trim())
  .filter((a) => a.length > 0)

export default defineConfig(({ mode }) => {
  // `--mode local` (npm run chat:local): peers on this machine. Loopback addresses count as peer
  // addresses and peers on 127.0.0.1 are not rate-limited; never use it on the internet.
  const local = mode === 'local'
  return {
    name: 'chat',
    plugins: [
      identify(),
      ping(),
      noise(),
      yamux(),
      tcp(),
      quic(),
      kadTopics({ addressScope: local ? 'all' : 'public' }),
      // topic messaging: what the chat sends and receives (size limit, rates, signed messages)
      gossip(),
      chat({ topic: process.env.CHAT_TOPIC ?? 'lobby' }),
      bootstrap.length > 0 && staticPeers({ peers: bootstrap }),
      peerCache(),
    ],
    logLevel: 'warn',
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
