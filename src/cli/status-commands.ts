/**
 * `mesh status | peers | connections | topics [join|leave <topic>] | clusters`: faces of the running
 * node's control API (found through `<dataDir>/control.json` and `control.token`). Human tables by
 * default, one JSON document with `--json`. No running node is MESH_ERR_CONTROL_NOT_RUNNING (exit 2).
 */
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { MeshError, type PeerBan, parseDuration } from 'meshkit'
import {
  type ClustersSnapshot,
  type ConnectionView,
  type ControlClient,
  createControlClient,
  type PeerView,
  type StatusView,
  type TopicView,
} from '../control/index.js'
import type { CliIo } from './run-cli.js'

export interface StatusCommandOptions {
  /** The running node's data dir. @default '.mesh' (relative to cwd) */
  dataDir?: string
  cwd: string
  json?: boolean
}

export type StatusCommandName = 'status' | 'peers' | 'connections' | 'topics' | 'clusters'

/** The client of the node running in the command's data dir. */
export function clientFor(opts: { cwd: string; dataDir?: string }): ControlClient {
  return createControlClient({ dataDir: resolve(opts.cwd, opts.dataDir ?? '.mesh') })
}

/** A duration such as `3d 4h`, `5m 2s` or `800 ms`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  const s = Math.floor(ms / 1000)
  const parts: Array<[number, string]> = [
    [Math.floor(s / 86_400), 'd'],
    [Math.floor((s % 86_400) / 3600), 'h'],
    [Math.floor((s % 3600) / 60), 'm'],
    [s % 60, 's'],
  ]
  const first = parts.findIndex(([n]) => n > 0)
  return parts
    .slice(first, first + 2)
    .map(([n, u]) => `${n}${u}`)
    .join(' ')
}

/** Left-aligned columns with a header row; `(none)` for no rows. */
export function table(header: string[], rows: string[][]): string {
  if (rows.length === 0) return '(none)\n'
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd()
  return `${[line(header), ...rows.map(line)].join('\n')}\n`
}

function statusText(s: StatusView): string {
  const nat = s.nat
    ? [s.nat.udp && `UDP ${s.nat.udp}`, s.nat.tcp && `TCP ${s.nat.tcp}`].filter(Boolean).join(', ') ||
      'classified (no verdict)'
    : 'not classified'
  return [
    `Node ${s.name} (${s.state}, up ${formatDuration(s.uptimeMs)})`,
    `  peer id:      ${s.peerId}`,
    `  addresses:    ${s.addresses.length === 0 ? '(none)' : s.addresses.join('\n                ')}`,
    `  peers:        ${s.peers} (${s.connections} connection${s.connections === 1 ? '' : 's'})`,
    `  topics:       ${s.topics.length === 0 ? '(none)' : s.topics.join(', ')}`,
    `  NAT:          ${nat}`,
    `  plugins:      ${s.plugins.map((p) => p.name).join(', ')}`,
    '',
  ].join('\n')
}

function peersText(peers: PeerView[]): string {
  return table(
    ['PEER ID', 'CONNS', 'PENALTY', 'TOPICS', 'ADDRESSES'],
    peers.map((p) => [
      p.peerId,
      String(p.connections),
      String(p.penalty ?? 0),
      p.topics.join(',') || '-',
      p.addresses.join(' ') || '-',
    ]),
  )
}

function bansText(bans: PeerBan[], now: number): string {
  return table(
    ['BANNED PEER', 'ENDS IN', 'BANS', 'IPS', 'REASON'],
    bans.map((b) => [
      b.peerId,
      formatDuration(Math.max(0, b.until - now)),
      String(b.count),
      b.ips.join(',') || '-',
      b.reason,
    ]),
  )
}

function connectionsText(connections: ConnectionView[], now: number): string {
  return table(
    ['PEER ID', 'DIR', 'TRANSPORT', 'METHOD', 'AGE', 'REMOTE ADDRESS'],
    connections.map((c) => [
      c.peerId,
      c.direction === 'inbound' ? 'in' : 'out',
      c.transport,
      c.method,
      formatDuration(Math.max(0, now - c.openedAt)),
      c.remoteAddr,
    ]),
  )
}

