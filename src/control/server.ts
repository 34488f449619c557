import { createHash, randomBytes } from 'node:crypto'
import { chmod, lstat, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { type AddressInfo, connect } from 'node:net'
import { join } from 'node:path'
import {
  type ConnectionMethod,
  createLogger,
  type ErrorCode,
  isMeshError,
  type Logger,
  MeshError,
  type MeshEvent,
  type MeshEventBus,
  type MeshNode,
  meshError,
} from 'meshkit'
import { selfIdentity } from '../core/process-identity.js'
import { sweepTempFiles, tempFileFor } from '../core/temp-files.js'
import { addGossipRoutes } from './gossip-routes.js'
import {
  bansOf,
  clusteringOf,
  clustersSnapshot,
  connectionsOf,
  discoveryOf,
  metricsOf,
  natOf,
  peersOf,
  statusOf,
  topicsOf,
} from './readers.js'
import { loadOrCreateToken, tokenMatches } from './token.js'

/** A short reason text for any thrown value. */
export function reasonOfError(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The discovery file of a running control API in the data dir: `{ url, pid, peerId, startedAt }`. */
export const CONTROL_DISCOVERY_FILE = 'control.json'

/** How long a dashboard login code (`/#code=...`, see {@link ControlServer.loginUrl}) can be used, ms. */
export const LOGIN_CODE_TTL_MS = 60_000
/** Login codes waiting to be used, and dashboard sessions, kept at most (the oldest go first). */
const MAX_LOGIN_CODES = 32
const MAX_SESSIONS = 64
/** Methods that change the node: they need a same-origin (or non-browser) request with a JSON body. */
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

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

interface Route {
  method: string
  path: string
  prefix: boolean
  handler: ControlRouteHandler
  public: boolean
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1'])
const TOPIC_MAX = 128
/** SSE clients that fall this far behind are dropped rather than buffered without bound. */
const SSE_MAX_BUFFER = 1 << 20
const SSE_KEEPALIVE_MS = 15_000

/** HTTP status of a coded error. */
function httpStatusOf(code: ErrorCode | string): number {
  switch (code) {
    case 'MESH_ERR_CONTROL_UNAUTHORIZED':
      return 401
    case 'MESH_ERR_CONTROL_FORBIDDEN':
      return 403
    case 'MESH_ERR_CONTROL_CONTENT_TYPE':
      return 415
    case 'MESH_ERR_CONTROL_NOT_FOUND':
    case 'MESH_ERR_CONTROL_NO_PROVIDER':
      return 404
    case 'MESH_ERR_CONTROL_TOO_LARGE':
      return 413
    case 'MESH_ERR_CONTROL_NO_NODE':
      return 503
    case 'MESH_ERR_CONTROL_BAD_REQUEST':
    case 'MESH_ERR_INVALID_ARGUMENT':
      return 400
    default:
      return 500
  }
}

/** JSON text of any value: bigint as string, objects with toString-only identity (PeerId) as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString()
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64')
    if (v instanceof Map) return Object.fromEntries(v)
    if (v instanceof Set) return [...v]
    if (v instanceof Error) return { message: v.message }
    return v
  })
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = toJson(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  })
  res.end(text)
}

function sendError(res: ServerResponse, err: MeshError): void {
  sendJson(res, httpStatusOf(err.code), { error: { code: err.code, message: err.message, hint: err.hint } })
}

/**
 * The credential a request presents: `Authorization: Bearer <token or session>` only. Never a URL
 * query (it would land in browser history, logs and Referer headers) and never a cookie (a browser
 * sends cookies for 127.0.0.1 to every port of it: to other local servers, and with cross-site requests).
 */
function presentedToken(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization
  if (typeof auth !== 'string') return undefined
  return /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] ?? ''
}

const digest = (secret: string) => createHash('sha256').update(secret).digest('hex')

/**
 * Why a state-changing request must be refused as a possible cross-site request, or undefined. A
 * browser marks what a page sends: `Origin` (the page's origin; a page on another port of 127.0.0.1 is
 * another origin) and `Sec-Fetch-Site`; a JSON content type cannot be sent cross-origin without a CORS
 * preflight, which this server never grants. Clients that are not browsers send neither header.
 */
function crossSiteReason(req: IncomingMessage): MeshError | undefined {
  const origin = req.headers.origin
  const own = `http://${req.headers.host ?? ''}`
  if (origin !== undefined && origin !== own)
    return meshError('MESH_ERR_CONTROL_FORBIDDEN', [`it comes from ${origin.slice(0, 100)}, not from ${own}`])
  const site = req.headers['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    return meshError('MESH_ERR_CONTROL_FORBIDDEN', [
      `the browser marks it as sent from a ${String(site).slice(0, 20)} page`,
    ])
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
  if (type !== 'application/json')
    return meshError('MESH_ERR_CONTROL_CONTENT_TYPE', [type ? type.slice(0, 60) : 'no content type'])
  return undefined
}

/** Reads a body up to `limit` bytes; a longer one throws MESH_ERR_CONTROL_TOO_LARGE. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      reject(meshError('MESH_ERR_CONTROL_TOO_LARGE', [limit]))
      req.resume()
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (chunk: Buffer) => {
      if (failed) return
      size += chunk.length
      if (size > limit) {
        failed = true
        reject(meshError('MESH_ERR_CONTROL_TOO_LARGE', [limit]))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks))
    })
    req.on('error', (err) => {
      if (!failed) reject(err)
      failed = true
    })
  })
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0)
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['the request has no body; send JSON'])
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (err) {
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', [`the body is not valid JSON (${reasonOfError(err)})`])
  }
}

/** `{ topic }` from a join/leave body, checked. */
function topicFrom(body: unknown): string {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['expected a JSON object {"topic": "<name>"}'])
  const topic = (body as { topic?: unknown }).topic
  if (topic === undefined) throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['the body has no "topic" field'])
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > TOPIC_MAX)
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', [
      `"topic" must be a string of 1 to ${TOPIC_MAX} characters, got ${JSON.stringify(topic)?.slice(0, 40)}`,
    ])
  return topic
}

