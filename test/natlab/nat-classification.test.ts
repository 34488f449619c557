/**
 * NAT type classification in the lab (issue 4, part 2): a public Meshkit node runs natProbeServer() on two
 * addresses (198.51.100.10 and .11, ports 3478/3479, UDP and TCP); behind each router behaviour one host
 * runs `mesh nat --json` (natCommand, with natClassifier() in its config). Every behaviour must be
 * classified right, for UDP and for TCP.
 *
 * First, the raw probe (plugins/nat-probe/client.js without libp2p) measures what the lab's routers do to
 * TCP: docs/nat.md says the cone rules cover TCP too, but only UDP is verified by behaviours.test.ts.
 *
 * Runs in network namespaces made by the lab (documentation and benchmark ranges only); skipped, with the
 * reason, without root, iproute2 or nftables. Configs live in a temp dir outside the repo, whose
 * node_modules links make 'meshkit' and the compiled plugin resolve.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { judge, type ProtocolEvidence } from '../../plugins/nat-probe/client.js'
import type { NatReport } from '../../plugins/nat-probe/index.js'
import { CLI_MAIN } from '../cli-helpers.js'
import { type ConfigProject, configProject, REPO_ROOT } from '../fixtures/configs/project.js'
import { IP, listNetns, type NetnsProcess } from '../netns.js'
import {
  createLab,
  type Lab,
  type LabHost,
  labUnavailableReason,
  NAT_BEHAVIOURS,
  type NatBehaviour,
} from './lab.js'
import { EXPECTED } from './probes.js'

const PORTS = [3478, 3479] as const
/** What the classifier must say for each router behaviour. */
const VERDICT: Record<NatBehaviour, string> = {
  none: 'public',
  'full-cone': 'full-cone',
  'restricted-cone': 'restricted-cone',
  'port-restricted-cone': 'port-restricted-cone',
  symmetric: 'symmetric',
}

/** The environment of lab processes: none of the test runner's Node options. */
const labEnv = () => ({ ...process.env, NODE_OPTIONS: undefined, DEBUG: undefined })

/** Runs `fn` over `items`, at most `limit` at a time (2 shared cores). */
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

function jsonLines(proc: NetnsProcess): Array<Record<string, unknown>> {
  return proc.stdoutLines.flatMap((line) => {
    try {
      const v = JSON.parse(line)
      return typeof v === 'object' && v !== null ? [v as Record<string, unknown>] : []
    } catch {
      return []
    }
  })
}

/** The runner scripts written into the temp project. */
const RAW_PROBE = `
import { gatherTcp, gatherUdp } from 'meshkit-nat-probe/client.js'
const [server, local] = process.argv.slice(2)
setTimeout(() => { console.log(JSON.stringify({ event: 'error', message: 'overall timeout' })); process.exit(2) }, 20000).unref()
const opts = { servers: [server], stun: [], localAddress: local, timeoutMs: 1500, retransmitMs: 200 }
const [udp, tcp] = await Promise.all([gatherUdp(opts), gatherTcp(opts)])
console.log(JSON.stringify({ event: 'raw', udp, tcp }))
process.exit(0)
`
const NAT_CLIENT = `
import { natCommand } from ${JSON.stringify(join(REPO_ROOT, 'dist', 'src', 'cli', 'nat-command.js'))}
setTimeout(() => { console.log(JSON.stringify({ event: 'error', message: 'overall timeout' })); process.exit(2) }, 40000).unref()
const io = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) }
try {
  await natCommand({ cwd: process.cwd(), config: process.argv[2], dataDir: process.argv[3], json: true }, io)
  process.exit(0)
} catch (err) {
  console.log(JSON.stringify({ event: 'error', message: err?.describe?.() ?? String(err?.stack ?? err) }))
  process.exit(1)
}
`

function serverConfig(addresses: readonly string[]): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
    "import { natProbeServer } from 'meshkit-nat-probe/index.js'",
    'export default defineConfig({',
    "  datastore: 'memory',",
    `  listen: ['/ip4/${addresses[0]}/tcp/4001'],`,
    `  plugins: [identify(), noise(), yamux(), tcp(), natProbeServer({ addresses: ${JSON.stringify(addresses)}, udpPorts: ${JSON.stringify(PORTS)} })],`,
    '})',
    '',
  ].join('\n')
}

