/**
 * `startDev()`: `mesh dev` as a function. The pieces are beside it: config-files.ts (what to watch,
 * content hashes), reload-queue.ts (debounce, one reload at a time, idle), runtime-topics.ts (topics
 * carried over a rebuild), reload-report.ts (what each reload did) and watch-files.ts.
 */
import { resolve } from 'node:path'
import {
  type ConfigEnv,
  createLogger,
  definitionChanged,
  isMeshError,
  type LoadedConfig,
  type Logger,
  type LogLevel,
  loadConfig,
  type MeshConfig,
  type MeshEventBus,
  MeshKernel,
  type MeshNode,
  type PluginRegistry,
  requireDiscovery,
} from 'meshkit'
import { filesInError, hashFiles, watchSetOf } from './config-files.js'
import { createReloadQueue } from './reload-queue.js'
import { describeChanges, describeSteps, type ReloadReport } from './reload-report.js'
import { trackRuntimeTopics } from './runtime-topics.js'
import { type FileWatcher, fileLabel, watchFiles } from './watch-files.js'

export interface StartDevOptions {
  /** The project directory searched for a config. @default process.cwd() */
  cwd?: string
  /** An explicit config file (no search then). */
  configFile?: string
  /** Overrides of the config, as `mesh start` flags: they win over the file on every reload. */
  dataDir?: string
  listen?: string[]
  dial?: string[]
  logLevel?: LogLevel
  /** More overrides laid over the config on every reload (sections merge key by key), e.g. `--local`'s. */
  overrides?: MeshConfig
  /** The mode passed to a config function. @default 'development' */
  mode?: string
  /** Topics joined once the node has started (through the `discovery` slot); kept across rebuilds. */
  topics?: string[]
  /** Plugins that JSON/YAML configs may name (the CLI passes the built-ins). */
  registry?: PluginRegistry
  /** Used where the config leaves a field unset (the CLI passes the default config). */
  defaults?: MeshConfig
  logger?: Logger
  events?: MeshEventBus
  /** Changes closer together than this are one reload. @default 50 */
  debounceMs?: number
  /** Called with every reload report (also failed ones). */
  onReload?: (report: ReloadReport) => void
}

