import { lstat, readFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { isIPv4 } from 'node:net'
import { isAbsolute, join, resolve } from 'node:path'
import { isErrorCode, MeshError, type MeshEvent, type PeerBan, processLiveness, selfIdentity } from 'meshkit'
import { CONTROL_DISCOVERY_FILE } from './discovery-file.js'
import { controlError } from './errors.js'
import type { GossipPublished } from './gossip-routes.js'
import type { ClustersSnapshot, ConnectionView, PeerView, StatusView, TopicView } from './readers.js'
import { CONTROL_TOKEN_FILE, readToken } from './token.js'

/** What `<dataDir>/control.json` holds while a control API runs. */
export interface ControlDiscovery {
  url: string
  socketPath?: string
  pid: number
  /** The server process's start time, boot id and PID namespace (Linux): tell it from a reused pid. */
  processStart?: string
  boot?: string
  pidns?: string
  peerId?: string
  startedAt: string
}

export interface ControlClientOptions {
  /** The node's data dir (where control.json and control.token are). @default '.mesh' */
  dataDir?: string
  /** Longest wait for one answer (not for `events()`), ms. @default 10000 */
  timeoutMs?: number
}

export interface TopicChange {
  topic: string
  joined: boolean
  /** False when nothing changed: the topic was joined already (join) or was not joined (leave). */
  changed: boolean
  topics: string[]
}

/** An event of `GET /api/events`. */
export interface ControlStreamEvent {
  event: string
  data: MeshEvent | StatusView | unknown
}

/** A client of a running node's control API, found through its data dir. */
export interface ControlClient {
  readonly dataDir: string
  /** The discovery file's content; throws MESH_ERR_CONTROL_NOT_RUNNING when no node serves. */
  discover(): Promise<ControlDiscovery>
  /** Any endpoint: a JSON answer, or a coded MeshError built from the server's error body. */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<T>
  status(): Promise<StatusView>
  peers(): Promise<PeerView[]>
  connections(): Promise<ConnectionView[]>
  topics(): Promise<TopicView[]>
  join(topic: string): Promise<TopicChange>
  leave(topic: string): Promise<TopicChange>
  clusters(): Promise<ClustersSnapshot>
  /** Bans in force (soonest end first). */
  bans(): Promise<PeerBan[]>
  /** Bans a peer (it is hung up on and kept out) for `durationMs`, or `security.banDuration`. */
  ban(peerId: string, options?: { reason?: string; durationMs?: number }): Promise<PeerBan>
  /** Lifts a peer's ban; `lifted` is false when it was not banned. */
  unban(peerId: string): Promise<{ peerId: string; lifted: boolean }>
  /** `report` is null before the first classification finished. */
  nat(): Promise<{ report: Record<string, unknown> | null }>
  /** The Prometheus text of `GET /metrics`. */
  metrics(): Promise<string>
  /** A new one-time dashboard login link (`<url>/#code=...`, valid for a minute); needs the data dir's token. */
  loginUrl(): Promise<{ url: string; expiresAt: number }>
  /** The event stream (first `hello` with the status); ends when `signal` aborts or the node stops. */
  events(options?: { signal?: AbortSignal }): AsyncIterable<ControlStreamEvent>
  /** The gossip plugin's topics and counters (`GET /api/gossip`). */
  gossip(): Promise<unknown>
  /** Publishes to a joined topic: `{ text }` is sent as UTF-8, `{ base64 }` as the bytes it encodes. */
  publish(topic: string, message: { text: string } | { base64: string }): Promise<GossipPublished>
  /**
   * The messages of a joined topic as they arrive: first `subscribed`, then one `gossip:message` each
   * (data: GossipStreamMessage), `unsubscribed` when the node leaves the topic or stops. Ends when
   * `signal` aborts or the stream ends.
   */
  subscribe(topic: string, options?: { signal?: AbortSignal }): AsyncIterable<ControlStreamEvent>
}

/** Whether `host` (a URL's hostname) is a loopback IP literal: 127.0.0.0/8 or [::1]. */
function isLoopbackHost(host: string): boolean {
  if (host === '[::1]') return true
  return isIPv4(host) && host.startsWith('127.')
}

/**
 * Checks that what control.json names is a control API on this machine before any token is sent to
 * it: http on a loopback IP literal, or a unix socket owned by this user (or root). A control.json
 * written by someone else (a data dir others could write to) must not send the token elsewhere.
 */
async function checkTarget(info: ControlDiscovery, file: string, dataDir: string): Promise<void> {
  const refuse = (target: string) => controlError('MESH_ERR_CONTROL_NOT_LOOPBACK', [file, target])
  if (info.socketPath !== undefined) {
    if (typeof info.socketPath !== 'string' || !isAbsolute(info.socketPath))
      throw refuse(`the socket path ${JSON.stringify(info.socketPath)?.slice(0, 100)}`)
    const s = await lstat(info.socketPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT')
        throw controlError('MESH_ERR_CONTROL_NOT_RUNNING', [dataDir, `no socket at ${info.socketPath}`])
      throw err
    })
    const uid = process.getuid?.()
    if (!s.isSocket()) throw refuse(`${info.socketPath}, which is not a unix socket`)
    if (uid !== undefined && s.uid !== uid && s.uid !== 0)
      throw refuse(`the unix socket ${info.socketPath}, which belongs to uid ${s.uid}, not to this user`)
    return
  }
  let url: URL
  try {
    url = new URL(info.url)
  } catch {
    throw refuse(JSON.stringify(info.url.slice(0, 100)))
  }
  if (url.protocol !== 'http:' || !isLoopbackHost(url.hostname) || url.username || url.password)
    throw refuse(url.origin === 'null' ? info.url.slice(0, 100) : url.origin)
}

