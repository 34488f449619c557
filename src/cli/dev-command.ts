import { resolve } from 'node:path'
import {
  createLogger,
  type LogFormat,
  type LogLevel,
  type MeshEvent,
  startMemoryReclaimer,
  throttleLog,
} from 'meshkit'
import { builtinPlugins, defaultConfig } from 'meshkit/plugins'
import { type ControlServer, startControlServer } from '../control/index.js'
import { type DevSession, fileLabel, formatReloadReport, type ReloadReport, startDev } from '../dev/index.js'
import { dashboardLinkText } from './dashboard-link.js'
import { LOCAL_OVERRIDES } from './local-mesh.js'
import { createOutput } from './output.js'
import type { CliIo } from './run-cli.js'
import { closeWithin, handleStopSignals } from './stop-signals.js'

export interface DevCommandOptions {
  cwd: string
  config?: string
  dataDir?: string
  listen?: string[]
  dial?: string[]
  json?: boolean
  logLevel?: LogLevel
  /** Log lines as text or JSON (pino-compatible). @default 'text' */
  logFormat?: LogFormat
  /** @default 'development' */
  mode?: string
  /** A mesh on this machine (see LOCAL_OVERRIDES). */
  local?: boolean
  /** Topics to join once started (kept when the node is rebuilt). */
  topic?: string[]
  /** Serve the control API and the dashboard. `--no-control` sets false. @default true */
  control?: boolean
  /** The control API's port. @default 0 (a free port) */
  controlPort?: number
  /** Changes closer together than this are one reload (ms). @default 50 */
  debounce?: number
}

/** Parses `--debounce <ms>`: a whole number of milliseconds, 0 to 10000. */
/**
 * `mesh dev`: runs a node that follows its config (see `startDev`), serves the control API with the
 * dashboard, and prints a report for every reload (a JSON line each with `--json`). SIGINT/SIGTERM stop
 * the watcher, the control API and the node, then the command returns.
 */
