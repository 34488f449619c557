/** Two plugins binding one fixed port: a coded error naming both when the config is read, not EADDRINUSE. */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { isMeshError, type MeshConfig, resolveConfig } from 'meshkit'
import {
  builtinPlugins,
  identify,
  natProbeServer,
  noise,
  ping,
  quic,
  stunServer,
  tcp,
  yamux,
} from 'meshkit/plugins'
import { cliTempDirs, hasStackTrace, runCliProcess } from './cli-helpers.js'

const env = { command: 'start', mode: 'test' } as const
const base = () => [identify(), ping(), noise(), yamux(), tcp()]
const errorOf = (config: MeshConfig) => {
  try {
    resolveConfig(config, { env, registry: builtinPlugins })
  } catch (err) {
    return err
  }
  return undefined
}

describe('port clashes between plugins', () => {
  it('stunServer() and natProbeServer() on their defaults: MESH_ERR_PORT_CLASH naming both', () => {
    const err = errorOf({ plugins: [...base(), stunServer(), natProbeServer()] })
    expect(isMeshError(err) && err.code).to.equal('MESH_ERR_PORT_CLASH')
    expect((err as Error).message).to.equal(
      "plugin 'stun-server' (STUN) and plugin 'nat-probe-server' (NAT probe) both bind UDP 3478.",
    )
    expect(errorOf({ plugins: [...base(), stunServer({ port: 3480 }), natProbeServer()] })).to.equal(
      undefined,
    )
  })

  it('a fixed listen port counts; a transport`s own listen counts only without `listen`; port 0 never', () => {
    const listen = errorOf({
      listen: ['/ip4/0.0.0.0/udp/3478/quic-v1'],
      plugins: [...base(), quic(), stunServer()],
    })
    expect((listen as Error).message).to.include('listen /ip4/0.0.0.0/udp/3478/quic-v1')
    const own = errorOf({
      plugins: [...base(), quic({ listen: ['/ip4/0.0.0.0/udp/3478/quic-v1'] }), stunServer()],
    })
    expect((own as Error).message).to.include("plugin 'quic'")
    expect(
      errorOf({
        listen: ['/ip4/0.0.0.0/udp/0/quic-v1'],
        plugins: [...base(), quic(), stunServer({ port: 0 })],
      }),
    ).to.equal(undefined)
  })

  it('two specific hosts do not clash; a wildcard clashes with every host', () => {
    expect(
      errorOf({
        plugins: [
          ...base(),
          stunServer({ host: '127.0.0.1' }),
          natProbeServer({ addresses: ['127.0.0.2'], udpPorts: [3478, 3479] }),
        ],
      }),
    ).to.equal(undefined)
    const err = errorOf({
      plugins: [...base(), stunServer({ host: '127.0.0.1' }), natProbeServer({ udpPorts: [3478, 3479] })],
    })
    expect(isMeshError(err) && err.code).to.equal('MESH_ERR_PORT_CLASH')
  })

  describe('mesh start', () => {
    const tempDirOfTest = cliTempDirs('meshkit-port-clash-')
    it('exits 2 with the coded error and its hint, no stack trace', async () => {
      const dir = tempDirOfTest()
      await writeFile(
        join(dir, 'mesh.config.json'),
        JSON.stringify({
          plugins: ['identify', 'ping', 'noise', 'yamux', 'tcp', 'stun-server', 'nat-probe-server'],
        }),
      )
      const r = await runCliProcess(['start', '--data-dir', 'd'], { cwd: dir, timeoutMs: 30_000 })
      expect(r.code, r.stderr).to.equal(2)
      expect(r.stderr).to.include('MESH_ERR_PORT_CLASH')
      expect(r.stderr).to.include('port 0 takes any free port')
      expect(hasStackTrace(r.stderr), r.stderr).to.equal(false)
    })
  })
})
