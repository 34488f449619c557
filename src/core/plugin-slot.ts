/**
 * A plugin as a node runs it: its resolved entry, the hooks its factory made, its context, whether it
 * is started and the container boxes holding its API; and the calls of its hooks, with failures turned
 * into coded errors.
 */
import type { DependencyContainer } from 'tsyringe'
import type { BootstrapSource, NamedBootstrapSource } from './bootstrap.js'
import type { PluginHookInfo } from './config-diff.js'
import type { ResolvedPlugin } from './config-types.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import type { PluginContext, PluginHooks } from './plugin.js'
import { capabilityToken } from './tokens.js'

/** How a plugin's API sits in the container (boxed: a restart replaces the API inside the box). */
export interface ApiBox {
  api: unknown
}

export interface PluginSlot {
  resolved: ResolvedPlugin
  hooks: PluginHooks
  ctx: PluginContext
  started: boolean
  api?: unknown
  /** The container entries holding the plugin's API (one per capability), updated on a restart. */
  boxes: ApiBox[]
}

/** New hooks from the plugin's definition, made for `resolved.options`. */
export function createHooks(resolved: ResolvedPlugin): PluginHooks {
  return (resolved.plugin.definition.create as (o: unknown) => PluginHooks)(resolved.options)
}

/** Calls one lifecycle hook of a plugin (nothing when it has none); a failure is a coded error. */
export async function callHook(
  slot: PluginSlot,
  name: 'setup' | 'libp2p' | 'start' | 'stop',
): Promise<unknown> {
  const fn = slot.hooks[name]
  if (!fn) return undefined
  try {
    return await fn.call(slot.hooks, slot.ctx)
  } catch (err) {
    // a user's mistake a plugin found (a missing key file, a bad option value) stays a user error:
    // the CLI prints it with its hint and exits 2, without a stack trace
    if (err instanceof MeshError && (err.code === 'MESH_ERR_PLUGIN_HOOK_FAILED' || err.userError)) throw err
    throw meshError('MESH_ERR_PLUGIN_HOOK_FAILED', [slot.resolved.plugin.name, name, reasonOf(err)], {
      cause: err,
    })
  }
}

/** Runs the plugin's `setup` hook and checks the `bootstrap` contract; returns the plugin's API. */
export async function setupSlot(slot: PluginSlot): Promise<unknown> {
  const api = await callHook(slot, 'setup')
  if (
    slot.resolved.plugin.provides.includes('bootstrap') &&
    typeof (api as BootstrapSource)?.candidates !== 'function'
  ) {
    throw meshError('MESH_ERR_PLUGIN_HOOK_FAILED', [
      slot.resolved.plugin.name,
      'setup',
      "it provides 'bootstrap' but returned no bootstrap source (an object with a candidates() method)",
    ])
  }
  return api
}

/** Registers the slot's API (`slot.api`) in `container` under the plugin's name and each capability it provides. */
export function registerApi(slot: PluginSlot, container: DependencyContainer): void {
  for (const cap of new Set([slot.resolved.plugin.name, ...slot.resolved.plugin.provides])) {
    // boxed: tsyringe treats `useValue: undefined` as no value, and a plugin may have no API;
    // and a restart of the plugin replaces the API inside the box (tsyringe cannot unregister)
    const box: ApiBox = { api: slot.api }
    slot.boxes.push(box)
    container.register(capabilityToken<ApiBox>(cap), { useValue: box })
  }
}

/** Stops the started plugins in reverse order, each even when others fail; returns the failures. */
export async function stopSlots(slots: readonly PluginSlot[]): Promise<unknown[]> {
  const errors: unknown[] = []
  for (const slot of [...slots].reverse()) {
    if (!slot.started) continue
    slot.started = false
    try {
      await callHook(slot, 'stop')
    } catch (err) {
      errors.push(err)
    }
  }
  return errors
}

/** The slot of the plugin `name`; throws MESH_ERR_UNKNOWN_PLUGIN naming the plugins there are. */
export function findSlot(slots: readonly PluginSlot[], name: string): PluginSlot {
  const slot = slots.find((s) => s.resolved.plugin.name === name)
  if (!slot)
    throw meshError('MESH_ERR_UNKNOWN_PLUGIN', [name], {
      hint: `The node runs: ${slots.map((s) => s.resolved.plugin.name).join(', ')}.`,
    })
  return slot
}

/** What the plugins' hooks tell a config diff: whether each has a `libp2p` and a `reconfigure` hook. */
export function hookInfoOf(slots: readonly PluginSlot[]): Map<string, PluginHookInfo> {
  return new Map(
    slots.map((s) => [
      s.resolved.plugin.name,
      {
        libp2p: typeof s.hooks.libp2p === 'function',
        reconfigure: typeof s.hooks.reconfigure === 'function',
      },
    ]),
  )
}

/** The bootstrap sources (the APIs of the plugins providing `bootstrap`), named after their plugins. */
export function bootstrapSourcesOf(slots: readonly PluginSlot[]): NamedBootstrapSource[] {
  return slots
    .filter((s) => s.resolved.plugin.provides.includes('bootstrap'))
    .map((s) => ({ name: s.resolved.plugin.name, source: s.api as BootstrapSource }))
}
