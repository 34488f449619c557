/**
 * The NAT probe on loopback (127.0.0.1 and 127.0.0.2 as the server's two IPs): wire validation, rate limits,
 * no amplification, the verdict logic on synthetic evidence, and both plugins in a real node (a host
 * with no NAT is `public` for UDP and TCP). The real NAT behaviours are in test/natlab/nat-classification.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { symlink, unlink } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  type ConfigEnv,
  isMeshError,
  type MeshError,
  type MeshEvent,
  MeshKernel,
  type MeshPlugin,
  resolveConfig,
} from 'meshkit'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import { gatherTcp, gatherUdp } from '../plugins/nat-probe/client.js'
import {
  judge,
  NAT_PROBE_PROTOCOL,
  type NatClassificationApi,
  type NatProbeServerApi,
  natClassifier,
  natProbeServer,
  ProbeServer,
  type ProtocolEvidence,
  parseMessage,
  RateLimiter,
} from '../plugins/nat-probe/index.js'
import { ask } from '../plugins/nat-probe/protocol.js'
import { natCommand } from '../src/cli/nat-command.js'
import { configProject, REPO_ROOT } from './fixtures/configs/project.js'
import { tempDir, waitFor } from './helpers.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }

/**
 * Two ports for a test server: random below the ephemeral range (32768+, where the kernel picks the ports
 * of outgoing sockets), so parallel runs and other tests rarely collide.
 */
const ports = (): [number, number] => {
  const p = 20_000 + Math.floor(Math.random() * 12_000)
  return [p, p + 1]
}

function bind(): Promise<Socket> {
  return new Promise((resolve) => {
    const s = createSocket('udp4')
    s.bind(0, '127.0.0.1', () => resolve(s))
  })
}

/** Sends `payload` to `port` and collects what comes back within `ms`. */
async function exchange(port: number, payloads: Buffer[], ms = 300): Promise<Buffer[]> {
  const s = await bind()
  const got: Buffer[] = []
  s.on('message', (b) => got.push(b))
  for (const p of payloads) s.send(p, port, '127.0.0.1')
  await new Promise((r) => setTimeout(r, ms))
  s.close()
  return got
}

const evidence = (over: Partial<ProtocolEvidence>): ProtocolEvidence => ({
  protocol: 'udp',
  local: '0.0.0.0:40000',
  hostAddresses: ['127.0.0.1', '198.18.1.10'],
  mappings: [],
  filtering: {},
  notes: [],
  ...over,
})
const obs = (server: string, mapped?: string) => ({
  server,
  source: 'probe' as const,
  mapped,
  sent: 1,
  answered: mapped ? 1 : 0,
})
const filt = (ok: boolean, inside: boolean) => ({
  server: '198.51.100.10:3478',
  mapped: ok ? '203.0.113.10:40000' : undefined,
  in: inside,
  attempts: 8,
})
const threeSame = (m: string) => [
  obs('198.51.100.10:3478', m),
  obs('198.51.100.10:3479', m),
  obs('198.51.100.11:3478', m),
]

