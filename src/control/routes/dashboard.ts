/** The dashboard's routes (src/dashboard): `dashboardRoutes(server)` adds them with `server.addRoute`. */
import { MeshError } from 'meshkit'
import { reasonOfError } from '../http.js'
import type { ControlRouteHandler, ControlServer } from '../types.js'

export async function addDashboard(server: ControlServer): Promise<void> {
  // resolved at run time: the dashboard is an optional part of the CLI package
  const specifier = '../../dashboard/index.js'
  let mod: { dashboardRoutes?: (s: ControlServer) => unknown }
  try {
    mod = (await import(specifier)) as typeof mod
  } catch (err) {
    throw new MeshError(
      'MESH_ERR_CONTROL_FAILED',
      `The dashboard could not be loaded: ${reasonOfError(err)}`,
      {
        cause: err,
      },
    )
  }
  if (typeof mod.dashboardRoutes !== 'function')
    throw new MeshError('MESH_ERR_CONTROL_FAILED', 'The dashboard module has no dashboardRoutes() function.')
  const routes = await mod.dashboardRoutes(server)
  if (Array.isArray(routes)) {
    for (const r of routes as Array<{
      method: string
      path: string
      handler: ControlRouteHandler
      public?: boolean
    }>)
      server.addRoute(r.method, r.path, r.handler, { public: r.public })
  }
}
