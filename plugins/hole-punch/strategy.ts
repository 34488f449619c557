/**
 * The upgrade strategy (see index.ts for the rules): it classifies every connection, decides on each
 * relayed one this node upgrades (decision.ts, one decision per peer at a time), decides again when a NAT
 * type arrives or changes, and makes every WebRTC dial (webrtc-gate.ts). Its parts: the pair's
 * connections (pair-connections.ts), both sides' NAT types (nat-types.ts), the birthday punch
 * (birthday-punch.ts) and later attempts (later-attempts.ts).
 */
import type { Connection, PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { coalescePerKey, describeConnection, type PluginContext } from 'meshkit/plugin'
import { BIRTHDAY_PROTOCOL } from './birthday.js'
import { BirthdayPunch } from './birthday-punch.js'
import { isRelayed, methodOfConnection, peerIdOf } from './connections.js'
import { type Decision, type DecisionContext, decide, decisionKey, MAX_DECISIONS } from './decision.js'
import type {
  ConnectionMethod,
  ConnectionMethodEvent,
  ConnectOptions,
  DecisionTrigger,
  HolePunchApi,
  HolePunchOptions,
} from './index.js'
import { LaterAttempts } from './later-attempts.js'
import { NAT_TYPE_PROTOCOL } from './nat-type.js'
import { NatTypes } from './nat-types.js'
import { PairConnections } from './pair-connections.js'
import { PathProof } from './path-probe.js'
import type { RelayClientView } from './punch-context.js'
import { ConnectionStats, type HolePunchStats } from './stats.js'

export class Strategy implements HolePunchApi, DecisionContext {
  readonly #dialStarts = new Map<string, number>()
  readonly #noUpgrade = new Set<string>()
  /** Relayed connections dialled with `upgrade: false`: never upgraded, not even later. */
  readonly #keepRelayed = new Set<string>()
  readonly #outcomes = new Map<string, Promise<ConnectionMethodEvent>>()
  readonly #upgrading = new Map<string, Promise<Decision>>()
  /** Type pairs decided on, per relayed connection (forgotten when it closes). */
  readonly decided = new Map<string, Set<string>>()
  /** Peers whose running decision saw their types change meanwhile: decide again after it. */
  readonly #again = new Set<string>()
  /** Peers the strategy dials over WebRTC right now (see webrtc-gate.ts). */
  readonly #webrtcDials = new Map<string, number>()
  /** Which inbound WebRTC connections have a two-way path (path-probe.ts). */
  readonly #paths = new PathProof()
  readonly counters = new ConnectionStats()
  #lastOwn?: string
  #off: Array<() => void> = []
  relayClient?: RelayClientView
  /** Peer ids of the relays in this plugin's options. */
  readonly relayIds: ReadonlySet<string>
  readonly pair: PairConnections
  readonly nat: NatTypes
  readonly birthday: BirthdayPunch
  readonly later: LaterAttempts

  constructor(
    readonly opts: HolePunchOptions,
    readonly ctx: PluginContext,
  ) {
    this.relayIds = new Set(opts.relays.map(peerIdOf).filter((p): p is string => p !== undefined))
    const deciding = (peer: string) => this.#upgrading.has(peer)
    this.pair = new PairConnections(this, deciding)
    this.nat = new NatTypes(this, {
      reconsider: (peer, trigger) => this.#reconsider(peer, trigger),
      dialDirect: (peer, addrs) => this.pair.dialDirect(peer, addrs),
    })
    this.birthday = new BirthdayPunch(this, this.nat)
    this.later = new LaterAttempts(this, this.pair, {
      deciding,
      upgrade: (relayed, openedAt, dialStart, trigger) =>
        this.#upgrade(relayed, openedAt, dialStart, trigger),
    })
  }

  async start(): Promise<void> {
    this.nat.start()
    this.relayClient = this.ctx.useOptional<RelayClientView>('relay-client')
    this.birthday.start()
    await this.ctx.libp2p.handle(
      NAT_TYPE_PROTOCOL,
      (stream, connection) => this.nat.answer(stream, connection),
      {
        runOnLimitedConnection: true,
        maxInboundStreams: 4,
        maxOutboundStreams: 4,
      },
    )
    await this.ctx.libp2p.handle(
      BIRTHDAY_PROTOCOL,
      (stream, connection) => this.birthday.answer(stream, connection),
      { runOnLimitedConnection: true, maxInboundStreams: 2, maxOutboundStreams: 2 },
    )
    const on = <T>(name: string, fn: (evt: CustomEvent<T>) => void) => {
      const listener = fn as unknown as (evt: Event) => void
      ;(this.ctx.libp2p as unknown as EventTarget).addEventListener(name, listener)
      this.#off.push(() => (this.ctx.libp2p as unknown as EventTarget).removeEventListener(name, listener))
    }
    on<Connection>('connection:open', (evt) => {
      void this.#handle(evt.detail).catch((err) => this.ctx.logger.debug(`classify: ${err}`))
      this.pair.schedulePrune(evt.detail.remotePeer.toString())
    })
    on<Connection>('connection:close', (evt) => {
      const c = evt.detail
      this.decided.delete(c.id)
      this.later.forget(c.id)
      this.pair.forget(c.id)
      this.#keepRelayed.delete(c.id)
      const peer = c.remotePeer.toString()
      this.pair.schedulePrune(peer)
      // both dialled and libp2p closed one relayed connection as a duplicate: the one left may be ours to
      // upgrade now (we had left it to the other side)
      if (isRelayed(c)) void this.#reconsider(peer, 'connection-closed')
    })
    on<{ connection: Connection }>('peer:identify', (evt) => this.#paths.identified(evt.detail.connection.id))
    // this node's type arrived or changed: tell the peers we are relayed to, and decide again
    this.#lastOwn = this.nat.ownKey()
    this.#off.push(this.ctx.events.on('nat:verdict', () => this.#ownTypeMaybeChanged()))
    this.#off.push(this.ctx.events.on('nat:classified', () => this.#ownTypeMaybeChanged()))
  }

  async stop(): Promise<void> {
    for (const off of this.#off.splice(0)) off()
    this.pair.stop()
    this.later.stop()
    this.nat.wake()
    await this.ctx.libp2p.unhandle(NAT_TYPE_PROTOCOL).catch(() => {})
    await this.ctx.libp2p.unhandle(BIRTHDAY_PROTOCOL).catch(() => {})
  }

  // --- every WebRTC dial through the strategy (webrtc-gate.ts) ----------------------------------------

  /** Whether the strategy is dialling `peer` over WebRTC now. */
  webrtcAllowed(peer: string): boolean {
    return (this.#webrtcDials.get(peer) ?? 0) > 0
  }

  /** A WebRTC dial that is not the strategy's: counted; the caller gets the relayed connection. */
  redirected(peer: string): void {
    this.counters.redirectedDial()
    this.ctx.logger.debug(`a WebRTC dial of ${peer} outside the strategy: served by a relayed connection`)
  }

  /** The RTCConfiguration of the next WebRTC connection: the STUN servers, and a pinned port if any. */
  rtcConfiguration(): Record<string, unknown> {
    return this.birthday.rtcConfiguration()
  }

  async dialWebRTC(peer: string, address: string, signal: AbortSignal, onProgress: (type: string) => void) {
    this.#webrtcDials.set(peer, (this.#webrtcDials.get(peer) ?? 0) + 1)
    try {
      return await this.ctx.libp2p.dial(multiaddr(address), {
        signal,
        force: true,
        onProgress: (e) => onProgress(e.type),
      })
    } finally {
      const n = (this.#webrtcDials.get(peer) ?? 1) - 1
      if (n > 0) this.#webrtcDials.set(peer, n)
      else this.#webrtcDials.delete(peer)
    }
  }

  // --- NAT types arriving or changing ------------------------------------------------------------------

  #ownTypeMaybeChanged(): void {
    const own = this.nat.ownKey()
    if (own === this.#lastOwn) return
    this.#lastOwn = own
    this.nat.wake()
    // every peer we only have relayed connections to learns our new type (the remote's strategy, or
    // ours, then decides again)
    const peers = new Set(
      this.ctx.libp2p
        .getConnections()
        .filter((c) => c.status === 'open' && isRelayed(c))
        .map((c) => c.remotePeer.toString()),
    )
    for (const peer of peers) {
      if (this.pair.usable(peer) || this.nat.toldKey(peer) === own) continue
      void this.#announce(peer)
    }
  }

  /** Tells `peer` our NAT type again (one exchange at a time per peer), then decides again. */
  readonly #announce = coalescePerKey(
    async (peer: string) => {
      const relayed = this.pair.relayedConnection(peer)
      if (!relayed || this.nat.toldKey(peer) === this.nat.ownKey() || this.pair.usable(peer)) return
      await this.nat.exchange(relayed)
      void this.#reconsider(peer, 'classified')
    },
    (peer) => peer,
    () => !this.ctx.signal.aborted,
  )

  /**
   * Decides again on the relayed connection to `peer` when a NAT type arrived or changed: only as its
   * upgrader, only for a type pair not decided on that connection yet, with the same budgets.
   */
  async #reconsider(peer: string, trigger: DecisionTrigger): Promise<void> {
    if (this.ctx.signal.aborted || this.opts.maxAttempts === 0) return
    if (this.#upgrading.has(peer)) {
      this.#again.add(peer)
      return
    }
    if (this.pair.usable(peer)) return
    const relayed = this.pair.upgraderConnection(peer)
    // a connection's first decision comes from its connection:open (#classify)
    const decided = relayed && this.decided.get(relayed.id)
    if (!relayed || !decided || this.#keepRelayed.has(relayed.id)) return
    const key = decisionKey(this.nat.ownNatType().udp, this.nat.remote(peer)?.udp ?? 'unknown')
    if (decided?.has(key) || (decided?.size ?? 0) >= MAX_DECISIONS) return
    const event = await this.#upgrade(relayed, relayed.timeline.open, undefined, trigger)
    if (event.unchanged) return
    if (event.method === 'relayed') {
      this.counters.attemptsFailed(event.attempts)
      this.ctx.logger.debug(
        `decided again on ${peer} (${trigger}): still relayed (${event.skipped ?? event.error ?? 'no attempt'})`,
      )
      return
    }
    const { unchanged: _, ...report } = event
    this.counters.record(report)
    this.ctx.events.emit('connection:method', { ...report })
  }

  // --- the API ------------------------------------------------------------------------------------------

  stats(): HolePunchStats {
    return this.counters.snapshot()
  }

  remoteNatOf(peer: PeerId | string) {
    const t = this.nat.remote(peer.toString())
    return t ? { udp: t.udp, tcp: t.tcp } : undefined
  }

  methodOf(peer: PeerId | string): ConnectionMethod | undefined {
    const id = peer.toString()
    const conns = this.ctx.libp2p.getConnections().filter((c) => c.remotePeer.toString() === id)
    if (conns.length === 0) return undefined
    const methods = conns.filter((c) => c.status === 'open').map(methodOfConnection)
    return methods.includes('direct')
      ? 'direct'
      : methods.includes('hole-punched')
        ? 'hole-punched'
        : methods.length > 0
          ? 'relayed'
          : undefined
  }

  async connect(
    target: string,
    { signal, upgrade = true }: ConnectOptions = {},
  ): Promise<ConnectionMethodEvent> {
    const ma = multiaddr(target)
    const peer = peerIdOf(target)
    if (!peer) throw new Error(`${target}: the address must end in /p2p/<peer id>`)
    const started = Date.now()
    this.#dialStarts.set(peer, started)
    if (!upgrade) this.#noUpgrade.add(peer)
    const connection = await this.ctx.libp2p.dial(ma, { signal })
    return this.#handle(connection)
  }

  // --- every connection classified once -----------------------------------------------------------------

  /** Classifies a connection once, upgrading our outbound relayed connections. */
  #handle(connection: Connection): Promise<ConnectionMethodEvent> {
    let outcome = this.#outcomes.get(connection.id)
    if (!outcome) {
      outcome = this.#classify(connection)
      this.#outcomes.set(connection.id, outcome)
      const forget = () => setTimeout(() => this.#outcomes.delete(connection.id), 60_000).unref()
      outcome.then(forget, forget)
    }
    return outcome
  }

  async #classify(connection: Connection): Promise<ConnectionMethodEvent> {
    const openedAt = Date.now()
    const peer = connection.remotePeer.toString()
    const dialStart = connection.direction === 'outbound' ? this.#dialStarts.get(peer) : undefined
    const info = describeConnection(connection)
    const base = {
      peerId: peer,
      direction: connection.direction,
      remoteAddr: info.remoteAddr,
      msToFirst: dialStart === undefined ? undefined : openedAt - dialStart,
    }
    let event: ConnectionMethodEvent
    if (!isRelayed(connection)) {
      const method = methodOfConnection(connection)
      if (method === 'hole-punched' && connection.direction === 'inbound' && this.opts.inboundSettleMs > 0) {
        // @libp2p/webrtc opens the listener's side of a failed ICE run too: only a connection that
        // carried a round trip (identify over it, or else a ping: path-probe.ts) has a path; one that did
        // not is closed, never counted
        if (!(await this.#paths.carried(connection, this.opts.inboundSettleMs, this.ctx.signal))) {
          this.counters.unverifiedClosed()
          connection.abort(new Error('no data went through this WebRTC connection (ICE did not connect)'))
          this.ctx.events.emit('hole-punch:closed', {
            peerId: peer,
            connectionId: connection.id,
            transport: info.transport,
            reason: 'no-path',
          })
          throw new Error(`inbound WebRTC connection from ${peer} carried nothing: closed`)
        }
        this.pair.prove(connection.id)
        this.pair.schedulePrune(peer)
      }
      event = {
        ...base,
        method,
        transport: info.transport,
        attempts: 0,
        msToDirect: dialStart === undefined ? undefined : openedAt - dialStart,
        connectionId: connection.id,
      }
      // a WebRTC connection we dialled is reported by the upgrade that made it
      if (method === 'hole-punched' && connection.direction === 'outbound') return event
    } else if (
      connection.direction === 'outbound' &&
      this.opts.maxAttempts > 0 &&
      !this.#noUpgrade.has(peer) &&
      this.pair.upgraderConnection(peer)?.id === connection.id
    ) {
      event = await this.#upgrade(connection, openedAt, dialStart)
    } else {
      // inbound (the dialler upgrades), an extra outbound one, or both dialled and the remote (lower
      // id) upgrades its own; an outbound one is ours to decide on later if the remote's goes away
      if (this.#noUpgrade.has(peer)) this.#keepRelayed.add(connection.id)
      else if (connection.direction === 'outbound') this.decided.set(connection.id, new Set())
      event = { ...base, method: 'relayed', transport: 'relay', attempts: 0, connectionId: connection.id }
    }
    this.#dialStarts.delete(peer)
    this.#noUpgrade.delete(peer)
    const { unchanged: _, ...report } = event as Decision
    this.counters.record(report)
    this.ctx.events.emit('connection:method', { ...report })
    return report
  }

  /**
   * A decision on a relayed connection (decision.ts); one per peer at a time: a second call for the same
   * peer joins the running one. When done: later attempts are scheduled, redundant connections pruned,
   * and a type that changed meanwhile is decided on again.
   */
  #upgrade(relayed: Connection, openedAt: number, dialStart?: number, trigger?: DecisionTrigger) {
    const peer = relayed.remotePeer.toString()
    const running = this.#upgrading.get(peer)
    if (running) return running
    const run = decide(this, relayed, openedAt, dialStart, trigger)
    this.#upgrading.set(peer, run)
    const done = (event?: Decision) => {
      this.#upgrading.delete(peer)
      if (event) this.later.schedule(relayed, event)
      // the relayed connection an upgrade replaced, and duplicates, go now
      this.pair.schedulePrune(peer, 0)
      // a type changed while it ran: decide again with the new one
      if (this.#again.delete(peer)) void this.#reconsider(peer, trigger ?? 'classified')
    }
    run.then(done, () => done())
    return run
  }
}
