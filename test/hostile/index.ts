/**
 * The hostile-peer harness (security issue 10): hostile libp2p peers, named bounded attacks on every
 * protocol a Meshkit node serves, a `mesh start` target runner sampled from /proc, and whole runs
 * (bench/hostile, test/hostile-peer.test.ts). See README.md beside this file.
 */
export * from './attack.js'
export * from './attacks/index.js'
export * from './discover.js'
export * from './forged-circuit.js'
export * from './hostile-node.js'
export * from './ids.js'
export * from './report.js'
export * from './run.js'
export * from './sentinels.js'
export * from './target.js'
export * from './wire.js'
