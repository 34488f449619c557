/** A node event as the bus carries it (and as `mesh start --json` prints it, one per line). */
export interface MeshEvent {
  /** e.g. `peer:connect`, `peer:disconnect`, `node:started`, or a plugin's `topic:peer`. */
  event: string
  [field: string]: unknown
}

export type MeshEventListener = (event: MeshEvent) => void

/**
 * The kernel's event bus. It outlives node rebuilds (a `mesh dev` swap), so a subscriber keeps
 * receiving events from whichever node is current. A throwing listener is isolated from the others.
 */
export interface MeshEventBus {
  emit(event: string, fields?: Record<string, unknown>): void
  /** Subscribes to one event name, or `*` for all; returns the unsubscribe function. */
  on(event: string, listener: MeshEventListener): () => void
}

export function createEventBus(onListenerError?: (err: unknown, event: MeshEvent) => void): MeshEventBus {
  const listeners = new Map<string, Set<MeshEventListener>>()
  return {
    emit(event, fields = {}) {
      const payload: MeshEvent = { ...fields, event }
      for (const key of [event, '*']) {
        for (const listener of listeners.get(key) ?? []) {
          try {
            listener(payload)
          } catch (err) {
            onListenerError?.(err, payload)
          }
        }
      }
    },
    on(event, listener) {
      const set = listeners.get(event) ?? new Set()
      listeners.set(event, set)
      set.add(listener)
      return () => set.delete(listener)
    },
  }
}
