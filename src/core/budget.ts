import { LruMap, TokenBucket } from './token-bucket.js'

/**
 * What one protocol lets each remote peer, and all of them together, spend. Every custom protocol a
 * plugin serves should have one: a peer that goes over its own budget is refused (and penalized, see
 * {@link PeerReputation}); the global caps bound the total work whatever the number of peers.
 */
export interface BudgetInit {
  /** Requests one peer may start per second, sustained. @default 1 */
  ratePerSecond?: number
  /** Requests one peer may start at once above the sustained rate. @default 10 */
  burst?: number
  /** Requests of one peer in flight at once. @default 2 */
  concurrency?: number
  /** Bytes one peer may send per minute (counted with `ticket.spend()`). @default 1048576 (1 MiB) */
  bytesPerMinute?: number
  /** Requests in flight at once across all peers. @default 64 */
  globalConcurrency?: number
  /** Requests per second across all peers (burst: two seconds' worth). @default 200 */
  globalRatePerSecond?: number
  /** Peers whose budgets are tracked at once; the least recently active one is forgotten first. @default 4096 */
  maxPeers?: number
}

/** Why a request was refused. `peer`: the peer went over its own budget; `global`: the node is busy. */
export type BudgetRefusalReason = 'rate' | 'concurrency' | 'bytes' | 'global-rate' | 'global-concurrency'

/** A request admitted by a {@link Budget}: release it when the request is done (idempotent). */
export interface BudgetTicket {
  readonly ok: true
  /** Counts `bytes` received from the peer against its byte budget; false when that went over it. */
  spend(bytes: number): boolean
  release(): void
}

export interface BudgetRefusal {
  readonly ok: false
  readonly reason: BudgetRefusalReason
  /** True when the peer itself went over its budget (its fault), false when the node as a whole is busy. */
  readonly peerFault: boolean
}

export interface BudgetStats {
  /** Requests admitted since the budget was made. */
  admitted: number
  /** Requests refused, by reason. */
  refused: Record<BudgetRefusalReason, number>
  /** Requests in flight now. */
  inFlight: number
  /** Peers tracked now. */
  peers: number
}

/** A protocol's per-peer and global budget (see {@link createBudget}). */
export interface Budget {
  readonly name: string
  /** Admits one request of `peer`, or says why not. O(1). */
  admit(peer: string): BudgetTicket | BudgetRefusal
  /** Counts `bytes` received from `peer` outside a ticket; false when that went over its byte budget. */
  spend(peer: string, bytes: number): boolean
  stats(): BudgetStats
}

interface PeerState {
  rate: TokenBucket
  bytes: TokenBucket
  inFlight: number
}

/** The budget defaults, in one place (see {@link BudgetInit} for what each means). */
export const BUDGET_DEFAULTS: Required<BudgetInit> = {
  ratePerSecond: 1,
  burst: 10,
  concurrency: 2,
  bytesPerMinute: 1024 * 1024,
  globalConcurrency: 64,
  globalRatePerSecond: 200,
  maxPeers: 4096,
}

/**
 * Makes a budget. `onRefused` is told each refusal (the kernel penalizes the peer when it was its fault);
 * `now` is for tests.
 */
export function createBudget(
  name: string,
  init: BudgetInit = {},
  onRefused?: (peer: string, refusal: BudgetRefusal) => void,
  now: () => number = Date.now,
): Budget {
  const s = { ...BUDGET_DEFAULTS, ...init }
  for (const [key, value] of Object.entries(s))
    if (!(typeof value === 'number' && value > 0))
      throw new RangeError(`budget ${name}: ${key} must be a number > 0 (got ${value})`)
  const peers = new LruMap<string, PeerState>(s.maxPeers)
  const globalRate = new TokenBucket(s.globalRatePerSecond, s.globalRatePerSecond * 2, now)
  let inFlight = 0
  let admitted = 0
  const refused: Record<BudgetRefusalReason, number> = {
    rate: 0,
    concurrency: 0,
    bytes: 0,
    'global-rate': 0,
    'global-concurrency': 0,
  }
  const stateOf = (peer: string): PeerState => {
    let state = peers.get(peer)
    if (!state) {
      state = {
        rate: new TokenBucket(s.ratePerSecond, s.burst, now),
        bytes: new TokenBucket(s.bytesPerMinute / 60, s.bytesPerMinute, now),
        inFlight: 0,
      }
      peers.set(peer, state)
    }
    return state
  }
  const refuse = (peer: string, reason: BudgetRefusalReason): BudgetRefusal => {
    refused[reason]++
    const refusal: BudgetRefusal = { ok: false, reason, peerFault: !reason.startsWith('global') }
    onRefused?.(peer, refusal)
    return refusal
  }
  const spend = (peer: string, bytes: number): boolean => {
    if (bytes <= 0) return true
    if (stateOf(peer).bytes.take(bytes)) return true
    refuse(peer, 'bytes')
    return false
  }
  return {
    name,
    admit(peer) {
      const state = stateOf(peer)
      if (state.inFlight >= s.concurrency) return refuse(peer, 'concurrency')
      if (inFlight >= s.globalConcurrency) return refuse(peer, 'global-concurrency')
      if (!state.rate.take()) return refuse(peer, 'rate')
      if (!globalRate.take()) return refuse(peer, 'global-rate')
      state.inFlight++
      inFlight++
      admitted++
      let released = false
      return {
        ok: true,
        spend: (bytes) => spend(peer, bytes),
        release: () => {
          if (released) return
          released = true
          inFlight--
          // the peer's state may have been forgotten (LRU) meanwhile: only a tracked one counts down
          const current = peers.peek(peer)
          if (current === state) state.inFlight--
        },
      }
    },
    spend,
    stats: () => ({ admitted, refused: { ...refused }, inFlight, peers: peers.size }),
  }
}
