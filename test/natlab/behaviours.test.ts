/**
 * The NAT lab's contract: each router behaviour really is what its name says, measured with a UDP probe
 * (RFC 5780-style: the mapping seen from two server IPs and two ports; unsolicited replies from the same
 * IP's other port and from another IP), plain UDP hole punching gives the expected 13 of 15 pairs, and
 * loss emulation drops what it should. Runs in network namespaces made by the lab (documentation and
 * benchmark ranges only); skipped, with the reason, without root, iproute2 or nftables.
 */
import { expect } from 'chai'
import { listNetns } from '../netns.js'
import {
  createLab,
  type Lab,
  type LabHost,
  labUnavailableReason,
  NAT_BEHAVIOURS,
  type NatBehaviour,
  type NatSite,
} from './lab.js'
import {
  checkBehaviour,
  countEchoes,
  EXPECTED,
  type ProbeServer,
  punchable,
  startProbeServer,
  udpPunch,
} from './probes.js'
import type { CheckResult } from './udp-probe.js'

const port = (a: string) => Number(a.slice(a.lastIndexOf(':') + 1))
const ipOf = (a: string) => a.slice(0, a.lastIndexOf(':'))

/** Runs `fn` over `items`, at most `limit` at a time (the machine is small and shared). */
async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

/** Asserts a check result against the behaviour's expectation; `wanIp` is the router's (none: the host's). */
function expectBehaviour(behaviour: NatBehaviour, r: CheckResult, wanIp: string): void {
  const why = `${behaviour}: ${JSON.stringify(r)}`
  const { server, otherPort, otherIp } = r.mapped
  const expected = EXPECTED[behaviour]
  for (const m of [server, otherPort, otherIp]) expect(ipOf(m), why).to.equal(wanIp)
  if (expected.mapping === 'local') {
    expect([server, otherPort, otherIp], why).to.deep.equal([r.local, r.local, r.local])
  } else if (expected.mapping === 'endpoint-independent') {
    expect([otherPort, otherIp], why).to.deep.equal([server, server])
    // the cone NATs keep the local port (the lab gives each LAN host its own port block)
    expect(port(server), why).to.equal(port(r.local))
  } else {
    expect(new Set([server, otherPort, otherIp]).size, why).to.equal(3)
  }
  expect(r.filtering, why).to.deep.equal({ otherPort: expected.otherPort, otherIp: expected.otherIp })
}

