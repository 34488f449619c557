/**
 * The NAT traversal matrix (issue 4): for each of the 15 unordered pairs among {public, full-cone,
 * restricted-cone, port-restricted-cone, symmetric}, a lab with a public relay + STUN + NAT probe node
 * (two addresses) and one site per side; peers A and B classify their own NAT (natClassifier() against
 * the probe) and reserve a slot on the relay, then B dials A (through the relay when A is NATed, directly
 * when A is public) and reports how it got connected. `classifiedA` / `classifiedB` are the classifier's
 * UDP verdicts (`classifiedTcpA` / `classifiedTcpB` the TCP ones), not the lab's configuration.
 *
 * `node dist/test/natlab/matrix.js [--stock] [--concurrency N] [--pair a,b]` prints one JSON line per
 * pair: `{"a","b","classifiedA","classifiedB","classifiedBy","connected","method","transport",
 * "msToFirst","msToDirect",...}`. Meshkit's config (`holePunch()`: circuit relay + WebRTC with the lab's
 * STUN server) by default; `--stock` runs stock js-libp2p (circuit relay + DCUtR) for comparison.
 * Needs root and nftables (see lab.ts); every namespace and process is removed at the end.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLab, type Lab, type LabHost, NAT_BEHAVIOURS, type NatBehaviour, type NatSite } from './lab.js'
import type { NodeScriptConfig } from './node-script.js'

/** The NAT probe's ports on the lab relay (its STUN server has 3478). */
const LAB_PROBE_PORTS: [number, number] = [3490, 3491]

const NODE_SCRIPT = fileURLToPath(new URL('./node-script.js', import.meta.url))

/** The names the matrix uses: `public` for a host without NAT. */
export type PeerKind = 'public' | Exclude<NatBehaviour, 'none'>
export const KINDS: readonly PeerKind[] = NAT_BEHAVIOURS.map((b) => (b === 'none' ? 'public' : b))
const behaviourOf = (k: PeerKind): NatBehaviour => (k === 'public' ? 'none' : k)

export interface MatrixRow {
  a: PeerKind
  b: PeerKind
  /** natClassifier()'s UDP verdict on A's node (undefined: it did not report). */
  classifiedA?: PeerKind | 'unknown'
  classifiedB?: PeerKind | 'unknown'
  /** Its TCP verdicts. */
  classifiedTcpA?: PeerKind | 'unknown'
  classifiedTcpB?: PeerKind | 'unknown'
  /** The classifiers' reasons (and notes), UDP then TCP, per side. */
  classifyReasonsA?: [string, string]
  classifyReasonsB?: [string, string]
  /** Who classified the NATs: the natClassifier() plugin of each node. */
  classifiedBy: 'nat-classifier'
  /** Classification time on each node (ms). */
  msClassifyA?: number
  msClassifyB?: number
  connected: boolean
  method?: 'direct' | 'hole-punched' | 'relayed'
  transport?: string
  msToFirst?: number
  msToDirect?: number
  /** Hole-punch (upgrade) attempts by the dialler B. */
  attempts?: number
  /** Upgrade attempts made by A (the listener) in its connection:method events: always 0 expected. */
  attemptsA?: number
  /** Why B made no punch attempt (Meshkit: the pair's NAT types cannot punch). */
  skipped?: string
  /** 'birthday' when the punch was prepared by birthday-paradox port guessing. */
  technique?: string
  /** The NAT types B's strategy saw (its own, and A's as told over /mesh/nat-type/1.0.0). */
  localNat?: string
  remoteNat?: string
  /** Wall time of the pair, lab sites to result. */
  wallMs: number
  /** A node process died before it could run (not a traversal failure); the pair then runs once more. */
  startFailed?: boolean
  startRetries?: number
  error?: string
}

/** Plain UDP punching gets through (docs/nat.md): all pairs but port-restricted/symmetric and symmetric/symmetric. */
export function punchable(a: PeerKind, b: PeerKind): boolean {
  const hard = (x: PeerKind, y: PeerKind) =>
    x === 'symmetric' && (y === 'symmetric' || y === 'port-restricted-cone')
  return !hard(a, b) && !hard(b, a)
}

/**
 * The pair plain punching cannot open but birthday-paradox port guessing can (the port-restricted cone's
 * mapping is fixed; the symmetric side opens many mappings towards it and the cone side guesses one).
 */
export function birthdayPair(a: PeerKind, b: PeerKind): boolean {
  return (
    (a === 'port-restricted-cone' && b === 'symmetric') || (a === 'symmetric' && b === 'port-restricted-cone')
  )
}

