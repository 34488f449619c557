/** The control API of a running node: server (`startControlServer`), client (`createControlClient`). */
export {
  type ControlClient,
  type ControlClientOptions,
  type ControlDiscovery,
  type ControlStreamEvent,
  createControlClient,
  type TopicChange,
} from './client.js'
export {
  type GossipPublished,
  type GossipSlotApi,
  type GossipSlotMessage,
  type GossipStreamMessage,
  gossipOf,
} from './gossip-routes.js'
export type {
  ClusterJson,
  ClusterMemberJson,
  ClustersSnapshot,
  ConnectionView,
  PeerView,
  StatusView,
  TopicView,
} from './readers.js'
export {
  CONTROL_DISCOVERY_FILE,
  type ControlKernel,
  type ControlRouteContext,
  type ControlRouteHandler,
  type ControlRouteOptions,
  type ControlServer,
  type ControlServerOptions,
  LOGIN_CODE_TTL_MS,
  startControlServer,
} from './server.js'
export { CONTROL_TOKEN_FILE, loadOrCreateToken } from './token.js'
