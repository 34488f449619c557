import { expect } from 'chai'
import fc from 'fast-check'
import { MeshError } from 'meshkit'
import {
  BruteForceIndex,
  jaccard,
  MinHashIndex,
  meetsThreshold,
  minOverlap,
  type SetIndex,
  SimilarityIndex,
} from '../plugins/jaccard-clusters/similarity-index.js'

/** Small vocabulary so that random sets overlap a lot; duplicates and empty sets come for free. */
const VOCAB = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']
const tagsArb = fc.array(fc.constantFrom(...VOCAB, 'x-unseen'), { maxLength: 9 })
const idArb = fc.constantFrom(...Array.from({ length: 12 }, (_, i) => `c${i}`))
const thresholdArb = fc.oneof(
  fc.constantFrom(1, 0.7, 0.5, 2 / 3, 1 / 3, 0.75, 0.8, 0.6, 0.25, 0.1, 0.9),
  fc.double({ min: 0.001, max: 1, noNaN: true }),
)

type Op =
  | { op: 'add'; id: string; tags: string[] }
  | { op: 'remove'; id: string }
  | { op: 'query'; tags: string[]; threshold: number }
  | { op: 'allPairs'; threshold: number }
  | { op: 'build' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('add' as const), id: idArb, tags: tagsArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), id: idArb }) },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('query' as const), tags: tagsArb, threshold: thresholdArb }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('allPairs' as const), threshold: thresholdArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('build' as const) }) },
)

/** Runs `ops` on `index` and on brute force side by side; every answer must be identical. */
function runAgainstBruteForce(index: SetIndex & { build?: () => void }, ops: Op[]): void {
  const ref = new BruteForceIndex()
  for (const o of ops) {
    switch (o.op) {
      case 'add':
        index.add(o.id, o.tags)
        ref.add(o.id, o.tags)
        break
      case 'remove':
        expect(index.remove(o.id)).to.equal(ref.remove(o.id))
        break
      case 'query':
        expect(index.query(o.tags, o.threshold), `query ${JSON.stringify(o)}`).to.deep.equal(
          ref.query(o.tags, o.threshold),
        )
        break
      case 'allPairs':
        expect(index.allPairs(o.threshold), `allPairs ${o.threshold}`).to.deep.equal(
          ref.allPairs(o.threshold),
        )
        break
      case 'build':
        index.build?.()
        break
    }
    expect(index.size).to.equal(ref.size)
  }
}

