/**
 * Prometheus metrics for a node: libp2p's own metrics (@libp2p/prometheus-metrics: data transfer,
 * connection manager, dialler, kad-dht, process and memory, ...) plus Meshkit's (topics, topic peers,
 * clusters, connections by method and transport, events), all in one prom-client Registry per node.
 * The control API serves them at `GET /metrics` (it reads the 'metrics' capability).
 *
 * Meshkit's metrics are read from the slot APIs when scraped ('discovery', 'clustering', the
 * 'connection-methods' sources) and counted from the node's event bus (`connection:method`, every event
 * name): this plugin reads other plugins only through the capabilities it declares in
 * `optionalDependencies`, and works with or without each of them.
 *
 * Caveat (from @libp2p/prometheus-metrics): it keeps one process-wide table of metric names, cleared
 * whenever a node is created; with several nodes in one process (tests, `mesh demo`), each node's
 * registry holds the libp2p metrics registered after its own creation.
 */
import {
  type ClusteringSlotApi,
  CONNECTION_METHODS,
  CONNECTION_METHODS_CAPABILITY,
  type ConnectionMethodSource,
  connectionMethod,
  type DiscoverySlotApi,
  definePlugin,
  describeConnection,
  hasMethods,
  type MetricsSlotApi,
  meshError,
  type PluginContext,
  type ToldMethod,
  toldMethodOf,
  z,
} from 'meshkit/plugin'
import type { Registry } from 'prom-client'

type PromClient = typeof import('prom-client')

/**
 * `prom-client` and `@libp2p/prometheus-metrics` are optional peer dependencies of Meshkit: loaded only
 * when a config has metrics(), so that other nodes install without them.
 */
async function load<T>(pkg: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err
    throw meshError('MESH_ERR_MISSING_PACKAGE', ['metrics()', pkg], { cause: err })
  }
}

/** What `metrics()` offers (`node.api('metrics')`): the node's registry and its text. */
export interface PrometheusMetricsApi extends MetricsSlotApi {
  /** The node's prom-client registry: add your own metrics to it. */
  readonly registry: Registry
  /** Every metric in the Prometheus text format. */
  render(): Promise<string>
  readonly contentType: string
}

const options = z
  .strictObject({
    /** Collect libp2p's metrics (data transfer, dialler, connection manager, DHT, ...). @default true */
    libp2p: z.boolean().default(true),
    /** Collect prom-client's process metrics (CPU, memory, event loop lag, GC). @default true */
    processMetrics: z.boolean().default(true),
    /** Prefix of Meshkit's own metric names. @default 'meshkit_' */
    prefix: z
      .string()
      .regex(/^[a-zA-Z_][a-zA-Z0-9_]*$/, 'a Prometheus metric name prefix such as meshkit_')
      .default('meshkit_'),
  })
  .prefault({})

/** The declared connection-method sources: every 'connection-methods' provider (holePunch() is one). */
function methodSources(ctx: PluginContext): ConnectionMethodSource[] {
  return ctx
    .useAll(CONNECTION_METHODS_CAPABILITY)
    .filter((api) => hasMethods<ConnectionMethodSource>(api, 'methodOf'))
}

/**
 * Meshkit's metrics in `registry`, read from `ctx` when scraped. Returns the event subscription's
 * cleanup; call it from `stop()`.
 */
