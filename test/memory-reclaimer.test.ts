import { expect } from 'chai'
import { type MemoryReclaim, startMemoryReclaimer } from 'meshkit'

const rssMb = () => process.memoryUsage.rss() / 1e6

describe('memory reclaimer', () => {
  it('gives back the memory of a burst once the process is quiet, once per interval', async function () {
    this.timeout(30_000)
    const reclaims: MemoryReclaim[] = []
    const reclaimer = startMemoryReclaimer({
      intervalMs: 100,
      quietSamples: 3,
      growth: 1.1,
      minIntervalMs: 60_000,
      onReclaim: (r) => reclaims.push(r),
    })
    try {
      // quiet first: the reclaimer learns the baseline
      await new Promise((r) => setTimeout(r, 600))
      expect(reclaims, 'nothing to give back before the burst').to.deep.equal([])
      const before = rssMb()
      // a burst: ~150 MB of objects that live long enough to reach the old generation, then are dropped
      let keep: unknown[][] = []
      for (let round = 0; round < 6; round++) {
        keep.push(Array.from({ length: 300_000 }, (_, i) => ({ i, s: `x${i}` })))
        await new Promise((r) => setImmediate(r))
      }
      const peak = rssMb()
      keep = []
      expect(peak - before, 'the burst grew RSS').to.be.above(50)
      const deadline = Date.now() + 10_000
      while (reclaims.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
      expect(reclaims, 'one reclaim after the burst').to.have.length(1)
      expect(reclaims[0].rssAfterMb, JSON.stringify(reclaims[0])).to.be.below(reclaims[0].rssBeforeMb - 30)
      // quiet on: no second reclaim within minIntervalMs
      await new Promise((r) => setTimeout(r, 800))
      expect(reclaimer.reclaims).to.equal(1)
    } finally {
      reclaimer.stop()
    }
  })
})
