/**
 * The reservations the relay client keeps: which relays are alive and how close (pings), reserving on the
 * best ones until there are `minReservations`, refreshing them before they expire, noticing when one is
 * lost (connection closed, pings unanswered, relay restarted) and reserving again, with backoff.
 */
import type { Connection, IdentifyResult, Libp2p, PeerId } from '@libp2p/interface'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { backoffDelay, type Logger, type MeshEventBus } from 'meshkit/plugin'
import { type Captured, LISTEN_ADDR } from './components.js'
import { type Reservation, reserve } from './hop.js'
import type { RelayClientOptions, RelayReservationInfo } from './index.js'
import type { RelayStanding } from './stop-guard.js'

/** The peer-store tag that keeps a relay connection open (a `keep-alive` prefix: libp2p also redials it). */
const KEEP_ALIVE_TAG = 'keep-alive-meshkit-relay'
/** Refresh a reservation this long before it expires (as libp2p does); a shorter one at half its life. */
const REFRESH_BEFORE_MS = 5 * 60_000

interface RelayState {
  addr: Multiaddr
  id: string
  rttMs?: number
  pingFailures: number
  /** Failed attempts in a row (backoff). */
  attempt: number
  /** Not before this time (ms) while backing off. */
  retryAt: number
  reservation?: {
    expires: number
    addrs: Multiaddr[]
    /** The id of the connection it was made on: it ends with that connection. */
    connection: string
    peer: PeerId
    refresh?: ReturnType<typeof setTimeout>
  }
  /** The relay's last signed peer record sequence number (a new one after a restart). */
  seq?: bigint
}

const reasonOf = (err: unknown) => (err instanceof Error ? err.message : String(err))
/** Keeps `minReservations` reservations on the configured relays with the lowest RTT (see index.ts). */
export class RelayManager {
  readonly relays: RelayState[]
  #timer: ReturnType<typeof setTimeout> | undefined
  #running: Promise<void> | undefined
  #again = false
  #stopped = false
  readonly #off: Array<() => void> = []

  constructor(
    private readonly node: Libp2p,
    private readonly captured: Captured,
    private readonly opts: RelayClientOptions,
    private readonly logger: Logger,
    private readonly events: MeshEventBus,
    private readonly signal: AbortSignal,
  ) {
    this.relays = opts.relays.map((a) => {
      const addr = multiaddr(a)
      return {
        addr,
        id: addr.getComponents().findLast((c) => c.name === 'p2p')?.value ?? '',
        pingFailures: 0,
        attempt: 0,
        retryAt: 0,
      }
    })
  }

