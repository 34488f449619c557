/**
 * What the control API reads from a node, through slot contracts only (see src/core/slot-contracts.ts):
 * providers are found by `plugin.provides` and `node.api(capability)`, never by plugin name.
 */
import {
  type ClusteringSlotApi,
  type ClusterMemberView,
  type ClusterView,
  CONNECTION_METHODS_CAPABILITY,
  type ConnectionMethod,
  type ConnectionMethodSource,
  connectionMethod,
  type DiscoverySlotApi,
  describeConnection,
  hasMethods,
  type MeshNode,
  type MetricsSlotApi,
  type NatClassificationSlotApi,
  type NatReportView,
  type PeerBan,
  SLOT_CAPABILITIES,
  type ToldMethod,
} from 'meshkit'

/** The API of the plugin providing `capability`, when one does and its API has `methods`. */
export function providerOf<T>(node: MeshNode, capability: string, ...methods: string[]): T | undefined {
  return node.tryApi<T>(capability, ...methods)
}

export const discoveryOf = (node: MeshNode) =>
  providerOf<DiscoverySlotApi>(node, SLOT_CAPABILITIES.discovery, 'join', 'leave', 'topics', 'peers')
export const clusteringOf = (node: MeshNode) =>
  providerOf<ClusteringSlotApi>(node, SLOT_CAPABILITIES.clustering, 'clusters')
export const natOf = (node: MeshNode) =>
  providerOf<NatClassificationSlotApi>(node, SLOT_CAPABILITIES.natClassification, 'report')
export const metricsOf = (node: MeshNode) =>
  providerOf<MetricsSlotApi>(node, SLOT_CAPABILITIES.metrics, 'render')

/** The APIs of the plugins that provide 'connection-methods' (and have `methodOf`). */
export function methodSourcesOf(node: MeshNode): ConnectionMethodSource[] {
  const sources: ConnectionMethodSource[] = []
  for (const { plugin } of node.plugins) {
    if (!(plugin.provides ?? []).includes(CONNECTION_METHODS_CAPABILITY)) continue
    let api: unknown
    try {
      api = node.api(plugin.name)
    } catch {
      continue
    }
    if (hasMethods<ConnectionMethodSource>(api, 'methodOf')) sources.push(api)
  }
  return sources
}

/** The last `connection:method` event per peer (kept by the server from the event bus). */
export type MethodEvents = ReadonlyMap<string, ToldMethod>

export interface ConnectionView {
  connectionId: string
  peerId: string
  remoteAddr: string
  direction: 'inbound' | 'outbound'
  transport: string
  method: ConnectionMethod
  /** ms since epoch. */
  openedAt: number
}

/** The node's connections, each with its method (the shared judgement, `connectionMethod()`). */
export function connectionsOf(node: MeshNode, events: MethodEvents): ConnectionView[] {
  const connections = node.libp2p.getConnections()
  const sources = connections.length > 0 ? methodSourcesOf(node) : []
  return connections.map((c) => {
    const info = describeConnection(c)
    return {
      connectionId: info.connectionId,
      peerId: info.peerId,
      remoteAddr: info.remoteAddr,
      direction: info.direction,
      transport: info.transport,
      method: connectionMethod(c, events.get(info.peerId), sources),
      openedAt: c.timeline.open,
    }
  })
}

export interface TopicView {
  topic: string
  peers: string[]
}

export function topicsOf(discovery: DiscoverySlotApi): TopicView[] {
  return discovery
    .topics()
    .slice()
    .sort()
    .map((topic) => ({ topic, peers: [...discovery.peers(topic)].sort() }))
}

export interface PeerView {
  peerId: string
  addresses: string[]
  connections: number
  topics: string[]
  /** The peer's penalty points (0: clean; banned at `security.banThreshold`). */
  penalty: number
}

/** Bans in force, soonest end first. */
export function bansOf(node: MeshNode): PeerBan[] {
  return node.reputation.bans().sort((a, b) => a.until - b.until)
}

