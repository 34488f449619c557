/**
 * Malformed configs: each must fail with a coded MeshError whose message names the config path, the
 * bad value, what was expected and how to fix it. In-memory configs go through resolveConfig; file
 * configs through loadConfig on real files; one user error goes through the real `mesh start` CLI.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  type ConfigEnv,
  type ErrorCode,
  isMeshError,
  type LoadConfigOptions,
  loadConfig,
  type MeshError,
  resolveConfig,
  z,
} from 'meshkit'
import { definePlugin } from 'meshkit/plugin'
import { builtinPlugins, defaultConfig, identify, noise, ping, quic, tcp, yamux } from 'meshkit/plugins'
import { type ConfigProject, configProject, REPO_ROOT } from './fixtures/configs/project.js'

const env: ConfigEnv = { command: 'start', mode: 'test' }

/** resolveConfig as the CLI calls it; returns the MeshError it must throw. */
function resolveError(raw: unknown, code: ErrorCode = 'MESH_ERR_CONFIG_INVALID'): MeshError {
  let thrown: unknown
  try {
    resolveConfig(raw, { env, registry: builtinPlugins, defaults: defaultConfig() })
  } catch (err) {
    thrown = err
  }
  return expectMeshError(thrown, code)
}

function expectMeshError(thrown: unknown, code: ErrorCode): MeshError {
  if (!isMeshError(thrown)) expect.fail(`expected a MeshError ${code}, got ${String(thrown)}`)
  expect(thrown.code, thrown.message).to.equal(code)
  expect(thrown.userError, 'config mistakes are user errors').to.equal(true)
  return thrown
}

/**
 * The problem reported at `path` (its "- path: got ...; expected ..." line and its "Fix:" line),
 * checked piece by piece.
 */
function expectProblem(
  err: MeshError,
  path: string,
  parts: { got: string; expected: string; fix: string },
): void {
  const lines = err.message.split('\n')
  const at = lines.findIndex((line) => line.startsWith(`  - ${path}: `))
  expect(at, `no problem at ${path} in:\n${err.message}`).to.be.at.least(0)
  const head = lines[at]
  const fix = lines[at + 1] ?? ''
  expect(head).to.include(`got ${parts.got};`)
  expect(head).to.include(`expected ${parts.expected}`)
  expect(fix.startsWith('    Fix: '), `no Fix line for ${path}:\n${err.message}`).to.equal(true)
  expect(fix).to.include(parts.fix)
}

function expectCount(err: MeshError, count: number): void {
  expect(err.message).to.include(`has ${count} invalid setting${count === 1 ? '' : 's'}:`)
  expect(err.message.split('\n').filter((line) => line.startsWith('  - '))).to.have.length(count)
}

/** A plugin with options, as a user would write one. */
const greeter = definePlugin({
  name: 'greeter',
  options: z.strictObject({
    greeting: z.string().min(1),
    repeat: z.number().int().positive().default(1),
  }),
  create: () => ({}),
})