  async start(): Promise<void> {
    this.captured.listener.addrs = () => this.relays.flatMap((r) => r.reservation?.addrs ?? [])
    if (this.captured.degraded) {
      this.logger.warn(
        `relay-client: ${this.captured.degraded}; reservations are still made and circuits through them work, but this node's /p2p-circuit addresses are not advertised (getMultiaddrs, identify)`,
      )
    } else {
      await this.captured.transportManager!.listen([multiaddr(LISTEN_ADDR)])
    }
    const on = (target: EventTarget, name: string, fn: (evt: CustomEvent) => void) => {
      const listener = fn as unknown as (evt: Event) => void
      target.addEventListener(name, listener)
      this.#off.push(() => target.removeEventListener(name, listener))
    }
    // a reservation lives as long as the connection it was made on
    on(this.node as unknown as EventTarget, 'connection:close', (evt) =>
      this.#connectionClosed(evt.detail as Connection),
    )
    // a relay we hold no reservation on came (back): try it now instead of waiting for the backoff
    on(this.node as unknown as EventTarget, 'peer:identify', (evt) =>
      this.#identified(evt.detail as IdentifyResult),
    )
    if (this.opts.minReservations > 0 && this.relays.length < this.opts.minReservations) {
      this.logger.warn(
        `minReservations is ${this.opts.minReservations} but only ${this.relays.length} relay(s) are configured`,
      )
    }
    this.kick()
    if (this.opts.startWait > 0 && this.opts.minReservations > 0 && this.relays.length > 0) {
      // the first check reserves (or fails) on every relay it can: wait for it, bounded
      const waited = Date.now()
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          clearInterval(poll)
          resolve()
        }
        const timer = setTimeout(done, this.opts.startWait)
        // settled: a reservation, or every relay tried and backing off
        const poll = setInterval(() => {
          if (this.#stopped || this.#reservedCount() > 0 || this.relays.every((r) => r.attempt > 0)) done()
        }, 20)
      })
      this.logger.debug(
        `start: ${this.#reservedCount()} reservation(s) after ${Date.now() - waited} ms (startWait ${this.opts.startWait} ms)`,
      )
    }
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
    for (const r of this.relays) clearTimeout(r.reservation?.refresh)
    for (const off of this.#off.splice(0)) off()
  }

  /** Runs a check soon (coalesced: one at a time). */
  kick(): void {
    if (this.#stopped) return
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.check(), 0)
  }

  async check(): Promise<void> {
    if (this.#running) {
      this.#again = true
      return this.#running
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false
          await this.#checkOnce()
        } while (this.#again && !this.#stopped)
      } catch (err) {
        this.logger.warn(`relay check failed: ${reasonOf(err)}`)
      } finally {
        this.#running = undefined
        this.#schedule()
      }
    })()
    return this.#running
  }

  /** What `peer` is to this node as a relay (see stop-guard.ts). */
  standing(peer: PeerId | string): RelayStanding {
    const r = this.#byPeer(peer)
    return r ? (r.reservation ? 'reserved' : 'configured') : undefined
  }

  reservations(): RelayReservationInfo[] {
    return this.relays
      .filter((r) => r.reservation)
      .map((r) => ({
        relay: r.id,
        addrs: r.reservation!.addrs.map((a) => a.toString()),
        expires: r.reservation!.expires,
        rttMs: r.rttMs,
      }))
  }

  #schedule(): void {
    if (this.#stopped || this.opts.minReservations === 0) return
    const now = Date.now()
    let next = now + this.opts.checkInterval
    if (this.#reservedCount() < this.opts.minReservations) {
      for (const r of this.relays) if (!r.reservation) next = Math.min(next, Math.max(r.retryAt, now + 50))
    }
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => void this.check(), next - now)
  }

  #reservedCount(): number {
    return this.relays.filter((r) => r.reservation).length
  }

  #timeoutSignal(): AbortSignal {
    return AbortSignal.any([this.signal, AbortSignal.timeout(this.opts.timeout)])
  }

  async #ping(r: RelayState, target: Multiaddr | PeerId): Promise<boolean> {
    const ping = (this.node.services as Record<string, unknown>).ping as
      | { ping(p: Multiaddr | PeerId, o: { signal: AbortSignal }): Promise<number> }
      | undefined
    try {
      if (!ping) {
        // no ping service: measure a dial instead (a reused connection counts as reachable)
        const started = Date.now()
        await this.node.dial(target, { signal: this.#timeoutSignal() })
        r.rttMs ??= Date.now() - started
        return true
      }
      r.rttMs = await ping.ping(target, { signal: this.#timeoutSignal() })
      r.pingFailures = 0
      return true
    } catch (err) {
      r.pingFailures++
      if (!this.signal.aborted) this.logger.debug(`ping to relay ${r.id} failed: ${reasonOf(err)}`)
      return false
    }
  }

  async #checkOnce(): Promise<void> {
    if (this.#stopped || this.opts.minReservations === 0) return
    const now = Date.now()
    // 1. liveness and RTT of relays we hold a reservation on: a relay that stops answering is replaced
    await Promise.all(
      this.relays
        .filter((r) => r.reservation)
        .map(async (r) => {
          const ok = await this.#ping(r, r.addr)
          if (!ok && r.pingFailures >= this.opts.maxPingFailures && r.reservation) {
            this.logger.info(`relay ${r.id} stopped answering pings: dropping its reservation`)
            await this.#drop(r, 'ping-failed')
          }
        }),
    )
    if (this.#stopped) return
    // 2. measure the relays we may reserve on (those not backing off), best RTT first; when every one of
    // them is needed there is nothing to choose: reserve at once (the reservation tests reachability)
    const candidates = this.relays.filter((r) => !r.reservation && r.retryAt <= now)
    const needed = this.opts.minReservations - this.#reservedCount()
    if (needed <= 0 || candidates.length === 0) return
    const reachable =
      candidates.length <= needed
        ? candidates
        : (await Promise.all(candidates.map(async (r) => ((await this.#ping(r, r.addr)) ? r : undefined))))
            .filter((r): r is RelayState => r !== undefined)
            .sort((a, b) => (a.rttMs ?? Infinity) - (b.rttMs ?? Infinity))
    for (const r of candidates) if (!reachable.includes(r)) this.#failed(r, 'unreachable')
    // 3. reserve on the best ones until there are enough
    for (const r of reachable) {
      if (this.#stopped || this.#reservedCount() >= this.opts.minReservations) break
      await this.#reserve(r)
    }
  }

  async #reserve(r: RelayState): Promise<void> {
    try {
      const connection = await this.node.dial(r.addr, { signal: this.#timeoutSignal() })
      if (connection.limits) throw new Error('only a relayed connection to the relay')
      // a relay reserved on without being measured first (nothing to choose): its RTT, meanwhile
      const measured = r.rttMs === undefined ? this.#ping(r, connection.remotePeer) : undefined
      const reservation = await reserve(connection, this.#timeoutSignal())
      await measured
      if (this.#stopped) return
      this.#created(r, reservation, connection)
      r.attempt = 0
      r.retryAt = 0
    } catch (err) {
      if (this.#stopped) return
      this.#failed(r, reasonOf(err))
    }
  }

  /** Refreshes a reservation on its own connection before it expires; a failure loses it. */
  async #refresh(r: RelayState): Promise<void> {
    const held = r.reservation
    if (!held || this.#stopped) return
    const connection = this.node.getConnections().find((c) => c.id === held.connection && c.status === 'open')
    try {
      if (!connection) throw new Error('the reservation connection is gone')
      const reservation = await reserve(connection, this.#timeoutSignal())
      if (this.#stopped || r.reservation !== held) return
      this.#created(r, reservation, connection)
    } catch (err) {
      if (this.#stopped || r.reservation !== held) return
      this.logger.debug(`refreshing the reservation on ${r.id} failed: ${reasonOf(err)}`)
      this.#lost(r, held.expires <= Date.now() ? 'expired' : 'refresh-failed')
    }
  }

  #failed(r: RelayState, error: string): void {
    const delayMs = backoffDelay(r.attempt, this.opts.retryInitial, this.opts.retryMax)
    r.attempt++
    r.retryAt = Date.now() + delayMs
    this.events.emit('relay:retry', { relay: r.id, attempt: r.attempt, delayMs, error })
  }

  async #drop(r: RelayState, reason: string): Promise<void> {
    const reservation = r.reservation
    if (!reservation) return
    this.#lost(r, reason)
    const conn = this.node.getConnections().find((c) => c.id === reservation.connection)
    // a dead (or stale) connection: abort it, which makes the transport drop its reservation entry too
    conn?.abort(new Error(`relay reservation dropped: ${reason}`))
  }

  #byPeer(peer: PeerId | string): RelayState | undefined {
    const id = peer.toString()
    return this.relays.find((r) => r.id === id)
  }

  #created(r: RelayState, res: Reservation, connection: Connection): void {
    if (this.#stopped) return
    const { expires, addrs } = res
    const previous = r.reservation
    clearTimeout(previous?.refresh)
    for (const a of addrs) this.captured.addressManager?.confirmObservedAddr(a, { type: 'transport' })
    for (const a of previous?.addrs ?? []) {
      if (!addrs.some((n) => n.equals(a))) this.captured.addressManager?.removeObservedAddr(a)
    }
    const remaining = expires - Date.now()
    // 5 min before expiry; a short reservation at half its life (not sooner than 1 s)
    const wait = Math.min(
      remaining > 2 * REFRESH_BEFORE_MS ? remaining - REFRESH_BEFORE_MS : Math.max(1000, remaining / 2),
      2 ** 31 - 1,
    )
    const refresh = setTimeout(() => void this.#refresh(r), wait)
    refresh.unref?.()
    r.reservation = { expires, addrs, connection: connection.id, peer: connection.remotePeer, refresh }
    r.pingFailures = 0
    // keep the relay connection open (and have libp2p redial it) while the reservation lasts
    this.node.peerStore
      .merge(connection.remotePeer, {
        tags: { [KEEP_ALIVE_TAG]: { value: 1, ttl: Math.max(1000, expires - Date.now()) } },
      })
      .catch((err) => this.logger.debug(`tagging relay ${r.id} failed: ${reasonOf(err)}`))
    this.captured.listener.changed()
    this.events.emit('relay:reserved', {
      relay: r.id,
      expires,
      addrs: addrs.map((a) => a.toString()),
      rttMs: r.rttMs,
      refreshed: previous !== undefined,
    })
  }

  #connectionClosed(connection: Connection): void {
    const r = this.#byPeer(connection.remotePeer)
    if (!r?.reservation || r.reservation.connection !== connection.id) return
    this.#lost(r, r.reservation.expires <= Date.now() ? 'expired' : 'connection-closed')
  }

  #lost(r: RelayState, reason: string): void {
    const reservation = r.reservation
    if (!reservation) return
    r.reservation = undefined
    clearTimeout(reservation.refresh)
    for (const a of reservation.addrs) this.captured.addressManager?.removeObservedAddr(a)
    if (this.#stopped) return
    this.node.peerStore.merge(reservation.peer, { tags: { [KEEP_ALIVE_TAG]: undefined } }).catch(() => {})
    this.captured.listener.changed()
    this.events.emit('relay:lost', { relay: r.id, reason })
    this.logger.info(`lost the reservation on relay ${r.id} (${reason}): reserving again`)
    // retry right away (a relay restart is usually back soon), then with backoff
    r.attempt = 0
    r.retryAt = 0
    this.kick()
  }

  #identified(result: IdentifyResult): void {
    const r = this.#byPeer(result.peerId)
    if (!r || this.#stopped) return
    const seq = result.signedPeerRecord?.seq
    const restarted = seq !== undefined && r.seq !== undefined && seq !== r.seq
    if (seq !== undefined) r.seq = seq
    if (r.reservation) {
      const stale = !this.node
        .getConnections(result.peerId)
        .some((c: Connection) => c.id === r.reservation?.connection)
      // a new peer record while our reservation's connection looks alive: the relay restarted and forgot us
      if (stale || (restarted && result.connection.id !== r.reservation.connection)) {
        void this.#drop(r, restarted ? 'relay-restarted' : 'connection-closed')
      }
      return
    }
    r.retryAt = 0
    r.attempt = 0
    this.kick()
  }
}
