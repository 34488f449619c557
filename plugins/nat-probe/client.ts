/**
 * The classifier's side: gathers evidence against probe servers (and STUN servers), then judges it.
 *
 * Per protocol, the RFC 5780 tests:
 * - mapping: one local port contacts every server endpoint (two ports, two IPs) and notes the address
 *   each saw; the same mapped address everywhere is endpoint-independent mapping, different ones are
 *   symmetric; equal to the local address (an address of this host) is no NAT at all.
 * - filtering: a fresh local port contacts the server's main endpoint only, then asks for an unsolicited
 *   packet (UDP) or connection (TCP) from the server's other port, and from its other IP: which get in.
 *
 * The verdict ({@link judge}) is never a guess: without two server IPs answering, or without a filtering
 * test whose control probe was answered, it is `unknown`.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { createRequire } from 'node:module'
import { connect, createServer, type Server } from 'node:net'
import { networkInterfaces } from 'node:os'
import { type NatType, sleep } from 'meshkit/plugin'
import type { Corroboration } from './observed.js'
import {
  CLIENT_REQUEST_BYTES,
  encodeMessage,
  joinAddr,
  type ProbeMessage,
  parseMessage,
  splitAddr,
  type Via,
} from './wire.js'

export type { NatType }

export interface MappingObservation {
  /** The server endpoint contacted (ip:port). */
  server: string
  source: 'probe' | 'stun'
  /** The address it saw us at; undefined when it never answered. */
  mapped?: string
  /** Requests sent / answers received (loss estimate). */
  sent: number
  answered: number
}

export interface FilteringObservation {
  /** The server endpoint contacted first (the only one this local port ever talked to). */
  server: string
  /** The local port's mapped address, from the control probe; undefined: the control got no answer. */
  mapped?: string
  /** Did the unsolicited packet / connection get in? */
  in: boolean
  /** Where it came from, when it got in. */
  from?: string
  /** Requests for it (UDP) or callback attempts the server makes (TCP). */
  attempts: number
  error?: string
  /** The server answered the request with a refusal (e.g. its rate limit): an answer, not a gap. */
  serverRefused?: boolean
}

export interface ProtocolEvidence {
  protocol: 'udp' | 'tcp'
  /** The local address of the mapping test (0.0.0.0 when bound to every interface). */
  local?: string
  /** This host's own IPv4 addresses (to recognise "no NAT"). */
  hostAddresses: string[]
  mappings: MappingObservation[]
  filtering: { otherPort?: FilteringObservation; otherIp?: FilteringObservation }
  /** Why a test could not run. */
  notes: string[]
}

export interface ProtocolVerdict {
  type: NatType
  /** 0..1: how sure, from how much evidence and the loss seen; 0 for unknown. */
  confidence: number
  /** The reasoning in one line. */
  reason: string
  mapping: 'none' | 'endpoint-independent' | 'endpoint-dependent' | 'unknown'
  filtering: 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent' | 'unknown'
  evidence: ProtocolEvidence
  ms: number
  /** The probe's own confidence, before the other sources ({@link Corroboration}) adjusted it. */
  probeConfidence?: number
  /** What identify's observed addresses and AutoNAT v2 say about this verdict (absent ones included). */
  corroboration?: Corroboration[]
}

const round2 = (x: number) => Math.round(x * 100) / 100

