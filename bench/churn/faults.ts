/**
 * The faults of issue 12 at full size (their small versions are in `npm test`):
 *
 *   npm run bench:faults [-- --only crash,bootstrap,loss,relay --crash-cycles 200 --seed N]
 *
 * - crash: SIGKILL at random moments (start, identity creation, peer-cache and datastore writes, config
 *   reload), `--crash-cycles` (200) times on one node's data dir (crash.ts);
 * - bootstrap: every bootstrap node gone after the mesh formed (`--bootstrap-peers` 12 peers); members
 *   keep finding new members through each other, a restarted node rejoins from its peer cache
 *   (bootstrap-loss.ts);
 * - loss / relay: the NAT lab scenarios (test/natlab/resilience.ts; root and nftables), 10 peers behind
 *   NATs at 5% and 10% loss, and a relay killed under relayed and hole-punched peers.
 *
 * Output: one JSON line per fault, `{"fault": name, ...report}`; progress on stderr.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { labUnavailableReason } from '../../test/natlab/lab.js'
import { runLossScenario, runRelayLossScenario } from '../../test/natlab/resilience.js'
import { runBootstrapLoss } from './bootstrap-loss.js'
import { runCrashCycles } from './crash.js'
import { machineLoad } from './fleet.js'

const { values: opt } = parseArgs({
  options: {
    only: { type: 'string', default: 'crash,bootstrap,loss,relay' },
    'crash-cycles': { type: 'string', default: '200' },
    'bootstrap-peers': { type: 'string', default: '12' },
    'loss-peers': { type: 'string', default: '10' },
    losses: { type: 'string', default: '5,10' },
    seed: { type: 'string' },
    'keep-dirs': { type: 'boolean', default: false },
  },
})

const T0 = Date.now()
const log = (text: string) =>
  process.stderr.write(`[faults +${((Date.now() - T0) / 1000).toFixed(1)}s] ${text}\n`)
const only = new Set(opt.only!.split(',').map((s) => s.trim()))
const seed = opt.seed ? Number(opt.seed) : undefined

async function withRoot<T>(name: string, fn: (root: string) => Promise<T>): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), `meshkit-fault-${name}-`))
  try {
    return await fn(root)
  } finally {
    if (!opt['keep-dirs']) await rm(root, { recursive: true, force: true }).catch(() => {})
  }
}

async function main(): Promise<void> {
  log(`load ${JSON.stringify(machineLoad())}`)
  if (only.has('crash')) {
    const report = await withRoot('crash', (root) =>
      runCrashCycles({ cycles: Number(opt['crash-cycles']), root, seed, log }),
    )
    process.stdout.write(`${JSON.stringify({ fault: 'crash', ...report, load: machineLoad() })}\n`)
  }
  if (only.has('bootstrap')) {
    const report = await withRoot('bootstrap', (root) =>
      runBootstrapLoss({ root, peers: Number(opt['bootstrap-peers']), newMembers: 4, restarts: 4, log }),
    )
    process.stdout.write(`${JSON.stringify({ fault: 'bootstrap', ...report, load: machineLoad() })}\n`)
  }
  if (only.has('loss') || only.has('relay')) {
    const why = await labUnavailableReason()
    if (why) {
      log(`NAT lab faults skipped: ${why}`)
      return
    }
  }
  if (only.has('loss'))
    for (const loss of opt.losses!.split(',').map(Number)) {
      const report = await runLossScenario({ peers: Number(opt['loss-peers']), loss, log })
      process.stdout.write(`${JSON.stringify({ fault: 'loss', ...report, load: machineLoad() })}\n`)
    }
  if (only.has('relay')) {
    const report = await runRelayLossScenario({
      behaviours: [
        'full-cone',
        'restricted-cone',
        'port-restricted-cone',
        'symmetric',
        'symmetric',
        'symmetric',
      ],
      log,
    })
    process.stdout.write(`${JSON.stringify({ fault: 'relay', ...report, load: machineLoad() })}\n`)
  }
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`)
  process.exit(1)
})
