/**
 * A V8 CPU profile (node:inspector Profiler) of a phase, with self time attributed to phases of a
 * connection by the package or file each sampled function lives in.
 *
 * A frame without a package of its own (Node's internals `node:*`, native functions, V8 builtins) is
 * charged to the nearest caller that has one (a `socket.write` from yamux counts as yamux, a hash from
 * noise as noise); frames with no such caller are `node (event loop, sockets, timers)`. GC and V8's
 * `(program)` are their own rows; `(idle)` is left out.
 */
import { Session } from 'node:inspector/promises'

interface CallFrame {
  functionName: string
  url: string
}

interface ProfileNode {
  id: number
  callFrame: CallFrame
  hitCount?: number
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
  timeDeltas?: number[]
}

/** [phase, test on the file URL] in order: the first match wins. */
const PHASES: [string, RegExp][] = [
  ['meshkit: kad-topics', /^(?!.*\/node_modules\/).*\/dist\/plugins\/kad-topics\//],
  ['meshkit: jaccard-clusters', /^(?!.*\/node_modules\/).*\/dist\/plugins\/jaccard-clusters\//],
  ['meshkit: other plugins', /^(?!.*\/node_modules\/).*\/dist\/plugins\//],
  [
    'meshkit: data-dir lock check (timer, per node)',
    /^(?!.*\/node_modules\/).*\/dist\/src\/core\/(lock-record|data-dir-lock)\.js/,
  ],
  ['meshkit: core', /^(?!.*\/node_modules\/).*\/dist\/src\//],
  ['benchmark harness', /^(?!.*\/node_modules\/).*\/dist\/bench\//],
  ['transport (tcp)', /\/@libp2p\/tcp\//],
  ['transport (quic)', /\/@chainsafe\/libp2p-quic\/|\/libp2p-quic/],
  [
    'security handshake (noise + crypto)',
    /\/@chainsafe\/libp2p-noise\/|\/@noble\/|\/@chainsafe\/as-|\/@libp2p\/crypto\/|\/asn1js\/|\/@peculiar\//,
  ],
  ['muxer (yamux)', /\/@chainsafe\/libp2p-yamux\//],
  ['multistream-select', /\/@libp2p\/multistream-select\//],
  ['identify', /\/@libp2p\/identify\//],
  [
    'peer store',
    /\/@libp2p\/peer-store\/|\/@libp2p\/peer-record\/|\/datastore-core\/|\/interface-datastore\//,
  ],
  ['kad-dht (routing table, queries)', /\/@libp2p\/kad-dht\//],
  ['ping', /\/@libp2p\/ping\//],
  ['loggers (@libp2p/logger, weald, debug)', /\/@libp2p\/logger\/|\/weald\/|\/debug\//],
  ['libp2p core (upgrader, connection manager, registrar)', /\/libp2p\/dist\//],
  ['libp2p utils (streams, queues)', /\/@libp2p\/utils\//],
  ['events (main-event)', /\/main-event\//],
  [
    'encoding (protons, multiaddr, multiformats, uint8arrays)',
    /\/protons-runtime\/|\/@multiformats\/|\/multiformats\/|\/uint8arrays\/|\/uint8arraylist\/|\/uint8-varint\/|\/@libp2p\/peer-id\//,
  ],
  ['zod', /\/zod\//],
  [
    'hyperswarm stack',
    /\/hyperswarm\/|\/hyperdht\/|\/dht-rpc\/|\/udx-native\/|\/noise-handshake\/|\/noise-curve-ed\/|\/sodium-|\/protomux\/|\/compact-encoding|\/@hyperswarm\/|\/b4a\/|\/streamx\/|\/kademlia-routing-table\/|\/bare-|\/hypercore-crypto\/|\/blind-relay\/|\/@hyperswarm\/secret-stream\//,
  ],
  ['other packages', /\/node_modules\//],
]

const NODE_CORE = 'node (event loop, sockets, timers)'

function phaseOf(url: string): string | undefined {
  if (!url || url.startsWith('node:')) return undefined
  for (const [phase, test] of PHASES) if (test.test(url)) return phase
  return 'other (bench, unknown)'
}

/** "node_modules/@libp2p/kad-dht/dist/src/routing-table/index.js" -> a short, readable file name. */
function shortFile(url: string): string {
  const i = url.lastIndexOf('/node_modules/')
  if (i >= 0) return url.slice(i + '/node_modules/'.length)
  const d = url.indexOf('/dist/')
  return d >= 0 ? `meshkit:${url.slice(d + '/dist/'.length)}` : url
}

export interface Breakdown {
  /** Total sampled time without idle (ms). */
  total_ms: number
  /** ms per phase (self time, see above), largest first. */
  phases: Record<string, number>
  /** The files with the most self time of their own (ms), largest first. */
  top_files: [string, number][]
  /** The functions with the most self time after attribution (ms), largest first. */
  top_functions: [string, number][]
}

export function breakdown(profile: Profile, scale = 1): Breakdown {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  // self time per node from the samples and their time deltas (µs)
  const self = new Map<number, number>()
  const samples = profile.samples ?? []
  const deltas = profile.timeDeltas ?? []
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i + 1] ?? 0
    self.set(samples[i], (self.get(samples[i]) ?? 0) + dt)
  }
  const phaseCache = new Map<number, string>()
  const attributed = (id: number): string => {
    const hit = phaseCache.get(id)
    if (hit) return hit
    const node = byId.get(id)
    let phase: string | undefined
    if (node) {
      const fn = node.callFrame.functionName
      if (fn === '(garbage collector)') phase = 'GC'
      else if (fn === '(program)') phase = 'V8 (program)'
      else if (fn === '(idle)') phase = '(idle)'
      else phase = phaseOf(node.callFrame.url)
    }
    if (!phase) {
      const up = parent.get(id)
      phase =
        up === undefined || byId.get(up)?.callFrame.functionName === '(root)' ? NODE_CORE : attributed(up)
    }
    phaseCache.set(id, phase)
    return phase
  }
  const phases = new Map<string, number>()
  const files = new Map<string, number>()
  const functions = new Map<string, number>()
  let total = 0
  for (const [id, us] of self) {
    const phase = attributed(id)
    if (phase === '(idle)') continue
    total += us
    phases.set(phase, (phases.get(phase) ?? 0) + us)
    const node = byId.get(id)
    if (!node) continue
    const url = node.callFrame.url
    const file = url ? shortFile(url) : `(${phase})`
    files.set(file, (files.get(file) ?? 0) + us)
    const fn = `${node.callFrame.functionName || '(anonymous)'} ${url ? shortFile(url) : `[${phase}]`}`
    functions.set(fn, (functions.get(fn) ?? 0) + us)
  }
  const ms = (us: number) => Math.round((us / 1000) * scale * 100) / 100
  const sorted = (m: Map<string, number>, top: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => [k, ms(v)] as [string, number])
  return {
    total_ms: ms(total),
    phases: Object.fromEntries(sorted(phases, 100)),
    top_files: sorted(files, 25),
    top_functions: sorted(functions, 25),
  }
}

/** Profiles `run()` (sampling every 200 µs). */
export async function profiled<T>(run: () => Promise<T>): Promise<{ result: T; profile: Profile }> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 200 })
  await session.post('Profiler.start')
  try {
    const result = await run()
    const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: Profile }
    return { result, profile }
  } finally {
    session.disconnect()
  }
}
