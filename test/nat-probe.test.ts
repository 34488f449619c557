/**
 * The NAT probe on loopback (127.0.0.1 and 127.0.0.2 as the server's two IPs): wire validation, rate limits,
 * no amplification, the verdict logic on synthetic evidence, and both plugins in a real node (a host
 * with no NAT is `public` for UDP and TCP). The real NAT behaviours are in test/natlab/nat-classification.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { symlink, unlink } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { autoNATv2 } from '@libp2p/autonat-v2'
import { multiaddr } from '@multiformats/multiaddr'
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
import { createAddressScope, definePlugin } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import { activeDeadline, gatherTcp, gatherUdp, lackedAnswers } from '../plugins/nat-probe/client.js'
import {
  adjustConfidence,
  autonatCorroboration,
  autonatEvidence,
  identifyCorroboration,
  judge,
  NAT_PROBE_PROTOCOL,
  type NatClassificationApi,
  type NatProbeServerApi,
  type NatReport,
  natClassifier,
  natProbeServer,
  ObservedAddresses,
  ProbeServer,
  type ProtocolEvidence,
  parseMessage,
  RateLimiter,
} from '../plugins/nat-probe/index.js'
import { ask } from '../plugins/nat-probe/protocol.js'
import { keepKnown, verdictOf } from '../plugins/nat-probe/verdicts.js'
import { natCommand } from '../src/cli/nat-command.js'
import { configProject, REPO_ROOT } from './fixtures/configs/project.js'
import { tempDir, waitFor } from './helpers.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }

/** A classifier against a loopback probe server on `port`, with short waits. */
const loopbackClassifier = (port: number, more: Omit<Parameters<typeof natClassifier>[0], 'servers'> = {}) =>
  natClassifier({ servers: [`127.0.0.1:${port}`], localAddress: '127.0.0.1', timeout: '300ms', ...more })