/** The 15 unordered pairs, in a stable order. */
export function allPairs(): Array<[PeerKind, PeerKind]> {
  const pairs: Array<[PeerKind, PeerKind]> = []
  KINDS.forEach((x, i) => {
    for (const y of KINDS.slice(i)) pairs.push([x, y])
  })
  return pairs
}

interface Line {
  event: string
  [k: string]: unknown
}

const parse = (line: string): Line | undefined => {
  try {
    const v = JSON.parse(line)
    return typeof v === 'object' && v && typeof v.event === 'string' ? v : undefined
  } catch {
    return undefined
  }
}

function startNode(lab: Lab, host: LabHost, cfg: NodeScriptConfig) {
  return lab.spawn(host, process.execPath, [NODE_SCRIPT, JSON.stringify(cfg)], {
    // MATRIX_DEBUG=<libp2p debug pattern> passes DEBUG to the nodes (their stderr ends up in MATRIX_VERBOSE dumps)
    env: { ...process.env, NODE_OPTIONS: undefined, DEBUG: process.env.MATRIX_DEBUG },
  })
}

/** Waits for the first output line with `event` (bounded), failing early on an `error` line. */
function waitEvent(proc: ReturnType<typeof startNode>, event: string, timeoutMs: number): Promise<Line> {
  return proc.waitUntil(
    () => {
      for (const l of proc.stdoutLines) {
        const e = parse(l)
        if (e?.event === event) return e
        if (e?.event === 'error') throw new Error(`node error: ${String(e.error)}\n${proc.describe()}`)
      }
      return undefined
    },
    { timeoutMs, what: `'${event}'` },
  )
}

async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

export interface MatrixOptions {
  /** `meshkit` (holePunch plugin) or `stock` (circuit relay + DCUtR). @default 'meshkit' */
  mode?: 'meshkit' | 'stock'
  /** Pairs run at once (2 shared cores: 3 keeps the 15 pairs well under 4 minutes). @default 3 */
  concurrency?: number
  pairs?: Array<[PeerKind, PeerKind]>
  /** Called with the lab once it exists (e.g. to check its namespaces are gone afterwards). */
  onLab?: (lab: Lab) => void
  /** Called with each row as it is done. */
  onRow?: (row: MatrixRow) => void
}

/** Builds a lab, runs the pairs, destroys the lab (also on failure). */
export async function runMatrix(options: MatrixOptions = {}): Promise<MatrixRow[]> {
  const mode = options.mode ?? 'meshkit'
  const lab = await createLab()
  options.onLab?.(lab)
  const tmp = await mkdtemp(join(tmpdir(), 'natlab-matrix-'))
  try {
    // two addresses: the NAT probe's "other IP" (RFC 5780 filtering and mapping tests)
    const relayHost = await lab.addPublicHost({ addresses: 2 })
    const relay = startNode(lab, relayHost, {
      role: 'relay',
      ip: relayHost.ip,
      public: true,
      port: 4001,
      stunPort: 3478,
      probeAddresses: [...relayHost.addresses],
      probePorts: LAB_PROBE_PORTS,
      lifetimeMs: 600_000,
    })
    // every pair's two sites, built while the relay starts (a few at a time: `ip` work serializes anyway)
    const pairs = options.pairs ?? allPairs()
    const sites = new Map<string, Promise<[NatSite, NatSite]>>()
    let chain: Promise<unknown> = Promise.resolve()
    for (const [a, b] of pairs) {
      const both = chain.then(() =>
        Promise.all([lab.addNatSite(behaviourOf(a)), lab.addNatSite(behaviourOf(b))]),
      )
      both.catch(() => {})
      chain = both.catch(() => {})
      sites.set(`${a},${b}`, both)
    }
    const started = await waitEvent(relay, 'started', 60_000)
    const relayAddr = `/ip4/${relayHost.ip}/tcp/4001/p2p/${String(started.peerId)}`
    const stunServers = [`stun:${relayHost.ip}:3478`]
    const probeServer = `${relayHost.ip}:${LAB_PROBE_PORTS[0]}`
    return await pool(pairs, options.concurrency ?? 3, async ([a, b]) => {
      const row = await runPair(
        lab,
        mode,
        a,
        b,
        sites.get(`${a},${b}`)!,
        { relayAddr, stunServers, probeServer },
        tmp,
      )
      options.onRow?.(row)
      return row
    })
  } finally {
    await lab.destroy()
    await rm(tmp, { recursive: true, force: true })
  }
}

