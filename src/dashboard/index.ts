/**
 * The dashboard: static files (src/dashboard/assets: index.html, app.js, style.css; plain browser code,
 * no build step, nothing fetched from elsewhere) served by the control server when it runs with
 * `dashboard: true`. The page trades the one-time login code of its URL (`/#code=...`, from the server's
 * `loginUrl()`) for a session at `POST /api/login`, drops the code from its URL, and reads the control API
 * (`/api/*`) and its event stream with `Authorization: Bearer <session>`.
 */
import { readFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Where the asset files are, seen from dist/src/dashboard/index.js (and from src/dashboard/index.ts). */
export const DASHBOARD_ASSETS_DIR: string = fileURLToPath(
  new URL(
    import.meta.url.includes('/dist/src/dashboard/') ? '../../../src/dashboard/assets/' : './assets/',
    import.meta.url,
  ),
)

/** The files the dashboard serves (a fixed list: no path from a request ever reaches the file system). */
export const DASHBOARD_FILES: Readonly<Record<string, string>> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
}

/** The page's Content-Security-Policy: its own files and its own origin's API, nothing else. */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/** A request handler as the control server's `addRoute` takes it (`ctx.rest`: the path after a prefix route). */
export type DashboardHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  ctx: { rest: string },
) => Promise<void>

export interface DashboardRoute {
  method: 'GET'
  /** Exact (`/`) or a prefix ending in `/*` (`/dashboard/*` also matches `/dashboard` and `/dashboard/`). */
  path: string
  handler: DashboardHandler
  /** Served without the control token: the files hold no data (the page fetches it with its session). */
  public: true
}

export interface DashboardRoutesOptions {
  /** Serve the files from here instead of {@link DASHBOARD_ASSETS_DIR} (tests, custom builds). */
  assetsDir?: string
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    // the page's URL may carry a login code (in the fragment): keep the page out of caches and referrers
    'Cache-Control': 'no-store',
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': DASHBOARD_CSP,
  })
  res.end(body)
}

function sendError(res: ServerResponse, status: number, code: string, message: string, hint?: string): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify({ error: { code, message, hint } }))
}

/** Serves one asset (`name` must be one of {@link DASHBOARD_FILES}; anything else is a 404). */
export async function serveDashboardFile(
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
  options: DashboardRoutesOptions = {},
): Promise<void> {
  if (!Object.hasOwn(DASHBOARD_FILES, name)) {
    sendError(
      res,
      404,
      'MESH_ERR_CONTROL_NOT_FOUND',
      `There is no dashboard file ${JSON.stringify(name.slice(0, 80))}.`,
      'Open the dashboard with the login link the node printed (or run `mesh dashboard` for a new one).',
    )
    return
  }
  const type = DASHBOARD_FILES[name]
  const dir = options.assetsDir ?? DASHBOARD_ASSETS_DIR
  let body: Buffer
  try {
    body = await readFile(join(dir, name))
  } catch (err) {
    sendError(
      res,
      500,
      'MESH_ERR_CONTROL_FAILED',
      `The dashboard file ${name} cannot be read: ${(err as Error).message}`,
      `Check that ${dir} exists: it ships with the package, beside dist/.`,
    )
    return
  }
  send(res, 200, type, req.method === 'HEAD' ? '' : body)
}

/**
 * The dashboard's routes, for the control server (`startControlServer({ dashboard: true })` calls this
 * with itself and adds what it returns): `GET /` and `GET /dashboard/` (the page), and
 * `GET /dashboard/<file>` for its files. All public: they hold no data; the page reads the API with the
 * session it got for its login code.
 */
export function dashboardRoutes(_server?: unknown, options: DashboardRoutesOptions = {}): DashboardRoute[] {
  const page: DashboardHandler = (req, res) => serveDashboardFile('index.html', req, res, options)
  return [
    { method: 'GET', path: '/', handler: page, public: true },
    {
      method: 'GET',
      path: '/dashboard/*',
      handler: (req, res, _url, ctx) => serveDashboardFile(ctx.rest || 'index.html', req, res, options),
      public: true,
    },
  ]
}
