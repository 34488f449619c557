import { MeshError } from './errors.js'
import type { Capability, PluginContext } from './plugin.js'
import { capabilityToken } from './tokens.js'

/**
 * The contracts of the slots and capabilities that Meshkit's tools read (the control API, `mesh status`,
 * the dashboard, the metrics plugin). A plugin that provides one of these slots or capabilities offers
 * (at least) this API from its `setup()` hook; the tools find it through `node.plugins` (each plugin's
 * `provides`) and `node.api(capability)`, never by plugin name, so any plugin can replace a built-in one.
 *
 * Every method here is read synchronously by the tools unless it returns a promise; the read-only ones
 * must be cheap (they run on every `GET /api/status`) and must not throw once the node has started.
 */

/** The `discovery` slot: topic-based peer discovery (built-in provider: `kadTopics()`). */
export interface DiscoverySlotApi {
  /** Joins a topic (1 to 128 characters); rejects with a TypeError for an invalid name. */
  join(topic: string): Promise<void>
  /** Leaves a joined topic (no-op for one that is not joined). */
  leave(topic: string): Promise<void>
  /** The joined topics. */
  topics(): string[]
  /** The connected members (peer ids) of a joined topic; [] for any other topic. */
  peers(topic: string): string[]
}

/** One member of a cluster, as a `clustering` provider describes it. */
export interface ClusterMemberView {
  readonly peerId: string
  /** ms since epoch (or the provider's clock) of the member's last sign of life. */
  lastSeen?: number
  metrics?: {
    rttMs?: number
    method?: ConnectionMethod
    /** Since when the current connection is up; unset while not connected. */
    connectedSince?: number
    failures?: number
  }
}

/** One cluster, as a `clustering` provider describes it. */
export interface ClusterView {
  readonly id: string
  readonly tags: Iterable<string>
  /** Members by peer id (a Map) or as a list. */
  readonly members: ReadonlyMap<string, ClusterMemberView> | Iterable<ClusterMemberView>
  readonly createdAt?: number
}

/** The `clustering` slot (built-in provider: `jaccardClusters()`). */
export interface ClusteringSlotApi {
  /** Every cluster this node knows. */
  clusters(): ClusterView[]
  /** This node's own tags, if the strategy has any. */
  tags?(): string[]
  /** Ids of the clusters this node itself belongs to, if the strategy has such a notion. */
  ownClusters?(): string[]
}

/** A NAT type, as the `nat-classification` capability names it (and peers exchange it). */
export type NatType =
  | 'public'
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted-cone'
  | 'symmetric'
  | 'unknown'

/** The NAT types, most open first. */
export const NAT_TYPES: readonly NatType[] = [
  'public',
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
  'unknown',
]

/** Whether `t` is one of the {@link NAT_TYPES}. */
export const isNatType = (t: unknown): t is NatType =>
  typeof t === 'string' && (NAT_TYPES as string[]).includes(t)

/** A NAT verdict for one protocol, as the `nat-classification` capability reports it. */
export interface NatProtocolVerdictView {
  /** public, full-cone, restricted-cone, port-restricted-cone, symmetric or unknown. */
  type: string
  confidence?: number
  reason?: string
  [field: string]: unknown
}

/** The last NAT classification of the `nat-classification` capability. */
export interface NatReportView {
  udp?: NatProtocolVerdictView
  tcp?: NatProtocolVerdictView
  /** When the classification finished (ISO 8601). */
  at?: string
  [field: string]: unknown
}

/** The `nat-classification` capability (built-in provider: `natClassifier()`). */
export interface NatClassificationSlotApi {
  /** The last verdict, undefined before the first classification finished. */
  report(): NatReportView | undefined
  /** Classifies now (joins a run in progress). */
  classify?(): Promise<NatReportView>
}

/** How a connection was made. */
export type ConnectionMethod = 'direct' | 'hole-punched' | 'relayed'

/**
 * Any plugin whose API has `methodOf` tells how the connection to a peer was made (built-in:
 * `holePunch()`). Such plugins also emit `connection:method` events on the bus:
 * `{ peerId, method, transport, attempts, msToFirst?, msToDirect?, ... }`.
 */
export interface ConnectionMethodSource {
  /** The method of the best connection to `peer` now (undefined: not connected or not known). */
  methodOf(peer: string): ConnectionMethod | undefined
}

/**
 * The `metrics` capability (built-in provider: `metrics()` in meshkit/plugins): Prometheus
 * text for `GET /metrics` of the control API.
 */
export interface MetricsSlotApi {
  /** The metrics in the Prometheus text exposition format. */
  render(): Promise<string>
  /** The Content-Type of `render()`'s text. */
  readonly contentType: string
}

/** The capability names the tools read. */
export const SLOT_CAPABILITIES = {
  discovery: 'discovery',
  clustering: 'clustering',
  natClassification: 'nat-classification',
  metrics: 'metrics',
} as const

/** Whether `api` has every method `names` lists (a cheap structural check of a provider's API). */
export function hasMethods<T>(api: unknown, ...names: string[]): api is T {
  return (
    typeof api === 'object' &&
    api !== null &&
    names.every((n) => typeof (api as Record<string, unknown>)[n] === 'function')
  )
}

/**
 * The API of the plugin providing `capability`, or undefined when the config has no such plugin: an
 * optional read for plugins that work with or without a provider (a metrics or monitoring plugin). Unlike
 * `ctx.use()` it needs no entry in `dependencies`, so it gives no start-order guarantee: call it while
 * the node runs (e.g. when metrics are scraped), not in `setup()`. Meant for exclusive capabilities (one
 * provider); for a multi-provider one such as 'transport' it returns one of the providers' APIs.
 */
export function optionalApi<T = unknown>(ctx: PluginContext, capability: Capability): T | undefined {
  if (!ctx.config.plugins.some((p) => p.plugin.name === capability || p.plugin.provides.includes(capability)))
    return undefined
  try {
    // the node registers each provider's API boxed as { api } under the capability's token
    const box = ctx.resolve(capabilityToken<{ api: unknown }>(capability))
    return box?.api as T | undefined
  } catch {
    return undefined
  }
}

/**
 * The node's `discovery` provider, for joining topics from outside (the CLI's `--topic`, an app): throws
 * MESH_ERR_INVALID_ARGUMENT with a fix when the config has none. `what` names who asks, e.g. '--topic'.
 */
export function requireDiscovery(
  node: { tryApi<T>(capability: Capability, ...methods: string[]): T | undefined },
  what = 'joining a topic',
): DiscoverySlotApi {
  const discovery = node.tryApi<DiscoverySlotApi>(
    SLOT_CAPABILITIES.discovery,
    'join',
    'leave',
    'topics',
    'peers',
  )
  if (discovery) return discovery
  throw new MeshError(
    'MESH_ERR_INVALID_ARGUMENT',
    `${what} needs a topic discovery plugin, and the config has none.`,
    {
      hint: "Add kadTopics() from 'meshkit/plugins' (or another plugin providing 'discovery') to `plugins`.",
    },
  )
}
