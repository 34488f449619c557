/**
 * `npm run sim`: Meshkit at scale in one process. Real Meshkit nodes (kernel, bootstrap, kadTopics,
 * jaccardClusters, identify, ping, yamux) over a simulated network with link delays (net.ts,
 * transport.ts), spread over worker threads: bootstrap nodes in one (so their CPU is measured apart),
 * ordinary nodes in the others. Prints progress on stderr, the run's figures as JSON lines on stdout,
 * and last a `{"summary": {...}}` line. `--help` lists the options; see docs/scale.md.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads'
import { analyze, type RunPhases, type SimResult, type SimSummary } from './analysis.js'
import { installSlowdown, realNow, slowdown } from './clock.js'
import type { HostCommand, HostFinal, HostInit, HostProgress } from './host.js'
import { now } from './net.js'
import { buildScenario, parseOptions, type SimOptions } from './scenario.js'

class HostHandle {
  #next = 0
  readonly #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  readonly ready: Promise<void>

  constructor(readonly worker: Worker) {
    let onReady: () => void
    let onFail: (e: Error) => void
    this.ready = new Promise<void>((resolve, reject) => {
      onReady = resolve
      onFail = reject
    })
    worker.on(
      'message',
      (m: { id?: number; result?: unknown; error?: string; ready?: boolean; fatal?: string }) => {
        if (m.ready) return onReady()
        if (m.fatal) return onFail(new Error(m.fatal))
        const w = this.#waiting.get(m.id!)
        if (!w) return
        this.#waiting.delete(m.id!)
        if (m.error) w.reject(new Error(m.error))
        else w.resolve(m.result)
      },
    )
    const fail = (err: Error) => {
      this.#dead ??= err
      onFail(err)
      for (const w of this.#waiting.values()) w.reject(err)
      this.#waiting.clear()
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`a simulation host thread exited (code ${code})`)))
  }

  #dead: Error | undefined

  call<T>(command: HostCommand): Promise<T> {
    const id = this.#next++
    if (this.#dead) return Promise.reject(this.#dead)
    return new Promise<T>((resolve, reject) => {
      this.#waiting.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.worker.postMessage({ ...command, id })
    })
  }
}

const rssMb = () => process.memoryUsage().rss / 1024 / 1024
const log = (line: string) => process.stderr.write(`[sim] ${line}\n`)

export interface SimRun {
  result: SimResult
  summary: SimSummary
}

/**
 * The slowdown `auto` picks: one per 25 simulated nodes, at least 4. A settled node costs the simulator
 * about 10-20 ms of CPU per simulated second (pings of the connection monitor, DHT and exchange
 * refreshes) and a join a few hundred ms: at a slowdown of 1, 100 nodes on one thread kept it 100% busy,
 * event-loop lag passed libp2p's ping timeouts, the connection monitor aborted connections, and the
 * mesh spiralled into connection churn (a dial per node and second) that real nodes, each with its own
 * CPU, do not see. The earlier default (one per 60, at least 2) still starved the node threads of a
 * 2-core machine (99 % busy, docs/scale.md "Starvation, measured"): 100 nodes at 2 against 4, and 300
 * at 6 against 12, reached their topic peers several times slower, some never, at 4 and 12 all did.
 */
export function autoSlowdown(o: SimOptions): number {
  return Math.max(4, Math.ceil((o.nodes + o.bootstrap) / 25))
}

/**
 * Runs one simulation and returns its figures (the CLI below prints them). Installs the run's clock
 * (time dilation) in this thread for the run and takes it away at the end: one run at a time.
 */
