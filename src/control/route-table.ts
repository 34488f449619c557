/** The control server's routes: exact paths and `/*` prefixes, matched by method (HEAD falls back to GET). */
import { meshError } from 'meshkit'
import type { AddRoute, ControlRouteHandler } from './types.js'

export interface Route {
  method: string
  path: string
  prefix: boolean
  handler: ControlRouteHandler
  public: boolean
}

export interface RouteMatch {
  route?: Route
  /** For a prefix route: the rest of the path after the prefix, without its leading `/`. */
  rest: string
  /** The methods of the routes that fit the path (for a 405's `allow` header). */
  allowed: string[]
}

export interface RouteTable {
  add: AddRoute
  match(method: string, path: string): RouteMatch
}

export function createRouteTable(): RouteTable {
  const routes: Route[] = []
  return {
    add: (method, path, handler, options = {}) => {
      const m = method.toUpperCase()
      const prefix = path.endsWith('/*')
      const p = prefix ? path.slice(0, -2) : path
      if (!p.startsWith('/') && !(prefix && p === ''))
        throw meshError('MESH_ERR_INVALID_ARGUMENT', ['route path', `${path} must start with /`])
      if (routes.some((r) => r.method === m && r.path === p && r.prefix === prefix))
        throw meshError('MESH_ERR_INVALID_ARGUMENT', ['route', `${m} ${path} is already registered`])
      routes.push({ method: m, path: p, prefix, handler, public: options.public === true })
    },
    match: (method, path) => {
      const fits = (r: Route) =>
        r.prefix ? path === r.path || path.startsWith(`${r.path}/`) : path === r.path
      const candidates = routes.filter(fits)
      // exact routes win over prefixes, longer prefixes over shorter ones
      candidates.sort((a, b) => Number(a.prefix) - Number(b.prefix) || b.path.length - a.path.length)
      const route =
        candidates.find((r) => r.method === method) ??
        (method === 'HEAD' ? candidates.find((r) => r.method === 'GET') : undefined)
      const rest = route?.prefix ? path.slice(route.path.length).replace(/^\//, '') : ''
      return { route, rest, allowed: [...new Set(candidates.map((r) => r.method))] }
    },
  }
}
