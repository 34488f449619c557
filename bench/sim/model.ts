/**
 * `npm run sim:model`: the scale model of docs/scale.md. Reads simulator results (`npm run sim -- --out
 * FILE`), fits per-join cost and per-bootstrap load as functions of the node count on some runs (by
 * default the two smallest), checks the fit against the run it was not fitted on (the largest), and
 * predicts 10k, 100k and 1M nodes with 100k topics. Prints one JSON line per quantity, then a table.
 *
 *   npm run sim:model -- [--fit N,N] [--check N] [--topics T] [--rejoin-s S] [FILE...]
 *
 * A form fitted with a negative slope is not used (costs do not fall with the mesh's size); the error
 * on the held-out run is printed for every form. Files default to bench/sim/results/n*.json. Every figure printed comes from the result files and the
 * formulas below; nothing is typed in.
 */
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { SimResult, SimSummary } from './analysis.js'
import { topicSizes } from './scenario.js'

interface Run {
  file: string
  result: SimResult
  summary: SimSummary
}

/** One quantity of the model: how it is read from a run and the forms fitted to it. */
interface Quantity {
  name: string
  unit: string
  read: (r: Run) => number | undefined
  /** Forms tried; the one with the smallest held-out error is reported as the model. */
  forms: Form[]
}

interface Form {
  name: string
  /** The regressor: y = a + b * x(n). */
  x: (n: number) => number
}

const CONSTANT: Form = { name: 'a', x: () => 0 }
const LOG: Form = { name: 'a + b*log2(n)', x: (n) => Math.log2(n) }
const LINEAR: Form = { name: 'a + b*n', x: (n) => n }

const sum = (v: readonly number[]) => v.reduce((a, b) => a + b, 0)

/** Least squares of y = a + b*x (b = 0 when every x is the same). */
function leastSquares(points: Array<[number, number]>): { a: number; b: number } {
  const xs = points.map((p) => p[0])
  const ys = points.map((p) => p[1])
  const mx = sum(xs) / xs.length
  const my = sum(ys) / ys.length
  const sxx = sum(xs.map((x) => (x - mx) ** 2))
  const b = sxx === 0 ? 0 : sum(points.map(([x, y]) => (x - mx) * (y - my))) / sxx
  return { a: my - b * mx, b }
}

const kadPerJoin = (r: Run) => sum(Object.values(r.result.perJoin.kadRequestsRaw ?? {}).map(Number))

const QUANTITIES: Quantity[] = [
  {
    name: 'msgs_per_join',
    unit: 'messages',
    read: (r) => r.summary.msgs_per_join,
    forms: [LOG, LINEAR, CONSTANT],
  },
  {
    name: 'bytes_per_join',
    unit: 'bytes',
    read: (r) => r.summary.bytes_per_join,
    forms: [LOG, LINEAR, CONSTANT],
  },
  { name: 'dht_requests_per_join', unit: 'requests', read: kadPerJoin, forms: [LOG, LINEAR, CONSTANT] },
  {
    name: 'bootstrap_requests_per_join',
    unit: 'requests served by all bootstrap nodes per join',
    read: (r) => r.result.load.bootstrapServedPerJoin,
    forms: [CONSTANT, LOG, LINEAR],
  },
  {
    name: 'bootstrap_max_requests_per_join',
    unit: 'requests served by the busiest bootstrap node per join',
    read: (r) => r.result.load.bootstrapMaxServedPerJoin,
    forms: [CONSTANT, LOG, LINEAR],
  },
  {
    name: 'registry_keys_per_topic',
    unit: 'topic keys the busiest bootstrap node was told / topics',
    read: (r) => Math.max(...r.result.load.bootstrapToldKeys) / r.result.topics,
    forms: [CONSTANT, LOG],
  },
  {
    name: 'background_bytes_per_node_s',
    unit: 'bytes/s sent per node once settled',
    read: (r) => r.result.background.bytesPerNodeSec,
    forms: [LOG, LINEAR, CONSTANT],
  },
  {
    name: 'connections_per_node',
    unit: 'open connections of an ordinary node',
    read: (r) => r.result.load.ordinaryConnectionsMean,
    forms: [LOG, LINEAR, CONSTANT],
  },
]

