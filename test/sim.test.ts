/**
 * The scale simulator (bench/sim, `npm run sim`) at 100 nodes: real Meshkit nodes (kernel, bootstrap,
 * kadTopics, jaccardClusters) over the simulated network with 50 ms links, topics with Zipf sizes, all
 * nodes joining at once. Every member of every topic must reach min(5, members - 1) topic peers, within
 * a p99 bound. Worker threads in this process; nothing leaves it (no socket is opened).
 */
import { expect } from 'chai'
import { runSimulation } from '../bench/sim/run.js'
import { defaultOptions } from '../bench/sim/scenario.js'

/**
 * p99 time to reach the target, for rare and popular topics alike (ms of simulated time). A regression
 * bound, not the goal of 10 s: the 100-node run measured a p99 of 36-38 s (docs/scale.md).
 */
const P99_BOUND_MS = 60_000
/** The process's own clock and timers: the run's time dilation must not outlive it (tests run after it). */
const real = { Date, setTimeout, setInterval, timeout: AbortSignal.timeout, perfNow: performance.now }

describe('scale simulator: 100 nodes', function () {
  this.timeout(300_000)

  it('every member of every topic, rare ones included, finds its topic; at most 5 % end short of min(k, members - 1); p99 bounded', async () => {
    const options = { ...defaultOptions(100), settle: 30, background: 2, clusters: false }
    const lines: string[] = []
    const { summary, result } = await runSimulation(options, (line) => lines.push(line))
    // the clock is the process's own again: a slowdown left installed made a later test file's
    // replacements look 47 s slow to start (dilated Date.now against the children's real one)
    expect(globalThis.Date, 'Date after the run').to.equal(real.Date)
    expect(globalThis.setTimeout, 'setTimeout after the run').to.equal(real.setTimeout)
    expect(globalThis.setInterval, 'setInterval after the run').to.equal(real.setInterval)
    expect(AbortSignal.timeout, 'AbortSignal.timeout after the run').to.equal(real.timeout)
    expect(performance.now, 'performance.now after the run').to.equal(real.perfNow)
    const detail = JSON.stringify({ summary, neverFound: result.rendezvous.neverFoundSamples })
    expect(result.nodes.startErrors, detail).to.equal(0)
    expect(summary.nodes).to.equal(100)
    expect(result.rendezvous.all.members, detail).to.be.greaterThan(100)
    // every member finds its topic (at least one topic peer); reaching the full min(k, members - 1) is
    // not reliable yet: a few members of small topics end one or two peers short (issue 15 stays open,
    // 0-8 of ~300 memberships in CI runs), bounded here at 5 %
    expect(result.rendezvous.noPeerEver, detail).to.equal(0)
    expect(summary.never_found, detail).to.be.at.most(Math.ceil(result.rendezvous.all.members * 0.05))
    expect(summary.rendezvous_p99_ms_rare, detail).to.be.a('number').and.at.most(P99_BOUND_MS)
    expect(summary.rendezvous_p99_ms_popular, detail).to.be.a('number').and.at.most(P99_BOUND_MS)
  })
})
