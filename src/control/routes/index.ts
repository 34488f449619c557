/** The control API's built-in endpoints, grouped by what they serve (see docs/control-api.md). */
import { addGossipRoutes } from '../gossip-routes.js'
import type { AddRoute } from '../types.js'
import { addBanRoutes } from './bans.js'
import { addClusterNatRoutes } from './clusters-nat.js'
import type { RoutesEnv } from './env.js'
import { addEventsRoute } from './events.js'
import { addHealthRoute } from './health.js'
import { addLoginRoutes } from './login.js'
import { addMetricsRoute } from './metrics.js'
import { addNodeRoutes } from './node.js'
import { addTopicRoutes } from './topics.js'

export { addDashboard } from './dashboard.js'
export type { RoutesEnv } from './env.js'

/** Adds every built-in endpoint (the dashboard's own files are added by {@link addDashboard}). */
export function addBuiltinRoutes(addRoute: AddRoute, env: RoutesEnv): void {
  addNodeRoutes(addRoute, env)
  addTopicRoutes(addRoute)
  addBanRoutes(addRoute)
  addClusterNatRoutes(addRoute)
  addEventsRoute(addRoute, env)
  addGossipRoutes(addRoute, { events: env.events, streams: env.streams, logger: env.logger })
  addMetricsRoute(addRoute)
  addHealthRoute(addRoute, env)
  addLoginRoutes(addRoute, env)
}
