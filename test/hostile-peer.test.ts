/**
 * Security issue 10's acceptance, in the reduced form `npm test` can afford: one `mesh start` node with
 * every built-in plugin that runs on loopback, attacked for 15 s with every attack of test/hostile in
 * rotation (6 at a time: every protocol it serves, the transport, and Meshkit's own protocols), then left
 * alone for 30 s. The full run (60 s + 30 s) is `npm run bench:hostile`.
 */
import { expect } from 'chai'
import { builtinPlugins } from 'meshkit/plugins'
import {
  ALL_PLUGIN_NAMES,
  ATTACKS,
  type HostileRunResult,
  type HostileSummary,
  lp,
  pb,
  readVarint,
  runHostile,
  unpb,
  varint,
} from './hostile/index.js'

const ATTACK_MS = 15_000
/**
 * The measure: < 2 % CPU after 30 s idle (the CPU window is the last 5 s). Shorter idles failed
 * in CI: 3 % 5-10 s after a 15 s attack, 2.0 % at 15-20 s, where the memory reclaimer's one
 * memory-reducing GC after the attack (src/core/memory-reclaimer.ts) or the attack's last connections
 * closing fell into the window.
 */
const IDLE_MS = 30_000
/** "no more than a few hundred log lines" for the 60 s + 30 s run; this run is a quarter of it. */
const MAX_LOG_LINES = 300

const brief = (s: HostileSummary) => JSON.stringify(s)

/** Dials to one failing address in `ms` under a backoff of 2 s doubling: at 0, 2, 6, 14, 30 s ... */
function maxBackedOffDials(ms: number): number {
  let dials = 0
  for (let at = 0, wait = 2000; at <= ms; at += wait, wait *= 2) dials++
  return dials
}

describe('hostile peers against a node with every plugin (issue 10)', function () {
  this.timeout(240_000)
  let run: HostileRunResult

  before(async function () {
    this.timeout(240_000)
    run = await runHostile({
      durationMs: ATTACK_MS,
      idleMs: IDLE_MS,
      parallel: 6,
      settleMs: 4000,
      idleCpuWindowMs: 5000,
    })
  })

  it('ran every attack against the target (the harness reached it)', () => {
    const ran = run.attacks.map((a) => a.attack)
    expect(ran, 'attacks that ran').to.have.members(ATTACKS.map((a) => a.attackName))
    expect(run.summary.attacks_failed, 'attacks that broke (harness problems)').to.deep.equal([])
    for (const a of run.attacks) {
      const touched = a.bytesSent > 0 || (a.counters.dials ?? 0) > 0 || (a.counters.sockets_opened ?? 0) > 0
      expect(touched, `${a.attack} sent nothing to the target: ${JSON.stringify(a)}`).to.equal(true)
    }
  })

  it('survives: still running and answering a fresh peer and its control API', () => {
    expect(run.summary.survived, brief(run.summary)).to.equal(true)
  })

  it('lets an honest peer in (handshake + ping) while under attack', () => {
    expect(run.summary.probe_failed, `honest probes that failed: ${brief(run.summary)}`).to.equal(0)
  })

  it('returns to < 2% CPU once the attack is over', () => {
    expect(run.summary.idle_cpu_pct, `idle CPU %: ${brief(run.summary)}`).to.be.below(2)
  })

  it('returns to within 1.3x its starting RSS once the attack is over', () => {
    expect(run.summary.rss_ratio, `RSS idle / start: ${brief(run.summary)}`).to.be.at.most(1.3)
  })

  it('dials no address an attacker gave it once the attack is over (no background retries)', () => {
    expect(run.summary.background_dials_after_by_label, brief(run.summary)).to.deep.equal({})
    expect(run.summary.target_dials_idle, `outbound dials while idle: ${brief(run.summary)}`).to.equal(0)
    expect(run.summary.retry_log_lines_after, `retry lines while idle: ${brief(run.summary)}`).to.equal(0)
  })

  it('never sends to an address a peer named as a victim (DHT provider addresses: backed off)', () => {
    const victims = Object.entries(run.summary.sentinel_hits_by_label).filter(([label]) =>
      label.startsWith('victim:'),
    )
    // Provider records are how the DHT names members, so the target dials the address a provider gave
    // for its topic key, under kad-topics' dial guard: one failing address is backed off 2 s, 4 s, 8 s,
    // ... (5 min at most), whatever peer ids claim it. Every other victim gets nothing.
    const { 'victim:kad-topic-poison': poisonDials = 0, ...others } = Object.fromEntries(victims)
    expect(others, brief(run.summary)).to.deep.equal({})
    expect(poisonDials, brief(run.summary)).to.be.at.most(maxBackedOffDials(ATTACK_MS + IDLE_MS))
  })

  it(`logs at most ${MAX_LOG_LINES} lines for the attack and the idle time`, () => {
    expect(run.summary.log_lines, `log lines: ${brief(run.summary)}`).to.be.at.most(MAX_LOG_LINES)
  })
})

describe('hostile harness', () => {
  it('targets every built-in plugin except those that cannot run here', () => {
    // mdns and dns-seeds reach outside loopback; relay-client cannot start beside hole-punch (see target.ts);
    // private-network would keep every attacker out at the handshake (and refuses quic and hole-punch);
    // gate with no lists changes nothing (test/gate.test.ts)
    const left = [...builtinPlugins.keys()].filter((name) => !ALL_PLUGIN_NAMES.includes(name))
    expect(left.sort()).to.deep.equal(['dns-seeds', 'gate', 'mdns', 'private-network', 'relay-client'])
  })

  it('encodes varints, length prefixes and protobuf fields as libp2p does', () => {
    for (const n of [0, 1, 127, 128, 300, 2 ** 31, 2 ** 40])
      expect(readVarint(varint(n))).to.deep.equal([n, varint(n).length])
    expect([...varint(300)]).to.deep.equal([0xac, 0x02])
    expect([...lp(Uint8Array.from([7, 8]))]).to.deep.equal([2, 7, 8])
    const message = pb([
      [1, 2],
      [2, 'key'],
      [9, Uint8Array.from([1, 2, 3])],
      [9, Uint8Array.from([4])],
    ])
    const fields = unpb(message)
    expect(fields.get(1)).to.deep.equal([2])
    expect(new TextDecoder().decode(fields.get(2)![0] as Uint8Array)).to.equal('key')
    expect((fields.get(9) as Uint8Array[]).map((b) => [...b])).to.deep.equal([[1, 2, 3], [4]])
  })
})