describe('NAT lab: router behaviours', function () {
  this.timeout(60_000)

  let lab: Lab | undefined
  let server: ProbeServer
  /** Two sites per behaviour: pairs of one behaviour need two routers. */
  const sites = new Map<NatBehaviour, [NatSite, NatSite]>()
  const table: string[] = []

  before(async function () {
    const why = await labUnavailableReason()
    if (why) {
      console.log(`      skipped: ${why}`)
      this.skip()
    }
    const started = Date.now()
    lab = await createLab()
    const serverHost = await lab.addPublicHost({ addresses: 2 })
    await Promise.all(
      NAT_BEHAVIOURS.map(async (b) => {
        sites.set(b, [await lab!.addNatSite(b), await lab!.addNatSite(b)])
      }),
    )
    server = await startProbeServer(lab, serverHost)
    console.log(`      lab of ${lab.namespaces.length} namespaces built in ${Date.now() - started} ms`)
  })

  after(async () => {
    if (table.length > 0) console.log(table.map((l) => `      ${l}`).join('\n'))
    if (!lab) return
    const namespaces = lab.namespaces
    await lab.destroy()
    const left = await listNetns()
    expect(left.filter((ns) => namespaces.includes(ns))).to.deep.equal([])
  })

  const wanOf = (site: NatSite) => site.router?.wanIp ?? site.host.ip

  describe('mapping and filtering, per behaviour', () => {
    for (const behaviour of NAT_BEHAVIOURS) {
      it(`${behaviour}: ${describeExpected(behaviour)}`, async () => {
        const site = sites.get(behaviour)![0]
        const r = await checkBehaviour(lab!, site.host, server)
        table.push(
          `${behaviour.padEnd(21)} local ${r.local.padEnd(20)} mapped ${r.mapped.server} / ${port(r.mapped.otherPort)} / ${port(r.mapped.otherIp)}  other port ${r.filtering.otherPort ? 'in ' : 'out'}  other IP ${r.filtering.otherIp ? 'in' : 'out'}`,
        )
        expectBehaviour(behaviour, r, wanOf(site))
      })
    }

    it('cone NATs map each of several LAN hosts to its own public port', async () => {
      const cones = ['full-cone', 'restricted-cone'] as const
      const hosts: Array<[NatBehaviour, LabHost, NatSite]> = []
      for (const b of cones) {
        const site = sites.get(b)![1]
        if (site.hosts.length < 2) await lab!.addHost(site)
        for (const h of site.hosts) hosts.push([b, h, site])
      }
      const results = await pool(hosts, 4, ([, h]) => checkBehaviour(lab!, h, server))
      results.forEach((r, i) => {
        const [b, h, site] = hosts[i]
        expect(r.local.startsWith(`${h.ip}:`)).to.equal(true)
        expectBehaviour(b, r, wanOf(site))
      })
    })
  })

  describe('plain UDP hole punching between two sites', () => {
    it('punches 13 of the 15 pairs: all but port-restricted-cone/symmetric and symmetric/symmetric', async () => {
      const pairs: Array<[NatBehaviour, NatBehaviour]> = []
      NAT_BEHAVIOURS.forEach((x, i) => {
        for (const y of NAT_BEHAVIOURS.slice(i)) pairs.push([x, y])
      })
      const started = Date.now()
      const results = await pool(pairs, 5, async ([x, y]) => {
        const t0 = Date.now()
        const r = await udpPunch(lab!, sites.get(x)![0].host, sites.get(y)![1].host, server)
        return { ...r, wallMs: Date.now() - t0 }
      })
      const rows = pairs.map(([x, y], i) => {
        const r = results[i]
        return {
          pair: `${x} + ${y}`,
          expected: punchable(x, y),
          punched: r.punched,
          ms: r.punched ? Math.max(r.a.ms ?? 0, r.b.ms ?? 0) : undefined,
          detail: r,
        }
      })
      table.push(
        `hole punching (${Date.now() - started} ms for 15 pairs):`,
        ...rows.map(
          (r) =>
            `  ${r.pair.padEnd(44)} ${(r.punched ? `punched in ${r.ms} ms` : 'not punched').padEnd(20)} (run: ${r.detail.wallMs} ms)`,
        ),
      )
      for (const r of rows) expect(r.punched, `${r.pair}: ${JSON.stringify(r.detail)}`).to.equal(r.expected)
      expect(rows.filter((r) => r.punched)).to.have.length(13)
    })
  })

  describe('loss emulation (nftables numgen)', () => {
    it('drops about N% each way through a router, and nothing once reset', async () => {
      const site = sites.get('port-restricted-cone')![1]
      await lab!.setLoss(site, 30)
      let lossy: Awaited<ReturnType<typeof countEchoes>>
      try {
        lossy = await countEchoes(lab!, site.host, server, 200)
      } finally {
        await lab!.setLoss(site, 0)
      }
      const clean = await countEchoes(lab!, site.host, server, 200)
      table.push(
        `loss 30% at the router: ${lossy.answered}/200 answered (expected ~49%); reset: ${clean.answered}/200`,
      )
      // 30% dropped each way: 0.7 * 0.7 = 49% answered; allow a wide margin (200 samples)
      expect(lossy.answered).to.be.within(60, 136)
      expect(clean.answered).to.equal(200)
    })
  })
})

function describeExpected(b: NatBehaviour): string {
  const e = EXPECTED[b]
  const mapping = {
    local: 'no mapping',
    'endpoint-independent': 'one mapping for every destination',
    'per-destination': 'a new mapping per destination',
  }[e.mapping]
  return `${mapping}; same IP other port ${e.otherPort ? 'in' : 'out'}, other IP ${e.otherIp ? 'in' : 'out'}`
}