/**
 * One pair; run again (once) when a node process died before doing anything (e.g. a module failing to
 * load while the shared dist/ is being rebuilt by another build): that is no traversal result. Failures of
 * the connection itself are never retried. `startRetries` in the row says it happened.
 */
async function runPair(...args: Parameters<typeof runPairOnce>): Promise<MatrixRow> {
  const first = await runPairOnce(...args)
  if (!first.startFailed) return first
  const second = await runPairOnce(...args)
  return { ...second, startRetries: 1, wallMs: first.wallMs + second.wallMs }
}

async function runPairOnce(
  lab: Lab,
  mode: 'meshkit' | 'stock',
  a: PeerKind,
  b: PeerKind,
  sites: Promise<[NatSite, NatSite]>,
  servers: { relayAddr: string; stunServers: string[]; probeServer: string },
  tmp: string,
): Promise<MatrixRow> {
  const t0 = Date.now()
  const { relayAddr, stunServers, probeServer } = servers
  const row: MatrixRow = { a, b, classifiedBy: 'nat-classifier', connected: false, wallMs: 0 }
  const procs: Array<ReturnType<typeof startNode>> = []
  try {
    const [siteA, siteB] = await sites
    const base = {
      role: 'peer' as const,
      mode,
      relays: [relayAddr],
      stunServers,
      probeServer,
      lifetimeMs: 240_000,
    }
    // both peers start at once (Node start-up is seconds here); B waits for the address in dialFile
    const dialFile = join(tmp, `${a}-${b}-${Date.now()}-${Math.random().toString(16).slice(2)}`)
    const nodeA = startNode(lab, siteA.host, { ...base, ip: siteA.host.ip, public: a === 'public' })
    const nodeB = startNode(lab, siteB.host, { ...base, ip: siteB.host.ip, public: b === 'public', dialFile })
    procs.push(nodeA, nodeB)
    // generous bounds: the 2 cores are shared, and Node start-up alone takes seconds under load
    const startedA = await waitEvent(nodeA, 'started', 90_000)
    await waitEvent(nodeA, 'reserved', 30_000)
    // A answers B's NAT-type exchange with its verdict: let it have one first
    const classifiedA = await waitEvent(nodeA, 'classified', 45_000)
    row.classifiedA = classifiedA.udp as MatrixRow['classifiedA']
    row.classifiedTcpA = classifiedA.tcp as MatrixRow['classifiedTcpA']
    row.msClassifyA = classifiedA.ms as number | undefined
    row.classifyReasonsA = [
      String(classifiedA.udpReason ?? classifiedA.error),
      String(classifiedA.tcpReason ?? ''),
    ]
    const idA = String(startedA.peerId)
    const target =
      a === 'public' ? `/ip4/${siteA.host.ip}/tcp/4001/p2p/${idA}` : `${relayAddr}/p2p-circuit/p2p/${idA}`
    await writeFile(dialFile, target)
    const result = await waitEvent(nodeB, 'result', 90_000)
    const classifiedB = await waitEvent(nodeB, 'classified', 1000)
    row.classifiedB = classifiedB.udp as MatrixRow['classifiedB']
    row.classifiedTcpB = classifiedB.tcp as MatrixRow['classifiedTcpB']
    row.msClassifyB = classifiedB.ms as number | undefined
    row.classifyReasonsB = [
      String(classifiedB.udpReason ?? classifiedB.error),
      String(classifiedB.tcpReason ?? ''),
    ]
    row.connected = result.connected === true
    if (row.connected) {
      row.method = result.method as MatrixRow['method']
      row.transport = result.transport as string
      row.msToFirst = result.msToFirst as number | undefined
      row.msToDirect = result.msToDirect as number | undefined
      row.attempts = result.attempts as number | undefined
      if (result.skipped !== undefined) row.skipped = String(result.skipped)
      if (result.technique !== undefined) row.technique = String(result.technique)
      if (result.localNat !== undefined) row.localNat = String(result.localNat)
      if (result.remoteNat !== undefined) row.remoteNat = String(result.remoteNat)
      // why a connection stayed relayed (the last upgrade's, or the birthday punch's, failure)
      if (result.error !== undefined) row.error = String(result.error)
    } else row.error = String(result.error)
    // the listener's own events (a short grace for its inbound WebRTC settle): it never upgrades
    await new Promise((r) => setTimeout(r, mode === 'meshkit' ? 300 : 0))
    row.attemptsA = nodeA.stdoutLines
      .map(parse)
      .filter((e) => e?.event === 'connection:method')
      .reduce((n, e) => n + Number(e?.attempts ?? 0), 0)
  } catch (err) {
    // a process that exited with an error before printing anything of its own never got to run
    row.startFailed = procs.some(
      (p) => p.exit && p.exit.code !== 0 && !p.stdoutLines.some((l) => parse(l)?.event === 'started'),
    )
    const tails = procs.map(
      (p) =>
        `${p.netns}: exit ${JSON.stringify(p.exit ?? 'running')}, stderr: ${p.stderrLines.slice(-8).join(' | ')}`,
    )
    row.error = `${err instanceof Error ? err.message.split('\n')[0] : String(err)} [${tails.join('; ')}]`
  } finally {
    if (process.env.MATRIX_VERBOSE) for (const p of procs) process.stderr.write(`${p.describe()}\n`)
    await Promise.all(procs.map((p) => p.kill('SIGKILL')))
    row.wallMs = Date.now() - t0
  }
  return row
}