/** `{ "peerId": "...", "reason"?: "...", "durationMs"?: n }` of a ban request, checked. */
function banFrom(body: unknown): { peerId: string; reason: string; durationMs?: number } {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['expected a JSON object {"peerId": "<peer id>"}'])
  const { peerId, reason, durationMs } = body as Record<string, unknown>
  if (typeof peerId !== 'string' || !/^[1-9A-HJ-NP-Za-km-z]{40,100}$/.test(peerId))
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['"peerId" must be a peer id (base58, e.g. 12D3KooW...)'])
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 200))
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['"reason" must be a string of at most 200 characters'])
  if (
    durationMs !== undefined &&
    (typeof durationMs !== 'number' ||
      !Number.isInteger(durationMs) ||
      durationMs < 1000 ||
      durationMs > 86_400_000)
  )
    throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', [
      '"durationMs" must be a whole number from 1000 to 86400000',
    ])
  return { peerId, reason: reason ?? 'banned by the operator', durationMs: durationMs as number | undefined }
}

function noProvider(capability: string, hint: string): MeshError {
  return meshError('MESH_ERR_CONTROL_NO_PROVIDER', [capability], { hint })
}

const DISCOVERY_HINT =
  "Add a plugin providing the 'discovery' slot to `plugins` (e.g. kadTopics() from 'meshkit/plugins')."
const CLUSTERING_HINT =
  "Add a plugin providing the 'clustering' slot to `plugins` (e.g. jaccardClusters() from 'meshkit/plugins')."
const NAT_HINT =
  "Add a plugin providing 'nat-classification' to `plugins` (e.g. natClassifier({ servers: [...] }) from 'meshkit/plugins')."