function topicsText(topics: TopicView[]): string {
  return table(
    ['TOPIC', 'PEERS', 'PEER IDS'],
    topics.map((t) => [t.topic, String(t.peers.length), t.peers.join(' ') || '-']),
  )
}

function clustersText(snapshot: ClustersSnapshot): string {
  const head = snapshot.tags ? `own tags: ${snapshot.tags.join(', ') || '(none)'}\n` : ''
  return (
    head +
    table(
      ['CLUSTER', 'OWN', 'MEMBERS', 'CONNECTED', 'TAGS'],
      snapshot.clusters.map((c) => [
        c.id,
        c.own === undefined ? '-' : c.own ? 'yes' : 'no',
        String(c.members.length),
        String(c.members.filter((m) => m.connected).length),
        c.tags.join(','),
      ]),
    )
  )
}

/** Runs one of the read-only commands against the running node. */
export async function statusCommand(
  name: StatusCommandName,
  opts: StatusCommandOptions,
  io: CliIo,
): Promise<void> {
  const client = clientFor(opts)
  const print = (value: unknown, human: (v: never) => string) =>
    io.stdout(opts.json ? `${JSON.stringify(value)}\n` : human(value as never))
  switch (name) {
    case 'status':
      return print(await client.status(), statusText)
    case 'peers': {
      const peers = await client.peers()
      if (opts.json) return print(peers, peersText)
      const bans = await client.bans()
      io.stdout(peersText(peers))
      if (bans.length > 0) io.stdout(`\n${bansText(bans, Date.now())}`)
      return
    }
    case 'connections': {
      const connections = await client.connections()
      return print(connections, (c: ConnectionView[]) => connectionsText(c, Date.now()))
    }
    case 'topics':
      return print(await client.topics(), topicsText)
    case 'clusters':
      return print(await client.clusters(), clustersText)
  }
}

/** `mesh bans`, `mesh bans add <peer>`, `mesh bans lift <peer>` on the running node. */
export async function bansCommand(
  action: string | undefined,
  peer: string | undefined,
  opts: StatusCommandOptions & { duration?: string; reason?: string },
  io: CliIo,
): Promise<void> {
  const client = clientFor(opts)
  const out = (value: unknown, human: string) => io.stdout(opts.json ? `${JSON.stringify(value)}\n` : human)
  if (action === undefined) {
    const bans = await client.bans()
    return out(bans, bansText(bans, Date.now()))
  }
  if (action !== 'add' && action !== 'lift')
    throw new MeshError('MESH_ERR_INVALID_ARGUMENT', `Unknown bans action '${action}'.`, {
      hint: 'Use `mesh bans` to list, `mesh bans add <peer id>` or `mesh bans lift <peer id>`.',
    })
  if (!peer)
    throw new MeshError('MESH_ERR_INVALID_ARGUMENT', `mesh bans ${action} needs a peer id.`, {
      hint: `Run \`mesh bans ${action} <peer id>\`.`,
    })
  if (action === 'lift') {
    const result = await client.unban(peer)
    return out(result, result.lifted ? `lifted the ban of ${peer}\n` : `${peer} was not banned\n`)
  }
  let durationMs: number | undefined
  if (opts.duration !== undefined) {
    durationMs = parseDuration(opts.duration)
    if (durationMs === undefined || durationMs < 1000 || durationMs > 86_400_000)
      throw new MeshError(
        'MESH_ERR_INVALID_ARGUMENT',
        `--duration ${opts.duration} is not a duration from 1s to 24h.`,
        {
          hint: 'Write e.g. --duration 30m (or 90s, 2h).',
        },
      )
  }
  const ban = await client.ban(peer, { reason: opts.reason, durationMs })
  return out(ban, `banned ${peer} for ${formatDuration(ban.until - ban.since)}\n`)
}

