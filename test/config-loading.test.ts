/**
 * Finding and loading configs: every cosmiconfig search place, the --config override, TypeScript
 * configs that import local TypeScript files (loaded fresh each time, with their dependencies listed),
 * config functions, and that no bundle ever touches the disk (a hostile watcher, a read-only directory,
 * a SIGKILL while the config runs).
 */
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { watch } from 'node:fs'
import { mkdir, readdir, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { expect } from 'chai'
import { type ConfigEnv, isMeshError, type LoadConfigOptions, type LoadedConfig, loadConfig } from 'meshkit'
import { builtinPlugins, defaultConfig } from 'meshkit/plugins'
import { type ConfigProject, configProject, REPO_ROOT } from './fixtures/configs/project.js'
import { othersCanReach } from './helpers.js'

/** Every file under `dir` except node_modules, relative and sorted. */
async function projectFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true })
  return entries.filter((e) => !e.startsWith('node_modules')).sort()
}

const env: ConfigEnv = { command: 'start', mode: 'production' }

/** A local plugin as a user writes it: definePlugin and zod, both from 'meshkit/plugin'. */
function myPluginSource(greeting: string): string {
  return [
    "import { definePlugin, z } from 'meshkit/plugin'",
    '',
    'export interface GreeterApi {',
    '  greeting: string',
    '}',
    '',
    `export const DEFAULT_GREETING: string = ${JSON.stringify(greeting)}`,
    '',
    '/** Where this file is, as the plugin sees it (import.meta.url / __dirname of this file). */',
    'export const pluginUrl: string = import.meta.url',
    'export const pluginDir: string = __dirname',
    '',
    'export const myPlugin = definePlugin({',
    "  name: 'my-plugin',",
    "  provides: ['greeter'],",
    '  options: z',
    '    .strictObject({',
    '      greeting: z.string().default(DEFAULT_GREETING),',
    '      times: z.number().int().positive().default(1),',
    '    })',
    '    .default({ greeting: DEFAULT_GREETING, times: 1 }),',
    '  create: (opts): { setup: () => GreeterApi } => ({ setup: () => ({ greeting: opts.greeting }) }),',
    '})',
    '',
  ].join('\n')
}

function tsConfigSource(name: string): string {
  return [
    "import { defineConfig } from 'meshkit'",
    "import { noise, quic, tcp, yamux } from 'meshkit/plugins'",
    "import { DEFAULT_GREETING, myPlugin } from './plugins/my-plugin.ts'",
    '',
    'export default defineConfig({',
    `  name: ${JSON.stringify(name)} + '/' + DEFAULT_GREETING,`,
    "  dataDir: 'state',",
    '  plugins: [noise(), yamux(), tcp(), quic(), myPlugin({ times: 2 })],',
    '})',
    '',
  ].join('\n')
}

