/**
 * The control API's gossip endpoints (`GET /api/gossip`, `POST /api/gossip/publish`,
 * `GET /api/gossip/subscribe?topic=...`), read through the `gossip` capability (built-in provider:
 * gossip() in meshkit/plugins), never by plugin name. See docs/control-api.md and docs/gossip.md.
 */
import type { ServerResponse } from 'node:http'
import { isMeshError, type Logger, type MeshEventBus, type MeshNode } from 'meshkit'
import { controlError } from './errors.js'
import { providerOf } from './readers.js'
import type { ControlServer } from './types.js'

/** A message of a joined topic, as the `gossip` capability hands it to a subscriber. */
export interface GossipSlotMessage {
  topic: string
  id: string
  /** The publisher. */
  from: string
  /** The connected peer that forwarded it. */
  via: string
  data: Uint8Array
}

/** The `gossip` capability, as the control API uses it. */
export interface GossipSlotApi {
  /** Publishes to a joined topic; throws a coded MeshError for what the app got wrong. */
  publish(
    topic: string,
    data: Uint8Array,
  ): Promise<{ topic: string; id: string; bytes: number; recipients: string[] }>
  /** Adds a handler of the topic's messages; returns its remover. */
  subscribe(topic: string, handler: (message: GossipSlotMessage) => void): () => void
  /** The topics messages flow in (the joined ones). */
  topics(): string[]
  /** Counters, if the provider keeps them. */
  stats?(): unknown
}

/** `POST /api/gossip/publish`'s answer. */
export interface GossipPublished {
  topic: string
  id: string
  bytes: number
  /** The peers the message was sent to directly (they forward it); empty: nobody got it. */
  recipients: string[]
}

/** The data of a `gossip:message` event of `GET /api/gossip/subscribe`. */
export interface GossipStreamMessage {
  topic: string
  id: string
  from: string
  via: string
  bytes: number
  /** The payload as text when it is valid UTF-8 ... */
  text?: string
  /** ... else as base64. */
  base64?: string
  /** When the node got it (ms since the epoch). */
  time: number
}

export const gossipOf = (node: MeshNode) =>
  providerOf<GossipSlotApi>(node, 'gossip', 'publish', 'subscribe', 'topics')

const GOSSIP_HINT =
  "Add gossip() from 'meshkit/plugins' to `plugins` (it needs a 'discovery' plugin too, e.g. kadTopics())."
const TOPIC_MAX = 128
/** A subscriber that falls this far behind is dropped rather than buffered without bound. */
const SSE_MAX_BUFFER = 1 << 20
const SSE_KEEPALIVE_MS = 15_000
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/

function need(node: MeshNode): GossipSlotApi {
  const gossip = gossipOf(node)
  if (!gossip) throw controlError('MESH_ERR_CONTROL_NO_PROVIDER', ['gossip'], { hint: GOSSIP_HINT })
  return gossip
}

function checkTopic(topic: unknown): string {
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > TOPIC_MAX)
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      `"topic" must be a string of 1 to ${TOPIC_MAX} characters, got ${JSON.stringify(topic)?.slice(0, 40)}`,
    ])
  return topic
}

/** `{ topic, text }` or `{ topic, base64 }` of a publish request, checked. */
export function publishFrom(body: unknown): { topic: string; data: Uint8Array } {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      'expected a JSON object {"topic": "<name>", "text": "<message>"} (or "base64" instead of "text")',
    ])
  const { topic, text, base64 } = body as Record<string, unknown>
  const checked = checkTopic(topic)
  if ((text === undefined) === (base64 === undefined))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      'give the message as exactly one of "text" (a string, sent as UTF-8) or "base64" (bytes)',
    ])
  if (text !== undefined) {
    if (typeof text !== 'string')
      throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['"text" must be a string'])
    return { topic: checked, data: new TextEncoder().encode(text) }
  }
  if (typeof base64 !== 'string' || !BASE64.test(base64))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['"base64" must be a base64 string (RFC 4648)'])
  return { topic: checked, data: new Uint8Array(Buffer.from(base64, 'base64')) }
}