/** A running `mesh dev` session: a node that follows its config files. */
export interface DevSession {
  readonly kernel: MeshKernel
  /** The current node (a new object after a rebuild). */
  readonly node: MeshNode
  /** The config last applied, with the files it was built from. */
  readonly loaded: LoadedConfig
  /** Every reload so far, oldest first. */
  readonly reports: readonly ReloadReport[]
  /** The files watched now (the config and every local file it imports), absolute. */
  readonly watched: readonly string[]
  /** Subscribes to reload reports; returns the unsubscribe function. */
  onReload(listener: (report: ReloadReport) => void): () => void
  /** Reloads now (as if `files` changed), after any reload in progress; resolves with its report. */
  reload(files?: string[]): Promise<ReloadReport>
  /** Resolves once no reload is waiting (debounce) or running. */
  idle(): Promise<void>
  /** Stops watching, stops the node and releases everything. Idempotent. */
  close(): Promise<void>
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * `mesh dev` as a function: starts a node from the config, then watches the config file and every
 * local file it imports. Changes closer than `debounceMs` make one reload: the config is loaded fresh
 * and validated, diffed against the running one and applied with the smallest change
 * (`kernel.update`: in place when the libp2p node can stay, else a new node with the same identity,
 * swapped in, re-joining the topics joined at runtime). A config that fails to load or validate leaves
 * the running node untouched; its report carries the error with its location. After each reload the
 * watched set is derived again (imports change).
 */
export async function startDev(options: StartDevOptions = {}): Promise<DevSession> {
  const cwd = options.cwd ?? process.cwd()
  const env: ConfigEnv = { command: 'dev', mode: options.mode ?? 'development' }
  const logger = options.logger ?? createLogger({ level: options.logLevel ?? 'info' })
  const debounceMs = options.debounceMs ?? 50
  const load = () =>
    loadConfig({
      cwd,
      configFile: options.configFile,
      env,
      registry: options.registry,
      defaults: options.defaults,
      overrides: {
        ...options.overrides,
        dataDir: options.dataDir,
        listen: options.listen,
        dial: options.dial,
        logLevel: options.logLevel,
      },
    })

  let loaded = await load()
  const kernel = new MeshKernel({ env, logger, events: options.events })
  let node: MeshNode
  try {
    node = await kernel.start(loaded.config)
  } catch (err) {
    await kernel.close().catch(() => {})
    throw err
  }

  // Topics: those the config joins at start are the node's baseline; others were joined at runtime
  // (`topics`, the control API, an app) and are joined again on a rebuilt node.
  const runtimeTopics = trackRuntimeTopics()
  runtimeTopics.resetBaseline(node)
  if (options.topics?.length) {
    const topics = options.topics
    try {
      const discovery = requireDiscovery(node, '--topic')
      await Promise.all(topics.map((t) => discovery.join(t)))
    } catch (err) {
      await kernel.close().catch(() => {})
      throw err
    }
    runtimeTopics.joined(topics)
  }

  const where = { cwd, configFile: options.configFile }
  const watchSet = (l: LoadedConfig, extra: readonly string[] = []) => watchSetOf(l, where, extra)
  let hashes = await hashFiles(watchSet(loaded))
  const reports: ReloadReport[] = []
  const listeners = new Set<(report: ReloadReport) => void>()
  if (options.onReload) listeners.add(options.onReload)

  let closed = false
  const queue = createReloadQueue({
    debounceMs,
    logger,
    reloadChanged: (files, since) => reloadOnce(files, since, false),
    emit: (report) => {
      reports.push(report)
      for (const listener of listeners) {
        try {
          listener(report)
        } catch (err) {
          logger.error(`a reload listener threw: ${reasonOf(err)}`)
        }
      }
    },
  })
  const watcher: FileWatcher = watchFiles(
    watchSet(loaded),
    (file) => queue.changed(file),
    (err, dir) => logger.debug(`cannot watch ${dir}: ${reasonOf(err)}`),
  )

  let nextId = 1
  const reloadOnce = async (
    files: string[],
    since: number,
    force: boolean,
  ): Promise<ReloadReport | undefined> => {
    const previousHashes = hashes
    const current = await hashFiles(watcher.files)
    const contentChanged = [...current].some(([f, h]) => previousHashes.get(f) !== h)
    if (!contentChanged && !force) {
      logger.debug(`${files.map((f) => fileLabel(f, cwd)).join(', ')} saved without changes: no reload`)
      return undefined
    }
    const changedFiles = [...current].filter(([f, h]) => previousHashes.get(f) !== h).map(([f]) => f)
    const base = {
      id: nextId++,
      files: (changedFiles.length > 0 ? changedFiles : files).map((f) => fileLabel(f, cwd)),
      changes: [] as string[],
      actions: [] as string[],
      reasons: [] as string[],
      topicsRejoined: [] as string[],
      peerIdChanged: false,
    }
    const t0 = performance.now()
    let next: LoadedConfig
    try {
      next = await load()
    } catch (err) {
      const loadMs = performance.now() - t0
      const message = isMeshError(err) ? err.describe() : reasonOf(err)
      // a file with a syntax error may be a new import: watch it too, so fixing it reloads
      const extra = filesInError(message, cwd)
      watcher.update(watchSet(loaded, [...watcher.files, ...extra]))
      hashes = await hashFiles(watcher.files)
      const code = isMeshError(err) ? err.code : undefined
      const report: ReloadReport = {
        ...base,
        at: new Date().toISOString(),
        status: 'failed',
        mode: 'none',
        phase: code === 'MESH_ERR_CONFIG_LOAD' || code === 'MESH_ERR_CONFIG_NOT_FOUND' ? 'load' : 'validate',
        error: { code, message },
        peerId: node.peerId.toString(),
        loadMs,
        applyMs: 0,
        totalMs: performance.now() - since,
      }
      logger.debug(`reload #${report.id} failed: ${message}`)
      return report
    }
    const loadMs = performance.now() - t0
    // Local plugin files are bundled into the config: when one of them changed, each plugin that is not
    // a shared (built-in) definition may have new code.
    const configFile = next.file ?? loaded.file
    const localCodeChanged = changedFiles.some((f) => f !== configFile)
    const codeChanged = localCodeChanged
      ? (a: { definition: unknown }, b: { definition: unknown }) => a.definition !== b.definition
      : definitionChanged
    runtimeTopics.refresh(node)
    const peerBefore = node.peerId.toString()
    // the kernel restarts the running node when a new node that needed its port failed to start
    let restarted = false
    const offRestarted = kernel.events.on('node:restarted', () => {
      restarted = true
    })
    try {
      const result = await kernel.update(next.config, { codeChanged })
      node = result.node
      base.changes = describeChanges(result.diff)
      base.actions = describeSteps(result.steps)
      base.reasons = result.diff.rebuild ? result.diff.reasons : []
      if (result.mode === 'rebuild') {
        base.topicsRejoined = (await runtimeTopics.rejoinRebuilt(node, logger)) ?? base.topicsRejoined
        // peers that dial this node need its new addresses (ports of `/tcp/0`, `/udp/0` change too)
        base.actions.push(
          `node: listening on ${node.libp2p.getMultiaddrs().map(String).join(', ') || '(nothing)'}`,
        )
      }
      runtimeTopics.resetBaseline(node)
      loaded = next
      watcher.update(watchSet(next))
      hashes = await hashFiles(watcher.files)
      const peerId = node.peerId.toString()
      return {
        ...base,
        at: new Date().toISOString(),
        status: result.mode === 'none' ? 'unchanged' : 'applied',
        mode: result.mode,
        ...(result.fallback ? { fallback: result.fallback } : {}),
        peerId,
        peerIdChanged: peerId !== peerBefore,
        loadMs,
        applyMs: result.ms,
        totalMs: performance.now() - since,
      }
    } catch (err) {
      // the kernel kept the running node with its previous config; try this config again on the next save
      watcher.update(watchSet(next, watcher.files))
      hashes = await hashFiles(watcher.files)
      let message = isMeshError(err) ? err.describe() : reasonOf(err)
      if (restarted && kernel.current) {
        // same config and identity, but its connections were closed: join the runtime topics again
        node = kernel.current
        base.topicsRejoined = await runtimeTopics.rejoinRestarted(node)
        message += `\nThe running node had to stop for the new one and was started again with its previous config: its connections were closed (peers reconnect)${base.topicsRejoined.length > 0 ? `; topics joined again: ${base.topicsRejoined.join(', ')}` : ''}.`
      }
      return {
        ...base,
        at: new Date().toISOString(),
        status: 'failed',
        mode: 'none',
        phase: 'apply',
        ...(restarted ? { restarted: true } : {}),
        error: { code: isMeshError(err) ? err.code : undefined, message },
        peerId: node.peerId.toString(),
        loadMs,
        applyMs: performance.now() - t0 - loadMs,
        totalMs: performance.now() - since,
      }
    } finally {
      offRestarted()
    }
  }

  const session: DevSession = {
    kernel,
    get node() {
      return node
    },
    get loaded() {
      return loaded
    },
    reports,
    get watched() {
      return watcher.files
    },
    onReload(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async reload(files = []) {
      const started = performance.now()
      const report = await queue.enqueue(() =>
        reloadOnce(
          files.map((f) => resolve(cwd, f)),
          started,
          true,
        ),
      )
      return report as ReloadReport
    },
    idle: () => queue.idle(),
    async close() {
      if (closed) return
      closed = true
      const draining = queue.close()
      watcher.close()
      await draining
      await kernel.close()
    },
  }
  return session
}
