/**
 * The control API (src/control) against real nodes on loopback: token auth, binding, every endpoint,
 * the event stream, bad input, node swaps, the discovery file and the client.
 */
import { spawnSync } from 'node:child_process'
import { chown, stat, writeFile } from 'node:fs/promises'
import { createServer, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { expect } from 'chai'
import { createLogger, isMeshError, type MeshError, type MeshPlugin, resolveConfig } from 'meshkit'
import {
  holePunch,
  identify,
  jaccardClusters,
  kadTopics,
  metrics,
  noise,
  ping,
  relayServer,
  tcp,
  yamux,
} from 'meshkit/plugins'
import type { HolePunchApi } from '../plugins/hole-punch/index.js'
import {
  CONTROL_DISCOVERY_FILE,
  CONTROL_TOKEN_FILE,
  type ControlServer,
  createControlClient,
  loadOrCreateToken,
  startControlServer,
} from '../src/control/index.js'
import { selfIdentity } from '../src/core/process-identity.js'
import { LoopbackNodes, TEST_ENV, type TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

/** A coded error body of the control API. */
interface ErrorBody {
  error: { code: string; message: string; hint?: string }
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: <T = ErrorBody>() => T
}

/** A raw HTTP request (no client library), to see exactly what the server answers. */
function http(
  url: string,
  options: { method?: string; token?: string; body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? 'GET',
        headers: {
          ...(options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }),
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...options.headers,
        },
        timeout: 10_000,
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => {
          text += c
        })
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json: <T>() => JSON.parse(text) as T,
          }),
        )
      },
    )
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url}`)))
    req.on('error', reject)
    req.end(options.body)
  })
}

const basePlugins = (): MeshPlugin[] => [
  identify(),
  ping(),
  noise(),
  yamux(),
  tcp(),
  kadTopics({ addressScope: 'all', records: 'memory' }),
]

describe('control API', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  let a: TestNode
  let server: ControlServer | undefined
  const servers: ControlServer[] = []

  const start = async (node: TestNode, extra: Partial<Parameters<typeof startControlServer>[0]> = {}) => {
    const s = await startControlServer({ kernel: node.kernel, dataDir: node.node.config.dataDir, ...extra })
    servers.push(s)
    return s
  }

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-control-'))
    nodes = new LoopbackNodes(() => dir, basePlugins)
    a = await nodes.start('a')
    server = await start(a)
  })
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close()
    server = undefined
    await nodes.closeAll()
    await cleanup()
  })

  it('creates control.token once (mode 0600) and reuses it', async () => {
    const file = join(a.node.config.dataDir, CONTROL_TOKEN_FILE)
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    expect(server!.token).to.match(/^[A-Za-z0-9_-]{43}$/)
    await server!.close()
    const again = await start(a)
    expect(again.token).to.equal(server!.token)
    expect(await loadOrCreateToken(a.node.config.dataDir)).to.equal(server!.token)
  })

  it('binds 127.0.0.1 only, and refuses a non-loopback host', async () => {
    expect(server!.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(server!.port).to.be.greaterThan(0)
    let err: unknown
    try {
      await start(a, { host: '0.0.0.0' })
    } catch (e) {
      err = e
    }
    expect(isMeshError(err, 'MESH_ERR_INVALID_ARGUMENT'), String(err)).to.equal(true)
  })

  it('answers 401 without a token and with a wrong one, 200 with the right one', async () => {
    const none = await http(`${server!.url}/api/status`)
    expect(none.status).to.equal(401)
    expect(none.json().error.code).to.equal('MESH_ERR_CONTROL_UNAUTHORIZED')
    const wrong = await http(`${server!.url}/api/status`, { token: 'x'.repeat(43) })
    expect(wrong.status).to.equal(401)
    const short = await http(`${server!.url}/api/status`, { token: 'short' })
    expect(short.status).to.equal(401)
    const unknownPath = await http(`${server!.url}/nope`)
    expect(unknownPath.status, 'no endpoint list without a token').to.equal(401)
    const ok = await http(`${server!.url}/api/status`, { token: server!.token })
    expect(ok.status).to.equal(200)
    // never from a URL (history, logs, Referer) nor from a cookie (sent to every port of 127.0.0.1)
    const query = await http(`${server!.url}/api/status?token=${server!.token}`)
    expect(query.status).to.equal(401)
    expect(query.headers['set-cookie']).to.equal(undefined)
    const cookie = await http(`${server!.url}/api/status`, {
      headers: { cookie: `mesh_control_token=${server!.token}` },
    })
    expect(cookie.status).to.equal(401)
    const foreignHost = await http(`${server!.url}/api/status`, {
      token: server!.token,
      headers: { host: 'evil.example:80' },
    })
    expect(foreignHost.status).to.equal(403)
    expect(foreignHost.json().error.code).to.equal('MESH_ERR_CONTROL_FORBIDDEN')
  })

  it('status, peers and connections reflect a second node connecting', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const before = await client.status()
    expect(before.peerId).to.equal(a.peerId)
    expect(before.state).to.equal('started')
    expect(before.peers).to.equal(0)
    expect(before.plugins.map((p) => p.name)).to.include('kad-topics')
    expect(before.plugins.find((p) => p.name === 'kad-topics')!.provides).to.include('discovery')
    expect(before.addresses.some((x) => x.startsWith('/ip4/127.0.0.1/tcp/'))).to.equal(true)
    expect(before.nat).to.equal(null)
    expect(await client.peers()).to.deep.equal([])

    const b = await nodes.start('b')
    await b.node.libp2p.dial(a.node.libp2p.getMultiaddrs()[0])
    await waitFor(async () => (await client.status()).peers === 1, { what: 'status.peers = 1' })
    const peers = await client.peers()
    expect(peers).to.have.length(1)
    expect(peers[0].peerId).to.equal(b.peerId)
    expect(peers[0].connections).to.be.greaterThan(0)
    expect(peers[0].addresses[0]).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\//)
    const connections = await client.connections()
    const toB = connections.filter((c) => c.peerId === b.peerId)
    expect(toB.length).to.be.greaterThan(0)
    expect(toB[0]).to.include({ direction: 'inbound', transport: 'tcp', method: 'direct' })
    expect(toB[0].connectionId).to.be.a('string')
    expect(toB[0].openedAt).to.be.within(Date.now() - 60_000, Date.now())
    const status = await client.status()
    expect(status.connections).to.equal(connections.length)
    expect(status.uptimeMs).to.be.at.least(0)
  })

  it('GET /healthz needs no token and says only whether the node runs (200 / 503)', async () => {
    const url = `${server!.url}/healthz`
    const up = await http(url)
    expect(up.status).to.equal(200)
    expect(up.json()).to.deep.equal({ status: 'ok' })
    expect(up.headers['cache-control']).to.equal('no-store')
    await a.node.stop()
    const down = await http(url)
    expect(down.status).to.equal(503)
    expect(down.json()).to.deep.equal({ status: 'unavailable' })
    const other = await http(`${server!.url}/api/status`)
    expect(other.status, 'the rest still needs the token').to.equal(401)
  })

  it('bans: a peer banned by the node or the operator is listed, hung up on, and lifted', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const b = await nodes.start('b')
    await b.node.libp2p.dial(a.node.libp2p.getMultiaddrs()[0])
    await waitFor(async () => (await client.peers()).length === 1, { what: 'b connected' })
    a.node.reputation.penalize(b.peerId, 'malformed', 'test')
    expect((await client.peers())[0].penalty).to.equal(25)
    expect(await client.bans()).to.deep.equal([])

    const ban = await client.ban(b.peerId, { reason: 'operator says so', durationMs: 60_000 })
    expect(ban).to.include({ peerId: b.peerId, reason: 'operator says so', count: 1 })
    expect(ban.until - ban.since).to.equal(60_000)
    await waitFor(async () => (await client.peers()).length === 0, { what: 'b hung up on' })
    const bans = await client.bans()
    expect(bans.map((x) => x.peerId)).to.deep.equal([b.peerId])
    expect(b.events.some((e) => e.event === 'peer:disconnect')).to.equal(true)

    const bad = await client.ban('not a peer id').then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    )
    expect(bad?.code).to.equal('MESH_ERR_CONTROL_BAD_REQUEST')
    expect(await client.unban(b.peerId)).to.deep.equal({ peerId: b.peerId, lifted: true })
    expect(await client.unban(b.peerId)).to.deep.equal({ peerId: b.peerId, lifted: false })
    expect(await client.bans()).to.deep.equal([])
    await b.node.libp2p.dial(a.node.libp2p.getMultiaddrs()[0])
    await waitFor(async () => (await client.peers()).length === 1, { what: 'b back after the lift' })
  })

  it('joins and leaves topics through the API, changing the discovery state', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const discovery = a.node.api<{ topics(): string[] }>('discovery')
    expect(await client.topics()).to.deep.equal([])
    const joined = await client.join('control-topic')
    expect(joined).to.deep.equal({
      topic: 'control-topic',
      joined: true,
      changed: true,
      topics: ['control-topic'],
    })
    expect(discovery.topics()).to.deep.equal(['control-topic'])
    expect((await client.status()).topics).to.deep.equal(['control-topic'])

    // a second node in the topic shows up as a topic peer
    const b = await nodes.start('b', {
      plugins: [],
      dial: [a.address],
    })
    await b.node.api<{ join(t: string): Promise<void> }>('discovery').join('control-topic')
    await waitFor(async () => (await client.topics())[0]?.peers.includes(b.peerId) ?? false, {
      timeoutMs: 20_000,
      what: 'b as a topic peer of a',
    })
    expect((await client.peers()).find((p) => p.peerId === b.peerId)?.topics).to.deep.equal(['control-topic'])

    const left = await client.leave('control-topic')
    expect(left).to.deep.equal({ topic: 'control-topic', joined: false, changed: true, topics: [] })
    expect(discovery.topics()).to.deep.equal([])
    expect(await client.topics()).to.deep.equal([])
  })

  it('streams events (SSE): hello first, then peer:connect when a node connects', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const abort = new AbortController()
    const seen: Array<{ event: string; data: Record<string, unknown> }> = []
    const reading = (async () => {
      for await (const e of client.events({ signal: abort.signal })) {
        seen.push({ event: e.event, data: e.data as Record<string, unknown> })
        if (e.event === 'peer:connect') break
      }
    })()
    await waitFor(() => seen.length > 0, { what: 'the hello event' })
    expect(seen[0].event).to.equal('hello')
    expect(seen[0].data.peerId).to.equal(a.peerId)
    const b = await nodes.start('b', { dial: [a.address] })
    await Promise.race([
      reading,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no peer:connect event')), 15_000)),
    ])
    abort.abort()
    const connect = seen.find((e) => e.event === 'peer:connect')
    expect(connect?.data.peerId).to.equal(b.peerId)
    expect(connect?.data.time).to.be.a('number')
  })

  it('close() ends open event streams at once', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const events: string[] = []
    const reading = (async () => {
      for await (const e of client.events()) events.push(e.event)
    })()
    await waitFor(() => events.includes('hello'), { what: 'the hello event' })
    const started = Date.now()
    await server!.close()
    await reading
    expect(Date.now() - started, 'close with an open event stream').to.be.below(1500)
    // a second close is a no-op
    await server!.close()
  })

  it('rejects bad JSON, a missing topic and a huge body with coded 4xx errors, and keeps serving', async () => {
    const url = `${server!.url}/api/topics/join`
    const token = server!.token
    const bad = await http(url, { method: 'POST', token, body: '{"topic": ' })
    expect(bad.status).to.equal(400)
    expect(bad.json().error.code).to.equal('MESH_ERR_CONTROL_BAD_REQUEST')
    expect(bad.json().error.message).to.include('not valid JSON')
    expect(bad.json().error.hint).to.be.a('string')
    const missing = await http(url, { method: 'POST', token, body: '{"name":"x"}' })
    expect(missing.status).to.equal(400)
    expect(missing.json().error.message).to.include('"topic"')
    const empty = await http(url, { method: 'POST', token, headers: { 'content-type': 'application/json' } })
    expect(empty.status).to.equal(400)
    const wrongType = await http(url, { method: 'POST', token, body: '{"topic":42}' })
    expect(wrongType.status).to.equal(400)
    const tooLong = await http(url, {
      method: 'POST',
      token,
      body: JSON.stringify({ topic: 'x'.repeat(129) }),
    })
    expect(tooLong.status).to.equal(400)
    const array = await http(url, { method: 'POST', token, body: '[]' })
    expect(array.status).to.equal(400)
    const huge = await http(url, {
      method: 'POST',
      token,
      body: JSON.stringify({ topic: 'x'.repeat(100_000) }),
    })
    expect(huge.status).to.equal(413)
    expect(huge.json().error.code).to.equal('MESH_ERR_CONTROL_TOO_LARGE')
    const wrongMethod = await http(`${server!.url}/api/topics/join`, { token })
    expect(wrongMethod.status).to.equal(405)
    const unknown = await http(`${server!.url}/api/nope`, { token })
    expect(unknown.status).to.equal(404)
    expect(unknown.json().error.code).to.equal('MESH_ERR_CONTROL_NOT_FOUND')
    // the node and the server are fine
    expect(a.node.state).to.equal('started')
    const ok = await http(`${server!.url}/api/status`, { token })
    expect(ok.status).to.equal(200)
    expect(a.node.api<{ topics(): string[] }>('discovery').topics()).to.deep.equal([])
  })

  it('answers 404 NO_PROVIDER with a hint for clusters, NAT and metrics without providers', async () => {
    const token = server!.token
    for (const [path, capability] of [
      ['/api/clusters', 'clustering'],
      ['/api/nat', 'nat-classification'],
      ['/metrics', 'metrics'],
    ] as const) {
      const res = await http(`${server!.url}${path}`, { token })
      expect(res.status, path).to.equal(404)
      const { error } = res.json()
      expect(error.code).to.equal('MESH_ERR_CONTROL_NO_PROVIDER')
      expect(error.message).to.include(capability)
      expect(error.hint).to.include('plugins')
    }
    expect((await http(`${server!.url}/metrics`, { token })).json().error.hint).to.include('metrics()')
  })

  it('serves the clustering provider snapshot', async () => {
    const c = await nodes.start('c', { plugins: [jaccardClusters({ tags: ['x', 'y'] })] })
    const s = await start(c)
    const d = await nodes.start('d', { plugins: [jaccardClusters({ tags: ['x', 'y'] })], dial: [c.address] })
    const client = createControlClient({ dataDir: c.node.config.dataDir })
    expect(s.url).to.not.equal(server!.url)
    await waitFor(
      async () =>
        (await client.clusters()).clusters.some((cl) => cl.members.some((m) => m.peerId === d.peerId)),
      { timeoutMs: 20_000, what: 'd in a cluster of c' },
    )
    const snapshot = await client.clusters()
    expect(snapshot.tags).to.deep.equal(['x', 'y'])
    const cluster = snapshot.clusters.find((cl) => cl.members.some((m) => m.peerId === d.peerId))!
    expect(cluster.tags).to.deep.equal(['x', 'y'])
    expect(cluster.own).to.equal(true)
    expect(cluster.members.find((m) => m.peerId === d.peerId)!.connected).to.equal(true)
  })

  it('follows the kernel to a new node after a swap (reload)', async () => {
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const first = await client.status()
    const config = resolveConfig(
      {
        name: 'reloaded',
        dataDir: a.node.config.dataDir,
        datastore: 'memory',
        logLevel: 'warn',
        listen: ['/ip4/127.0.0.1/tcp/0'],
        connections: { allow: ['/ip4/127.0.0.1'] },
        network: { addressScope: 'all' },
        plugins: basePlugins(),
      },
      { env: TEST_ENV },
    )
    const next = await a.kernel.reload(config)
    const second = await client.status()
    expect(second.peerId).to.equal(first.peerId)
    expect(second.name).to.equal('reloaded')
    expect(second.addresses).to.deep.equal(next.libp2p.getMultiaddrs().map(String))
    expect(second.addresses).to.not.deep.equal(first.addresses)
    await client.join('after-swap')
    expect(next.api<{ topics(): string[] }>('discovery').topics()).to.deep.equal(['after-swap'])
  })

  it('writes control.json (0600) and removes it on close; the client then says no node runs', async () => {
    const file = join(a.node.config.dataDir, CONTROL_DISCOVERY_FILE)
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const info = await client.discover()
    expect(info).to.include({ url: server!.url, pid: process.pid, peerId: a.peerId })
    await server!.close()
    let missing = false
    await stat(file).catch(() => {
      missing = true
    })
    expect(missing).to.equal(true)
    let err: unknown
    try {
      await client.status()
    } catch (e) {
      err = e
    }
    expect(isMeshError(err, 'MESH_ERR_CONTROL_NOT_RUNNING'), String(err)).to.equal(true)
    expect((err as Error).message).to.include(a.node.config.dataDir)
  })

  it('serves on a unix socket (mode 0600)', async () => {
    await server!.close()
    const socketPath = join(dir, 'control.sock')
    const s = await start(a, { socketPath })
    expect(s.port).to.equal(undefined)
    expect((await stat(socketPath)).mode & 0o777).to.equal(0o600)
    const status = await createControlClient({ dataDir: a.node.config.dataDir }).status()
    expect(status.peerId).to.equal(a.peerId)
    // a live socket is not taken over; a stale one (its server gone) is
    let err: unknown
    await start(a, { socketPath }).catch((e: unknown) => {
      err = e
    })
    expect(isMeshError(err, 'MESH_ERR_CONTROL_FAILED'), String(err)).to.equal(true)
    const stale = join(dir, 'stale.sock')
    // a socket file whose server was killed (SIGKILL: nothing removed it)
    spawnSync(
      process.execPath,
      [
        '-e',
        `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
      ],
      { timeout: 10_000 },
    )
    expect((await stat(stale)).isSocket()).to.equal(true)
    const again = await start(a, { socketPath: stale })
    expect(again.socketPath).to.equal(stale)
  })

  it('adds routes: authenticated by default, public when asked, prefix routes with the rest of the path', async () => {
    server!.addRoute('GET', '/extra', () => ({ hello: 'world' }))
    server!.addRoute(
      'GET',
      '/assets/*',
      (_req, res, _url, ctx) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.end(`asset:${ctx.rest}`)
      },
      { public: true },
    )
    expect(() => server!.addRoute('GET', '/extra', () => 1)).to.throw(/already registered/)
    expect((await http(`${server!.url}/extra`)).status).to.equal(401)
    expect((await http(`${server!.url}/extra`, { token: server!.token })).json()).to.deep.equal({
      hello: 'world',
    })
    const asset = await http(`${server!.url}/assets/app.js`)
    expect(asset.status).to.equal(200)
    expect(asset.text).to.equal('asset:app.js')
  })

  it('turns a throwing route into a coded 500, logs it without the token, and keeps serving', async () => {
    await server!.close()
    const logs: string[] = []
    const s = await start(a, { logger: createLogger({ write: (line) => logs.push(line) }) })
    s.addRoute('GET', '/boom', () => {
      throw new Error('kaboom')
    })
    const res = await http(`${s.url}/boom?secret=x`, { token: s.token })
    expect(res.status).to.equal(500)
    expect(res.json().error.code).to.equal('MESH_ERR_CONTROL_FAILED')
    expect(res.json().error.message).to.include('kaboom')
    expect(logs.join('\n')).to.include('GET /boom failed: kaboom')
    expect(logs.join('\n')).to.not.include(s.token)
    expect(logs.join('\n')).to.not.include('secret=x')
    expect((await http(`${s.url}/api/status`, { token: s.token })).status).to.equal(200)
  })
})