/** A probe server on a one-IP host, with a partner server that answers "from the other IP" for it. */
function partnerConfig(address: string, partner: string): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
    "import { natProbeServer } from 'meshkit-nat-probe/index.js'",
    'export default defineConfig({',
    "  datastore: 'memory',",
    `  listen: ['/ip4/${address}/tcp/4001'],`,
    `  plugins: [identify(), noise(), yamux(), tcp(), natProbeServer({ addresses: ['${address}'], partners: ['/ip4/${partner}/tcp/4001'] })],`,
    '})',
    '',
  ].join('\n')
}

function clientConfig(server: string): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
    "import { natClassifier } from 'meshkit-nat-probe/index.js'",
    'export default defineConfig({',
    "  datastore: 'memory',",
    "  listen: ['/ip4/0.0.0.0/tcp/0'],",
    `  plugins: [identify(), noise(), yamux(), tcp(), natClassifier({ servers: ['${server}'], auto: false })],`,
    '})',
    '',
  ].join('\n')
}

/**
 * A long-running node that re-checks fast: the probe server by peer address (so that its identify reports
 * this node's observed address), the lab's "internet" ranges public in its address scope.
 */
function watchConfig(server: string): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
    "import { natClassifier } from 'meshkit-nat-probe/index.js'",
    'export default defineConfig({',
    "  datastore: 'memory',",
    "  logLevel: 'warn',",
    "  listen: ['/ip4/0.0.0.0/tcp/0'],",
    "  network: { publicCidrs: ['198.51.100.0/24', '203.0.113.0/24'] },",
    `  plugins: [identify(), noise(), yamux(), tcp(), natClassifier({ servers: ['${server}'], minRecheckInterval: '1s' })],`,
    '})',
    '',
  ].join('\n')
}

/** What the raw evidence shows, in the terms of probes.ts' EXPECTED. */
function shape(e: ProtocolEvidence, host: LabHost) {
  const mapped = e.mappings.map((m) => m.mapped)
  const distinct = new Set(mapped)
  const localPort = e.local?.split(':')[1]
  const mapping =
    mapped.includes(undefined) || mapped.length < 3
      ? 'incomplete'
      : distinct.size > 1
        ? 'per-destination'
        : [...distinct][0] === `${host.ip}:${localPort}`
          ? 'local'
          : 'endpoint-independent'
  return { mapping, otherPort: e.filtering.otherPort?.in, otherIp: e.filtering.otherIp?.in }
}