function parseArgs(argv: string[]) {
  const files: string[] = []
  let fitNodes: number[] | undefined
  let check: number | undefined
  let topics = 100_000
  let rejoinS = 3600
  let registryCap = 4096
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--fit') fitNodes = argv[++i].split(',').map(Number)
    else if (a === '--check') check = Number(argv[++i])
    else if (a === '--topics') topics = Number(argv[++i])
    else if (a === '--rejoin-s') rejoinS = Number(argv[++i])
    else if (a === '--registry-cap') registryCap = Number(argv[++i])
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`)
    else files.push(a)
  }
  return { files, fitNodes, check, topics, rejoinS, registryCap }
}

async function loadRuns(files: string[]): Promise<Run[]> {
  if (files.length === 0) {
    const dir = join(process.cwd(), 'bench/sim/results')
    files = (await readdir(dir)).filter((f) => /^n\d+\.json$/.test(f)).map((f) => join(dir, f))
  }
  const runs: Run[] = []
  for (const file of files) {
    const data = JSON.parse(await readFile(file, 'utf8')) as { result: SimResult; summary: SimSummary }
    runs.push({ file, ...data })
  }
  return runs.sort((a, b) => a.summary.nodes - b.summary.nodes)
}

/** Memberships per node for `topics` topics of Zipf sizes (the simulator's distribution) among `n` nodes. */
export function topicsPerNode(n: number, topics: number, zipf = 2, maxShare = 0.3): number {
  // quantiles of the size distribution, sampled (exact for the simulator's own sizes up to 10^5 topics)
  const sample = Math.min(topics, 100_000)
  const sizes = topicSizes(sample, zipf, Math.max(5, Math.round(n * maxShare)))
  return (sum(sizes) * (topics / sample)) / n
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2))
  const runs = await loadRuns(args.files)
  if (runs.length < 3)
    throw new Error(`the model needs three runs (found ${runs.length}): npm run sim -- --out`)
  const nodesOf = runs.map((r) => r.summary.nodes)
  const checkN = args.check ?? Math.max(...nodesOf)
  const fitN = args.fitNodes ?? nodesOf.filter((n) => n !== checkN)
  const fitRuns = runs.filter((r) => fitN.includes(r.summary.nodes))
  const checkRun = runs.find((r) => r.summary.nodes === checkN)
  if (fitRuns.length < 2 || !checkRun) throw new Error('need two runs to fit and one to check')
  const targets = [10_000, 100_000, 1_000_000]
  const models: Record<string, { form: string; a: number; b: number; x: (n: number) => number }> = {}
  for (const q of QUANTITIES) {
    const pts = fitRuns.flatMap((r) => {
      const y = q.read(r)
      return y === undefined || !Number.isFinite(y) ? [] : [{ n: r.summary.nodes, y }]
    })
    const observed = q.read(checkRun)
    if (pts.length < 2 || observed === undefined) continue
    const tried = q.forms.map((form) => {
      const { a, b } = leastSquares(pts.map((p) => [form.x(p.n), p.y]))
      const predicted = a + b * form.x(checkN)
      const error = observed === 0 ? Math.abs(predicted) : (predicted - observed) / observed
      return { form, a, b, predicted, error }
    })
    // A cost cannot fall as the mesh grows: a form fitted with a negative slope (small meshes are dense,
    // so the small runs cost more per join) is not extrapolated. Of the others, the first listed (the
    // hypothesis) is the model unless another checks more than twice as well on the held-out run.
    const admissible = tried.filter((t) => t.b >= 0)
    let best = admissible[0] ?? tried.find((t) => t.form === CONSTANT) ?? tried[0]
    for (const t of admissible) if (Math.abs(t.error) < Math.abs(best.error) / 2) best = t
    models[q.name] = { form: best.form.name, a: best.a, b: best.b, x: best.form.x }
    const r3 = (v: number) => Math.round(v * 1000) / 1000
    console.log(
      JSON.stringify({
        quantity: q.name,
        unit: q.unit,
        fittedOn: pts.map((p) => ({ nodes: p.n, value: r3(p.y) })),
        checkedOn: { nodes: checkN, observed: r3(observed) },
        forms: tried.map((t) => ({
          form: t.form.name,
          a: r3(t.a),
          b: r3(t.b),
          predicted: r3(t.predicted),
          error: `${(t.error * 100).toFixed(1)}%`,
        })),
        model: best.form.name,
        predictions: Object.fromEntries(
          targets.map((n) => [n, r3(Math.max(0, best.a + best.b * best.form.x(n)))]),
        ),
      }),
    )
  }
  // per-bootstrap load at scale: joins arrive at n / rejoin-s per second (every node re-joins once per
  // rejoin-s: a restart, a new network, an app brought back), the busiest bootstrap node serves its
  // share of each; its registry holds every topic key it is told, up to the registry cap
  const at = (name: string, n: number) => {
    const m = models[name]
    return m ? Math.max(0, m.a + m.b * m.x(n)) : Number.NaN
  }
  const checkTopicsPerNode = checkRun.result.topicsPerNode ?? 1
  const rows = targets.map((n) => {
    const joinsPerS = n / args.rejoinS
    const tpn = topicsPerNode(n, args.topics)
    // per-join cost scales with the topics a node joins; the runs had checkTopicsPerNode of them
    const topicScale = tpn / Math.max(0.1, checkTopicsPerNode)
    const msgs = at('msgs_per_join', n) * topicScale
    const bytes = at('bytes_per_join', n) * topicScale
    const registryWanted = Math.round(at('registry_keys_per_topic', n) * args.topics)
    return {
      nodes: n,
      topics: args.topics,
      topicsPerNode: Math.round(tpn * 100) / 100,
      msgsPerJoin: Math.round(msgs),
      kbPerJoin: Math.round(bytes / 1024),
      dhtRequestsPerJoin: Math.round(at('dht_requests_per_join', n)),
      joinsPerS: Math.round(joinsPerS * 10) / 10,
      bootstrapMaxRps: Math.round(joinsPerS * at('bootstrap_max_requests_per_join', n)),
      bootstrapRegistryWanted: registryWanted,
      bootstrapRegistryEvictedShare:
        Math.round(Math.max(0, 1 - args.registryCap / registryWanted) * 1000) / 1000,
      backgroundBytesPerNodeS: Math.round(at('background_bytes_per_node_s', n)),
      backgroundMbPerNodeDay: Math.round((at('background_bytes_per_node_s', n) * 86_400) / 1e6),
      connectionsPerNode: Math.round(at('connections_per_node', n)),
    }
  })
  for (const row of rows) console.log(JSON.stringify({ prediction: row }))
  console.log(
    JSON.stringify({
      assumptions: {
        rejoinS: args.rejoinS,
        registryCap: args.registryCap,
        topicSizes: 'Zipf exponent 2 on [2, 30% of nodes], as the simulator draws them',
        topicScaling: `per-join cost x topicsPerNode / ${checkTopicsPerNode} (the held-out run's topics per node)`,
      },
    }),
  )
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
