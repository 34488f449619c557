/**
 * Topics a `mesh dev` session carries over a rebuild: those the config joins at start are the node's
 * baseline; others were joined at runtime (`topics`, the control API, an app) and are joined again on
 * a rebuilt node, through the `discovery` slot.
 */
import { type DiscoverySlotApi, type Logger, type MeshNode, SLOT_CAPABILITIES } from 'meshkit'

/** The `discovery` slot's API (the session carries runtime topics over a rebuild with it), if any. */
export function discoveryOf(node: MeshNode): Pick<DiscoverySlotApi, 'join' | 'topics'> | undefined {
  return node.tryApi<DiscoverySlotApi>(SLOT_CAPABILITIES.discovery, 'join', 'topics')
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export interface RuntimeTopics {
  /** Takes the node's topics now as its baseline (after a start or a reload). */
  resetBaseline(node: MeshNode): void
  /** Counts topics joined since the baseline as runtime topics, and forgets those left. */
  refresh(node: MeshNode): void
  /** Topics joined at start by the session itself (`topics`): runtime topics unless in the baseline. */
  joined(topics: readonly string[]): void
  /**
   * Joins the runtime topics again on a rebuilt node; returns those joined (a topic that cannot be
   * joined is logged), or undefined when the node has no `discovery` provider.
   */
  rejoinRebuilt(node: MeshNode, logger: Logger): Promise<string[] | undefined>
  /** Joins the runtime topics again on a node restarted with its previous config; returns those joined. */
  rejoinRestarted(node: MeshNode): Promise<string[]>
}

export function trackRuntimeTopics(): RuntimeTopics {
  const runtime = new Set<string>()
  let baseline = new Set<string>()
  return {
    resetBaseline: (node) => {
      baseline = new Set((discoveryOf(node)?.topics() ?? []).filter((t) => !runtime.has(t)))
    },
    refresh: (node) => {
      const current = discoveryOf(node)?.topics() ?? []
      const now = new Set(current)
      for (const t of [...runtime]) if (!now.has(t)) runtime.delete(t)
      for (const t of current) if (!baseline.has(t)) runtime.add(t)
    },
    joined: (topics) => {
      for (const t of topics) if (!baseline.has(t)) runtime.add(t)
    },
    rejoinRebuilt: async (node, logger) => {
      const discovery = discoveryOf(node)
      if (!discovery) return undefined
      const joined = new Set(discovery.topics())
      const missing = [...runtime].filter((t) => !joined.has(t))
      // the node is rebuilt whatever happens here: a topic that cannot be joined is logged
      const results = await Promise.allSettled(missing.map((t) => discovery.join(t)))
      results.forEach((r, i) => {
        if (r.status === 'rejected')
          logger.warn(`could not join topic ${missing[i]} again on the new node: ${reasonOf(r.reason)}`)
      })
      return missing.filter((_, i) => results[i].status === 'fulfilled')
    },
    rejoinRestarted: async (node) => {
      // same config and identity, but its connections were closed: join the runtime topics again
      const discovery = discoveryOf(node)
      const topics = [...runtime].filter((t) => !(discovery?.topics() ?? []).includes(t))
      const results = await Promise.allSettled(topics.map((t) => discovery?.join(t)))
      return topics.filter((_, i) => results[i].status === 'fulfilled')
    },
  }
}
