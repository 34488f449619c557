/**
 * Clustering benchmark: Jaccard threshold search over many tag sets, exact index vs brute force (and MinHash LSH).
 *
 *   npm run bench:clustering [-- --clusters 100000 --vocab 10000 --queries 1000 --bf-queries 200
 *                               --threshold 0.7 --min-threshold 0.7 --zipf 1 --seed 42 --bands 20 --rows 5
 *                               --no-minhash]
 *
 * Data: `--clusters` sets of 5-20 distinct tags (size uniform), each tag drawn Zipf(`--zipf`)-distributed
 * from a `--vocab` vocabulary (seeded PRNG, so every run sees the same data). Queries: half are the tags of a
 * random stored cluster with one tag replaced (near hits), half are fresh sets drawn like the clusters.
 * `--dup-rate p` (default 0) makes each cluster, with probability p, a near-copy of an earlier one (one tag
 * replaced) instead, so that all-pairs has many results to find.
 *
 * Configurations (one JSON line each, on stdout):
 *   exact       SimilarityIndex (prefix + length + positional filtering, inverted index over prefixes, built
 *               for `--min-threshold`, default `--threshold`; lower thresholds index longer prefixes):
 *               build_ms (addAll: order + index), query latencies (ms, p50/p99 over `--queries`),
 *               all_pairs_ms (self-join at `--threshold`), rss_mb / heap_mb (delta over the build).
 *   bruteforce  The pairwise scan on the same data, with the same data layout (sorted int arrays, merge
 *               intersection): each of `--bf-queries` queries scans every cluster. A full brute-force
 *               all-pairs is n(n-1)/2 set comparisons (5e9 for 100k), too long to run, so it is extrapolated:
 *               bruteforce_all_pairs_ms = (mean brute-force query ms / n) * n(n-1)/2, i.e. the measured cost
 *               of one comparison times the number of pairs. The exact index's answers to those queries
 *               are checked against the scan's (`agrees`).
 *   minhash     MinHashIndex (`--bands` x `--rows`): same measurements plus recall against the exact answers.
 * Last line: {"summary": {...}} with the exact index's numbers, the brute-force extrapolation and
 * speedup = bruteforce_all_pairs_ms / all_pairs_ms. Progress goes to stderr. Timings are wall-clock on a
 * possibly shared machine: compare the lines of one run with each other.
 */
import { parseArgs } from 'node:util'
import {
  MinHashIndex,
  meetsThreshold,
  SimilarityIndex,
  type SimilarityMatch,
} from '../../plugins/jaccard-clusters/similarity-index.js'
import { mulberry32 } from '../lib/random.js'
import { median, round } from '../lib/stats.js'

const MIB = 1024 * 1024

/** Zipf sampler over ranks 0..n-1 (P(k) ~ 1 / (k+1)^s) by inverse CDF. */
function zipf(n: number, s: number, rnd: () => number): () => number {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 0; k < n; k++) {
    sum += 1 / (k + 1) ** s
    cdf[k] = sum
  }
  return () => {
    const u = rnd() * sum
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cdf[mid] < u) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

function gc(): void {
  ;(globalThis as { gc?: () => void }).gc?.()
}

const rss = () => process.memoryUsage().rss
const heap = () => process.memoryUsage().heapUsed

function log(msg: string): void {
  process.stderr.write(`${msg}\n`)
}

