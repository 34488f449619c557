import type { PeerId } from '@libp2p/interface'
import type { MeshEventBus } from './events.js'
import { type ThrottledLog, throttleLog } from './log-throttle.js'
import type { Logger } from './logger.js'
import { LruMap } from './token-bucket.js'

/**
 * What a peer did wrong. Each kind costs penalty points ({@link OFFENCE_POINTS}); a peer whose points
 * reach `security.banThreshold` is banned.
 * - `malformed`: bytes that break a protocol's format (a bug or an attack; honest peers do not send them)
 * - `budget`: went over a per-peer budget (rate, concurrency, bytes)
 * - `forged`: a failed proof (a bad signature, a record or address claim that is not the peer's)
 * - `abuse`: anything else a protocol forbids (e.g. asking for work it was refused)
 */
export type Offence = 'malformed' | 'budget' | 'forged' | 'abuse'

/** Penalty points per offence (with the default threshold of 100: 4 malformed messages, 20 budget overruns, 2 forgeries). */
export const OFFENCE_POINTS: Readonly<Record<Offence, number>> = {
  malformed: 25,
  budget: 5,
  forged: 50,
  abuse: 10,
}

export interface ReputationSettings {
  /** Penalty points at which a peer is banned. */
  banThreshold: number
  /** How long a first ban lasts (ms); each further ban of the same peer doubles it, up to a day. */
  banDuration: number
  /** Also ban the IP addresses of a banned peer's direct connections. */
  banIps: boolean
  /** Penalty points halve after this long (ms). */
  penaltyHalfLife: number
}

/** A ban in force. */
export interface PeerBan {
  peerId: string
  reason: string
  /** When it started and ends (ms since the epoch). */
  since: number
  until: number
  /** IP addresses banned with it (with `security.banIps`). */
  ips: string[]
  /** How many times this peer was banned (the duration doubles each time). */
  count: number
}

/** The node's judgement of remote peers: penalty points, bans. Plugins reach it as `ctx.reputation`. */
export interface PeerReputation {
  /**
   * Records an offence of `peer`: adds the offence's points (or `points`), and bans the peer when its
   * points reach the threshold. `detail` says what happened (for logs and the ban's reason).
   */
  penalize(peer: PeerId | string, offence: Offence, detail?: string, points?: number): void
  /** The peer's penalty points now (0: clean; they halve every `penaltyHalfLife`). */
  penalty(peer: PeerId | string): number
  isBanned(peer: PeerId | string): boolean
  /** Whether an IP address is banned (with `security.banIps`). */
  isIpBanned(ip: string): boolean
  /** Bans a peer now (and its IPs with `security.banIps`), for `duration` ms or the configured one. */
  ban(peer: PeerId | string, reason: string, duration?: number): PeerBan
  /** Lifts a ban; false when the peer was not banned. */
  unban(peer: PeerId | string): boolean
  /** Bans in force. */
  bans(): PeerBan[]
}

const MAX_BAN_MS = 24 * 3_600_000
/** Peers whose penalty points are remembered at once. */
const MAX_TRACKED = 10_000
/** Bans kept at once (the one ending first goes when full). */
const MAX_BANS = 10_000

interface Penalty {
  points: number
  at: number
}

/**
 * The kernel's {@link PeerReputation}: one per data dir (like the identity), so bans survive a node
 * rebuild. It emits `peer:banned` and `peer:unbanned` on the event bus and tells `onBan` listeners (the
 * running node hangs up on the peer). Bounded: at most 10,000 peers' points and 10,000 bans.
 */
export class Reputation implements PeerReputation {
  readonly #penalties = new LruMap<string, Penalty>(MAX_TRACKED)
  /** How many times each peer was banned (doubles the next ban), remembered a day. */
  readonly #banCounts = new LruMap<string, { count: number; at: number }>(MAX_TRACKED)
  readonly #bans = new Map<string, PeerBan>()
  readonly #ipBans = new Map<string, number>()
  readonly #listeners = new Set<(ban: PeerBan) => void>()
  #timer?: NodeJS.Timeout
  /** The IP addresses of a peer's direct connections (set by the running node). */
  ipsOf: (peer: string) => string[] = () => []
  /** Bans and their ends, at most 10 lines a minute each (a Sybil flood bans many peers). */
  readonly #banLog: ThrottledLog
  readonly #unbanLog: ThrottledLog

  constructor(
    public settings: ReputationSettings,
    private readonly events: MeshEventBus,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.#banLog = throttleLog((m) => logger.info(m), { max: 10, windowMs: 60_000, what: 'bans' })
    this.#unbanLog = throttleLog((m) => logger.info(m), { max: 10, windowMs: 60_000, what: 'ban ends' })
  }

