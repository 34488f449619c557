/**
 * A tiny UDP probe for the NAT lab, run as its own Node process inside a lab namespace
 * (`ip netns exec <ns> node dist/test/natlab/udp-probe.js <mode> ...`). Three modes, each printing JSON
 * lines on stdout and exiting by itself within its `--timeout`:
 *
 * - `server --bind ip:port [--bind ip:port ...]`: answers probes (`{t:'probe', id, via?}`) with the source
 *   address it saw, from the socket that received the probe or from the bound socket `via` names (another
 *   port, another IP); and pairs rendezvous registrations (`{t:'register', session, side}`), telling each
 *   side the other's source address as seen here. Prints `{"event":"listening"}` once every socket is
 *   bound. Runs until killed (or `--timeout`, if given).
 * - `check --local ip --server ip:port --alt-port port --alt-ip ip`: RFC 5780-style behaviour test. Mapping:
 *   one socket probes server, server's other port and server's other IP and reports the three mapped
 *   addresses. Filtering: two fresh sockets each probe the server once, then ask for an unsolicited reply
 *   from the other port (same IP) or from the other IP: did it get in? Prints one `{"event":"check"}`.
 * - `punch --local ip --server ip:port --session s --side a|b`: registers at the server (for at most
 *   `--rendezvous-timeout`, default 10 s), learns the peer's mapped address, then both sides send punch
 *   packets at each other for at most `--timeout` (default 3 s), answering to whatever address the
 *   peer's packets really come from (as ICE does with peer-reflexive candidates). Punched = an ack came
 *   back. Prints one `{"event":"punch","result":"punched"|"failed"}`.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { fileURLToPath } from 'node:url'

export interface CheckResult {
  event: 'check'
  /** The socket's own address (host address:port). */
  local: string
  /** Mapped address of one socket as seen from the server's address, its other port and its other IP. */
  mapped: { server: string; otherPort: string; otherIp: string }
  /** Unsolicited replies that got in, after contacting only the server's main address. */
  filtering: { otherPort: boolean; otherIp: boolean }
}

export interface PunchResult {
  event: 'punch'
  result: 'punched' | 'failed'
  side: string
  /** Our mapped address as the server saw it. */
  self?: string
  /** The peer's mapped address as the server saw it (where punches were sent first). */
  peer?: string
  /** Where the peer's packets really came from. */
  peerSeen?: string
  /** Time from learning the peer's address to the first acknowledged punch. */
  ms?: number
  reason?: string
}

type Message =
  | { t: 'probe'; id: string; via?: string }
  | { t: 'seen'; id: string; seen: string; from: string }
  | { t: 'register'; id: string; session: string; side: string }
  | { t: 'peer'; session: string; self: string; peer: string }
  | { t: 'punch'; session: string; side: string }
  | { t: 'ack'; session: string; side: string }
  | { t: 'done'; session: string; side: string }

const addr = (ip: string, port: number) => `${ip}:${port}`
const remote = (r: RemoteInfo) => addr(r.address, r.port)

function splitAddr(a: string): { ip: string; port: number } {
  const i = a.lastIndexOf(':')
  if (i < 0) throw new Error(`not ip:port: ${a}`)
  return { ip: a.slice(0, i), port: Number(a.slice(i + 1)) }
}

function parse(buf: Buffer): Message | undefined {
  try {
    const m = JSON.parse(buf.toString('utf8')) as Message
    return typeof m === 'object' && m !== null && typeof m.t === 'string' ? m : undefined
  } catch {
    return undefined
  }
}

function send(socket: Socket, to: string, message: Message): void {
  const { ip, port } = splitAddr(to)
  // a send to an unreachable peer may fail: a probe is repeated anyway
  socket.send(JSON.stringify(message), port, ip, () => {})
}

