/**
 * The mdns plugin. Option checks run anywhere and send nothing. Discovery runs two real `mesh start`
 * processes inside a network namespace made for the test, whose `lo` carries the multicast: no mDNS
 * packet is ever sent in the host's namespace. Skipped (with the reason) without root or iproute2.
 */
import { mkdir, symlink, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { isMeshError, type MeshError, resolveConfig } from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, tcp, yamux } from 'meshkit/plugins'
import { mdns } from '../plugins/mdns/index.js'
import { CLI_MAIN } from './cli-helpers.js'
import { type ConfigProject, configProject, REPO_ROOT } from './fixtures/configs/project.js'
import {
  createNetns,
  deleteNetns,
  killNetnsProcesses,
  listNetns,
  type NetnsProcess,
  netnsPids,
  netnsSpawn,
  netnsUnavailableReason,
  uniqueNetnsName,
} from './netns.js'

const env = { command: 'start', mode: 'test' } as const

describe('mdns plugin', function () {
  this.timeout(60_000)

  describe('options (nothing is sent)', () => {
    const base = () => [identify(), noise(), yamux(), tcp()]
    const optionsOf = (plugin: ReturnType<typeof mdns>) =>
      resolveConfig(
        { network: { addressScope: 'private' }, plugins: [...base(), plugin] },
        { env, registry: builtinPlugins },
      ).plugins.find((p) => p.plugin.name === 'mdns')?.options

    it('fills the defaults and parses durations', () => {
      expect(optionsOf(mdns())).to.deep.equal({
        interval: 10_000,
        serviceTag: '_meshkit._udp.local',
        broadcast: true,
        autoDial: true,
      })
      expect(optionsOf(mdns({ interval: '2s', peerName: 'alice', broadcast: false }))).to.include({
        interval: 2000,
        peerName: 'alice',
        broadcast: false,
      })
    })

    it('provides peer-discovery, which other discovery plugins may provide too', () => {
      expect(mdns.provides).to.deep.equal(['peer-discovery'])
      const other = definePlugin({
        name: 'other-discovery',
        provides: ['peer-discovery'],
        create: () => ({}),
      })
      const config = resolveConfig(
        { network: { addressScope: 'private' }, plugins: [...base(), mdns(), other()] },
        { env, registry: builtinPlugins },
      )
      expect(config.plugins.map((p) => p.plugin.name)).to.include.members(['mdns', 'other-discovery'])
    })

    it("refuses a node that dials only public addresses (network.addressScope 'public')", () => {
      let err: unknown
      try {
        resolveConfig({ plugins: [...base(), mdns()] }, { env, registry: builtinPlugins })
      } catch (e) {
        err = e
      }
      expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID'), String(err)).to.equal(true)
      expect((err as MeshError).message).to.contain('plugins[4](mdns): mdns finds peers at LAN addresses')
      expect((err as MeshError).message).to.contain("network: { addressScope: 'private' }")
    })

    it('reports a bad interval as plugins[N](mdns).interval', () => {
      let err: unknown
      try {
        resolveConfig({ plugins: [...base(), mdns({ interval: 'soon' })] }, { env, registry: builtinPlugins })
      } catch (e) {
        err = e
      }
      expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID'), String(err)).to.equal(true)
      const message = (err as MeshError).message
      expect(message).to.contain('plugins[4](mdns).interval').and.to.contain('"soon"')
      expect(message).to.contain('a duration')
    })

    it('reports every bad option at once, with fixes', () => {
      let err: unknown
      try {
        resolveConfig(
          {
            plugins: [
              ...base(),
              // @ts-expect-error: a misspelt key, as a JS config could have it
              mdns({ interval: 5, serviceTag: 'meshkit', peerName: 'a.b', broadcst: false }),
            ],
          },
          { env, registry: builtinPlugins },
        )
      } catch (e) {
        err = e
      }
      expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID'), String(err)).to.equal(true)
      const message = (err as MeshError).message
      expect(message).to.contain('plugins[4](mdns).interval').and.to.contain('at least 100ms')
      expect(message).to.contain('plugins[4](mdns).serviceTag').and.to.contain("ending in '.local'")
      expect(message).to.contain('plugins[4](mdns).peerName')
      expect(message).to.contain("did you mean 'broadcast'?")
    })
  })

  describe('two mesh processes in a network namespace', () => {
    let ns: string | undefined
    let project: ConfigProject | undefined
    let pluginLink: string | undefined

    before(async function () {
      const why = await netnsUnavailableReason()
      if (why) {
        console.log(`      skipped: ${why}`)
        this.skip()
      }
      ns = uniqueNetnsName('mk-mdns')
      // one namespace, only `lo`, which carries the multicast between the two processes
      await createNetns(ns, { loopbackMulticast: true })
      // configs live outside the repo; node_modules links make 'meshkit' and the compiled plugin resolve
      project = await configProject({
        'with-mdns.config.ts': config(true),
        'without-mdns.config.ts': config(false),
      })
      pluginLink = project.path('node_modules/meshkit-mdns')
      await mkdir(project.path('node_modules'), { recursive: true })
      await symlink(join(REPO_ROOT, 'dist', 'plugins', 'mdns'), pluginLink, 'dir')
    })

    afterEach(async () => {
      await killNetnsProcesses()
    })

    after(async () => {
      await killNetnsProcesses()
      if (ns) await deleteNetns(ns)
      if (pluginLink) await unlink(pluginLink).catch(() => {})
      await project?.cleanup()
      if (ns) expect(await listNetns()).not.to.include(ns)
    })

    /** A mesh.config.ts: TCP on loopback, optionally mDNS querying every second. */
    function config(withMdns: boolean): string {
      return [
        "import { defineConfig } from 'meshkit'",
        "import { identify, noise, ping, tcp, yamux } from 'meshkit/plugins'",
        withMdns ? "import { mdns } from 'meshkit-mdns/index.js'" : '',
        'export default defineConfig({',
        "  datastore: 'memory',",
        "  network: { addressScope: 'all' },",
        `  plugins: [identify(), ping(), noise(), yamux(), tcp()${withMdns ? ", mdns({ interval: '1s' })" : ''}],`,
        '})',
        '',
      ].join('\n')
    }

    interface Node {
      proc: NetnsProcess
      peerId: string
    }

    function events(proc: NetnsProcess): Array<Record<string, unknown>> {
      return proc.stdoutLines.flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>]
        } catch {
          return []
        }
      })
    }

    async function startInNetns(name: string, configFile: string): Promise<Node> {
      const proc = netnsSpawn(
        ns!,
        process.execPath,
        [
          CLI_MAIN,
          'start',
          '--json',
          '--config',
          project!.path(configFile),
          '--data-dir',
          project!.path(`data/${name}-${Date.now()}`),
          '--listen',
          '/ip4/127.0.0.1/tcp/0',
          '--log-level',
          'debug',
        ],
        { cwd: project!.dir, env: { ...process.env, DEBUG: undefined, NODE_OPTIONS: undefined } },
      )
      const started = await proc.waitUntil(() => events(proc).find((e) => e.event === 'started'), {
        timeoutMs: 20_000,
        what: `the started event of ${name}`,
      })
      // the process must really be inside the namespace: its multicast never reaches the host
      expect(await netnsPids(ns!)).to.include(proc.pid)
      return { proc, peerId: started.peerId as string }
    }

    const connectedTo = (node: Node, peerId: string) =>
      events(node.proc).find((e) => e.event === 'peer:connect' && e.peerId === peerId)

    it('discover each other by mDNS and connect, without --dial', async () => {
      const a = await startInNetns('a', 'with-mdns.config.ts')
      const b = await startInNetns('b', 'with-mdns.config.ts')
      const bound = { timeoutMs: 15_000 }
      await Promise.all([
        a.proc.waitUntil(() => connectedTo(a, b.peerId), { ...bound, what: `a's peer:connect naming b` }),
        b.proc.waitUntil(() => connectedTo(b, a.peerId), { ...bound, what: `b's peer:connect naming a` }),
      ])
      const found = (node: Node, peerId: string) =>
        events(node.proc).find((e) => e.event === 'mdns:peer' && e.peerId === peerId)
      await Promise.all([
        a.proc.waitUntil(() => found(a, b.peerId), { ...bound, what: `a's mdns:peer naming b` }),
        b.proc.waitUntil(() => found(b, a.peerId), { ...bound, what: `b's mdns:peer naming a` }),
      ])
      const mdnsPeer = found(a, b.peerId)!
      expect(mdnsPeer.addresses).to.be.an('array').that.is.not.empty
      expect(events(a.proc).filter((e) => e.event === 'mdns:peer' && e.peerId === b.peerId)).to.have.length(
        1,
        'mdns:peer is reported once per peer',
      )
      for (const node of [a, b]) {
        const exit = await node.proc.kill('SIGTERM', { timeoutMs: 10_000 })
        expect(exit, node.proc.describe()).to.deep.equal({ code: 0, signal: null })
      }
    })

    it('control: without the mdns plugin the same two nodes do not connect', async () => {
      const a = await startInNetns('a', 'without-mdns.config.ts')
      const b = await startInNetns('b', 'without-mdns.config.ts')
      await new Promise((r) => setTimeout(r, 4000))
      for (const node of [a, b]) {
        const seen = events(node.proc).filter((e) => e.event === 'peer:connect' || e.event === 'mdns:peer')
        expect(seen, node.proc.describe()).to.deep.equal([])
        expect(node.proc.exit, node.proc.describe()).to.equal(undefined)
      }
    })
  })
})
