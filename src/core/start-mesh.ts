import type { MeshConfig } from './config-types.js'
import type { MeshEventBus } from './events.js'
import { MeshKernel } from './kernel.js'
import { type LoadConfigOptions, type LoadedConfig, loadConfig } from './load-config.js'
import type { Logger } from './logger.js'
import type { MeshNode } from './mesh-node.js'

export interface StartMeshOptions extends Partial<LoadConfigOptions> {
  /** Use this config object instead of searching for a file. */
  config?: MeshConfig
  logger?: Logger
  events?: MeshEventBus
}

export interface RunningMesh {
  kernel: MeshKernel
  node: MeshNode
  loaded: LoadedConfig
  /** Stops the node and releases everything (what SIGINT does in `mesh start`). */
  close(): Promise<void>
}

/**
 * Loads and validates the config, builds the node and starts it: `mesh start` as a function.
 * With `config`, that object is used instead of a config file, through the same route (loadConfig:
 * overrides, defaults, validation).
 */
export async function startMesh(options: StartMeshOptions = {}): Promise<RunningMesh> {
  const env = options.env ?? { command: 'start', mode: 'production' }
  const loaded: LoadedConfig = await loadConfig({ ...options, env })
  const kernel = new MeshKernel({ env, logger: options.logger, events: options.events })
  try {
    const node = await kernel.start(loaded.config)
    return { kernel, node, loaded, close: () => kernel.close() }
  } catch (err) {
    await kernel.close().catch(() => {})
    throw err
  }
}
