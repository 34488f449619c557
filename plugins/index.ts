/** Meshkit's built-in plugins (`meshkit/plugins`), the registry JSON configs name them by, and the default config. */
import { defineConfig, type MeshConfig, type PluginRegistry } from 'meshkit'
import { dnsSeeds } from './dns-seeds/index.js'
import { gate } from './gate/index.js'
import { gossip } from './gossip/index.js'
import { holePunch, stunServer } from './hole-punch/index.js'
import { identify } from './identify/index.js'
import { jaccardClusters } from './jaccard-clusters/index.js'
import { kadTopics } from './kad-topics/index.js'
import { libp2pModule } from './libp2p-module/index.js'
import { mdns } from './mdns/index.js'
import { natClassifier, natProbeServer } from './nat-probe/index.js'
import { noise } from './noise/index.js'
import { peerCache } from './peer-cache/index.js'
import { ping } from './ping/index.js'
import { privateNetwork } from './private-network/index.js'
import { metrics } from './prometheus-metrics/index.js'
import { quic } from './quic/index.js'
import { relayClient } from './relay-client/index.js'
import { relayServer } from './relay-server/index.js'
import { staticPeers } from './static-peers/index.js'
import { tcp } from './tcp/index.js'
import { yamux } from './yamux/index.js'

export type { GateApi } from './gate/index.js'
export type {
  GossipApi,
  GossipMessage,
  GossipPublishResult,
  GossipStats,
  GossipValidator,
  GossipVerdict,
} from './gossip/index.js'
export { gossipTopicName } from './gossip/index.js'
export type { KnownTopicMember, TopicDiscovery } from './kad-topics/index.js'
export { AMINO_KAD_PROTOCOL, MESH_KAD_PROTOCOL, TOPICS_PROTOCOL, topicKey } from './kad-topics/index.js'
export { MDNS_SERVICE_TAG } from './mdns/index.js'
export type {
  NatClassificationApi,
  NatProbeServerApi,
  NatReport,
  NatType,
  ProtocolVerdict,
} from './nat-probe/index.js'
export { NAT_PROBE_PROTOCOL } from './nat-probe/index.js'
export type { CachedPeer, PeerCacheApi } from './peer-cache/index.js'
export {
  generatePsk,
  PreSharedKey,
  type PrivateNetworkApi,
  PskFileError,
  PskFormatError,
  parsePsk,
  readPskFile,
  UNPROTECTABLE_PLUGINS,
} from './private-network/index.js'
export type { PrometheusMetricsApi } from './prometheus-metrics/index.js'
export type { RelayClientApi, RelayReservationInfo } from './relay-client/index.js'
export type { RelayServerApi, RelayServerReservation } from './relay-server/index.js'
export { RELAY_HOP_PROTOCOL, RELAY_SERVICE, RELAY_STOP_PROTOCOL } from './relay-server/index.js'
export {
  dnsSeeds,
  gate,
  gossip,
  holePunch,
  identify,
  jaccardClusters,
  kadTopics,
  libp2pModule,
  mdns,
  metrics,
  natClassifier,
  natProbeServer,
  noise,
  peerCache,
  ping,
  privateNetwork,
  quic,
  relayClient,
  relayServer,
  staticPeers,
  stunServer,
  tcp,
  yamux,
}

/** Built-in plugins by name, for `.meshrc.json` / YAML / package.json configs: `"plugins": ["tcp"]`. */
export const builtinPlugins: PluginRegistry = new Map(
  [
    identify,
    ping,
    noise,
    yamux,
    tcp,
    quic,
    kadTopics,
    gossip,
    mdns,
    staticPeers,
    dnsSeeds,
    peerCache,
    relayServer,
    relayClient,
    natProbeServer,
    natClassifier,
    holePunch,
    stunServer,
    jaccardClusters,
    metrics,
    privateNetwork,
    gate,
  ].map((factory) => [factory.pluginName, factory] as const),
) as PluginRegistry

/**
 * What a node runs with when the config leaves a field unset, or when there is no config at all: TCP and
 * QUIC, noise, yamux, identify, ping, and topic discovery (kadTopics), so that `mesh start --topic x`
 * works without a config file (with `--local`, between processes on one machine).
 */
export function defaultConfig(): MeshConfig {
  return defineConfig({
    plugins: [identify(), ping(), noise(), yamux(), tcp(), quic(), kadTopics()],
  })
}