describe('clustering: similarity index', () => {
  describe('jaccard()', () => {
    it('counts distinct tags only', () => {
      expect(jaccard(['a', 'b', 'b'], ['b', 'c'])).to.equal(1 / 3)
      expect(jaccard(['a', 'a'], ['a'])).to.equal(1)
    })
    it('is 0 when either side is empty, including both', () => {
      expect(jaccard([], ['a'])).to.equal(0)
      expect(jaccard([], [])).to.equal(0)
    })
  })

  describe('threshold rule', () => {
    it('7/10 reaches exactly 0.7 (included) and 6/10 does not; 7/11 does not', () => {
      expect(meetsThreshold(7, 10, 0.7)).to.equal(true)
      expect(meetsThreshold(6, 10, 0.7)).to.equal(false)
      expect(meetsThreshold(7, 11, 0.7)).to.equal(false)
      expect(meetsThreshold(14, 20, 0.7)).to.equal(true)
    })
    it('agrees with the exact rational check for 0.7 on every union up to 2000', () => {
      // 0.7 = 7/10: inter/union >= 7/10  <=>  10 * inter >= 7 * union (integers, exact)
      for (let union = 1; union <= 2000; union++)
        for (let inter = 1; inter <= union; inter++)
          if (meetsThreshold(inter, union, 0.7) !== 10 * inter >= 7 * union)
            throw new Error(`${inter}/${union} disagrees`)
    })
    it('minOverlap() is the least overlap that passes the rule', () => {
      for (const t of [0.1, 0.5, 0.7, 2 / 3, 0.9, 1])
        for (let a = 1; a <= 30; a++)
          for (let b = 1; b <= 30; b++) {
            const o = minOverlap(a, b, t)
            for (let k = 1; k <= Math.min(a, b); k++)
              expect(meetsThreshold(k, a + b - k, t), `${a} ${b} ${t} ${k}`).to.equal(k >= o)
          }
    })
    it('the index includes 7/10 at threshold 0.7 and excludes 6/10', () => {
      const idx = new SimilarityIndex()
      const ten = Array.from({ length: 10 }, (_, i) => `t${i}`)
      idx.add('ten', ten)
      idx.add('seven', ten.slice(0, 7)) // J = 7/10
      idx.add('six', ten.slice(0, 6)) // J = 6/10
      idx.add('other', ['zzz'])
      expect(idx.query(ten, 0.7)).to.deep.equal([
        { id: 'ten', similarity: 1 },
        { id: 'seven', similarity: 0.7 },
      ])
      expect(idx.allPairs(0.7)).to.deep.equal([
        { a: 'seven', b: 'six', similarity: 6 / 7 },
        { a: 'seven', b: 'ten', similarity: 0.7 },
      ])
      expect(idx.allPairs(0.6).map((p) => `${p.a}-${p.b}`)).to.deep.equal([
        'seven-six',
        'seven-ten',
        'six-ten',
      ])
    })
  })

  describe('exact index', () => {
    it('rejects thresholds outside (0, 1]', () => {
      const idx = new SimilarityIndex()
      expect(() => idx.query(['a'], 0))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
      expect(() => idx.query(['a'], 1.01))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
      expect(() => idx.allPairs(Number.NaN))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
      expect(() => new SimilarityIndex({ minThreshold: 0 }))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
    })
    it('empty sets match nothing, not even each other', () => {
      const idx = new SimilarityIndex()
      idx.add('e1', [])
      idx.add('e2', [])
      idx.add('a', ['a'])
      expect(idx.query([], 0.5)).to.deep.equal([])
      expect(idx.query(['a'], 1)).to.deep.equal([{ id: 'a', similarity: 1 }])
      expect(idx.allPairs(0.01)).to.deep.equal([])
      expect(idx.get('e1')).to.deep.equal([])
    })
    it('replaces a set added again under the same id, and forgets removed ones', () => {
      const idx = new SimilarityIndex()
      idx.addAll([
        ['x', ['a', 'b']],
        ['y', ['a', 'b']],
      ])
      idx.add('x', ['c', 'd'])
      expect(idx.query(['a', 'b'], 0.5)).to.deep.equal([{ id: 'y', similarity: 1 }])
      expect(idx.query(['c', 'd'], 0.5)).to.deep.equal([{ id: 'x', similarity: 1 }])
      expect(idx.remove('y')).to.equal(true)
      expect(idx.remove('y')).to.equal(false)
      expect(idx.query(['a', 'b'], 0.5)).to.deep.equal([])
      expect(idx.size).to.equal(1)
    })
    it('serves thresholds below minThreshold exactly (scan fallback)', () => {
      const idx = new SimilarityIndex({ minThreshold: 0.8 })
      idx.add('x', ['a', 'b', 'c', 'd'])
      expect(idx.query(['a', 'z'], 0.2)).to.deep.equal([{ id: 'x', similarity: 0.2 }])
    })

    it('property: query and allPairs equal brute force through random adds/removes/rebuilds', function () {
      this.timeout(120_000)
      fc.assert(
        fc.property(
          fc.array(opArb, { maxLength: 60 }),
          fc.constantFrom(0.05, 0.3, 0.5, 0.7, 1),
          fc.nat({ max: 8 }),
          (ops, minThreshold, rebuildMin) =>
            runAgainstBruteForce(new SimilarityIndex({ minThreshold, rebuildMin, rebuildRatio: 0.3 }), ops),
        ),
        { numRuns: 3000 },
      )
    })

    it('property: bulk-built index equals brute force on larger random sets', function () {
      this.timeout(120_000)
      const bigTags = fc.array(fc.integer({ min: 0, max: 30 }).map(String), { maxLength: 25 })
      fc.assert(
        fc.property(
          fc.array(bigTags, { maxLength: 80 }),
          fc.array(bigTags, { maxLength: 10 }),
          thresholdArb,
          (sets, queries, t) => {
            const idx = new SimilarityIndex()
            const ref = new BruteForceIndex()
            idx.addAll(sets.map((s, i) => [`s${i}`, s] as const))
            for (let i = 0; i < sets.length; i++) ref.add(`s${i}`, sets[i])
            expect(idx.allPairs(t)).to.deep.equal(ref.allPairs(t))
            for (const q of queries) expect(idx.query(q, t)).to.deep.equal(ref.query(q, t))
          },
        ),
        { numRuns: 300 },
      )
    })
  })

  it('property: sets larger than the overlap table (> 127 tags) stay exact', function () {
    this.timeout(120_000)
    const big = fc.array(fc.integer({ min: 0, max: 220 }).map(String), { minLength: 100, maxLength: 220 })
    fc.assert(
      fc.property(fc.array(big, { minLength: 2, maxLength: 12 }), thresholdArb, (sets, t) => {
        const idx = new SimilarityIndex({ minThreshold: 0.3 })
        const ref = new BruteForceIndex()
        idx.addAll(sets.map((s, i) => [`s${i}`, s] as const))
        for (let i = 0; i < sets.length; i++) ref.add(`s${i}`, sets[i])
        expect(idx.allPairs(t)).to.deep.equal(ref.allPairs(t))
        for (const q of sets.slice(0, 3)) expect(idx.query(q, t)).to.deep.equal(ref.query(q, t))
      }),
      { numRuns: 100 },
    )
  })

  it('equals brute force on a Zipf workload with near-duplicates (1500 sets, 5-20 tags)', function () {
    this.timeout(60_000)
    let state = 7
    const rnd = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0
      return state / 2 ** 32
    }
    const zipfTag = () => `t${Math.floor(1 / (rnd() * 0.999 + 0.001)) - 1}` // heavy head, long tail
    const sets: string[][] = []
    for (let i = 0; i < 1500; i++) {
      if (i > 0 && rnd() < 0.2) {
        const copy = [...sets[Math.floor(rnd() * i)]]
        copy[Math.floor(rnd() * copy.length)] = zipfTag()
        sets.push(copy)
      } else sets.push(Array.from({ length: 5 + Math.floor(rnd() * 16) }, zipfTag))
    }
    const idx = new SimilarityIndex({ minThreshold: 0.5 })
    const ref = new BruteForceIndex()
    idx.addAll(sets.map((s, i) => [`s${i}`, s] as const))
    for (let i = 0; i < sets.length; i++) ref.add(`s${i}`, sets[i])
    for (const t of [0.5, 0.7, 0.9]) {
      const pairs = idx.allPairs(t)
      expect(pairs).to.deep.equal(ref.allPairs(t))
      if (t === 0.7) expect(pairs.length).to.be.greaterThan(100)
      for (let q = 0; q < 50; q++) expect(idx.query(sets[q], t)).to.deep.equal(ref.query(sets[q], t))
    }
  })

  describe('MinHash LSH index', () => {
    it('never returns a false positive, and results carry exact similarities', function () {
      this.timeout(60_000)
      fc.assert(
        fc.property(fc.array(opArb, { maxLength: 40 }), (ops) => {
          const lsh = new MinHashIndex({ bands: 8, rows: 2 })
          const ref = new BruteForceIndex()
          for (const o of ops) {
            if (o.op === 'add') {
              lsh.add(o.id, o.tags)
              ref.add(o.id, o.tags)
            } else if (o.op === 'remove') expect(lsh.remove(o.id)).to.equal(ref.remove(o.id))
            else if (o.op === 'query') {
              const truth = new Map(ref.query(o.tags, o.threshold).map((m) => [m.id, m.similarity]))
              for (const m of lsh.query(o.tags, o.threshold)) expect(truth.get(m.id)).to.equal(m.similarity)
            } else if (o.op === 'allPairs') {
              const truth = new Set(ref.allPairs(o.threshold).map((p) => `${p.a}|${p.b}|${p.similarity}`))
              for (const p of lsh.allPairs(o.threshold))
                expect(truth.has(`${p.a}|${p.b}|${p.similarity}`)).to.equal(true)
            }
          }
        }),
        { numRuns: 300 },
      )
    })
    it('finds identical sets always and high-similarity sets with high recall', () => {
      const lsh = new MinHashIndex({ bands: 20, rows: 5 })
      const ref = new BruteForceIndex()
      let state = 1
      const rnd = () => {
        state = (Math.imul(state, 1103515245) + 12345) >>> 0
        return state / 2 ** 32
      }
      for (let i = 0; i < 800; i++) {
        const tags = Array.from({ length: 5 + Math.floor(rnd() * 15) }, () => `t${Math.floor(rnd() * 300)}`)
        lsh.add(`s${i}`, tags)
        ref.add(`s${i}`, tags)
        if (i % 10 === 0) {
          // a near-duplicate: one tag swapped
          const near = [...new Set(tags)]
          near[0] = `u${i}`
          lsh.add(`n${i}`, near)
          ref.add(`n${i}`, near)
        }
      }
      let found = 0
      let total = 0
      for (const id of ref.ids()) {
        const tags = ref.get(id)!
        const got = new Set(lsh.query(tags, 0.7).map((m) => m.id))
        expect(got.has(id)).to.equal(true)
        for (const m of ref.query(tags, 0.7)) {
          total++
          if (got.has(m.id)) found++
        }
      }
      expect(found / total).to.be.greaterThan(0.9)
    })
    it('rejects bad shapes', () => {
      expect(() => new MinHashIndex({ bands: 0 }))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
      expect(() => new MinHashIndex({ rows: 1.5 }))
        .to.throw(MeshError)
        .with.property('code', 'MESH_ERR_CLUSTERS_INVALID_OPTION')
    })
  })
})