/** A message for the event stream: its payload as text when it is UTF-8, else base64. */
export function streamMessage(m: GossipSlotMessage): GossipStreamMessage {
  const out: GossipStreamMessage = {
    topic: m.topic,
    id: m.id,
    from: m.from,
    via: m.via,
    bytes: m.data.byteLength,
    time: Date.now(),
  }
  try {
    out.text = new TextDecoder('utf-8', { fatal: true }).decode(m.data)
  } catch {
    out.base64 = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength).toString('base64')
  }
  return out
}

export interface GossipRoutesEnv {
  /** The kernel's bus: node swaps and topic leaves end a subscription's stream. */
  events: MeshEventBus
  /** The server's open event streams (ended when it closes). */
  streams: Set<ServerResponse>
  logger: Logger
}

/** Adds the gossip endpoints to a control server. */
export function addGossipRoutes(addRoute: ControlServer['addRoute'], env: GossipRoutesEnv): void {
  addRoute('GET', '/api/gossip', (_req, _res, _url, ctx) => {
    const gossip = need(ctx.node())
    return gossip.stats?.() ?? { topics: gossip.topics() }
  })

  addRoute('POST', '/api/gossip/publish', async (_req, _res, _url, ctx) => {
    const node = ctx.node()
    const { topic, data } = publishFrom(await ctx.json())
    const gossip = need(node)
    try {
      const sent = await gossip.publish(topic, data)
      return { topic: sent.topic, id: sent.id, bytes: sent.bytes, recipients: sent.recipients }
    } catch (err) {
      if (isMeshError(err)) throw err
      throw controlError(
        'MESH_ERR_CONTROL_FAILED',
        [`publish to ${topic}`, String((err as Error)?.message ?? err)],
        {
          cause: err,
        },
      )
    }
  })

  addRoute('GET', '/api/gossip/subscribe', (_req, res, url, ctx) => {
    const node = ctx.node()
    const topic = checkTopic(url.searchParams.get('topic') ?? undefined)
    const gossip = need(node)
    if (!gossip.topics().includes(topic))
      throw controlError(
        'MESH_ERR_CONTROL_BAD_REQUEST',
        [`this node has not joined '${topic}', so no message of it comes here`],
        {
          hint: `Join it first: \`mesh topics join ${topic}\` (POST /api/topics/join), or \`mesh subscribe ${topic} --join\`.`,
        },
      )
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    })
    const send = (event: string, data: unknown) => {
      if (res.writableEnded) return
      if (res.writableLength > SSE_MAX_BUFFER) {
        env.logger.warn(`a gossip subscriber of '${topic}' fell behind; closing its stream`)
        res.end()
        return
      }
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    }
    const end = (reason: string) => {
      send('unsubscribed', { topic, reason })
      res.end()
    }
    send('subscribed', { topic })
    const offs = [
      gossip.subscribe(topic, (m) => send('gossip:message', streamMessage(m))),
      // the handler belongs to this node: a swap (mesh dev) or a stop ends the stream
      env.events.on('node:stopped', () => end('the node stopped')),
      env.events.on('topic:left', (e) => {
        if (e.topic === topic && !gossip.topics().includes(topic)) end(`the node left '${topic}'`)
      }),
    ]
    const keepalive = setInterval(() => {
      let current: MeshNode | undefined
      try {
        current = ctx.node()
      } catch {
        current = undefined
      }
      if (current !== node) end('the node was replaced')
      else if (!res.writableEnded) res.write(': keepalive\n\n')
    }, SSE_KEEPALIVE_MS)
    keepalive.unref()
    env.streams.add(res)
    res.on('close', () => {
      for (const off of offs) off()
      clearInterval(keepalive)
      env.streams.delete(res)
    })
  })
}
