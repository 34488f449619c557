import type { ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import type { MeshPlugin } from './plugin.js'

/** How a config change reaches the running node. */
export type ChangeAction =
  /** Applied to the running node in place (a core setting, or a plugin's `reconfigure` hook). */
  | 'reconfigure'
  /** The plugin alone is stopped, created again with its new options, set up and started. */
  | 'restart'
  /** Needs a new libp2p node: built with the same identity, then swapped in. */
  | 'rebuild'

/** One changed value, at a dotted path (`connections.maxConnections`, `threshold`, `index.minhash.bands`). */
export interface ValueChange {
  path: string
  before: unknown
  after: unknown
}

/** A core setting that changed, and how it is applied. */
export interface CoreChange extends ValueChange {
  action: 'reconfigure' | 'rebuild'
}

/** A plugin present in both configs whose options or code changed. */
export interface PluginChange {
  name: string
  /** Changed options (paths inside the plugin's validated options). */
  options: ValueChange[]
  /** The plugin's definition (its code) changed, e.g. an imported plugin file was edited. */
  code: boolean
  action: ChangeAction
  /** Why this action (e.g. "'mode' feeds its libp2p contribution"). */
  reason: string
}

/** What differs between a running config and the next one, and whether a new libp2p node is needed. */
export interface ConfigDiff {
  /** Whether anything that matters changed. */
  changed: boolean
  core: CoreChange[]
  plugins: {
    /** Names of plugins only in the next config. */
    added: string[]
    /** Names of plugins only in the running config. */
    removed: string[]
    changed: PluginChange[]
    /** The start order of the plugins present in both changed. */
    reordered: boolean
  }
  /** A new libp2p node is needed (see `reasons`); otherwise every change is applied in place. */
  rebuild: boolean
  /** Why a new node is needed, one line per cause; empty when `rebuild` is false. */
  reasons: string[]
  /** The next config uses another data dir, so a rebuilt node gets that dir's identity (peer id). */
  identityChanges: boolean
}

/** What the running node knows about a plugin's hooks (the config alone cannot tell). */
export interface PluginHookInfo {
  /** The plugin contributes to the libp2p options (has a `libp2p` hook). */
  libp2p: boolean
  /** The plugin has a `reconfigure` hook. */
  reconfigure: boolean
}

export interface DiffConfigOptions {
  /**
   * The running plugins' hooks, by plugin name. A plugin missing here is assumed to contribute to
   * libp2p and to have no `reconfigure` hook (so any change of its options needs a new node).
   */
  hooks?: ReadonlyMap<string, PluginHookInfo>
  /**
   * Whether a plugin's code changed between the two configs. By default: the definitions differ and
   * their static parts or the source of `create` differ (built-in plugins keep one definition object).
   */
  codeChanged?: (before: MeshPlugin, after: MeshPlugin) => boolean
}

/** Core settings applied to the running node; every other core setting needs a new node. */
const IN_PLACE_CORE = new Set(['name', 'logLevel', 'dial', 'bootstrap', 'security', 'shutdownTimeout'])
/** Why a core setting needs a new node. */
const WHY_REBUILD: Record<string, string> = {
  default: 'libp2p reads it when the node is created',
  network: 'plugins build their libp2p contributions from it',
  dataDir: 'another data dir means another identity and datastore',
  datastore: 'the datastore is opened when the node is built',
}
/** Bookkeeping fields that never change the node. */
const IGNORED_CORE = new Set(['plugins', 'configFile', 'root'])

/**
 * Compares two resolved configs: which core settings changed, which plugins were added, removed or got
 * new options (or code), and for each change how the running node takes it:
 * - core: `name`, `logLevel`, `dial`, `bootstrap.*`, `shutdownTimeout` in place; `listen`, `announce`,
 *   `connections.*`, `datastore`, `dataDir`, `network.*` need a new node (libp2p reads them when it is
 *   created, and plugins build their libp2p contributions from `network`);
 * - a plugin added or removed, or the plugins' start order changed: a new node;
 * - a plugin whose options changed: `reconfigure` when it has that hook and no changed key is in its
 *   definition's `libp2pOptions` (and it declares them, or has no `libp2p` hook); `restart` (alone)
 *   when it has no `libp2p` hook; otherwise a new node;
 * - a plugin whose code changed: `restart` when it has no `libp2p` hook, otherwise a new node.
 */
export function diffConfig(
  before: ResolvedMeshConfig,
  after: ResolvedMeshConfig,
  options: DiffConfigOptions = {},
): ConfigDiff {
  const reasons: string[] = []
  const core: CoreChange[] = []
  const keys = new Set([...Object.keys(before), ...Object.keys(after)])
  for (const key of keys) {
    if (IGNORED_CORE.has(key)) continue
    const changes = valueChanges(
      (before as unknown as Record<string, unknown>)[key],
      (after as unknown as Record<string, unknown>)[key],
      key,
    )
    const action = IN_PLACE_CORE.has(key) ? 'reconfigure' : 'rebuild'
    for (const change of changes) {
      core.push({ ...change, action })
      if (action === 'rebuild')
        reasons.push(`${change.path} changed: ${WHY_REBUILD[key] ?? WHY_REBUILD.default}`)
    }
  }

  const beforeByName = new Map(before.plugins.map((p) => [p.plugin.name, p]))
  const afterByName = new Map(after.plugins.map((p) => [p.plugin.name, p]))
  const added = after.plugins.map((p) => p.plugin.name).filter((n) => !beforeByName.has(n))
  const removed = before.plugins.map((p) => p.plugin.name).filter((n) => !afterByName.has(n))
  for (const name of added) reasons.push(`plugin '${name}' added`)
  for (const name of removed) reasons.push(`plugin '${name}' removed`)
  const common = (list: ResolvedPlugin[], other: Map<string, ResolvedPlugin>) =>
    list.map((p) => p.plugin.name).filter((n) => other.has(n))
  const orderBefore = common(before.plugins, afterByName)
  const orderAfter = common(after.plugins, beforeByName)
  const reordered = orderBefore.some((name, i) => orderAfter[i] !== name)
  if (reordered) reasons.push(`plugin order changed (${orderBefore.join(', ')} -> ${orderAfter.join(', ')})`)

  const codeChanged = options.codeChanged ?? definitionChanged
  const changed: PluginChange[] = []
  for (const name of orderBefore) {
    const old = beforeByName.get(name)!
    const next = afterByName.get(name)!
    const optionChanges = valueChanges(old.options, next.options, '')
    const code = codeChanged(old.plugin, next.plugin)
    if (optionChanges.length === 0 && !code) continue
    const hooks = options.hooks?.get(name) ?? { libp2p: true, reconfigure: false }
    const { action, reason } = pluginAction(old.plugin, next.plugin, optionChanges, code, hooks)
    if (action === 'rebuild') reasons.push(`plugin '${name}': ${reason}`)
    changed.push({ name, options: optionChanges, code, action, reason })
  }

  return {
    changed: core.length + added.length + removed.length + changed.length > 0 || reordered,
    core,
    plugins: { added, removed, changed, reordered },
    rebuild: reasons.length > 0,
    reasons,
    identityChanges: before.dataDir !== after.dataDir,
  }
}

function pluginAction(
  before: MeshPlugin,
  after: MeshPlugin,
  changes: readonly ValueChange[],
  code: boolean,
  hooks: PluginHookInfo,
): { action: ChangeAction; reason: string } {
  if (code) {
    return hooks.libp2p
      ? { action: 'rebuild', reason: 'its code changed and it contributes to libp2p' }
      : { action: 'restart', reason: 'its code changed' }
  }
  const topKeys = [...new Set(changes.map((c) => c.path.split(/[.[]/)[0]).filter(Boolean))]
  const declared = after.definition.libp2pOptions ?? before.definition.libp2pOptions
  if (hooks.libp2p) {
    if (!declared) {
      return { action: 'rebuild', reason: 'its options changed and it contributes to libp2p' }
    }
    // options that are not an object (e.g. a whole new value) count as all keys
    const feeding = changes.some((c) => c.path === '')
      ? declared
      : topKeys.filter((k) => declared.includes(k))
    if (feeding.length > 0) {
      return {
        action: 'rebuild',
        reason: `${feeding.map((k) => `'${k}'`).join(', ')} ${feeding.length === 1 ? 'feeds' : 'feed'} its libp2p contribution`,
      }
    }
    if (!hooks.reconfigure) {
      return {
        action: 'rebuild',
        reason: 'its options changed, it contributes to libp2p and has no reconfigure hook',
      }
    }
    return { action: 'reconfigure', reason: 'options applied in place' }
  }
  if (hooks.reconfigure) return { action: 'reconfigure', reason: 'options applied in place' }
  return { action: 'restart', reason: 'no reconfigure hook; restarted alone' }
}

/** Whether two plugin objects with one name come from different code. */
export function definitionChanged(before: MeshPlugin, after: MeshPlugin): boolean {
  if (before.definition === after.definition) return false
  return fingerprint(before) !== fingerprint(after)
}

function fingerprint(plugin: MeshPlugin): string {
  const d = plugin.definition
  return JSON.stringify([
    d.name,
    d.provides ?? [],
    d.dependencies ?? [],
    d.optionalDependencies ?? [],
    d.enforce ?? null,
    typeof d.apply === 'function' ? d.apply.toString() : (d.apply ?? null),
    d.libp2pOptions ?? null,
    d.create.toString(),
  ])
}

/** Every leaf that differs between two values, with dotted paths under `prefix`. */
export function valueChanges(before: unknown, after: unknown, prefix: string): ValueChange[] {
  if (sameValue(before, after)) return []
  if (isPlainObject(before) && isPlainObject(after)) {
    const out: ValueChange[] = []
    for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
      out.push(...valueChanges(before[key], after[key], prefix ? `${prefix}.${key}` : key))
    }
    return out
  }
  return [{ path: prefix, before, after }]
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** Structural equality for config values (arrays by items, plain objects by keys, else identity). */
function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((v, i) => sameValue(v, b[i]))
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)])
    for (const key of keys) if (!sameValue(a[key], b[key])) return false
    return true
  }
  if (typeof a === 'function' && typeof b === 'function') return a.toString() === b.toString()
  return false
}
