/**
 * Where startup time goes: a diagnostic companion of run.ts (not a test, not part of bench:startup).
 *
 *   npm run build && node dist/bench/startup/stages.js [--runs N] [--ts-config]
 *
 * Spawns fresh processes of itself, alternating `mesh` and `raw` mode, each timing its own stages with
 * performance.now() (0 = process start, so `boot` is Node's own startup before any of our code):
 *
 *   mesh: the steps of `mesh start` done through the public API, with every import done explicitly
 *         and first, in an order that attributes shared costs to libp2p: libp2p modules (the ones raw
 *         imports too), datastore-level, then what only mesh loads (zod, commander, cosmiconfig,
 *         tsyringe + reflect-metadata, meshkit core/plugins/cli), then loadConfig, MeshKernel.build
 *         (identity, datastore open, plugin hooks, createLibp2p) and swap (libp2p.start: listen).
 *   raw:  the same libp2p imports, then read key, open the datastore, createLibp2p, start.
 *
 * `--ts-config` gives the mesh processes a mesh.config.ts (no imports, so esbuild has nothing to bundle
 * but the file) to price the esbuild path: its import and its build are then separate stages.
 *
 * Output: one JSON line per mode with the median of each stage (ms) and of the total (process start
 * until listening), plus `spawn_to_listening_ms` as measured by this parent process.
 */
import { spawn } from 'node:child_process'
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { median, round } from '../lib/stats.js'

// Stays the first statement evaluated: this module's own static imports are node: builtins only.
const bootMs = performance.now()

type Mode = 'mesh' | 'raw'
interface ChildReport {
  mode: Mode
  stages: Array<[string, number]>
  /** performance.now() when listening: ms since process start. */
  listeningMs: number
  /** performance.timeOrigin + listeningMs (epoch ms). */
  listeningAt: number
}

const LISTEN = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1']

async function child(mode: Mode, dataDir: string): Promise<void> {
  const stages: Array<[string, number]> = [['boot (node start to first line of user code)', bootMs]]
  let last = performance.now()
  const stage = async <T>(name: string, fn: () => Promise<T> | T): Promise<T> => {
    const start = performance.now()
    const value = await fn()
    const end = performance.now()
    stages.push([name, end - start])
    last = end
    return value
  }

  // libp2p modules: both modes pay these.
  const libp2p = await stage('import libp2p', () => import('libp2p'))
  const [tcpM, quicM, noiseM, yamuxM, identifyM, pingM] = await stage(
    'import transports/noise/yamux/identify/ping',
    () =>
      Promise.all([
        import('@libp2p/tcp'),
        import('@chainsafe/libp2p-quic'),
        import('@chainsafe/libp2p-noise'),
        import('@chainsafe/libp2p-yamux'),
        import('@libp2p/identify'),
        import('@libp2p/ping'),
      ]),
  )
  const keys = await stage('import @libp2p/crypto/keys + peer-id', async () => {
    await import('@libp2p/peer-id')
    return import('@libp2p/crypto/keys')
  })
  const { LevelDatastore } = await stage('import datastore-level', () => import('datastore-level'))

  if (mode === 'raw') {
    const { readFile } = await import('node:fs/promises')
    const privateKey = await stage('read identity key', async () =>
      keys.privateKeyFromProtobuf(await readFile(join(dataDir, 'identity.key'))),
    )
    const datastore = new LevelDatastore(join(dataDir, 'datastore'))
    await stage('open datastore-level', () => datastore.open())
    const node = await stage('createLibp2p', () =>
      libp2p.createLibp2p({
        privateKey,
        datastore,
        start: false,
        addresses: { listen: LISTEN },
        transports: [
          tcpM.tcp({ inboundSocketInactivityTimeout: 30_000, outboundSocketInactivityTimeout: 30_000 }),
          quicM.quic({ maxIdleTimeout: 30_000, keepAliveInterval: 5_000 }),
        ],
        connectionEncrypters: [noiseM.noise()],
        streamMuxers: [yamuxM.yamux()],
        services: { identify: identifyM.identify({ protocolPrefix: 'ipfs' }), ping: pingM.ping() },
        connectionManager: { maxConnections: 300, dialTimeout: 10_000 },
      }),
    )
    await stage('libp2p.start (listen)', () => node.start())
    await stage('report', () => node.getMultiaddrs().map(String))
    report({ mode, stages, listeningMs: last, listeningAt: performance.timeOrigin + last })
    await node.stop()
    await datastore.close()
    return
  }

  // What only mesh loads: third-party first, then Meshkit's own modules (their deps are loaded by then).
  await stage('import zod', () => import('zod'))
  await stage('import commander', () => import('commander'))
  await stage('import cosmiconfig', () => import('cosmiconfig'))
  await stage('import tsyringe + reflect-metadata', async () => {
    await import('reflect-metadata')
    return import('tsyringe')
  })
  const meshkit = await stage('import meshkit (core)', () => import('meshkit'))
  const plugins = await stage('import meshkit/plugins', () => import('meshkit/plugins'))
  await stage('import meshkit/cli (run-cli, start-command)', () => import('../../src/cli/index.js'))
  const tsConfig = process.env.MESHKIT_STAGES_TS_CONFIG === '1'
  if (tsConfig) await stage('import esbuild', () => import('esbuild'))

  const logger = meshkit.createLogger({ level: 'error' })
  const env = { command: 'start', mode: 'production' } as const
  const loaded = await stage(
    tsConfig ? 'loadConfig (mesh.config.ts: esbuild build + import)' : 'loadConfig (no file)',
    () =>
      meshkit.loadConfig({
        cwd: process.cwd(),
        env,
        registry: plugins.builtinPlugins,
        defaults: plugins.defaultConfig(),
        overrides: { dataDir, listen: LISTEN, logLevel: 'error' },
      }),
  )
  const kernel = new meshkit.MeshKernel({ env, logger })
  const node = await stage('kernel.build (identity, datastore open, plugin hooks, createLibp2p)', () =>
    kernel.build(loaded.config),
  )
  await stage('kernel.swap (libp2p.start: listen)', () => kernel.swap(node))
  await stage('report', () => node.libp2p.getMultiaddrs().map(String))
  report({ mode, stages, listeningMs: last, listeningAt: performance.timeOrigin + last })
  await kernel.close()
}

