/** The control server's public types: its options, the server handle, and the route handler contract. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger, MeshEventBus, MeshNode } from 'meshkit'

/** What the server needs of a kernel: its current node (read on every request) and its event bus. */
export interface ControlKernel {
  readonly current: MeshNode | undefined
  readonly events: MeshEventBus
}

export interface ControlServerOptions {
  /** Usually a MeshKernel: the server always reads `kernel.current`, so it follows node swaps. */
  kernel: ControlKernel
  /** Where `control.token` (created once) and `control.json` (while the server runs) live. */
  dataDir: string
  /** Loopback address to bind: '127.0.0.1' or '::1'. @default '127.0.0.1' */
  host?: string
  /** TCP port; 0 picks a free one. @default 0 */
  port?: number
  /** Listen on this unix socket path instead of TCP (host and port are then ignored). */
  socketPath?: string
  /** Serve the dashboard at `/` and `/dashboard/*` (routes from src/dashboard's `dashboardRoutes()`). */
  dashboard?: boolean
  /** Largest request body accepted, in bytes. @default 65536 */
  maxBodyBytes?: number
  /** Write `<dataDir>/control.json` so the CLI finds the server. @default true */
  discoveryFile?: boolean
  logger?: Logger
}

/**
 * A route handler: answer with `res` yourself (then return nothing, or a promise that settles once the
 * response is written: a handler that returns without having started the response gets a 204), or
 * return a JSON-serialisable value that the server sends as `200 application/json`. A thrown MeshError becomes a coded JSON error
 * (`{ error: { code, message, hint } }`) with a status chosen from its code; anything else a 500.
 */
export type ControlRouteHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  ctx: ControlRouteContext,
) => unknown

export interface ControlRouteContext {
  /** How the request authenticated: the data dir's token, a dashboard session, or nothing (public route). */
  auth: 'token' | 'session' | 'none'
  /** The current node; throws MESH_ERR_CONTROL_NO_NODE (503) when none runs. */
  node(): MeshNode
  /** The request body parsed as JSON (a bad body throws MESH_ERR_CONTROL_BAD_REQUEST: 400). */
  json(): Promise<unknown>
  /** For prefix routes (`/dashboard/*`): the rest of the path after the prefix, e.g. `app.js`. */
  rest: string
}

export interface ControlRouteOptions {
  /** Serve without the token (only for data-free assets such as the dashboard's CSS and JS). */
  public?: boolean
}

export interface ControlServer {
  /** `http://127.0.0.1:<port>` (TCP), or `http://localhost` with `socketPath` set (unix socket). */
  readonly url: string
  /** The TCP port (undefined on a unix socket). */
  readonly port: number | undefined
  readonly socketPath: string | undefined
  /** The data dir's token (`Authorization: Bearer <token>`); never put it in a URL. */
  readonly token: string
  /**
   * A dashboard login link, `<url>/#code=<code>`: the code is single-use and valid for
   * {@link LOGIN_CODE_TTL_MS}; the page trades it for a session (held in the tab's sessionStorage) and
   * removes it from its URL, so browser history, terminal scrollback, logs and a browser's command line
   * hold nothing that opens the API later. Using a code twice ends the session it opened.
   */
  loginUrl(): string
  /**
   * Adds an endpoint. `path` is exact (`/api/x`), or a prefix ending in `/*` (`/dashboard/*` also
   * matches `/dashboard` and `/dashboard/`). Adding the same method and path twice throws.
   */
  addRoute(method: string, path: string, handler: ControlRouteHandler, options?: ControlRouteOptions): void
  /** Stops listening, ends event streams, removes control.json. Idempotent. */
  close(): Promise<void>
}

/** What a group of routes is given to add its endpoints with. */
export type AddRoute = ControlServer['addRoute']
