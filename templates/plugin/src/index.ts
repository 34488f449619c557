/**
 * greeter(): a Meshkit plugin in a package of its own.
 *
 * Peers greet each other over the libp2p protocol `/greeter/1.0.0`: the caller sends
 * `{"greeting":"..."}`, the callee answers with its own `{"greeting":"..."}` and emits a
 * `greeter:greeted` event. The API (`node.api<GreeterApi>('greeter')`, or `ctx.use('greeter')` from
 * another plugin) greets a connected peer and counts greetings.
 */
import { defineErrors, definePlugin, type PluginContext, z } from 'meshkit/plugin'

export const GREETER_PROTOCOL = '/greeter/1.0.0'
/** Longest greeting accepted, in bytes (JSON included). */
export const MAX_MESSAGE_BYTES = 1024

type Stream = Awaited<ReturnType<PluginContext['libp2p']['dialProtocol']>>

/**
 * greeter()'s coded errors, each with a fix-it hint (the CLI prints it). Apps test them with
 * `isMeshError(err, 'GREETER_ERR_NOT_CONNECTED')` (from 'meshkit') or `greeterErrors.is(err, code)`.
 */
export const greeterErrors = defineErrors({
  GREETER_ERR_NOT_STARTED: {
    user: true,
    message: () => 'greeter is not started.',
    hint: () => 'Call greet() once the node runs: after startMesh() (or node.start()) resolved.',
  },
  GREETER_ERR_NOT_CONNECTED: {
    user: true,
    message: (peerId: string) => `greeter: not connected to ${peerId}.`,
    hint: () =>
      "Greet a peer in node.libp2p.getPeers(); dial it first (the config's `dial`, or node.libp2p.dial()).",
  },
  GREETER_ERR_BAD_GREETING: {
    user: false,
    message: (why: string) => `greeter: no valid greeting from the peer (${why}).`,
    hint: () =>
      `The peer must answer one JSON line {"greeting": "..."} of at most ${MAX_MESSAGE_BYTES} bytes: does it run greeter()?`,
  },
})

/** What greeter() offers: `node.api<GreeterApi>('greeter')`. */
export interface GreeterApi {
  /** Greets a connected peer (its peer id) and resolves with the peer's answer. */
  greet(peerId: string): Promise<string>
  /** Greetings sent and received since start. */
  stats(): { sent: number; received: number }
}

const options = z
  .strictObject({
    /** What this node says. @default 'hello' */
    greeting: z.string().min(1).max(200).default('hello'),
    /** Longest a greeting exchange may take, in ms. @default 5000 */
    timeout: z.number().int().positive().max(60_000).default(5000),
  })
  .prefault({})

const wire = z.strictObject({ greeting: z.string().min(1).max(200) })

/** Sends one JSON message, newline-terminated. */
function writeMessage(stream: Stream, value: z.infer<typeof wire>): void {
  stream.send(new TextEncoder().encode(`${JSON.stringify(value)}\n`))
}

/** Reads one newline-terminated JSON message (bounded in size; the caller bounds the time). */
async function readMessage(stream: Stream): Promise<z.infer<typeof wire>> {
  let text = ''
  for await (const chunk of stream) {
    text += new TextDecoder().decode(chunk instanceof Uint8Array ? chunk : chunk.subarray())
    const end = text.indexOf('\n')
    if (end >= 0) {
      try {
        return wire.parse(JSON.parse(text.slice(0, end)))
      } catch (err) {
        throw greeterErrors.create('GREETER_ERR_BAD_GREETING', ['not a {"greeting": "..."} line'], {
          cause: err,
        })
      }
    }
    if (text.length > MAX_MESSAGE_BYTES)
      throw greeterErrors.create('GREETER_ERR_BAD_GREETING', [`longer than ${MAX_MESSAGE_BYTES} bytes`])
  }
  throw greeterErrors.create('GREETER_ERR_BAD_GREETING', ['the stream ended before a greeting'])
}

export const greeter = definePlugin({
  name: 'greeter',
  provides: ['greeter'],
  // a transport must exist; the protocol runs on whatever connections the node has
  dependencies: ['transport'],
  options,
  create: (opts) => {
    let ctx: PluginContext | undefined
    const counts = { sent: 0, received: 0 }

    const answer = async (stream: Stream, from: string) => {
      const signal = AbortSignal.timeout(opts.timeout)
      const onAbort = () => stream.abort(new Error('greeting timed out'))
      signal.addEventListener('abort', onAbort)
      try {
        const { greeting } = await readMessage(stream)
        counts.received++
        ctx?.events.emit('greeter:greeted', { from, greeting })
        writeMessage(stream, { greeting: opts.greeting })
        await stream.close({ signal })
      } catch (err) {
        stream.abort(err instanceof Error ? err : new Error(String(err)))
      } finally {
        signal.removeEventListener('abort', onAbort)
      }
    }

    const api: GreeterApi = {
      async greet(peerId) {
        if (!ctx) throw greeterErrors.create('GREETER_ERR_NOT_STARTED', [])
        const connection = ctx.libp2p.getConnections().find((c) => c.remotePeer.toString() === peerId)
        if (!connection) throw greeterErrors.create('GREETER_ERR_NOT_CONNECTED', [peerId])
        const signal = AbortSignal.timeout(opts.timeout)
        const stream = await connection.newStream(GREETER_PROTOCOL, { signal })
        const onAbort = () => stream.abort(new Error('greeting timed out'))
        signal.addEventListener('abort', onAbort)
        try {
          writeMessage(stream, { greeting: opts.greeting })
          counts.sent++
          const { greeting } = await readMessage(stream)
          await stream.close({ signal })
          return greeting
        } catch (err) {
          stream.abort(err instanceof Error ? err : new Error(String(err)))
          throw err
        } finally {
          signal.removeEventListener('abort', onAbort)
        }
      },
      stats: () => ({ ...counts }),
    }

    return {
      setup: () => api,
      start: async (c) => {
        ctx = c
        await c.libp2p.handle(GREETER_PROTOCOL, (stream, connection) =>
          answer(stream, connection.remotePeer.toString()),
        )
        c.logger.info(`greeting peers with "${opts.greeting}"`)
      },
      stop: async (c) => {
        await c.libp2p.unhandle(GREETER_PROTOCOL)
        ctx = undefined
      },
    }
  },
})