function out(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`)
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function bind(ip: string, port = 0): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4')
    socket.once('error', reject)
    socket.bind(port, ip, () => {
      socket.off('error', reject)
      socket.on('error', () => {})
      resolve(socket)
    })
  })
}

const local = (s: Socket) => remote(s.address() as RemoteInfo)

// ---------------------------------------------------------------------------------------------- server

async function server(binds: string[]): Promise<void> {
  const sockets = new Map<string, Socket>()
  const sessions = new Map<string, Map<string, { socket: Socket; seen: string }>>()
  for (const b of binds) {
    const { ip, port } = splitAddr(b)
    const socket = await bind(ip, port)
    sockets.set(local(socket), socket)
    socket.on('message', (buf, rinfo) => {
      const m = parse(buf)
      if (!m) return
      const seen = remote(rinfo)
      if (m.t === 'probe') {
        const via = m.via ? sockets.get(m.via) : socket
        if (!via) return
        send(via, seen, { t: 'seen', id: m.id, seen, from: local(via) })
      } else if (m.t === 'register') {
        const sides = sessions.get(m.session) ?? new Map()
        sessions.set(m.session, sides)
        sides.set(m.side, { socket, seen })
        if (sides.size === 2) {
          const [[, a], [, b]] = [...sides]
          send(a.socket, a.seen, { t: 'peer', session: m.session, self: a.seen, peer: b.seen })
          send(b.socket, b.seen, { t: 'peer', session: m.session, self: b.seen, peer: a.seen })
        }
      }
    })
  }
  out({ event: 'listening', addresses: [...sockets.keys()] })
}

// ----------------------------------------------------------------------------------------------- check

let nextId = 0

/**
 * Sends a probe to `to` (asking for the reply from `via`, if given) every `everyMs` until a reply arrives
 * from `expectFrom` (default: `via ?? to`) or `timeoutMs` passes; the mapped address seen, or undefined.
 */
function probe(
  socket: Socket,
  to: string,
  { via, timeoutMs, everyMs = 150 }: { via?: string; timeoutMs: number; everyMs?: number },
): Promise<string | undefined> {
  const id = `${process.pid}-${nextId++}`
  const expectFrom = via ?? to
  return new Promise((resolve) => {
    const onMessage = (buf: Buffer, rinfo: RemoteInfo) => {
      const m = parse(buf)
      if (m?.t === 'seen' && m.id === id && remote(rinfo) === expectFrom) finish(m.seen)
    }
    const timer = setInterval(() => send(socket, to, { t: 'probe', id, via }), everyMs)
    const deadline = setTimeout(() => finish(undefined), timeoutMs)
    function finish(value: string | undefined) {
      clearInterval(timer)
      clearTimeout(deadline)
      socket.off('message', onMessage)
      resolve(value)
    }
    socket.on('message', onMessage)
    send(socket, to, { t: 'probe', id, via })
  })
}

async function check(opts: {
  localIp: string
  server: string
  altPort: number
  altIp: string
  timeoutMs: number
}): Promise<CheckResult> {
  const { ip: serverIp, port: serverPort } = splitAddr(opts.server)
  const otherPort = addr(serverIp, opts.altPort)
  const otherIp = addr(opts.altIp, serverPort)
  const need = async (p: Promise<string | undefined>, what: string) => {
    const v = await p
    if (v === undefined) throw new Error(`no answer from ${what} within ${opts.timeoutMs} ms`)
    return v
  }
  const mappingTest = async () => {
    const s = await bind(opts.localIp)
    try {
      const a = await need(probe(s, opts.server, { timeoutMs: opts.timeoutMs }), opts.server)
      const b = await need(probe(s, otherPort, { timeoutMs: opts.timeoutMs }), otherPort)
      const c = await need(probe(s, otherIp, { timeoutMs: opts.timeoutMs }), otherIp)
      return { s: local(s), mapped: { server: a, otherPort: b, otherIp: c } }
    } finally {
      s.close()
    }
  }
  const filteringTest = async (via: string) => {
    const s = await bind(opts.localIp)
    try {
      await need(probe(s, opts.server, { timeoutMs: opts.timeoutMs }), opts.server)
      // only the server's main address was ever contacted from this socket: does `via` get in?
      return (await probe(s, opts.server, { via, timeoutMs: opts.timeoutMs })) !== undefined
    } finally {
      s.close()
    }
  }
  const [m, fPort, fIp] = await Promise.all([mappingTest(), filteringTest(otherPort), filteringTest(otherIp)])
  return { event: 'check', local: m.s, mapped: m.mapped, filtering: { otherPort: fPort, otherIp: fIp } }
}

// ----------------------------------------------------------------------------------------------- punch

async function punch(opts: {
  localIp: string
  server: string
  session: string
  side: string
  timeoutMs: number
  rendezvousTimeoutMs: number
}): Promise<PunchResult> {
  const s = await bind(opts.localIp)
  const { session, side } = opts
  try {
    // rendezvous: register until the server names the peer
    const rendezvous = await new Promise<{ self: string; peer: string } | undefined>((resolve) => {
      const onMessage = (buf: Buffer) => {
        const m = parse(buf)
        if (m?.t === 'peer' && m.session === session) finish({ self: m.self, peer: m.peer })
      }
      const register = () => send(s, opts.server, { t: 'register', id: side, session, side })
      const timer = setInterval(register, 150)
      const stop = setTimeout(() => finish(undefined), opts.rendezvousTimeoutMs)
      function finish(v: { self: string; peer: string } | undefined) {
        clearInterval(timer)
        clearTimeout(stop)
        s.off('message', onMessage)
        resolve(v)
      }
      s.on('message', onMessage)
      register()
    })
    if (!rendezvous) return { event: 'punch', result: 'failed', side, reason: 'no rendezvous' }
    const { self, peer } = rendezvous
    const started = Date.now()
    const deadline = started + opts.timeoutMs
    let peerSeen: string | undefined
    let acked: number | undefined
    let peerDone = false
    s.on('message', (buf, rinfo) => {
      const m = parse(buf)
      if (!m || !('session' in m) || m.session !== session || !('side' in m) || m.side === side) return
      if (m.t === 'punch') {
        peerSeen = remote(rinfo)
        send(s, peerSeen, { t: 'ack', session, side })
      } else if (m.t === 'ack') {
        peerSeen = remote(rinfo)
        acked ??= Date.now()
      } else if (m.t === 'done') peerDone = true
    })
    // punch at the server-observed address and, once seen, where the peer's packets really come from
    while (Date.now() < deadline) {
      if (acked !== undefined) {
        send(s, peerSeen!, { t: 'done', session, side })
        // linger so the peer gets its ack too
        if (peerDone || Date.now() - acked > 1000) break
      } else {
        send(s, peer, { t: 'punch', session, side })
        if (peerSeen && peerSeen !== peer) send(s, peerSeen, { t: 'punch', session, side })
      }
      await sleep(50)
    }
    if (acked === undefined)
      return { event: 'punch', result: 'failed', side, self, peer, peerSeen, reason: 'no ack before timeout' }
    // let the last 'done' leave before the socket closes
    await sleep(20)
    return { event: 'punch', result: 'punched', side, self, peer, peerSeen, ms: acked - started }
  } finally {
    s.close()
  }
}

// ----------------------------------------------------------------------------------------------- count

export interface CountResult {
  event: 'count'
  sent: number
  answered: number
}

async function count(opts: {
  localIp: string
  server: string
  count: number
  intervalMs: number
  timeoutMs: number
}): Promise<CountResult> {
  const s = await bind(opts.localIp)
  const answered = new Set<string>()
  s.on('message', (buf) => {
    const m = parse(buf)
    if (m?.t === 'seen') answered.add(m.id)
  })
  for (let i = 0; i < opts.count; i++) {
    send(s, opts.server, { t: 'probe', id: `c${i}` })
    await sleep(opts.intervalMs)
  }
  await sleep(opts.timeoutMs)
  s.close()
  return { event: 'count', sent: opts.count, answered: answered.size }
}

// ------------------------------------------------------------------------------------------------ main

function args(argv: string[]): Map<string, string[]> {
  const map = new Map<string, string[]>()
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i]
    if (!key.startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${key}`)
    map.set(key.slice(2), [...(map.get(key.slice(2)) ?? []), argv[++i]])
  }
  return map
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2)
  const a = args(rest)
  const one = (k: string) => {
    const v = a.get(k)?.[0]
    if (v === undefined) throw new Error(`--${k} is required`)
    return v
  }
  const timeoutMs = Number(a.get('timeout')?.[0] ?? 0)
  if (mode === 'server') {
    await server(a.get('bind') ?? [])
    if (timeoutMs > 0) setTimeout(() => process.exit(0), timeoutMs)
    return
  }
  // a client never runs unbounded
  setTimeout(
    () => {
      out({ event: 'error', message: 'overall timeout' })
      process.exit(2)
    },
    (timeoutMs || 5000) * 3 + 15_000,
  ).unref()
  if (mode === 'check') {
    out(
      await check({
        localIp: one('local'),
        server: one('server'),
        altPort: Number(one('alt-port')),
        altIp: one('alt-ip'),
        timeoutMs: timeoutMs || 1500,
      }),
    )
  } else if (mode === 'punch') {
    out(
      await punch({
        localIp: one('local'),
        server: one('server'),
        session: one('session'),
        side: one('side'),
        timeoutMs: timeoutMs || 3000,
        rendezvousTimeoutMs: Number(a.get('rendezvous-timeout')?.[0] ?? 10_000),
      }),
    )
  } else if (mode === 'count') {
    out(
      await count({
        localIp: one('local'),
        server: one('server'),
        count: Number(one('count')),
        intervalMs: Number(a.get('interval')?.[0] ?? 5),
        timeoutMs: timeoutMs || 500,
      }),
    )
  } else throw new Error(`unknown mode ${mode} (server, check, punch, count)`)
  process.exit(0)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    out({ event: 'error', message: err instanceof Error ? err.message : String(err) })
    process.exit(1)
  })
}
