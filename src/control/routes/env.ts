import type { ServerResponse } from 'node:http'
import type { Logger, MeshError, MeshEventBus, MeshNode } from 'meshkit'
import { controlError } from '../errors.js'
import type { LoginCodes } from '../login-codes.js'
import type { NodeWatch } from '../node-watch.js'
import type { ControlRouteContext, ControlRouteHandler } from '../types.js'

/** What the built-in route groups share of their server. */
export interface RoutesEnv {
  /** The kernel's current node (or none), read on every request. */
  current(): MeshNode | undefined
  events: MeshEventBus
  nodes: NodeWatch
  /** The server's open event streams (ended when it closes). */
  streams: Set<ServerResponse>
  logins: LoginCodes
  /** Whether the server serves the dashboard (and so mints login codes). */
  dashboard: boolean
  /** The server's URL (known once it listens). */
  url(): string
  logger: Logger
}

/** A handler that answers with what `fn` returns for the current node (a 503 when none runs). */
export const json =
  (fn: (node: MeshNode, ctx: ControlRouteContext) => unknown): ControlRouteHandler =>
  (_req, _res, _url, ctx) =>
    fn(ctx.node(), ctx)

export function noProvider(capability: string, hint: string): MeshError {
  return controlError('MESH_ERR_CONTROL_NO_PROVIDER', [capability], { hint })
}
