/**
 * Runs `task` at most once at a time per key: a call made while the task runs for the same key returns
 * the running promise and makes exactly one follow-up run once it finishes (so the latest state is
 * always sent, however many calls came in). Follow-ups stop once `active()` turns false.
 * Used by plugins for per-peer exchanges (topic members, tags).
 */
export function coalescePerKey<T>(
  task: (item: T) => Promise<void>,
  keyOf: (item: T) => string,
  active: () => boolean = () => true,
): (item: T) => Promise<void> {
  const running = new Map<string, { promise: Promise<void>; again: boolean }>()
  return (item) => {
    const key = keyOf(item)
    const current = running.get(key)
    if (current) {
      current.again = true
      return current.promise
    }
    const entry = { promise: Promise.resolve(), again: false }
    entry.promise = (async () => {
      try {
        do {
          entry.again = false
          await task(item)
        } while (entry.again && active())
      } finally {
        running.delete(key)
      }
    })()
    running.set(key, entry)
    return entry.promise
  }
}
