/**
 * Both sides' NAT types, as the strategy reads them: this node's (the 'nat-classification' capability's
 * verdict, 'unknown' without one), and each peer's, exchanged over a relayed connection by
 * `/mesh/nat-type/1.0.0` (wire format in nat-type.ts; dialer and listener side here, budgeted per peer).
 * Decisions that wait for a classification still running wait here (bounded).
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { Budget } from 'meshkit/plugin'
import { isRelayed } from './connections.js'
import type { DecisionTrigger } from './index.js'
import {
  encodeNatType,
  isNatType,
  MAX_NAT_TYPE_BYTES,
  NAT_TYPE_PROTOCOL,
  type NatTypeMessage,
  type PeerNatType,
  parseNatType,
  readNatTypeLine,
} from './nat-type.js'
import type { NatClassification, PunchContext } from './punch-context.js'

/** NAT-type messages (and what we told) remembered, at most: the oldest entries go first. */
const MAX_PEERS = 1024

/** What the listener side does with what a peer told it. */
export interface NatTypeHooks {
  /** Decide again on the relayed connection to `peer`. */
  reconsider(peer: string, trigger: DecisionTrigger): Promise<void>
  /** A bounded direct dial to the addresses `peer` says it is public at (pair-connections.ts). */
  dialDirect(peer: string, addrs: string[]): Promise<Connection>
}

export class NatTypes {
  /** NAT-type messages peers sent us last (bounded: the oldest entries go first). */
  readonly #remoteNat = new Map<string, NatTypeMessage>()
  /** What we last told each peer (UDP, TCP, classifying), to tell it again when that changes. */
  readonly #told = new Map<string, string>()
  /** Decisions waiting for a classification (ours or a peer's). */
  readonly #waiters = new Set<() => void>()
  #classifier?: NatClassification
  /** Per-peer budget of /mesh/nat-type/1.0.0 (made at start). */
  #streams?: Budget

  constructor(
    readonly hp: PunchContext,
    readonly hooks: NatTypeHooks,
  ) {}

