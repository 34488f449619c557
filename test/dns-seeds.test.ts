import { createSocket, type Socket } from 'node:dgram'
import { expect } from 'chai'
import dns2 from 'dns2'
import {
  type ConfigEnv,
  createLogger,
  type MeshConfig,
  type MeshEvent,
  MeshKernel,
  type MeshNode,
  resolveConfig,
} from 'meshkit'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import { dnsSeeds, resolveSeedDomain } from '../plugins/dns-seeds/index.js'
import { tempDir, waitFor } from './helpers.js'

const { Packet } = dns2
const env: ConfigEnv = { command: 'start', mode: 'test' }

interface TestNode {
  kernel: MeshKernel
  node: MeshNode
  events: MeshEvent[]
  logs: string[]
  peerId: string
  address: string
  port: number
}

/** A UDP DNS server on 127.0.0.1 answering TXT queries from `zone` (name -> TXT strings); NXDOMAIN otherwise. */
async function dnsServer(zone: Map<string, string[]>) {
  const queries: string[] = []
  const server = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request)
    const [question] = request.questions
    const name = question?.name.toLowerCase() ?? ''
    queries.push(name)
    const records = zone.get(name)
    if (!records) response.header.rcode = 3 // NXDOMAIN
    for (const data of records ?? []) {
      const answer = {
        name: question.name,
        type: Packet.TYPE.TXT,
        class: Packet.CLASS.IN,
        ttl: 60,
        data,
      }
      response.answers.push(answer as unknown as (typeof response.answers)[number])
    }
    void send(response)
  })
  await server.listen(0, '127.0.0.1')
  const { port } = server.address()
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()))
  return {
    server: `127.0.0.1:${port}`,
    queries,
    close: async () => {
      try {
        server.close()
      } catch {
        return // already closed
      }
      await closed
    },
  }
}

/** A UDP socket on 127.0.0.1 that reads queries and never answers: a DNS server that times out. */
async function silentServer(): Promise<{
  server: string
  received: () => number
  close: () => Promise<void>
}> {
  let received = 0
  const socket: Socket = createSocket('udp4')
  socket.on('message', () => received++)
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  return {
    server: `127.0.0.1:${socket.address().port}`,
    received: () => received,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  }
}