export async function devCommand(opts: DevCommandOptions, io: CliIo): Promise<void> {
  const output = createOutput({ write: io.stdout, isTTY: process.stdout.isTTY === true })
  const { colors } = output
  const logger = createLogger({
    level: opts.logLevel ?? 'info',
    format: opts.logFormat,
    write: (line) => output.log(line),
  })
  const signals = handleStopSignals({
    say: (text, _signal, again) => (again ? logger.warn(text) : logger.info(text)),
  })
  // a long-running node gives back the memory of a burst (e.g. a flood from hostile peers) once quiet
  const reclaimer = startMemoryReclaimer({
    onReclaim: (r) =>
      logger.debug(`memory reclaimed: RSS ${r.rssBeforeMb} -> ${r.rssAfterMb} MB (${r.ms} ms)`),
  })
  const line = (event: MeshEvent) => io.stdout(`${JSON.stringify({ ...event, time: Date.now() })}\n`)
  const printReport = (report: ReloadReport) => {
    if (opts.json) {
      line({ ...report, event: 'reload' })
      return
    }
    const [head, ...rest] = formatReloadReport(report).split('\n')
    const style =
      report.status === 'failed' ? colors.red : report.status === 'unchanged' ? colors.dim : colors.green
    output.line(style(head))
    for (const l of rest) output.line(l)
  }
  let session: DevSession | undefined
  let control: ControlServer | undefined
  let controlDataDir: string | undefined
  /** A move of the control API to another data dir (after a reload changed `dataDir`), if one runs. */
  let moving: Promise<void> = Promise.resolve()
  const openControl = async (dev: DevSession, port: number) => {
    controlDataDir = dev.loaded.config.dataDir
    control = await startControlServer({
      kernel: dev.kernel,
      dataDir: controlDataDir,
      port,
      dashboard: true,
      logger: logger.child('control'),
    })
    return control
  }
  const announceControl = (server: ControlServer) => {
    // no login code in JSON lines: they end up in logs (`mesh dashboard --json` gives one to a script)
    if (opts.json)
      line({ event: 'control', url: server.url, dashboard: true, dashboardUrl: `${server.url}/` })
    else
      output.line(
        `  dashboard: ${colors.cyan(dashboardLinkText(server, process.stdout.isTTY === true, controlDataDir ?? '.mesh'))}`,
      )
  }
  const followDataDir = (report: ReloadReport) => {
    const dev = session
    if (!dev || !control || report.status !== 'applied' || dev.loaded.config.dataDir === controlDataDir)
      return
    // the token and control.json live in the data dir: serve the control API from the new one
    const old = control
    moving = moving
      .then(() => old.close())
      .then(() => openControl(dev, opts.controlPort ?? 0))
      .then(announceControl, (err: unknown) =>
        logger.error(`could not move the control API to ${dev.loaded.config.dataDir}: ${String(err)}`),
      )
  }
  try {
    session = await startDev({
      cwd: opts.cwd,
      configFile: opts.config,
      dataDir: opts.dataDir === undefined ? undefined : resolve(opts.cwd, opts.dataDir),
      listen: opts.listen,
      dial: opts.dial,
      logLevel: opts.logLevel,
      overrides: opts.local ? LOCAL_OVERRIDES : undefined,
      mode: opts.mode ?? 'development',
      topics: opts.topic,
      registry: builtinPlugins,
      defaults: defaultConfig(),
      logger,
      debounceMs: opts.debounce,
      onReload: (report) => {
        printReport(report)
        followDataDir(report)
      },
    })
    const dev = session
    if (opts.control !== false) await openControl(dev, opts.controlPort ?? 0)
    const node = dev.node
    const addresses = node.libp2p.getMultiaddrs().map(String)
    const watching = dev.watched
    const dashboardUrl = control ? `${control.url}/` : undefined
    if (opts.json) {
      line({
        event: 'started',
        peerId: node.peerId.toString(),
        addresses,
        config: dev.loaded.file,
        watching: watching.map((f) => fileLabel(f, opts.cwd)),
      })
      if (control) line({ event: 'control', url: control.url, dashboard: true, dashboardUrl })
      let first = true
      dev.kernel.events.on('*', (event) => {
        // the first node:started is the `started` line above; rebuilds start (and stop) nodes again
        if (event.event === 'node:started' && first) {
          first = false
          return
        }
        line(event)
      })
    } else {
      const files = dev.loaded.file
        ? watching.map((f) => fileLabel(f, opts.cwd)).join(', ')
        : 'for a config file to appear'
      output.line(
        `${colors.bold(`Meshkit dev node ${dev.loaded.config.name}`)} started\n  peer id:   ${node.peerId}\n  config:    ${dev.loaded.file ? fileLabel(dev.loaded.file, opts.cwd) : '(defaults)'}\n  listening: ${addresses.join(', ')}\n  watching:  ${files}${control ? `\n  dashboard: ${colors.cyan(dashboardLinkText(control, process.stdout.isTTY === true, dev.loaded.config.dataDir))}` : ''}\n  Edit the config: each save is applied with the smallest change. Ctrl-C stops.`,
      )
      // a remote peer decides how often these happen: a few lines per 10 s, the rest summed up
      const peerLog = throttleLog((m) => logger.info(m), { what: 'connections and disconnections' })
      dev.kernel.events.on('peer:connect', (e) => peerLog(`peer connected: ${e.peerId}`))
      dev.kernel.events.on('peer:disconnect', (e) => peerLog(`peer disconnected: ${e.peerId}`))
      dev.kernel.events.on('topic:peer', (e) => logger.info(`topic ${e.topic}: peer ${e.peerId}`))
    }

    // a signal may have come while the node was starting: then this resolves at once
    await signals.untilSignal()
    await closeWithin(
      async () => {
        await moving.then(() => control?.close()).catch(() => {})
        await dev.close()
      },
      dev.loaded.config.shutdownTimeout,
      (text) => logger.error(text),
    )
    if (opts.json) line({ event: 'stopped' })
  } catch (err) {
    await control?.close().catch(() => {})
    await session?.close().catch(() => {})
    throw err
  } finally {
    output.close()
    signals.dispose()
    reclaimer.stop()
  }
}