/** Judges one protocol's evidence: the NAT type, its confidence and why. Pure. */
export function judge(e: ProtocolEvidence): Omit<ProtocolVerdict, 'ms' | 'evidence'> {
  const answered = e.mappings.filter((m) => m.mapped !== undefined)
  const unknown = (reason: string, mapping: ProtocolVerdict['mapping'] = 'unknown') => ({
    type: 'unknown' as const,
    confidence: 0,
    reason,
    mapping,
    filtering: 'unknown' as const,
  })
  if (answered.length === 0) return unknown('no probe server answered')
  const mappedSet = new Set(answered.map((m) => m.mapped))
  const serverIps = new Set(answered.map((m) => splitAddr(m.server).ip))
  // loss estimate over every request that expected an answer (Laplace-smoothed)
  const sent = e.mappings.reduce((n, m) => n + m.sent, 0)
  const got = e.mappings.reduce((n, m) => n + m.answered, 0)
  const loss = Math.min(0.9, (sent - got + 1) / (sent + 2))
  if (mappedSet.size > 1) {
    // different mapped addresses for different destinations: definitive, whatever the filtering
    return {
      type: 'symmetric',
      confidence: round2(answered.length >= 3 ? 0.99 : 0.95),
      reason: `${mappedSet.size} different mapped addresses for ${answered.length} server endpoints`,
      mapping: 'endpoint-dependent',
      filtering: 'unknown',
    }
  }
  if (serverIps.size < 2)
    return unknown(
      `the same mapping from ${answered.length} endpoint(s) of only one server IP: endpoint-independent mapping is not shown`,
    )
  const mapped = [...mappedSet][0]!
  const { ip: mIp } = splitAddr(mapped)
  const noNat =
    e.hostAddresses.includes(mIp) &&
    e.local !== undefined &&
    splitAddr(e.local).port === splitAddr(mapped).port &&
    (splitAddr(e.local).ip === mIp || splitAddr(e.local).ip === '0.0.0.0')
  const mapping = noNat ? ('none' as const) : ('endpoint-independent' as const)
  let confidence = answered.length >= 3 ? 0.99 : 0.95
  const { otherPort, otherIp } = e.filtering
  const valid = (f?: FilteringObservation) => f !== undefined && f.mapped !== undefined && !f.error
  // an unsolicited packet that got in is proof; one that did not is evidence as strong as the tries
  const outFactor = (f: FilteringObservation) =>
    e.protocol === 'udp' ? 1 - loss ** Math.max(1, f.attempts) : 1 - 0.2 ** Math.max(1, f.attempts)
  if (!valid(otherIp))
    return unknown(
      `mapping ${mapping}; the other-IP filtering test did not run (${otherIp?.error ?? 'no answer'})`,
      mapping,
    )
  const what = noNat
    ? 'no NAT (mapped = local address)'
    : `one mapping ${mapped} for ${answered.length} endpoints`
  if (otherIp!.in) {
    if (valid(otherPort) && !otherPort!.in)
      return unknown(`inconsistent filtering: other IP got in, other port did not (${what})`, mapping)
    return {
      type: noNat ? 'public' : 'full-cone',
      confidence: round2(confidence),
      reason: `${what}; unsolicited traffic from another server IP got in`,
      mapping,
      filtering: 'endpoint-independent',
    }
  }
  confidence *= outFactor(otherIp!)
  if (!valid(otherPort))
    return unknown(`${what}; other IP filtered, but the other-port test did not run`, mapping)
  if (otherPort!.in)
    return {
      type: 'restricted-cone',
      confidence: round2(confidence),
      reason: `${what}; the server's other port got in, its other IP did not${noNat ? ' (a firewall, no NAT)' : ''}`,
      mapping,
      filtering: 'address-dependent',
    }
  confidence *= outFactor(otherPort!)
  return {
    type: 'port-restricted-cone',
    confidence: round2(confidence),
    reason: `${what}; neither the server's other port nor its other IP got in${noNat ? ' (a firewall, no NAT)' : ''}`,
    mapping,
    filtering: 'address-and-port-dependent',
  }
}

/**
 * Whether a test lacks answers: a probe server endpoint that never answered the mapping test, a filtering
 * test that could not run (its control probe or callback request got no answer), or none at all. Such a
 * gap is not evidence about the NAT; the classifier tries once more before it settles on `unknown`.
 */
export function lackedAnswers(e: ProtocolEvidence): boolean {
  const probes = e.mappings.filter((m) => m.source === 'probe')
  if (probes.length === 0 || probes.some((m) => m.mapped === undefined)) return true
  const { otherPort, otherIp } = e.filtering
  // a refusal by the server (its rate limit) is an answer: trying again at once would be refused too
  return [otherPort, otherIp].some(
    (f) => f === undefined || (!f.serverRefused && (f.error !== undefined || f.mapped === undefined)),
  )
}

/** This host's IPv4 addresses, loopback included. */
export function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((i) => i?.family === 'IPv4')
    .map((i) => i!.address)
}

let nextId = 0
const newId = (tag: string) => `${tag}-${process.pid}-${Date.now().toString(36)}-${nextId++}`

/** The longest stretch of one event-loop stall that counts towards a probe's wait. */
const STALL_CAP_MS = 200
const TICK_MS = 100

