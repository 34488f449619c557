import type { MeshPlugin } from './plugin.js'

/** Log levels, most severe first. */
export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug' | 'trace'

/** What a config function is told about the run, like Vite's `ConfigEnv`. */
export interface ConfigEnv {
  /** The CLI command (or API caller) the config is loaded for. */
  command: 'start' | 'dev'
  /** A free-form mode, e.g. `development` or `production`. @default 'production' for start, 'development' for dev */
  mode: string
}

/** A duration: milliseconds as a number, or a string such as `'500ms'`, `'5s'`, `'2m'`, `'1h'`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h'}`

/** A plugin reference usable in JSON/YAML configs: a registered name, or a name with options. */
export type PluginReference = string | { plugin: string; options?: unknown }

/** The config a user writes in `mesh.config.ts` (every field optional). */
export interface MeshConfig {
  /** A name for this node, used in logs. @default 'mesh' */
  name?: string
  /** Where the identity key, datastore and caches live, relative to the config file. @default '.mesh' */
  dataDir?: string
  /** Multiaddrs to listen on. When unset, each transport plugin's defaults are used. */
  listen?: string[]
  /** Multiaddrs to announce instead of the listen addresses (e.g. a public IP behind port forwarding). */
  announce?: string[]
  /** Multiaddrs (with /p2p/<peer id>) to dial once the node has started. @default [] */
  dial?: string[]
  /** The plugins; order matters only among plugins with no dependency between them. @default the defaults */
  plugins?: Array<MeshPlugin | PluginReference | false | null | undefined>
  /** Log level for Meshkit's logs on stderr. @default 'info' */
  logLevel?: LogLevel
  /** `persistent` keeps peers and records in `<dataDir>/datastore`; `memory` forgets them. @default 'persistent' */
  datastore?: 'persistent' | 'memory'
  /** Connection limits. */
  connections?: {
    /** @default 300 */
    maxConnections?: number
    /** Time allowed for one dial. @default '10s' */
    dialTimeout?: Duration
    /**
     * Address prefixes exempt from the inbound limits below, e.g. `['/ip4/127.0.0.1']` for a test mesh
     * whose peers all share one host. @default []
     */
    allow?: string[]
    /** Inbound connections accepted per second from one host. @default 5 */
    inboundConnectionThreshold?: number
    /**
     * Inbound connections being upgraded (in their handshake) at once, from every host together: with
     * `maxIncomingPendingPerHost` of 2, a few hosts holding silent connections cannot take every slot.
     * @default 64
     */
    maxIncomingPendingConnections?: number
    /**
     * Inbound connections from one host (an IPv4 address, an IPv6 /64) in their handshake at once, so that
     * one host cannot hold every slot of `maxIncomingPendingConnections` (addresses in `allow` are
     * exempt). @default 2
     */
    maxIncomingPendingPerHost?: number
  }
  /** How the node keeps in touch with the mesh through the `bootstrap` plugins. */
  bootstrap?: {
    /** Connections to keep; below it, bootstrap candidates are dialled. 0 turns it off. @default 3 */
    minConnections?: number
    /** First retry delay after a round that left the node below `minConnections`. @default '1s' */
    retryInitial?: Duration
    /** Longest retry delay (exponential backoff with full jitter). @default '1m' */
    retryMax?: Duration
    /** Bootstrap dials in flight at once. @default 4 */
    dialConcurrency?: number
    /**
     * Connections to keep to seed peers (static peers, DNS seeds: the operator's), even when other
     * sources such as the peer cache gave the node `minConnections` peers: a cache filled by hostile peers
     * cannot cut the node off from the mesh. 0 turns it off. @default 1
     */
    seedConnections?: number
  }
  /** How Meshkit judges addresses. */
  network?: {
    /**
     * Ranges to treat as public although libp2p counts them as private (e.g. a lab's documentation
     * ranges, or a private WAN): used by Meshkit's plugins (e.g. which addresses the DHT keeps). @default []
     */
    publicCidrs?: string[]
    /**
     * Which addresses the node dials (or sends to) when they did not come from the config: `public` on
     * the internet; `private` adds LAN ranges (a LAN mesh); `all` adds loopback and link-local (a mesh on
     * one machine, tests). Configured addresses (`dial`, static peers, relays) are always dialled; cloud
     * metadata, multicast and unspecified addresses never are. @default 'public'
     */
    addressScope?: 'public' | 'private' | 'all'
    /**
     * A mesh on this machine: wildcard listen addresses (`0.0.0.0`, `::`) bind loopback instead
     * (`mesh start --local` sets it, with `addressScope: 'all'` and loopback exempt from the per-host
     * inbound limits). @default false
     */
    local?: boolean
  }
  /** How the node protects itself from remote peers (see docs/security.md). */
  security?: {
    /** Penalty points at which a peer is banned (malformed message 25, budget overrun 5, forgery 50). @default 100 */
    banThreshold?: number
    /** How long a first ban lasts; each further ban of the same peer within a day doubles it (up to 24 h). @default '10m' */
    banDuration?: Duration
    /** Also ban the IP addresses of a banned peer's direct connections. @default false */
    banIps?: boolean
    /** A peer's penalty points halve after this long. @default '10m' */
    penaltyHalfLife?: Duration
    /** Dials (or bursts of UDP) one peer's word may cause: one per this interval. @default '10s' */
    peerDialInterval?: Duration
  }
  /** The longest a graceful stop may take before the process exits anyway. @default '5s' */
  shutdownTimeout?: Duration
}

/** The config after validation: defaults filled in, durations in ms, plugins resolved and ordered. */
export interface ResolvedMeshConfig {
  name: string
  /** Absolute path. */
  dataDir: string
  listen?: string[]
  announce?: string[]
  dial: string[]
  /** Plugins in start order (dependencies first), with validated options. */
  plugins: ResolvedPlugin[]
  logLevel: LogLevel
  datastore: 'persistent' | 'memory'
  connections: {
    maxConnections: number
    dialTimeout: number
    allow: string[]
    inboundConnectionThreshold: number
    maxIncomingPendingConnections: number
    maxIncomingPendingPerHost: number
  }
  bootstrap: {
    minConnections: number
    retryInitial: number
    retryMax: number
    dialConcurrency: number
    seedConnections: number
  }
  network: { publicCidrs: string[]; addressScope: 'public' | 'private' | 'all'; local: boolean }
  security: {
    banThreshold: number
    banDuration: number
    banIps: boolean
    penaltyHalfLife: number
    peerDialInterval: number
  }
  shutdownTimeout: number
  /** The file the config came from, if any. */
  configFile?: string
  /** The directory relative paths are resolved against. */
  root: string
}

/** A plugin after validation: its options parsed by its schema. */
export interface ResolvedPlugin {
  plugin: MeshPlugin
  options: unknown
  /** Where it stood in `config.plugins`. */
  index: number
}

export type UserConfigExport = MeshConfig | ((env: ConfigEnv) => MeshConfig | Promise<MeshConfig>)

/** Typed identity helper for `mesh.config.ts`, like Vite's. */
export function defineConfig(config: MeshConfig): MeshConfig
export function defineConfig(config: (env: ConfigEnv) => MeshConfig): (env: ConfigEnv) => MeshConfig
export function defineConfig(
  config: (env: ConfigEnv) => Promise<MeshConfig>,
): (env: ConfigEnv) => Promise<MeshConfig>
export function defineConfig(config: UserConfigExport): UserConfigExport
export function defineConfig(config: UserConfigExport): UserConfigExport {
  return config
}
