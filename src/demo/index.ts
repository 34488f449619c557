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
export {
  type DemoClusterSummary,
  type DemoOptions,
  type DemoPeer,
  type DemoProgress,
  type DemoSummary,
  type DemoTopicSummary,
  type RunDemoOptions,
  type RunningDemo,
  runDemo,
  startDemo,
} from './run-demo.js'
