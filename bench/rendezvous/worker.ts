/**
 * One rendezvous run in this (fresh) process, so its CPU time and RSS belong to that run alone:
 *
 *   node dist/bench/rendezvous/worker.js --impl hyperswarm|raw_libp2p|meshkit --n 25 --timeout-ms 60000
 *
 * Prints one line, `{"result":{...RunResult}}` or `{"error":"..."}`, then exits. Only the chosen
 * implementation's modules are loaded.
 */
import { parseArgs } from 'node:util'
import { IMPLS, type ImplName, type RunResult, reason } from './common.js'

async function run(impl: ImplName, n: number, timeoutMs: number): Promise<RunResult> {
  switch (impl) {
    case 'hyperswarm':
      return (await import('./hyperswarm.js')).runHyperswarm(n, { timeoutMs })
    case 'raw_libp2p':
      return (await import('./raw-libp2p.js')).runRawLibp2p(n, { timeoutMs })
    case 'meshkit':
      return (await import('./meshkit.js')).runMeshkit(n, { timeoutMs })
  }
}

const { values } = parseArgs({
  options: {
    impl: { type: 'string' },
    n: { type: 'string' },
    'timeout-ms': { type: 'string', default: '60000' },
  },
})
const impl = values.impl as ImplName
const n = Number(values.n)
const timeoutMs = Number(values['timeout-ms'])

let code = 0
try {
  if (!IMPLS.includes(impl)) throw new Error(`--impl must be one of ${IMPLS.join(', ')} (got ${values.impl})`)
  if (!Number.isInteger(n) || n < 2) throw new Error(`--n must be a whole number >= 2 (got ${values.n})`)
  if (!(timeoutMs > 0)) throw new Error(`--timeout-ms must be > 0 (got ${values['timeout-ms']})`)
  const result = await run(impl, n, timeoutMs)
  process.stdout.write(`${JSON.stringify({ result })}\n`)
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: reason(err) })}\n`)
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  code = 1
}
// whatever a stopped node leaves behind (sockets in TIME_WAIT, timers) must not keep this process alive
process.exit(code)
