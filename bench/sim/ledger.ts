/**
 * What each simulated node sent and received, per protocol: libp2p hands every negotiated protocol
 * stream to its `metrics` component (trackProtocolStream); SimMetrics counts the stream, its bytes and
 * its messages (length-prefixed frames; a send for ping), and reads just enough of kad-dht and
 * member-exchange requests to tell which DHT request types and which topic keys a node was asked about.
 * Nothing here changes what a node does.
 */
import type { Metrics, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { now } from './net.js'

export interface ProtoStats {
  streamsIn: number
  streamsOut: number
  msgsSent: number
  bytesSent: number
  msgsReceived: number
  bytesReceived: number
}

/** kad-dht message types (Message.type, field 1). */
export const KAD_TYPES = [
  'PUT_VALUE',
  'GET_VALUE',
  'ADD_PROVIDER',
  'GET_PROVIDERS',
  'FIND_NODE',
  'PING',
] as const

export interface LedgerSnapshot {
  at: number
  protocols: Record<string, ProtoStats>
  /** kad-dht requests this node sent, by type. */
  kadRequests: Record<string, number>
  /** kad-dht requests this node served, by type. */
  kadServed: Record<string, number>
  /** Inbound protocol streams (requests served), all protocols. */
  requestsServed: number
  /** Bytes on the simulated wire (framing included), set by the host. */
  wireSent?: number
  wireReceived?: number
  /** Connections this node opened (simulated TCP dials), set by the host. */
  dialsOut?: number
}

const emptyStats = (): ProtoStats => ({
  streamsIn: 0,
  streamsOut: 0,
  msgsSent: 0,
  bytesSent: 0,
  msgsReceived: 0,
  bytesReceived: 0,
})

/** Shortens a protocol id to a family name: `/mesh/kad/1.0.0` -> kad, `/ipfs/id/push/1.0.0` -> identify-push. */
export function protocolFamily(protocol: string): string {
  if (protocol.includes('/kad/')) return 'kad'
  if (protocol.startsWith('/mesh/topics/')) return 'topics'
  if (protocol === '/ipfs/id/1.0.0') return 'identify'
  if (protocol === '/ipfs/id/push/1.0.0') return 'identify-push'
  if (protocol.startsWith('/ipfs/ping/')) return 'ping'
  if (protocol.startsWith('/mesh/tags/')) return 'tags'
  return protocol
}

function readVarint(buf: Uint8Array, offset: number): [number, number] | undefined {
  let value = 0
  let shift = 0
  for (let i = offset; i < buf.length && i < offset + 8; i++) {
    value += (buf[i] & 0x7f) * 2 ** shift
    if ((buf[i] & 0x80) === 0) return [value, i + 1]
    shift += 7
  }
  return undefined
}

/** Splits a byte stream into length-prefixed frames as it arrives. */
class FrameSplitter {
  readonly #buf = new Uint8ArrayList()
  broken = false

  constructor(private readonly onFrame: (frame: Uint8Array) => void) {}

  push(chunk: Uint8Array | Uint8ArrayList): void {
    if (this.broken) return
    this.#buf.append(chunk)
    for (;;) {
      if (this.#buf.byteLength === 0) return
      const head = this.#buf.subarray(0, Math.min(8, this.#buf.byteLength))
      const v = readVarint(head, 0)
      if (!v) {
        if (this.#buf.byteLength >= 8) this.broken = true
        return
      }
      const [len, start] = v
      if (len > 4 * 1024 * 1024) {
        this.broken = true
        return
      }
      if (this.#buf.byteLength < start + len) return
      const frame = this.#buf.subarray(start, start + len)
      this.#buf.consume(start + len)
      this.onFrame(frame)
    }
  }
}

/** Fields 1 (type) and 2 (key) of a kad-dht protobuf message. */
export function kadTypeAndKey(frame: Uint8Array): { type: number; key?: Uint8Array } {
  let type = 0
  let key: Uint8Array | undefined
  let i = 0
  while (i < frame.length) {
    const tag = readVarint(frame, i)
    if (!tag) break
    i = tag[1]
    const field = Math.floor(tag[0] / 8)
    const wire = tag[0] & 7
    if (wire === 0) {
      const v = readVarint(frame, i)
      if (!v) break
      if (field === 1) type = v[0]
      i = v[1]
    } else if (wire === 2) {
      const l = readVarint(frame, i)
      if (!l) break
      if (field === 2) key = frame.subarray(l[1], l[1] + l[0])
      i = l[1] + l[0]
    } else if (wire === 5) i += 4
    else if (wire === 1) i += 8
    else break
  }
  return { type, key }
}

export interface LedgerHooks {
  /** Topic keys (CID strings) a peer said it joined, in a member-exchange request this node served. */
  onTopicsRequest?(keys: readonly string[]): void
  /** A kad-dht ADD_PROVIDER this node received (key: the multihash bytes). */
  onAddProvider?(key: Uint8Array): void
}

/** One node's accounting. */
export class NodeLedger {
  readonly protocols = new Map<string, ProtoStats>()
  readonly kadRequests = new Map<string, number>()
  readonly kadServed = new Map<string, number>()
  /** Requests served (inbound streams) per second since `t0`. */
  readonly servedPerSecond: number[] = []
  requestsServed = 0

  constructor(
    private readonly t0: () => number,
    private readonly hooks: LedgerHooks = {},
  ) {}

  #stats(family: string): ProtoStats {
    let s = this.protocols.get(family)
    if (!s) {
      s = emptyStats()
      this.protocols.set(family, s)
    }
    return s
  }

  #bump(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1)
  }

  track(stream: Stream): void {
    const protocol = stream.protocol
    if (!protocol) return
    const family = protocolFamily(protocol)
    const s = this.#stats(family)
    const inbound = stream.direction === 'inbound'
    if (inbound) {
      s.streamsIn++
      this.requestsServed++
      const sec = Math.max(0, Math.floor((now() - this.t0()) / 1000))
      while (this.servedPerSecond.length <= sec) this.servedPerSecond.push(0)
      this.servedPerSecond[sec]++
    } else s.streamsOut++
    const framed = family !== 'ping'
    const onSentFrame = (frame: Uint8Array) => {
      s.msgsSent++
      if (family === 'kad' && !inbound)
        this.#bump(this.kadRequests, KAD_TYPES[kadTypeAndKey(frame).type] ?? 'OTHER')
    }
    let framesReceived = 0
    const onReceivedFrame = (frame: Uint8Array) => {
      s.msgsReceived++
      const first = framesReceived++ === 0
      if (!inbound) return
      if (family === 'kad') {
        const { type, key } = kadTypeAndKey(frame)
        this.#bump(this.kadServed, KAD_TYPES[type] ?? 'OTHER')
        if (type === 2 && key) this.hooks.onAddProvider?.(key)
      } else if (family === 'topics' && first && this.hooks.onTopicsRequest) {
        try {
          const m = JSON.parse(new TextDecoder().decode(frame)) as { joined?: unknown }
          if (Array.isArray(m.joined))
            this.hooks.onTopicsRequest(m.joined.filter((k) => typeof k === 'string'))
        } catch {
          // not JSON: counted, not read
        }
      }
    }
    const sent = framed ? new FrameSplitter(onSentFrame) : undefined
    const received = framed ? new FrameSplitter(onReceivedFrame) : undefined
    const send = stream.send.bind(stream)
    stream.send = (buf) => {
      s.bytesSent += buf.byteLength
      if (sent && !sent.broken) sent.push(buf)
      else s.msgsSent++
      return send(buf)
    }
    // observe dispatched messages without adding a 'message' listener (see @libp2p/prometheus-metrics)
    const dispatchEvent = stream.dispatchEvent.bind(stream)
    stream.dispatchEvent = (evt: Event) => {
      if (evt.type === 'message') {
        const data = (evt as Event & { data: Uint8Array | Uint8ArrayList }).data
        s.bytesReceived += data.byteLength
        if (received && !received.broken) received.push(data)
        else s.msgsReceived++
      }
      return dispatchEvent(evt)
    }
  }

  snapshot(): LedgerSnapshot {
    return {
      at: now(),
      protocols: Object.fromEntries([...this.protocols].map(([k, v]) => [k, { ...v }])),
      kadRequests: Object.fromEntries(this.kadRequests),
      kadServed: Object.fromEntries(this.kadServed),
      requestsServed: this.requestsServed,
    }
  }
}

const noop = () => {}
const stopTimer = () => noop
const metric = {
  update: noop,
  increment: noop,
  decrement: noop,
  reset: noop,
  timer: stopTimer,
  observe: noop,
}

/**
 * libp2p's `metrics` component for a simulated node: stream accounting into a {@link NodeLedger};
 * libp2p's own metrics (gauges, counters) are accepted and dropped.
 */
export class SimMetrics implements Metrics {
  constructor(private readonly ledger: NodeLedger) {}

  trackMultiaddrConnection(): void {
    // bytes on the wire are counted by the simulated network (net.ts)
  }

  trackProtocolStream(stream: Stream): void {
    this.ledger.track(stream)
  }

  registerMetric = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerMetric']
  registerMetricGroup = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerMetricGroup']
  registerCounter = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerCounter']
  registerCounterGroup = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerCounterGroup']
  registerHistogram = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerHistogram']
  registerHistogramGroup = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerHistogramGroup']
  registerSummary = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerSummary']
  registerSummaryGroup = ((_name: string, options?: { calculate?: unknown }) =>
    options?.calculate ? undefined : metric) as Metrics['registerSummaryGroup']

  traceFunction<F>(_name: string, fn: F): F {
    return fn
  }

  createTrace(): undefined {
    return undefined
  }
}
