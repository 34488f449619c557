import 'reflect-metadata'
import { join } from 'node:path'
import type { Datastore } from 'interface-datastore'
import { type DependencyContainer, container as globalContainer } from 'tsyringe'
import type { ConfigDiff, DiffConfigOptions } from './config-diff.js'
import type { ConfigEnv, ResolvedMeshConfig } from './config-types.js'
import { lockDataDir } from './data-dir-lock.js'
import { MeshError, meshError, reasonOf } from './errors.js'
import { createEventBus, type MeshEventBus } from './events.js'
import { type Identity, loadOrCreateIdentity } from './identity.js'
import type { ReloadStep } from './in-place-reload.js'
import { createLogger, type Logger } from './logger.js'
import { ensurePrivateDir } from './make-dir.js'
import { MeshNode, NODE_CONTAINER } from './mesh-node.js'
import { PeerRecordCache } from './peer-record-cache.js'
import { Reputation } from './reputation.js'
import { TOKENS } from './tokens.js'

export interface MeshKernelOptions {
  /** @default { command: 'start', mode: 'production' } */
  env?: ConfigEnv
  logger?: Logger
  /** Shared across node rebuilds, so subscribers follow whichever node is current. */
  events?: MeshEventBus
}

/** What {@link MeshKernel.update} did. */
export interface UpdateResult {
  /** `none`: nothing changed; `in-place`: the running node took the config; `rebuild`: a new node was swapped in. */
  mode: 'none' | 'in-place' | 'rebuild'
  diff: ConfigDiff
  steps: ReloadStep[]
  /** The current node afterwards (a new one after a rebuild). */
  node: MeshNode
  /** Why the in-place update failed when it fell back to a rebuild (the MeshError's describe() text). */
  fallback?: string
  /** Time to apply, ms (not counting loading the config). */
  ms: number
}

interface DataDirResources {
  identity: Identity
  datastore: Datastore
  /** Penalties and bans of remote peers: they belong to the identity, so they outlive a rebuild. */
  reputation: Reputation
  close: () => Promise<void>
  users: number
}

async function openDatastore(
  config: ResolvedMeshConfig,
  logger: Logger,
): Promise<{ datastore: Datastore; close: () => Promise<void> }> {
  if (config.datastore === 'memory') {
    const { MemoryDatastore } = await import('datastore-core')
    return { datastore: new MemoryDatastore(), close: async () => {} }
  }
  const { LevelDatastore } = await import('datastore-level')
  const path = join(config.dataDir, 'datastore')
  // the peer graph and joined topics are in there: private like the data dir (LevelDB would make it 0755)
  try {
    await ensurePrivateDir(path, logger)
  } catch (err) {
    throw meshError('MESH_ERR_DATA_DIR', [config.dataDir, `cannot make ${path}: ${reasonOf(err)}`], {
      cause: err,
    })
  }
  const store = new LevelDatastore(path)
  try {
    await store.open()
  } catch (err) {
    // datastore-level rethrows as OpenFailedError(String(err)), dropping the cause (e.g. LEVEL_LOCKED
    // when another process holds the data dir); its level db tells the real reason when asked again
    const db = (store as unknown as { db?: { open(): Promise<void> } }).db
    const real: unknown = db
      ? await db.open().then(
          () => undefined,
          (e: unknown) => e,
        )
      : err
    if (db && real === undefined) return cachePeerRecords(store)
    if (isLockError(real) || isLockError(err))
      throw meshError('MESH_ERR_DATA_DIR_LOCKED', [config.dataDir], { cause: real })
    throw meshError('MESH_ERR_DATA_DIR', [config.dataDir, `cannot open the datastore: ${causeText(real)}`], {
      cause: real,
    })
  }
  return cachePeerRecords(store)
}

/** The peer store's records served from memory, their stamp-only rewrites held back (see PeerRecordCache). */
function cachePeerRecords(store: Datastore): { datastore: Datastore; close: () => Promise<void> } {
  const cache = new PeerRecordCache(store)
  return { datastore: cache, close: () => cache.close() }
}

/** Whether `err` or one of its causes says the database is locked by another process. */
function isLockError(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === 'LEVEL_LOCKED' || /\block\b/i.test(reasonOf(e))) return true
  }
  return false
}

/** An error's message followed by its causes' messages. */
function causeText(err: unknown): string {
  const parts: string[] = []
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++)
    parts.push(reasonOf(e))
  return parts.join(': ')
}

/** `tcp/4001`, `udp/4001` for each fixed (non-zero) port in these multiaddrs. */
function fixedPorts(addresses: Iterable<string>): Set<string> {
  const ports = new Set<string>()
  for (const a of addresses) {
    const m = /\/(tcp|udp)\/(\d+)/.exec(a)
    if (m && m[2] !== '0') ports.add(`${m[1]}/${m[2]}`)
  }
  return ports
}

