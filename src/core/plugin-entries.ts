/** `config.plugins` entries: plugin objects, registered names or `{ plugin, options }`, and `apply`. */

import type { ConfigProblem } from './config-problems.js'
import type { ConfigEnv, ResolvedMeshConfig } from './config-types.js'
import { didYouMean } from './did-you-mean.js'
import { isMeshPlugin, type MeshPlugin } from './plugin.js'
import type { PluginRegistry } from './resolve-config.js'

/** Turns a `config.plugins` entry into a plugin, or records why it cannot be one. */
export function pluginFromEntry(
  entry: unknown,
  index: number,
  registry: PluginRegistry,
  problems: ConfigProblem[],
): MeshPlugin | undefined {
  const path = `plugins[${index}]`
  const registered = [...registry.keys()]
  const fromRegistry = (name: string, options: unknown): MeshPlugin | undefined => {
    const factory = registry.get(name)
    if (factory) return (factory as (o?: unknown) => MeshPlugin)(options)
    const guess = didYouMean(name, registered)
    problems.push({
      path,
      value: name,
      expected: `the name of a registered plugin (${registered.join(', ') || 'none registered'})`,
      hint: guess
        ? `did you mean '${guess}'?`
        : 'import the plugin in mesh.config.ts and put its call, e.g. myPlugin(), in `plugins`',
    })
    return undefined
  }
  if (isMeshPlugin(entry)) return entry
  if (typeof entry === 'string') return fromRegistry(entry, undefined)
  if (typeof entry === 'function') {
    const name = (entry as { pluginName?: string }).pluginName ?? entry.name
    problems.push({
      path,
      value: entry,
      expected: 'a plugin object',
      hint: `call the factory: write ${name || 'plugin'}() instead of ${name || 'plugin'}`,
    })
    return undefined
  }
  if (entry && typeof entry === 'object' && typeof (entry as { plugin?: unknown }).plugin === 'string') {
    const { plugin, options, ...rest } = entry as { plugin: string; options?: unknown }
    for (const key of Object.keys(rest)) {
      problems.push({
        path: `${path}.${key}`,
        value: (rest as Record<string, unknown>)[key],
        expected: 'no such key (known keys: plugin, options)',
        hint: 'remove it',
      })
    }
    return fromRegistry(plugin, options)
  }
  problems.push({
    path,
    value: entry,
    expected: "a plugin (e.g. tcp()), a registered plugin name, or { plugin: 'name', options: {...} }",
    hint: 'make each entry of `plugins` a plugin created by a definePlugin factory',
  })
  return undefined
}

/** Whether the plugin applies to this command (its `apply`: a command name, or a function). */
export function appliesTo(plugin: MeshPlugin, env: ConfigEnv, config: ResolvedMeshConfig): boolean {
  const apply = plugin.apply
  if (apply === undefined) return true
  if (typeof apply === 'function') return apply(config, env)
  return apply === env.command
}
