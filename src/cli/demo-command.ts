import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { type Command, InvalidArgumentError, Option } from 'commander'
import { LOG_LEVELS, type LogLevel } from 'meshkit'
import { canOpenBrowser, openBrowser } from '../demo/open-browser.js'
import { checkDemoPlan, DEFAULT_DEMO_PEERS, DEFAULT_DEMO_TOPICS } from '../demo/plan.js'
import type { DemoProgress, DemoSummary } from '../demo/types.js'
import { dataDirArg } from './dashboard-link.js'
import { createOutput, formatMs, type Output, type ProgressStep } from './output.js'
import type { CliIo } from './run-cli.js'
import { handleStopSignals } from './stop-signals.js'

export interface DemoCommandOptions {
  /** @default 20 */
  peers?: number
  /** @default ['alpha', 'beta', 'gamma'] */
  topics?: string[]
  /** Open the dashboard in a browser when there is a desktop. @default true */
  open?: boolean
  /** Stop by itself after this many seconds (after every peer started). @default run until SIGINT/SIGTERM */
  duration?: number
  /** Dashboard / control API port on 127.0.0.1. @default 0 (a free one) */
  controlPort?: number
  /** Print JSON lines (progress events, then `{"event":"summary",...}`) instead of text. */
  json?: boolean
  logLevel?: LogLevel
  /** Whether stdout is a terminal (live progress line). @default process.stdout.isTTY */
  isTTY?: boolean
}

function intArg(what: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(
        `${what} is a whole number from ${min} to ${max}, got ${JSON.stringify(value)}.`,
      )
    return n
  }
}

function secondsArg(value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 86_400)
    throw new InvalidArgumentError(`a number of seconds from 0 to 86400, got ${JSON.stringify(value)}.`)
  return n
}

function topicsArg(value: string): string[] {
  const topics = value
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0)
  if (topics.length === 0) throw new InvalidArgumentError('give at least one topic, e.g. --topics alpha,beta')
  return topics
}

/** Adds `mesh demo` to the program. */
export function registerDemoCommand(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description(
      'run a local mesh on loopback (a bootstrap/relay node + N peers) and watch it on the dashboard',
    )
    .option(
      '-p, --peers <n>',
      'peers besides the bootstrap node',
      intArg('--peers', 2, 100),
      DEFAULT_DEMO_PEERS,
    )
    .option('-t, --topics <list>', 'comma-separated topics the peers join (overlapping)', topicsArg, [
      ...DEFAULT_DEMO_TOPICS,
    ])
    .option(
      '--no-open',
      'do not open the dashboard in a browser (it is opened only where there is a desktop)',
    )
    .option(
      '--duration <seconds>',
      'stop by itself this long after every peer started (default: until Ctrl-C)',
      secondsArg,
    )
    .option(
      '--control-port <port>',
      'port of the dashboard on 127.0.0.1 (default: a free one)',
      intArg('--control-port', 0, 65535),
    )
    .option('--json', 'print JSON lines: each progress event, then {"event":"summary",...}')
    .addOption(new Option('--log-level <level>', 'log level of the nodes on stderr').choices(LOG_LEVELS))
    .action((opts: DemoCommandOptions) => demoCommand(opts, io))
}

/**
 * `mesh demo`: starts the local mesh and its dashboard, shows progress, and on SIGINT/SIGTERM (or after
 * `--duration`) stops every node, removes the temp dir and prints the summary.
 */