describe('config loading', () => {
  let project: ConfigProject

  beforeEach(async () => {
    project = await configProject()
  })

  afterEach(async () => {
    await project.cleanup()
  })

  function load(options: Partial<LoadConfigOptions> = {}): Promise<LoadedConfig> {
    return loadConfig({
      cwd: project.dir,
      env,
      registry: builtinPlugins,
      defaults: defaultConfig(),
      ...options,
    })
  }

  describe('discovery of each config form', () => {
    const forms: Array<{ file: string; content: string; name: string }> = [
      {
        file: 'mesh.config.ts',
        content:
          "import { defineConfig } from 'meshkit'\nconst name: string = 'from-ts'\nexport default defineConfig({ name })\n",
        name: 'from-ts',
      },
      {
        file: 'mesh.config.mts',
        content:
          "import { defineConfig, type MeshConfig } from 'meshkit'\nconst config: MeshConfig = { name: 'from-mts' }\nexport default defineConfig(config)\n",
        name: 'from-mts',
      },
      {
        file: 'mesh.config.js',
        content: "import { defineConfig } from 'meshkit'\nexport default defineConfig({ name: 'from-js' })\n",
        name: 'from-js',
      },
      {
        file: 'mesh.config.mjs',
        content: "export default { name: 'from-mjs' }\n",
        name: 'from-mjs',
      },
      {
        file: 'mesh.config.cjs',
        content:
          "const { defineConfig } = require('meshkit')\nmodule.exports = defineConfig({ name: 'from-cjs' })\n",
        name: 'from-cjs',
      },
      { file: 'mesh.config.json', content: '{ "name": "from-json" }\n', name: 'from-json' },
      { file: '.meshrc', content: '# YAML without an extension\nname: from-rc\n', name: 'from-rc' },
      { file: '.meshrc.json', content: '{ "name": "from-rc-json" }\n', name: 'from-rc-json' },
      { file: '.meshrc.yaml', content: 'name: from-rc-yaml\n', name: 'from-rc-yaml' },
      { file: '.meshrc.yml', content: 'name: from-rc-yml\n', name: 'from-rc-yml' },
      {
        file: 'package.json',
        content: `${JSON.stringify({ name: 'some-app', private: true, mesh: { name: 'from-package' } })}\n`,
        name: 'from-package',
      },
    ]

    for (const form of forms) {
      it(`finds ${form.file}${form.file === 'package.json' ? '#mesh' : ''}`, async () => {
        await project.write({ [form.file]: form.content })
        const loaded = await load()
        const file = project.path(form.file)
        expect(loaded.file).to.equal(file)
        expect(loaded.config.name).to.equal(form.name)
        expect(loaded.config.configFile).to.equal(file)
        expect(loaded.config.root).to.equal(project.dir)
        expect(loaded.config.dataDir).to.equal(project.path('.mesh'))
        expect(loaded.dependencies).to.deep.equal([file])
        // unset fields come from the defaults
        expect(loaded.config.plugins.map((p) => p.plugin.name)).to.have.members([
          'identify',
          'ping',
          'noise',
          'yamux',
          'tcp',
          'quic',
          'kad-topics',
        ])
        expect(await project.leftovers()).to.deep.equal([])
      })
    }

    it('takes the first search place when several exist (mesh.config.ts before .meshrc.json)', async () => {
      await project.write({
        '.meshrc.json': '{ "name": "rc" }',
        'mesh.config.ts': "export default { name: 'ts' }\n",
        'package.json': JSON.stringify({ name: 'app', mesh: { name: 'pkg' } }),
      })
      const loaded = await load()
      expect(loaded.file).to.equal(project.path('mesh.config.ts'))
      expect(loaded.config.name).to.equal('ts')
    })

    it('runs the defaults when there is no config (and a package.json without "mesh" is none)', async () => {
      await project.write({ 'package.json': JSON.stringify({ name: 'app' }) })
      const loaded = await load()
      expect(loaded.file).to.equal(undefined)
      expect(loaded.config.configFile).to.equal(undefined)
      expect(loaded.dependencies).to.deep.equal([])
      expect(loaded.config.name).to.equal('mesh')
      expect(loaded.config.root).to.equal(project.dir)
      expect(loaded.config.plugins).to.have.length(7)
    })

    it('loads the configFile override instead of searching, relative to cwd', async () => {
      await project.write({
        'mesh.config.json': '{ "name": "searched" }',
        'configs/staging.ts':
          "import { defineConfig } from 'meshkit'\nexport default defineConfig({ name: 'staging', dataDir: 'data' })\n",
      })
      const loaded = await load({ configFile: 'configs/staging.ts' })
      expect(loaded.file).to.equal(project.path('configs/staging.ts'))
      expect(loaded.config.name).to.equal('staging')
      // relative paths in a config are relative to the config file
      expect(loaded.config.root).to.equal(project.path('configs'))
      expect(loaded.config.dataDir).to.equal(project.path('configs/data'))
    })

    it('loads a configFile override with a name and format outside the search places', async () => {
      await project.write({ 'deploy/node-a.yaml': 'name: node-a\nplugins: [noise, yamux, tcp]\n' })
      const loaded = await load({ configFile: project.path('deploy/node-a.yaml') })
      expect(loaded.config.name).to.equal('node-a')
      expect(loaded.config.plugins.map((p) => p.plugin.name)).to.deep.equal(['noise', 'yamux', 'tcp'])
    })

    it('lets overrides (CLI flags) win over the file', async () => {
      await project.write({ 'mesh.config.json': '{ "name": "file", "dataDir": "from-file" }' })
      const loaded = await load({ overrides: { dataDir: '/tmp/from-flag', listen: undefined } })
      expect(loaded.config.name).to.equal('file')
      expect(loaded.config.dataDir).to.equal('/tmp/from-flag')
    })
  })

  describe('a config given as a value (startMesh({ config }))', () => {
    it('takes the same route as a file: no search, function called with the env, overrides win', async () => {
      // a config file in the project must not be found when a value is given
      await project.write({ 'mesh.config.json': '{ "name": "file" }' })
      let seen: ConfigEnv | undefined
      const loaded = await load({
        config: (e: ConfigEnv) => {
          seen = e
          return { name: 'value', dataDir: 'from-value', plugins: ['noise', 'yamux', 'tcp'] }
        },
        overrides: { dataDir: '/tmp/from-flag' },
      })
      expect(seen).to.deep.equal(env)
      expect(loaded.file).to.equal(undefined)
      expect(loaded.config.name).to.equal('value')
      expect(loaded.config.dataDir).to.equal('/tmp/from-flag')
      expect(loaded.config.configFile).to.equal(undefined)
      expect(loaded.config.plugins.map((p) => p.plugin.name)).to.deep.equal(['noise', 'yamux', 'tcp'])
    })

    it('names the value, not a file, in its errors', async () => {
      const err = await load({ config: { name: 'x', dataDri: 'typo' } }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isMeshError(err) && err.code).to.equal('MESH_ERR_CONFIG_INVALID')
      expect((err as Error).message).to.include('the config object')
      expect((err as Error).message).to.include('dataDri')
    })
  })

  describe('a TypeScript config importing a local TypeScript plugin', () => {
    beforeEach(async () => {
      await project.write({
        'mesh.config.ts': tsConfigSource('first'),
        'plugins/my-plugin.ts': myPluginSource('hello'),
      })
    })

    it('loads, validates the plugin options with its zod schema, and orders the plugins', async () => {
      const loaded = await load()
      expect(loaded.config.name).to.equal('first/hello')
      expect(loaded.config.dataDir).to.equal(project.path('state'))
      const mine = loaded.config.plugins.find((p) => p.plugin.name === 'my-plugin')
      expect(mine, 'my-plugin is in the resolved plugins').to.not.equal(undefined)
      expect(mine!.options).to.deep.equal({ greeting: 'hello', times: 2 })
      expect(loaded.config.plugins.map((p) => p.plugin.name)).to.deep.equal([
        'noise',
        'yamux',
        'tcp',
        'quic',
        'my-plugin',
      ])
      expect(await project.leftovers()).to.deep.equal([])
    })

    it('lists the config file and the imported file as dependencies, as absolute paths', async () => {
      const loaded = await load()
      expect(loaded.dependencies).to.have.members([
        project.path('mesh.config.ts'),
        project.path('plugins/my-plugin.ts'),
      ])
      expect(loaded.dependencies).to.have.length(2)
    })

    it('gives every bundled file its own import.meta.url and __dirname', async () => {
      await project.write({
        'where.ts': [
          "import { pluginDir, pluginUrl } from './plugins/my-plugin.ts'",
          'const seen = { pluginUrl, pluginDir, configUrl: import.meta.url, configDir: __dirname }',
          'export default { name: JSON.stringify(seen) }',
          '',
        ].join('\n'),
      })
      const loaded = await load({ configFile: 'where.ts' })
      const seen = JSON.parse(loaded.config.name) as Record<string, string>
      expect(seen.pluginUrl).to.equal(pathToFileURL(project.path('plugins/my-plugin.ts')).href)
      expect(seen.pluginDir).to.equal(project.path('plugins'))
      expect(seen.configUrl).to.equal(pathToFileURL(project.path('where.ts')).href)
      expect(seen.configDir).to.equal(project.dir)
    })

    it('returns the new value after the imported file is edited, then after the config is edited', async () => {
      const first = await load()
      expect(first.config.name).to.equal('first/hello')
      const firstOptions = first.config.plugins.find((p) => p.plugin.name === 'my-plugin')!.options

      await project.write({ 'plugins/my-plugin.ts': myPluginSource('bonjour') })
      const second = await load()
      expect(second.config.name, 'no stale copy of the imported file').to.equal('first/bonjour')
      expect(second.config.plugins.find((p) => p.plugin.name === 'my-plugin')!.options).to.deep.equal({
        greeting: 'bonjour',
        times: 2,
      })

      await project.write({ 'mesh.config.ts': tsConfigSource('second') })
      const third = await load()
      expect(third.config.name, 'no stale copy of the config').to.equal('second/bonjour')

      expect(firstOptions, 'earlier results are not changed by later loads').to.deep.equal({
        greeting: 'hello',
        times: 2,
      })
      expect(await project.leftovers()).to.deep.equal([])
    })

    it('loads the same config concurrently without the temp bundles colliding', async () => {
      const results = await Promise.all([load(), load(), load(), load()])
      for (const loaded of results) expect(loaded.config.name).to.equal('first/hello')
      expect(await project.leftovers()).to.deep.equal([])
    })

    it('fails with the local plugin schema message when the config passes it bad options', async () => {
      await project.write({
        'mesh.config.ts': [
          "import { defineConfig } from 'meshkit'",
          "import { quic } from 'meshkit/plugins'",
          "import { myPlugin } from './plugins/my-plugin.ts'",
          'export default defineConfig({ plugins: [quic(), myPlugin({ times: 0 })] })',
          '',
        ].join('\n'),
      })
      let thrown: unknown
      await load().catch((err) => {
        thrown = err
      })
      expect(isMeshError(thrown, 'MESH_ERR_CONFIG_INVALID'), String(thrown)).to.equal(true)
      expect((thrown as Error).message).to.include('mesh.config.ts has 1 invalid setting')
      expect((thrown as Error).message).to.include(
        'plugins[1](my-plugin).times: got 0 (number); expected a number > 0.',
      )
      expect(await project.leftovers()).to.deep.equal([])
    })
  })

  describe('config functions', () => {
    it('defineConfig(fn) receives the env { command, mode }', async () => {
      await project.write({
        'mesh.config.ts': [
          "import { type ConfigEnv, defineConfig } from 'meshkit'",
          'export default defineConfig((env: ConfigEnv) => ({',
          "  name: env.command + ':' + env.mode,",
          "  logLevel: env.mode === 'development' ? 'debug' : 'warn',",
          '}))',
          '',
        ].join('\n'),
      })
      const dev = await load({ env: { command: 'dev', mode: 'development' } })
      expect(dev.config.name).to.equal('dev:development')
      expect(dev.config.logLevel).to.equal('debug')
      const start = await load({ env: { command: 'start', mode: 'staging' } })
      expect(start.config.name).to.equal('start:staging')
      expect(start.config.logLevel).to.equal('warn')
    })

    it('awaits an async config function', async () => {
      await project.write({
        'mesh.config.mjs': [
          'export default async ({ mode }) => {',
          '  await new Promise((resolve) => setTimeout(resolve, 5))',
          "  return { name: 'async-' + mode }",
          '}',
          '',
        ].join('\n'),
      })
      const loaded = await load()
      expect(loaded.config.name).to.equal('async-production')
    })

    it('awaits a promise exported as the config', async () => {
      await project.write({ 'mesh.config.ts': "export default Promise.resolve({ name: 'promised' })\n" })
      const loaded = await load()
      expect(loaded.config.name).to.equal('promised')
    })

    it('validates what a config promise resolves to (a typo is not silently ignored)', async () => {
      await project.write({
        'mesh.config.ts': "export default Promise.resolve({ lisen: ['/ip4/127.0.0.1/tcp/0'] })\n",
      })
      let thrown: unknown
      await load().catch((err) => {
        thrown = err
      })
      expect(isMeshError(thrown, 'MESH_ERR_CONFIG_INVALID'), String(thrown)).to.equal(true)
      expect((thrown as Error).message).to.include("did you mean 'listen'?")
    })
  })

  describe('no config bundle on disk', () => {
    const failing: Array<{ what: string; files: Record<string, string>; code: string }> = [
      {
        what: 'the config throws at import',
        files: { 'mesh.config.ts': "throw new Error('nope')\n" },
        code: 'MESH_ERR_CONFIG_LOAD',
      },
      {
        what: 'an imported file throws at import',
        files: {
          'mesh.config.ts': "import './plugins/bad.ts'\nexport default {}\n",
          'plugins/bad.ts': "throw new Error('bad plugin file')\n",
        },
        code: 'MESH_ERR_CONFIG_LOAD',
      },
      {
        what: 'the config function throws',
        files: { 'mesh.config.mts': "export default () => { throw new Error('fn') }\n" },
        code: 'MESH_ERR_CONFIG_LOAD',
      },
      {
        what: 'the config is invalid',
        files: { 'mesh.config.js': "export default { logLevel: 'chatty' }\n" },
        code: 'MESH_ERR_CONFIG_INVALID',
      },
      {
        what: 'the config has a syntax error',
        files: { 'mesh.config.cjs': 'module.exports = {\n' },
        code: 'MESH_ERR_CONFIG_LOAD',
      },
    ]

    it('writes no file while loading: a process watching the project sees nothing appear', async () => {
      await project.write({
        'mesh.config.ts': [
          "import { readdirSync } from 'node:fs'",
          "import { SECRET } from './secrets.ts'",
          '// what the config sees in its own directory while it runs (the old bundle was there, at 0644)',
          "export default { name: readdirSync(__dirname).filter((f) => f !== 'node_modules').sort().join(',') + ':' + SECRET.length }",
          '',
        ].join('\n'),
        'secrets.ts': "export const SECRET = 'hunter2-api-key'\n",
      })
      // the attacker: another local process watching the config directory for new files to read
      const seen: string[] = []
      const watcher = watch(project.dir, { recursive: true }, (_event, name) => {
        if (name && !String(name).startsWith('node_modules')) seen.push(String(name))
      })
      try {
        const loaded = await load()
        expect(loaded.config.name).to.equal('mesh.config.ts,secrets.ts:15')
        await new Promise((resolve) => setTimeout(resolve, 200))
      } finally {
        watcher.close()
      }
      expect(seen, 'files created in the project while loading').to.deep.equal([])
      expect(await project.leftovers()).to.deep.equal([])
    })

    it('loads a TS config from a read-only directory', async function () {
      this.timeout(30_000)
      const { mkdtemp, chmod } = await import('node:fs/promises')
      // as root, a mode does not stop writes: load as the unprivileged user 'nobody' then
      const asRoot = process.getuid?.() === 0
      // 'nobody' must reach the checkout (not so inside a private 0700 directory)
      if (asRoot && !othersCanReach(REPO_ROOT)) this.skip()
      const base = await mkdtemp(join(tmpdir(), 'meshkit-ro-'))
      try {
        const dir = join(base, 'project')
        await mkdir(join(dir, 'node_modules'), { recursive: true })
        await symlink(REPO_ROOT, join(dir, 'node_modules', 'meshkit'), 'dir')
        await writeFile(join(dir, 'mesh.config.ts'), tsConfigSource('read-only'))
        await mkdir(join(dir, 'plugins'))
        await writeFile(join(dir, 'plugins', 'my-plugin.ts'), myPluginSource('hi'))
        for (const d of [join(dir, 'plugins'), join(dir, 'node_modules'), dir]) await chmod(d, 0o555)
        await chmod(base, 0o755)
        const script = [
          `const { loadConfig } = await import(${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist', 'src', 'index.js')).href)})`,
          `const { builtinPlugins, defaultConfig } = await import(${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist', 'plugins', 'index.js')).href)})`,
          `const loaded = await loadConfig({ cwd: ${JSON.stringify(dir)}, env: { command: 'start', mode: 'production' }, registry: builtinPlugins, defaults: defaultConfig() })`,
          'console.log(JSON.stringify({ name: loaded.config.name, dependencies: loaded.dependencies }))',
        ].join('\n')
        const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
          cwd: dir,
          encoding: 'utf8',
          timeout: 25_000,
          ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
        })
        expect(child.status, child.stderr).to.equal(0)
        const out = JSON.parse(child.stdout.trim().split('\n').pop() as string) as {
          name: string
          dependencies: string[]
        }
        expect(out.name).to.equal('read-only/hi')
        expect(out.dependencies.sort()).to.deep.equal(
          [join(dir, 'mesh.config.ts'), join(dir, 'plugins', 'my-plugin.ts')].sort(),
        )
        // the directory really was read-only for that process
        const probe = spawnSync(
          process.execPath,
          ['-e', `require('fs').writeFileSync(${JSON.stringify(join(dir, 'x'))}, '')`],
          {
            encoding: 'utf8',
            ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
          },
        )
        expect(probe.status, 'a write into the directory fails').to.not.equal(0)
      } finally {
        await chmod(join(base, 'project'), 0o755).catch(() => {})
        await chmod(join(base, 'project', 'plugins'), 0o755).catch(() => {})
        await chmod(join(base, 'project', 'node_modules'), 0o755).catch(() => {})
        await unlink(join(base, 'project', 'node_modules', 'meshkit')).catch(() => {})
        await rm(base, { recursive: true, force: true })
      }
    })

    it('leaves nothing behind when the process is killed (SIGKILL) while the config runs', async function () {
      this.timeout(30_000)
      await project.write({
        'mesh.config.ts': [
          "import { KEY } from './secrets.ts'",
          "console.log('config running')",
          'await new Promise((resolve) => setTimeout(resolve, 20_000))',
          'export default { name: KEY }',
          '',
        ].join('\n'),
        'secrets.ts': "export const KEY = 'secret'\n",
      })
      const before = await projectFiles(project.dir)
      const script = [
        `const { loadConfig } = await import(${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist', 'src', 'index.js')).href)})`,
        `await loadConfig({ cwd: ${JSON.stringify(project.dir)}, env: { command: 'start', mode: 'production' } })`,
      ].join('\n')
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
        cwd: project.dir,
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      try {
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('the config never ran')), 20_000)
          child.stdout.on('data', (chunk: Buffer) => {
            if (chunk.toString().includes('config running')) {
              clearTimeout(timer)
              resolve()
            }
          })
          child.once('exit', () => reject(new Error('the child exited before the config ran')))
        })
        expect(await projectFiles(project.dir), 'while the config runs').to.deep.equal(before)
      } finally {
        child.kill('SIGKILL')
        await once(child, 'exit').catch(() => {})
      }
      expect(await projectFiles(project.dir), 'after SIGKILL').to.deep.equal(before)
    })

    for (const { what, files, code } of failing) {
      it(`leaves no bundle file when ${what}`, async () => {
        await project.write(files)
        let thrown: unknown
        await load().catch((err) => {
          thrown = err
        })
        expect(isMeshError(thrown), String(thrown)).to.equal(true)
        expect((thrown as { code: string }).code, (thrown as Error).message).to.equal(code)
        expect(await project.leftovers()).to.deep.equal([])
      })
    }
  })
})
