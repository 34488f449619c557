/**
 * Applying a new config to a running node without a new libp2p node (see docs/architecture.md,
 * "Reload"): core settings that allow it, then each changed plugin in start order, reconfigured through
 * its `reconfigure` hook or restarted alone with its dependents. All or nothing: a failed step undoes
 * the steps already done, in reverse.
 */
import type { ConfigDiff } from './config-diff.js'
import type { ResolvedMeshConfig, ResolvedPlugin } from './config-types.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import type { Logger } from './logger.js'
import type { NodeState } from './mesh-node.js'
import type { PeerAddressPolicy } from './peer-addresses.js'
import type { PluginContext } from './plugin.js'
import { callHook, createHooks, type PluginSlot, setupSlot } from './plugin-slot.js'
import type { Reputation } from './reputation.js'

/** One thing done to a running node by {@link MeshNode.applyInPlace} (or a rebuild, by the kernel). */
export interface ReloadStep {
  /** `core`, `node`, or a plugin name. */
  target: string
  action: 'applied' | 'reconfigured' | 'restarted' | 'rebuilt'
  /** What was applied, e.g. `logLevel, dial` or `restarted as a dependent of 'x'`. */
  detail?: string
  ms: number
}

/** What an in-place reload needs of the node it changes. */
export interface ReloadHost {
  readonly state: NodeState
  /** The plugins in start order. */
  readonly slots: readonly PluginSlot[]
  readonly logger: Logger
  readonly reputation: Reputation
  readonly peerAddresses: PeerAddressPolicy
  /** The node's config; setting it also replaces it in the node's container. */
  config: ResolvedMeshConfig
  /** A new context for the plugin `resolved`. */
  context(resolved: ResolvedPlugin): PluginContext
  /** (Re)starts the bootstrapper with the current config and bootstrap sources. */
  startBootstrapper(): void
  /** Dials the config's `dial` addresses (failures are logged and reported as events). */
  dialConfigured(addresses: readonly string[]): void
  /** The slot of the plugin `name`; throws MESH_ERR_UNKNOWN_PLUGIN. */
  slot(name: string): PluginSlot
}

/** See {@link MeshNode.applyInPlace} (this runs serialized with the node's start and stop). */
export async function applyInPlace(
  host: ReloadHost,
  next: ResolvedMeshConfig,
  diff: ConfigDiff,
): Promise<ReloadStep[]> {
  if (diff.rebuild)
    throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
      '(node)',
      `it needs a new node: ${diff.reasons.join('; ')}`,
    ])
  if (host.state !== 'started')
    throw meshError('MESH_ERR_RECONFIGURE_FAILED', ['(node)', `the node is ${host.state}, not started`])
  const previous = host.config
  const steps: ReloadStep[] = []
  const undo: Array<() => Promise<void>> = []
  const nextByName = new Map(next.plugins.map((p) => [p.plugin.name, p]))
  try {
    const coreChanges = diff.core.filter((c) => c.action === 'reconfigure')
    const t0 = performance.now()
    host.config = next
    undo.push(async () => {
      host.config = previous
    })
    if (coreChanges.length > 0) {
      undo.push(
        await applyCore(
          host,
          previous,
          next,
          coreChanges.map((c) => c.path),
        ),
      )
      steps.push({
        target: 'core',
        action: 'applied',
        detail: [...new Set(coreChanges.map((c) => c.path.split('.')[0]))].join(', '),
        ms: performance.now() - t0,
      })
    }
    for (const change of diff.plugins.changed) {
      const slot = host.slot(change.name)
      const resolved = nextByName.get(change.name)
      if (!resolved) continue
      const old = slot.resolved
      const started = performance.now()
      if (change.action === 'reconfigure') {
        const applied = await reconfigureSlot(host, slot, resolved)
        if (!applied)
          throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
            change.name,
            'its reconfigure hook declined these options (they need a new node)',
          ])
        undo.push(async () => {
          await reconfigureSlot(host, slot, old)
        })
        steps.push({
          target: change.name,
          action: 'reconfigured',
          detail: change.options.map((c) => c.path).join(', '),
          ms: performance.now() - started,
        })
      } else if (change.action === 'restart') {
        const dependents = await restartSlot(host, slot, resolved)
        undo.push(async () => {
          await restartSlot(host, slot, old)
        })
        steps.push({
          target: change.name,
          action: 'restarted',
          detail: [
            change.code ? 'code changed' : change.options.map((c) => c.path).join(', '),
            dependents.length > 0 ? `with its dependents ${dependents.join(', ')}` : '',
          ]
            .filter(Boolean)
            .join('; '),
          ms: performance.now() - started,
        })
      }
    }
  } catch (err) {
    const rollback: unknown[] = []
    for (const step of undo.reverse()) await step().catch((e: unknown) => rollback.push(e))
    const reason = reasonOf(err)
    const failure =
      err instanceof MeshError && err.code === 'MESH_ERR_RECONFIGURE_FAILED'
        ? err
        : meshError('MESH_ERR_RECONFIGURE_FAILED', ['(node)', reason], { cause: err })
    failure.errors.push(...rollback)
    throw failure
  }
  // every plugin now stands for its entry in the new config
  for (const slot of host.slots) slot.resolved = nextByName.get(slot.resolved.plugin.name) ?? slot.resolved
  return steps
}