/**
 * Calls `expire` once this process has been able to run for `ms`, and only after the input that already
 * arrived has been handled. A probe's wait is about the network, not about this process: on a loaded
 * machine (other processes starting, GC) the event loop can stall for seconds, and a plain timer then
 * fires before the answers that arrived meanwhile are read (Node runs timers before I/O callbacks), so a
 * reply that came in time is taken for a lost one — a wrong `unknown`, or a filtering test that reads a
 * packet that got in as filtered. Here a stall counts at most {@link STALL_CAP_MS}, and the expiry runs
 * from `setImmediate` (after the poll phase). Returns a cancel function.
 */
export function activeDeadline(ms: number, expire: () => void): () => void {
  let active = 0
  let last = performance.now()
  let timer: NodeJS.Timeout | undefined
  let immediate: NodeJS.Immediate | undefined
  const tick = () => {
    const now = performance.now()
    active += Math.min(now - last, STALL_CAP_MS)
    last = now
    if (active >= ms) immediate = setImmediate(expire)
    else timer = setTimeout(tick, Math.min(TICK_MS, ms - active))
  }
  timer = setTimeout(tick, Math.max(0, Math.min(TICK_MS, ms)))
  return () => {
    clearTimeout(timer)
    if (immediate) clearImmediate(immediate)
  }
}

export interface ProbeOptions {
  /** The probe servers' main UDP endpoints (ip:port); the TCP ones too unless `tcpServers` is given. */
  servers: string[]
  /** The probe servers' main TCP endpoints. @default servers */
  tcpServers?: string[]
  /** STUN servers (ip:port), extra UDP mapping evidence. */
  stun: string[]
  /** Local IP to bind (default: every interface). */
  localAddress?: string
  /** Longest wait for one answer (ms). */
  timeoutMs: number
  /** Interval between UDP retransmissions (ms). */
  retransmitMs: number
  signal?: AbortSignal
}

// ------------------------------------------------------------------------------------ fresh local ports

/**
 * Local ports this process used for probes lately, per protocol. A filtering test must run from a port
 * whose NAT mapping has contacted only the main server: a cone NAT keeps a mapping (and, when
 * restricted, the remote IPs it contacted) for minutes after its last packet, and the kernel may hand a
 * just-released port out again (Node's servers bind with SO_REUSEADDR). A reused port that had contacted
 * the server's other IP lets the other-IP test in and turns a restricted cone into a "full cone".
 */
const recentPorts = { udp: new Map<number, number>(), tcp: new Map<number, number>() }
/** Longer than the mapping lifetime of common NATs (and the lab's 180 s). */
const RECENT_PORT_MS = 300_000

/** Remembers `port` as used for `protocol` probes now. */
function markUsed(protocol: 'udp' | 'tcp', port: number): void {
  const now = Date.now()
  const used = recentPorts[protocol]
  for (const [p, at] of used) if (now - at > RECENT_PORT_MS) used.delete(p)
  used.set(port, now)
}

/** Whether `port` was used for `protocol` probes within {@link RECENT_PORT_MS}. */
function usedLately(protocol: 'udp' | 'tcp', port: number): boolean {
  const at = recentPorts[protocol].get(port)
  return at !== undefined && Date.now() - at <= RECENT_PORT_MS
}

// ----------------------------------------------------------------------------------------------- UDP

/** A UDP socket on a port no probe of this process used lately (see {@link recentPorts}); marked used. */
async function bindFreshUdp(ip?: string): Promise<Socket> {
  for (let tries = 0; ; tries++) {
    const s = await bindUdp(ip)
    const port = s.address().port
    if (!usedLately('udp', port) || tries >= 20) {
      markUsed('udp', port)
      return s
    }
    s.close()
  }
}

function bindUdp(ip = '0.0.0.0', port = 0): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    s.once('error', reject)
    s.bind(port, ip, () => {
      s.off('error', reject)
      s.on('error', () => {})
      resolve(s)
    })
  })
}

function sendProbe(s: Socket, to: string, id: string, via?: Via): void {
  const base = JSON.stringify({ v: 1, t: 'probe', id, via, pad: '' } satisfies ProbeMessage)
  const msg = encodeMessage({
    v: 1,
    t: 'probe',
    id,
    via,
    pad: '.'.repeat(Math.max(0, CLIENT_REQUEST_BYTES - base.length)),
  })
  const { ip, port } = splitAddr(to)
  s.send(msg, port, ip, () => {})
}

/**
 * Sends a probe every `retransmitMs` until an answer comes from `accept` (by default: the address
 * probed) or `timeoutMs` passes.
 */
