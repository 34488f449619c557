/** `GET /api/status`, `/api/peers`, `/api/connections`: the node, its peers and its connections. */
import { connectionsOf, peersOf, statusOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import { json, type RoutesEnv } from './env.js'

export function addNodeRoutes(addRoute: AddRoute, env: RoutesEnv): void {
  addRoute(
    'GET',
    '/api/status',
    json((node) => statusOf(node, env.nodes.startedAtOf(node))),
  )
  addRoute(
    'GET',
    '/api/peers',
    json((node) => peersOf(node)),
  )
  addRoute(
    'GET',
    '/api/connections',
    json((node) => connectionsOf(node, env.nodes.methods)),
  )
}
