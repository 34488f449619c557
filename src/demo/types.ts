/** The demo's options, progress events, summary and running handle. */
import type { Logger, LogLevel, RunningMesh } from 'meshkit'
import type { ControlServer } from '../control/index.js'

export interface DemoOptions {
  /** Peers besides the observer. @default 20 */
  peers?: number
  /** Topics the peers join (overlapping). @default ['alpha', 'beta', 'gamma'] */
  topics?: string[]
  /** Nodes started at once (a 2-core machine starts ~4 at a time without timeouts). @default 4 */
  concurrency?: number
  /** TCP port of the dashboard / control API on 127.0.0.1. @default 0 (a free one) */
  controlPort?: number
  /** Where the temp dir (data dirs, control token) is made; it is removed on stop. @default os.tmpdir() */
  tmpRoot?: string
  /** Log level of the nodes' loggers (on stderr unless `logger` is given). @default 'error' */
  logLevel?: LogLevel
  logger?: Logger
  /** Told about every step (for progress output). */
  onProgress?: (event: DemoProgress) => void
  /** Aborting it stops a starting demo: started nodes are closed, startDemo() rejects with an AbortError. */
  signal?: AbortSignal
}

export type DemoProgress =
  | {
      type: 'observer-started'
      peerId: string
      /** The dashboard's address (no credential in it). */
      url: string
      dir: string
      /** A new one-time login link to the dashboard (a function: progress events may be printed as JSON). */
      loginUrl: () => string
    }
  | { type: 'peer-started'; index: number; count: number; peerId: string; topics: string[] }
  | { type: 'mesh-up'; peers: number; ms: number }
  | { type: 'topic-rendezvous'; topic: string; members: number; ms: number; sinceStartMs: number }
  | { type: 'rendezvous-complete'; topics: number; ms: number }
  | { type: 'cluster-created'; clusterId: string; tags: string[] }
  | { type: 'stopping'; nodes: number }
  | { type: 'stopped'; ms: number }

export interface DemoTopicSummary {
  topic: string
  /** Peers that joined the topic. */
  members: number
  /** Topic peers every member must have connected (itself excluded, the observer included). */
  target: number
  /** When every member had `target` topic peers: ms after its last member started. */
  rendezvousMs?: number
  /** The same moment, in ms since the demo started. */
  sinceStartMs?: number
  /** Members that have reached `target` now. */
  ready: number
}

export interface DemoClusterSummary {
  id: string
  tags: string[]
  members: number
}

export interface DemoSummary {
  peers: number
  /** ms from the start until every peer had started. */
  startupMs?: number
  /** ms the demo ran. */
  runMs: number
  topics: DemoTopicSummary[]
  /** Every topic rendezvoused. */
  complete: boolean
  /** The observer's clusters (peers grouped by their topic tags). */
  clusters: DemoClusterSummary[]
}

export interface DemoPeer {
  index: number
  peerId: string
  topics: string[]
  mesh: RunningMesh
  startedAt: number
}

export interface RunningDemo {
  /** The dashboard's address (no credential in it: `control.loginUrl()` makes a one-time login link). */
  readonly url: string
  readonly control: ControlServer
  /** The bootstrap + relay node whose dashboard is shown; it joins every topic to see its members. */
  readonly observer: RunningMesh
  readonly peers: readonly DemoPeer[]
  /** The temp dir of the data dirs (removed by stop()). */
  readonly dir: string
  /** Resolves when every topic has rendezvoused (never rejects; stop() ends the wait). */
  readonly rendezvous: Promise<void>
  summary(): DemoSummary
  /** Stops every node and the control server, removes the temp dir; returns the final summary. Idempotent. */
  stop(): Promise<DemoSummary>
}

export interface RunDemoOptions extends DemoOptions {
  /** Stop by itself this many ms after every peer started. @default run until `signal` aborts */
  durationMs?: number
  /** Called once the mesh and the dashboard are up. */
  onReady?: (demo: RunningDemo) => void
}
