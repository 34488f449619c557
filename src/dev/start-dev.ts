import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import {
  CONFIG_SEARCH_PLACES,
  type ConfigEnv,
  createLogger,
  type DiscoverySlotApi,
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
  SLOT_CAPABILITIES,
} from 'meshkit'
import { describeChanges, describeSteps, type ReloadReport } from './reload-report.js'
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

/** The `discovery` slot's API (the session carries runtime topics over a rebuild with it), if any. */
function discoveryOf(node: MeshNode): Pick<DiscoverySlotApi, 'join' | 'topics'> | undefined {
  return node.tryApi<DiscoverySlotApi>(SLOT_CAPABILITIES.discovery, 'join', 'topics')
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

async function hashFiles(files: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  await Promise.all(
    files.map(async (file) => {
      const content = await readFile(file).catch(() => undefined)
      out.set(file, content ? createHash('sha256').update(content).digest('hex') : 'missing')
    }),
  )
  return out
}

/** Files named in an error's `(at file:line:col)` locations, absolute. */
function filesInError(text: string, cwd: string): string[] {
  return [...text.matchAll(/\(at (.+?):\d+:\d+\)/g)].map((m) => resolve(cwd, m[1]))
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
  const runtimeTopics = new Set<string>()
  let baseline = new Set<string>()
  const refreshTopics = () => {
    const current = discoveryOf(node)?.topics() ?? []
    const now = new Set(current)
    for (const t of [...runtimeTopics]) if (!now.has(t)) runtimeTopics.delete(t)
    for (const t of current) if (!baseline.has(t)) runtimeTopics.add(t)
  }
  const resetBaseline = () => {
    baseline = new Set((discoveryOf(node)?.topics() ?? []).filter((t) => !runtimeTopics.has(t)))
  }
  resetBaseline()
  if (options.topics?.length) {
    const topics = options.topics
    try {
      const discovery = requireDiscovery(node, '--topic')
      await Promise.all(topics.map((t) => discovery.join(t)))
    } catch (err) {
      await kernel.close().catch(() => {})
      throw err
    }
    for (const t of topics) if (!baseline.has(t)) runtimeTopics.add(t)
  }

  const watchSet = (l: LoadedConfig, extra: readonly string[] = []) => {
    const files = new Set([...l.dependencies, ...extra])
    if (l.file) files.add(l.file)
    else if (options.configFile) files.add(resolve(cwd, options.configFile))
    else for (const place of CONFIG_SEARCH_PLACES) files.add(resolve(cwd, place))
    return [...files]
  }
  let hashes = await hashFiles(watchSet(loaded))
  const reports: ReloadReport[] = []
  const listeners = new Set<(report: ReloadReport) => void>()
  if (options.onReload) listeners.add(options.onReload)

  let closed = false
  let timer: NodeJS.Timeout | undefined
  let firstChange: number | undefined
  const pendingFiles = new Set<string>()
  let running: Promise<unknown> = Promise.resolve()
  /** Reloads waiting or running. */
  let queued = 0
  let idleWaiters: Array<() => void> = []
  const isIdle = () => queued === 0 && timer === undefined
  const settleIdle = () => {
    if (!isIdle()) return
    for (const wake of idleWaiters.splice(0)) wake()
  }

  const watcher: FileWatcher = watchFiles(
    watchSet(loaded),
    (file) => {
      if (closed) return
      pendingFiles.add(file)
      firstChange ??= performance.now()
      clearTimeout(timer)
      timer = setTimeout(() => {
        timer = undefined
        // a failure is logged where the queue catches it
        schedule().catch(() => {})
      }, debounceMs)
    },
    (err, dir) => logger.debug(`cannot watch ${dir}: ${reasonOf(err)}`),
  )

  const emit = (report: ReloadReport) => {
    reports.push(report)
    for (const listener of listeners) {
      try {
        listener(report)
      } catch (err) {
        logger.error(`a reload listener threw: ${reasonOf(err)}`)
      }
    }
  }

  /** Runs reloads one at a time, in order; emits each report; tracks idleness for `idle()`. */
  const enqueue = (job: () => Promise<ReloadReport | undefined>): Promise<ReloadReport | undefined> => {
    queued++
    const run = running.then(async () => {
      const report = await job()
      if (report) emit(report)
      return report
    })
    running = run
      .catch((err: unknown) => logger.error(`reload failed unexpectedly: ${reasonOf(err)}`))
      .finally(() => {
        queued--
        settleIdle()
      })
    return run
  }
  const schedule = () =>
    enqueue(async () => {
      if (closed || pendingFiles.size === 0) return undefined
      const files = [...pendingFiles]
      pendingFiles.clear()
      const since = firstChange ?? performance.now()
      firstChange = undefined
      return reloadOnce(files, since, false)
    })

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
    refreshTopics()
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
        const discovery = discoveryOf(node)
        if (discovery) {
          const joined = new Set(discovery.topics())
          const missing = [...runtimeTopics].filter((t) => !joined.has(t))
          // the node is rebuilt whatever happens here: a topic that cannot be joined is logged
          const results = await Promise.allSettled(missing.map((t) => discovery.join(t)))
          results.forEach((r, i) => {
            if (r.status === 'rejected')
              logger.warn(`could not join topic ${missing[i]} again on the new node: ${reasonOf(r.reason)}`)
          })
          base.topicsRejoined = missing.filter((_, i) => results[i].status === 'fulfilled')
        }
        // peers that dial this node need its new addresses (ports of `/tcp/0`, `/udp/0` change too)
        base.actions.push(
          `node: listening on ${node.libp2p.getMultiaddrs().map(String).join(', ') || '(nothing)'}`,
        )
      }
      resetBaseline()
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
        const discovery = discoveryOf(node)
        const topics = [...runtimeTopics].filter((t) => !(discovery?.topics() ?? []).includes(t))
        const results = await Promise.allSettled(topics.map((t) => discovery?.join(t)))
        base.topicsRejoined = topics.filter((_, i) => results[i].status === 'fulfilled')
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
      const report = await enqueue(() =>
        reloadOnce(
          files.map((f) => resolve(cwd, f)),
          started,
          true,
        ),
      )
      return report as ReloadReport
    },
    idle() {
      if (isIdle()) return Promise.resolve()
      return new Promise((resolveIdle) => idleWaiters.push(resolveIdle))
    },
    async close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      timer = undefined
      watcher.close()
      await running
      for (const wake of idleWaiters.splice(0)) wake()
      idleWaiters = []
      await kernel.close()
    },
  }
  return session
}
