/**
 * libp2pModule(): anything libp2p takes that Meshkit does not wrap, merged like a plugin's contribution,
 * with conflicts named at config time (service keys) or as a coded error at build (transports).
 */
import { tcp as libp2pTcp } from '@libp2p/tcp'
import { expect } from 'chai'
import { isMeshError, type MeshPlugin, resolveConfig } from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { builtinPlugins, identify, libp2pModule, noise, ping, tcp, yamux } from 'meshkit/plugins'
import { LoopbackNodes } from './fixtures/loopback-nodes.js'
import { tempDir } from './helpers.js'

const env = { command: 'start', mode: 'test' } as const

/** A tiny libp2p service: it answers `/test/echo/1.0.0` with what it got. */
function echoService() {
  type Registrar = {
    handle(protocol: string, handler: (stream: never) => void): Promise<void>
    unhandle(protocol: string): Promise<void>
  }
  return (components: { registrar: Registrar }) => ({
    started: 0,
    async start() {
      this.started++
      await components.registrar.handle(
        '/test/echo/1.0.0',
        (
          stream: { send(b: Uint8Array): void; close(): Promise<void> } & AsyncIterable<
            Uint8Array | { subarray(): Uint8Array }
          >,
        ) => {
          void (async () => {
            for await (const chunk of stream) {
              stream.send(chunk instanceof Uint8Array ? chunk : chunk.subarray())
              break
            }
            await stream.close()
          })()
        },
      )
    },
    async stop() {
      await components.registrar.unhandle('/test/echo/1.0.0')
    },
  })
}

describe('libp2pModule(): the escape hatch', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  let nodes: LoopbackNodes
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('meshkit-libp2p-module-'))
    nodes = new LoopbackNodes(
      () => dir,
      (): MeshPlugin[] => [identify(), ping(), noise(), yamux()],
    )
  })
  afterEach(async () => {
    await nodes.closeAll()
    await cleanup()
  })

  it('gives the node a service and a transport Meshkit does not wrap; the transport fills the slot', async () => {
    const make = () => libp2pModule({ services: { echo: echoService() as never }, transports: [libp2pTcp()] })
    // no tcp() plugin: libp2pModule's transport is the node's only one
    const a = await nodes.start('a', { plugins: [make()] })
    const b = await nodes.start('b', { plugins: [make()] })
    expect(a.node.plugins.map((p) => p.plugin.name)).not.to.include('tcp')
    expect((a.node.libp2p.services as Record<string, { started: number }>).echo.started).to.equal(1)
    const stream = await b.node.libp2p.dialProtocol(a.node.libp2p.getMultiaddrs()[0], '/test/echo/1.0.0')
    stream.send(new TextEncoder().encode('hello'))
    let answer = ''
    for await (const chunk of stream) {
      answer += new TextDecoder().decode(chunk instanceof Uint8Array ? chunk : chunk.subarray())
      break
    }
    expect(answer).to.equal('hello')
  })

  it('a service key a plugin adds too is refused when the config is read, naming the plugin', () => {
    let err: unknown
    try {
      resolveConfig(
        {
          plugins: [
            identify(),
            ping(),
            noise(),
            yamux(),
            tcp(),
            libp2pModule({ services: { ping: echoService() as never } }),
          ],
        },
        { env, registry: builtinPlugins },
      )
    } catch (e) {
      err = e
    }
    expect(isMeshError(err) && err.code).to.equal('MESH_ERR_CONFIG_INVALID')
    expect((err as Error).message).to.include("its service 'ping' is the one plugin 'ping' adds")
  })

  it('two plugins declaring one service key are refused at config time, naming both', () => {
    const mine = (name: string) => definePlugin({ name, services: ['shared'], create: () => ({}) })
    let err: unknown
    try {
      resolveConfig({ plugins: [noise(), yamux(), tcp(), mine('one')(), mine('two')()] }, { env })
    } catch (e) {
      err = e
    }
    expect(isMeshError(err) && err.code).to.equal('MESH_ERR_SERVICE_CONFLICT')
    expect((err as Error).message).to.include("Plugins 'one' and 'two' both add the libp2p service 'shared'")
  })

  it('a transport a plugin adds too is a coded error when the node is built', async () => {
    let err: unknown
    try {
      await nodes.start('dup', { plugins: [tcp(), libp2pModule({ transports: [libp2pTcp()] })] })
    } catch (e) {
      err = e
    }
    expect(isMeshError(err) && err.code, String(err)).to.equal('MESH_ERR_TRANSPORT_CONFLICT')
  })

  it('rejects what is no component factory, with the path of the bad entry', () => {
    let err: unknown
    try {
      resolveConfig(
        // @ts-expect-error: a transport instance, not a factory, as a JS config could have it
        { plugins: [noise(), yamux(), tcp(), libp2pModule({ transports: ['tcp'] })] },
        { env },
      )
    } catch (e) {
      err = e
    }
    expect((err as Error).message).to.include('plugins[3](libp2p-module).transports[0]')
    expect((err as Error).message).to.include('a libp2p component factory')
  })
})