  /** Tells `listener` of every new ban; returns the unsubscribe function. */
  onBan(listener: (ban: PeerBan) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  penalize(peer: PeerId | string, offence: Offence, detail = '', points = OFFENCE_POINTS[offence]): void {
    const id = peer.toString()
    if (!(points > 0) || this.isBanned(id)) return
    const total = this.penalty(id) + points
    this.#penalties.set(id, { points: total, at: this.now() })
    this.logger.debug(`peer ${id}: ${offence}${detail ? ` (${detail})` : ''}, penalty ${Math.round(total)}`)
    if (total >= this.settings.banThreshold) {
      this.ban(id, `${offence}${detail ? `: ${detail}` : ''} (penalty ${Math.round(total)})`)
    }
  }

  penalty(peer: PeerId | string): number {
    const entry = this.#penalties.peek(peer.toString())
    if (!entry) return 0
    const halves = (this.now() - entry.at) / this.settings.penaltyHalfLife
    return entry.points * 0.5 ** Math.max(0, halves)
  }

  isBanned(peer: PeerId | string): boolean {
    const ban = this.#bans.get(peer.toString())
    return ban !== undefined && ban.until > this.now()
  }

  isIpBanned(ip: string): boolean {
    const until = this.#ipBans.get(ip)
    return until !== undefined && until > this.now()
  }

  ban(peer: PeerId | string, reason: string, duration?: number): PeerBan {
    const id = peer.toString()
    const now = this.now()
    const previous = this.#banCounts.get(id)
    const count = previous && now - previous.at < MAX_BAN_MS ? previous.count + 1 : 1
    this.#banCounts.set(id, { count, at: now })
    const ms = Math.min(MAX_BAN_MS, duration ?? this.settings.banDuration * 2 ** (count - 1))
    const ips = this.settings.banIps ? this.ipsOf(id) : []
    const ban: PeerBan = { peerId: id, reason: reason.slice(0, 200), since: now, until: now + ms, ips, count }
    if (!this.#bans.has(id) && this.#bans.size >= MAX_BANS) this.#dropSoonestBan()
    this.#bans.set(id, ban)
    for (const ip of ips) this.#ipBans.set(ip, Math.max(this.#ipBans.get(ip) ?? 0, ban.until))
    this.#penalties.delete(id)
    this.#banLog(`banned peer ${id} for ${Math.round(ms / 1000)} s: ${ban.reason}`)
    this.events.emit('peer:banned', { ...ban, ips: [...ips] })
    for (const listener of this.#listeners) {
      try {
        listener(ban)
      } catch (err) {
        this.logger.debug(`a ban listener threw: ${err}`)
      }
    }
    this.#schedule()
    return ban
  }

  unban(peer: PeerId | string): boolean {
    const id = peer.toString()
    const ban = this.#bans.get(id)
    if (!ban) return false
    this.#lift(ban, 'lifted')
    this.#schedule()
    return true
  }

  bans(): PeerBan[] {
    const now = this.now()
    return [...this.#bans.values()].filter((b) => b.until > now).map((b) => ({ ...b, ips: [...b.ips] }))
  }

  /** Stops the expiry timer (bans stay recorded). */
  close(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#banLog.flush()
    this.#unbanLog.flush()
  }

  #lift(ban: PeerBan, how: 'expired' | 'lifted'): void {
    this.#bans.delete(ban.peerId)
    for (const ip of ban.ips) {
      const stillBanned = [...this.#bans.values()].some((b) => b.ips.includes(ip))
      if (!stillBanned) this.#ipBans.delete(ip)
    }
    this.#unbanLog(`peer ${ban.peerId} is no longer banned (${how})`)
    this.events.emit('peer:unbanned', { peerId: ban.peerId, reason: how })
  }

  #dropSoonestBan(): void {
    let soonest: PeerBan | undefined
    for (const ban of this.#bans.values()) if (!soonest || ban.until < soonest.until) soonest = ban
    if (soonest) this.#lift(soonest, 'expired')
  }

  /** One timer for the next ban to end. */
  #schedule(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    let next = Number.POSITIVE_INFINITY
    for (const ban of this.#bans.values()) next = Math.min(next, ban.until)
    if (!Number.isFinite(next)) return
    this.#timer = setTimeout(
      () => {
        const now = this.now()
        for (const ban of [...this.#bans.values()]) if (ban.until <= now) this.#lift(ban, 'expired')
        this.#schedule()
      },
      Math.max(0, Math.min(next - this.now(), 2 ** 31 - 1)),
    )
    this.#timer.unref()
  }
}
