/** The TCP tests (see client.ts): mapping over connections from one local port, filtering by callbacks. */
import { connect, createServer, type Server } from 'node:net'
import { sleep } from 'meshkit/plugin'
import { activeDeadline } from './active-deadline.js'
import type { FilteringObservation, ProbeOptions, ProtocolEvidence } from './client.js'
import { freshTcpPort, hostAddresses, newId } from './probe-sockets.js'
import { joinAddr, type ProbeMessage, parseMessage, splitAddr, type Via } from './wire.js'

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