describe('config validation: in-memory configs', () => {
  it('rejects a string where a number belongs, and says to drop the quotes', () => {
    const err = resolveError({ connections: { maxConnections: '300' } })
    expectCount(err, 1)
    expectProblem(err, 'connections.maxConnections', {
      got: '"300" (string)',
      expected: 'a number',
      fix: 'write the number without quotes: 300',
    })
  })

  it('rejects a number where a string belongs', () => {
    const err = resolveError({ name: 42 })
    expectProblem(err, 'name', { got: '42 (number)', expected: 'a string', fix: "e.g. 'alice'" })
  })

  it('rejects an object where an array belongs', () => {
    const err = resolveError({ listen: { tcp: 4001 } })
    expectProblem(err, 'listen', {
      got: '{"tcp":4001} (object)',
      expected: 'an array',
      fix: "a list of multiaddrs, e.g. ['/ip4/0.0.0.0/tcp/4001']",
    })
  })

  it('rejects an array where an object belongs', () => {
    const err = resolveError({ connections: [300] })
    expectProblem(err, 'connections', {
      got: 'an array of 1',
      expected: 'an object',
      fix: 'maxConnections: 300',
    })
  })

  it("rejects an unknown top-level key with did you mean: 'lisen'", () => {
    const err = resolveError({ lisen: ['/ip4/127.0.0.1/tcp/0'] })
    expectProblem(err, 'lisen', {
      got: 'an array of 1',
      expected: 'no such key (known keys: name, dataDir, listen,',
      fix: "did you mean 'listen'?",
    })
  })

  it('rejects an unknown key that is no near miss, and says to remove it', () => {
    const err = resolveError({ color: 'blue' })
    expectProblem(err, 'color', { got: '"blue" (string)', expected: 'no such key', fix: 'remove it' })
  })

  it('rejects an unknown nested key with did you mean', () => {
    const err = resolveError({ connections: { dialTimout: '5s' } })
    expectProblem(err, 'connections.dialTimout', {
      got: '"5s" (string)',
      expected:
        'no such key (known keys: maxConnections, dialTimeout, allow, inboundConnectionThreshold, maxIncomingPendingConnections, maxIncomingPendingPerHost)',
      fix: "did you mean 'dialTimeout'?",
    })
  })

  it("rejects an unknown plugin name in a JSON-style reference: 'tcpp'", () => {
    const err = resolveError({ plugins: ['noise', 'yamux', 'tcpp'] })
    expectProblem(err, 'plugins[2]', {
      got: '"tcpp" (string)',
      expected: `the name of a registered plugin (${[...builtinPlugins.keys()].join(', ')})`,
      fix: "did you mean 'tcp'?",
    })
  })

  it('rejects an unknown plugin in { plugin, options } form, and an unknown key next to it', () => {
    const err = resolveError({ plugins: [{ plugin: 'quik', option: {} }] })
    expectCount(err, 2)
    expectProblem(err, 'plugins[0]', {
      got: '"quik" (string)',
      expected: 'the name of a registered plugin',
      fix: "'quic'",
    })
    expectProblem(err, 'plugins[0].option', {
      got: '{} (object)',
      expected: 'no such key (known keys: plugin, options)',
      fix: 'remove it',
    })
  })

  it('rejects a plugin factory that was not called: "write tcp() instead"', () => {
    const err = resolveError({ plugins: [noise(), yamux(), tcp] })
    expectProblem(err, 'plugins[2]', {
      got: 'the plugin factory tcp, not called',
      expected: 'a plugin object',
      fix: 'write tcp() instead of tcp',
    })
  })

  it('rejects a plugins entry that is no plugin at all', () => {
    const err = resolveError({ plugins: [quic(), 42] })
    expectProblem(err, 'plugins[1]', {
      got: '42 (number)',
      expected: "a plugin (e.g. tcp()), a registered plugin name, or { plugin: 'name', options: {...} }",
      fix: 'definePlugin factory',
    })
  })

  it('rejects two plugins with the same name (MESH_ERR_DUPLICATE_PLUGIN)', () => {
    const err = resolveError({
      plugins: [noise(), yamux(), tcp(), quic(), tcp({ listen: ['/ip4/0.0.0.0/tcp/1'] })],
    })
    expectCount(err, 1)
    expectProblem(err, 'plugins[4]', {
      got: '"tcp" (string)',
      expected: 'a plugin name not used before',
      fix: "Two plugins are named 'tcp' (plugins[2] and plugins[4])",
    })
    expect(err.message).to.include('MESH_ERR_DUPLICATE_PLUGIN')
    const duplicate = err.errors.find((e) => isMeshError(e, 'MESH_ERR_DUPLICATE_PLUGIN')) as MeshError
    expect(duplicate, 'the duplicate error is kept on err.errors').to.not.equal(undefined)
    expect(duplicate.hint).to.include('remove one of them')
  })

  it('rejects a bad multiaddr in listen', () => {
    const err = resolveError({ listen: ['/ip4/127.0.0.1/tcp/0', 'localhost:4001'] })
    expectProblem(err, 'listen[1]', {
      got: '"localhost:4001" (string)',
      expected: 'a multiaddr string (String multiaddr must start with "/")',
      fix: "write e.g. '/ip4/0.0.0.0/tcp/4001'",
    })
  })

  it('rejects a bad multiaddr in dial (port is no number)', () => {
    const err = resolveError({ dial: ['/ip4/10.0.0.1/tcp/http'] })
    expectProblem(err, 'dial[0]', {
      got: '"/ip4/10.0.0.1/tcp/http" (string)',
      expected: 'a multiaddr string (',
      fix: "write e.g. '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...'",
    })
  })

  it('rejects a bad multiaddr in announce (invalid IPv4)', () => {
    const err = resolveError({ announce: ['/ip4/300.1.2.3/tcp/4001'] })
    expectProblem(err, 'announce[0]', {
      got: '"/ip4/300.1.2.3/tcp/4001" (string)',
      expected: 'a multiaddr string (Invalid IPv4 address',
      fix: "write e.g. '/ip4/203.0.113.7/tcp/4001'",
    })
  })

  it('rejects an empty multiaddr ("/"), which parses but names no protocol', () => {
    const err = resolveError({ listen: ['/'] })
    expectProblem(err, 'listen[0]', {
      got: '"/" (string)',
      expected: 'a multiaddr string (it has no protocols',
      fix: "write e.g. '/ip4/0.0.0.0/tcp/4001'",
    })
  })

  it('rejects a negative timeout', () => {
    const err = resolveError({ connections: { dialTimeout: -1 } })
    expectProblem(err, 'connections.dialTimeout', {
      got: '-1 (number)',
      expected: 'a duration >= 0: milliseconds as a number, or a string like 500ms, 5s, 2m, 1h',
      fix: "write e.g. '10s'",
    })
  })

  it("rejects a malformed duration and names the one meant: '5 minutes' -> '5m'", () => {
    const err = resolveError({ shutdownTimeout: '5 minutes' })
    expectProblem(err, 'shutdownTimeout', {
      got: '"5 minutes" (string)',
      expected: 'a duration >= 0',
      fix: "write '5m'",
    })
  })

  it('rejects a duration longer than a Node timer can wait', () => {
    const err = resolveError({ shutdownTimeout: '1000h' })
    expectProblem(err, 'shutdownTimeout', {
      got: '"1000h" (string)',
      expected: 'a duration of at most 2147483647 ms',
      fix: 'write a shorter duration',
    })
  })

  it('rejects an invalid enum value (logLevel)', () => {
    const err = resolveError({ logLevel: 'verbose' })
    expectProblem(err, 'logLevel', {
      got: '"verbose" (string)',
      expected: 'one of "silent", "error", "warn", "info", "debug", "trace"',
      fix: 'one of silent, error, warn, info, debug, trace',
    })
  })

  it('rejects plugin options that fail the plugin schema: quic({ maxIdleTimeout: -1 })', () => {
    const err = resolveError({ plugins: [identify(), quic({ maxIdleTimeout: -1 })] })
    expectCount(err, 1)
    expectProblem(err, 'plugins[1](quic).maxIdleTimeout', {
      got: '-1 (number)',
      expected: 'a number > 0',
      fix: 'remove it to use the default (4000)',
    })
  })

  it("rejects plugin options that fail the plugin schema: tcp({ listen: ['nope'] })", () => {
    const err = resolveError({ plugins: [noise(), yamux(), tcp({ listen: ['nope'] })] })
    expectProblem(err, 'plugins[2](tcp).listen[0]', {
      got: '"nope" (string)',
      expected: 'a multiaddr string',
      fix: "write e.g. '/ip4/0.0.0.0/tcp/4001'",
    })
  })

  it('rejects a non-numeric string for a numeric plugin option without claiming it is quoted', () => {
    const err = resolveError({ plugins: [quic({ keepAliveInterval: 'often' as unknown as number })] })
    expectProblem(err, 'plugins[0](quic).keepAliveInterval', {
      got: '"often" (string)',
      expected: 'a number',
      fix: 'change it to a number, or remove it to use the default (1000)',
    })
    expect(err.message).to.not.include('without quotes')
  })

  it('rejects an unknown key in plugin options, with did you mean', () => {
    const err = resolveError({ plugins: [quic({ keepAliveIntervl: 1000 } as never)] })
    expectProblem(err, 'plugins[0](quic).keepAliveIntervl', {
      got: '1000 (number)',
      expected: 'no such key (known keys: listen, maxIdleTimeout, keepAliveInterval)',
      fix: "did you mean 'keepAliveInterval'?",
    })
  })

  it('checks a custom plugin: missing required option, whole-number option, no core hints leaking in', () => {
    const err = resolveError({ plugins: [quic(), greeter({ repeat: 1.5 } as never)] })
    expectCount(err, 2)
    expectProblem(err, 'plugins[1](greeter).greeting', {
      got: 'nothing (undefined)',
      expected: 'a string',
      fix: 'add it: it is required',
    })
    expectProblem(err, 'plugins[1](greeter).repeat', {
      got: '1.5 (number)',
      expected: 'a whole number',
      fix: 'change it to a whole number, or remove it to use the default (1)',
    })
  })

  it('rejects a plugin whose required options are missing altogether', () => {
    const err = resolveError({ plugins: [quic(), (greeter as unknown as () => unknown)()] })
    expectProblem(err, 'plugins[1](greeter)', {
      got: 'nothing (undefined)',
      expected: 'an object',
      fix: 'pass the plugin its options as an object',
    })
  })

  it("reports a missing dependency: tcp without noise -> 'connection-encrypter'", () => {
    const err = resolveError({ plugins: [tcp(), yamux()] }, 'MESH_ERR_MISSING_DEPENDENCY')
    expect(err.message).to.include("Plugin 'tcp' depends on 'connection-encrypter'")
    expect(err.message).to.include('no plugin in the config provides it')
    expect(err.hint).to.include("provides 'connection-encrypter'")
    expect(err.hint).to.include('registered: noise')
  })

  it('reports every missing dependency at once: tcp alone misses the encrypter and the muxer', () => {
    const err = resolveError({ plugins: [tcp()] }, 'MESH_ERR_MISSING_DEPENDENCY')
    expect(err.message).to.include("Plugin 'tcp' depends on 'connection-encrypter'")
    expect(err.message).to.include("Plugin 'tcp' depends on 'stream-muxer'")
    expect(err.hint).to.include('registered: noise').and.to.include('registered: yamux')
  })

  it('reports a dependency cycle between two custom plugins', () => {
    const chicken = definePlugin({ name: 'chicken', dependencies: ['egg'], create: () => ({}) })
    const egg = definePlugin({ name: 'egg', dependencies: ['chicken'], create: () => ({}) })
    const err = resolveError({ plugins: [quic(), chicken(), egg()] }, 'MESH_ERR_DEPENDENCY_CYCLE')
    expect(err.message).to.match(/cycle: (chicken -> egg -> chicken|egg -> chicken -> egg)\./)
    expect(err.hint).to.include('Break the cycle')
  })

  it("reports two plugins providing the exclusive slot 'discovery'", () => {
    const mdns = definePlugin({ name: 'my-mdns', provides: ['discovery'], create: () => ({}) })
    const dht = definePlugin({ name: 'my-dht', provides: ['discovery'], create: () => ({}) })
    const err = resolveError({ plugins: [quic(), mdns(), dht()] }, 'MESH_ERR_SLOT_CONFLICT')
    expect(err.message).to.include("Plugins 'my-mdns' and 'my-dht' both provide 'discovery'")
    expect(err.message).to.include("only one 'discovery' plugin")
    expect(err.hint).to.include("Keep one 'discovery' plugin")
  })

  it('reports a config with no transport at all', () => {
    const err = resolveError({ plugins: [identify(), ping(), noise(), yamux()] }, 'MESH_ERR_NO_TRANSPORT')
    expect(err.message).to.include('no transport plugin')
    expect(err.hint).to.include("A node needs at least one 'transport' plugin")
    expect(err.hint).to.include('registered: tcp, quic')
  })

  it('rejects a config that is not an object', () => {
    for (const [raw, got] of [
      [7, '7 (number)'],
      [['tcp'], 'an array of 1'],
      [null, 'null'],
      ['tcp', '"tcp" (string)'],
    ] as const) {
      const err = resolveError(raw, 'MESH_ERR_CONFIG_NOT_OBJECT')
      expect(err.message).to.include(`but it exported ${got}.`)
      expect(err.hint).to.include('defineConfig')
    }
  })

  it('reports every problem of one config at once, core and plugins together', () => {
    const err = resolveError({
      lisen: [],
      logLevel: 'loud',
      connections: { maxConnections: 0, dialTimeout: 'soon' },
      dial: ['nope'],
      plugins: ['tcpp', quic({ maxIdleTimeout: 0 }), tcp],
    })
    expectCount(err, 8)
    expectProblem(err, 'lisen', {
      got: 'an array of 0',
      expected: 'no such key',
      fix: "did you mean 'listen'?",
    })
    expectProblem(err, 'logLevel', { got: '"loud" (string)', expected: 'one of', fix: 'one of silent' })
    expectProblem(err, 'connections.maxConnections', {
      got: '0 (number)',
      expected: 'a number > 0',
      fix: 'a whole number above 0',
    })
    expectProblem(err, 'connections.dialTimeout', {
      got: '"soon" (string)',
      expected: 'a duration >= 0',
      fix: "write e.g. '10s'",
    })
    expectProblem(err, 'dial[0]', {
      got: '"nope" (string)',
      expected: 'a multiaddr string',
      fix: 'write e.g.',
    })
    expectProblem(err, 'plugins[0]', {
      got: '"tcpp" (string)',
      expected: 'the name of a registered plugin',
      fix: "'tcp'",
    })
    expectProblem(err, 'plugins[1](quic).maxIdleTimeout', {
      got: '0 (number)',
      expected: 'a number > 0',
      fix: 'default (4000)',
    })
    expectProblem(err, 'plugins[2]', {
      got: 'the plugin factory tcp, not called',
      expected: 'a plugin object',
      fix: 'write tcp() instead',
    })
  })
})

