/**
 * A small loopback mesh of `mesh start` processes for the fault scenarios: bootstrap nodes, peers with
 * topics, and each process's live topic view from its `--json` lines (topic:peer / topic:peer:lost).
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loopbackListen, MeshProc, peerConfig, sleep, writeConfig } from './fleet.js'

/** The peers' config with `datastore: 'memory'` (beside mesh.config.json). */
const MEMORY_CONFIG = 'memory.config.json'

export interface MeshNodeHandle {
  name: string
  dataDir: string
  topics: string[]
  proc: MeshProc
  /** Topic -> peers in its topic view now. */
  views: Map<string, Set<string>>
}

export interface LoopbackMeshOptions {
  root: string
  /** kad-topics options (addressScope 'all' is set). */
  kadTopics?: Record<string, unknown>
  transports?: Array<'tcp' | 'quic'>
  log?: (text: string) => void
}

/** Bootstrap nodes and peers in one directory tree; `close()` kills whatever still runs. */
export class LoopbackMesh {
  readonly procs = new Set<MeshProc>()
  readonly nodes: MeshNodeHandle[] = []
  bootstrapAddrs: string[] = []
  readonly #peerDir: string
  readonly #bootDir: string

  constructor(readonly options: LoopbackMeshOptions) {
    this.#peerDir = join(options.root, 'peers')
    this.#bootDir = join(options.root, 'boot')
  }

  #spawn(name: string, cwd: string, dataDir: string, topics: string[], extra: string[] = []): MeshProc {
    const proc = new MeshProc({
      name,
      cwd,
      args: [
        '--local',
        '--data-dir',
        dataDir,
        ...loopbackListen(this.options.transports ?? ['tcp']),
        ...topics.flatMap((t) => ['--topic', t]),
        ...extra,
      ],
    })
    this.procs.add(proc)
    void proc.exited.then(() => this.procs.delete(proc))
    return proc
  }

  /** Starts `count` bootstrap nodes (kad-topics, no topics); their addresses become the peers' static peers. */
  async startBootstraps(count: number): Promise<MeshNodeHandle[]> {
    await mkdir(this.#bootDir, { recursive: true })
    await writeConfig(
      this.#bootDir,
      peerConfig({
        bootstrap: [],
        peerCache: false,
        kadTopics: this.options.kadTopics,
        transports: this.options.transports ?? ['tcp'],
      }),
    )
    const boots = Array.from({ length: count }, (_, i) =>
      this.#handle(`boot${i}`, join(this.#bootDir, `boot${i}`), [], (dataDir) =>
        this.#spawn(`boot${i}`, this.#bootDir, dataDir, []),
      ),
    )
    await Promise.all(boots.map((b) => b.proc.waitStarted(60_000)))
    this.bootstrapAddrs = boots.flatMap((b) => b.proc.addresses)
    await mkdir(this.#peerDir, { recursive: true })
    const config = peerConfig({
      bootstrap: this.bootstrapAddrs,
      kadTopics: this.options.kadTopics,
      transports: this.options.transports ?? ['tcp'],
    })
    await writeConfig(this.#peerDir, config)
    await writeFile(join(this.#peerDir, MEMORY_CONFIG), JSON.stringify({ ...config, datastore: 'memory' }))
    return boots
  }

  #handle(
    name: string,
    dataDir: string,
    topics: string[],
    start: (dataDir: string) => MeshProc,
  ): MeshNodeHandle {
    const views = new Map<string, Set<string>>()
    const proc = start(dataDir)
    const node: MeshNodeHandle = { name, dataDir, topics, proc, views }
    this.#watch(node)
    this.nodes.push(node)
    return node
  }

  #watch(node: MeshNodeHandle): void {
    node.views.clear()
    node.proc.on((l) => {
      if (l.event !== 'topic:peer' && l.event !== 'topic:peer:lost') return
      const topic = String(l.topic)
      let set = node.views.get(topic)
      if (!set) {
        set = new Set()
        node.views.set(topic, set)
      }
      if (l.event === 'topic:peer') set.add(String(l.peerId))
      else set.delete(String(l.peerId))
    })
  }

  /**
   * A peer with `topics`: the peers' config (static peers: the bootstrap nodes, peer cache); `dial` adds
   * `--dial` addresses (a new member that knows one member only, say).
   */
  startPeer(name: string, topics: string[], dial: string[] = []): MeshNodeHandle {
    return this.#handle(name, join(this.#peerDir, name), topics, (dataDir) =>
      this.#spawn(
        name,
        this.#peerDir,
        dataDir,
        topics,
        dial.flatMap((a) => ['--dial', a]),
      ),
    )
  }

  /**
   * Starts `node` again on its data dir (same identity, peer cache, datastore). `memoryDatastore`: with
   * the peers' config but `datastore: 'memory'`, so that the persistent peer store (kad-dht restores its
   * routing table from it and dials those peers) cannot help: only the peer cache can.
   */
  restart(
    node: MeshNodeHandle,
    options: { dial?: string[]; memoryDatastore?: boolean } = {},
  ): MeshNodeHandle {
    node.proc = this.#spawn(node.name, this.#peerDir, node.dataDir, node.topics, [
      ...(options.dial ?? []).flatMap((a) => ['--dial', a]),
      ...(options.memoryDatastore ? ['--config', join(this.#peerDir, MEMORY_CONFIG)] : []),
    ])
    this.#watch(node)
    return node
  }

  /** Live peers' ids. */
  livePeerIds(): Set<string> {
    return new Set(this.nodes.filter((n) => n.proc.alive && n.proc.peerId).map((n) => n.proc.peerId!))
  }

  /**
   * Whether `node` has min(k, members - 1) live topic peers in each of its topics (members: live nodes
   * that are in the topic).
   */
  satisfied(node: MeshNodeHandle, k: number): boolean {
    const live = this.livePeerIds()
    return node.topics.every((topic) => {
      const members = this.nodes.filter((n) => n.proc.alive && n.topics.includes(topic)).length
      const need = Math.min(k, members - 1)
      const view = node.views.get(topic) ?? new Set()
      let count = 0
      for (const p of view) if (live.has(p)) count++
      return count >= need
    })
  }

  /** Waits until every live peer (or those of `which`) is satisfied; the ms it took, or null on timeout. */
  async waitSatisfied(k: number, timeoutMs: number, which?: () => MeshNodeHandle[]): Promise<number | null> {
    const t0 = Date.now()
    const nodes = () => which?.() ?? this.nodes.filter((n) => n.proc.alive && n.topics.length > 0)
    while (Date.now() - t0 < timeoutMs) {
      if (nodes().every((n) => this.satisfied(n, k))) return Date.now() - t0
      await sleep(50)
    }
    return null
  }

  async close(): Promise<void> {
    await Promise.all([...this.procs].map((p) => p.kill()))
  }
}
