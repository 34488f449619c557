/**
 * The scale simulator (bench/sim, `npm run sim`) at 100 nodes: real Meshkit nodes (kernel, bootstrap,
 * kadTopics; clustering off) over the simulated network with 50 ms links, topics with Zipf sizes, all
 * nodes joining at once. Every member of every topic must reach min(5, members - 1) topic peers, within
 * a p99 bound. Worker threads in this process; nothing leaves it (no socket is opened).
 */
import { expect } from 'chai'
import { runSimulation } from '../bench/sim/run.js'
import { defaultOptions } from '../bench/sim/scenario.js'

/**
 * p99 time to reach the target, for rare and popular topics alike (ms of simulated time). A regression
 * bound with room for a slower machine, not the goal of 10 s: at a slowdown of 4 the 100-node
 * run measured a p99 of 5.7-11.2 s in 13 runs (at the old slowdown of 2: 21-39 s, see SLOWDOWN).
 */
const P99_BOUND_MS = 30_000
/**
 * Time dilation of the run. At the simulator's default for 100 nodes (2) both node threads of this
 * 2-core machine were 99 % busy with an event-loop lag p99 of 0.7-1.5 s of simulated time in every run:
 * libp2p's connection monitor aborted connections whose pings came back late, upgrades timed out, and
 * in 1 run of 7 (and one CI run) a member of a 2-member topic never reached the other (`noPeerEver`).
 * At 4 the lag p99 is ~0.2 s simulated, the mesh converges in 10-14 s instead of 25-35 s, and the run
 * takes no longer (50-72 s against 65-97 s of wall time): the test measures the protocol, not the
 * starvation.
 */
const SLOWDOWN = 4
/** The process's own clock and timers: the run's time dilation must not outlive it (tests run after it). */
const real = { Date, setTimeout, setInterval, timeout: AbortSignal.timeout, perfNow: performance.now }

describe('scale simulator: 100 nodes', function () {
  this.timeout(300_000)

  it('every member of every topic, rare ones included, reaches min(k, members - 1) topic peers (never_found = 0); p99 bounded', async () => {
    const options = { ...defaultOptions(100), settle: 30, background: 2, clusters: false, slowdown: SLOWDOWN }
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
    // every member finds its topic and reaches min(k, members - 1) topic peers: at a slowdown of 4,
    // never_found was 0 in 13 of 13 runs (at 2, members of small topics ended short in CI runs, 0-8 of
    // ~150, and once one never had a peer)
    expect(result.rendezvous.noPeerEver, detail).to.equal(0)
    expect(summary.never_found, detail).to.equal(0)
    expect(summary.rendezvous_p99_ms_rare, detail).to.be.a('number').and.at.most(P99_BOUND_MS)
    expect(summary.rendezvous_p99_ms_popular, detail).to.be.a('number').and.at.most(P99_BOUND_MS)
  })
})
