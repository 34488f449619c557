/**
 * Later attempts (`laterAttempts`): after a decision that spent attempts on a pair that can punch (both
 * NAT types known) and stayed relayed, more attempts in the background, the first `retryDelay` after the
 * failure, each next twice as long after the previous one, while the connection stays relayed; at most
 * {@link MAX_LATER_AT_ONCE} run at once per node.
 */
import type { Connection } from '@libp2p/interface'
import type { Decision } from './decision.js'
import type { DecisionTrigger } from './index.js'
import type { PairConnections } from './pair-connections.js'
import type { PunchContext } from './punch-context.js'

/** Later attempts running at once per node, at most; the others wait their turn. */
const MAX_LATER_AT_ONCE = 2

type LaterState = { made: number; timer?: ReturnType<typeof setTimeout> }

/** What a later attempt runs through: the strategy's one decision per peer at a time. */
export interface LaterHooks {
  /** Whether a decision on `peer` runs now. */
  deciding(peer: string): boolean
  /** Runs a decision (or joins the one running for that peer). */
  upgrade(
    relayed: Connection,
    openedAt: number,
    dialStart?: number,
    trigger?: DecisionTrigger,
  ): Promise<Decision>
}

export class LaterAttempts {
  /** Later attempts per relayed connection (made so far, and the timer of the next one). */
  readonly #later = new Map<string, LaterState>()
  #running = 0

  constructor(
    readonly hp: PunchContext,
    readonly pair: PairConnections,
    readonly hooks: LaterHooks,
  ) {}

  /** A connection closed: its later attempts are off. */
  forget(id: string): void {
    clearTimeout(this.#later.get(id)?.timer)
    this.#later.delete(id)
  }

  /** The node stops: every later attempt is off. */
  stop(): void {
    for (const l of this.#later.values()) clearTimeout(l.timer)
    this.#later.clear()
  }

  /**
   * After a decision that spent attempts on a pair that can punch (both types known) and stayed relayed:
   * the next later attempt on that connection, `retryDelay` × 2^(made) from now, while it stays relayed
   * (at most `laterAttempts` per connection).
   */
  schedule(relayed: Connection, event: Decision): void {
    const { ctx, opts } = this.hp
    if (event.unchanged || event.method !== 'relayed' || event.attempts === 0 || event.skipped) return
    if (event.localNat === undefined || event.localNat === 'unknown') return
    if (event.remoteNat === undefined || event.remoteNat === 'unknown') return
    if (ctx.signal.aborted || relayed.status !== 'open') return
    const state = this.#later.get(relayed.id) ?? { made: 0 }
    if (state.made >= opts.laterAttempts || state.timer) return
    this.#later.set(relayed.id, state)
    this.#arm(relayed, state, opts.retryDelay * 2 ** state.made)
  }

  #arm(relayed: Connection, state: LaterState, ms: number) {
    state.timer = setTimeout(() => {
      state.timer = undefined
      void this.#run(relayed, state)
    }, ms)
    state.timer.unref?.()
  }

  /** One later attempt on `relayed` (or a wait for its turn: one decision per peer, MAX_LATER_AT_ONCE). */
  async #run(relayed: Connection, state: LaterState): Promise<void> {
    const { ctx, opts, counters } = this.hp
    const peer = relayed.remotePeer.toString()
    if (ctx.signal.aborted || relayed.status !== 'open' || this.#later.get(relayed.id) !== state) return
    if (this.pair.usable(peer) || this.pair.upgraderConnection(peer)?.id !== relayed.id) return
    if (this.hooks.deciding(peer) || this.#running >= MAX_LATER_AT_ONCE) {
      // a decision on this peer runs, or the node's later attempts are busy: wait a turn, uncounted
      this.#arm(relayed, state, opts.retryDelay)
      return
    }
    state.made++
    this.#running++
    try {
      const event = await this.hooks.upgrade(relayed, relayed.timeline.open, undefined, 'retry')
      if (event.unchanged) return
      if (event.method === 'relayed') {
        counters.attemptsFailed(event.attempts)
        ctx.logger.debug(
          `later attempt ${state.made} on ${peer}: still relayed (${event.skipped ?? event.error ?? 'no attempt'})`,
        )
        return
      }
      const { unchanged: _, ...report } = event
      counters.record(report)
      ctx.events.emit('connection:method', { ...report })
    } finally {
      this.#running--
    }
  }
}