describe('control API: what another web page or local process can do', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  let a: TestNode
  let server: ControlServer
  const closers: Array<() => Promise<unknown>> = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-control-attack-'))
    nodes = new LoopbackNodes(() => dir, basePlugins)
    a = await nodes.start('a')
    server = await startControlServer({
      kernel: a.kernel,
      dataDir: a.node.config.dataDir,
      dashboard: true,
      logger: createLogger({ level: 'silent' }),
    })
  })
  afterEach(async () => {
    for (const close of closers.splice(0)) await close().catch(() => {})
    await server.close()
    await nodes.closeAll()
    await cleanup()
  })

  const topics = () => a.node.api<{ topics(): string[] }>('discovery').topics()
  const postJoin = (headers: Record<string, string>, body = '{"topic":"evil"}') =>
    http(`${server.url}/api/topics/join`, { method: 'POST', token: server.token, headers, body })

  it('refuses a state change from a page on another origin, even one that holds the credential', async () => {
    const own = server.url
    const otherPort = `http://127.0.0.1:${(server.port ?? 0) === 65535 ? 1 : (server.port ?? 0) + 1}`
    // what browsers send for a page on another port of 127.0.0.1 (same site, other origin)
    const attempts: Array<[string, Record<string, string>, number, string]> = [
      [
        'Origin of another port',
        { origin: otherPort, 'content-type': 'application/json' },
        403,
        'MESH_ERR_CONTROL_FORBIDDEN',
      ],
      [
        'Origin "null" (sandboxed frame, file:)',
        { origin: 'null', 'content-type': 'application/json' },
        403,
        'MESH_ERR_CONTROL_FORBIDDEN',
      ],
      [
        'Sec-Fetch-Site: same-site',
        { 'sec-fetch-site': 'same-site', 'content-type': 'application/json' },
        403,
        'MESH_ERR_CONTROL_FORBIDDEN',
      ],
      [
        'Sec-Fetch-Site: cross-site',
        { 'sec-fetch-site': 'cross-site', 'content-type': 'application/json' },
        403,
        'MESH_ERR_CONTROL_FORBIDDEN',
      ],
      // an HTML form or a no-cors fetch can only send these (no CORS preflight)
      [
        'a text/plain body (form enctype, no-cors fetch)',
        { 'content-type': 'text/plain' },
        415,
        'MESH_ERR_CONTROL_CONTENT_TYPE',
      ],
      [
        'a urlencoded form',
        { 'content-type': 'application/x-www-form-urlencoded' },
        415,
        'MESH_ERR_CONTROL_CONTENT_TYPE',
      ],
      [
        'a multipart form',
        { 'content-type': 'multipart/form-data; boundary=x' },
        415,
        'MESH_ERR_CONTROL_CONTENT_TYPE',
      ],
    ]
    for (const [what, headers, status, code] of attempts) {
      const res = await postJoin(headers)
      expect(res.status, what).to.equal(status)
      expect(res.json().error.code, what).to.equal(code)
      expect(res.json().error.hint, what).to.be.a('string')
    }
    expect(topics(), 'nothing was joined').to.deep.equal([])
    // the dashboard itself (same origin) and non-browser clients (no Origin) may
    const same = await postJoin(
      { origin: own, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json' },
      '{"topic":"ok-1"}',
    )
    expect(same.status, same.text).to.equal(200)
    const cli = await postJoin({ 'content-type': 'application/json; charset=utf-8' }, '{"topic":"ok-2"}')
    expect(cli.status, cli.text).to.equal(200)
    expect(topics().sort()).to.deep.equal(['ok-1', 'ok-2'])
  })

  it('login codes: one use each, a second use ends that session, they expire, and only the token mints them', async () => {
    // the token mints a code; a session cannot
    const minted = await http(`${server.url}/api/login-code`, {
      method: 'POST',
      token: server.token,
      body: '{}',
    })
    expect(minted.status, minted.text).to.equal(200)
    const { url, code } = minted.json<{ url: string; code: string }>()
    expect(url).to.equal(`${server.url}/#code=${code}`)
    expect(url).to.not.include(server.token)
    const loginWith = (c: string, headers: Record<string, string> = {}) =>
      http(`${server.url}/api/login`, { method: 'POST', body: JSON.stringify({ code: c }), headers })
    const first = await loginWith(code, { origin: server.url })
    expect(first.status, first.text).to.equal(200)
    const { session } = first.json<{ session: string }>()
    expect(session)
      .to.match(/^[A-Za-z0-9_-]{43}$/)
      .and.not.equal(server.token)
    expect((await http(`${server.url}/api/status`, { token: session })).status).to.equal(200)
    const noMint = await http(`${server.url}/api/login-code`, { method: 'POST', token: session, body: '{}' })
    expect(noMint.status).to.equal(401)
    // someone else (who read the code from argv or history) tries it again: refused, and the session
    // the code opened ends too, so whoever raced the browser keeps nothing
    const again = await loginWith(code)
    expect(again.status).to.equal(401)
    expect(again.json().error.message).to.include('used already')
    expect((await http(`${server.url}/api/status`, { token: session })).status).to.equal(401)
    // a code from another page's login form (cross-origin) is refused before it is looked at
    const code2 = new URL(server.loginUrl()).hash.slice('#code='.length)
    expect((await loginWith(code2, { origin: 'http://127.0.0.1:1' })).status).to.equal(403)
    // a code expires after a minute
    const code3 = new URL(server.loginUrl()).hash.slice('#code='.length)
    const realNow = Date.now
    Date.now = () => realNow() + 61_000
    try {
      const late = await loginWith(code3)
      expect(late.status).to.equal(401)
      expect(late.json().error.message).to.include('expired')
    } finally {
      Date.now = realNow
    }
    expect((await loginWith('x'.repeat(32))).status).to.equal(401)
    // the client asks for a link with the data dir's token
    const link = await createControlClient({ dataDir: a.node.config.dataDir }).loginUrl()
    expect(link.url).to.match(new RegExp(`^${server.url}/#code=[A-Za-z0-9_-]{32}$`))
  })

  /** A hostile local server that records the Authorization header of whatever connects to it. */
  const catcher = async () => {
    const seen: string[] = []
    const s = createServer((req, res) => {
      seen.push(String(req.headers.authorization))
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    closers.push(() => new Promise((r) => s.close(r)))
    return { port: (s.address() as AddressInfo).port, seen }
  }

  it('the client sends the token only to a loopback control API of a live node', async () => {
    await server.close()
    const dataDir = a.node.config.dataDir
    const file = join(dataDir, CONTROL_DISCOVERY_FILE)
    const client = createControlClient({ dataDir })
    const me = selfIdentity()
    const trap = await catcher()
    const cases: Array<[string, Record<string, unknown>, string]> = [
      // 0.0.0.0 reaches the local listener on Linux: a non-loopback URL in a control.json someone wrote
      [
        'a non-loopback URL',
        { url: `http://0.0.0.0:${trap.port}`, pid: process.pid },
        'MESH_ERR_CONTROL_NOT_LOOPBACK',
      ],
      ['https', { url: `https://127.0.0.1:${trap.port}`, pid: process.pid }, 'MESH_ERR_CONTROL_NOT_LOOPBACK'],
      [
        'a host name',
        { url: `http://localhost:${trap.port}`, pid: process.pid },
        'MESH_ERR_CONTROL_NOT_LOOPBACK',
      ],
      [
        'credentials in the URL',
        { url: `http://u:p@127.0.0.1:${trap.port}`, pid: process.pid },
        'MESH_ERR_CONTROL_NOT_LOOPBACK',
      ],
      [
        'a relative socket path',
        { url: 'http://localhost', socketPath: 'x.sock', pid: process.pid },
        'MESH_ERR_CONTROL_NOT_LOOPBACK',
      ],
      // a node killed with SIGKILL left its control.json; its pid now runs another process (here:
      // this one, with another start time), and someone else took its port
      [
        'a dead node whose port someone took',
        {
          url: `http://127.0.0.1:${trap.port}`,
          pid: process.pid,
          processStart: '1',
          boot: me.boot,
          pidns: me.pidns,
        },
        'MESH_ERR_CONTROL_NOT_RUNNING',
      ],
    ]
    for (const [what, info, code] of cases) {
      await writeFile(file, JSON.stringify(info), { mode: 0o600 })
      const err = await client.status().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err, code as 'MESH_ERR_CONTROL_NOT_LOOPBACK'), `${what}: ${err}`).to.equal(true)
      if (code === 'MESH_ERR_CONTROL_NOT_LOOPBACK') expect((err as MeshError).hint).to.include('delete it')
    }
    expect(trap.seen, 'the token went nowhere').to.deep.equal([])
    // a socket that another user made (only root can play that user here)
    if (process.getuid?.() === 0) {
      const socketPath = join(dir, 'theirs.sock')
      const s = createServer((_req, res) => res.end('{}'))
      await new Promise<void>((r) => s.listen(socketPath, r))
      closers.push(() => new Promise((r) => s.close(r)))
      await chown(socketPath, 65534, 65534)
      await writeFile(file, JSON.stringify({ url: 'http://localhost', socketPath, pid: process.pid }), {
        mode: 0o600,
      })
      const err = await client.status().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err, 'MESH_ERR_CONTROL_NOT_LOOPBACK'), String(err)).to.equal(true)
      expect((err as Error).message).to.include('uid 65534')
    }
  })
})