/** Calls the plugin's reconfigure hook with `next.options`; on success the slot stands for `next`. */
export async function reconfigureSlot(
  host: ReloadHost,
  slot: PluginSlot,
  next: ResolvedPlugin,
): Promise<boolean> {
  const fn = slot.hooks.reconfigure
  if (!fn) return false
  if (host.state !== 'started' || !slot.started)
    throw meshError('MESH_ERR_RECONFIGURE_FAILED', [next.plugin.name, 'the plugin is not running'])
  const ctx = host.context(next)
  let result: unknown
  try {
    result = await fn.call(slot.hooks, next.options, ctx)
  } catch (err) {
    throw meshError('MESH_ERR_RECONFIGURE_FAILED', [next.plugin.name, reasonOf(err)], { cause: err })
  }
  if (result === false) return false
  slot.resolved = next
  slot.ctx = ctx
  return true
}

/** Restarts one plugin (and its started dependents) with new hooks made for `next`. */
export async function restartSlot(
  host: ReloadHost,
  slot: PluginSlot,
  next: ResolvedPlugin,
): Promise<string[]> {
  if (host.state !== 'started')
    throw meshError('MESH_ERR_RECONFIGURE_FAILED', [
      next.plugin.name,
      `the node is ${host.state}, not started`,
    ])
  const index = host.slots.indexOf(slot)
  const provided = new Set([slot.resolved.plugin.name, ...slot.resolved.plugin.provides])
  const dependents: PluginSlot[] = []
  for (const other of host.slots.slice(index + 1)) {
    const deps = [
      ...other.resolved.plugin.dependencies,
      ...(other.resolved.plugin.optionalDependencies ?? []),
    ]
    if (deps.some((d) => provided.has(d))) {
      dependents.push(other)
      provided.add(other.resolved.plugin.name)
      for (const cap of other.resolved.plugin.provides) provided.add(cap)
    }
  }
  const running = dependents.filter((d) => d.started)
  for (const d of [...running].reverse()) {
    d.started = false
    await callHook(d, 'stop')
  }
  const old = { ...slot }
  if (slot.started) {
    slot.started = false
    await callHook(slot, 'stop').catch((err: unknown) =>
      host.logger.warn(`stopping ${slot.resolved.plugin.name} for a restart: ${reasonOf(err)}`),
    )
  }
  const fresh: PluginSlot = {
    resolved: next,
    hooks: createHooks(next),
    ctx: host.context(next),
    started: false,
    boxes: slot.boxes,
  }
  try {
    const api = await setupSlot(fresh)
    for (const box of slot.boxes) box.api = api
    Object.assign(slot, fresh, { api })
    await callHook(slot, 'start')
    slot.started = true
  } catch (err) {
    // back to the previous hooks, which ran until now
    if (slot.started) await callHook(slot, 'stop').catch(() => {})
    Object.assign(slot, old, { started: false })
    for (const box of slot.boxes) box.api = old.api
    const restoreErrors: unknown[] = []
    await callHook(slot, 'start').then(
      () => {
        slot.started = true
      },
      (e: unknown) => restoreErrors.push(e),
    )
    for (const d of running) {
      await callHook(d, 'start').then(
        () => {
          d.started = true
        },
        (e: unknown) => restoreErrors.push(e),
      )
    }
    throw meshError(
      'MESH_ERR_RECONFIGURE_FAILED',
      [
        next.plugin.name,
        `restarting it failed (${reasonOf(err)}); ${restoreErrors.length === 0 ? 'it runs again with its previous options' : 'restarting it with its previous options failed too'}`,
      ],
      { cause: err, errors: restoreErrors },
    )
  }
  for (const d of running) {
    await callHook(d, 'start')
    d.started = true
  }
  if (provided.has('bootstrap')) host.startBootstrapper()
  return dependents.map((d) => d.resolved.plugin.name)
}

/** Applies in-place core settings; returns how to undo them. */
async function applyCore(
  host: ReloadHost,
  previous: ResolvedMeshConfig,
  next: ResolvedMeshConfig,
  paths: readonly string[],
): Promise<() => Promise<void>> {
  const top = new Set(paths.map((p) => p.split('.')[0]))
  const undo: Array<() => void> = []
  if (top.has('logLevel')) {
    host.logger.level = next.logLevel
    undo.push(() => {
      host.logger.level = previous.logLevel
    })
  }
  if (top.has('security')) {
    host.reputation.settings = next.security
    undo.push(() => {
      host.reputation.settings = previous.security
    })
  }
  if (top.has('bootstrap')) {
    host.startBootstrapper()
    undo.push(() => host.startBootstrapper())
  }
  if (top.has('dial')) {
    for (const address of next.dial) host.peerAddresses.trust(address)
    const before = new Set(previous.dial)
    host.dialConfigured(next.dial.filter((a) => !before.has(a)))
  }
  return async () => {
    for (const step of undo.reverse()) step()
  }
}