export async function runSimulation(o: SimOptions, progress: (line: string) => void = log): Promise<SimRun> {
  if (o.slowdown === 0) o.slowdown = autoSlowdown(o)
  const scenario = buildScenario(o)
  const root = await mkdtemp(join(tmpdir(), 'meshkit-sim-'))
  const epoch = realNow()
  const uninstallClock = installSlowdown(o.slowdown, epoch)
  const wallStart = realNow()
  const hostCount = 1 + scenario.hosts
  // a MessageChannel between every two hosts
  const ports: Array<Array<[number, MessagePort]>> = Array.from({ length: hostCount }, () => [])
  for (let a = 0; a < hostCount; a++) {
    for (let b = a + 1; b < hostCount; b++) {
      const { port1, port2 } = new MessageChannel()
      ports[a].push([b, port1])
      ports[b].push([a, port2])
    }
  }
  const routes: Array<[string, number]> = scenario.nodes.map((n) => [n.ip, n.host])
  const hosts: HostHandle[] = []
  try {
    for (let h = 0; h < hostCount; h++) {
      const init: HostInit = {
        host: h,
        nodes: scenario.nodes.filter((n) => n.host === h),
        routes,
        options: o,
        topicSize: scenario.topicSize,
        root,
        ports: ports[h],
        slowdown: o.slowdown,
        epoch,
      }
      const worker = new Worker(new URL('./host-entry.js', import.meta.url), {
        workerData: init,
        transferList: ports[h].map(([, p]) => p),
        // the worker's stdout would interleave with the result lines
        stdout: true,
      })
      worker.stdout.resume()
      hosts.push(new HostHandle(worker))
    }
    await Promise.all(hosts.map((h) => h.ready))
    const rssBaseMb = rssMb()
    let rssMaxMb = rssBaseMb
    progress(
      `${o.nodes} nodes + ${o.bootstrap} bootstrap, ${o.topics} topics, ${o.latency} ms, arrival ${o.arrival}` +
        `${o.churn ? `, churn ${o.churn}/min (${o.churnMode})` : ''}, impl ${o.impl}; ${hostCount} threads, time x${slowdown()} slower, base RSS ${Math.round(rssBaseMb)} MB`,
    )
    const bootstrapAddrs = await hosts[0].call<string[]>({ cmd: 'go', t0: now(), bootstrapAddrs: [] })
    const t0 = now() + 100
    await hosts[0].call({ cmd: 'epoch', t0 })
    await Promise.all(hosts.slice(1).map((h) => h.call({ cmd: 'go', t0, bootstrapAddrs })))
    const lastEvent = Math.max(...scenario.nodes.map((n) => Math.max(n.arriveAt, n.leaveAt ?? 0)))
    let arrivalsDoneAt: number | undefined
    let lastLog = 0
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000))
      const p = await Promise.all(hosts.slice(1).map((h) => h.call<HostProgress>({ cmd: 'progress' })))
      rssMaxMb = Math.max(rssMaxMb, rssMb())
      const started = p.reduce((a, x) => a + x.started, 0)
      const pairs = p.reduce((a, x) => a + x.pairs, 0)
      const reached = p.reduce((a, x) => a + x.reached, 0)
      const t = now() - t0
      const allArrived = p.every((x) => x.arrivalsDone)
      if (allArrived && arrivalsDoneAt === undefined) arrivalsDoneAt = t
      if (realNow() - lastLog >= 5000) {
        lastLog = realNow()
        progress(
          `t=${(t / 1000).toFixed(0)}s (wall ${((realNow() - wallStart) / 1000).toFixed(0)} s) started ${started}/${scenario.nodes.length - o.bootstrap} reached ${reached}/${pairs}` +
            ` lag p99 ${p.map((x) => x.lagP99Ms).join('/')} ms gc ${p.map((x) => `${x.gcMs}/${x.gcMaxMs} ${JSON.stringify(x.gcByKind)} heap ${x.heapMb}/${x.heapLimitMb} ext ${x.externalMb}`).join(' ')} ms cpu ${p.map((x) => x.cpuMs).join('/')} ms rss ${Math.round(rssMb())} MB`,
        )
      }
      if (arrivalsDoneAt === undefined || t < lastEvent) continue
      if (reached >= pairs || t - arrivalsDoneAt > o.settle * 1000) break
    }
    const snapJoin = await Promise.all(
      hosts.map((h) =>
        h.call<{ host: number; at: number; cpuMs: number }>({ cmd: 'snapshot', name: 'join' }),
      ),
    )
    const joinEnd = snapJoin[1]?.at ?? Math.round(now() - t0)
    const rssJoinMb = rssMb()
    rssMaxMb = Math.max(rssMaxMb, rssJoinMb)
    progress(`join phase over at ${(joinEnd / 1000).toFixed(1)} s; background window ${o.background} s`)
    const bgUntil = now() + o.background * 1000
    while (now() < bgUntil) {
      await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, bgUntil - now()))))
      rssMaxMb = Math.max(rssMaxMb, rssMb())
    }
    const snapBg = await Promise.all(
      hosts.map((h) =>
        h.call<{ host: number; at: number; cpuMs: number }>({ cmd: 'snapshot', name: 'background' }),
      ),
    )
    const finals = await Promise.all(hosts.map((h) => h.call<HostFinal>({ cmd: 'final' })))
    const phases: RunPhases = {
      joinEnd,
      backgroundEnd: snapBg[1]?.at ?? Math.round(now() - t0),
      wallMs: Math.round(realNow() - wallStart),
      rssBaseMb,
      rssMaxMb,
      rssJoinMb,
      cpuAtJoin: Object.fromEntries(snapJoin.map((s) => [s.host, s.cpuMs])),
      cpuAtBackground: Object.fromEntries(snapBg.map((s) => [s.host, s.cpuMs])),
    }
    progress('stopping nodes')
    await Promise.race([
      Promise.all(hosts.map((h) => h.call({ cmd: 'stop' }).catch(() => {}))),
      new Promise((r) => setTimeout(r, 30_000)),
    ])
    phases.wallMs = Math.round(realNow() - wallStart)
    return analyze(o, finals, phases, Object.keys(scenario.topicSize).length)
  } finally {
    await Promise.all(hosts.map((h) => h.worker.terminate().catch(() => 0)))
    await rm(root, { recursive: true, force: true }).catch(() => {})
    uninstallClock()
  }
}

async function cli(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const { result, summary } = await runSimulation(o)
  const r = result
  const lines: Record<string, unknown>[] = [
    {
      run: {
        label: o.label,
        options: o,
        encrypter: r.encrypter,
        transport: r.transport,
        nodes: r.nodes,
        topics: r.topics,
        memberships: r.memberships,
        topicsPerNode: r.topicsPerNode,
        phases: r.phases,
      },
    },
    { rendezvous: r.rendezvous },
    { perJoin: r.perJoin },
    { background: r.background },
    { load: r.load },
    { dht: r.dht },
    { memory: r.memory },
    { hosts: r.hosts },
  ]
  for (const line of lines) console.log(JSON.stringify(line))
  if (o.out) await writeFile(o.out, `${JSON.stringify({ result, summary }, null, 1)}\n`)
  console.log(JSON.stringify({ summary }))
}

if (import.meta.url === `file://${process.argv[1]}`) {
  cli().then(
    () => process.exit(0),
    (err) => {
      console.error(err)
      process.exit(1)
    },
  )
}