export async function demoCommand(opts: DemoCommandOptions, io: CliIo): Promise<void> {
  const peers = opts.peers ?? DEFAULT_DEMO_PEERS
  const topics = opts.topics ?? [...DEFAULT_DEMO_TOPICS]
  const out = createOutput({
    write: io.stdout,
    writeLog: io.stderr,
    isTTY: opts.json ? false : (opts.isTTY ?? process.stdout.isTTY === true),
  })
  const c = out.colors
  const json = (event: Record<string, unknown>) =>
    io.stdout(`${JSON.stringify({ ...event, time: Date.now() })}\n`)
  const abort = new AbortController()
  let demoDir: string | undefined
  const signals = handleStopSignals({
    say: (text, _signal, again) => {
      if (again) out.log(`${text} for the nodes`)
    },
    onFirst: () => abort.abort(),
    // the nodes die with the process; their temp dir must not stay behind
    beforeExit: () => {
      if (demoDir) rmSync(demoDir, { recursive: true, force: true })
    },
  })

  let started = 0
  let starting: ProgressStep | undefined
  let waiting: ProgressStep | undefined
  let stopping: ProgressStep | undefined
  const onProgress = (e: DemoProgress) => {
    if (e.type === 'observer-started') demoDir = e.dir
    if (opts.json) {
      json({ event: `demo:${e.type}`, ...e, type: undefined, loginUrl: undefined })
      return
    }
    switch (e.type) {
      case 'observer-started':
        // a login link only to a terminal (see dashboard-link.ts); the observer's data dir has the token
        out.line(
          `${c.bold('Dashboard:')} ${c.cyan(out.isTTY ? e.loginUrl() : e.url)}${c.dim(out.isTTY ? ' (one-time login link, valid 60 s)' : ` (log in: mesh dashboard${dataDirArg(join(e.dir, 'observer'))})`)}`,
        )
        out.line(c.dim(`  bootstrap/relay node ${e.peerId}; data in ${e.dir} (removed at exit)`))
        starting = out.step(`starting ${peers} peers`)
        break
      case 'peer-started':
        started++
        // a live count in a terminal; in plain output a line every 5 peers
        starting?.update(`starting peers: ${started}/${e.count}`, {
          plain: started % 5 === 0 && started < e.count,
        })
        break
      case 'mesh-up':
        starting?.succeed(`${e.peers} peers started in ${formatMs(e.ms)}`)
        starting = undefined
        waiting = out.step(
          `waiting for rendezvous in ${topics.length} topic${topics.length === 1 ? '' : 's'}`,
        )
        break
      case 'cluster-created':
        out.line(`  cluster {${e.tags.join(', ')}} formed`)
        break
      case 'topic-rendezvous':
        out.line(
          `${c.green('✔')} topic ${c.bold(e.topic)}: ${e.members} members rendezvoused in ${formatMs(e.ms)} (${formatMs(e.sinceStartMs)} after the start)`,
        )
        break
      case 'stopping':
        starting?.stop()
        waiting?.stop()
        stopping = out.step(`stopping ${e.nodes} nodes`)
        break
      case 'stopped':
        stopping?.succeed(`stopped ${peers + 1} nodes in ${formatMs(e.ms)}`)
        stopping = undefined
        break
      case 'rendezvous-complete':
        waiting?.succeed(`all ${e.topics} topics rendezvoused, ${formatMs(e.ms)} after the start`)
        waiting = undefined
        out.line(
          opts.duration !== undefined
            ? `Running for ${opts.duration} s after the start of the peers; Ctrl-C stops it earlier.`
            : 'Press Ctrl-C to stop.',
        )
        break
    }
  }
  try {
    // a plan that cannot work is reported before anything is printed or started
    checkDemoPlan(peers, topics)
    if (!opts.json)
      out.line(
        `${c.bold('Meshkit demo')}: a bootstrap/relay node + ${peers} peers in topics ${topics.join(', ')}, on 127.0.0.1 only`,
      )
    const summary = await (await import('../demo/run-demo.js')).runDemo({
      peers,
      topics,
      durationMs: opts.duration === undefined ? undefined : opts.duration * 1000,
      controlPort: opts.controlPort,
      logLevel: opts.logLevel ?? 'error',
      logger: undefined,
      signal: abort.signal,
      onProgress,
      onReady: (demo) => {
        if (opts.open === false || opts.json) return
        const fresh = () =>
          out.isTTY
            ? `${demo.control.loginUrl()} (one-time login link, valid 60 s)`
            : `the link that \`mesh dashboard${dataDirArg(join(demo.dir, 'observer'))}\` prints`
        if (!canOpenBrowser()) {
          out.line(c.dim(`  (no desktop here: open ${fresh()} in a browser)`))
          return
        }
        // the browser's command line (visible to every local user) gets a single-use, short-lived code
        void openBrowser(demo.control.loginUrl()).then((ok) =>
          out.line(c.dim(ok ? '  opened the dashboard in your browser' : `  (open ${fresh()} in a browser)`)),
        )
      },
    })
    starting?.stop()
    waiting?.stop()
    if (!summary) {
      out.close()
      if (opts.json) json({ event: 'demo:stopped', during: 'startup' })
      else out.line(`${signals.received ?? 'stop'} during startup: stopped every node that had started.`)
      return
    }
    out.close()
    if (opts.json) json({ event: 'summary', ...summary })
    else printSummary(out, summary, signals.received)
  } finally {
    out.close()
    signals.dispose()
  }
}

function printSummary(out: Output, s: DemoSummary, signal: NodeJS.Signals | undefined): void {
  const c = out.colors
  out.line('')
  out.line(
    `${c.bold('Summary')} (${signal ? `${signal}, ` : ''}ran ${formatMs(s.runMs)}; ${s.peers} peers + 1 bootstrap/relay node; peers started in ${s.startupMs === undefined ? '?' : formatMs(s.startupMs)})`,
  )
  out.line(
    '  rendezvous (every member connected to min(8, members) topic peers, the bootstrap node included):',
  )
  const width = Math.max(...s.topics.map((t) => t.topic.length))
  for (const t of s.topics) {
    const name = t.topic.padEnd(width)
    if (t.rendezvousMs !== undefined)
      out.line(
        `    ${name}  ${String(t.members).padStart(3)} members  rendezvous ${formatMs(t.rendezvousMs)} after its last member started (${formatMs(t.sinceStartMs ?? 0)} after the start)`,
      )
    else
      out.line(
        `    ${name}  ${String(t.members).padStart(3)} members  ${c.yellow('not rendezvoused yet')} (${t.ready}/${t.members} members had their topic peers)`,
      )
  }
  const formed = s.clusters.filter((cl) => cl.members > 0)
  out.line(
    `  clusters formed: ${formed.length} (peers grouped by their topic tags, seen by the bootstrap node)`,
  )
  const label = (tags: string[]) => `{${tags.join(', ')}}`
  const labelWidth = Math.max(0, ...formed.map((cl) => label(cl.tags).length))
  for (const cl of formed) {
    const id = cl.id === `tags:${cl.tags.join(',')}` ? '' : c.dim(` (cluster ${cl.id})`)
    out.line(
      `    ${label(cl.tags).padEnd(labelWidth)}  ${cl.members} peer${cl.members === 1 ? '' : 's'}${id}`,
    )
  }
  out.line(
    s.complete
      ? c.green(`Every topic rendezvoused. Stopped cleanly: every node closed, temp dir removed.`)
      : c.yellow('Stopped before every topic rendezvoused. Every node closed, temp dir removed.'),
  )
}
