import { resolve } from 'node:path'
import type { Command } from 'commander'
import {
  createEventBus,
  createLogger,
  type DiscoverySlotApi,
  type LogFormat,
  type LogLevel,
  type MeshEvent,
  requireDiscovery,
  startMemoryReclaimer,
  startMesh,
  throttleLog,
} from 'meshkit'
import { builtinPlugins, defaultConfig } from 'meshkit/plugins'
import { type ControlServer, startControlServer } from '../control/index.js'
import { dashboardLinkText } from './dashboard-link.js'
import { cliOverrides } from './local-mesh.js'
import { createOutput, showStartupProgress } from './output.js'
import type { CliIo } from './run-cli.js'
import { closeWithin, handleStopSignals } from './stop-signals.js'

export interface StartCommandOptions {
  cwd: string
  config?: string
  dataDir?: string
  listen?: string[]
  dial?: string[]
  json?: boolean
  logLevel?: LogLevel
  /** Log lines as text or JSON (pino-compatible). @default 'text' */
  logFormat?: LogFormat
  mode: string
  /** A mesh on this machine (see LOCAL_OVERRIDES). */
  local?: boolean
  /** Topics to join once started (needs a plugin providing the `discovery` slot, e.g. kadTopics()). */
  topic?: string[]
  /** Serve the control API (127.0.0.1, token in the data dir). `--no-control` sets false. @default true */
  control?: boolean
  /** The control API's port. @default 0 (a free port) */
  controlPort?: number
  /** Serve the control API on this unix socket (mode 0600) instead of 127.0.0.1. */
  controlSocket?: string
  /** Serve the dashboard on the control API (implies the control API). */
  dashboard?: boolean
}

/**
 * `mesh start`: runs a node until SIGINT/SIGTERM, then stops every plugin in reverse order.
 * The signal handlers are installed before the node starts (a signal during startup stops the node
 * as soon as it has started), so whoever reads the `started` line may signal at once: it is never
 * Node's default handler (killed by the signal, nothing stopped) that gets it.
 */
export async function startCommand(opts: StartCommandOptions, io: CliIo, _cmd?: Command): Promise<void> {
  // progress lines (human mode only) on stdout; log lines go through it so a live line stays intact
  const output = createOutput({ write: io.stdout, isTTY: process.stdout.isTTY === true })
  const logger = createLogger({
    level: opts.logLevel ?? 'info',
    format: opts.logFormat,
    write: (line) => output.log(line),
  })
  let endProgress: (() => void) | undefined
  let control: ControlServer | undefined
  const signals = handleStopSignals({
    say: (text, _signal, again) => (again ? logger.warn(text) : logger.info(text)),
  })
  // a long-running node gives back the memory of a burst (e.g. a flood from hostile peers) once quiet
  const reclaimer = startMemoryReclaimer({
    onReclaim: (r) =>
      logger.debug(`memory reclaimed: RSS ${r.rssBeforeMb} -> ${r.rssAfterMb} MB (${r.ms} ms)`),
  })
  // --json: the node's events from the very start (connections opened while it starts included), kept
  // until the `started` line is out, each stamped when it happened
  const events = createEventBus()
  const early: Array<{ event: MeshEvent; time: number }> = []
  let offEarly = opts.json
    ? events.on('*', (event) => {
        if (event.event !== 'node:started') early.push({ event, time: Date.now() })
      })
    : undefined
  try {
    const mesh = await startMesh({
      events,
      cwd: opts.cwd,
      configFile: opts.config,
      env: { command: 'start', mode: opts.mode },
      registry: builtinPlugins,
      defaults: defaultConfig(),
      overrides: cliOverrides(opts, { logLevel: opts.logLevel }),
      logger,
    })
    const { node } = mesh
    let discovery: DiscoverySlotApi | undefined
    if (opts.topic?.length) {
      try {
        discovery = requireDiscovery(node, '--topic')
      } catch (err) {
        await mesh.close()
        throw err
      }
    }
    const addresses = node.libp2p.getMultiaddrs().map(String)
    if (opts.json) {
      const line = (event: MeshEvent, time = Date.now()) =>
        io.stdout(`${JSON.stringify({ ...event, time })}\n`)
      line({ event: 'started', peerId: node.peerId.toString(), addresses })
      offEarly?.()
      offEarly = undefined
      for (const e of early.splice(0)) line(e.event, e.time)
      mesh.kernel.events.on('*', (event) => {
        if (event.event !== 'node:started') line(event)
      })
    } else {
      io.stdout(
        `Meshkit node ${mesh.loaded.config.name} started\n  peer id: ${node.peerId}\n  config:  ${mesh.loaded.file ?? '(defaults)'}\n  listening on:\n${addresses.map((a) => `    ${a}`).join('\n')}\n`,
      )
      // a remote peer decides how often these happen: a few lines per 10 s, the rest summed up
      const peerLog = throttleLog((m) => logger.info(m), { what: 'connections and disconnections' })
      mesh.kernel.events.on('peer:connect', (e) => peerLog(`peer connected: ${e.peerId}`))
      mesh.kernel.events.on('peer:disconnect', (e) => peerLog(`peer disconnected: ${e.peerId}`))
      mesh.kernel.events.on('topic:peer', (e) => logger.info(`topic ${e.topic}: peer ${e.peerId}`))
      mesh.kernel.events.on('topic:peer:lost', (e) =>
        logger.info(`topic ${e.topic}: lost ${e.peerId} (${e.reason})`),
      )
      endProgress = showStartupProgress(node, mesh.kernel.events, output)
    }
    // after the event subscriptions above, so that no event of the first dials is missed meanwhile
    if (opts.control !== false || opts.dashboard) {
      try {
        control = await startControlServer({
          kernel: mesh.kernel,
          dataDir: mesh.loaded.config.dataDir,
          port: opts.controlPort ?? 0,
          socketPath: opts.controlSocket ? resolve(opts.cwd, opts.controlSocket) : undefined,
          dashboard: opts.dashboard === true,
          logger: logger.child('control'),
        })
      } catch (err) {
        await mesh.close().catch(() => {})
        throw err
      }
      const dashboard = opts.dashboard === true
      if (opts.json)
        io.stdout(
          `${JSON.stringify({ event: 'control', url: control.url, socketPath: control.socketPath, dashboard, time: Date.now() })}\n`,
        )
      else
        output.line(
          `  control: ${control.socketPath ? `unix socket ${control.socketPath}` : control.url} (mesh status)${dashboard ? `\n  dashboard: ${dashboardLinkText(control, process.stdout.isTTY === true, mesh.loaded.config.dataDir)}` : ''}`,
        )
    }
    if (discovery && opts.topic?.length) await Promise.all(opts.topic.map((t) => discovery.join(t)))

    // a signal may have come while the node was starting: then this resolves at once
    await signals.untilSignal()
    await closeWithin(
      async () => {
        // the control API first: control.json goes away before the node does
        await control?.close().catch(() => {})
        await mesh.close()
      },
      mesh.loaded.config.shutdownTimeout,
      (text) => logger.error(text),
    )
    if (opts.json) io.stdout(`${JSON.stringify({ event: 'stopped', time: Date.now() })}\n`)
  } finally {
    offEarly?.()
    await control?.close().catch(() => {})
    endProgress?.()
    output.close()
    signals.dispose()
    reclaimer.stop()
  }
}
