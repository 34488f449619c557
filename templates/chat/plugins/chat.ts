/**
 * A chat between the peers of a topic, as a Meshkit plugin.
 *
 * - It depends on the `discovery` slot (kadTopics()): it joins the topic at start and sends to the
 *   topic's connected peers, which discovery keeps connected.
 * - Wire: the libp2p protocol `/meshkit-chat/1.0.0`, one stream per message. The sender writes one
 *   JSON line `{"v":1,"id":"...","topic":"...","nick":"...","text":"..."}` (at most 4 KiB), the
 *   receiver answers `ok` once it has taken the message. No `ok` in time (a connection that closed
 *   under the message, say) and the sender tries again once; ids let the receiver drop a repeat.
 *   Anything malformed, oversized or slow is dropped: bad input never crashes the node. Each peer has a
 *   budget (`ctx.budget`: a few messages a second, a few at once, 64 KiB a minute); a peer over it, or
 *   one sending malformed messages, is refused and penalized (`ctx.reputation`), and banned if it goes on.
 * - Received messages are `chat:message` events `{ topic, from, nick, text }` on the node's event bus
 *   (they show up in `mesh start --json` too).
 */
import { type Budget, definePlugin, type PluginContext, z } from 'meshkit'

export const CHAT_PROTOCOL = '/meshkit-chat/1.0.0'
const MAX_LINE_BYTES = 4096
const MAX_NICK = 32
const MAX_TEXT = 2000
/** Message ids remembered to drop repeats. */
const SEEN_IDS = 1000

type Libp2p = PluginContext['libp2p']
type Stream = Awaited<ReturnType<Libp2p['dialProtocol']>>

/** The part of the `discovery` slot's API (kadTopics()) the chat uses. */
interface TopicDiscovery {
  join(topic: string): Promise<void>
  peers(topic: string): string[]
}

/** What `chat()` offers the app: `node.api<ChatApi>('chat')`. */
export interface ChatApi {
  /** The topic chatted in. */
  readonly topic: string
  /** Sends `text` as `nick` to every connected peer of the topic; resolves with the peers that took it. */
  send(text: string, nick: string): Promise<string[]>
  /** The connected peers of the topic (peer ids). */
  peers(): string[]
}

const options = z
  .strictObject({
    /** The topic whose peers chat together. @default 'lobby' */
    topic: z.string().min(1).max(128).default('lobby'),
    /** Longest one delivery attempt (or a receive) may take, in ms. @default 5000 */
    timeout: z.number().int().positive().default(5000),
  })
  .default({ topic: 'lobby', timeout: 5000 })

const message = z.strictObject({
  v: z.literal(1),
  id: z.string().min(8).max(64),
  topic: z.string().max(128),
  nick: z.string().min(1).max(MAX_NICK),
  text: z.string().min(1).max(MAX_TEXT),
})

/** Reads one newline-terminated line of at most MAX_LINE_BYTES (the caller bounds the time). */
async function readLine(stream: Stream): Promise<string> {
  const decoder = new TextDecoder()
  let text = ''
  for await (const chunk of stream) {
    text += decoder.decode(chunk instanceof Uint8Array ? chunk : chunk.subarray(), { stream: true })
    const end = text.indexOf('\n')
    if (end >= 0) return text.slice(0, end)
    if (text.length > MAX_LINE_BYTES) throw new Error('chat line too long')
  }
  throw new Error('stream ended without a line')
}

/** Runs `work` on `stream`, aborting the stream when it takes longer than `timeout` ms. */
async function bounded<T>(stream: Stream, timeout: number, work: () => Promise<T>): Promise<T> {
  const timer = setTimeout(() => stream.abort(new Error('chat peer too slow')), timeout)
  try {
    return await work()
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  } finally {
    clearTimeout(timer)
  }
}

