/**
 * The control server's wiring: options, the token, the route table and the built-in routes, the
 * request pipeline (guard, authenticate, route, answer), listening, the discovery file and close().
 * The pieces live beside it: http.ts (JSON and error answers, bodies), request-guard.ts (Host, origin,
 * credentials), login-codes.ts (dashboard logins), route-table.ts, node-watch.ts, listen.ts,
 * discovery-file.ts and routes/ (one file per group of endpoints).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { createLogger, isMeshError, meshError } from 'meshkit'
import { CONTROL_DISCOVERY_FILE, removeOwnDiscovery, writeDiscovery } from './discovery-file.js'
import { controlError } from './errors.js'
import { httpStatusOf, parseJson, readBody, reasonOfError, sendError, sendJson } from './http.js'
import { listen, restrictSocket } from './listen.js'
import { createLoginCodes } from './login-codes.js'
import { watchNodes } from './node-watch.js'
import { authenticate, refuseRequest } from './request-guard.js'
import { createRouteTable } from './route-table.js'
import { addBuiltinRoutes, addDashboard } from './routes/index.js'
import { loadOrCreateToken } from './token.js'
import type { ControlRouteContext, ControlServer, ControlServerOptions } from './types.js'

export { CONTROL_DISCOVERY_FILE } from './discovery-file.js'
export { LOGIN_CODE_TTL_MS } from './login-codes.js'
export type {
  ControlKernel,
  ControlRouteContext,
  ControlRouteHandler,
  ControlRouteOptions,
  ControlServer,
  ControlServerOptions,
} from './types.js'

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1'])

/**
 * Starts the control API of a running node: JSON endpoints, an event stream (SSE) and Prometheus metrics,
 * bound to loopback (or a unix socket), every request authenticated by the data dir's token. See
 * docs/control-api.md. Requests never throw into the node: every failure is a coded JSON error.
 */
export async function startControlServer(opts: ControlServerOptions): Promise<ControlServer> {
  const { kernel, dataDir } = opts
  const logger = opts.logger ?? createLogger({ level: 'warn' })
  const host = opts.host ?? '127.0.0.1'
  if (!opts.socketPath && !LOOPBACK_HOSTS.has(host))
    throw meshError('MESH_ERR_INVALID_ARGUMENT', [
      'control API host',
      `${host} is not a loopback address; the control API binds 127.0.0.1 or ::1 only`,
    ])
  const port = opts.port ?? 0
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw meshError('MESH_ERR_INVALID_ARGUMENT', ['control API port', `${port} is not a port (0 to 65535)`])
  const maxBody = opts.maxBodyBytes ?? 65_536
  const token = await loadOrCreateToken(dataDir)
  const logins = createLoginCodes(logger)
  const routes = createRouteTable()
  const streams = new Set<ServerResponse>()
  const nodes = watchNodes(kernel)
  let url = ''

  addBuiltinRoutes(routes.add, {
    current: () => kernel.current,
    events: kernel.events,
    nodes,
    streams,
    logins,
    dashboard: opts.dashboard === true,
    url: () => url,
    logger,
  })

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    res.setHeader('x-content-type-options', 'nosniff')
    res.setHeader('content-security-policy', "default-src 'self'; img-src 'self' data:")
    let requestUrl: URL
    try {
      requestUrl = new URL(req.url ?? '/', 'http://localhost')
    } catch {
      sendError(res, controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['the request URL cannot be parsed']))
      return
    }
    const method = (req.method ?? 'GET').toUpperCase()
    const refused = refuseRequest(req, method)
    if (refused) {
      req.resume()
      sendError(res, refused)
      return
    }
    const { route, rest, allowed } = routes.match(method, requestUrl.pathname)
    let auth: ControlRouteContext['auth'] = 'none'
    if (!route?.public) {
      const checked = authenticate(req, token, logins)
      if (isMeshError(checked)) {
        req.resume()
        sendError(res, checked)
        return
      }
      auth = checked
    }
    if (!route) {
      req.resume()
      if (allowed.length > 0) {
        res.setHeader('allow', allowed.join(', '))
        sendJson(res, 405, {
          error: {
            code: 'MESH_ERR_CONTROL_NOT_FOUND',
            message: `${method} is not allowed on ${requestUrl.pathname}; use ${allowed.join(' or ')}.`,
          },
        })
      } else sendError(res, controlError('MESH_ERR_CONTROL_NOT_FOUND', [method, requestUrl.pathname]))
      return
    }
    let body: Promise<unknown> | undefined
    const ctx: ControlRouteContext = {
      auth,
      node: nodes.currentNode,
      json: () => {
        body ??= readBody(req, maxBody).then(parseJson)
        return body
      },
      rest,
    }
    const result = await route.handler(req, res, requestUrl, ctx)
    if (result !== undefined && !res.headersSent) sendJson(res, 200, result)
    else if (!res.headersSent && !res.writableEnded) {
      req.resume()
      res.writeHead(204).end()
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      req.resume()
      // the path only: nothing of a query reaches the logs
      const what = `${req.method} ${(req.url ?? '/').split('?')[0]}`
      if (isMeshError(err)) {
        if (httpStatusOf(err.code) >= 500) logger.warn(`control API ${what}: ${err.message}`)
        sendError(res, err)
        return
      }
      logger.error(`control API ${what} failed: ${reasonOfError(err)}`)
      sendError(res, controlError('MESH_ERR_CONTROL_FAILED', [`answer ${what}`, reasonOfError(err)]))
    })
  })
  server.headersTimeout = 10_000
  server.requestTimeout = 30_000
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
    else socket.destroy()
  })

  await listen(server, { socketPath: opts.socketPath, host, port }).catch((err) => {
    nodes.close()
    throw err
  })
  server.on('error', (err) => logger.error(`control API server: ${reasonOfError(err)}`))
  await restrictSocket(opts.socketPath)

  const address = server.address() as AddressInfo | string
  const boundPort = typeof address === 'string' ? undefined : address.port
  url = opts.socketPath
    ? 'http://localhost'
    : `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`

  const discoveryPath = join(dataDir, CONTROL_DISCOVERY_FILE)
  const discoveryFile = opts.discoveryFile !== false
  if (discoveryFile)
    await writeDiscovery(discoveryPath, {
      url,
      socketPath: opts.socketPath,
      peerId: kernel.current?.peerId.toString(),
      startedAt: nodes.serverStartedAt,
    })

  let closing: Promise<void> | undefined
  const control: ControlServer = {
    url,
    port: boundPort,
    socketPath: opts.socketPath,
    token,
    loginUrl: () => `${url}/#code=${logins.newCode()}`,
    addRoute: routes.add,
    close: () => {
      closing ??= (async () => {
        nodes.close()
        for (const res of streams) res.end()
        streams.clear()
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeIdleConnections()
          // event streams and slow clients must not hold the node's shutdown
          setTimeout(() => server.closeAllConnections(), 1000).unref()
        })
        if (discoveryFile) await removeOwnDiscovery(discoveryPath, url)
      })()
      return closing
    },
  }

  if (opts.dashboard) {
    try {
      await addDashboard(control)
    } catch (err) {
      await control.close()
      throw err
    }
  }
  logger.debug(`control API on ${url}${opts.socketPath ? ` (${opts.socketPath})` : ''}`)
  return control
}
