/**
 * Bootstrap loss (issue 12), small (full size in `npm run bench:faults -- --only bootstrap`): a loopback
 * mesh of `mesh start` processes forms through its bootstrap node; the bootstrap node is SIGKILLed. A new
 * member that knows one member only is found by the others (member exchange, no rendezvous point left);
 * members restarted on their data dir rejoin: from their peer cache alone (datastore 'memory'), and with
 * the persistent datastore (kad-dht's routing table from the peer store dials them too).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { runBootstrapLoss } from '../bench/churn/bootstrap-loss.js'

describe('resilience: every bootstrap node gone (real processes)', function () {
  this.timeout(180_000)
  let dir = ''
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshkit-boot-loss-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('members find a new member through each other; restarted members rejoin from their peer cache', async () => {
    const r = await runBootstrapLoss({
      root: dir,
      peers: 4,
      bootstraps: 1,
      newMembers: 1,
      restarts: 2,
      timeoutMs: 45_000,
    })
    console.log(`      ${JSON.stringify(r)}`)
    expect(r.problems, r.problems.join('\n')).to.deep.equal([])
    expect(r.formationMs).to.be.a('number')
    expect(r.satisfiedAfterLoss, 'the members kept their topic peers').to.equal(true)
    expect(r.newMemberMs).to.have.length(1)
    expect(r.newMemberMs[0]).to.be.a('number')
    expect(r.newMembersKnownByAll, 'every member counts the new one').to.equal(1)
    expect(r.rejoinMs).to.have.length(2)
    for (const ms of r.rejoinMs) expect(ms).to.be.a('number')
    expect(r.rejoinModes).to.deep.equal(['peer-cache only', 'persistent datastore'])
    expect(r.rejoinedFromCache[0], 'the cache-only restart dialled its cached peers').to.equal(true)
  })
})