/** A MeshError from a server's `{ error: { code, message, hint } }` body. */
function errorFromBody(status: number, text: string): MeshError {
  let body: { error?: { code?: string; message?: string; hint?: string } } | undefined
  try {
    body = JSON.parse(text) as typeof body
  } catch {
    body = undefined
  }
  const e = body?.error
  // a code the client knows (core's, the control API's, a plugin's loaded here) keeps its user flag
  if (e?.code && isErrorCode(e.code))
    return new MeshError(e.code, e.message ?? `HTTP ${status}`, { hint: e.hint })
  return controlError('MESH_ERR_CONTROL_FAILED', [
    'answer',
    `HTTP ${status}: ${e?.message ?? text.slice(0, 200)}`,
  ])
}

/**
 * A client for the control API of the node running in `dataDir` (what `mesh status` and friends use).
 * The discovery file and token are read on every request, so a restarted node is found again.
 */
export function createControlClient(options: ControlClientOptions = {}): ControlClient {
  const dataDir = resolve(options.dataDir ?? '.mesh')
  const timeoutMs = options.timeoutMs ?? 10_000

  const discover = async (): Promise<ControlDiscovery> => {
    let info: ControlDiscovery
    try {
      info = JSON.parse(await readFile(join(dataDir, CONTROL_DISCOVERY_FILE), 'utf8')) as ControlDiscovery
    } catch (err) {
      const why =
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? `no ${CONTROL_DISCOVERY_FILE} there`
          : `${CONTROL_DISCOVERY_FILE} cannot be read: ${(err as Error).message}`
      throw controlError('MESH_ERR_CONTROL_NOT_RUNNING', [dataDir, why])
    }
    if (typeof info?.url !== 'string')
      throw controlError('MESH_ERR_CONTROL_NOT_RUNNING', [dataDir, `${CONTROL_DISCOVERY_FILE} has no url`])
    // a dead node's control.json (SIGKILL) may name a port that another process took since
    const liveness = processLiveness({
      pid: info.pid,
      start: typeof info.processStart === 'string' ? info.processStart : undefined,
      boot: typeof info.boot === 'string' ? info.boot : undefined,
      pidns: typeof info.pidns === 'string' ? info.pidns : undefined,
      host: selfIdentity().host,
    })
    if (typeof info.pid !== 'number' || liveness === 'gone')
      throw controlError('MESH_ERR_CONTROL_NOT_RUNNING', [
        dataDir,
        `the node that wrote ${CONTROL_DISCOVERY_FILE} (pid ${info.pid}) is gone`,
      ])
    await checkTarget(info, join(dataDir, CONTROL_DISCOVERY_FILE), dataDir)
    return info
  }

  const token = async (): Promise<string> => {
    const t = await readToken(join(dataDir, CONTROL_TOKEN_FILE)).catch((err: Error) => {
      throw controlError('MESH_ERR_CONTROL_UNAUTHORIZED', [
        `${CONTROL_TOKEN_FILE} cannot be read (${err.message})`,
      ])
    })
    if (!t)
      throw controlError('MESH_ERR_CONTROL_UNAUTHORIZED', [`${dataDir} has no valid ${CONTROL_TOKEN_FILE}`])
    return t
  }

  /** Sends a request and resolves with the response (status checked by the caller). */
  const send = async (
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    timeout: number | undefined,
  ): Promise<IncomingMessage> => {
    const info = await discover()
    const bearer = await token()
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const url = new URL(path, info.url)
    return new Promise<IncomingMessage>((resolvePromise, reject) => {
      const req = httpRequest(
        {
          method,
          ...(info.socketPath
            ? { socketPath: info.socketPath, path: `${url.pathname}${url.search}`, host: 'localhost' }
            : {
                hostname: url.hostname.replace(/^\[|\]$/g, ''),
                port: url.port,
                path: `${url.pathname}${url.search}`,
              }),
          headers: {
            authorization: `Bearer ${bearer}`,
            accept: 'application/json',
            // a request that changes the node must say JSON, body or not (the server's CSRF check)
            ...(method === 'GET' || method === 'HEAD' ? {} : { 'content-type': 'application/json' }),
            ...(payload === undefined ? {} : { 'content-length': Buffer.byteLength(payload) }),
          },
          signal,
          timeout,
        },
        resolvePromise,
      )
      req.on('timeout', () =>
        req.destroy(
          controlError('MESH_ERR_CONTROL_FAILED', [`answer ${method} ${path}`, `no answer in ${timeout} ms`]),
        ),
      )
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT')
          reject(controlError('MESH_ERR_CONTROL_NOT_RUNNING', [dataDir, `nothing answers at ${info.url}`]))
        else reject(err)
      })
      req.end(payload)
    })
  }

  const readAll = async (res: IncomingMessage): Promise<string> => {
    res.setEncoding('utf8')
    let text = ''
    for await (const chunk of res) text += chunk as string
    return text
  }

  const request = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await send(method, path, body, undefined, timeoutMs)
    const text = await readAll(res)
    const status = res.statusCode ?? 0
    if (status < 200 || status >= 300) throw errorFromBody(status, text)
    if (status === 204 || text.length === 0) return undefined as T
    if (!(res.headers['content-type'] ?? '').includes('json')) return text as T
    return JSON.parse(text) as T
  }

  /** The Server-Sent Events of `path`, parsed. */
  async function* eventStream(
    path: string,
    o: { signal?: AbortSignal } = {},
  ): AsyncIterable<ControlStreamEvent> {
    const res = await send('GET', path, undefined, o.signal, undefined)
    if ((res.statusCode ?? 0) !== 200) throw errorFromBody(res.statusCode ?? 0, await readAll(res))
    res.setEncoding('utf8')
    let buffer = ''
    try {
      for await (const chunk of res) {
        buffer += chunk as string
        let end = buffer.indexOf('\n\n')
        while (end >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          end = buffer.indexOf('\n\n')
          let event = 'message'
          const data: string[] = []
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7)
            else if (line.startsWith('data: ')) data.push(line.slice(6))
          }
          if (data.length === 0) continue
          yield { event, data: JSON.parse(data.join('\n')) as unknown }
        }
      }
    } catch (err) {
      if (o.signal?.aborted) return
      throw err
    } finally {
      res.destroy()
    }
  }

  return {
    dataDir,
    discover,
    request,
    status: () => request<StatusView>('GET', '/api/status'),
    peers: () => request<PeerView[]>('GET', '/api/peers'),
    connections: () => request<ConnectionView[]>('GET', '/api/connections'),
    topics: () => request<TopicView[]>('GET', '/api/topics'),
    join: (topic) => request<TopicChange>('POST', '/api/topics/join', { topic }),
    leave: (topic) => request<TopicChange>('POST', '/api/topics/leave', { topic }),
    clusters: () => request<ClustersSnapshot>('GET', '/api/clusters'),
    bans: () => request<PeerBan[]>('GET', '/api/bans'),
    ban: (peerId, o = {}) => request<PeerBan>('POST', '/api/bans', { peerId, ...o }),
    unban: (peerId) => request<{ peerId: string; lifted: boolean }>('POST', '/api/bans/lift', { peerId }),
    nat: () => request<{ report: Record<string, unknown> | null }>('GET', '/api/nat'),
    metrics: () => request<string>('GET', '/metrics'),
    loginUrl: () => request<{ url: string; expiresAt: number }>('POST', '/api/login-code', {}),
    events: (o) => eventStream('/api/events', o),
    gossip: () => request<unknown>('GET', '/api/gossip'),
    publish: (topic, message) =>
      request<GossipPublished>('POST', '/api/gossip/publish', { topic, ...message }),
    subscribe: (topic, o) => eventStream(`/api/gossip/subscribe?topic=${encodeURIComponent(topic)}`, o),
  }
}
