/** The control API of a running node: server (`startControlServer`), client (`createControlClient`). */
export {
  type ControlClient,
  type ControlClientOptions,
  type ControlDiscovery,
  type ControlStreamEvent,
  createControlClient,
  type TopicChange,
} from './client.js'
export { CONTROL_DISCOVERY_FILE } from './discovery-file.js'
export {
  type GossipPublished,
  type GossipSlotApi,
  type GossipSlotMessage,
  type GossipStreamMessage,
  gossipOf,
} from './gossip-routes.js'
export { LOGIN_CODE_TTL_MS } from './login-codes.js'
export type {
  ClusterJson,
  ClusterMemberJson,
  ClustersSnapshot,
  ConnectionView,
  PeerView,
  StatusView,
  TopicView,
} from './readers.js'
export { startControlServer } from './server.js'
export { CONTROL_TOKEN_FILE, loadOrCreateToken } from './token.js'
export type {
  ControlKernel,
  ControlRouteContext,
  ControlRouteHandler,
  ControlRouteOptions,
  ControlServer,
  ControlServerOptions,
} from './types.js'