function meshkitMetrics(
  prom: PromClient,
  ctx: () => PluginContext | undefined,
  registry: Registry,
  prefix: string,
) {
  const { Counter, Gauge, Histogram } = prom
  const told = new Map<string, ToldMethod>()
  const started = () => {
    const c = ctx()
    try {
      return c?.libp2p ? c : undefined
    } catch {
      return undefined
    }
  }
  const discovery = (c: PluginContext) => {
    const api = c.useOptional('discovery')
    return hasMethods<DiscoverySlotApi>(api, 'topics', 'peers') ? api : undefined
  }
  const clustering = (c: PluginContext) => {
    const api = c.useOptional('clustering')
    return hasMethods<ClusteringSlotApi>(api, 'clusters') ? api : undefined
  }

  new Gauge({
    name: `${prefix}peers`,
    help: 'Connected peers',
    registers: [registry],
    collect() {
      const c = started()
      this.set(c ? c.libp2p.getPeers().length : 0)
    },
  })
  new Gauge({
    name: `${prefix}connections`,
    help: 'Open connections by method (direct, hole-punched, relayed) and transport',
    labelNames: ['method', 'transport'],
    registers: [registry],
    collect() {
      this.reset()
      const c = started()
      if (!c) return
      const sources = methodSources(c)
      for (const connection of c.libp2p.getConnections()) {
        const info = describeConnection(connection)
        const method = connectionMethod(connection, told.get(info.peerId), sources)
        this.inc({ method, transport: info.transport })
      }
    },
  })
  const classified = new Counter({
    name: `${prefix}connection_methods_total`,
    help: 'Connections classified by a connection-method plugin (connection:method events), by method and transport',
    labelNames: ['method', 'transport'],
    registers: [registry],
  })
  const attempts = new Counter({
    name: `${prefix}hole_punch_attempts_total`,
    help: 'Hole-punch attempts made for classified connections (connection:method events), by resulting method',
    labelNames: ['method'],
    registers: [registry],
  })
  // seconds, as Prometheus wants; from the dial to the first connection, and to the direct one
  const buckets = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16]
  const toFirst = new Histogram({
    name: `${prefix}connection_first_seconds`,
    help: 'Time from the dial to the first connection (any method), by method and transport',
    labelNames: ['method', 'transport'],
    buckets,
    registers: [registry],
  })
  const toDirect = new Histogram({
    name: `${prefix}connection_direct_seconds`,
    help: 'Time from the dial (or the relayed connection) to the direct one, by method and transport',
    labelNames: ['method', 'transport'],
    buckets,
    registers: [registry],
  })
  const events = new Counter({
    name: `${prefix}events_total`,
    help: 'Node events on the kernel bus, by event name',
    labelNames: ['event'],
    registers: [registry],
  })
  new Gauge({
    name: `${prefix}topics_joined`,
    help: "Topics joined (the 'discovery' slot)",
    registers: [registry],
    collect() {
      const c = started()
      const d = c && discovery(c)
      this.set(d ? d.topics().length : 0)
    },
  })
  new Gauge({
    name: `${prefix}topic_peers`,
    help: 'Connected members of each joined topic',
    labelNames: ['topic'],
    registers: [registry],
    collect() {
      this.reset()
      const c = started()
      const d = c && discovery(c)
      if (!d) return
      for (const topic of d.topics()) this.set({ topic }, d.peers(topic).length)
    },
  })
  new Gauge({
    name: `${prefix}clusters`,
    help: "Clusters known to the 'clustering' slot",
    registers: [registry],
    collect() {
      const c = started()
      const cl = c && clustering(c)
      this.set(cl ? cl.clusters().length : 0)
    },
  })
  new Gauge({
    name: `${prefix}clusters_own`,
    help: 'Clusters this node itself belongs to',
    registers: [registry],
    collect() {
      const c = started()
      const cl = c && clustering(c)
      this.set(cl?.ownClusters ? cl.ownClusters().length : 0)
    },
  })
  new Gauge({
    name: `${prefix}cluster_members`,
    help: 'Members summed over all clusters',
    registers: [registry],
    collect() {
      const c = started()
      const cl = c && clustering(c)
      let n = 0
      for (const cluster of cl ? cl.clusters() : []) {
        const m = cluster.members
        n += m instanceof Map ? m.size : [...(m as Iterable<unknown>)].length
      }
      this.set(n)
    },
  })
  // zero-valued series for every method, so dashboards show them before the first connection
  for (const method of CONNECTION_METHODS) classified.inc({ method, transport: 'none' }, 0)

  return {
    subscribe(c: PluginContext): () => void {
      const offs = [
        c.events.on('*', (e) => events.inc({ event: e.event })),
        c.events.on('connection:method', (e) => {
          const said = toldMethodOf(e)
          if (!said) return
          const { peerId, method } = said
          const transport = said.transport ?? 'unknown'
          told.set(peerId, { method, transport: said.transport })
          classified.inc({ method, transport })
          const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined)
          const tried = ms(e.attempts)
          if (tried !== undefined) attempts.inc({ method }, Math.floor(tried))
          const first = ms(e.msToFirst)
          if (first !== undefined) toFirst.observe({ method, transport }, first / 1000)
          const direct = ms(e.msToDirect)
          if (direct !== undefined) toDirect.observe({ method, transport }, direct / 1000)
        }),
        c.events.on('peer:disconnect', (e) => {
          if (typeof e.peerId === 'string') told.delete(e.peerId)
        }),
      ]
      return () => {
        for (const off of offs) off()
      }
    },
  }
}

/**
 * `metrics()`: Prometheus metrics for the node (provides 'metrics'). Add it to `plugins` and scrape
 * `GET /metrics` of the control API (`mesh start` serves it), or render them yourself with
 * `node.api('metrics').render()`.
 */
export const metrics = definePlugin({
  name: 'prometheus-metrics',
  provides: ['metrics'],
  optionalDependencies: ['discovery', 'clustering', CONNECTION_METHODS_CAPABILITY],
  options,
  create: (opts) => {
    let ctxRef: PluginContext | undefined
    let running = false
    let unsubscribe: (() => void) | undefined
    let registry: Registry | undefined
    let meshkit: ReturnType<typeof meshkitMetrics> | undefined
    return {
      setup: async (ctx): Promise<PrometheusMetricsApi> => {
        const prom = await load('prom-client', () => import('prom-client'))
        const reg = new prom.Registry()
        registry = reg
        ctxRef = ctx
        meshkit = meshkitMetrics(prom, () => (running ? ctxRef : undefined), reg, opts.prefix)
        // counted from setup on, so events of other plugins' start() are seen too
        unsubscribe = meshkit.subscribe(ctx)
        // without libp2p's metrics (which collect them), the process metrics are collected here
        if (!opts.libp2p && opts.processMetrics) prom.collectDefaultMetrics({ register: reg })
        return {
          registry: reg,
          render: () => reg.metrics(),
          get contentType() {
            return reg.contentType
          },
        }
      },
      libp2p: async () => {
        if (!opts.libp2p) return {}
        const { prometheusMetrics } = await load(
          '@libp2p/prometheus-metrics',
          () => import('@libp2p/prometheus-metrics'),
        )
        return {
          metrics: prometheusMetrics({
            registry,
            collectDefaultMetrics: opts.processMetrics,
            statfsLocation: ctxRef?.config.dataDir,
          }),
        }
      },
      start: (ctx) => {
        unsubscribe ??= meshkit?.subscribe(ctx)
        running = true
      },
      stop: () => {
        running = false
        unsubscribe?.()
        unsubscribe = undefined
      },
    }
  },
})