export const chat = definePlugin({
  name: 'chat',
  provides: ['chat'],
  dependencies: ['discovery'],
  options,
  create: (opts) => {
    let ctx: PluginContext | undefined
    let budget: Budget | undefined
    const seen = new Set<string>()
    const encoder = new TextEncoder()

    const receive = async (stream: Stream, from: string) => {
      const ticket = budget?.admit(from)
      if (!ticket?.ok) {
        stream.abort(new Error('over budget'))
        return
      }
      await bounded(stream, opts.timeout, async () => {
        const line = await readLine(stream)
        if (!ticket.spend(line.length)) throw new Error('over budget')
        let json: unknown
        try {
          json = JSON.parse(line)
        } catch {
          json = undefined
        }
        const parsed = message.safeParse(json)
        if (!parsed.success || parsed.data.topic !== opts.topic) {
          ctx?.reputation.penalize(from, 'malformed', 'bad chat message')
          throw new Error('bad chat message')
        }
        const { id, nick, text } = parsed.data
        const key = `${from}/${id}`
        if (!seen.has(key)) {
          seen.add(key)
          if (seen.size > SEEN_IDS) seen.delete(seen.values().next().value!)
          ctx?.events.emit('chat:message', { topic: opts.topic, from, nick, text })
        }
        stream.send(encoder.encode('ok\n'))
        await stream.close()
      })
        .catch(() => {
          // already aborted: a bad or slow sender only loses its own stream
        })
        .finally(() => ticket.release())
    }

    /** One delivery attempt: write the line, wait for `ok`. */
    const deliver = async (libp2p: Libp2p, peer: string, line: Uint8Array): Promise<boolean> => {
      const target = libp2p.getPeers().find((p) => p.toString() === peer)
      if (!target) return false
      const signal = AbortSignal.timeout(opts.timeout)
      // libp2p picks an open connection to the peer (or dials it again)
      const stream = await libp2p.dialProtocol(target, CHAT_PROTOCOL, {
        signal,
        runOnLimitedConnection: true,
      })
      return bounded(stream, opts.timeout, async () => {
        stream.send(line)
        if ((await readLine(stream)) !== 'ok') throw new Error('no ok from the peer')
        await stream.close()
        return true
      })
    }

    /** Delivers to one peer; a second attempt after a short pause rides out connection churn. */
    const sendTo = async (peer: string, line: Uint8Array): Promise<boolean> => {
      for (let attempt = 0; ; attempt++) {
        const libp2p = ctx?.libp2p
        if (!libp2p) return false
        try {
          return await deliver(libp2p, peer, line)
        } catch (err) {
          if (attempt >= 1) throw err
          await new Promise((r) => setTimeout(r, 250))
        }
      }
    }

    const api: ChatApi = {
      topic: opts.topic,
      peers: () => (ctx ? ctx.use<TopicDiscovery>('discovery').peers(opts.topic) : []),
      send: async (text, nick) => {
        if (!ctx) throw new Error('chat is not started')
        const id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) =>
          b.toString(16).padStart(2, '0'),
        ).join('')
        const payload = message.parse({ v: 1, id, topic: opts.topic, nick, text })
        const line = encoder.encode(`${JSON.stringify(payload)}\n`)
        const peers = api.peers()
        const results = await Promise.allSettled(peers.map((p) => sendTo(p, line)))
        results.forEach((r, i) => {
          if (r.status === 'rejected') ctx?.logger.debug(`send to ${peers[i]} failed: ${r.reason}`)
        })
        return peers.filter((_, i) => {
          const r = results[i]
          return r.status === 'fulfilled' && r.value
        })
      },
    }

    return {
      setup: () => api,
      start: async (c) => {
        ctx = c
        budget = c.budget('messages', {
          ratePerSecond: 5,
          burst: 20,
          concurrency: 4,
          bytesPerMinute: 64 * 1024,
        })
        await c.libp2p.handle(
          CHAT_PROTOCOL,
          (stream, connection) => receive(stream, connection.remotePeer.toString()),
          {
            runOnLimitedConnection: true,
            maxInboundStreams: 32,
          },
        )
        await c.use<TopicDiscovery>('discovery').join(opts.topic)
      },
      stop: async (c) => {
        await c.libp2p.unhandle(CHAT_PROTOCOL)
        ctx = undefined
      },
    }
  },
})