const METRICS_HINT =
  "Add metrics() from 'meshkit/plugins' (or another plugin providing 'metrics') to `plugins` to serve /metrics."

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
  /** Login codes by their digest: when each expires, and the session it opened once used. */
  const codes = new Map<string, { expires: number; session?: string }>()
  /** Dashboard sessions by their digest (they end with the server). */
  const sessions = new Set<string>()
  const pruneCodes = (now: number) => {
    for (const [key, entry] of codes) if (entry.expires <= now) codes.delete(key)
  }
  const newLoginCode = (): string => {
    const now = Date.now()
    pruneCodes(now)
    while (codes.size >= MAX_LOGIN_CODES) codes.delete(codes.keys().next().value as string)
    const code = randomBytes(24).toString('base64url')
    codes.set(digest(code), { expires: now + LOGIN_CODE_TTL_MS })
    return code
  }
  /** Trades a login code for a new session; a code is good once, and a second use ends that session. */
  const login = (code: string): string => {
    const now = Date.now()
    pruneCodes(now)
    const key = digest(code)
    const entry = codes.get(key)
    if (!entry)
      throw meshError('MESH_ERR_CONTROL_UNAUTHORIZED', ['the login code is unknown or has expired'], {
        hint: "Login links work once, within a minute: run `mesh dashboard` (with the node's --data-dir) for a new one.",
      })
    if (entry.session !== undefined) {
      sessions.delete(entry.session)
      logger.warn('a dashboard login link was used twice: the session it had opened is ended')
      throw meshError(
        'MESH_ERR_CONTROL_UNAUTHORIZED',
        [
          'this login link was used already; the session it opened has been ended, in case someone else used it',
        ],
        {
          hint: "Run `mesh dashboard` (with the node's --data-dir) for a new link, and open it only once.",
        },
      )
    }
    const session = randomBytes(32).toString('base64url')
    while (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.values().next().value as string)
    entry.session = digest(session)
    sessions.add(entry.session)
    return session
  }

  const routes: Route[] = []
  const streams = new Set<ServerResponse>()
  /** The last `connection:method` event per peer, from whatever plugin emits them. */
  const methods = new Map<string, { method: ConnectionMethod; transport?: string }>()
  /** When each node became started (node:started on the bus), keyed by the node object. */
  const startedAt = new WeakMap<MeshNode, number>()
  let lastStartedEvent: number | undefined
  const offs: Array<() => void> = []
  offs.push(
    kernel.events.on('connection:method', (e) => {
      if (typeof e.peerId !== 'string') return
      const method = e.method
      if (method !== 'direct' && method !== 'hole-punched' && method !== 'relayed') return
      methods.set(e.peerId, { method, transport: typeof e.transport === 'string' ? e.transport : undefined })
    }),
    kernel.events.on('peer:disconnect', (e) => {
      if (typeof e.peerId === 'string') methods.delete(e.peerId)
    }),
    kernel.events.on('node:started', () => {
      lastStartedEvent = Date.now()
    }),
  )
  const serverStartedAt = Date.now()

  const currentNode = (): MeshNode => {
    const node = kernel.current
    if (node?.state !== 'started') throw meshError('MESH_ERR_CONTROL_NO_NODE', [])
    if (!startedAt.has(node)) startedAt.set(node, lastStartedEvent ?? serverStartedAt)
    return node
  }
  const startedAtOf = (node: MeshNode) => startedAt.get(node) ?? serverStartedAt

  const addRoute: ControlServer['addRoute'] = (method, path, handler, options = {}) => {
    const m = method.toUpperCase()
    const prefix = path.endsWith('/*')
    const p = prefix ? path.slice(0, -2) : path
    if (!p.startsWith('/') && !(prefix && p === ''))
      throw meshError('MESH_ERR_INVALID_ARGUMENT', ['route path', `${path} must start with /`])
    if (routes.some((r) => r.method === m && r.path === p && r.prefix === prefix))
      throw meshError('MESH_ERR_INVALID_ARGUMENT', ['route', `${m} ${path} is already registered`])
    routes.push({ method: m, path: p, prefix, handler, public: options.public === true })
  }

  const match = (method: string, path: string): { route?: Route; rest: string; allowed: string[] } => {
    const fits = (r: Route) => (r.prefix ? path === r.path || path.startsWith(`${r.path}/`) : path === r.path)
    const candidates = routes.filter(fits)
    // exact routes win over prefixes, longer prefixes over shorter ones
    candidates.sort((a, b) => Number(a.prefix) - Number(b.prefix) || b.path.length - a.path.length)
    const route =
      candidates.find((r) => r.method === method) ??
      (method === 'HEAD' ? candidates.find((r) => r.method === 'GET') : undefined)
    const rest = route?.prefix ? path.slice(route.path.length).replace(/^\//, '') : ''
    return { route, rest, allowed: [...new Set(candidates.map((r) => r.method))] }
  }

  // ---- the endpoints

  const json = (fn: (node: MeshNode, ctx: ControlRouteContext) => unknown): ControlRouteHandler => {
    return (_req, _res, _url, ctx) => fn(ctx.node(), ctx)
  }
  addRoute(
    'GET',
    '/api/status',
    json((node) => statusOf(node, startedAtOf(node))),
  )
  addRoute(
    'GET',
    '/api/peers',
    json((node) => peersOf(node)),
  )
  addRoute(
    'GET',
    '/api/connections',
    json((node) => connectionsOf(node, methods)),
  )
  addRoute(
    'GET',
    '/api/topics',
    json((node) => {
      const discovery = discoveryOf(node)
      if (!discovery) throw noProvider('discovery', DISCOVERY_HINT)
      return topicsOf(discovery)
    }),
  )
  const topicChange = (action: 'join' | 'leave') =>
    json(async (node, ctx) => {
      const topic = topicFrom(await ctx.json())
      const discovery = discoveryOf(node)
      if (!discovery) throw noProvider('discovery', DISCOVERY_HINT)
      const before = discovery.topics().includes(topic)
      try {
        await discovery[action](topic)
      } catch (err) {
        if (err instanceof TypeError) throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', [reasonOfError(err)])
        throw meshError('MESH_ERR_CONTROL_FAILED', [`${action} topic ${topic}`, reasonOfError(err)], {
          cause: err,
        })
      }
      return {
        topic,
        joined: action === 'join',
        changed: action === 'join' ? !before : before,
        topics: [...discovery.topics()].sort(),
      }
    })
  addRoute('POST', '/api/topics/join', topicChange('join'))
  addRoute('POST', '/api/topics/leave', topicChange('leave'))
  addRoute(
    'GET',
    '/api/bans',
    json((node) => bansOf(node)),
  )
  addRoute(
    'POST',
    '/api/bans',
    json(async (node, ctx) => {
      const { peerId, reason, durationMs } = banFrom(await ctx.json())
      if (peerId === node.peerId.toString())
        throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['a node cannot ban itself'])
      return node.reputation.ban(peerId, reason, durationMs)
    }),
  )
  addRoute(
    'POST',
    '/api/bans/lift',
    json(async (node, ctx) => {
      const { peerId } = banFrom(await ctx.json())
      return { peerId, lifted: node.reputation.unban(peerId) }
    }),
  )
  addRoute(
    'GET',
    '/api/clusters',
    json((node) => {
      const clustering = clusteringOf(node)
      if (!clustering) throw noProvider('clustering', CLUSTERING_HINT)
      return clustersSnapshot(clustering)
    }),
  )
  addRoute(
    'GET',
    '/api/nat',
    json((node) => {
      const nat = natOf(node)
      if (!nat) throw noProvider('nat-classification', NAT_HINT)
      return { report: nat.report() ?? null }
    }),
  )
  addRoute('GET', '/api/events', (_req, res, _url, ctx) => {
    const node = ctx.node()
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    })
    const send = (event: string, data: unknown) => {
      if (res.writableEnded) return
      if (res.writableLength > SSE_MAX_BUFFER) {
        logger.warn('a control API event stream fell behind; closing it')
        res.end()
        return
      }
      res.write(`event: ${event.replace(/[\r\n]/g, ' ')}\ndata: ${toJson(data)}\n\n`)
    }
    send('hello', statusOf(node, startedAtOf(node)))
    const off = kernel.events.on('*', (e: MeshEvent) => {
      try {
        send(e.event, { ...e, time: Date.now() })
      } catch (err) {
        logger.debug(`an event could not be sent on the event stream: ${reasonOfError(err)}`)
      }
    })
    const keepalive = setInterval(() => {
      if (!res.writableEnded) res.write(': keepalive\n\n')
    }, SSE_KEEPALIVE_MS)
    keepalive.unref()
    streams.add(res)
    const cleanup = () => {
      off()
      clearInterval(keepalive)
      streams.delete(res)
    }
    // the response closes when the client goes away or the server ends the stream
    res.on('close', cleanup)
  })
  addGossipRoutes(addRoute, { events: kernel.events, streams, logger })
  addRoute('GET', '/metrics', async (_req, res, _url, ctx) => {
    const metrics = metricsOf(ctx.node())
    if (!metrics) throw noProvider('metrics', METRICS_HINT)
    let text: string
    try {
      text = await metrics.render()
    } catch (err) {
      throw meshError('MESH_ERR_CONTROL_FAILED', ['render the metrics', reasonOfError(err)], { cause: err })
    }
    res.writeHead(200, {
      'content-type': metrics.contentType || 'text/plain; version=0.0.4; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
    })
    res.end(text)
  })

  // liveness for process and container supervisors: no credential, and nothing but whether a node runs
  addRoute(
    'GET',
    '/healthz',
    (_req, res) => {
      const up = kernel.current?.state === 'started'
      res.setHeader('cache-control', 'no-store')
      sendJson(res, up ? 200 : 503, { status: up ? 'ok' : 'unavailable' })
    },
    { public: true },
  )

  // the dashboard's login: a one-time code (from loginUrl(), i.e. from the holder of the token) for a
  // session; public, since the page has no credential yet (the code is one)
  addRoute(
    'POST',
    '/api/login',
    async (_req, _res, _url, ctx) => {
      const body = await ctx.json()
      const code = (body as { code?: unknown } | null)?.code
      if (typeof code !== 'string' || code.length === 0 || code.length > 100)
        throw meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['expected a JSON object {"code": "<login code>"}'])
      return { session: login(code) }
    },
    { public: true },
  )
  addRoute('POST', '/api/login-code', (_req, _res, _url, ctx) => {
    // a session may not mint codes: only whoever can read the data dir's token
    if (!opts.dashboard)
      throw noProvider('dashboard', 'Start the node with --dashboard (`mesh dev` always serves it).')
    if (ctx.auth !== 'token')
      throw meshError('MESH_ERR_CONTROL_UNAUTHORIZED', [
        "login codes are given for the data dir's token only",
      ])
    const code = newLoginCode()
    return { url: `${url}/#code=${code}`, code, expiresAt: Date.now() + LOGIN_CODE_TTL_MS }
  })

  // ---- the server

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    res.setHeader('x-content-type-options', 'nosniff')
    res.setHeader('content-security-policy', "default-src 'self'; img-src 'self' data:")
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://localhost')
    } catch {
      sendError(res, meshError('MESH_ERR_CONTROL_BAD_REQUEST', ['the request URL cannot be parsed']))
      return
    }
    // a page on another origin that resolves to loopback (DNS rebinding) has a foreign Host header
    const hostHeader = (req.headers.host ?? '').replace(/:\d+$/, '')
    if (!['localhost', '127.0.0.1', '[::1]', ''].includes(hostHeader)) {
      req.resume()
      sendError(
        res,
        meshError('MESH_ERR_CONTROL_FORBIDDEN', [
          `it is addressed to ${hostHeader.slice(0, 100)}, not to localhost`,
        ]),
      )
      return
    }
    const method = (req.method ?? 'GET').toUpperCase()
    if (STATE_CHANGING.has(method)) {
      const refused = crossSiteReason(req)
      if (refused) {
        req.resume()
        sendError(res, refused)
        return
      }
    }
    const { route, rest, allowed } = match(method, url.pathname)
    let auth: ControlRouteContext['auth'] = 'none'
    if (!route?.public) {
      const presented = presentedToken(req)
      if (tokenMatches(token, presented)) auth = 'token'
      else if (presented && sessions.has(digest(presented))) auth = 'session'
      else {
        req.resume()
        sendError(
          res,
          meshError('MESH_ERR_CONTROL_UNAUTHORIZED', [
            presented === undefined ? 'no token was given' : 'the token is wrong',
          ]),
        )
        return
      }
    }
    if (!route) {
      req.resume()
      if (allowed.length > 0) {
        res.setHeader('allow', allowed.join(', '))
        sendJson(res, 405, {
          error: {
            code: 'MESH_ERR_CONTROL_NOT_FOUND',
            message: `${method} is not allowed on ${url.pathname}; use ${allowed.join(' or ')}.`,
          },
        })
      } else sendError(res, meshError('MESH_ERR_CONTROL_NOT_FOUND', [method, url.pathname]))
      return
    }
    let body: Promise<unknown> | undefined
    const ctx: ControlRouteContext = {
      auth,
      node: currentNode,
      json: () => {
        body ??= readBody(req, maxBody).then(parseJson)
        return body
      },
      rest,
    }
    const result = await route.handler(req, res, url, ctx)
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
      sendError(res, meshError('MESH_ERR_CONTROL_FAILED', [`answer ${what}`, reasonOfError(err)]))
    })
  })
  server.headersTimeout = 10_000
  server.requestTimeout = 30_000
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n')
    else socket.destroy()
  })

  if (opts.socketPath) await removeStaleSocket(opts.socketPath)
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening)
      // a taken port or a bad socket path is the user's to fix (exit 2 in the CLI)
      reject(
        new MeshError(
          'MESH_ERR_CONTROL_FAILED',
          `The control API could not listen on ${opts.socketPath ?? `${host}:${port}`}: ${err.code ?? err.message}`,
          {
            cause: err,
            userError: true,
            hint: opts.socketPath
              ? 'Pass a socket path in a writable directory, with no other server on it.'
              : 'Pick another --control-port (0 picks a free one), stop the process that holds it, or pass --no-control.',
          },
        ),
      )
    }
    const onListening = () => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError)
    server.once('listening', onListening)
    if (opts.socketPath) {
      // the socket file is made while binding (synchronously, in listen()): with umask 0177 it is 0600
      // from the start, not only after the chmod below
      let umask: number | undefined
      try {
        umask = process.umask(0o177)
      } catch {
        // worker threads cannot change the umask: the chmod below still applies
      }
      try {
        server.listen(opts.socketPath)
      } finally {
        if (umask !== undefined) process.umask(umask)
      }
    } else server.listen(port, host)
  }).catch((err) => {
    for (const off of offs) off()
    throw err
  })
  server.on('error', (err) => logger.error(`control API server: ${reasonOfError(err)}`))
  if (opts.socketPath) await chmod(opts.socketPath, 0o600)

  const address = server.address() as AddressInfo | string
  const boundPort = typeof address === 'string' ? undefined : address.port
  const url = opts.socketPath
    ? 'http://localhost'
    : `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`

  const discoveryPath = join(dataDir, CONTROL_DISCOVERY_FILE)
  const writeDiscovery = opts.discoveryFile !== false
  if (writeDiscovery) {
    const me = selfIdentity()
    const info = {
      url,
      socketPath: opts.socketPath,
      pid: process.pid,
      processStart: me.start,
      boot: me.boot,
      pidns: me.pidns,
      peerId: kernel.current?.peerId.toString(),
      startedAt: new Date(serverStartedAt).toISOString(),
    }
    await sweepTempFiles(discoveryPath)
    const temp = tempFileFor(discoveryPath)
    await writeFile(temp, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
    await rename(temp, discoveryPath)
  }

  let closing: Promise<void> | undefined
  const control: ControlServer = {
    url,
    port: boundPort,
    socketPath: opts.socketPath,
    token,
    loginUrl: () => `${url}/#code=${newLoginCode()}`,
    addRoute,
    close: () => {
      closing ??= (async () => {
        for (const off of offs) off()
        for (const res of streams) res.end()
        streams.clear()
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          server.closeIdleConnections()
          // event streams and slow clients must not hold the node's shutdown
          setTimeout(() => server.closeAllConnections(), 1000).unref()
        })
        if (writeDiscovery) await removeOwnDiscovery(discoveryPath, url)
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

/** Removes a unix socket file that nothing listens on any more (left by a process that crashed). */
async function removeStaleSocket(path: string): Promise<void> {
  const info = await lstat(path).catch(() => undefined)
  if (!info?.isSocket()) return
  const alive = await new Promise<boolean>((resolve) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
  if (!alive) await rm(path, { force: true })
}

/** Removes control.json unless another server has replaced it meanwhile. */
async function removeOwnDiscovery(file: string, url: string): Promise<void> {
  try {
    const info = JSON.parse(await readFile(file, 'utf8')) as { url?: string; pid?: number }
    if (info.url !== url || info.pid !== process.pid) return
  } catch {
    // missing or unreadable: nothing of ours to remove
    return
  }
  await rm(file, { force: true })
}

/** The dashboard's routes (src/dashboard): `dashboardRoutes(server)` adds them with `server.addRoute`. */
async function addDashboard(server: ControlServer): Promise<void> {
  // resolved at run time: the dashboard is an optional part of the CLI package
  const specifier = '../dashboard/index.js'
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