/** A loopback node's config (TCP on 127.0.0.1, memory datastore) with these plugins after the basics. */
const loopbackConfig = (dataDir: string, ...plugins: MeshPlugin[]) =>
  resolveConfig(
    {
      dataDir,
      datastore: 'memory',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      logLevel: 'silent',
      network: { addressScope: 'all' },
      plugins: [identify(), noise(), yamux(), tcp(), ...plugins],
    },
    { env, registry: builtinPlugins },
  )

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

    it('says unknown, with confidence 0, when the evidence is insufficient or inconsistent; tells missing answers (worth another try) from inconclusive ones', () => {
      const m = '203.0.113.10:40000'
      // [evidence, whether answers are missing]
      const cases: Array<[ProtocolEvidence, boolean]> = [
        [evidence({ mappings: [] }), true],
        [evidence({ mappings: [obs('198.51.100.10:3478')] }), true],
        [
          evidence({ mappings: [obs('198.51.100.10:3478', m)], filtering: { otherIp: filt(true, true) } }),
          true,
        ],
        // one server endpoint of three never answered
        [
          evidence({
            mappings: [obs('198.51.100.10:3478', m), obs('198.51.100.10:3479', m), obs('198.51.100.11:3478')],
            filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
          }),
          true,
        ],
        // two ports of one IP, all answered: address-dependent mapping is not excluded
        [
          evidence({
            mappings: [obs('198.51.100.10:3478', m), obs('198.51.100.10:3479', m)],
            filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
          }),
          false,
        ],
        // the control probe of the filtering test was not answered
        [
          evidence({
            mappings: threeSame(m),
            filtering: { otherPort: filt(true, false), otherIp: filt(false, false) },
          }),
          true,
        ],
        // other IP in but other port out: no NAT type does that
        [
          evidence({
            mappings: threeSame(m),
            filtering: { otherPort: filt(true, false), otherIp: filt(true, true) },
          }),
          false,
        ],
        // other IP out, other-port test missing
        [evidence({ mappings: threeSame(m), filtering: { otherIp: filt(true, false) } }), true],
        // the server refused the callback (its rate limit): an answer; trying again at once would not help
        [
          evidence({
            mappings: threeSame(m),
            filtering: {
              otherPort: filt(true, true),
              otherIp: { ...filt(false, false), attempts: 0, error: 'rate', serverRefused: true },
            },
          }),
          false,
        ],
      ]
      for (const [e, gap] of cases) {
        const v = judge(e)
        expect(v.type, JSON.stringify(e)).to.equal('unknown')
        expect(v.confidence).to.equal(0)
        expect(lackedAnswers(e), JSON.stringify(e)).to.equal(gap)
      }
    })

    it('a re-check that reached no probe server keeps the known verdict, unless the network changed', () => {
      const known = verdictOf(
        evidence({
          mappings: threeSame('203.0.113.10:40000'),
          filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
        }),
        10,
      )
      expect(known.type).to.not.equal('unknown')
      const nothing = verdictOf(evidence({ mappings: [obs('198.51.100.10:3478')] }), 10)
      expect(nothing.type).to.equal('unknown')
      // the probe server died (its relay was killed): the node's addresses changed, the NAT did not
      const kept = keepKnown(known, nothing, ['self:peer:update (the node’s addresses changed)'])
      expect(kept?.type).to.equal(known.type)
      expect(kept?.confidence).to.equal(known.confidence)
      expect(kept?.reason).to.match(/kept: a re-check reached no probe server/)
      expect(keepKnown(kept, nothing, ['periodic'])?.reason, 'noted once').to.equal(kept?.reason)
      // the network itself changed: the old verdict may be stale
      for (const reason of [
        'network interfaces changed (eth1)',
        'identify: new external IP 198.51.100.9 (seen by x)',
        'UDP mapping check: none (last classification: a)',
      ])
        expect(keepKnown(known, nothing, [reason])?.type, reason).to.equal('unknown')
      // answers that came and say unknown are evidence; nothing known before: nothing to keep
      const inconclusive = verdictOf(
        evidence({ mappings: [obs('198.51.100.10:3478', '203.0.113.10:40000')] }),
        10,
      )
      expect(keepKnown(known, inconclusive, ['periodic'])?.type).to.equal('unknown')
      expect(keepKnown(undefined, nothing, ['periodic'])).to.equal(nothing)
    })
  })

  describe('waits that survive a stalled event loop (activeDeadline)', () => {
    const stall = (ms: number) => {
      const end = performance.now() + ms
      while (performance.now() < end) {
        // the machine is busy elsewhere: this process gets no CPU
      }
    }

    it('reads an answer that arrived during a stall before it expires', async () => {
      const rx = await bind()
      const tx = await bind()
      try {
        const order: string[] = []
        const done = new Promise<void>((resolve) => {
          rx.on('message', () => order.push('answer'))
          activeDeadline(200, () => {
            order.push('expired')
            resolve()
          })
        })
        const rxPort = rx.address().port
        await new Promise<void>((r) => tx.send('seen', rxPort, '127.0.0.1', () => r()))
        // the answer is in the socket's buffer; the process stalls past the wait (a plain timer would fire
        // before the poll phase reads it)
        stall(600)
        await done
        expect(order).to.deep.equal(['answer', 'expired'])
      } finally {
        rx.close()
        tx.close()
      }
    })

    it('counts a stall only in part: the wait goes on once the process runs again', async () => {
      let expiredAt = 0
      const t0 = performance.now()
      const done = new Promise<void>((resolve) =>
        activeDeadline(600, () => {
          expiredAt = performance.now()
          resolve()
        }),
      )
      await new Promise((r) => setTimeout(r, 20))
      stall(1000)
      const resumed = performance.now()
      await done
      // a stall counts at most 200 ms: about 400 ms of the wait were still to run after it
      expect(expiredAt - resumed).to.be.within(250, 2000)
      expect(expiredAt - t0).to.be.at.least(1250)
    })

    it('expires on time without stalls, and not at all once cancelled', async () => {
      const t0 = performance.now()
      await new Promise<void>((resolve) => activeDeadline(300, resolve))
      expect(performance.now() - t0).to.be.within(290, 1500)
      let fired = false
      const cancel = activeDeadline(100, () => {
        fired = true
      })
      cancel()
      await new Promise((r) => setTimeout(r, 300))
      expect(fired).to.equal(false)
    })
  })

  describe('other sources: identify observed addresses and AutoNAT v2', () => {
    const lab = createAddressScope(['198.51.100.0/24', '203.0.113.0/24'])
    const see = (
      o: ObservedAddresses,
      observer: string,
      from: string,
      observed: string,
      extra: { relayed?: boolean; direction?: 'inbound' | 'outbound' } = {},
    ) =>
      o.add({
        observer,
        observerAddr: multiaddr(from),
        observed: multiaddr(observed),
        direction: extra.direction ?? 'outbound',
        relayed: extra.relayed ?? false,
      })
    /** A verdict as judge() gives it for `e`. */
    const verdict = (e: ProtocolEvidence) => ({ ...judge(e), evidence: e })
    const publicEvidence = evidence({
      local: '198.18.1.10:40000',
      mappings: threeSame('198.18.1.10:40000'),
      filtering: { otherPort: filt(true, true), otherIp: filt(true, true) },
    })
    const natEvidence = evidence({
      mappings: threeSame('203.0.113.10:40000'),
      filtering: { otherPort: filt(true, false), otherIp: filt(true, false) },
    })

    it('counts an observation only from an observer outside the network, over a direct connection', () => {
      // libp2p counts the documentation ranges as private: without publicCidrs nothing is counted
      const plain = new ObservedAddresses(createAddressScope([]))
      const c0 = see(plain, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/203.0.113.10/tcp/40000')
      expect(c0.observation.counted).to.equal(false)
      expect(c0.observation.ignored).to.match(/private in the address scope/)
      expect(c0.newExternalIp).to.equal(false)

      const o = new ObservedAddresses(lab, 3)
      const c1 = see(o, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/203.0.113.10/tcp/40000')
      expect(c1.observation).to.deep.include({
        counted: true,
        ip: '203.0.113.10',
        port: 40000,
        transport: 'tcp',
        direction: 'outbound',
      })
      expect(c1.newExternalIp).to.equal(true)
      // the same IP from another observer is not new
      expect(
        see(o, 'B', '/ip4/198.51.100.11/udp/4001/quic-v1', '/ip4/203.0.113.10/udp/4001/quic-v1')
          .newExternalIp,
      ).to.equal(false)
      const relayed = see(
        o,
        'C',
        '/ip4/198.51.100.12/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit',
        '/ip4/203.0.113.99/tcp/1',
        { relayed: true },
      )
      expect(relayed.observation).to.deep.include({ counted: false, ignored: 'relayed connection' })
      expect(relayed.newExternalIp).to.equal(false)
      expect(o.externalIps()).to.deep.equal(['203.0.113.10'])
      // the latest per observer, at most `max` observers (the oldest dropped)
      see(o, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/203.0.113.20/tcp/40001')
      see(o, 'D', '/ip4/198.51.100.13/tcp/4001', '/ip4/203.0.113.20/tcp/40002')
      expect(o.list().map((x) => x.observer)).to.deep.equal(['C', 'A', 'D'])
      expect(o.externalIps()).to.deep.equal(['203.0.113.20'])
    })

    it('identify corroborates or contradicts the probe verdict, and says so when it has nothing', () => {
      const pub = verdict(publicEvidence)
      const nat = verdict(natEvidence)
      expect(pub.type).to.equal('public')
      expect(nat.type).to.equal('port-restricted-cone')
      const o = new ObservedAddresses(lab)
      expect(identifyCorroboration(pub, o.list(), publicEvidence.hostAddresses)).to.deep.include({
        source: 'identify',
        result: 'absent',
        detail: 'no peer has identified this node yet',
      })
      see(o, 'L', '/ip4/198.18.1.20/tcp/4001', '/ip4/198.18.1.10/tcp/4001')
      const onlyLan = identifyCorroboration(pub, o.list(), publicEvidence.hostAddresses)
      expect(onlyLan.result).to.equal('absent')
      expect(onlyLan.detail).to.match(/1 ignored: the observer is not outside this network/)

      const local = new ObservedAddresses(lab)
      see(local, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/198.18.1.10/tcp/40000')
      const yes = identifyCorroboration(pub, local.list(), publicEvidence.hostAddresses)
      expect(yes.result).to.equal('corroborates')
      expect(identifyCorroboration(nat, local.list(), natEvidence.hostAddresses).result).to.equal(
        'contradicts',
      )

      const behind = new ObservedAddresses(lab)
      see(behind, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/203.0.113.10/tcp/51234')
      expect(identifyCorroboration(pub, behind.list(), publicEvidence.hostAddresses)).to.deep.include({
        result: 'contradicts',
      })
      const natYes = identifyCorroboration(nat, behind.list(), natEvidence.hostAddresses)
      expect(natYes.result).to.equal('corroborates')
      expect(natYes.detail).to.contain('203.0.113.10')
      // an external IP that is neither ours nor the probe's mapped one
      const elsewhere = new ObservedAddresses(lab)
      see(elsewhere, 'A', '/ip4/198.51.100.10/tcp/4001', '/ip4/203.0.113.77/tcp/51234')
      expect(identifyCorroboration(nat, elsewhere.list(), natEvidence.hostAddresses).result).to.equal(
        'contradicts',
      )
      // no verdict to weigh: neutral, confidence stays 0
      const unknown = verdict(evidence({ mappings: [obs('198.51.100.10:3478')] }))
      const u = identifyCorroboration(unknown, behind.list(), natEvidence.hostAddresses)
      expect(u.result).to.equal('neutral')
      expect(u.detail).to.match(/behind a NAT/)
      expect(adjustConfidence(0, 'unknown', [u, yes])).to.equal(0)
      // each corroboration halves the doubt, each contradiction halves the confidence; at most 0.99
      expect(adjustConfidence(0.95, 'public', [yes])).to.equal(0.98)
      expect(adjustConfidence(0.95, 'public', [{ ...yes, result: 'contradicts' }])).to.equal(0.48)
      expect(adjustConfidence(0.99, 'public', [yes, yes])).to.equal(0.99)
      expect(adjustConfidence(0.95, 'public', [{ ...yes, result: 'absent' }])).to.equal(0.95)
    })

    it('AutoNAT v2: absent unless the node runs it and libp2p lists a confirmed public address', () => {
      const libp2pScope = createAddressScope([])
      const tcpAddr = multiaddr('/ip4/8.8.8.8/tcp/4001')
      const notRunning = autonatEvidence({
        protocols: ['/ipfs/id/1.0.0'],
        multiaddrs: [tcpAddr],
        announce: [],
        libp2pScope,
      })
      expect(notRunning).to.deep.include({
        running: false,
        absent: 'the node does not run @libp2p/autonat-v2',
      })
      const protocols = ['/libp2p/autonat/2/dial-back', '/libp2p/autonat/2/dial-request']
      const privateOnly = autonatEvidence({
        protocols,
        multiaddrs: [multiaddr('/ip4/198.51.100.10/tcp/4001')],
        announce: [],
        libp2pScope,
      })
      expect(privateOnly.running).to.equal(true)
      expect(privateOnly.absent).to.match(/only addresses libp2p counts as public/)
      const announced = autonatEvidence({
        protocols,
        multiaddrs: [tcpAddr],
        announce: ['/ip4/8.8.8.8/tcp/4001'],
        libp2pScope,
      })
      expect(announced.absent).to.match(/announce addresses/)
      const confirmed = autonatEvidence({
        protocols,
        multiaddrs: [tcpAddr, multiaddr('/ip4/127.0.0.1/tcp/4001')],
        announce: [],
        libp2pScope,
      })
      expect(confirmed).to.deep.equal({ running: true, verified: ['/ip4/8.8.8.8/tcp/4001'] })
      expect(autonatCorroboration({ type: 'public' }, 'tcp', confirmed).result).to.equal('corroborates')
      expect(autonatCorroboration({ type: 'full-cone' }, 'tcp', confirmed).result).to.equal('corroborates')
      // reachability only: never a contradiction, and only for the protocol of the confirmed address
      expect(autonatCorroboration({ type: 'symmetric' }, 'tcp', confirmed).result).to.equal('neutral')
      expect(autonatCorroboration({ type: 'public' }, 'udp', confirmed).result).to.equal('absent')
      expect(autonatCorroboration({ type: 'public' }, 'tcp', privateOnly).result).to.equal('absent')
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
    it('serves, classifies on demand and emits nat:verdict (each protocol, as soon as judged) and nat:classified', async () => {
      const { dir, cleanup } = await tempDir()
      const kernel = new MeshKernel({ env })
      const events: MeshEvent[] = []
      kernel.events.on('nat:classified', (e) => events.push(e))
      const p = ports()
      try {
        const config = loopbackConfig(
          dir,
          natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
          natClassifier({
            servers: [`/ip4/127.0.0.1/udp/${p[0]}`],
            localAddress: '127.0.0.1',
            auto: false,
          }),
        )
        const verdicts: MeshEvent[] = []
        kernel.events.on('nat:verdict', (e) => verdicts.push({ ...e, classifying: api.classifying() }))
        const node = await kernel.start(config)
        const api = node.api<NatClassificationApi>('nat-classification')
        expect(api.report()).to.equal(undefined)
        // auto: false: nothing runs until asked
        expect(api.classifying()).to.equal(false)
        const running = api.classify()
        expect(api.classifying()).to.equal(true)
        const report = await running
        expect(api.classifying()).to.equal(false)
        expect(report.udp?.type).to.equal('public')
        expect(report.tcp?.type).to.equal('public')
        expect(api.report()).to.equal(report)
        expect(events).to.have.length(1)
        expect(events[0]).to.deep.include({ udp: 'public', tcp: 'public', trigger: 'demand' })
        // each protocol's verdict came out on its own, while the classification still ran
        expect(verdicts.map((v) => v.protocol)).to.have.members(['udp', 'tcp'])
        for (const v of verdicts)
          expect(v).to.deep.include({ type: 'public', trigger: 'demand', classifying: true })
        expect(api.verdict('udp')).to.equal(report.udp)
        expect(api.verdict('tcp')).to.equal(report.tcp)
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
            network: { addressScope: 'all' },
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
          "  datastore: 'memory', logLevel: 'silent', listen: ['/ip4/127.0.0.1/tcp/0'], network: { addressScope: 'all' },",
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
        // the other sources are listed too, even when they have nothing to say (no peer observed us)
        expect(text).to.match(/^ {2}identify: absent \(.+\)$/m)
        expect(text).to.match(/^ {2}autonat-v2: (absent|neutral) \(.+\)$/m)
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
        const config = loopbackConfig(
          dir,
          natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
          natClassifier({ servers: [`127.0.0.1:${p[0]}`], localAddress: '127.0.0.1' }),
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

    it('classifies again soon when the start classification reached no probe server (classifying meanwhile)', async () => {
      const { dir, cleanup } = await tempDir()
      const kernel = new MeshKernel({ env })
      const server = new MeshKernel({ env })
      const events: MeshEvent[] = []
      kernel.events.on('nat:classified', (e) => events.push(e))
      const p = ports()
      try {
        // the probe server is not up yet (a lossy link or a slow first dial looks the same)
        const node = await kernel.start(
          loopbackConfig(
            dir,
            natClassifier({ servers: [`127.0.0.1:${p[0]}`], localAddress: '127.0.0.1', timeout: '300ms' }),
          ),
        )
        const api = node.api<NatClassificationApi>('nat-classification')
        await waitFor(() => events.length === 1, { what: 'the start classification', timeoutMs: 10_000 })
        expect(events[0]).to.deep.include({ udp: 'unknown', trigger: 'start' })
        // no verdict yet, but one is coming
        expect(api.classifying()).to.equal(true)
        await server.start(
          loopbackConfig(
            `${dir}/server`,
            natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
          ),
        )
        await waitFor(() => events.some((e) => e.udp === 'public'), {
          what: 'a start classification that reached the server',
          timeoutMs: 20_000,
        })
        expect(events.at(-1)).to.deep.include({ udp: 'public', tcp: 'public', trigger: 'start' })
        expect(api.classifying()).to.equal(false)
      } finally {
        await kernel.close()
        await server.close()
        await cleanup()
      }
    })

    it('weighs the verdict against identify (address scope) and reports AutoNAT v2 from public APIs', async () => {
      const { dir, cleanup } = await tempDir()
      const kernels: MeshKernel[] = []
      // a plugin that runs the stock AutoNAT v2 service (Meshkit has no built-in one)
      const autonat = definePlugin({
        name: 'autonat-v2-test',
        create: () => ({ libp2p: () => ({ services: { autoNAT: autoNATv2() } }) }),
      })
      const start = async (name: string, plugins: MeshPlugin[], publicCidrs?: string[]) => {
        const kernel = new MeshKernel({ env })
        kernels.push(kernel)
        const config = resolveConfig(
          {
            dataDir: `${dir}/${name}`,
            datastore: 'memory',
            listen: ['/ip4/127.0.0.1/tcp/0'],
            logLevel: 'silent',
            network: { addressScope: 'all', ...(publicCidrs ? { publicCidrs } : {}) },
            plugins: [identify(), noise(), yamux(), tcp(), ...plugins],
          },
          { env, registry: builtinPlugins },
        )
        return kernel.start(config)
      }
      try {
        const p = ports()
        const server = await start('s', [
          natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
        ])
        const serverAddr = server.libp2p.getMultiaddrs()[0].toString()
        const classifier = natClassifier({ servers: [serverAddr], localAddress: '127.0.0.1', auto: false })
        // loopback counts as public here (publicCidrs), so the probe server's identify is evidence
        const inScope = await start('c1', [classifier, autonat()], ['127.0.0.0/8'])
        const outOfScope = await start('c2', [classifier])
        const api1 = inScope.api<NatClassificationApi>('nat-classification')
        const api2 = outOfScope.api<NatClassificationApi>('nat-classification')
        await Promise.all([api1.classify(), api2.classify()])
        // identify runs on the connection the endpoints were asked over
        await waitFor(() => api1.observed().length > 0 && api2.observed().length > 0, {
          what: 'identify from the probe server',
        })
        expect(api1.observed()[0]).to.deep.include({
          observer: server.peerId.toString(),
          ip: '127.0.0.1',
          counted: true,
          direction: 'outbound',
        })
        expect(api2.observed()[0].counted).to.equal(false)
        const [r1, r2] = await Promise.all([api1.classify(), api2.classify()])
        const why = JSON.stringify(r1)
        expect(r1.udp?.type, why).to.equal('public')
        const identify1 = r1.udp?.corroboration?.find((c) => c.source === 'identify')
        expect(identify1, why).to.deep.include({ result: 'corroborates' })
        expect(identify1?.detail).to.contain('127.0.0.1')
        // the probe alone says 0.99 here (3 endpoints answered): corroboration keeps it, capped at 0.99
        expect(r1.udp!.probeConfidence).to.be.a('number')
        expect(r1.udp!.confidence).to.be.at.least(r1.udp!.probeConfidence!)
        expect(r1.tcp?.corroboration?.find((c) => c.source === 'identify')?.result).to.equal('corroborates')
        // AutoNAT v2 runs (found by its dial-back protocol) but never tests loopback: absent, with why
        expect(r1.autonat.running).to.equal(true)
        const autonat1 = r1.udp?.corroboration?.find((c) => c.source === 'autonat-v2')
        expect(autonat1?.result).to.equal('absent')
        expect(autonat1?.detail).to.match(/only addresses libp2p counts as public/)
        // without publicCidrs the same observation is not evidence: absent, confidence as the probe said
        const identify2 = r2.udp?.corroboration?.find((c) => c.source === 'identify')
        expect(identify2?.result, JSON.stringify(r2)).to.equal('absent')
        expect(identify2?.detail).to.match(/not outside this network/)
        expect(r2.udp!.confidence).to.equal(r2.udp!.probeConfidence)
        expect(r2.autonat).to.deep.include({
          running: false,
          absent: 'the node does not run @libp2p/autonat-v2',
        })
      } finally {
        for (const k of kernels.reverse()) await k.close()
        await cleanup()
      }
    })

    it('tries once more, with longer waits, when the first try got no answer (a busy server)', async () => {
      const { dir, cleanup } = await tempDir()
      const p = ports()
      // the server's port answers nothing during the first try, then the real server takes it
      const blocker = createSocket('udp4')
      await new Promise<void>((r) => blocker.bind(p[0], '127.0.0.1', () => r()))
      let server: ProbeServer | undefined
      const serverUp = new Promise<void>((resolve, reject) =>
        blocker.once('message', () => {
          setTimeout(() => {
            blocker.close(() => {
              ProbeServer.start({ addresses: ['127.0.0.1', '127.0.0.2'], udpPorts: p, tcpPorts: p }).then(
                (s) => {
                  server = s
                  resolve()
                },
                reject,
              )
            })
          }, 350)
        }),
      )
      const kernel = new MeshKernel({ env })
      try {
        const node = await kernel.start(
          loopbackConfig(
            `${dir}/c`,
            loopbackClassifier(p[0], {
              tcp: false,
              auto: false,
            }),
          ),
        )
        const report = await node.api<NatClassificationApi>('nat-classification').classify()
        await serverUp
        const why = JSON.stringify(report.udp)
        expect(report.udp?.type, why).to.equal('public')
        expect(report.udp?.evidence.notes.join(' '), why).to.match(
          /the first try was inconclusive \(no probe server answered\): tried again with 600 ms waits/,
        )
        expect(report.tcp).to.equal(undefined)
      } finally {
        await kernel.close()
        await server?.close()
        await new Promise<void>((r) => {
          try {
            blocker.close(() => r())
          } catch {
            r()
          }
        })
        await cleanup()
      }
    })

    it('re-checks when the probe server goes and comes back: coalesced, rate limited, nat:changed', async () => {
      const { dir, cleanup } = await tempDir()
      const p = ports()
      const serverConfig = (name: string) =>
        loopbackConfig(
          `${dir}/${name}`,
          natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
        )
      let server = new MeshKernel({ env })
      const client = new MeshKernel({ env })
      const events: Array<MeshEvent & { at: number }> = []
      for (const name of ['nat:classified', 'nat:changed'])
        client.events.on(name, (e) => events.push({ ...e, at: Date.now() }))
      const of = (name: string) => events.filter((e) => e.event === name)
      try {
        await server.start(serverConfig('s1'))
        await client.start(
          loopbackConfig(
            `${dir}/c`,
            loopbackClassifier(p[0], {
              // re-checks at most every 500 ms; changes looked for as often
              minRecheckInterval: '500ms',
            }),
          ),
        )
        await waitFor(() => of('nat:classified').length === 1, { what: 'the start classification' })
        expect(of('nat:classified')[0]).to.deep.include({ udp: 'public', trigger: 'start' })
        // nothing changes: the watch (every 500 ms) triggers nothing
        await new Promise((r) => setTimeout(r, 1200))
        expect(of('nat:classified')).to.have.length(1)

        const goneAt = Date.now()
        await server.close()
        await waitFor(() => of('nat:changed').length === 1, {
          timeoutMs: 8000,
          what: 'nat:changed to unknown',
        })
        const gone = of('nat:changed')[0]
        expect(gone).to.deep.include({ trigger: 'address-change' })
        expect(gone.udp).to.deep.equal({ from: 'public', to: 'unknown' })
        expect(gone.tcp).to.deep.equal({ from: 'public', to: 'unknown' })
        expect((gone.reasons as string[]).join(' ')).to.match(/UDP mapping check: none/)
        const goneMs = gone.at - goneAt

        server = new MeshKernel({ env })
        const backAt = Date.now()
        await server.start(serverConfig('s2'))
        await waitFor(() => of('nat:changed').length === 2, {
          timeoutMs: 8000,
          what: 'nat:changed back to public',
        })
        const back = of('nat:changed')[1]
        expect(back.udp).to.deep.equal({ from: 'unknown', to: 'public' })
        const backMs = back.at - backAt
        console.log(`      re-classified ${goneMs} ms after the server went, ${backMs} ms after it came back`)
        // rate limited: classifications at least minRecheckInterval apart
        const times = of('nat:classified').map((e) => e.at)
        for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).to.be.at.least(450)
        expect(times.length).to.be.at.most(4)
      } finally {
        await client.close()
        await server.close()
        await cleanup()
      }
    })

    it('re-checks when identify reports a new external IP, and counts it against a public verdict', async () => {
      const { dir, cleanup } = await tempDir()
      const p = ports()
      const kernels: MeshKernel[] = []
      const events: MeshEvent[] = []
      const start = async (name: string, listen: string, plugins: MeshPlugin[], publicCidrs?: string[]) => {
        const kernel = new MeshKernel({ env })
        kernels.push(kernel)
        if (name === 'c')
          for (const e of ['nat:classified', 'nat:evidence']) kernel.events.on(e, (x) => events.push(x))
        return kernel.start(
          resolveConfig(
            {
              dataDir: `${dir}/${name}`,
              datastore: 'memory',
              listen: [listen],
              logLevel: 'silent',
              network: { addressScope: 'all', ...(publicCidrs ? { publicCidrs } : {}) },
              plugins: [identify(), noise(), yamux(), tcp(), ...plugins],
            },
            { env, registry: builtinPlugins },
          ),
        )
      }
      try {
        const server = await start('s', '/ip4/127.0.0.1/tcp/0', [
          natProbeServer({ udpPorts: p, addresses: ['127.0.0.1', '127.0.0.2'] }),
        ])
        // the classifier's node listens on 127.0.0.2, an address of no interface here (lo has 127.0.0.1)
        const client = await start(
          'c',
          '/ip4/127.0.0.2/tcp/0',
          [
            loopbackClassifier(p[0], {
              minRecheckInterval: '500ms',
            }),
          ],
          ['127.0.0.0/8'],
        )
        const of = (name: string) => events.filter((e) => e.event === name)
        await waitFor(() => of('nat:classified').length === 1, { what: 'the start classification' })
        expect(of('nat:classified')[0]).to.deep.include({ udp: 'public', trigger: 'start' })
        // the server dials it there: its identify says it saw this node at 127.0.0.2
        await server.libp2p.dial(client.libp2p.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) })
        await waitFor(() => of('nat:classified').length === 2, { timeoutMs: 8000, what: 'the re-check' })
        const again = of('nat:classified')[1]
        expect(again.trigger).to.equal('address-change')
        expect((again.reasons as string[]).join(' ')).to.match(/identify: new external IP 127\.0\.0\.2/)
        const report = again.report as NatReport
        const said = report.udp?.corroboration?.find((c) => c.source === 'identify')
        expect(said, JSON.stringify(report.observed)).to.deep.include({ result: 'contradicts' })
        expect(said?.detail).to.contain('127.0.0.2')
        expect(report.udp!.confidence).to.equal(Math.round((report.udp!.probeConfidence! / 2) * 100) / 100)
        // before the re-check, the new observation re-weighed the last verdict (nat:evidence, no probing)
        expect(of('nat:evidence').length).to.be.at.least(1)
        expect(
          (of('nat:evidence')[0].report as NatReport).udp?.corroboration?.find((c) => c.source === 'identify')
            ?.result,
        ).to.equal('contradicts')
      } finally {
        for (const k of kernels.reverse()) await k.close()
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
