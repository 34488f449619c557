/** `GET /healthz`: liveness for process and container supervisors (public: it tells only whether a node runs). */
import { sendJson } from '../http.js'
import type { AddRoute } from '../types.js'
import type { RoutesEnv } from './env.js'

export function addHealthRoute(addRoute: AddRoute, env: RoutesEnv): void {
  // no credential, and nothing but whether a node runs
  addRoute(
    'GET',
    '/healthz',
    (_req, res) => {
      const up = env.current()?.state === 'started'
      res.setHeader('cache-control', 'no-store')
      sendJson(res, up ? 200 : 503, { status: up ? 'ok' : 'unavailable' })
    },
    { public: true },
  )
}