  /** Finds the classifier (as `classifier` says) and makes the protocol's budget. */
  start(): void {
    const { ctx, opts } = this.hp
    if (opts.classifier === true) this.#classifier = ctx.use<NatClassification>('nat-classification')
    else if (opts.classifier === 'auto')
      this.#classifier = ctx.useOptional<NatClassification>('nat-classification')
    // one exchange per relayed connection
    this.#streams = ctx.budget('nat-type', {
      ratePerSecond: 1,
      burst: 10,
      concurrency: 2,
      bytesPerMinute: 64 * 1024,
    })
  }

  /** What `peer` told us last, if it did. */
  remote(peer: string): NatTypeMessage | undefined {
    return this.#remoteNat.get(peer)
  }

  /** What we told `peer` last, as a key comparable with {@link ownKey}. */
  toldKey(peer: string): string | undefined {
    return this.#told.get(peer)
  }

  /** What we tell peers, as a comparable key. */
  ownKey(): string {
    const m = this.ownNatType()
    return `${m.udp}|${m.tcp}|${m.classifying === true}|${m.ip ?? ''}`
  }

  /** Wakes every decision waiting for a classification. */
  wake(): void {
    for (const wake of [...this.#waiters]) wake()
  }

  /** Resolves at the next wake-up or at `until` (or when the node stops). */
  waitWake(until: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(0, until - Date.now()))
      this.#waiters.add(done)
      if (this.hp.ctx.signal.aborted) done()
    })
  }

  /** This node's classification has no UDP verdict yet but one is coming. */
  #classifyingNow(udp: PeerNatType): boolean {
    return udp === 'unknown' && this.#classifier?.classifying?.() === true
  }

  /** This node's NAT-type message: the classifier's last verdict, 'unknown' without one. */
  ownNatType(): NatTypeMessage {
    const c = this.#classifier
    const report = c?.report()
    const known = (t: string | undefined): PeerNatType => (isNatType(t) ? t : 'unknown')
    // UDP's verdict comes seconds before the whole report (TCP's tests take longer): the punch is UDP
    const udp = known(c?.verdict?.('udp')?.type ?? report?.udp?.type)
    const tcp = known(c?.verdict?.('tcp')?.type ?? report?.tcp?.type)
    const message: NatTypeMessage = { v: 1, udp, tcp }
    if (this.#classifyingNow(udp)) message.classifying = true
    // a NATed node's external IP, as its probe saw it: a peer behind the same NAT can tell
    if (udp !== 'public' && udp !== 'unknown') {
      const mapped = c?.verdict?.('udp')?.evidence?.mappings?.find((m) => m.mapped)?.mapped
      const ip = mapped ? /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(mapped)?.[1] : undefined
      if (ip) message.ip = ip
    }
    if (udp === 'public' || tcp === 'public') {
      const addrs = this.hp.ctx.libp2p
        .getMultiaddrs()
        .map(String)
        .filter((a) => !a.includes('/p2p-circuit') && !a.includes('/webrtc'))
        .map((a) => a.replace(/\/p2p\/[^/]+$/, ''))
        .filter((a) => a.length <= 200 && /^\/ip[46]\//.test(a))
        .slice(0, 8)
      if (addrs.length > 0) message.addrs = addrs
    }
    // stay within the size limit whatever the addresses
    while (message.addrs && encodeNatType(message).length > MAX_NAT_TYPE_BYTES - 1) message.addrs.pop()
    return message
  }

  /** Keeps what `peer` told us; true when its UDP type (or whether it is classifying) changed. */
  #remember(peer: string, m: NatTypeMessage): boolean {
    const before = this.#remoteNat.get(peer)
    this.#remoteNat.delete(peer)
    this.#remoteNat.set(peer, m)
    if (this.#remoteNat.size > MAX_PEERS) this.#remoteNat.delete(this.#remoteNat.keys().next().value!)
    this.wake()
    return before === undefined || before.udp !== m.udp || before.classifying !== m.classifying
  }

  /** Notes what we told `peer` (bounded like #remoteNat). */
  #toldPeer(peer: string, m: NatTypeMessage): void {
    this.#told.delete(peer)
    this.#told.set(peer, `${m.udp}|${m.tcp}|${m.classifying === true}|${m.ip ?? ''}`)
    if (this.#told.size > MAX_PEERS) this.#told.delete(this.#told.keys().next().value!)
  }

  /**
   * Listener side of /mesh/nat-type/1.0.0: read the dialer's line, answer ours; malformed: reset and
   * penalized. Budgeted per peer.
   */
  async answer(stream: Stream, connection: Connection): Promise<void> {
    const { ctx, opts } = this.hp
    const peer = connection.remotePeer.toString()
    const ticket = this.#streams?.admit(peer)
    if (!ticket?.ok) {
      stream.abort(new Error(`nat-type: refused (${ticket?.reason ?? 'not started'})`))
      return
    }
    try {
      const read = await readNatTypeLine(stream, opts.exchangeTimeout)
      // over its bytes budget: refused (the budget penalizes it)
      if ('line' in read && !ticket.spend(read.line.length + 1)) {
        stream.abort(new Error('nat-type: over the bytes budget'))
        return
      }
      const theirs = 'line' in read ? parseNatType(read.line) : undefined
      if (!theirs) {
        if ('line' in read || read.why === 'oversized')
          ctx.reputation.penalize(peer, 'malformed', 'a malformed /mesh/nat-type line')
        stream.abort(new Error('malformed nat-type message'))
        return
      }
      const changed = this.#remember(peer, theirs)
      const ours = this.ownNatType()
      stream.send(encodeNatType(ours))
      this.#toldPeer(peer, ours)
      await stream.close({ signal: AbortSignal.timeout(opts.exchangeTimeout) })
      // the remote's type arrived or changed (it tells us again once classified): decide again
      if (changed && isRelayed(connection)) void this.hooks.reconsider(peer, 'remote-classified')
      // connection reversal: a public dialer reached us through a relay; we can reach it directly
      if (isRelayed(connection) && theirs.addrs && ours.udp !== 'public' && ours.tcp !== 'public')
        void this.hooks
          .dialDirect(peer, theirs.addrs)
          .catch((err) =>
            ctx.logger.debug(`reversal to ${peer}: ${err instanceof Error ? err.message : String(err)}`),
          )
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      ticket.release()
    }
  }

  /** Dialer side: sends ours, reads theirs (bounded); undefined when the peer does not answer properly. */
  async exchange(connection: Connection): Promise<NatTypeMessage | undefined> {
    const { ctx, opts } = this.hp
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(opts.exchangeTimeout)])
    let stream: Stream | undefined
    try {
      stream = await connection.newStream(NAT_TYPE_PROTOCOL, { signal, runOnLimitedConnection: true })
      const ours = this.ownNatType()
      stream.send(encodeNatType(ours))
      this.#toldPeer(connection.remotePeer.toString(), ours)
      const read = await readNatTypeLine(stream, opts.exchangeTimeout)
      const theirs = 'line' in read ? parseNatType(read.line) : undefined
      if (!theirs) {
        if ('line' in read || read.why === 'oversized')
          ctx.reputation.penalize(connection.remotePeer, 'malformed', 'a malformed /mesh/nat-type answer')
        stream.abort(new Error('malformed nat-type answer'))
        return undefined
      }
      await stream.close({ signal }).catch(() => stream?.abort(new Error('close failed')))
      this.#remember(connection.remotePeer.toString(), theirs)
      return theirs
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      ctx.logger.debug(`nat-type exchange with ${connection.remotePeer}: ${err}`)
      return undefined
    }
  }
}