function udpProbe(
  s: Socket,
  to: string,
  opts: ProbeOptions,
  { via, accept }: { via?: Via; accept?: (from: string) => boolean } = {},
): Promise<{ seen?: ProbeMessage & { t: 'seen' }; from?: string; sent: number }> {
  const id = newId('u')
  let sent = 0
  return new Promise((resolve) => {
    const onMessage = (buf: Buffer, r: RemoteInfo) => {
      const m = parseMessage(buf)
      const from = joinAddr(r.address, r.port)
      if (m?.t !== 'seen' || m.id !== id || m.from !== from) return
      if (accept ? accept(from) : from === to) finish(m, from)
    }
    const tick = () => {
      sent++
      sendProbe(s, to, id, via)
    }
    const timer = setInterval(tick, opts.retransmitMs)
    const cancelDeadline = activeDeadline(opts.timeoutMs, () => finish())
    const onAbort = () => finish()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    function finish(seen?: ProbeMessage & { t: 'seen' }, from?: string) {
      clearInterval(timer)
      cancelDeadline()
      s.off('message', onMessage)
      opts.signal?.removeEventListener('abort', onAbort)
      resolve({ seen, from, sent })
    }
    s.on('message', onMessage)
    tick()
  })
}

interface StunLib {
  createMessage(type: number): { transactionId: Buffer; toBuffer(): Buffer }
  decode(buf: Buffer): {
    transactionId: Buffer
    getXorAddress(): { address: string; port: number } | undefined
  }
  constants: Record<string, number>
}

/** A STUN binding request from socket `s` (same local port as the probes), retransmitted. */
function stunProbe(s: Socket, to: string, opts: ProbeOptions): Promise<MappingObservation> {
  const stun = createRequire(import.meta.url)('stun') as StunLib
  const req = stun.createMessage(stun.constants.STUN_BINDING_REQUEST)
  const bytes = req.toBuffer()
  let sent = 0
  return new Promise((resolve) => {
    const onMessage = (buf: Buffer, r: RemoteInfo) => {
      if (joinAddr(r.address, r.port) !== to) return
      try {
        const res = stun.decode(buf)
        const xor = res.getXorAddress()
        if (xor && Buffer.compare(res.transactionId, req.transactionId) === 0)
          finish(joinAddr(xor.address, xor.port))
      } catch {
        // not STUN
      }
    }
    const tick = () => {
      sent++
      const { ip, port } = splitAddr(to)
      s.send(bytes, port, ip, () => {})
    }
    const timer = setInterval(tick, opts.retransmitMs)
    const cancelDeadline = activeDeadline(opts.timeoutMs, () => finish())
    function finish(mapped?: string) {
      clearInterval(timer)
      cancelDeadline()
      s.off('message', onMessage)
      resolve({ server: to, source: 'stun', mapped, sent, answered: mapped ? 1 : 0 })
    }
    s.on('message', onMessage)
    tick()
  })
}

/**
 * A quick mapping check (for watching, not a verdict): one fresh UDP socket probes each of `endpoints`
 * (usually two server IPs) once, retransmitted until `timeoutMs`; the address each saw, or undefined.
 */
export async function probeMapping(
  endpoints: readonly string[],
  opts: ProbeOptions,
): Promise<Array<{ server: string; mapped?: string }>> {
  // marked used: it contacts the other IP too, so no filtering test may reuse its port soon
  const s = await bindFreshUdp(opts.localAddress)
  try {
    return await Promise.all(
      endpoints.map((to) => udpProbe(s, to, opts).then((r) => ({ server: to, mapped: r.seen?.seen }))),
    )
  } finally {
    s.close()
  }
}