function report(r: ChildReport): void {
  process.stdout.write(`${JSON.stringify(r)}\n`)
}

async function parent(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '7' },
      'ts-config': { type: 'boolean', default: false },
    },
  })
  const runs = Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a whole number >= 1`)
  const root = await mkdtemp(join(tmpdir(), 'meshkit-bench-stages-'))
  const self = fileURLToPath(import.meta.url)
  const reports: Record<Mode, Array<ChildReport & { wall: number }>> = { mesh: [], raw: [] }
  try {
    // Warm-up (discarded): the first one creates the identity key that every run gets a copy of.
    let key: string | undefined
    let n = 0
    for (let i = -1; i < runs; i++) {
      for (const mode of ['mesh', 'raw'] as const) {
        const cwd = join(root, String(n++))
        const dataDir = join(cwd, 'data')
        await mkdir(dataDir, { recursive: true, mode: 0o700 })
        if (key) {
          await copyFile(key, join(dataDir, 'identity.key'))
          await chmod(join(dataDir, 'identity.key'), 0o600)
        } else {
          const { loadOrCreateIdentity } = await import('meshkit')
          await loadOrCreateIdentity(dataDir)
          key = join(dataDir, 'identity.key')
        }
        if (values['ts-config'] && mode === 'mesh') {
          await writeFile(
            join(cwd, 'mesh.config.ts'),
            "const config: { name: string } = { name: 'bench-stages' }\nexport default config\n",
          )
        }
        const spawnedAt = performance.timeOrigin + performance.now()
        const r = await new Promise<ChildReport>((res, rej) => {
          const c = spawn(process.execPath, [self, '--child', mode, '--data-dir', dataDir], {
            cwd,
            stdio: ['ignore', 'pipe', 'inherit'],
            env: { ...process.env, MESHKIT_STAGES_TS_CONFIG: values['ts-config'] ? '1' : '0' },
          })
          let out = ''
          c.stdout.on('data', (d) => {
            out += d
          })
          c.on('exit', (code) => {
            const line = out.split('\n').find((l) => l.startsWith('{'))
            if (code !== 0 || !line) rej(new Error(`${mode} child exited with ${code}: ${out}`))
            else res(JSON.parse(line) as ChildReport)
          })
        })
        if (i >= 0) reports[mode].push({ ...r, wall: r.listeningAt - spawnedAt })
        process.stderr.write(`  ${i < 0 ? 'warm-up' : `run ${i + 1}/${runs}`} ${mode}\n`)
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true })
  }
  for (const mode of ['mesh', 'raw'] as const) {
    const rs = reports[mode]
    const names = rs[0].stages.map(([name]) => name)
    const stages = Object.fromEntries(
      names.map((name, i) => [name, round(median(rs.map((r) => r.stages[i][1])))] as const),
    )
    const inProcess = round(median(rs.map((r) => r.listeningMs)))
    const line = {
      mode,
      ts_config: mode === 'mesh' ? values['ts-config'] : undefined,
      runs,
      stages_median_ms: stages,
      process_start_to_listening_ms: inProcess,
      spawn_to_listening_ms: round(median(rs.map((r) => r.wall))),
    }
    process.stdout.write(`${JSON.stringify(line)}\n`)
  }
}

const args = process.argv.slice(2)
if (args[0] === '--child') {
  await child(args[1] as Mode, args[3])
  // Whatever libp2p leaves behind must not keep the child alive.
  process.exit(0)
} else {
  await parent()
}
