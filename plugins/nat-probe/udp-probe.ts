/** The UDP tests (see client.ts): mapping from every server endpoint (and STUN), then filtering. */
import type { RemoteInfo, Socket } from 'node:dgram'
import { createRequire } from 'node:module'
import { activeDeadline } from './active-deadline.js'
import type { FilteringObservation, MappingObservation, ProbeOptions, ProtocolEvidence } from './client.js'
import { bindFreshUdp, hostAddresses, newId } from './probe-sockets.js'
import {
  CLIENT_REQUEST_BYTES,
  encodeMessage,
  joinAddr,
  type ProbeMessage,
  parseMessage,
  splitAddr,
  type Via,
} from './wire.js'

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
