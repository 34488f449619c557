/**
 * Scenario of a simulation run: options (command line), and from them, deterministically (seeded), the
 * nodes, their addresses, the topics with Zipf-distributed sizes, who joins which topic, when each node
 * arrives, and churn.
 */
import { availableParallelism } from 'node:os'
import { mulberry32 } from '../lib/random.js'

export interface SimOptions {
  /** Ordinary nodes (peers). */
  nodes: number
  /** Bootstrap nodes (rendezvous points, DHT servers, no topics). */
  bootstrap: number
  /** Topics. @default nodes / 4 */
  topics: number
  /** Exponent of the topic-size distribution P(size = s) ~ s^-zipf, s in [2, maxSize]. */
  zipf: number
  /** Largest topic (members). @default 30% of the nodes */
  maxSize: number
  /** 'all': every node started at once (as fast as the host can start them); 'poisson': arrivals. */
  arrival: 'all' | 'poisson'
  /** Arrivals per second for 'poisson'. */
  rate: number
  /** One-way link delay (ms). */
  latency: number
  /** Each link's delay is latency * (1 + jitter * u), u uniform in [-1, 1], fixed per link. */
  jitter: number
  /** Nodes replaced per minute, as a fraction of the nodes (0: no churn). */
  churn: number
  /** 'crash': a leaving node vanishes (nobody is told); 'graceful': it stops and closes its connections. */
  churnMode: 'crash' | 'graceful'
  /** Topic peers a member must reach: min(k, members - 1). */
  k: number
  /** kadTopics connectionsPerTopic (undefined: the plugin's default). */
  perTopic?: number
  /** Fraction of ordinary nodes that are DHT servers (the rest are clients, as NATed peers are). */
  dhtServers: number
  /**
   * 'same': every node lists the bootstrap nodes in the same order (a static list); 'shuffled': each its
   * own order. The kernel's bootstrapper now shuffles a seed list per node and round itself, so both
   * behave alike (kept to compare with older builds).
   */
  bootstrapOrder: 'same' | 'shuffled'
  /** `public` (production default, with 10.0.0.0/8 declared public) or `all`. */
  scope: 'public' | 'all'
  /** Run jaccardClusters (tags = the node's topics) on ordinary nodes. */
  clusters: boolean
  /** After the last arrival, wait at most this long (s) for every member to reach its target. */
  settle: number
  /** Then measure the background traffic of the settled mesh for this long (s). */
  background: number
  /** Nodes started at once (arrival 'all'). */
  startConcurrency: number
  /** Worker threads for ordinary nodes (bootstrap nodes get their own thread). */
  threads: number
  /** Time dilation (clock.ts): timers and clocks run this many times slower than the wall clock. 0: auto. */
  slowdown: number
  /** kad-topics implementation: 'main' (meshkit/plugins) or a prototype under bench/sim/prototypes. */
  impl: string
  seed: number
  /** Write the full result (JSON) here as well. */
  out?: string
  /** A label for the run. */
  label?: string
}

export function defaultOptions(nodes = 1000): SimOptions {
  return {
    nodes,
    bootstrap: 5,
    topics: Math.max(4, Math.round(nodes / 4)),
    zipf: 2,
    maxSize: Math.max(5, Math.round(nodes * 0.3)),
    arrival: 'all',
    rate: 10,
    latency: 50,
    jitter: 0,
    churn: 0,
    churnMode: 'crash',
    k: 5,
    perTopic: undefined,
    dhtServers: 0.3,
    bootstrapOrder: 'same',
    scope: 'public',
    clusters: true,
    settle: 30,
    background: 5,
    startConcurrency: 16,
    threads: Math.max(1, Math.min(4, availableParallelism())),
    slowdown: 0,
    impl: 'main',
    seed: 1,
  }
}

const USAGE = `npm run sim -- [options]
  --nodes N            ordinary nodes (1000)
  --bootstrap B        bootstrap nodes (5)
  --topics T           topics (nodes/4)
  --zipf A             topic sizes P(s) ~ s^-A, s in [2, max-size] (2)
  --max-size S         largest topic (30% of nodes)
  --arrival all|poisson  (all)      --rate R  arrivals/s for poisson (10)
  --latency MS         one-way delay (50)    --jitter F  per-link spread (0)
  --churn F            fraction of nodes replaced per minute (0)   --churn-mode crash|graceful
  --k K                topic peers to reach: min(K, members-1) (5)
  --per-topic C        kadTopics connectionsPerTopic (plugin default)
  --dht-servers F      fraction of ordinary nodes that are DHT servers (0.3)
  --bootstrap-order same|shuffled   (same: one static list for everybody)
  --scope public|all   address scope (public, with 10.0.0.0/8 declared public)
  --no-clusters        without jaccardClusters
  --settle S           wait for rendezvous after the last arrival (30)
  --background S       measure the settled mesh's background traffic (5)
  --threads H          worker threads for ordinary nodes (one per core, at most 4)
  --slowdown S         time dilation: timers and clocks run S times slower than the wall clock
                       (auto: nodes/25, at least 4: below that the node threads starve)
  --impl NAME          kad-topics: main or a prototype in bench/sim/prototypes (main)
  --seed N  --out FILE  --label TEXT`

