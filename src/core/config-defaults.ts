/**
 * The core config's defaults, written once: `resolveConfig` fills unset fields from here, and a test
 * checks that every `@default` in config-types.ts (what users read in their editor) and every default in
 * docs/config.md says the same.
 */
import type { ResolvedMeshConfig } from './config-types.js'

type CoreDefaults = Omit<ResolvedMeshConfig, 'plugins' | 'configFile' | 'root' | 'listen' | 'announce'>

export const CORE_DEFAULTS: Readonly<CoreDefaults> = Object.freeze({
  name: 'mesh',
  dataDir: '.mesh',
  dial: [],
  logLevel: 'info',
  datastore: 'persistent',
  connections: {
    maxConnections: 300,
    dialTimeout: 10_000,
    allow: [],
    inboundConnectionThreshold: 5,
    maxIncomingPendingConnections: 64,
    maxIncomingPendingPerHost: 2,
  },
  bootstrap: {
    minConnections: 3,
    retryInitial: 1_000,
    retryMax: 60_000,
    dialConcurrency: 4,
    seedConnections: 1,
  },
  network: {
    publicCidrs: [],
    addressScope: 'public',
    local: false,
  },
  security: {
    banThreshold: 100,
    banDuration: 600_000,
    banIps: false,
    penaltyHalfLife: 600_000,
    peerDialInterval: 10_000,
  },
  shutdownTimeout: 5_000,
} satisfies CoreDefaults)