/** Whether `previous` listens on a fixed port that `next` is configured to listen on. */
function holdsFixedPortOf(previous: MeshNode, next: MeshNode): boolean {
  const wanted = fixedPorts(next.listenAddresses)
  if (wanted.size === 0) return false
  const held = fixedPorts([...previous.listenAddresses, ...previous.libp2p.getMultiaddrs().map(String)])
  return [...wanted].some((p) => held.has(p))
}

/**
 * Builds Meshkit nodes from resolved configs. Each build gets its own child container (disposed with
 * the node); the identity and datastore of a data dir are shared by the builds that use it, so a new
 * node can be built while the old one runs and then swapped in with the same peer id.
 */
export class MeshKernel {
  readonly env: ConfigEnv
  readonly logger: Logger
  readonly events: MeshEventBus
  #root: DependencyContainer
  #resources = new Map<string, Promise<DataDirResources>>()
  #owners = new WeakMap<MeshNode, { key: string; container: DependencyContainer }>()
  #current?: MeshNode
  #closed = false
  #updating: Promise<unknown> = Promise.resolve()

  constructor(options: MeshKernelOptions = {}) {
    this.env = options.env ?? { command: 'start', mode: 'production' }
    this.logger = options.logger ?? createLogger()
    this.events =
      options.events ??
      createEventBus((err, e) =>
        this.logger.error(`an event listener for ${e.event} threw: ${reasonOf(err)}`),
      )
    this.#root = globalContainer.createChildContainer()
    this.#root.register(TOKENS.env, { useValue: this.env })
    this.#root.register(TOKENS.logger, { useValue: this.logger })
    this.#root.register(TOKENS.events, { useValue: this.events })
  }

  /** The node that `start`/`swap` made current, if any. */
  get current(): MeshNode | undefined {
    return this.#current
  }

  async #acquire(config: ResolvedMeshConfig): Promise<DataDirResources> {
    const key = config.dataDir
    let pending = this.#resources.get(key)
    if (!pending) {
      pending = (async () => {
        const identity = await loadOrCreateIdentity(config.dataDir, this.logger)
        const unlock = await lockDataDir(config.dataDir, { logger: this.logger })
        try {
          const { datastore, close } = await openDatastore(config, this.logger)
          const reputation = new Reputation(config.security, this.events, this.logger.child('security'))
          return {
            identity,
            datastore,
            reputation,
            close: () => {
              reputation.close()
              return close().finally(unlock)
            },
            users: 0,
          }
        } catch (err) {
          await unlock()
          throw err
        }
      })()
      this.#resources.set(key, pending)
      pending.catch(() => this.#resources.delete(key))
    }
    const resources = await pending
    resources.users++
    return resources
  }