export function parseOptions(argv: readonly string[]): SimOptions {
  const args = new Map<string, string>()
  const flags = new Set<string>()
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') {
      console.log(USAGE)
      process.exit(0)
    }
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}\n${USAGE}`)
    const [name, inline] = a.slice(2).split('=', 2)
    if (name.startsWith('no-')) {
      flags.add(name)
      continue
    }
    const value = inline ?? argv[++i]
    if (value === undefined) throw new Error(`--${name} needs a value\n${USAGE}`)
    args.set(name, value)
  }
  const num = (name: string): number | undefined => {
    const v = args.get(name)
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n)) throw new Error(`--${name} is not a number: ${v}`)
    return n
  }
  const o = defaultOptions(num('nodes') ?? 1000)
  const known = new Set([
    'nodes',
    'bootstrap',
    'topics',
    'zipf',
    'max-size',
    'arrival',
    'rate',
    'latency',
    'jitter',
    'churn',
    'churn-mode',
    'k',
    'per-topic',
    'dht-servers',
    'bootstrap-order',
    'scope',
    'settle',
    'background',
    'start-concurrency',
    'threads',
    'slowdown',
    'impl',
    'seed',
    'out',
    'label',
  ])
  for (const name of args.keys()) if (!known.has(name)) throw new Error(`unknown option --${name}\n${USAGE}`)
  for (const f of flags) if (f !== 'no-clusters') throw new Error(`unknown option --${f}\n${USAGE}`)
  o.bootstrap = num('bootstrap') ?? o.bootstrap
  o.topics = num('topics') ?? o.topics
  o.zipf = num('zipf') ?? o.zipf
  o.maxSize = num('max-size') ?? o.maxSize
  o.rate = num('rate') ?? o.rate
  o.latency = num('latency') ?? o.latency
  o.jitter = num('jitter') ?? o.jitter
  o.churn = num('churn') ?? o.churn
  o.k = num('k') ?? o.k
  o.perTopic = num('per-topic') ?? o.perTopic
  o.dhtServers = num('dht-servers') ?? o.dhtServers
  o.settle = num('settle') ?? o.settle
  o.background = num('background') ?? o.background
  o.startConcurrency = num('start-concurrency') ?? o.startConcurrency
  o.threads = num('threads') ?? o.threads
  o.slowdown = num('slowdown') ?? o.slowdown
  o.seed = num('seed') ?? o.seed
  const choice = <T extends string>(name: string, values: readonly T[], fallback: T): T => {
    const v = args.get(name)
    if (v === undefined) return fallback
    if (!values.includes(v as T)) throw new Error(`--${name} must be one of ${values.join(', ')}`)
    return v as T
  }
  o.arrival = choice('arrival', ['all', 'poisson'], o.arrival)
  o.churnMode = choice('churn-mode', ['crash', 'graceful'], o.churnMode)
  o.bootstrapOrder = choice('bootstrap-order', ['same', 'shuffled'], o.bootstrapOrder)
  o.scope = choice('scope', ['public', 'all'], o.scope)
  o.impl = args.get('impl') ?? o.impl
  o.out = args.get('out')
  o.label = args.get('label')
  if (flags.has('no-clusters')) o.clusters = false
  o.maxSize = Math.min(o.maxSize, o.nodes)
  return o
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[items[i], items[j]] = [items[j], items[i]]
  }
  return items
}

/**
 * Topic sizes: the largest is `maxSize`, the rest are the quantiles of P(s) ~ s^-zipf on [2, maxSize]
 * (deterministic: the same options give the same sizes), largest first.
 */
export function topicSizes(topics: number, zipf: number, maxSize: number): number[] {
  if (topics <= 0) return []
  const max = Math.max(2, maxSize)
  const weights: number[] = []
  for (let s = 2; s <= max; s++) weights.push(s ** -zipf)
  const total = weights.reduce((a, b) => a + b, 0)
  const cdf: number[] = []
  let acc = 0
  for (const w of weights) {
    acc += w / total
    cdf.push(acc)
  }
  const sizes: number[] = [max]
  for (let i = 1; i < topics; i++) {
    const q = 1 - (i - 0.5) / topics // largest first
    let idx = cdf.findIndex((c) => c >= q)
    if (idx < 0) idx = cdf.length - 1
    sizes.push(idx + 2)
  }
  return sizes.sort((a, b) => b - a)
}

export interface NodeSpec {
  index: number
  role: 'bootstrap' | 'peer'
  ip: string
  /** Host (thread) running it. */
  host: number
  topics: string[]
  dhtServer: boolean
  /** Bootstrap node indexes in the order this node lists them. */
  bootstrapOrder: number[]
  /** ms after the start of the run. */
  arriveAt: number
  /** ms after the start of the run (churn), or undefined. */
  leaveAt?: number
  /** The node this one replaces (churn), or undefined. */
  replaces?: number
}

export interface Scenario {
  options: SimOptions
  nodes: NodeSpec[]
  /** Topic name -> members (live at once: a replacement takes its leaver's place). */
  topicSize: Record<string, number>
  /** Peer hosts: 1..threads (host 0 runs the bootstrap nodes). */
  hosts: number
}

/** 10.a.b.c with a distinct /24 for every node (networks spread as on the internet). */
export function ipOf(index: number): string {
  const net = index + 1
  return `10.${(net >> 8) & 0xff}.${net & 0xff}.${1 + ((index * 37) % 250)}`
}

export function buildScenario(o: SimOptions): Scenario {
  const random = mulberry32(o.seed)
  const nodes: NodeSpec[] = []
  for (let b = 0; b < o.bootstrap; b++) {
    nodes.push({
      index: b,
      role: 'bootstrap',
      ip: ipOf(b),
      host: 0,
      topics: [],
      dhtServer: true,
      bootstrapOrder: [],
      arriveAt: 0,
    })
  }
  const bootIdx = nodes.map((n) => n.index)
  const peerIdx: number[] = []
  for (let p = 0; p < o.nodes; p++) {
    const index = o.bootstrap + p
    peerIdx.push(index)
    nodes.push({
      index,
      role: 'peer',
      ip: ipOf(index),
      host: 1 + (p % Math.max(1, o.threads)),
      topics: [],
      dhtServer: random() < o.dhtServers,
      bootstrapOrder: o.bootstrapOrder === 'same' ? [...bootIdx] : shuffle([...bootIdx], random),
      arriveAt: 0,
    })
  }
  // topics: sizes by Zipf quantiles, members drawn at random
  const sizes = topicSizes(o.topics, o.zipf, Math.min(o.maxSize, o.nodes))
  const topicSize: Record<string, number> = {}
  sizes.forEach((size, t) => {
    const name = `t${t}-s${size}`
    const members = shuffle([...peerIdx], random).slice(0, Math.min(size, peerIdx.length))
    for (const m of members) nodes[m].topics.push(name)
    topicSize[name] = members.length
  })
  // arrivals
  if (o.arrival === 'poisson') {
    let t = 0
    for (const idx of shuffle([...peerIdx], random)) {
      t += (-Math.log(1 - random()) / o.rate) * 1000
      nodes[idx].arriveAt = Math.round(t)
    }
  }
  // churn: replacements, each a new node (new identity and address) with the leaver's topics
  if (o.churn > 0) {
    const lastArrival = Math.max(...nodes.map((n) => n.arriveAt))
    const window = lastArrival + o.settle * 500 // churn runs while the mesh settles
    const perMs = (o.churn * o.nodes) / 60_000
    let t = Math.max(5_000, lastArrival / 2)
    let host = 0
    while (t < window) {
      t += -Math.log(1 - random()) / perMs
      if (t >= window) break
      const live = nodes.filter((n) => n.role === 'peer' && n.leaveAt === undefined && n.arriveAt + 5_000 < t)
      if (live.length === 0) break
      const leaver = live[Math.floor(random() * live.length)]
      leaver.leaveAt = Math.round(t)
      const index = nodes.length
      nodes.push({
        ...leaver,
        index,
        ip: ipOf(index),
        host: 1 + (host++ % Math.max(1, o.threads)),
        topics: [...leaver.topics],
        arriveAt: Math.round(t),
        leaveAt: undefined,
        replaces: leaver.index,
      })
    }
  }
  return { options: o, nodes, topicSize, hosts: Math.max(1, o.threads) }
}