/** The UDP evidence: mapping from every server endpoint (and STUN), filtering of other port / other IP. */
export async function gatherUdp(opts: ProbeOptions): Promise<ProtocolEvidence> {
  const e: ProtocolEvidence = {
    protocol: 'udp',
    hostAddresses: hostAddresses(),
    mappings: [],
    filtering: {},
    notes: [],
  }
  const s = await bindFreshUdp(opts.localAddress)
  try {
    e.local = joinAddr(opts.localAddress ?? '0.0.0.0', s.address().port)
    // the main endpoints first: their answers name the servers' other endpoints
    const first = await Promise.all(
      opts.servers.map((to) => udpProbe(s, to, opts).then((r) => ({ to, ...r }))),
    )
    const endpoints = new Set(opts.servers)
    for (const r of first) {
      e.mappings.push({
        server: r.to,
        source: 'probe',
        mapped: r.seen?.seen,
        sent: r.sent,
        answered: r.seen ? 1 : 0,
      })
      for (const u of r.seen?.udp ?? []) endpoints.add(u)
    }
    const rest = [...endpoints].filter((x) => !opts.servers.includes(x)).slice(0, 8)
    const more = await Promise.all([
      ...rest.map((to) =>
        udpProbe(s, to, opts).then(
          (r): MappingObservation => ({
            server: to,
            source: 'probe',
            mapped: r.seen?.seen,
            sent: r.sent,
            answered: r.seen ? 1 : 0,
          }),
        ),
      ),
      ...opts.stun.map((to) => stunProbe(s, to, opts)),
    ])
    e.mappings.push(...more)
  } finally {
    s.close()
  }
  const main = opts.servers.find((to) => e.mappings.some((m) => m.server === to && m.mapped))
  if (!main) {
    e.notes.push('no probe server answered: no filtering test')
    return e
  }
  const filtering = async (via: Via): Promise<FilteringObservation> => {
    const f = await bindFreshUdp(opts.localAddress)
    try {
      const control = await udpProbe(f, main, opts)
      if (!control.seen)
        return { server: main, in: false, attempts: 0, error: 'the control probe got no answer' }
      // only `main` was ever contacted from this port: does a reply from elsewhere get in?
      const r = await udpProbe(f, main, opts, { via, accept: (from) => from !== main })
      return {
        server: main,
        mapped: control.seen.seen,
        in: r.seen !== undefined,
        from: r.from,
        attempts: r.sent,
      }
    } finally {
      f.close()
    }
  }
  const [otherPort, otherIp] = await Promise.all([filtering('other-port'), filtering('other-ip')])
  e.filtering = { otherPort, otherIp }
  return e
}

// ----------------------------------------------------------------------------------------------- TCP

/** A free local TCP port (asked from the kernel, then released). */
/**
 * A free local TCP port that no probe of this process used lately (see {@link recentPorts}) and not in
 * `avoid`; marked used.
 */
async function freshTcpPort(ip: string | undefined, avoid: ReadonlySet<number> = new Set()): Promise<number> {
  for (let tries = 0; ; tries++) {
    const port = await freePort(ip)
    if ((!usedLately('tcp', port) && !avoid.has(port)) || tries >= 20) {
      markUsed('tcp', port)
      return port
    }
  }
}

function freePort(ip = '0.0.0.0'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, ip, () => {
      const a = srv.address()
      const port = typeof a === 'object' && a ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}

/** One TCP request from local port `localPort`: the server's one-line answer (it closes after). */
function tcpRequest(
  to: string,
  request: ProbeMessage,
  opts: ProbeOptions,
  localPort?: number,
): Promise<{ reply?: ProbeMessage; local?: string; error?: string }> {
  const { ip, port } = splitAddr(to)
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port, localAddress: opts.localAddress ?? '0.0.0.0', localPort })
    let buffered = ''
    let local: string | undefined
    let reply: ProbeMessage | undefined
    let error: string | undefined
    const cancelDeadline = activeDeadline(opts.timeoutMs, () => {
      error ??= `no answer within ${opts.timeoutMs} ms`
      socket.destroy()
    })
    socket.on('connect', () => {
      local = joinAddr(socket.localAddress?.replace(/^::ffff:/, '') ?? '?', socket.localPort ?? 0)
      socket.write(`${JSON.stringify(request)}\n`)
    })
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8')
      const nl = buffered.indexOf('\n')
      if (nl >= 0) reply ??= parseMessage(buffered.slice(0, nl))
      if (buffered.length > 4096) socket.destroy()
    })
    socket.on('error', (err) => {
      error ??= err.message
    })
    // the server closes first, so this side keeps no TIME_WAIT on the port
    socket.on('end', () => socket.end())
    socket.on('close', () => {
      cancelDeadline()
      resolve({ reply, local, error: reply ? undefined : error })
    })
  })
}