  async #release(key: string): Promise<void> {
    const pending = this.#resources.get(key)
    if (!pending) return
    const resources = await pending
    if (--resources.users > 0) return
    this.#resources.delete(key)
    await resources.close()
  }

  /** Builds a node (plugins set up, libp2p created, nothing started). A failure leaves nothing behind. */
  async build(config: ResolvedMeshConfig): Promise<MeshNode> {
    if (this.#closed) throw new MeshError('MESH_ERR_INVALID_ARGUMENT', 'the kernel is closed')
    this.logger.level = config.logLevel
    const key = config.dataDir
    const resources = await this.#acquire(config)
    const child = this.#root.createChildContainer()
    child.register(TOKENS.config, { useValue: config })
    child.register(TOKENS.datastore, { useValue: resources.datastore })
    child.register(TOKENS.peerId, { useValue: resources.identity.peerId })
    child.register(TOKENS.privateKey, { useValue: resources.identity.privateKey })
    child.register(TOKENS.reputation, { useValue: resources.reputation })
    child.register(NODE_CONTAINER, { useValue: child })
    const node = child.resolve(MeshNode)
    this.#owners.set(node, { key, container: child })
    try {
      await node.init()
    } catch (err) {
      await this.dispose(node).catch(() => {})
      throw err
    }
    return node
  }

  /** Builds and starts a node from `config` and makes it current (stopping a previous current one). */
  async start(config: ResolvedMeshConfig): Promise<MeshNode> {
    const node = await this.build(config)
    await this.swap(node)
    return node
  }

  /**
   * Makes `next` the current node: starts it while the old one still runs, then stops the old one.
   * When `next` cannot start beside the old one (e.g. the same fixed port), the old one is stopped
   * first; if `next` still fails, the old one is started again and the error is thrown.
   */
  async swap(next: MeshNode): Promise<void> {
    const previous = this.#current
    try {
      await next.start()
    } catch (err) {
      // stop the old node first only when it holds a fixed port the new one wants: a port taken by
      // another process is the new config's problem, and the old node must keep serving untouched
      const listenFailed = err instanceof MeshError && err.code === 'MESH_ERR_LISTEN_FAILED'
      if (!previous || !listenFailed || !holdsFixedPortOf(previous, next)) {
        await this.dispose(next).catch(() => {})
        throw err
      }
      await previous.stop()
      try {
        await next.start()
      } catch (retryErr) {
        await this.dispose(next).catch(() => {})
        await previous.start()
        // started again: same config and identity, but new connections (and ephemeral ports)
        this.events.emit('node:restarted', {
          peerId: previous.peerId.toString(),
          reason: `the new node could not start on the port it shares with this one: ${reasonOf(retryErr)}`,
        })
        throw retryErr
      }
    }
    this.#current = next
    if (previous) await this.dispose(previous)
  }

  /** Builds a node from a new config and swaps it in; on any failure the current node keeps running. */
  async reload(config: ResolvedMeshConfig): Promise<MeshNode> {
    const next = await this.build(config)
    await this.swap(next)
    return next
  }

  /**
   * Applies a new config to the current node with the smallest change (see `diffConfig`): in place when
   * the libp2p node can stay (core settings, plugins reconfigured or restarted alone; connections stay
   * up), else a new node built with the same identity and swapped in. When the in-place update fails it
   * is undone and a new node is built instead (`fallback` says why); when that fails too, the error is
   * thrown and the current node keeps running with its previous config. Updates run one at a time.
   * Emits `config:updated` on the event bus.
   */
  update(next: ResolvedMeshConfig, options: Omit<DiffConfigOptions, 'hooks'> = {}): Promise<UpdateResult> {
    const run = this.#updating.then(() => this.#update(next, options))
    this.#updating = run.catch(() => {})
    return run
  }

  async #update(next: ResolvedMeshConfig, options: Omit<DiffConfigOptions, 'hooks'>): Promise<UpdateResult> {
    const node = this.#current
    if (!node || this.#closed)
      throw new MeshError('MESH_ERR_INVALID_ARGUMENT', 'no node is running: start one before updating it')
    const started = performance.now()
    const diff = node.diff(next, options)
    const done = (result: Omit<UpdateResult, 'ms' | 'diff'>): UpdateResult => {
      const full = { ...result, diff, ms: performance.now() - started }
      if (full.mode !== 'none') {
        this.events.emit('config:updated', {
          mode: full.mode,
          peerId: full.node.peerId.toString(),
          steps: full.steps.map((s) => `${s.target}: ${s.action}${s.detail ? ` (${s.detail})` : ''}`),
          ...(full.fallback ? { fallback: full.fallback } : {}),
          ms: Math.round(full.ms * 10) / 10,
        })
      }
      return full
    }
    if (!diff.changed) {
      // nothing that matters changed (e.g. only the file moved): the node stands for the new config
      if (!diff.rebuild) await node.applyInPlace(next, diff)
      return done({ mode: 'none', steps: [], node })
    }
    let fallback: MeshError | undefined
    if (!diff.rebuild) {
      try {
        const steps = await node.applyInPlace(next, diff)
        return done({ mode: 'in-place', steps, node })
      } catch (err) {
        fallback =
          err instanceof MeshError
            ? err
            : new MeshError('MESH_ERR_RECONFIGURE_FAILED', reasonOf(err), { cause: err })
        this.logger.warn(`${fallback.message}; building a new node instead`)
      }
    }
    const t0 = performance.now()
    try {
      const rebuilt = await this.reload(next)
      return done({
        mode: 'rebuild',
        steps: [
          {
            target: 'node',
            action: 'rebuilt',
            detail: fallback ? 'the in-place update failed' : diff.reasons.join('; '),
            ms: performance.now() - t0,
          },
        ],
        node: rebuilt,
        fallback: fallback?.describe(),
      })
    } catch (err) {
      if (fallback && err instanceof MeshError) err.errors.push(fallback)
      throw err
    }
  }

  /** Stops and releases a node and its container; releases its data dir when no other node uses it. */
  async dispose(node: MeshNode): Promise<void> {
    const errors: unknown[] = []
    const owner = this.#owners.get(node)
    this.#owners.delete(node)
    // disposing the node's container disposes the node it constructed (stop, then unusable)
    if (owner) await Promise.resolve(owner.container.dispose()).catch((err: unknown) => errors.push(err))
    else await node.dispose().catch((err) => errors.push(err))
    if (owner) await this.#release(owner.key).catch((err) => errors.push(err))
    if (this.#current === node) this.#current = undefined
    if (errors.length > 0) throw errors[0]
  }

  /** Stops the current node and releases everything. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const errors: unknown[] = []
    if (this.#current) await this.dispose(this.#current).catch((err) => errors.push(err))
    for (const pending of this.#resources.values()) {
      await pending.then((r) => r.close()).catch((err) => errors.push(err))
    }
    this.#resources.clear()
    await this.#root.dispose()
    if (errors.length === 1) throw errors[0]
    if (errors.length > 1)
      throw meshError('MESH_ERR_STOP_FAILED', [errors.map((e) => `  - ${reasonOf(e)}`).join('\n')], {
        errors,
      })
  }
}
