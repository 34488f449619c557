import { resolve } from 'node:path'
import { createLogger, isMeshError, type LogLevel, MeshError, startMesh } from 'meshkit'
import { builtinPlugins, defaultConfig } from 'meshkit/plugins'
import type { CliIo } from './run-cli.js'
import { clientFor } from './status-commands.js'

export interface NatCommandOptions {
  cwd: string
  config?: string
  dataDir?: string
  json?: boolean
  logLevel?: LogLevel
  mode?: string
}

/** The part of the `nat-classification` capability's API (natClassifier()) the CLI uses. */
interface Classifies {
  classify(): Promise<NatVerdicts>
}

interface Verdict {
  type: string
  confidence: number
  /** The probes' own confidence, before other sources weighed in. */
  probeConfidence?: number
  /** What other sources (identify's observed addresses, AutoNAT v2) say about the verdict. */
  corroboration?: Array<{ source: string; result: string; detail: string }>
  reason: string
  mapping: string
  filtering: string
  ms: number
  evidence: {
    local?: string
    mappings: Array<{ server: string; source: string; mapped?: string }>
    filtering: Partial<
      Record<
        'otherPort' | 'otherIp',
        { server: string; mapped?: string; in: boolean; from?: string; error?: string }
      >
    >
    notes: string[]
  }
}

interface NatVerdicts {
  udp?: Verdict
  tcp?: Verdict
  at: string
  ms: number
  trigger?: string
}

/** The capability natClassifier() provides. */
const CAPABILITY = 'nat-classification'

function describe(name: string, v: Verdict | undefined): string {
  if (!v) return `${name}: not classified (disabled in the config)\n`
  const lines = [
    `${name}: ${v.type} (confidence ${v.confidence.toFixed(2)}, ${v.ms} ms)`,
    `  ${v.reason}`,
    `  mapping ${v.mapping}, filtering ${v.filtering}; local ${v.evidence.local ?? '?'}`,
    ...v.evidence.mappings.map(
      (m) =>
        `  ${m.source === 'stun' ? 'stun ' : ''}${m.server.padEnd(22)} saw us at ${m.mapped ?? '(no answer)'}`,
    ),
    ...(['otherPort', 'otherIp'] as const).map((k) => {
      const f = v.evidence.filtering[k]
      const label = k === 'otherPort' ? "server's other port" : "server's other IP"
      if (!f) return `  ${label}: not tested`
      if (f.error) return `  ${label}: test failed (${f.error})`
      return `  ${label}: ${f.in ? `got in${f.from ? ` (from ${f.from})` : ''}` : 'filtered'}`
    }),
    ...v.evidence.notes.map((n) => `  note: ${n}`),
    ...(v.corroboration ?? []).map((c) => `  ${c.source}: ${c.result}${c.detail ? ` (${c.detail})` : ''}`),
    ...(v.probeConfidence !== undefined && v.probeConfidence !== v.confidence
      ? [`  confidence ${v.probeConfidence.toFixed(2)} from the probes alone`]
      : []),
  ]
  return `${lines.join('\n')}\n`
}

/**
 * The verdict of the node running in the data dir (through its control API), or false when no node
 * runs there. A running node without a classifier is a user error (its data dir is in use, so a
 * one-shot classification could not start either).
 */
async function runningNodeVerdict(opts: NatCommandOptions, io: CliIo): Promise<boolean> {
  const client = clientFor({ cwd: opts.cwd, dataDir: opts.dataDir })
  let answer: { report: Record<string, unknown> | null }
  let peerId: string | undefined
  try {
    peerId = (await client.discover()).peerId
    answer = await client.nat()
  } catch (err) {
    if (isMeshError(err, 'MESH_ERR_CONTROL_NOT_RUNNING')) return false
    throw err
  }
  const report = answer.report as NatVerdicts | null
  if (opts.json) {
    io.stdout(
      `${JSON.stringify({ event: 'nat', source: 'running-node', peerId, ...(report ?? { report: null }) })}\n`,
    )
  } else if (!report) {
    io.stdout(
      `The running node ${peerId ?? ''} has no NAT verdict yet (its classifier runs at start and on address changes); try again shortly.\n`,
    )
  } else {
    io.stdout(
      `NAT classification of the running node ${peerId ?? ''} (at ${report.at}, ${report.ms} ms)\n${describe('UDP', report.udp)}${describe('TCP', report.tcp)}`,
    )
  }
  return true
}

/**
 * `mesh nat`: when a node runs in the data dir, prints its current verdict (from its control API).
 * Otherwise starts the node from the config, classifies its NAT once (natClassifier()), prints the
 * verdict and the evidence (or one JSON object with `--json`), stops the node. A config without
 * natClassifier() is a user error (exit 2 through runCli).
 */
export async function natCommand(opts: NatCommandOptions, io: CliIo): Promise<void> {
  if (await runningNodeVerdict(opts, io)) return
  const logger = createLogger({ level: opts.logLevel ?? 'warn' })
  const mesh = await startMesh({
    cwd: opts.cwd,
    configFile: opts.config,
    env: { command: 'start', mode: opts.mode ?? 'production' },
    registry: builtinPlugins,
    defaults: defaultConfig(),
    overrides: {
      dataDir: opts.dataDir === undefined ? undefined : resolve(opts.cwd, opts.dataDir),
      logLevel: opts.logLevel,
    },
    logger,
  })
  try {
    const { node } = mesh
    if (!node.has(CAPABILITY)) {
      throw new MeshError(
        'MESH_ERR_INVALID_ARGUMENT',
        `mesh nat needs a NAT classifier, and the config ${mesh.loaded.file ?? '(defaults)'} has none.`,
        {
          hint: "Add natClassifier({ servers: ['<probe server ip>:3478'] }) (plugins/nat-probe) to `plugins`; the servers run natProbeServer().",
        },
      )
    }
    const report = await node.api<Classifies>(CAPABILITY).classify()
    if (opts.json) {
      io.stdout(`${JSON.stringify({ event: 'nat', peerId: node.peerId.toString(), ...report })}\n`)
    } else {
      io.stdout(
        `NAT classification of ${node.peerId} (${report.ms} ms)\n${describe('UDP', report.udp)}${describe('TCP', report.tcp)}`,
      )
    }
  } finally {
    await mesh.close()
  }
}
