/**
 * `mesh publish <topic> <text>` and `mesh subscribe <topic>`: topic messaging through the running node's
 * control API (its `gossip` plugin). No gossip plugin is MESH_ERR_CONTROL_NO_PROVIDER (exit 2, with a
 * hint); a topic the node has not joined is a bad request (exit 2, with a hint).
 */
import type { Command } from 'commander'
import { controlError } from '../control/errors.js'
import type { GossipStreamMessage } from '../control/index.js'
import type { CliIo } from './run-cli.js'
import { clientFor, type StatusCommandOptions } from './status-commands.js'
import { handleStopSignals } from './stop-signals.js'

export interface PublishCommandOptions extends StatusCommandOptions {
  /** The text argument is base64: publish the bytes it encodes. */
  base64?: boolean
}

export interface SubscribeCommandOptions extends StatusCommandOptions {
  /** Join the topic first (`mesh topics join`). */
  join?: boolean
  /** Ends the subscription (the CLI wires it to SIGINT/SIGTERM). */
  signal?: AbortSignal
}

/**
 * A peer's text made safe for one terminal line: control characters (ANSI escapes, newlines), C1
 * controls and bidirectional overrides are shown as escapes, so a peer cannot move the cursor, rewrite
 * earlier lines or reorder what is shown.
 */
export function terminalSafe(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it escapes
    /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      if (c === '\n') return '\\n'
      if (c === '\t') return '\\t'
      if (c === '\r') return '\\r'
      return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
    },
  )
}

const short = (peer: string) => (peer.length > 16 ? `${peer.slice(0, 8)}…${peer.slice(-6)}` : peer)
const clock = (ms: number) => new Date(ms).toTimeString().slice(0, 8)

/** One human line for a received message. */
export function messageLine(m: GossipStreamMessage): string {
  const body = m.text !== undefined ? terminalSafe(m.text) : `(${m.bytes} bytes, not text) base64:${m.base64}`
  return `${clock(m.time)} ${short(m.from)}: ${body}`
}

/** `mesh publish <topic> <text>` on the running node. */
export async function publishCommand(
  topic: string,
  text: string,
  opts: PublishCommandOptions,
  io: CliIo,
): Promise<void> {
  const client = clientFor(opts)
  const result = await client.publish(topic, opts.base64 ? { base64: text } : { text })
  if (opts.json) {
    io.stdout(`${JSON.stringify(result)}\n`)
    return
  }
  const n = result.recipients.length
  io.stdout(
    `published ${result.bytes} bytes to ${topic}: sent to ${n} peer${n === 1 ? '' : 's'} (id ${result.id})\n`,
  )
  if (n === 0)
    io.stderr(`note: no peer subscribed to ${topic} is connected to the node yet, so nobody got it\n`)
}

/**
 * `mesh subscribe <topic>`: one line per message of the topic until `opts.signal` aborts (Ctrl-C); with
 * `--json` one JSON object per line, a `subscribed` line first. Ends with MESH_ERR_CONTROL_NOT_RUNNING
 * when the node stops or leaves the topic.
 */
export async function subscribeCommand(
  topic: string,
  opts: SubscribeCommandOptions,
  io: CliIo,
): Promise<void> {
  const client = clientFor(opts)
  if (opts.join) await client.join(topic)
  let ended = 'the event stream ended'
  for await (const e of client.subscribe(topic, { signal: opts.signal })) {
    const data = (e.data ?? {}) as Record<string, unknown>
    if (e.event === 'subscribed') {
      if (opts.json) io.stdout(`${JSON.stringify({ event: 'subscribed', topic, time: Date.now() })}\n`)
      else io.stderr(`subscribed to ${topic}; one line per message (Ctrl-C stops)\n`)
    } else if (e.event === 'gossip:message') {
      const m = data as unknown as GossipStreamMessage
      io.stdout(opts.json ? `${JSON.stringify({ event: 'gossip:message', ...m })}\n` : `${messageLine(m)}\n`)
    } else if (e.event === 'unsubscribed') {
      ended = String(data.reason ?? 'the node ended the subscription')
    }
  }
  if (opts.signal?.aborted) return
  throw controlError('MESH_ERR_CONTROL_NOT_RUNNING', [client.dataDir, ended])
}

/** Adds `publish` and `subscribe` to the `mesh` program. */
export function registerGossipCommands(program: Command, io: CliIo): void {
  program
    .command('publish')
    .description("publish a message to a joined topic through the running node's gossip plugin")
    .argument('<topic>', 'the topic (joined by the node)')
    .argument('<text>', 'the message (UTF-8 text; with --base64 the bytes it encodes)')
    .option('-d, --data-dir <dir>', 'data dir of the running node (default: .mesh)')
    .option('--base64', '<text> is base64: publish the bytes it encodes')
    .option('--json', 'print {"topic","id","bytes","recipients"}')
    .action((topic: string, text: string, opts) =>
      publishCommand(topic, text, { ...opts, cwd: process.cwd() }, io),
    )
  program
    .command('subscribe')
    .description('print the messages of a joined topic, one line each, until Ctrl-C')
    .argument('<topic>', 'the topic (joined by the node; see --join)')
    .option('-d, --data-dir <dir>', 'data dir of the running node (default: .mesh)')
    .option('--join', 'join the topic first (as `mesh topics join <topic>`)')
    .option('--json', 'one JSON object per line: {"event":"subscribed"}, then {"event":"gossip:message",...}')
    .action(async (topic: string, opts) => {
      const stop = new AbortController()
      const signals = handleStopSignals({ onFirst: () => stop.abort() })
      try {
        await subscribeCommand(topic, { ...opts, cwd: process.cwd(), signal: stop.signal }, io)
      } finally {
        signals.dispose()
      }
    })
}