/** Listens on `port` (retrying while the port is still held) until a hello with `id` comes, or timeout. */
async function awaitCallback(
  port: number,
  id: string,
  opts: ProbeOptions,
  waitMs: number,
): Promise<{ in: boolean; from?: string }> {
  let server: Server | undefined
  const deadline = Date.now() + waitMs
  while (!server && Date.now() < deadline) {
    server = await new Promise<Server | undefined>((resolve) => {
      const s = createServer()
      s.once('error', () => resolve(undefined))
      s.listen({ host: opts.localAddress ?? '0.0.0.0', port }, () => resolve(s))
    })
    if (!server) await sleep(50, opts.signal)
  }
  if (!server) return { in: false }
  const srv = server
  let stopListening = () => {}
  try {
    return await new Promise((resolve) => {
      // the wait runs from now; a stall while binding does not eat it up
      const cancelDeadline = activeDeadline(Math.max(waitMs / 2, deadline - Date.now()), () =>
        resolve({ in: false }),
      )
      // a stopping node does not wait for the callback
      const onAbort = () => {
        cancelDeadline()
        resolve({ in: false })
      }
      if (opts.signal?.aborted) return onAbort()
      opts.signal?.addEventListener('abort', onAbort, { once: true })
      stopListening = () => opts.signal?.removeEventListener('abort', onAbort)
      srv.on('connection', (socket) => {
        socket.on('error', () => {})
        socket.setTimeout(1000, () => socket.destroy())
        let buffered = ''
        socket.on('data', (chunk: Buffer) => {
          buffered += chunk.toString('utf8')
          const nl = buffered.indexOf('\n')
          if (nl < 0) {
            if (buffered.length > 1024) socket.destroy()
            return
          }
          const m = parseMessage(buffered.slice(0, nl))
          const from = joinAddr(socket.remoteAddress?.replace(/^::ffff:/, '') ?? '?', socket.remotePort ?? 0)
          socket.destroy()
          if (m?.t === 'hello' && m.id === id) {
            cancelDeadline()
            resolve({ in: true, from })
          }
        })
      })
    })
  } finally {
    stopListening()
    await new Promise<void>((r) => srv.close(() => r()))
  }
}

/** The TCP evidence: the same tests over TCP (callbacks for filtering). */
export async function gatherTcp(opts: ProbeOptions): Promise<ProtocolEvidence> {
  const e: ProtocolEvidence = {
    protocol: 'tcp',
    hostAddresses: hostAddresses(),
    mappings: [],
    filtering: {},
    notes: [],
  }
  const servers = opts.tcpServers ?? opts.servers
  const port = await freshTcpPort(opts.localAddress)
  e.local = joinAddr(opts.localAddress ?? '0.0.0.0', port)
  const endpoints: string[] = []
  const observe = async (to: string) => {
    const r = await tcpRequest(to, { v: 1, t: 'probe', id: newId('t') }, opts, port)
    const seen = r.reply?.t === 'seen' ? r.reply : undefined
    e.mappings.push({ server: to, source: 'probe', mapped: seen?.seen, sent: 1, answered: seen ? 1 : 0 })
    if (r.local) e.local = r.local
    if (r.error) e.notes.push(`${to}: ${r.error}`)
    for (const t of seen?.tcp ?? []) if (!endpoints.includes(t) && !servers.includes(t)) endpoints.push(t)
    return seen
  }
  // one after the other from the same local port (the server closes each connection first)
  for (const to of servers) await observe(to)
  for (const to of endpoints.slice(0, 8)) await observe(to)
  const main = servers.find((to) => e.mappings.some((m) => m.server === to && m.mapped))
  if (!main) {
    e.notes.push('no probe server answered over TCP: no filtering test')
    return e
  }
  // two distinct fresh ports, taken before either test runs (two concurrent asks may get the same one)
  const otherPortLocal = await freshTcpPort(opts.localAddress)
  const otherIpLocal = await freshTcpPort(opts.localAddress, new Set([otherPortLocal]))
  const filtering = async (via: Via): Promise<FilteringObservation> => {
    const local = via === 'other-port' ? otherPortLocal : otherIpLocal
    const id = newId('c')
    const r = await tcpRequest(main, { v: 1, t: 'callback', id, via }, opts, local)
    if (r.reply?.t !== 'callback-ok')
      return {
        server: main,
        in: false,
        attempts: 0,
        error: r.reply?.t === 'error' ? r.reply.reason : (r.error ?? 'unexpected answer'),
        ...(r.reply?.t === 'error' ? { serverRefused: true } : {}),
      }
    // the server calls back the address it saw for this connection, from `via`: listen on the same port
    const got = await awaitCallback(local, id, opts, Math.max(3000, opts.timeoutMs * 2))
    return { server: main, mapped: r.reply.seen, in: got.in, from: got.from, attempts: 4 }
  }
  const [otherPort, otherIp] = await Promise.all([filtering('other-port'), filtering('other-ip')])
  e.filtering = { otherPort, otherIp }
  return e
}