function latencies(ms: number[]) {
  return {
    p50: round(percentile(ms, 50), 3),
    p90: round(percentile(ms, 90), 3),
    p99: round(percentile(ms, 99), 3),
    max: round(Math.max(...ms), 3),
    mean: round(ms.reduce((a, b) => a + b, 0) / ms.length, 3),
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      clusters: { type: 'string', default: '100000' },
      vocab: { type: 'string', default: '10000' },
      queries: { type: 'string', default: '1000' },
      'bf-queries': { type: 'string', default: '200' },
      threshold: { type: 'string', default: '0.7' },
      'min-threshold': { type: 'string' },
      'dup-rate': { type: 'string', default: '0' },
      zipf: { type: 'string', default: '1' },
      seed: { type: 'string', default: '42' },
      bands: { type: 'string', default: '20' },
      rows: { type: 'string', default: '5' },
      'no-minhash': { type: 'boolean', default: false },
    },
  })
  const n = Number(values.clusters)
  const vocab = Number(values.vocab)
  const queryCount = Number(values.queries)
  const bfQueryCount = Math.min(Number(values['bf-queries']), queryCount)
  const threshold = Number(values.threshold)
  const minThreshold = values['min-threshold'] === undefined ? threshold : Number(values['min-threshold'])
  const s = Number(values.zipf)
  const seed = Number(values.seed)
  const dupRate = Number(values['dup-rate'])
  if (!(dupRate >= 0 && dupRate < 1)) throw new Error('--dup-rate must be in [0, 1)')
  for (const [k, v] of Object.entries({ n, vocab, queryCount, bfQueryCount }))
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a whole number >= 1`)
  if (!(threshold > 0 && threshold <= 1)) throw new Error('--threshold must be in (0, 1]')

  const rnd = mulberry32(seed)
  const draw = zipf(vocab, s, rnd)
  const tag = (k: number) => `tag${k}`
  const makeSet = (): string[] => {
    const size = 5 + Math.floor(rnd() * 16)
    const set = new Set<string>()
    while (set.size < size) set.add(tag(draw()))
    return [...set]
  }
  log(
    `bench:clustering: node ${process.version}, ${n} clusters, vocab ${vocab}, zipf s=${s}, threshold ${threshold}, seed ${seed}${(globalThis as { gc?: unknown }).gc ? '' : ' (no --expose-gc: memory deltas include garbage)'}`,
  )
  const sets: [string, string[]][] = []
  for (let i = 0; i < n; i++) {
    if (i > 0 && rnd() < dupRate) {
      // a near-copy of an earlier cluster: one tag replaced (J >= (k-1)/(k+1), often above the threshold)
      const copy = [...sets[Math.floor(rnd() * i)][1]]
      copy[Math.floor(rnd() * copy.length)] = tag(draw())
      sets.push([`c${i}`, copy])
    } else sets.push([`c${i}`, makeSet()])
  }
  const queries: string[][] = Array.from({ length: queryCount }, (_, i) => {
    if (i % 2 === 1) return makeSet()
    const base = [...sets[Math.floor(rnd() * n)][1]]
    base[Math.floor(rnd() * base.length)] = tag(draw())
    return base
  })
  const tagCount = sets.reduce((a, [, t]) => a + t.length, 0)
  const data = {
    clusters: n,
    vocab,
    zipf: s,
    seed,
    threshold,
    dup_rate: dupRate,
    mean_tags: round(tagCount / n, 2),
  }

  // ---- exact index
  gc()
  const rss0 = rss()
  const heap0 = heap()
  let t0 = performance.now()
  let exact: SimilarityIndex | undefined = new SimilarityIndex({ minThreshold })
  exact.addAll(sets)
  const buildMs = performance.now() - t0
  gc()
  const exactRss = (rss() - rss0) / MIB
  const exactHeap = (heap() - heap0) / MIB
  log(`  exact: built in ${round(buildMs)} ms`)
  const exactAnswers: SimilarityMatch[][] = []
  const qms: number[] = []
  for (const q of queries) {
    t0 = performance.now()
    exactAnswers.push(exact.query(q, threshold))
    qms.push(performance.now() - t0)
  }
  log(`  exact: ${queryCount} queries, p99 ${round(percentile(qms, 99), 3)} ms`)
  t0 = performance.now()
  const pairs = exact.allPairs(threshold)
  const allPairsMs = performance.now() - t0
  log(`  exact: all pairs (${pairs.length}) in ${round(allPairsMs)} ms`)
  const exactLine = {
    config: 'exact',
    ...data,
    index_min_threshold: minThreshold,
    build_ms: round(buildMs),
    query_ms: latencies(qms),
    queries: queryCount,
    query_hits: exactAnswers.reduce((a, r) => a + r.length, 0),
    all_pairs_ms: round(allPairsMs),
    pairs: pairs.length,
    rss_mb: round(exactRss),
    heap_mb: round(exactHeap),
  }
  process.stdout.write(`${JSON.stringify(exactLine)}\n`)

  // ---- brute force: same layout as a fair scan (distinct tags as sorted int arrays, merge intersection)
  const ids = new Map<string, number>()
  const intern = (t: string) => {
    let id = ids.get(t)
    if (id === undefined) {
      id = ids.size
      ids.set(t, id)
    }
    return id
  }
  const arrays = sets.map(([, t]) => Int32Array.from(new Set(t), intern).sort())
  const scan = (q: string[]): SimilarityMatch[] => {
    const x = Int32Array.from(new Set(q), intern).sort()
    const out: SimilarityMatch[] = []
    for (let k = 0; k < arrays.length; k++) {
      const y = arrays[k]
      let i = 0
      let j = 0
      let inter = 0
      while (i < x.length && j < y.length) {
        if (x[i] === y[j]) {
          inter++
          i++
          j++
        } else if (x[i] < y[j]) i++
        else j++
      }
      const union = x.length + y.length - inter
      if (meetsThreshold(inter, union, threshold)) out.push({ id: sets[k][0], similarity: inter / union })
    }
    return out.sort((a, b) => b.similarity - a.similarity || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }
  const bms: number[] = []
  let agrees = true
  for (let i = 0; i < bfQueryCount; i++) {
    t0 = performance.now()
    const r = scan(queries[i])
    bms.push(performance.now() - t0)
    if (JSON.stringify(r) !== JSON.stringify(exactAnswers[i])) agrees = false
  }
  const bfMean = bms.reduce((a, b) => a + b, 0) / bms.length
  const comparisons = (n * (n - 1)) / 2
  const bfAllPairsMs = (bfMean / n) * comparisons
  log(`  bruteforce: ${bfQueryCount} queries, mean ${round(bfMean, 2)} ms; answers agree: ${agrees}`)
  const bfLine = {
    config: 'bruteforce',
    ...data,
    query_ms: latencies(bms),
    queries: bfQueryCount,
    agrees_with_exact: agrees,
    all_pairs_ms_extrapolated: round(bfAllPairsMs),
    extrapolation: `mean query ms (${round(bfMean, 3)}) / ${n} comparisons per query * ${comparisons} pairs`,
    query_speedup_p50: round(median(bms) / median(qms), 1),
  }
  process.stdout.write(`${JSON.stringify(bfLine)}\n`)

  // ---- MinHash LSH
  if (!values['no-minhash']) {
    const expected = exactAnswers.map((r) => new Set(r.map((m) => m.id)))
    const expectedPairs = pairs.length
    exact = undefined
    arrays.length = 0
    gc()
    const bands = Number(values.bands)
    const rows = Number(values.rows)
    const mrss0 = rss()
    const mheap0 = heap()
    t0 = performance.now()
    const lsh = new MinHashIndex({ bands, rows })
    for (const [id, t] of sets) lsh.add(id, t)
    const lshBuild = performance.now() - t0
    gc()
    const lshRss = (rss() - mrss0) / MIB
    const lshHeap = (heap() - mheap0) / MIB
    log(`  minhash: built in ${round(lshBuild)} ms`)
    const lms: number[] = []
    let found = 0
    let total = 0
    queries.forEach((q, i) => {
      t0 = performance.now()
      const r = lsh.query(q, threshold)
      lms.push(performance.now() - t0)
      total += expected[i].size
      for (const m of r) if (expected[i].has(m.id)) found++
    })
    t0 = performance.now()
    const lshPairs = lsh.allPairs(threshold)
    const lshAllPairs = performance.now() - t0
    const lshLine = {
      config: 'minhash',
      ...data,
      bands,
      rows,
      build_ms: round(lshBuild),
      query_ms: latencies(lms),
      queries: queryCount,
      query_recall: total === 0 ? 1 : round(found / total, 4),
      all_pairs_ms: round(lshAllPairs),
      pairs: lshPairs.length,
      pairs_recall: expectedPairs === 0 ? 1 : round(lshPairs.length / expectedPairs, 4),
      rss_mb: round(lshRss),
      heap_mb: round(lshHeap),
    }
    process.stdout.write(`${JSON.stringify(lshLine)}\n`)
  }

  const summary = {
    build_ms: round(buildMs),
    query_p50_ms: round(percentile(qms, 50), 3),
    query_p99_ms: round(percentile(qms, 99), 3),
    all_pairs_ms: round(allPairsMs),
    bruteforce_all_pairs_ms: round(bfAllPairsMs),
    speedup: round(bfAllPairsMs / allPairsMs, 1),
    rss_mb: round(exactRss),
    clusters: n,
    threshold,
    pairs: pairs.length,
    bruteforce: 'extrapolated from sampled brute-force queries: mean ms per query / n * n(n-1)/2',
    agrees_with_bruteforce: agrees,
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify({ summary })}\n`)
}

main().catch((err) => {
  process.stderr.write(
    `bench:clustering failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  process.exitCode = 1
})
