import { defineConfig } from 'meshkit'
import {
  holePunch,
  identify,
  kadTopics,
  natClassifier,
  noise,
  peerCache,
  ping,
  quic,
  relayClient,
  staticPeers,
  tcp,
  yamux,
} from 'meshkit/plugins'

/**
 * The mesh's relay: the address a node made with `mesh init --template relay` prints when it starts,
 * `/ip4/<public ip>/tcp/<port>/p2p/<peer id>`. It is this node's bootstrap peer, relay, NAT probe and
 * STUN server.
 */
const relay = process.env.MESH_RELAY
/** The relay's STUN port (its STUN_PORT). */
const stunPort = Number(process.env.STUN_PORT ?? 3478)

/** The topics this node joins (MESH_TOPICS, comma-separated). */
const topics = (process.env.MESH_TOPICS ?? 'hello-meshkit')
  .split(',')
  .map((t) => t.trim())
  .filter((t) => t.length > 0)

export default defineConfig(({ mode }) => {
  const local = mode === 'local'
  if (!relay)
    throw new Error('Set MESH_RELAY to the relay node`s address, /ip4/<ip>/tcp/<port>/p2p/<peer id>.')
  const relayIp = /^\/ip4\/([^/]+)\//.exec(relay)?.[1]
  if (!relayIp) throw new Error(`MESH_RELAY must start with /ip4/<ip>/ (got ${relay})`)
  return {
    name: 'my-node',
    plugins: [
      identify(),
      ping(),
      noise(),
      yamux(),
      tcp(),
      quic(),
      kadTopics({ topics }),
      staticPeers({ peers: [relay] }),
      peerCache(),
      // a reservation on the relay: peers reach this node through it, whatever its NAT
      relayClient({ relays: [relay] }),
      // this node's NAT type (UDP and TCP), from the relay's probe server
      natClassifier({ servers: [relay] }),
      // direct connections through NATs: WebRTC with the relay's STUN, upgraded from relayed ones
      holePunch({ stunServers: [`stun:${relayIp}:${stunPort}`] }),
    ],
    ...(local
      ? {
          listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1', '/webrtc'],
          connections: { allow: ['/ip4/127.0.0.1'] },
          network: { addressScope: 'all' },
        }
      : {}),
  }
})
