/**
 * Shared contracts between plugins and apps: slot APIs the tools read, the NAT-type vocabulary and the
 * connection-method judgement. They sit on top of the kernel (which knows none of them) and are exported
 * by both entry points, `meshkit/plugin` and `meshkit`.
 */
export {
  CONNECTION_METHODS,
  CONNECTION_METHODS_CAPABILITY,
  type ConnectionMethod,
  type ConnectionMethodSource,
  connectionMethod,
  isConnectionMethod,
  type ToldMethod,
  toldMethodOf,
} from './connection-method.js'
export {
  isNatType,
  NAT_TYPES,
  type NatClassificationSlotApi,
  type NatProtocolVerdictView,
  type NatReportView,
  type NatType,
} from './nat.js'
export {
  type ClusteringSlotApi,
  type ClusterMemberView,
  type ClusterView,
  type DiscoverySlotApi,
  hasMethods,
  type MetricsSlotApi,
  requireDiscovery,
  SLOT_CAPABILITIES,
} from './slots.js'
