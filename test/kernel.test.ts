import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'chai'
import {
  type ConfigEnv,
  isMeshError,
  type MeshConfig,
  type MeshError,
  type MeshEvent,
  MeshKernel,
  resolveConfig,
} from 'meshkit'
import { coalescePerKey, definePlugin, type PluginHooks } from 'meshkit/plugin'
import { builtinPlugins, identify, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { type CountingTcpApi, countingTcp } from './fixtures/plugins/counting-tcp.js'
import { freePort, tempDir, waitFor } from './helpers.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }
const LISTEN = ['/ip4/127.0.0.1/tcp/0']

/** A plugin that records every hook call in `log`, optionally failing one hook. */
function recorder(
  log: string[],
  name: string,
  extra: {
    dependencies?: string[]
    provides?: string[]
    enforce?: 'pre' | 'post'
    failOn?: keyof PluginHooks
    apply?: 'start' | 'dev'
  } = {},
) {
  return definePlugin({
    name,
    provides: extra.provides,
    dependencies: extra.dependencies,
    enforce: extra.enforce,
    apply: extra.apply,
    create: () => {
      const hook = (h: keyof PluginHooks) => () => {
        log.push(`${name}:${h}`)
        if (extra.failOn === h) throw new Error(`${name} ${h} exploded`)
      }
      return { setup: hook('setup'), start: hook('start'), stop: hook('stop') }
    },
  })()
}

describe('kernel', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  const kernels: MeshKernel[] = []

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
  })
  afterEach(async () => {
    for (const k of kernels.splice(0)) await k.close().catch(() => {})
    await cleanup()
  })

  const baseConfig = (extra: MeshConfig = {}, sub = 'a'): MeshConfig => ({
    dataDir: `${dir}/${sub}`,
    datastore: 'memory',
    listen: LISTEN,
    logLevel: 'silent',
    // these nodes dial each other's loopback addresses
    network: { addressScope: 'all' },
    ...extra,
    plugins: [identify(), noise(), yamux(), tcp(), ...(extra.plugins ?? [])],
  })
  const resolve = (config: MeshConfig, e: ConfigEnv = env) =>
    resolveConfig(config, { env: e, registry: builtinPlugins })
  const kernel = () => {
    const k = new MeshKernel({ env })
    kernels.push(k)
    return k
  }

  describe('plugin order', () => {
    it('starts dependencies first, then pre/normal/post, then config order; stops in reverse', async () => {
      const log: string[] = []
      const config = resolve(
        baseConfig({
          plugins: [
            recorder(log, 'late', { enforce: 'post' }),
            recorder(log, 'app', { dependencies: ['store'] }),
            recorder(log, 'store', { provides: ['store'] }),
            recorder(log, 'early', { enforce: 'pre' }),
          ],
        }),
      )
      const names = config.plugins.map((p) => p.plugin.name)
      expect(names.indexOf('early')).to.be.lessThan(names.indexOf('store'))
      expect(names.indexOf('store')).to.be.lessThan(names.indexOf('app'))
      expect(names.at(-1)).to.equal('late')
      expect(names.indexOf('noise')).to.be.lessThan(names.indexOf('tcp'), 'tcp depends on the encrypter')

      const node = await kernel().start(config)
      await node.stop()
      const starts = log.filter((l) => l.endsWith(':start')).map((l) => l.split(':')[0])
      const stops = log.filter((l) => l.endsWith(':stop')).map((l) => l.split(':')[0])
      expect(starts).to.deep.equal(['early', 'store', 'app', 'late'])
      expect(stops).to.deep.equal([...starts].reverse())
      expect(log.indexOf('late:setup')).to.be.lessThan(
        log.indexOf('early:start'),
        'every setup runs before any start',
      )
    })

    it('drops plugins whose apply does not match the command', () => {
      const log: string[] = []
      const config = resolve(baseConfig({ plugins: [recorder(log, 'dev-only', { apply: 'dev' })] }))
      expect(config.plugins.map((p) => p.plugin.name)).not.to.include('dev-only')
      const dev = resolve(baseConfig({ plugins: [recorder(log, 'dev-only', { apply: 'dev' })] }), {
        command: 'dev',
        mode: 'x',
      })
      expect(dev.plugins.map((p) => p.plugin.name)).to.include('dev-only')
    })
  })

  describe('lifecycle', () => {
    it('rolls back in reverse order when a start fails, and reports the original error', async () => {
      const log: string[] = []
      const config = resolve(
        baseConfig({
          plugins: [
            recorder(log, 'one'),
            recorder(log, 'two'),
            recorder(log, 'three', { failOn: 'start' }),
            recorder(log, 'four'),
          ],
        }),
      )
      const k = kernel()
      const node = await k.build(config)
      const err = await node.start().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err, 'MESH_ERR_PLUGIN_HOOK_FAILED')).to.equal(true)
      expect((err as MeshError).message)
        .to.contain("'three'")
        .and.to.contain('three start exploded')
      expect(((err as MeshError).cause as Error).message).to.equal('three start exploded')
      expect(log.filter((l) => !l.endsWith(':setup'))).to.deep.equal([
        'one:start',
        'two:start',
        'three:start',
        'two:stop',
        'one:stop',
      ])
      expect(node.state).to.equal('stopped')
      expect(node.libp2p.status).to.equal('stopped')
    })

    it('stops every plugin even when some stops fail, and reports all failures', async () => {
      const log: string[] = []
      const config = resolve(
        baseConfig({
          plugins: [
            recorder(log, 'one', { failOn: 'stop' }),
            recorder(log, 'two'),
            recorder(log, 'three', { failOn: 'stop' }),
          ],
        }),
      )
      const node = await kernel().start(config)
      const err = await node.stop().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err, 'MESH_ERR_STOP_FAILED')).to.equal(true)
      expect((err as MeshError).errors).to.have.length(2)
      expect((err as MeshError).message)
        .to.contain('one stop exploded')
        .and.to.contain('three stop exploded')
      expect(log.filter((l) => l.endsWith(':stop'))).to.deep.equal(['three:stop', 'two:stop', 'one:stop'])
      expect(node.libp2p.status).to.equal('stopped')
    })

    it('start and stop are idempotent, also when called concurrently', async () => {
      const log: string[] = []
      const node = await kernel().build(resolve(baseConfig({ plugins: [recorder(log, 'one')] })))
      await Promise.all([node.start(), node.start(), node.start()])
      await node.start()
      expect(log.filter((l) => l === 'one:start')).to.have.length(1)
      await Promise.all([node.stop(), node.stop()])
      await node.stop()
      expect(log.filter((l) => l === 'one:stop')).to.have.length(1)
    })

    it('a failing setup leaves nothing running and names the plugin', async () => {
      const log: string[] = []
      const err = await kernel()
        .build(resolve(baseConfig({ plugins: [recorder(log, 'bad', { failOn: 'setup' })] })))
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(isMeshError(err, 'MESH_ERR_PLUGIN_HOOK_FAILED')).to.equal(true)
      expect((err as Error).message).to.contain("'bad' failed in setup()")
    })
  })

  describe('data dir', () => {
    it('two nodes never share a data dir (and so a peer id), whatever the datastore', async () => {
      await kernel().start(resolve(baseConfig()))
      const err = await kernel()
        .start(resolve(baseConfig()))
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(isMeshError(err, 'MESH_ERR_DATA_DIR_LOCKED')).to.equal(true)
      expect((err as MeshError).hint).to.include(`Process ${process.pid}`)
    })

    it('takes over a lock left by a process that is gone', async () => {
      const { mkdir, writeFile, readFile } = await import('node:fs/promises')
      await mkdir(`${dir}/a`, { recursive: true })
      await writeFile(`${dir}/a/node.lock`, '2147483646')
      const node = await kernel().start(resolve(baseConfig()))
      expect(node.state).to.equal('started')
      expect(JSON.parse(await readFile(`${dir}/a/node.lock`, 'utf8')).pid).to.equal(process.pid)
    })
  })

  describe('plugin context', () => {
    it('resolves capabilities, kernel services and the node, and refuses undeclared use', async () => {
      const seen: Record<string, unknown> = {}
      const provider = definePlugin({
        name: 'greeter',
        provides: ['greeting'],
        create: () => ({ setup: () => ({ hello: (n: string) => `hello ${n}` }) }),
      })
      const consumer = definePlugin({
        name: 'consumer',
        dependencies: ['greeting', 'transport'],
        create: () => ({
          setup: (ctx) => {
            try {
              void ctx.libp2p
            } catch (err) {
              seen.earlyLibp2p = (err as MeshError).code
            }
          },
          start: (ctx) => {
            seen.greeting = ctx.use<{ hello(n: string): string }>('greeting').hello('mesh')
            seen.peerId = ctx.peerId.toString()
            seen.libp2pPeer = ctx.libp2p.peerId.toString()
            seen.config = ctx.config.name
            // no container in the plugin API: services come from the context, APIs from use()
            seen.resolve = 'resolve' in ctx
            seen.transports = ctx.useAll('transport').length
            try {
              ctx.use('discovery')
            } catch (err) {
              seen.undeclared = (err as MeshError).code
            }
          },
        }),
      })
      const config = resolve({
        ...baseConfig({ plugins: [consumer(), provider()] }),
        name: 'ctx-test',
      })
      const node = await kernel().start(config)
      expect(seen.greeting).to.equal('hello mesh')
      expect(seen.peerId).to.equal(node.peerId.toString()).and.to.equal(seen.libp2pPeer)
      expect(seen.config).to.equal('ctx-test')
      expect(seen.resolve).to.equal(false)
      expect(seen.earlyLibp2p).to.equal('MESH_ERR_NODE_NOT_CREATED')
      expect(seen.undeclared).to.equal('MESH_ERR_UNDECLARED_DEPENDENCY')
      expect(node.api<{ hello(n: string): string }>('greeting').hello('x')).to.equal('hello x')
    })

    it('optional dependencies: ordered first and used when present, undefined when absent', async () => {
      const seen: unknown[] = []
      const provider = definePlugin({
        name: 'greeter',
        provides: ['greeting'],
        create: () => ({
          setup: () => ({ hello: () => 'hi' }),
          start: () => void seen.push('greeter:start'),
        }),
      })
      const consumer = definePlugin({
        name: 'consumer',
        optionalDependencies: ['greeting'],
        create: () => ({
          start: (ctx) => {
            seen.push(ctx.useOptional<{ hello(): string }>('greeting')?.hello() ?? 'absent')
            try {
              ctx.useOptional('clustering')
            } catch (err) {
              seen.push((err as MeshError).code)
            }
          },
        }),
      })
      // the consumer comes first in the config: the optional dependency still starts before it
      const withProvider = resolve(baseConfig({ plugins: [consumer(), provider()] }))
      const names = withProvider.plugins.map((p) => p.plugin.name)
      expect(names.indexOf('greeter')).to.be.lessThan(names.indexOf('consumer'))
      const node = await kernel().start(withProvider)
      expect(seen).to.deep.equal(['greeter:start', 'hi', 'MESH_ERR_UNDECLARED_DEPENDENCY'])
      await node.stop()

      seen.length = 0
      const alone = resolve(baseConfig({ plugins: [consumer()] }, 'b'))
      await kernel().start(alone)
      expect(seen).to.deep.equal(['absent', 'MESH_ERR_UNDECLARED_DEPENDENCY'])
    })

    it('merges libp2p contributions: services from plugins are on the node', async () => {
      const node = await kernel().start(resolve(baseConfig({ plugins: [ping()] })))
      expect(Object.keys(node.libp2p.services)).to.include.members(['identify', 'ping'])
    })
  })

  describe('custom plugins through the public API', () => {
    it('a fixture transport replaces the built-in tcp slot and two nodes connect through it', async () => {
      const config = (sub: string) =>
        resolve({
          dataDir: `${dir}/${sub}`,
          datastore: 'memory',
          logLevel: 'silent',
          network: { addressScope: 'all' },
          plugins: [identify(), noise(), yamux(), countingTcp()],
        })
      const a = await kernel().start(config('a'))
      const b = await kernel().start(config('b'))
      expect(a.plugins.map((p) => p.plugin.name)).not.to.include('tcp')
      const connection = await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
      expect(connection.remotePeer.equals(a.peerId)).to.equal(true)
      await waitFor(() => a.api<CountingTcpApi>('connection-counter').counts.inbound === 1, {
        what: 'inbound count',
      })
      expect(b.api<CountingTcpApi>('connection-counter').counts.outbound).to.equal(1)
    })
  })

  describe('build, then swap', () => {
    it('builds a second node while the first serves, then swaps with the same peer id', async () => {
      const k = kernel()
      const events: MeshEvent[] = []
      k.events.on('*', (e) => events.push(e))
      const first = await k.start(resolve(baseConfig({ name: 'first' })))
      const firstAddr = first.libp2p.getMultiaddrs()[0]

      const probeKernel = kernel()
      const probe = await probeKernel.start(resolve(baseConfig({}, 'probe')))

      const second = await k.build(resolve(baseConfig({ name: 'second' })))
      // the first node still serves while the second one is built
      expect(first.state).to.equal('started')
      expect(second.state).to.equal('created')
      await probe.libp2p.dial(firstAddr)
      expect(probe.libp2p.getConnections(first.peerId)).to.have.length.greaterThan(0)

      await k.swap(second)
      expect(k.current).to.equal(second)
      expect(second.state).to.equal('started')
      expect(first.state).to.equal('stopped')
      expect(second.peerId.equals(first.peerId)).to.equal(true)
      const secondAddr = second.libp2p.getMultiaddrs()[0]
      expect(secondAddr.toString()).not.to.equal(firstAddr.toString())
      const c = await probe.libp2p.dial(multiaddr(secondAddr.toString()))
      expect(c.remotePeer.equals(first.peerId)).to.equal(true)
      const started = events.filter((e) => e.event === 'node:started')
      expect(started).to.have.length(2, 'the kernel bus carries events of both builds')
    })

    it('a failed build or start keeps the current node running', async () => {
      const k = kernel()
      const current = await k.start(resolve(baseConfig()))
      const log: string[] = []
      const failing = await k
        .reload(resolve(baseConfig({ plugins: [recorder(log, 'boom', { failOn: 'start' })] })))
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(isMeshError(failing, 'MESH_ERR_PLUGIN_HOOK_FAILED')).to.equal(true)
      expect(k.current).to.equal(current)
      expect(current.state).to.equal('started')
      expect(current.libp2p.status).to.equal('started')
    })

    it('swaps onto the same fixed port by stopping the old node first', async () => {
      const k = kernel()
      const port = await freePort()
      const fixed = [`/ip4/127.0.0.1/tcp/${port}`]
      const first = await k.start(resolve({ ...baseConfig(), listen: fixed }))
      const second = await k.reload(resolve({ ...baseConfig({ name: 'second' }), listen: fixed }))
      expect(first.state).to.equal('stopped')
      expect(second.libp2p.getMultiaddrs().map(String)[0]).to.contain(`/tcp/${port}/`)
    })

    it('disposes the child container of a replaced node', async () => {
      const k = kernel()
      const first = await k.start(resolve(baseConfig({ plugins: [ping()] })))
      await k.reload(resolve(baseConfig({ plugins: [ping()] })))
      expect(() => first.api('ping')).to.throw()
    })
  })
})

describe('coalescePerKey', () => {
  it('runs one task per key at a time and merges calls made meanwhile into one follow-up', async () => {
    const runs: string[] = []
    let release: () => void = () => {}
    const run = coalescePerKey(
      async (k: string) => {
        runs.push(k)
        if (runs.length === 1) await new Promise<void>((r) => (release = r))
      },
      (k) => k,
    )
    const first = run('a')
    const second = run('a')
    void run('a')
    await run('b')
    expect(runs).to.deep.equal(['a', 'b'])
    release()
    await Promise.all([first, second])
    expect(runs).to.deep.equal(['a', 'b', 'a'], 'three calls for a while it ran: one follow-up')
    await run('a')
    expect(runs).to.deep.equal(['a', 'b', 'a', 'a'], 'a later call runs again')
  })
})