describe('control API: connection methods from a real relay and the hole-punch plugin', function () {
  this.timeout(90_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  const servers: ControlServer[] = []

  before(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-control-methods-'))
    nodes = new LoopbackNodes(
      () => dir,
      () => [identify(), ping(), noise(), yamux(), tcp()],
    )
  })
  after(async () => {
    for (const s of servers.splice(0)) await s.close()
    await nodes.closeAll()
    await cleanup()
  })

  it('reports relayed and hole-punched (WebRTC) connections as the plugin classified them', async () => {
    const relay = await nodes.start('relay', { plugins: [relayServer()] })
    const target = await nodes.start('target', {
      listen: ['/ip4/127.0.0.1/tcp/0', '/webrtc', `${relay.address}/p2p-circuit`],
      plugins: [holePunch({ relays: [relay.address] })],
    })
    await waitFor(
      () => target.node.libp2p.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')),
      { timeoutMs: 20_000, what: 'a reservation on the relay' },
    )
    const circuit = `${relay.address}/p2p-circuit/p2p/${target.peerId}`
    const check = async (name: string, maxAttempts: number) => {
      const dialer = await nodes.start(name, {
        plugins: [holePunch({ maxAttempts }), metrics({ libp2p: false })],
      })
      const server = await startControlServer({ kernel: dialer.kernel, dataDir: dialer.node.config.dataDir })
      servers.push(server)
      const outcome = await dialer.node.api<HolePunchApi>('hole-punch').connect(circuit)
      const client = createControlClient({ dataDir: dialer.node.config.dataDir })
      const connections = await client.connections()
      return {
        outcome,
        toTarget: connections.filter((c) => c.peerId === target.peerId),
        metrics: await client.metrics(),
      }
    }

    const relayed = await check('relayed-dialer', 0)
    expect(relayed.outcome.method).to.equal('relayed')
    expect(relayed.toTarget.map((c) => [c.method, c.transport])).to.deep.include(['relayed', 'relay'])

    const punched = await check('punching-dialer', 1)
    expect(punched.outcome.method, JSON.stringify(punched.outcome)).to.equal('hole-punched')
    expect(punched.toTarget.map((c) => [c.method, c.transport])).to.deep.include(['hole-punched', 'webrtc'])
    // the same in the Prometheus metrics of the metrics() plugin
    expect(relayed.metrics).to.match(
      /^meshkit_connection_methods_total\{method="relayed",transport="relay"\} 1$/m,
    )
    expect(relayed.metrics).to.match(/^meshkit_connections\{method="relayed",transport="relay"\} 1$/m)
    expect(punched.metrics).to.match(
      /^meshkit_connection_methods_total\{method="hole-punched",transport="webrtc"\} 1$/m,
    )
    expect(punched.metrics).to.match(/^meshkit_connections\{method="hole-punched",transport="webrtc"\} 1$/m)
    // the relayed connection is not reported as hole-punched too
    for (const c of punched.toTarget.filter((c) => c.transport === 'relay'))
      expect(c.method).to.equal('relayed')
  })
})