export function peersOf(node: MeshNode): PeerView[] {
  const discovery = discoveryOf(node)
  const topics = discovery ? topicsOf(discovery) : []
  const byPeer = new Map<string, PeerView>()
  for (const c of node.libp2p.getConnections()) {
    const id = c.remotePeer.toString()
    const view = byPeer.get(id) ?? {
      peerId: id,
      addresses: [],
      connections: 0,
      topics: [],
      penalty: Math.round(node.reputation.penalty(id)),
    }
    view.connections++
    const addr = c.remoteAddr.toString()
    if (!view.addresses.includes(addr)) view.addresses.push(addr)
    byPeer.set(id, view)
  }
  for (const view of byPeer.values()) {
    view.topics = topics.filter((t) => t.peers.includes(view.peerId)).map((t) => t.topic)
  }
  return [...byPeer.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
}

export interface ClusterMemberJson {
  peerId: string
  lastSeen?: number
  rttMs?: number
  method?: ConnectionMethod
  connected: boolean
  failures?: number
}

export interface ClusterJson {
  id: string
  tags: string[]
  createdAt?: number
  /** Whether this node itself belongs to the cluster (when the provider tells). */
  own?: boolean
  members: ClusterMemberJson[]
}

export interface ClustersSnapshot {
  /** This node's own tags (when the provider has any). */
  tags?: string[]
  clusters: ClusterJson[]
}

function membersOf(members: ClusterView['members']): ClusterMemberView[] {
  if (members instanceof Map) return [...members.values()]
  return [...(members as Iterable<ClusterMemberView>)]
}

/** The clustering provider's clusters as plain JSON. */
export function clustersSnapshot(clustering: ClusteringSlotApi): ClustersSnapshot {
  const own = clustering.ownClusters ? new Set(clustering.ownClusters()) : undefined
  const clusters = clustering.clusters().map(
    (c): ClusterJson => ({
      id: c.id,
      tags: [...c.tags].sort(),
      createdAt: c.createdAt,
      own: own ? own.has(c.id) : undefined,
      members: membersOf(c.members)
        .map((m) => ({
          peerId: m.peerId,
          lastSeen: m.lastSeen,
          rttMs: m.metrics?.rttMs,
          method: m.metrics?.method,
          connected: m.metrics?.connectedSince !== undefined,
          failures: m.metrics?.failures,
        }))
        .sort((a, b) => a.peerId.localeCompare(b.peerId)),
    }),
  )
  clusters.sort((a, b) => a.id.localeCompare(b.id))
  return { tags: clustering.tags?.(), clusters }
}

/** The short NAT verdict of a report: `{ udp, tcp, at }` with the types only. */
export function natSummary(
  report: NatReportView | undefined,
): { udp?: string; tcp?: string; at?: string } | null {
  if (!report) return null
  return { udp: report.udp?.type, tcp: report.tcp?.type, at: report.at }
}

export interface StatusView {
  peerId: string
  name: string
  state: string
  /** ms since epoch. */
  startedAt: number
  uptimeMs: number
  addresses: string[]
  plugins: Array<{ name: string; provides: string[] }>
  peers: number
  connections: number
  topics: string[]
  nat: { udp?: string; tcp?: string; at?: string } | null
}

export function statusOf(node: MeshNode, startedAt: number): StatusView {
  const libp2p = node.libp2p
  const discovery = discoveryOf(node)
  const nat = natOf(node)
  let report: NatReportView | undefined
  try {
    report = nat?.report()
  } catch {
    report = undefined
  }
  return {
    peerId: node.peerId.toString(),
    name: node.config.name,
    state: node.state,
    startedAt,
    uptimeMs: Math.max(0, Date.now() - startedAt),
    addresses: libp2p.getMultiaddrs().map(String),
    plugins: node.plugins.map((p) => ({ name: p.plugin.name, provides: [...p.plugin.provides] })),
    peers: libp2p.getPeers().length,
    connections: libp2p.getConnections().length,
    topics: discovery ? [...discovery.topics()].sort() : [],
    nat: natSummary(report),
  }
}
