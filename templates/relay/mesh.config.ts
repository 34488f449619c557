import { defineConfig } from 'meshkit'
import {
  identify,
  kadTopics,
  natProbeServer,
  noise,
  peerCache,
  ping,
  quic,
  relayServer,
  staticPeers,
  stunServer,
  tcp,
  yamux,
} from 'meshkit/plugins'

/** This server's public IPv4 address (what other peers dial). Required on the internet. */
const publicIp = process.env.PUBLIC_IP
/** The libp2p port, TCP and UDP (QUIC). */
const port = Number(process.env.PORT ?? 4001)
/** The STUN port (UDP): NATed peers learn their mapped addresses here, for hole punching. */
const stunPort = Number(process.env.STUN_PORT ?? 3478)
/** First of the two NAT probe ports (UDP and TCP); the second is the next one. Apart from STUN's. */
const probePort = Number(process.env.PROBE_PORT ?? 3479)
/** Other bootstrap/relay servers of the same mesh (multiaddrs with /p2p/<id>, comma-separated). */
const peers = (process.env.MESH_BOOTSTRAP ?? '')
  .split(',')
  .map((a) => a.trim())
  .filter((a) => a.length > 0)

export default defineConfig(({ mode }) => {
  // `mesh start --mode local`: everything on 127.0.0.1, ephemeral libp2p ports, for a mesh on this
  // machine (tests, trying the chat or basic templates in local mode against this node).
  const local = mode === 'local'
  if (!local && !publicIp) {
    throw new Error('Set PUBLIC_IP to the public IPv4 address of this server (or run with --mode local).')
  }
  const announce = local ? [] : [`/ip4/${publicIp}/tcp/${port}`, `/ip4/${publicIp}/udp/${port}/quic-v1`]
  return {
    name: 'relay',
    listen: local
      ? ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1']
      : [`/ip4/0.0.0.0/tcp/${port}`, `/ip4/0.0.0.0/udp/${port}/quic-v1`],
    ...(announce.length > 0 ? { announce } : {}),
    plugins: [
      identify(),
      ping(),
      noise(),
      yamux(),
      tcp(),
      quic(),
      // a DHT server: the rendezvous point of topic lookups (it stores topic keys, never names)
      kadTopics({ dhtMode: 'server', addressScope: local ? 'all' : 'public' }),
      // circuit relay v2 for peers behind NATs; clients get the announced (public) addresses
      relayServer({ announce }),
      // STUN for the NATed peers' hole punching (it also signs their mapped addresses for the
      // birthday punch, port-restricted cone + symmetric NAT)
      stunServer({ port: stunPort, ...(local ? { host: '127.0.0.1' } : {}) }),
      // the NAT type probe natClassifier() asks (two ports; give two IPs or a partner for full tests)
      natProbeServer({
        udpPorts: [probePort, probePort + 1],
        // default addresses: this host's first two non-internal IPv4 addresses
        ...(local ? { addresses: ['127.0.0.1'] } : {}),
      }),
      peers.length > 0 && staticPeers({ peers }),
      peerCache(),
    ],
    // a bootstrap server mostly answers: it keeps in touch with its fellow servers only
    bootstrap: { minConnections: peers.length > 0 ? 1 : 0 },
    connections: local ? { allow: ['/ip4/127.0.0.1'] } : { maxConnections: 1000 },
    // --mode local: every peer is on this machine, loopback addresses are the ones to dial
    network: { addressScope: local ? 'all' : 'public' },
  }
})
