import type { ResolvedPlugin } from './config-types.js'
import { MeshError, meshError } from './errors.js'
import { MULTI_PROVIDER_CAPABILITIES } from './plugin.js'
import type { PluginRegistry } from './resolve-config.js'

/** Capabilities every node needs, whatever its config. */
export const REQUIRED_CAPABILITIES = ['transport'] as const

const ENFORCE_RANK = { pre: 0, normal: 1, post: 2 } as const

/** Maps each capability (and each plugin name) to the plugins that provide it. */
export function providersOf(plugins: readonly ResolvedPlugin[]): Map<string, ResolvedPlugin[]> {
  const providers = new Map<string, ResolvedPlugin[]>()
  const add = (cap: string, p: ResolvedPlugin) => {
    const list = providers.get(cap) ?? []
    if (!list.includes(p)) list.push(p)
    providers.set(cap, list)
  }
  for (const p of plugins) {
    add(p.plugin.name, p)
    for (const cap of p.plugin.provides) add(cap, p)
  }
  return providers
}

function registeredProviders(registry: PluginRegistry | undefined, capability: string): string[] {
  if (!registry) return []
  return [...registry.values()]
    .filter((f) => f.pluginName === capability || f.provides.includes(capability))
    .map((f) => f.pluginName)
}

/**
 * Checks the plugin graph once and returns the plugins in start order: dependencies first; among
 * independent plugins `enforce: 'pre'` first, `post` last, otherwise config order.
 */
export function orderPlugins(
  plugins: readonly ResolvedPlugin[],
  registry?: PluginRegistry,
): ResolvedPlugin[] {
  const providers = providersOf(plugins)

  for (const p of plugins) {
    for (const cap of p.plugin.provides) {
      if (MULTI_PROVIDER_CAPABILITIES.has(cap)) continue
      const list = providers.get(cap) ?? []
      if (list.length > 1)
        throw meshError('MESH_ERR_SLOT_CONFLICT', [cap, list[0].plugin.name, list[1].plugin.name])
    }
  }
  for (const cap of REQUIRED_CAPABILITIES) {
    if (!providers.has(cap)) {
      const candidates = registeredProviders(registry, cap)
      throw meshError('MESH_ERR_NO_TRANSPORT', [], {
        hint: `A node needs at least one '${cap}' plugin: add one to \`plugins\`${candidates.length ? ` (registered: ${candidates.join(', ')})` : ''}.`,
      })
    }
  }

  const missing: Array<{ plugin: string; dep: string; candidates: string[] }> = []
  for (const p of plugins) {
    for (const dep of p.plugin.dependencies) {
      if (!providers.has(dep))
        missing.push({ plugin: p.plugin.name, dep, candidates: registeredProviders(registry, dep) })
    }
  }
  if (missing.length > 0) {
    const [first, ...rest] = missing
    const hintFor = (m: (typeof missing)[number]) =>
      m.candidates.length
        ? `Add a plugin that provides '${m.dep}' to \`plugins\` (registered: ${m.candidates.join(', ')}).`
        : `Add a plugin that provides '${m.dep}' to \`plugins\`, or remove '${m.plugin}'.`
    const err = meshError('MESH_ERR_MISSING_DEPENDENCY', [first.plugin, first.dep], {
      hint: missing.map(hintFor).join(' '),
    })
    if (rest.length > 0) {
      const lines = missing.map((m) => meshError('MESH_ERR_MISSING_DEPENDENCY', [m.plugin, m.dep]).message)
      throw new MeshError('MESH_ERR_MISSING_DEPENDENCY', lines.join('\n'), { hint: err.hint })
    }
    throw err
  }

  const edges = new Map<ResolvedPlugin, Set<ResolvedPlugin>>() // provider -> dependents
  const indegree = new Map<ResolvedPlugin, number>()
  for (const p of plugins) {
    edges.set(p, new Set())
    indegree.set(p, 0)
  }
  for (const p of plugins) {
    // optional dependencies order the plugins like dependencies when a provider is there
    for (const dep of [...p.plugin.dependencies, ...(p.plugin.optionalDependencies ?? [])]) {
      const list = providers.get(dep) ?? []
      for (const provider of list) {
        if (provider === p) continue
        if (!edges.get(provider)!.has(p)) {
          edges.get(provider)!.add(p)
          indegree.set(p, indegree.get(p)! + 1)
        }
      }
    }
  }

  const rank = (p: ResolvedPlugin) => ENFORCE_RANK[p.plugin.enforce ?? 'normal'] * 1e6 + p.index
  const ready = plugins.filter((p) => indegree.get(p) === 0)
  const ordered: ResolvedPlugin[] = []
  while (ready.length > 0) {
    ready.sort((a, b) => rank(a) - rank(b))
    const next = ready.shift()!
    ordered.push(next)
    for (const dependent of edges.get(next)!) {
      const d = indegree.get(dependent)! - 1
      indegree.set(dependent, d)
      if (d === 0) ready.push(dependent)
    }
  }
  if (ordered.length < plugins.length)
    throw meshError('MESH_ERR_DEPENDENCY_CYCLE', [findCycle(plugins, edges, ordered)])
  return ordered
}

function findCycle(
  plugins: readonly ResolvedPlugin[],
  edges: Map<ResolvedPlugin, Set<ResolvedPlugin>>,
  done: readonly ResolvedPlugin[],
): string[] {
  const remaining = plugins.filter((p) => !done.includes(p))
  const stack: ResolvedPlugin[] = []
  const visiting = new Set<ResolvedPlugin>()
  const visited = new Set<ResolvedPlugin>()
  const visit = (p: ResolvedPlugin): string[] | undefined => {
    if (visiting.has(p)) return [...stack.slice(stack.indexOf(p)), p].map((x) => x.plugin.name)
    if (visited.has(p)) return undefined
    visiting.add(p)
    stack.push(p)
    for (const next of edges.get(p) ?? []) {
      if (!remaining.includes(next)) continue
      const cycle = visit(next)
      if (cycle) return cycle
    }
    stack.pop()
    visiting.delete(p)
    visited.add(p)
    return undefined
  }
  for (const p of remaining) {
    const cycle = visit(p)
    if (cycle) return cycle
  }
  return remaining.map((p) => p.plugin.name)
}