describe('bootstrap: DNS seeds', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  const kernels: MeshKernel[] = []
  const closers: Array<() => Promise<void>> = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-dns-seeds-'))
  })
  afterEach(async () => {
    for (const k of kernels.splice(0)) await k.close().catch(() => {})
    for (const close of closers.splice(0)) await close().catch(() => {})
    await cleanup()
  })

  async function start(name: string, extra: MeshConfig = {}): Promise<TestNode> {
    const logs: string[] = []
    const kernel = new MeshKernel({ env, logger: createLogger({ write: (line) => logs.push(line) }) })
    kernels.push(kernel)
    const events: MeshEvent[] = []
    kernel.events.on('*', (e) => events.push({ ...e, at: Date.now() }))
    const node = await kernel.start(
      resolveConfig(
        {
          dataDir: `${dir}/${name}`,
          datastore: 'memory',
          logLevel: 'debug',
          listen: ['/ip4/127.0.0.1/tcp/0'],
          connections: { allow: ['/ip4/127.0.0.1'] },
          network: { addressScope: 'all' },
          ...extra,
          plugins: [identify(), noise(), yamux(), tcp(), ...(extra.plugins ?? [])],
        },
        { env, registry: builtinPlugins },
      ),
    )
    const address = node.libp2p.getMultiaddrs()[0].toString()
    return {
      kernel,
      node,
      events,
      logs,
      peerId: node.peerId.toString(),
      address,
      port: Number(/\/tcp\/(\d+)/.exec(address)![1]),
    }
  }
  const of = (n: TestNode, event: string) => n.events.filter((e) => e.event === event)
  const connectedTo = (n: TestNode, peer: string) =>
    n.node.libp2p.getPeers().some((p) => p.toString() === peer)

  it('joins the peers listed in _dnsaddr TXT records, nested /dnsaddr/ ones included; ignores junk', async () => {
    const a = await start('a')
    const c = await start('c')
    const dns = await dnsServer(
      new Map([
        [
          '_dnsaddr.seed.test',
          [
            `dnsaddr=/ip4/127.0.0.1/tcp/${a.port}/p2p/${a.peerId}`,
            'dnsaddr=/dnsaddr/nested.test',
            'v=spf1 -all',
            'dnsaddr=not a multiaddr',
            'dnsaddr=/ip4/999.1.2.3/tcp/1',
            'dnsaddr=/dnsaddr/-bad-.test',
            'dnsaddr=/dnsaddr/missing.test',
          ],
        ],
        ['_dnsaddr.nested.test', [`dnsaddr=/ip4/127.0.0.1/tcp/${c.port}/p2p/${c.peerId}`]],
      ]),
    )
    closers.push(dns.close)
    const b = await start('b', {
      bootstrap: { minConnections: 2, retryInitial: '100ms' },
      plugins: [dnsSeeds({ domains: ['seed.test'], servers: [dns.server] })],
    })
    await waitFor(() => connectedTo(b, a.peerId) && connectedTo(b, c.peerId), {
      timeoutMs: 10_000,
      what: 'B connected to A and C',
    })
    const connected = of(b, 'bootstrap:connected')
    expect(connected.map((e) => e.source)).to.deep.equal(['dns-seeds', 'dns-seeds'])
    expect(connected.map((e) => e.peerId)).to.have.members([a.peerId, c.peerId])
    expect(dns.queries).to.include.members([
      '_dnsaddr.seed.test',
      '_dnsaddr.nested.test',
      '_dnsaddr.missing.test',
    ])
    expect(b.node.state).to.equal('started')
  })

  it('resolves: nested entries filtered by peer id, cycles and depth bounded, failures reported', async () => {
    const id1 = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
    const id2 = '12D3KooWLVDBLcnQwM5r8BXd6VvhoWedDmbLBtQ8XhUnCbS2zxdV'
    const dns = await dnsServer(
      new Map([
        ['_dnsaddr.root.test', [`dnsaddr=/dnsaddr/pair.test/p2p/${id2}`, 'dnsaddr=/dnsaddr/loop.test']],
        [
          '_dnsaddr.pair.test',
          [`dnsaddr=/ip4/127.0.0.1/tcp/1/p2p/${id1}`, `dnsaddr=/ip4/127.0.0.1/tcp/2/p2p/${id2}`],
        ],
        ['_dnsaddr.loop.test', ['dnsaddr=/dnsaddr/root.test', 'dnsaddr=/ip4/127.0.0.1/tcp/3']],
        ['_dnsaddr.d0.test', ['dnsaddr=/dnsaddr/d1.test', 'dnsaddr=/ip4/127.0.0.1/tcp/10']],
        ['_dnsaddr.d1.test', ['dnsaddr=/dnsaddr/d2.test', 'dnsaddr=/ip4/127.0.0.1/tcp/11']],
        ['_dnsaddr.d2.test', ['dnsaddr=/ip4/127.0.0.1/tcp/12']],
        ['_dnsaddr.split.test', [['dnsaddr=/ip4/127.0.0.1', '/tcp/20'] as unknown as string]],
      ]),
    )
    closers.push(dns.close)
    const opts = { servers: [dns.server], timeout: 2_000, maxDepth: 4 }
    const signal = new AbortController().signal
    const root = await resolveSeedDomain('root.test', opts, signal)
    expect(root.error).to.equal(undefined)
    expect(root.addresses).to.have.members([`/ip4/127.0.0.1/tcp/2/p2p/${id2}`, '/ip4/127.0.0.1/tcp/3'])
    expect((await resolveSeedDomain('d0.test', { ...opts, maxDepth: 1 }, signal)).addresses).to.have.members([
      '/ip4/127.0.0.1/tcp/10',
      '/ip4/127.0.0.1/tcp/11',
    ])
    expect((await resolveSeedDomain('d0.test', { ...opts, maxDepth: 0 }, signal)).addresses).to.deep.equal([
      '/ip4/127.0.0.1/tcp/10',
    ])
    expect((await resolveSeedDomain('split.test', opts, signal)).addresses).to.deep.equal([
      '/ip4/127.0.0.1/tcp/20',
    ])
    const missing = await resolveSeedDomain('nowhere.test', opts, signal)
    expect(missing).to.deep.equal({ addresses: [], error: 'no such domain (NXDOMAIN)' })
  })

  it('validates its options: domain names and DNS servers', () => {
    const check = (options: unknown) => {
      try {
        resolveConfig(
          { dataDir: `${dir}/x`, plugins: [tcp(), noise(), yamux(), dnsSeeds(options as never)] },
          { env, registry: builtinPlugins },
        )
        return ''
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(check({ domains: ['seed.test', '_dnsaddr.Other.Test.'] })).to.equal('')
    expect(check({ domains: ['bad domain'] })).to.match(/plugins\[3\]\(dns-seeds\)\.domains\[0\]/)
    expect(check({ domains: ['-x.test'] })).to.match(/domains\[0\]/)
    expect(check({ domains: ['a.test'], servers: ['not-an-ip'] })).to.match(/servers\[0\]/)
    expect(check({ domains: ['a.test'], servers: ['127.0.0.1:99999'] })).to.match(/servers\[0\]/)
    expect(check({ domains: ['a.test'], servers: ['127.0.0.1:53', '[::1]:53', '::1'] })).to.equal('')
    expect(check({ domains: ['a.test'], timeout: 'soon' })).to.match(/timeout/)
  })

  it('a DNS server that is down or never answers: no crash, and the retries go on', async () => {
    const silent = await silentServer()
    closers.push(silent.close)
    const b = await start('b', {
      bootstrap: { minConnections: 1, retryInitial: '100ms', retryMax: '400ms' },
      plugins: [
        dnsSeeds({ domains: ['seed.test', 'other.test'], servers: [silent.server], timeout: '300ms' }),
      ],
    })
    await waitFor(() => of(b, 'bootstrap:retry').length >= 3, { timeoutMs: 8_000, what: '3 retries' })
    expect(silent.received()).to.be.greaterThan(0)
    // each round waited at most about `timeout` for DNS
    const retries = of(b, 'bootstrap:retry')
    for (let i = 1; i < retries.length; i++) {
      const gap = (retries[i].at as number) - (retries[i - 1].at as number)
      expect(gap).to.be.below((retries[i - 1].delayMs as number) + 300 + 700)
    }
    const warnings = b.logs.filter((l) => /WARN.*\[dns-seeds\] cannot resolve _dnsaddr\.seed\.test/.test(l))
    expect(warnings, 'warned once, then debug').to.have.length(1)
    expect(b.node.state).to.equal('started')

    // now a refused port (nothing listens): still no crash
    await silent.close()
    await waitFor(() => of(b, 'bootstrap:retry').length >= retries.length + 2, {
      timeoutMs: 5_000,
      what: 'retries after the server went away',
    })
    expect(b.node.state).to.equal('started')
    expect(b.node.libp2p.getPeers()).to.have.length(0)
  })

  it('recovers when the DNS server comes up', async () => {
    const a = await start('a')
    const zone = new Map<string, string[]>()
    const dns = await dnsServer(zone)
    closers.push(dns.close)
    const b = await start('b', {
      bootstrap: { minConnections: 1, retryInitial: '100ms', retryMax: '400ms' },
      plugins: [dnsSeeds({ domains: ['seed.test'], servers: [dns.server], timeout: '1s' })],
    })
    await waitFor(() => of(b, 'bootstrap:retry').length >= 2, {
      timeoutMs: 5_000,
      what: 'retries on NXDOMAIN',
    })
    zone.set('_dnsaddr.seed.test', [`dnsaddr=${a.address}`])
    await waitFor(() => connectedTo(b, a.peerId), { timeoutMs: 5_000, what: 'B joined A' })
    expect(b.logs.some((l) => /\[dns-seeds\] _dnsaddr\.seed\.test resolves again/.test(l))).to.equal(true)
  })
})