/** The value after `flag`, if given. */
const argOf = (argv: string[], flag: string) => {
  const i = argv.indexOf(flag)
  return i >= 0 ? argv[i + 1] : undefined
}

/** `--user-flow`: the user-flow scenarios (user-flow.ts), `--tries` each; a summary per scenario at the end. */
async function userFlowCli(argv: string[]): Promise<void> {
  const { HOLD_SCENARIO, runUserFlow, summarize, USER_FLOW_SCENARIOS } = await import('./user-flow.js')
  // the held pair (60 s) runs only when named
  const known = [...USER_FLOW_SCENARIOS, HOLD_SCENARIO]
  const names = argv.flatMap((arg, i) => (arg === '--scenario' ? [argv[i + 1]] : []))
  for (const n of names)
    if (!known.some((s) => s.name === n))
      throw new Error(`--scenario ${n}: scenarios are ${known.map((s) => `'${s.name}'`).join(', ')}`)
  const tries = Number(argOf(argv, '--tries') ?? 10)
  if (!Number.isInteger(tries) || tries < 1) throw new Error('--tries: a positive integer')
  const t0 = Date.now()
  const rows = await runUserFlow({
    scenarios: names.length > 0 ? known.filter((s) => names.includes(s.name)) : undefined,
    tries,
    concurrency: Number(argOf(argv, '--concurrency') ?? 2),
    onRow: (row) => process.stdout.write(`${JSON.stringify({ mode: 'user-flow', ...row })}\n`),
  })
  for (const s of summarize(rows)) process.stdout.write(`${JSON.stringify({ summary: true, ...s })}\n`)
  process.stderr.write(`user flow: ${rows.length} tries in ${Date.now() - t0} ms\n`)
}

async function cli(argv: string[]): Promise<void> {
  const { labUnavailableReason } = await import('./lab.js')
  if (argv.includes('--user-flow')) {
    const why = await labUnavailableReason()
    if (why) throw new Error(`the NAT lab cannot run here: ${why}`)
    return userFlowCli(argv)
  }
  const mode = argv.includes('--stock') ? 'stock' : 'meshkit'
  const ci = argv.indexOf('--concurrency')
  const concurrency = ci >= 0 ? Number(argv[ci + 1]) : 3
  const pairs = argv
    .flatMap((arg, i) => (arg === '--pair' ? [argv[i + 1]] : []))
    .map((p) => p.split(',') as [PeerKind, PeerKind])
  for (const [x, y] of pairs)
    if (!KINDS.includes(x) || !KINDS.includes(y))
      throw new Error(`--pair ${x},${y}: kinds are ${KINDS.join(', ')}`)
  const why = await labUnavailableReason()
  if (why) throw new Error(`the NAT lab cannot run here: ${why}`)
  const t0 = Date.now()
  const rows = await runMatrix({
    mode,
    concurrency,
    pairs: pairs.length > 0 ? pairs : undefined,
    onRow: (row) => process.stdout.write(`${JSON.stringify({ mode, ...row })}\n`),
  })
  const direct = rows.filter((r) => r.method === 'direct' || r.method === 'hole-punched').length
  process.stderr.write(
    `${mode}: ${rows.filter((r) => r.connected).length}/${rows.length} connected, ${direct} direct or hole-punched, in ${Date.now() - t0} ms\n`,
  )
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  cli(process.argv.slice(2)).then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
      process.exit(1)
    },
  )
}
