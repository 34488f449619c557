/** What the parts of the strategy (strategy.ts) share: the options, the node, and the other plugins read. */
import type { PluginContext } from 'meshkit/plugin'
import type { HolePunchOptions } from './index.js'
import type { ConnectionStats } from './stats.js'

/** The part of the 'nat-classification' capability (natClassifier()) this plugin reads. */
export interface NatClassification {
  report(): { udp?: { type: string }; tcp?: { type: string } } | undefined
  /** The newest verdict of one protocol (a running classification's as soon as it is judged). */
  verdict?(
    protocol: 'udp' | 'tcp',
  ): { type: string; evidence?: { mappings?: Array<{ mapped?: string }> } } | undefined
  /** A classification runs (or the first one is about to): a verdict is coming. */
  classifying?(): boolean
}

/** The part of the 'relay-client' capability (relayClient()) this plugin reads. */
export interface RelayClientView {
  reservations(): Array<{ relay: string }>
}

/** The strategy's shared state, as its parts (pair-connections.ts, nat-types.ts, ...) read it. */
export interface PunchContext {
  readonly opts: HolePunchOptions
  readonly ctx: PluginContext
  /** Peer ids of the relays in this plugin's options. */
  readonly relayIds: ReadonlySet<string>
  readonly counters: ConnectionStats
  /** relayClient()'s API, when the config has one (read at start). */
  readonly relayClient?: RelayClientView
}