/** `mesh topics join|leave <topic>` on the running node. */
export async function topicCommand(
  action: string,
  topic: string | undefined,
  opts: StatusCommandOptions,
  io: CliIo,
): Promise<void> {
  if (action !== 'join' && action !== 'leave')
    throw new MeshError('MESH_ERR_INVALID_ARGUMENT', `Unknown topics action '${action}'.`, {
      hint: 'Use `mesh topics` to list, `mesh topics join <topic>` or `mesh topics leave <topic>`.',
    })
  if (!topic)
    throw new MeshError('MESH_ERR_INVALID_ARGUMENT', `mesh topics ${action} needs a topic name.`, {
      hint: `Run \`mesh topics ${action} <topic>\`.`,
    })
  const client = clientFor(opts)
  const result = action === 'join' ? await client.join(topic) : await client.leave(topic)
  io.stdout(
    opts.json
      ? `${JSON.stringify(result)}\n`
      : `${
          result.changed === false
            ? action === 'join'
              ? `already joined ${topic}`
              : `not joined: ${topic} (nothing to leave)`
            : `${action === 'join' ? 'joined' : 'left'} ${topic}`
        }; topics now: ${result.topics.join(', ') || '(none)'}\n`,
  )
}

/**
 * `mesh dashboard`: a new one-time login link to the running node's dashboard (it needs the data dir's
 * token, so only a user who can read the data dir gets one). `--open` opens it in the browser instead of
 * printing it: the browser's command line then holds a code that is single-use and valid for a minute.
 */
export async function dashboardCommand(
  opts: StatusCommandOptions & { open?: boolean },
  io: CliIo,
): Promise<void> {
  const client = clientFor(opts)
  const link = await client.loginUrl()
  if (opts.json) {
    io.stdout(`${JSON.stringify(link)}\n`)
    return
  }
  if (opts.open) {
    const { canOpenBrowser, openBrowser } = await import('../demo/open-browser.js')
    if (canOpenBrowser() && (await openBrowser(link.url))) {
      io.stdout('opened the dashboard in your browser\n')
      return
    }
    io.stdout('(no browser could be opened here)\n')
  }
  io.stdout(
    `${link.url}\n(one-time login link, valid for ${Math.round((link.expiresAt - Date.now()) / 1000)} s)\n`,
  )
}

/** Adds `status`, `peers`, `connections`, `topics`, `clusters` and `dashboard` to the `mesh` program. */
export function registerStatusCommands(program: Command, io: CliIo): void {
  const common = (cmd: Command) =>
    cmd
      .option('-d, --data-dir <dir>', 'data dir of the running node (default: .mesh)')
      .option('--json', 'print one JSON document instead of a table')
  const descriptions: Record<StatusCommandName, string> = {
    status: 'show the running node: peer id, addresses, peers, topics, NAT verdict, plugins',
    peers: 'list the connected peers of the running node, with their topics',
    connections: 'list the open connections: direction, transport, method (direct, hole-punched, relayed)',
    topics: 'list joined topics and their peers; `topics join|leave <topic>` changes them',
    clusters: 'list the clusters of the running node (needs a clustering plugin)',
  }
  for (const name of ['status', 'peers', 'connections', 'clusters'] as const) {
    common(program.command(name).description(descriptions[name])).action((opts) =>
      statusCommand(name, { ...opts, cwd: process.cwd() }, io),
    )
  }
  common(
    program
      .command('topics')
      .description(descriptions.topics)
      .argument('[action]', 'join | leave')
      .argument('[topic]', 'the topic to join or leave'),
  ).action((action: string | undefined, topic: string | undefined, opts) =>
    action === undefined
      ? statusCommand('topics', { ...opts, cwd: process.cwd() }, io)
      : topicCommand(action, topic, { ...opts, cwd: process.cwd() }, io),
  )
  common(
    program
      .command('bans')
      .description('list the peers this node banned; `bans add|lift <peer id>` bans or lifts a ban')
      .argument('[action]', 'add | lift')
      .argument('[peer]', 'the peer id')
      .option(
        '--duration <duration>',
        'how long an added ban lasts, e.g. 30m (default: security.banDuration)',
      )
      .option('--reason <text>', 'why (shown by mesh bans)'),
  ).action((action: string | undefined, peer: string | undefined, opts) =>
    bansCommand(action, peer, { ...opts, cwd: process.cwd() }, io),
  )
  program
    .command('dashboard')
    .description("print a one-time login link to the running node's dashboard (valid 60 s)")
    .option('-d, --data-dir <dir>', 'data dir of the running node (default: .mesh)')
    .option('--open', 'open the link in the browser instead of printing it')
    .option('--json', 'print {"url","code","expiresAt"}')
    .action((opts) => dashboardCommand({ ...opts, cwd: process.cwd() }, io))
}