describe('nat-probe', function () {
  this.timeout(30_000)

  describe('wire', () => {
    it('accepts well-formed messages only', () => {
      expect(parseMessage('{"v":1,"t":"probe","id":"a1"}')).to.deep.include({ t: 'probe', id: 'a1' })
      expect(parseMessage('{"v":1,"t":"probe","id":"a1","via":"other-ip"}')).to.not.equal(undefined)
      for (const bad of [
        'not json',
        '{"v":2,"t":"probe","id":"a"}',
        '{"v":1,"t":"probe","id":"a b"}',
        '{"v":1,"t":"probe","id":"a","via":"somewhere"}',
        '{"v":1,"t":"callback","id":"a"}',
        '{"v":1,"t":"seen","id":"a","seen":"1.2.3.4:99999","from":"1.2.3.4:1"}',
        `{"v":1,"t":"probe","id":"a","pad":"${'x'.repeat(600)}"}`,
      ])
        expect(parseMessage(bad), bad).to.equal(undefined)
    })

    it('rate-limits per key and in total, and forgets idle keys', () => {
      const r = new RateLimiter({ burst: 3, perSecond: 1 }, { burst: 5, perSecond: 1 })
      const t = Date.now()
      expect([1, 2, 3, 4].map(() => r.allow('a', t))).to.deep.equal([true, true, true, false])
      expect([1, 2, 3].map(() => r.allow('b', t))).to.deep.equal([true, true, false], 'global bucket: 5')
      expect(r.allow('a', t + 1000)).to.equal(true)
      r.sweep(t + 60_000)
      expect(r.size).to.equal(0)
    })
  })

  describe('judge (verdict from evidence)', () => {
    it('tells the five types apart with full evidence', () => {
      const m = '203.0.113.10:40000'
      const cone = (p: boolean, i: boolean) =>
        judge(
          evidence({
            mappings: threeSame(m),
            filtering: { otherPort: filt(true, p), otherIp: filt(true, i) },
          }),
        )
      expect(cone(true, true).type).to.equal('full-cone')
      expect(cone(true, false).type).to.equal('restricted-cone')
      expect(cone(false, false).type).to.equal('port-restricted-cone')
      const pub = judge(
        evidence({
          local: '0.0.0.0:40000',
          hostAddresses: ['198.51.100.20'],
          mappings: threeSame('198.51.100.20:40000'),
          filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
        }),
      )
      expect(pub.type).to.equal('public')
      const sym = judge(
        evidence({
          mappings: [
            obs('198.51.100.10:3478', '203.0.113.10:1000'),
            obs('198.51.100.10:3479', '203.0.113.10:2000'),
            obs('198.51.100.11:3478', '203.0.113.10:3000'),
          ],
        }),
      )
      expect(sym.type).to.equal('symmetric')
      for (const v of [cone(true, true), cone(true, false), cone(false, false), pub, sym])
        expect(v.confidence).to.be.within(0.9, 1)
    })

    it('says unknown, with confidence 0, when the evidence is insufficient or inconsistent', () => {
      const m = '203.0.113.10:40000'
      const cases: ProtocolEvidence[] = [
        evidence({ mappings: [obs('198.51.100.10:3478')] }),
        evidence({ mappings: [obs('198.51.100.10:3478', m)], filtering: { otherIp: filt(true, true) } }),
        // two ports of one IP: address-dependent mapping is not excluded
        evidence({
          mappings: [obs('198.51.100.10:3478', m), obs('198.51.100.10:3479', m)],
          filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
        }),
        // the control probe of the filtering test was not answered
        evidence({
          mappings: threeSame(m),
          filtering: { otherPort: filt(true, false), otherIp: filt(false, false) },
        }),
        // other IP in but other port out: no NAT type does that
        evidence({
          mappings: threeSame(m),
          filtering: { otherPort: filt(true, false), otherIp: filt(true, true) },
        }),
        // other IP out, other-port test missing
        evidence({ mappings: threeSame(m), filtering: { otherIp: filt(true, false) } }),
      ]
      for (const e of cases) {
        const v = judge(e)
        expect(v.type, JSON.stringify(e)).to.equal('unknown')
        expect(v.confidence).to.equal(0)
      }
    })
  })

  describe('probe server on loopback', () => {
    let server: ProbeServer | undefined
    let udpPorts: [number, number]
    before(async () => {
      // a few tries: another process may hold a random port
      for (let attempt = 0; !server; attempt++) {
        udpPorts = ports()
        server = await ProbeServer.start({
          addresses: ['127.0.0.1', '127.0.0.2'],
          udpPorts,
          tcpPorts: udpPorts,
          udpRate: { burst: 20, perSecond: 5 },
        }).catch((err) => {
          if (attempt >= 4) throw err
          return undefined
        })
      }
    })
    after(() => server?.close())

    it('answers with the mapped address, from the other port or IP on request', async () => {
      const s = await bind()
      const local = `127.0.0.1:${s.address().port}`
      const got: Array<{ from: string; seen: string }> = []
      s.on('message', (b, r) => {
        const m = parseMessage(b)
        if (m?.t === 'seen') got.push({ from: `${r.address}:${r.port}`, seen: m.seen })
      })
      const pad = 'x'.repeat(300)
      for (const via of [undefined, 'other-port', 'other-ip', 'other-both'])
        s.send(JSON.stringify({ v: 1, t: 'probe', id: `x${via ?? ''}`, via, pad }), udpPorts[0], '127.0.0.1')
      await new Promise((r) => setTimeout(r, 300))
      s.close()
      expect(got.map((g) => g.from).sort()).to.deep.equal(
        [
          `127.0.0.1:${udpPorts[0]}`,
          `127.0.0.1:${udpPorts[1]}`,
          `127.0.0.2:${udpPorts[0]}`,
          `127.0.0.2:${udpPorts[1]}`,
        ].sort(),
      )
      for (const g of got) expect(g.seen).to.equal(local)
    })

    it('never sends more bytes than it received, one datagram per request, and drops floods', async () => {
      // big enough for the mapped address but not the endpoint lists: answered without them
      const medium = Buffer.from(JSON.stringify({ v: 1, t: 'probe', id: 'm', pad: 'x'.repeat(100) }))
      const [reply] = await exchange(udpPorts[0], [medium])
      expect(reply.length).to.be.at.most(medium.length)
      expect(parseMessage(reply)).to.deep.include({ t: 'seen', id: 'm' }).and.not.have.property('udp')
      // a reply that cannot fit in the request is not sent at all
      const tiny = Buffer.from('{"v":1,"t":"probe","id":"s1"}')
      expect(await exchange(udpPorts[0], [tiny])).to.deep.equal([])
      const flood = Array.from({ length: 100 }, (_, i) =>
        Buffer.from(JSON.stringify({ v: 1, t: 'probe', id: `f${i}`, pad: 'x'.repeat(300) })),
      )
      const answers = await exchange(udpPorts[1], flood)
      expect(answers.length).to.be.at.most(22).and.at.least(1)
      expect(server!.stats.udpDropped).to.be.greaterThan(70)
    })

    it('classifies loopback (no NAT) as public for UDP and TCP', async () => {
      const opts = {
        servers: [`127.0.0.1:${udpPorts[0]}`],
        stun: [],
        localAddress: '127.0.0.1',
        timeoutMs: 800,
        retransmitMs: 100,
      }
      // a fresh limiter window: the flood test above used up this IP's UDP budget
      await new Promise((r) => setTimeout(r, 1500))
      const [u, t] = await Promise.all([gatherUdp(opts), gatherTcp(opts)])
      const [ju, jt] = [judge(u), judge(t)]
      expect(ju.type, JSON.stringify({ ju, u })).to.equal('public')
      expect(jt.type, JSON.stringify({ jt, t })).to.equal('public')
      expect(u.mappings.filter((m) => m.mapped)).to.have.length(4)
      expect(t.filtering.otherIp?.from?.startsWith('127.0.0.2:')).to.equal(true)
    })
  })

  describe('STUN as an extra source', () => {
    it('adds the mapping a STUN server saw (same local port as the probes)', async () => {
      const stun = createRequire(import.meta.url)('stun') as {
        createServer(o: { type: 'udp4' }): {
          on(e: string, f: (req: unknown, rinfo: RemoteInfo) => void): void
          send(m: unknown, port: number, ip: string): void
          listen(port: number, ip: string, cb: () => void): void
          close(): void
        }
        createMessage(type: number, transactionId?: Buffer): { addXorAddress(ip: string, port: number): void }
        constants: Record<string, number | string>
      }
      const server = stun.createServer({ type: 'udp4' })
      // a real STUN server echoes the request's transaction id (the package's example does not)
      server.on(String(stun.constants.STUN_EVENT_BINDING_REQUEST), (req, rinfo) => {
        const res = stun.createMessage(
          Number(stun.constants.STUN_BINDING_RESPONSE),
          (req as { transactionId: Buffer }).transactionId,
        )
        res.addXorAddress(rinfo.address, rinfo.port)
        server.send(res, rinfo.port, rinfo.address)
      })
      const stunPort = ports()[0]
      await new Promise<void>((r) => server.listen(stunPort, '127.0.0.3', r))
      try {
        const e = await gatherUdp({
          servers: ['127.0.0.1:9'],
          stun: [`127.0.0.3:${stunPort}`],
          localAddress: '127.0.0.1',
          timeoutMs: 600,
          retransmitMs: 100,
        })
        const s = e.mappings.find((m) => m.source === 'stun')
        expect(s, JSON.stringify(e)).to.deep.include({ server: `127.0.0.3:${stunPort}`, mapped: e.local })
        // no probe server answered: never a verdict from STUN alone plus nothing
        expect(judge(e).type).to.equal('unknown')
      } finally {
        server.close()
      }
    })
  })

  describe('plugins in a node', () => {
    it('serves, classifies on demand and emits nat:classified', async () => {
      const { dir, cleanup } = await tempDir()
      const kernel = new MeshKernel({ env })
      const events: MeshEvent[] = []
      kernel.events.on('nat:classified', (e) => events.push(e))
      const p = ports()
      try {
        const config = resolveConfig(
          {
            dataDir: dir,
            datastore: 'memory',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            logLevel: 'silent',
            plugins: [
              identify(),
              noise(),
              yamux(),
              tcp(),
              natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
              natClassifier({
                servers: [`/ip4/127.0.0.1/udp/${p[0]}`],
                localAddress: '127.0.0.1',
                auto: false,
              }),
            ],
          },
          { env, registry: builtinPlugins },
        )
        const node = await kernel.start(config)
        const api = node.api<NatClassificationApi>('nat-classification')
        expect(api.report()).to.equal(undefined)
        const report = await api.classify()
        expect(report.udp?.type).to.equal('public')
        expect(report.tcp?.type).to.equal('public')
        expect(api.report()).to.equal(report)
        expect(events).to.have.length(1)
        expect(events[0]).to.deep.include({ udp: 'public', tcp: 'public', trigger: 'demand' })
        // concurrent calls share one run
        const [r1, r2] = await Promise.all([api.classify(), api.classify()])
        expect(r1).to.equal(r2)
        expect(events).to.have.length(2)
      } finally {
        await kernel.close()
        await cleanup()
      }
    })

    it('gets probe endpoints over /mesh/nat-probe/1.0.0 and uses a partner for "other IP"', async () => {
      const { dir, cleanup } = await tempDir()
      const kernels: MeshKernel[] = []
      const start = async (name: string, listen: string, plugins: MeshPlugin[]) => {
        const kernel = new MeshKernel({ env })
        kernels.push(kernel)
        const config = resolveConfig(
          {
            dataDir: `${dir}/${name}`,
            datastore: 'memory',
            listen: [listen],
            logLevel: 'silent',
            plugins: [identify(), noise(), yamux(), tcp(), ...plugins],
          },
          { env, registry: builtinPlugins },
        )
        return { kernel, node: await kernel.start(config) }
      }
      try {
        // two single-IP probe servers, partners of each other (B accepts A by IP, A names B by peer address)
        const [pa, pb] = [ports(), ports()]
        const b = await start('b', '/ip4/127.0.0.2/tcp/0', [
          natProbeServer({ udpPorts: pb, addresses: ['127.0.0.2'], partners: ['/ip4/127.0.0.1/tcp/1'] }),
        ])
        const bAddr = b.node.libp2p.getMultiaddrs()[0].toString()
        const a = await start('a', '/ip4/127.0.0.1/tcp/0', [
          natProbeServer({ udpPorts: pa, addresses: ['127.0.0.1'], partners: [bAddr] }),
        ])
        const aAddr = a.node.libp2p.getMultiaddrs()[0].toString()
        await waitFor(() => a.node.api<NatProbeServerApi>('nat-probe-server').endpoints().udp.length === 4, {
          what: "A advertising B's endpoints",
        })
        const c = await start('c', '/ip4/127.0.0.1/tcp/0', [
          natClassifier({ servers: [aAddr], localAddress: '127.0.0.1', auto: false }),
        ])
        const report = await c.node.api<NatClassificationApi>('nat-classification').classify()
        const why = JSON.stringify(report)
        expect(report.udp?.type, why).to.equal('public')
        expect(report.tcp?.type, why).to.equal('public')
        // the other-IP answers came from the partner
        expect(report.udp?.evidence.filtering.otherIp?.from, why).to.equal(`127.0.0.2:${pb[0]}`)
        expect(report.tcp?.evidence.filtering.otherIp?.from?.startsWith('127.0.0.2:'), why).to.equal(true)
        expect(report.udp?.evidence.mappings.map((m) => m.server)).to.include(`127.0.0.2:${pb[0]}`)
        expect(a.node.api<NatProbeServerApi>('nat-probe-server').stats()?.relayed).to.equal(2)
        // a peer that is not a partner cannot make a server send anything anywhere
        const refused = await ask(
          c.node.libp2p,
          aAddr,
          NAT_PROBE_PROTOCOL,
          { v: 1, t: 'relay', proto: 'udp', to: '127.0.0.1:9', id: 'x' },
          3000,
        )
        expect(refused).to.deep.include({ ok: false, reason: 'not a partner' })
      } finally {
        for (const k of kernels.reverse()) await k.close()
        await cleanup()
      }
    })

    it('mesh nat: prints the verdict and evidence (human and JSON); exit 2 without a classifier', async () => {
      const project = await configProject()
      await symlink(
        join(REPO_ROOT, 'dist', 'plugins', 'nat-probe'),
        project.path('node_modules/meshkit-nat-probe'),
        'dir',
      )
      const p = ports()
      const config = (withClassifier: boolean) =>
        [
          "import { defineConfig } from 'meshkit'",
          "import { identify, noise, tcp, yamux } from 'meshkit/plugins'",
          "import { natClassifier, natProbeServer } from 'meshkit-nat-probe/index.js'",
          'export default defineConfig({',
          "  datastore: 'memory', logLevel: 'silent', listen: ['/ip4/127.0.0.1/tcp/0'],",
          `  plugins: [identify(), noise(), yamux(), tcp(), natProbeServer({ udpPorts: [${p}], addresses: ['127.0.0.1', '127.0.0.2'] })${
            withClassifier
              ? `, natClassifier({ servers: ['127.0.0.1:${p[0]}'], localAddress: '127.0.0.1' })`
              : ''
          }],`,
          '})',
          '',
        ].join('\n')
      await project.write({ 'with.config.ts': config(true), 'without.config.ts': config(false) })
      try {
        const out: string[] = []
        const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t) }
        const base = { cwd: project.dir, dataDir: project.path('data'), logLevel: 'silent' as const }
        await natCommand({ ...base, config: 'with.config.ts' }, io)
        const text = out.join('')
        expect(text).to.match(/^UDP: public \(confidence 0\.\d\d, \d+ ms\)$/m)
        expect(text).to.match(/^TCP: public /m)
        expect(text).to.contain("server's other IP: got in (from 127.0.0.2:")
        out.length = 0
        await natCommand({ ...base, config: 'with.config.ts', json: true }, io)
        const json = JSON.parse(out.join(''))
        expect(json).to.deep.include({ event: 'nat' })
        expect(json.udp.type).to.equal('public')
        expect(json.tcp.evidence.mappings).to.have.length(4)
        const err = await natCommand({ ...base, config: 'without.config.ts' }, io).then(
          () => undefined,
          (e: unknown) => e,
        )
        expect(isMeshError(err) && err.userError && err.code, String(err)).to.equal(
          'MESH_ERR_INVALID_ARGUMENT',
        )
        expect((err as MeshError).describe()).to.contain('natClassifier(')
      } finally {
        await unlink(project.path('node_modules/meshkit-nat-probe')).catch(() => {})
        await project.cleanup()
      }
    })

    it('classifies by itself at start (auto) and stops cleanly while classifying', async () => {
      const { dir, cleanup } = await tempDir()
      const kernel = new MeshKernel({ env })
      const events: MeshEvent[] = []
      kernel.events.on('nat:classified', (e) => events.push(e))
      const p = ports()
      try {
        const config = resolveConfig(
          {
            dataDir: dir,
            datastore: 'memory',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            logLevel: 'silent',
            plugins: [
              identify(),
              noise(),
              yamux(),
              tcp(),
              natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
              natClassifier({ servers: [`127.0.0.1:${p[0]}`], localAddress: '127.0.0.1' }),
            ],
          },
          { env, registry: builtinPlugins },
        )
        const node = await kernel.start(config)
        await waitFor(() => events.length === 1, { what: 'the start classification' })
        expect(events[0]).to.deep.include({ udp: 'public', tcp: 'public', trigger: 'start' })
        // stop in the middle of a classification: bounded, no event after stop
        void node
          .api<NatClassificationApi>('nat-classification')
          .classify()
          .catch(() => {})
        const t0 = Date.now()
        await kernel.close()
        expect(Date.now() - t0).to.be.below(5000)
        expect(events).to.have.length(1)
      } finally {
        await kernel.close()
        await cleanup()
      }
    })

    it('rejects bad options at config time', () => {
      expect(() =>
        resolveConfig(
          { plugins: [identify(), noise(), yamux(), tcp(), natClassifier({ servers: ['nowhere'] })] },
          { env, registry: builtinPlugins },
        ),
      ).to.throw(/servers/)
    })
  })
})
