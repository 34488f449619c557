/**
 * A simulation host's entry point: installs the run's clock (time dilation, clock.ts) before any
 * Meshkit or libp2p module is loaded, then runs the host (host.ts).
 */
import { workerData } from 'node:worker_threads'
import { installSlowdown } from './clock.js'

const { slowdown, epoch } = workerData as { slowdown: number; epoch: number }
installSlowdown(slowdown, epoch)
await import('./host.js')