describe('NAT lab: NAT type classification (nat-probe)', function () {
  this.timeout(90_000)

  let lab: Lab | undefined
  let project: ConfigProject | undefined
  let serverAddress: string
  /** The main probe server's libp2p address (its node runs identify). */
  let serverPeerAddress: string
  let a: LabHost
  let b: LabHost
  /** Partner server A, starting while the first tests run. */
  let partnerA: Promise<{ proc: NetnsProcess; peerId: string }> | undefined

  /** Starts a probe server node (`mesh start --json --config <name>.config.ts`) until its `started` line. */
  async function startServer(host: LabHost, name: string) {
    const proc = lab!.spawn(
      host,
      process.execPath,
      [
        CLI_MAIN,
        'start',
        '--json',
        '--config',
        project!.path(`${name}.config.ts`),
        '--data-dir',
        project!.path(`data/${name}`),
      ],
      { cwd: project!.dir, env: labEnv() },
    )
    // plugins start before the node reports `started`: the probe is up once that line is out
    const started = await proc.waitUntil(() => jsonLines(proc).find((e) => e.event === 'started'), {
      timeoutMs: 30_000,
      what: `probe server ${name} started`,
    })
    return { proc, peerId: started.peerId as string }
  }
  const hosts = new Map<NatBehaviour, LabHost>()
  const table: string[] = []

  before(async function () {
    const why = await labUnavailableReason()
    if (why) {
      console.log(`      skipped: ${why}`)
      this.skip()
    }
    const t0 = Date.now()
    project = await configProject({ 'raw-probe.mjs': RAW_PROBE, 'nat-client.mjs': NAT_CLIENT })
    await mkdir(project.path('node_modules'), { recursive: true })
    await symlink(
      join(REPO_ROOT, 'dist', 'plugins', 'nat-probe'),
      project.path('node_modules/meshkit-nat-probe'),
      'dir',
    )
    lab = await createLab()
    const serverHost = await lab.addPublicHost({ addresses: 2 })
    serverAddress = `${serverHost.addresses[0]}:${PORTS[0]}`
    for (const b of NAT_BEHAVIOURS) hosts.set(b, (await lab.addNatSite(b)).host)
    // two one-IP public hosts for the partner servers A and B
    a = await lab.addPublicHost()
    b = await lab.addPublicHost()
    await writeFile(project.path('server.config.ts'), serverConfig(serverHost.addresses))
    await writeFile(project.path('client.config.ts'), clientConfig(serverAddress))
    await writeFile(project.path('a.config.ts'), partnerConfig(a.ip, b.ip))
    await writeFile(project.path('b.config.ts'), partnerConfig(b.ip, a.ip))
    // the main probe server and partner B together, then A (which learns B's endpoints as it starts)
    const [main] = await Promise.all([startServer(serverHost, 'server'), startServer(b, 'b')])
    serverPeerAddress = `/ip4/${serverHost.addresses[0]}/tcp/4001/p2p/${main.peerId}`
    partnerA = startServer(a, 'a')
    partnerA.catch(() => {})
    console.log(
      `      lab of ${lab.namespaces.length} namespaces and the probe server node up in ${Date.now() - t0} ms`,
    )
  })

  after(async () => {
    if (table.length > 0) console.log(table.map((l) => `      ${l}`).join('\n'))
    const namespaces = lab?.namespaces ?? []
    await lab?.destroy()
    await project?.cleanup()
    if (lab) expect((await listNetns()).filter((ns) => namespaces.includes(ns))).to.deep.equal([])
  })

  /** Runs a script in `host`'s namespace until it prints a line with `event` (bounded); that line. */
  async function runScript(host: LabHost, args: string[], event: string, timeoutMs: number) {
    const proc = lab!.spawn(host, process.execPath, args, { cwd: project!.dir, env: labEnv() })
    try {
      const line = await proc.waitUntil(
        () => jsonLines(proc).find((e) => e.event === event || e.event === 'error'),
        { timeoutMs, what: `${event} from ${host.name}` },
      )
      if (line.event === 'error') throw new Error(`${host.name}: ${line.message}\n${proc.describe()}`)
      return line
    } finally {
      await proc.kill('SIGKILL')
    }
  }

  it('raw probe (no libp2p): TCP behaves as UDP behind every router (the lab cone rules cover TCP)', async () => {
    const results = await pool(NAT_BEHAVIOURS, 5, async (b) => {
      const host = hosts.get(b)!
      const r = await runScript(host, [project!.path('raw-probe.mjs'), serverAddress, host.ip], 'raw', 25_000)
      return { b, host, udp: r.udp as ProtocolEvidence, tcp: r.tcp as ProtocolEvidence }
    })
    for (const { b, host, udp, tcp } of results) {
      const [u, t] = [shape(udp, host), shape(tcp, host)]
      table.push(`raw ${b.padEnd(21)} udp ${JSON.stringify(u)}  tcp ${JSON.stringify(t)}`)
      const want = {
        mapping: EXPECTED[b].mapping,
        otherPort: EXPECTED[b].otherPort,
        otherIp: EXPECTED[b].otherIp,
      }
      expect(u, `${b} udp: ${JSON.stringify(udp)}`).to.deep.equal(want)
      expect(t, `${b} tcp: ${JSON.stringify(tcp)}`).to.deep.equal(want)
    }
  })

  it('mesh nat (natClassifier in a node) classifies every behaviour right, for UDP and TCP', async () => {
    const results = await pool(NAT_BEHAVIOURS, 3, async (b) => {
      const host = hosts.get(b)!
      const t0 = Date.now()
      const line = await runScript(
        host,
        [project!.path('nat-client.mjs'), project!.path('client.config.ts'), project!.path(`data/${b}`)],
        'nat',
        45_000,
      )
      return { b, report: line as unknown as NatReport, wallMs: Date.now() - t0 }
    })
    table.push(
      'behaviour             | UDP verdict (confidence, ms)          | TCP verdict (confidence, ms)          | run',
    )
    for (const { b, report, wallMs } of results) {
      const cell = (v: NatReport['udp']) => `${v?.type} (${v?.confidence}, ${v?.ms} ms)`.padEnd(37)
      table.push(`${b.padEnd(21)} | ${cell(report.udp)} | ${cell(report.tcp)} | ${wallMs} ms`)
    }
    for (const { b, report } of results) {
      expect(report.udp?.type, `${b} udp: ${JSON.stringify(report.udp)}`).to.equal(VERDICT[b])
      expect(report.tcp?.type, `${b} tcp: ${JSON.stringify(report.tcp)}`).to.equal(VERDICT[b])
      expect(report.udp!.confidence).to.be.within(0.9, 1)
      expect(report.tcp!.confidence).to.be.within(0.9, 1)
    }
  })

  describe('two one-IP probe servers, partners of each other', () => {
    before(async () => {
      const t0 = Date.now()
      const { proc } = await partnerA!
      const partners = await proc.waitUntil(
        () => jsonLines(proc).find((e) => e.event === 'nat-probe:partners'),
        {
          timeoutMs: 15_000,
          what: "A learning its partner's endpoints",
        },
      )
      expect(partners.udp).to.have.members([`${b.ip}:3478`, `${b.ip}:3479`])
      console.log(`      partner probe servers up (waited ${Date.now() - t0} ms more)`)
    })

    it('raw probe against A: every behaviour right for UDP and TCP (other IP = the partner)', async () => {
      const results = await pool(NAT_BEHAVIOURS, 5, async (behaviour) => {
        const host = hosts.get(behaviour)!
        const r = await runScript(
          host,
          [project!.path('raw-probe.mjs'), `${a.ip}:3478`, host.ip],
          'raw',
          25_000,
        )
        return { behaviour, udp: r.udp as ProtocolEvidence, tcp: r.tcp as ProtocolEvidence }
      })
      for (const { behaviour, udp, tcp } of results) {
        const [u, t] = [judge(udp), judge(tcp)]
        table.push(
          `partners ${behaviour.padEnd(21)} udp ${u.type} (${u.confidence})  tcp ${t.type} (${t.confidence})`,
        )
        expect(u.type, `${behaviour} udp: ${JSON.stringify(udp)}`).to.equal(VERDICT[behaviour])
        expect(t.type, `${behaviour} tcp: ${JSON.stringify(tcp)}`).to.equal(VERDICT[behaviour])
        expect(new Set(udp.mappings.map((m) => m.server.split(':')[0]))).to.have.keys(a.ip, b.ip)
        if (udp.filtering.otherIp?.in) expect(udp.filtering.otherIp.from).to.equal(`${b.ip}:3478`)
      }
    })

    it("mesh nat with A's peer address (endpoints over /mesh/nat-probe/1.0.0)", async () => {
      const { peerId: peerA } = await partnerA!
      await writeFile(
        project!.path('client-peer.config.ts'),
        clientConfig(`/ip4/${a.ip}/tcp/4001/p2p/${peerA}`),
      )
      const host = hosts.get('restricted-cone')!
      const line = await runScript(
        host,
        [project!.path('nat-client.mjs'), project!.path('client-peer.config.ts'), project!.path('data/peer')],
        'nat',
        45_000,
      )
      const report = line as unknown as NatReport
      table.push(
        `partners, mesh nat via peer address (restricted-cone): udp ${report.udp?.type}, tcp ${report.tcp?.type}`,
      )
      expect(report.udp?.type, JSON.stringify(report.udp)).to.equal('restricted-cone')
      expect(report.tcp?.type, JSON.stringify(report.tcp)).to.equal('restricted-cone')
    })
  })

  it('a running node re-classifies when its router changes behaviour, then when its WAN address changes', async () => {
    const site = await lab!.addNatSite('port-restricted-cone')
    const host = site.host
    await writeFile(project!.path('watch.config.ts'), watchConfig(serverPeerAddress))
    const proc = lab!.spawn(
      host,
      process.execPath,
      [
        CLI_MAIN,
        'start',
        '--json',
        '--config',
        project!.path('watch.config.ts'),
        '--data-dir',
        project!.path('data/watch'),
      ],
      { cwd: project!.dir, env: labEnv() },
    )
    type Line = Record<string, unknown> & { time: number; report?: NatReport }
    const lines = () => jsonLines(proc) as Line[]
    const next = (what: string, timeoutMs: number, match: (l: Line) => boolean) =>
      proc.waitUntil(() => lines().find(match), { timeoutMs, what })
    const identifyOf = (r?: NatReport) => r?.udp?.corroboration?.find((c) => c.source === 'identify')
    const mappedIps = (r?: NatReport) => [
      ...new Set(r?.udp?.evidence.mappings.flatMap((m) => (m.mapped ? [m.mapped.split(':')[0]] : [])) ?? []),
    ]
    try {
      const first = await next('the start classification', 40_000, (l) => l.event === 'nat:classified')
      const wan0 = site.router!.wanIp
      expect(first.udp, JSON.stringify(first.report?.udp)).to.equal('port-restricted-cone')
      expect(first.tcp, JSON.stringify(first.report?.tcp)).to.equal('port-restricted-cone')
      expect(mappedIps(first.report)).to.deep.equal([wan0])
      // identify: the probe server's node saw the router's WAN address (public in the node's scope)
      const observedFirst = await next(
        'identify corroborating the start verdict',
        10_000,
        (l) =>
          (l.event === 'nat:classified' || l.event === 'nat:evidence') &&
          identifyOf(l.report)?.result === 'corroborates',
      )
      expect(identifyOf(observedFirst.report)?.detail).to.contain(wan0)

      // 1. the router turns symmetric
      const t1 = Date.now()
      await lab!.setBehaviour(site, 'symmetric')
      const changed = await next(
        'nat:changed to symmetric',
        30_000,
        (l) => l.event === 'nat:changed' && l.time > t1,
      )
      const ms1 = changed.time - t1
      expect(changed.udp).to.deep.equal({ from: 'port-restricted-cone', to: 'symmetric' })
      expect(changed.tcp).to.deep.equal({ from: 'port-restricted-cone', to: 'symmetric' })
      expect((changed.reasons as string[]).join(' ')).to.match(/UDP mapping check: .*different/)

      // 2. the router gets a new WAN address (same behaviour): re-classified with the new mapped IP
      const t2 = Date.now()
      const wan1 = await lab!.setWanAddress(site)
      const again = await next(
        'a classification with the new WAN address',
        30_000,
        (l) => l.event === 'nat:classified' && l.time > t2 && mappedIps(l.report).includes(wan1),
      )
      const ms2 = again.time - t2
      expect(again.udp).to.equal('symmetric')
      expect(again.tcp).to.equal('symmetric')
      expect(mappedIps(again.report)).to.deep.equal([wan1])
      expect(lines().filter((l) => l.event === 'nat:changed' && l.time > t2)).to.deep.equal([])
      // identify catches up once the probe server's node has seen the new address
      const observedAgain = await next(
        'identify corroborating with the new WAN address',
        20_000,
        (l) =>
          (l.event === 'nat:classified' || l.event === 'nat:evidence') &&
          l.time > t2 &&
          identifyOf(l.report)?.result === 'corroborates' &&
          identifyOf(l.report)!.detail.includes(wan1),
      )
      const ms3 = observedAgain.time - t2

      // 3. a new interface address (the node listens on 0.0.0.0: its own addresses change too)
      const t3 = Date.now()
      const extra = host.ip.replace(/\.\d+$/, '.99')
      await lab!.exec(host, IP, ['addr', 'add', `${extra}/24`, 'dev', 'eth0'])
      const onInterface = await next(
        'a re-check for the new interface address',
        20_000,
        (l) =>
          l.event === 'nat:classified' &&
          l.time > t3 &&
          /network interfaces changed|self:peer:update/.test((l.reasons as string[]).join(' ')),
      )
      const ms4 = onInterface.time - t3
      expect(onInterface.udp).to.equal('symmetric')
      // rate limited: never two classifications within minRecheckInterval (1 s)
      const times = lines()
        .filter((l) => l.event === 'nat:classified')
        .map((l) => l.time)
      for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).to.be.at.least(950)
      for (const l of lines().filter((x) => x.event === 'nat:classified'))
        table.push(
          `  classified +${l.time - first.time} ms: ${l.udp}/${l.tcp} (${l.trigger}: ${(l.reasons as string[]).join('; ')})`,
        )
      table.push(
        `re-classification: behaviour change -> nat:changed in ${ms1} ms; WAN ${wan0} -> ${wan1}: re-classified in ${ms2} ms, identify corroborating in ${ms3} ms; new interface address: re-classified in ${ms4} ms (${(onInterface.reasons as string[]).join('; ')}); ${times.length} classifications in all`,
      )
      // bounds: watch 1 s + coalescing + one classification (~3-4 s for these behaviours)
      expect(ms1).to.be.below(10_000)
      expect(ms2).to.be.below(15_000)
    } catch (err) {
      throw new Error(`${err}\n${proc.describe()}`)
    } finally {
      await proc.kill('SIGTERM')
    }
  })

  it('says unknown when only one server address can be reached', async () => {
    // the server's second IP is unreachable from this host: a route to it into nowhere
    const host = hosts.get('full-cone')!
    const other = serverAddress.replace(/\.10:/, '.11:').split(':')[0]
    await lab!.exec(host, IP, ['route', 'add', 'blackhole', `${other}/32`])
    try {
      const r = await runScript(host, [project!.path('raw-probe.mjs'), serverAddress, host.ip], 'raw', 25_000)
      const [u, t] = [judge(r.udp as ProtocolEvidence), judge(r.tcp as ProtocolEvidence)]
      table.push(`one server IP reachable (full-cone host): udp ${u.type} (${u.reason}); tcp ${t.type}`)
      expect(u.type).to.equal('unknown')
      expect(t.type).to.equal('unknown')
      expect(u.confidence).to.equal(0)
    } finally {
      await lab!.exec(host, IP, ['route', 'del', 'blackhole', `${other}/32`])
    }
  })
})