describe('config validation: defaults are a checked layer of the config', () => {
  it('parses durations given as defaults and merges connections key by key', () => {
    const config = resolveConfig(
      { connections: { maxConnections: 50 } },
      {
        env,
        registry: builtinPlugins,
        defaults: { ...defaultConfig(), shutdownTimeout: '10s', connections: { dialTimeout: '2s' } },
      },
    )
    expect(config.shutdownTimeout).to.equal(10_000)
    expect(config.connections).to.deep.include({
      maxConnections: 50,
      dialTimeout: 2000,
      inboundConnectionThreshold: 5,
    })
  })

  it('rejects a bad value given as a default (e.g. startMesh({ config }) with a typo)', () => {
    let thrown: unknown
    try {
      resolveConfig(
        {},
        { env, registry: builtinPlugins, defaults: { ...defaultConfig(), lisen: [] } as never },
      )
    } catch (err) {
      thrown = err
    }
    const err = expectMeshError(thrown, 'MESH_ERR_CONFIG_INVALID')
    expectProblem(err, 'lisen', {
      got: 'an array of 0',
      expected: 'no such key',
      fix: "did you mean 'listen'?",
    })
  })
})

describe('config validation: config files', () => {
  let project: ConfigProject

  beforeEach(async () => {
    project = await configProject()
  })

  afterEach(async () => {
    await project.cleanup()
  })

  async function loadError(
    files: Record<string, string>,
    code: ErrorCode,
    options: Partial<LoadConfigOptions> = {},
  ) {
    await project.write(files)
    let thrown: unknown
    try {
      await loadConfig({
        cwd: project.dir,
        env,
        registry: builtinPlugins,
        defaults: defaultConfig(),
        ...options,
      })
    } catch (err) {
      thrown = err
    }
    const err = expectMeshError(thrown, code)
    expect(await project.leftovers(), 'temp bundles left behind').to.deep.equal([])
    return err
  }

  it('rejects a number exported from mesh.config.ts', async () => {
    const err = await loadError(
      { 'mesh.config.ts': 'const port: number = 4001\nexport default port\n' },
      'MESH_ERR_CONFIG_NOT_OBJECT',
    )
    expect(err.message).to.equal(
      'mesh.config.ts must export a config object (or a function returning one), but it exported 4001 (number).',
    )
    expect(err.hint).to.include('export default defineConfig')
  })

  it('rejects an array exported from mesh.config.mjs', async () => {
    const err = await loadError(
      { 'mesh.config.mjs': "export default [{ name: 'a' }, { name: 'b' }]\n" },
      'MESH_ERR_CONFIG_NOT_OBJECT',
    )
    expect(err.message).to.include('mesh.config.mjs must export a config object')
    expect(err.message).to.include('but it exported an array of 2.')
  })

  it('rejects null in mesh.config.json instead of silently running the defaults', async () => {
    const err = await loadError({ 'mesh.config.json': 'null\n' }, 'MESH_ERR_CONFIG_NOT_OBJECT')
    expect(err.message).to.include('mesh.config.json must export a config object')
    expect(err.message).to.include('but it exported null.')
    expect(err.hint).to.include('top level of the file an object')
  })

  it('rejects a config function that returns a non-object', async () => {
    const err = await loadError(
      { 'mesh.config.ts': "import { defineConfig } from 'meshkit'\nexport default () => 'tcp'\n" },
      'MESH_ERR_CONFIG_NOT_OBJECT',
    )
    expect(err.message).to.include('but it exported "tcp" (string).')
  })

  it('rejects a config module without a default export, naming what it does export', async () => {
    const err = await loadError(
      {
        'mesh.config.ts': "import { defineConfig } from 'meshkit'\nexport const config = defineConfig({})\n",
      },
      'MESH_ERR_CONFIG_NOT_OBJECT',
    )
    expect(err.message).to.include(
      'but it exported nothing: it has no default export (only named exports: config).',
    )
  })

  it('reports a syntax error in mesh.config.ts with the file name and line:col', async () => {
    const err = await loadError(
      {
        'mesh.config.ts': [
          "import { defineConfig } from 'meshkit'",
          '',
          'export default defineConfig({',
          "  name: 'broken'",
          "  listen: ['/ip4/127.0.0.1/tcp/0'],",
          '})',
          '',
        ].join('\n'),
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('Could not load mesh.config.ts:')
    expect(err.message).to.include('Expected "}" but found "listen"')
    expect(err.message).to.include('(at mesh.config.ts:5:3)')
    expect(err.message).to.include("    listen: ['/ip4/127.0.0.1/tcp/0'],\n      ^")
    expect(err.hint).to.include('Fix the error at the location shown')
  })

  it('reports a syntax error on line 1 at the column the user sees (no injected code in the excerpt)', async () => {
    const err = await loadError(
      { 'mesh.config.ts': 'export default { name: "x",, }\n' },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('(at mesh.config.ts:1:28)')
    expect(err.message).to.include('    export default { name: "x",, }\n')
    expect(err.message).to.not.include('__meshkit')
  })

  it('reports an import of a local file that does not exist, at the import', async () => {
    const err = await loadError(
      {
        'mesh.config.ts':
          "import { relay } from './plugins/relay.ts'\nexport default { plugins: [relay()] }\n",
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('Could not resolve "./plugins/relay.ts" (at mesh.config.ts:1:23)')
  })

  it('reports a config module that throws at import, with where it threw', async () => {
    const throwing = "if (Number.isNaN(port)) throw new Error('PORT must be a number')"
    const err = await loadError(
      {
        'mesh.config.ts': [
          "import { defineConfig } from 'meshkit'",
          "const port = Number('not-a-port')",
          throwing,
          'export default defineConfig({})',
          '',
        ].join('\n'),
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    const column = throwing.indexOf('new Error') + 1
    expect(err.message).to.equal(
      `Could not load mesh.config.ts: PORT must be a number (thrown at mesh.config.ts:3:${column})`,
    )
    expect(err.message, 'the temp bundle is never named').to.not.include('timestamp')
  })

  it('reports a throw inside a file the config imports, at that file', async () => {
    const err = await loadError(
      {
        'mesh.config.ts': "import { secret } from './lib/secrets.ts'\nexport default { name: secret() }\n",
        'lib/secrets.ts':
          "export function secret(): string {\n  throw new Error('MESH_SECRET is not set')\n}\nsecret()\n",
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('Could not load mesh.config.ts: MESH_SECRET is not set')
    expect(err.message).to.include('(thrown at lib/secrets.ts:2:9)')
  })

  it('reports an import of a package that is not installed, with an install hint', async () => {
    const err = await loadError(
      {
        'mesh.config.ts':
          "import { relay } from 'meshkit-plugin-nonexistent'\nexport default { plugins: [relay()] }\n",
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include("Cannot find package 'meshkit-plugin-nonexistent'")
    expect(err.message).to.include(`imported from ${project.path('mesh.config.ts')}`)
    expect(err.message).to.not.include('timestamp')
    expect(err.hint).to.include('npm install meshkit-plugin-nonexistent')
  })

  it('reports a config function that throws', async () => {
    const err = await loadError(
      {
        'mesh.config.ts': [
          "import { defineConfig } from 'meshkit'",
          'export default defineConfig(({ mode }) => {',
          "  if (mode !== 'production') throw new Error('no settings for mode ' + mode)",
          '  return {}',
          '})',
          '',
        ].join('\n'),
      },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include(
      'Could not load mesh.config.ts: its config function threw: no settings for mode test',
    )
    expect(err.message).to.include('(thrown at mesh.config.ts:3:')
  })

  it('reports an exported promise that rejects, instead of crashing on an unhandled rejection', async () => {
    const err = await loadError(
      { 'mesh.config.ts': "export default (async () => {\n  throw new Error('vault unreachable')\n})()\n" },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('the promise it exports rejected: vault unreachable')
  })

  it('rejects a bad value in mesh.config.json, naming the file', async () => {
    const err = await loadError(
      {
        'mesh.config.json': JSON.stringify({
          name: 'json-node',
          connections: { dialTimeout: 'ten seconds' },
        }),
      },
      'MESH_ERR_CONFIG_INVALID',
    )
    expect(err.message.split('\n')[0]).to.equal('mesh.config.json has 1 invalid setting:')
    expectProblem(err, 'connections.dialTimeout', {
      got: '"ten seconds" (string)',
      expected: 'a duration >= 0',
      fix: "write e.g. '10s'",
    })
  })

  it('reports a JSON syntax error with line:col', async () => {
    const err = await loadError(
      { '.meshrc.json': '{\n  "name": "x",\n  "listen": [\'/ip4/127.0.0.1/tcp/0\']\n}\n' },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(err.message).to.include('Could not load .meshrc.json: invalid JSON:')
    expect(err.message).to.include("Unexpected token '''")
    expect(err.hint).to.include('only double quotes')
    const missingComma = await loadError(
      { '.meshrc.json': '{\n  "name": "x"\n  "logLevel": "info"\n}\n' },
      'MESH_ERR_CONFIG_LOAD',
    )
    expect(missingComma.message).to.include('(at .meshrc.json:3:3)')
  })

  it('rejects bad values in .meshrc.yaml, core and plugin options', async () => {
    const err = await loadError(
      {
        '.meshrc.yaml': [
          'name: yaml-node',
          'logLevel: loud',
          'plugins:',
          '  - noise',
          '  - yamux',
          '  - tcp',
          '  - plugin: quic',
          '    options:',
          '      maxIdleTimeout: -5',
          '',
        ].join('\n'),
      },
      'MESH_ERR_CONFIG_INVALID',
    )
    expect(err.message.split('\n')[0]).to.equal('.meshrc.yaml has 2 invalid settings:')
    expectProblem(err, 'logLevel', {
      got: '"loud" (string)',
      expected: 'one of "silent"',
      fix: 'one of silent',
    })
    expectProblem(err, 'plugins[3](quic).maxIdleTimeout', {
      got: '-5 (number)',
      expected: 'a number > 0',
      fix: 'default (4000)',
    })
  })

  it('reports a YAML syntax error, naming the file', async () => {
    const err = await loadError({ '.meshrc.yaml': 'name: a\nlisten: [\n' }, 'MESH_ERR_CONFIG_LOAD')
    expect(err.message).to.match(/^Could not load \.meshrc\.yaml: invalid YAML: /)
    expect(err.message).to.not.include(project.dir)
  })

  it('rejects a bad value given through package.json#mesh', async () => {
    const err = await loadError(
      { 'package.json': JSON.stringify({ name: 'app', mesh: { datastore: 'disk' } }) },
      'MESH_ERR_CONFIG_INVALID',
    )
    expect(err.message.split('\n')[0]).to.equal('package.json has 1 invalid setting:')
    expectProblem(err, 'datastore', {
      got: '"disk" (string)',
      expected: 'one of "persistent", "memory"',
      fix: "'persistent' (kept in <dataDir>/datastore) or 'memory'",
    })
  })

  it('reports a --config file that does not exist', async () => {
    const err = await loadError({}, 'MESH_ERR_CONFIG_NOT_FOUND', { configFile: 'configs/missing.ts' })
    expect(err.message).to.equal(`Config file ${project.path('configs/missing.ts')} does not exist.`)
    expect(err.hint).to.include('--config')
  })
})

describe('config validation: the mesh CLI on a user error', () => {
  const main = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js')
  const children = new Set<ChildProcess>()
  let project: ConfigProject

  beforeEach(async () => {
    project = await configProject()
  })

  afterEach(async () => {
    await project.cleanup()
  })

  after(() => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })

  /** Runs `mesh start` in the project; kills it (and fails) if it does not exit within 30 s. */
  function meshStart(): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [main, 'start'], {
      cwd: project.dir,
      env: { ...process.env, DEBUG: undefined, NODE_OPTIONS: undefined },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (chunk) => {
      stdout += chunk
    })
    child.stderr!.on('data', (chunk) => {
      stderr += chunk
    })
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`mesh start did not exit within 30 s; stderr:\n${stderr}`))
      }, 30_000)
      child.once('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      child.once('close', (code) => {
        clearTimeout(timer)
        children.delete(child)
        resolve({ code, stdout, stderr })
      })
    })
  }

  it('exits 2 with the MESH_ERR code and the fix, and no stack trace, for an unknown key', async () => {
    await project.write({ 'mesh.config.json': '{"lisen": []}\n' })
    const { code, stdout, stderr } = await meshStart()
    expect(code, stderr).to.equal(2)
    expect(stderr).to.include('MESH_ERR_CONFIG_INVALID')
    expect(stderr).to.include('mesh.config.json has 1 invalid setting')
    expect(stderr).to.include("did you mean 'listen'?")
    expect(stderr).to.not.match(/^\s+at /m)
    expect(stdout).to.not.include('started')
  })

  it('exits 2 with MESH_ERR_CONFIG_LOAD, file and line:col, and no stack trace, for a syntax error', async () => {
    await project.write({ 'mesh.config.ts': "export default {\n  name: 'x'\n  logLevel: 'info',\n}\n" })
    const { code, stderr } = await meshStart()
    expect(code, stderr).to.equal(2)
    expect(stderr).to.include('MESH_ERR_CONFIG_LOAD')
    expect(stderr).to.include('(at mesh.config.ts:3:3)')
    expect(stderr).to.not.match(/^\s+at /m)
    expect(await project.leftovers()).to.deep.equal([])
  })
})
