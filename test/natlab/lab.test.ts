/**
 * The NAT lab harness itself: what it builds (names, addresses, routes, rules) and that nothing of it
 * outlives a lab, whether destroyed, or its process exits, throws or is killed by a signal. Skipped, with
 * the reason, without root, iproute2 or nftables.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { deleteNetns, listNetns, netnsIp, netnsNft, netnsPids } from '../netns.js'
import { createLab, type Lab, labUnavailableReason, lanPortRange } from './lab.js'

const FIXTURE = fileURLToPath(new URL('./exit-fixture.js', import.meta.url))

/** Whether `pid` runs (a zombie waiting for a reaper counts as dead). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

describe('NAT lab harness', function () {
  this.timeout(60_000)

  before(async function () {
    const why = await labUnavailableReason()
    if (why) {
      console.log(`      skipped: ${why}`)
      this.skip()
    }
  })

  describe('topology', () => {
    let lab: Lab | undefined

    after(async () => {
      await lab?.destroy()
    })

    it('builds public hosts and NAT sites on documentation and benchmark ranges only', async () => {
      lab = await createLab()
      const pub = await lab.addPublicHost({ addresses: 2 })
      const site = await lab.addNatSite('restricted-cone', { hosts: 2 })
      const none = await lab.addNatSite('none')
      expect(pub.addresses).to.deep.equal(['198.51.100.10', '198.51.100.11'])
      expect(none.router).to.equal(undefined)
      expect(none.host.ip).to.equal('198.51.100.12')
      expect(none.host.site).to.equal(none)
      expect(site.router).to.include({
        wanIp: '203.0.113.10',
        lanIp: '198.18.1.1',
        lanSubnet: '198.18.1.0/24',
      })
      expect(site.hosts.map((h) => h.ip)).to.deep.equal(['198.18.1.10', '198.18.1.11'])
      expect(lab.namespaces.every((ns) => ns.startsWith(`${lab!.id}-`))).to.equal(true)
      expect(await listNetns()).to.include.members(lab.namespaces)

      // every address anywhere in the lab is in 198.51.100/24, 203.0.113/24 or 198.18/15 (or loopback)
      for (const ns of lab.namespaces) {
        const { stdout } = await netnsIp(ns, ['-4', '-o', 'addr', 'show'])
        for (const [, address] of stdout.matchAll(/inet (\S+)\//g))
          expect(address, `${ns}: ${address}`).to.match(/^(127\.|198\.51\.100\.|203\.0\.113\.|198\.1[89]\.)/)
      }
      const { stdout: routes } = await netnsIp(site.hosts[1].netns, ['route', 'show', 'default'])
      expect(routes).to.contain('via 198.18.1.1')
      const { stdout: range } = await lab.exec(site.hosts[1], '/bin/cat', [
        '/proc/sys/net/ipv4/ip_local_port_range',
      ])
      expect(range.trim().split(/\s+/).map(Number)).to.deep.equal(lanPortRange(1))

      // the router holds exactly the behaviour's table; hosts and inet have no nft rules at all
      const listed = await lab.listRules(site.router!)
      expect(listed).to.contain('set contacted').and.to.contain('masquerade')
      expect((await netnsNft(site.router!.netns, ['list', 'tables'])).stdout.trim()).to.equal(
        'table ip natlab',
      )
      for (const ns of [lab.inet, pub.netns, site.host.netns])
        expect((await netnsNft(ns, ['list', 'tables'])).stdout.trim(), ns).to.equal('')
    })

    it('nests a NAT site behind another (double NAT): traffic leaves with the outer WAN address', async () => {
      const pub = lab!.hosts.find((h) => !h.site)!
      const outer = await lab!.addNatSite('port-restricted-cone', { hosts: 0 })
      const inner = await lab!.addNatSite('full-cone', { behind: outer })
      // the inner router's WAN is a host address of the outer LAN, its gateway the outer router
      expect(inner.router!.wanIp).to.equal(outer.router!.lanIp.replace(/\.1$/, '.10'))
      expect(inner.router!.outer).to.equal(outer.router)
      const { stdout: routes } = await netnsIp(inner.router!.netns, ['route', 'show', 'default'])
      expect(routes).to.contain(`via ${outer.router!.lanIp}`)
      // a datagram from the inner host reaches the public host from the outer router's WAN address
      const echo = lab!.spawn(pub, process.execPath, [
        '-e',
        "const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(r.address,r.port,r.address));s.bind(3999,()=>console.log('up'))",
      ])
      try {
        await echo.waitUntil(() => echo.stdoutLines.includes('up') || undefined, { timeoutMs: 10_000 })
        const { stdout } = await lab!.exec(inner.host, process.execPath, [
          '-e',
          `const s=require('dgram').createSocket('udp4');s.on('message',(m)=>{console.log(String(m));process.exit(0)});const t=setInterval(()=>s.send('x',3999,'${pub.ip}'),200);setTimeout(()=>process.exit(1),5000)`,
        ])
        expect(stdout.trim()).to.equal(outer.router!.wanIp)
      } finally {
        await echo.kill('SIGKILL')
      }
      let err: unknown
      await lab!.setWanAddress(inner).catch((e) => {
        err = e
      })
      expect(String(err)).to.contain('behind another NAT')
    })

    it('sets and removes loss, and rejects a bad percentage', async () => {
      const site = lab!.sites.find((s) => s.router)!
      await lab!.setLoss(site, 25)
      const tables = async () => (await netnsNft(site.router!.netns, ['list', 'tables'])).stdout
      expect(await tables()).to.contain('table inet natlab_loss')
      expect(
        (await netnsNft(site.router!.netns, ['list', 'table', 'inet', 'natlab_loss'])).stdout,
      ).to.contain('numgen random mod 100 < 25 drop')
      await lab!.setLoss(site, 0)
      await lab!.setLoss(site, 0)
      expect(await tables()).not.to.contain('natlab_loss')
      let err: unknown
      await lab!.setLoss(site, 120).catch((e) => {
        err = e
      })
      expect(String(err)).to.contain('integer percentage')
    })

    it('destroy kills the processes and deletes every namespace', async () => {
      const site = lab!.sites.find((s) => s.router)!
      const proc = lab!.spawn(site.host, process.execPath, ['-e', 'setInterval(() => {}, 1000)'])
      await new Promise((r) => setTimeout(r, 200))
      expect(await netnsPids(site.host.netns)).to.include(proc.pid)
      const namespaces = lab!.namespaces
      await lab!.destroy()
      expect((await listNetns()).filter((ns) => namespaces.includes(ns))).to.deep.equal([])
      expect(proc.exit).not.to.equal(undefined)
      expect(lab!.namespaces).to.deep.equal([])
      let err: unknown
      await lab!.addPublicHost().catch((e) => {
        err = e
      })
      expect(String(err)).to.contain('destroyed')
      lab = undefined
    })
  })

  describe('nothing outlives the process that built a lab', () => {
    for (const mode of ['exit', 'throw', 'SIGTERM', 'SIGINT'] as const) {
      it(`when it ${mode === 'exit' ? 'calls process.exit' : mode === 'throw' ? 'throws' : `gets ${mode}`}`, async () => {
        const child = spawn(process.execPath, [FIXTURE, mode.startsWith('SIG') ? 'signal' : mode], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, NODE_OPTIONS: undefined },
        })
        let out = ''
        let err = ''
        child.stdout.on('data', (d) => {
          out += d
        })
        child.stderr.on('data', (d) => {
          err += d
        })
        const exited = new Promise<void>((resolve) => child.once('close', () => resolve()))
        const bound = setTimeout(() => child.kill('SIGKILL'), 30_000)
        let namespaces: string[] = []
        try {
          const deadline = Date.now() + 20_000
          while (!out.includes('\n') && child.exitCode === null && Date.now() < deadline)
            await new Promise((r) => setTimeout(r, 50))
          const line = out.split('\n')[0]
          expect(line, `fixture output: ${out}\n${err}`).to.match(/^\{/)
          const built = JSON.parse(line) as { namespaces: string[]; pid: number }
          namespaces = built.namespaces
          const pid = built.pid
          expect(namespaces).to.have.length(3)
          if (mode.startsWith('SIG')) child.kill(mode as NodeJS.Signals)
          await exited
          if (mode === 'exit') expect(child.exitCode).to.equal(3)
          if (mode === 'throw') expect(err).to.contain('uncaught, on purpose')
          if (mode.startsWith('SIG')) expect(child.signalCode).to.equal(mode)
          expect((await listNetns()).filter((ns) => namespaces.includes(ns))).to.deep.equal([])
          expect(alive(pid), 'the process started in the lab').to.equal(false)
        } finally {
          clearTimeout(bound)
          child.kill('SIGKILL')
          // if the handler failed, do not leave its namespaces behind for the next tests
          for (const ns of namespaces) await deleteNetns(ns).catch(() => {})
        }
      })
    }
  })
})
