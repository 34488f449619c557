/**
 * A chat between the members of a topic, as a Meshkit plugin.
 *
 * - It depends on the `discovery` slot (kadTopics()) to join the topic at start, and on the `gossip`
 *   capability (gossip()) to send: a message published on the topic reaches every member, also the
 *   ones this node has no connection to (GossipSub forwards it hop by hop).
 * - Wire: one GossipSub message per chat line, the JSON `{"v":1,"nick":"...","text":"..."}` (signed by
 *   its sender's key, so `from` is who sent it). A topic validator checks every message before it is
 *   shown or passed on: anything else is rejected (never forwarded), and the peer that sent it
 *   penalized. Message size, per-peer and per-sender rates are gossip()'s (see its options).
 * - Received messages are `chat:message` events `{ topic, from, nick, text }` on the node's event bus
 *   (they show up in `mesh start --json` too).
 */
import { definePlugin, type PluginContext, z } from 'meshkit/plugin'

const MAX_NICK = 32
const MAX_TEXT = 2000

/** The part of the `gossip` capability's API (gossip()) the chat uses. */
interface Gossip {
  publish(topic: string, data: Uint8Array): Promise<{ recipients: string[] }>
  subscribe(topic: string, handler: (message: { from: string; data: Uint8Array }) => void): () => void
  addValidator(topic: string, validator: (message: { data: Uint8Array }) => 'accept' | 'reject'): () => void
  peers(topic: string): string[]
}

/** The part of the `discovery` slot's API (kadTopics()) the chat uses. */
interface TopicDiscovery {
  join(topic: string): Promise<void>
}

/** What `chat()` offers the app: `node.api<ChatApi>('chat')`. */
export interface ChatApi {
  /** The topic chatted in. */
  readonly topic: string
  /**
   * Sends `text` as `nick` to every member of the topic; resolves with the peers it was handed to
   * directly (they pass it on), empty when no member is connected yet.
   */
  send(text: string, nick: string): Promise<string[]>
  /** The connected members of the topic the chat's messages flow with (peer ids). */
  peers(): string[]
}

const options = z
  .strictObject({
    /** The topic whose members chat together. @default 'lobby' */
    topic: z.string().min(1).max(128).default('lobby'),
  })
  .default({ topic: 'lobby' })

const message = z.strictObject({
  v: z.literal(1),
  nick: z.string().min(1).max(MAX_NICK),
  text: z.string().min(1).max(MAX_TEXT),
})

/** A chat message from bytes, or undefined when they are not one. */
function decode(data: Uint8Array): z.output<typeof message> | undefined {
  try {
    return message.parse(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data)))
  } catch {
    return undefined
  }
}

export const chat = definePlugin({
  name: 'chat',
  provides: ['chat'],
  dependencies: ['discovery', 'gossip'],
  options,
  create: (opts) => {
    let ctx: PluginContext | undefined
    const offs: Array<() => void> = []
    const encoder = new TextEncoder()

    const api: ChatApi = {
      topic: opts.topic,
      peers: () => (ctx ? ctx.use<Gossip>('gossip').peers(opts.topic) : []),
      send: async (text, nick) => {
        if (!ctx) throw new Error('chat is not started')
        const payload = message.parse({ v: 1, nick, text })
        const sent = await ctx
          .use<Gossip>('gossip')
          .publish(opts.topic, encoder.encode(JSON.stringify(payload)))
        return sent.recipients
      },
    }

    return {
      setup: () => api,
      start: async (c) => {
        ctx = c
        const gossip = c.use<Gossip>('gossip')
        offs.push(
          gossip.addValidator(opts.topic, (m) => (decode(m.data) ? 'accept' : 'reject')),
          gossip.subscribe(opts.topic, (m) => {
            const chatMessage = decode(m.data)
            if (chatMessage)
              c.events.emit('chat:message', {
                topic: opts.topic,
                from: m.from,
                nick: chatMessage.nick,
                text: chatMessage.text,
              })
          }),
        )
        await c.use<TopicDiscovery>('discovery').join(opts.topic)
      },
      stop: () => {
        for (const off of offs.splice(0)) off()
        ctx = undefined
      },
    }
  },
})
