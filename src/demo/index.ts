/** `mesh demo` as a library: a local loopback mesh with its live dashboard. */

export { canOpenBrowser, openBrowser } from './open-browser.js'
export {
  checkDemoPlan,
  DEFAULT_DEMO_PEERS,
  DEFAULT_DEMO_TOPICS,
  demoMembers,
  demoTopicsOf,
  MAX_DEMO_PEERS,
} from './plan.js'
export { runDemo } from './run-demo.js'
export { startDemo } from './start-demo.js'
export type {
  DemoClusterSummary,
  DemoOptions,
  DemoPeer,
  DemoProgress,
  DemoSummary,
  DemoTopicSummary,
  RunDemoOptions,
  RunningDemo,
} from './types.js'
