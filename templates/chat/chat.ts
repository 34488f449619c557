/**
 * A terminal chat between the peers of a topic:
 *
 *   node chat.ts --name alice [--topic lobby] [--dial <multiaddr>] [--mode local] [--data-dir <dir>]
 *
 * Starts the node of mesh.config.ts (whose chat() plugin does the work, over gossip()), prints the
 * address others can `--dial`, then sends every line typed on stdin to the topic's members and prints
 * what they send. Every line a peer sent is shown with its control characters escaped.
 * `/peers` lists the peers, `/quit` (or Ctrl-D, Ctrl-C) leaves.
 */
import { randomBytes } from 'node:crypto'
import { dirname, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { isMeshError, type MeshEvent, startMesh } from 'meshkit'
import type { ChatApi } from './plugins/chat.ts'

const usage =
  'usage: node chat.ts [--name <nick>] [--topic <room>] [--dial <multiaddr>]... [--mode local] [--data-dir <dir>]'
let values: {
  name?: string
  topic?: string
  dial?: string[]
  mode?: string
  'data-dir'?: string
}
try {
  ;({ values } = parseArgs({
    options: {
      name: { type: 'string', short: 'n' },
      topic: { type: 'string', short: 't' },
      dial: { type: 'string', short: 'd', multiple: true },
      mode: { type: 'string', default: 'production' },
      'data-dir': { type: 'string' },
    },
  }))
} catch (err) {
  console.error(`${err instanceof Error ? err.message : err}\n${usage}`)
  process.exit(2)
}
const nick = values.name ?? `guest-${randomBytes(2).toString('hex')}`
if (values.topic) process.env.CHAT_TOPIC = values.topic
const root = dirname(fileURLToPath(import.meta.url))
const short = (peer: string) => `${peer.slice(0, 8)}…${peer.slice(-4)}`

let mesh: Awaited<ReturnType<typeof startMesh>>
try {
  mesh = await startMesh({
    cwd: root,
    env: { command: 'start', mode: values.mode ?? 'production' },
    // one identity per nick, so that two chats can run from this folder
    overrides: { dataDir: resolve(values['data-dir'] ?? resolve(root, '.mesh', nick)), dial: values.dial },
  })
} catch (err) {
  console.error(isMeshError(err) ? `error ${err.describe()}` : err)
  process.exit(isMeshError(err) && err.userError ? 2 : 1)
}

const { node } = mesh
const chat = node.api<ChatApi>('chat')
const address = node.libp2p
  .getMultiaddrs()
  .map(String)
  .find((a) => a.includes('/tcp/'))
console.log(`chatting as ${nick} in #${chat.topic} (peer ${node.peerId})`)
if (address) {
  const local = values.mode === 'local' ? ':local' : ''
  console.log(`others join with: npm run chat${local} -- --name <nick> --dial ${address}`)
}
console.log('type a message and press Enter; /peers lists the peers, /quit leaves')

const input = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY })
const print = (text: string) => {
  if (process.stdin.isTTY) {
    // keep what is being typed below the incoming line
    process.stdout.write('\r\u001b[2K')
    console.log(text)
    input.prompt(true)
  } else console.log(text)
}
input.setPrompt('> ')
if (process.stdin.isTTY) input.prompt()

const events = mesh.kernel.events
/** What a peer's text must not bring to the terminal: control characters, bidi overrides. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it escapes
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g
const safe = (text: string) =>
  text.replace(UNSAFE, (c) => (c === '\n' ? '\\n' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`))
events.on('chat:message', (e: MeshEvent) => print(`<${safe(String(e.nick))}> ${safe(String(e.text))}`))
// a member is "in" once messages flow with it: its gossip subscription to the topic is known
events.on('gossip:peer', (e: MeshEvent) => {
  if (e.topic === chat.topic) print(`* ${short(String(e.peerId))} joined #${chat.topic}`)
})
events.on('gossip:peer:lost', (e: MeshEvent) => {
  if (e.topic === chat.topic) print(`* ${short(String(e.peerId))} left #${chat.topic}`)
})

let closing = false
const quit = async () => {
  if (closing) return
  closing = true
  input.close()
  await mesh.close()
  // libp2p's sockets must not delay the exit once everything is stopped
  process.exit(0)
}
process.on('SIGINT', quit)
process.on('SIGTERM', quit)

// lines are sent one after the other, in the order typed
let queue = Promise.resolve()
input.on('line', (line) => {
  const text = line.trim()
  if (text === '/quit') return void quit()
  if (text === '/peers') {
    const peers = chat.peers()
    return print(peers.length ? peers.map((p) => `  ${p}`).join('\n') : '  (no peers yet)')
  }
  if (text.length === 0) return
  queue = queue.then(async () => {
    try {
      const got = await chat.send(text, nick)
      if (got.length === 0) print('(nobody got it: no peers in this topic yet)')
    } catch (err) {
      print(`(not sent: ${err instanceof Error ? err.message : String(err)})`)
    }
    if (process.stdin.isTTY) input.prompt()
  })
})
// end of input (Ctrl-D, or a closed pipe): leave once the queued messages are sent
input.on('close', () => {
  void queue.then(quit)
})
