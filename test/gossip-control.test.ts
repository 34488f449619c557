/**
 * The control API's gossip endpoints against loopback nodes: publish (text, base64), the subscription
 * stream, the counters, and every refusal as a coded error (not joined, too big, bad body, a page on
 * another origin, no token, no gossip plugin).
 */
import { request } from 'node:http'
import { expect } from 'chai'
import { isMeshError } from 'meshkit'
import {
  type ControlServer,
  type ControlStreamEvent,
  createControlClient,
  type GossipStreamMessage,
  startControlServer,
} from '../src/control/index.js'
import { GossipMesh, type GossipNode } from './fixtures/gossip-mesh.js'
import type { TestNode } from './fixtures/loopback-nodes.js'
import { tempDir, waitFor } from './helpers.js'

interface Answer {
  status: number
  body: { error?: { code: string; message: string; hint?: string } } & Record<string, unknown>
}

function post(
  url: string,
  body: string,
  { token, headers = {} }: { token?: string; headers?: Record<string, string> },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          'content-type': 'application/json',
          ...headers,
        },
        timeout: 10_000,
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => {
          text += c
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

describe('control API: gossip', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let mesh: GossipMesh
  let a: GossipNode
  let b: GossipNode
  const servers: ControlServer[] = []
  const serve = async (n: TestNode) => {
    const s = await startControlServer({ kernel: n.kernel, dataDir: n.node.config.dataDir })
    servers.push(s)
    return s
  }

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-gossip-control-'))
    mesh = new GossipMesh(() => dir)
    a = await mesh.start('a', ['lobby'], { maxMessageBytes: 1000 })
    b = await mesh.start('b', ['lobby'], { maxMessageBytes: 1000 })
    await mesh.link(a, b)
    await mesh.settled(() => ['lobby'])
  })
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close()
    await mesh.closeAll()
    await cleanup()
  })

  it('publishes text and base64 to a joined topic; GET /api/gossip counts them', async () => {
    const server = await serve(a)
    const text = await post(
      `${server.url}/api/gossip/publish`,
      JSON.stringify({ topic: 'lobby', text: 'héllo' }),
      {
        token: server.token,
      },
    )
    expect(text.status, JSON.stringify(text.body)).to.equal(200)
    expect(text.body).to.include({ topic: 'lobby', bytes: 6 })
    expect(text.body.recipients).to.deep.equal([b.peerId])
    const bytes = Buffer.from([0xff, 0x00, 0xfe])
    const binary = await post(
      `${server.url}/api/gossip/publish`,
      JSON.stringify({ topic: 'lobby', base64: bytes.toString('base64') }),
      { token: server.token },
    )
    expect(binary.status, JSON.stringify(binary.body)).to.equal(200)
    await waitFor(() => b.received.length === 2, { what: 'both messages at B' })
    expect(b.received[0].text).to.equal('héllo')
    expect(b.received[0].id).to.equal(text.body.id)
    expect(Buffer.from(b.received[1].data).equals(bytes)).to.equal(true)
    // the client wraps the same endpoints
    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const sent = await client.publish('lobby', { text: 'via the client' })
    expect(sent.recipients).to.deep.equal([b.peerId])
    const stats = (await client.gossip()) as { published: number; topics: Array<{ topic: string }> }
    expect(stats.published).to.equal(3)
    expect(stats.topics.map((t) => t.topic)).to.deep.equal(['lobby'])
  })

  it("streams a topic's messages (text or base64) until the node leaves the topic", async () => {
    await serve(b)
    const client = createControlClient({ dataDir: b.node.config.dataDir })
    const seen: ControlStreamEvent[] = []
    const abort = new AbortController()
    const reading = (async () => {
      for await (const e of client.subscribe('lobby', { signal: abort.signal })) seen.push(e)
    })()
    await waitFor(() => seen.some((e) => e.event === 'subscribed'), { what: 'the subscribed event' })
    await a.gossip.publish('lobby', 'one')
    await a.gossip.publish('lobby', new Uint8Array([0xc3, 0x28]))
    await waitFor(() => seen.filter((e) => e.event === 'gossip:message').length === 2, {
      what: 'two messages',
    })
    const [one, two] = seen
      .filter((e) => e.event === 'gossip:message')
      .map((e) => e.data as GossipStreamMessage)
    expect(one).to.include({ topic: 'lobby', from: a.peerId, via: a.peerId, bytes: 3, text: 'one' })
    expect(two).to.include({ bytes: 2, base64: 'wyg=' })
    expect(two.text).to.equal(undefined)
    await b.node.api<{ leave(t: string): Promise<void> }>('discovery').leave('lobby')
    await Promise.race([
      reading,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the stream did not end')), 5000)),
    ])
    expect(seen.at(-1)).to.deep.include({ event: 'unsubscribed' })
    expect((seen.at(-1)?.data as { reason?: string } | undefined)?.reason).to.match(/left 'lobby'/)
    abort.abort()
  })

  it('refuses with coded errors: not joined, too big, a bad body, another origin, no token, no gossip plugin', async () => {
    const server = await serve(a)
    const publish = (
      body: unknown,
      headers: Record<string, string> = {},
      token: string | undefined = server.token,
    ) => post(`${server.url}/api/gossip/publish`, JSON.stringify(body), { token, headers })
    const cases: Array<[string, Promise<Answer>, number, string, RegExp?]> = [
      [
        'a topic not joined',
        publish({ topic: 'elsewhere', text: 'x' }),
        400,
        'MESH_ERR_INVALID_ARGUMENT',
        /mesh topics join elsewhere/,
      ],
      [
        'over maxMessageBytes',
        publish({ topic: 'lobby', text: 'x'.repeat(1001) }),
        400,
        'MESH_ERR_INVALID_ARGUMENT',
        /maxMessageBytes/,
      ],
      [
        'text and base64',
        publish({ topic: 'lobby', text: 'x', base64: 'eA==' }),
        400,
        'MESH_ERR_CONTROL_BAD_REQUEST',
      ],
      ['neither', publish({ topic: 'lobby' }), 400, 'MESH_ERR_CONTROL_BAD_REQUEST'],
      ['bad base64', publish({ topic: 'lobby', base64: 'not base64!' }), 400, 'MESH_ERR_CONTROL_BAD_REQUEST'],
      ['no topic', publish({ text: 'x' }), 400, 'MESH_ERR_CONTROL_BAD_REQUEST'],
      [
        'a page on another origin',
        publish({ topic: 'lobby', text: 'x' }, { origin: 'http://127.0.0.1:1' }),
        403,
        'MESH_ERR_CONTROL_FORBIDDEN',
      ],
      [
        'a form post',
        publish({ topic: 'lobby', text: 'x' }, { 'content-type': 'text/plain' }),
        415,
        'MESH_ERR_CONTROL_CONTENT_TYPE',
      ],
      ['no token', publish({ topic: 'lobby', text: 'x' }, {}, ''), 401, 'MESH_ERR_CONTROL_UNAUTHORIZED'],
    ]
    for (const [what, answer, status, code, hint] of cases) {
      const res = await answer
      expect(res.status, what).to.equal(status)
      expect(res.body.error?.code, what).to.equal(code)
      if (hint) expect(res.body.error?.hint, what).to.match(hint)
    }
    expect(b.received, 'nothing was published').to.deep.equal([])

    const client = createControlClient({ dataDir: a.node.config.dataDir })
    const notJoined = await (async () => {
      try {
        for await (const _ of client.subscribe('elsewhere')) break
      } catch (err) {
        return err
      }
    })()
    expect(isMeshError(notJoined, 'MESH_ERR_CONTROL_BAD_REQUEST'), String(notJoined)).to.equal(true)
    expect((notJoined as { hint: string }).hint).to.match(/mesh subscribe elsewhere --join/)

    const plain = await mesh.startPlain('plain')
    const plainServer = await serve(plain)
    const res = await post(
      `${plainServer.url}/api/gossip/publish`,
      JSON.stringify({ topic: 'lobby', text: 'x' }),
      {
        token: plainServer.token,
      },
    )
    expect(res.status).to.equal(404)
    expect(res.body.error?.code).to.equal('MESH_ERR_CONTROL_NO_PROVIDER')
    expect(res.body.error?.hint).to.match(/gossip\(\) from 'meshkit\/plugins'/)
  })
})
