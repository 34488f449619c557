/**
 * `mesh demo` as a library: a local mesh on loopback in this process (a bootstrap + relay node that also
 * observes every topic, plus N peers with overlapping topics and clustering tags), the dashboard served
 * from the observer's control API, rendezvous and clusters tracked until stopped.
 */
import { startDemo } from './start-demo.js'
import type { DemoSummary, RunDemoOptions, RunningDemo } from './types.js'

/**
 * Runs the demo until `signal` aborts or `durationMs` has passed (after every peer started), then stops
 * everything and returns the summary. A signal during startup stops what started and returns
 * undefined.
 */
export async function runDemo(options: RunDemoOptions = {}): Promise<DemoSummary | undefined> {
  let demo: RunningDemo
  try {
    demo = await startDemo(options)
  } catch (err) {
    if (options.signal?.aborted && (err as Error).name === 'AbortError') return undefined
    throw err
  }
  options.onReady?.(demo)
  await new Promise<void>((resolve) => {
    const timer =
      options.durationMs === undefined ? undefined : setTimeout(resolve, Math.max(0, options.durationMs))
    const onAbort = () => {
      clearTimeout(timer)
      resolve()
    }
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  return demo.stop()
}
