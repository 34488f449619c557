import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import type { MemoryReclaim } from 'meshkit'

const BURST = fileURLToPath(new URL('./fixtures/memory-burst.js', import.meta.url))

describe('memory reclaimer', () => {
  it('gives back the memory of a burst once the process is quiet, once per interval', function () {
    this.timeout(30_000)
    const child = spawnSync(process.execPath, [BURST], { encoding: 'utf8', timeout: 25_000 })
    expect(child.status, child.stderr).to.equal(0)
    const r = JSON.parse(child.stdout) as {
      beforeBurst: number
      before: number
      peak: number
      reclaims: MemoryReclaim[]
    }
    expect(r.beforeBurst, 'nothing to give back before the burst').to.equal(0)
    expect(r.peak - r.before, 'the burst grew RSS').to.be.above(50)
    // one reclaim after the burst, none more within minIntervalMs
    expect(r.reclaims, JSON.stringify(r)).to.have.length(1)
    expect(r.reclaims[0].rssAfterMb, JSON.stringify(r)).to.be.below(r.reclaims[0].rssBeforeMb - 30)
  })
})
