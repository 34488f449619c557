/**
 * One decision on a relayed connection, and acting on it: a direct dial to a public remote, connection
 * reversal, a birthday punch, WebRTC upgrade attempts (at most `maxAttempts`, one with an unknown type),
 * or nothing (a pair that cannot punch). The strategy (strategy.ts) runs one decision per peer at a time.
 */
import type { Connection } from '@libp2p/interface'
import { describeConnection, sleep } from 'meshkit/plugin'
import { type BirthdayPunch, birthdayRole } from './birthday-punch.js'
import { isRelayed, webrtcAddressOf } from './connections.js'
import type { ConnectionMethodEvent, DecisionTrigger } from './index.js'
import { canPunch, type PeerNatType } from './nat-type.js'
import type { NatTypes } from './nat-types.js'
import type { PairConnections } from './pair-connections.js'
import type { PunchContext } from './punch-context.js'

/** Decisions (distinct NAT-type pairs) the strategy takes on one relayed connection, at most. */
export const MAX_DECISIONS = 4

/** A decision's key: both UDP types (what the rules read). */
export const decisionKey = (local: PeerNatType, remote: PeerNatType) => `${local}|${remote}`

/** What a decision reports; `unchanged`: a later decision on a type pair already decided on. */
export type Decision = ConnectionMethodEvent & { unchanged?: true }

/** What a decision reads and acts through: the strategy's parts. */
export interface DecisionContext extends PunchContext {
  readonly nat: NatTypes
  readonly pair: PairConnections
  readonly birthday: BirthdayPunch
  /** Type pairs decided on, per relayed connection. */
  readonly decided: Map<string, Set<string>>
  /** A WebRTC dial of the strategy's own (webrtc-gate.ts lets it through). */
  dialWebRTC(
    peer: string,
    address: string,
    signal: AbortSignal,
    onProgress: (type: string) => void,
  ): Promise<Connection>
}

/**
 * Decides on `relayed` and acts. It first waits (at most `classificationWait` from the connection's
 * opening) for a side whose classification is running. `trigger`: a later decision (`unchanged` when
 * that type pair was decided on this connection already).
 */
export async function decide(
  s: DecisionContext,
  relayed: Connection,
  openedAt: number,
  dialStart?: number,
  trigger?: DecisionTrigger,
): Promise<Decision> {
  const { ctx, opts } = s
  const peer = relayed.remotePeer.toString()
  const from = dialStart ?? openedAt
  const base = {
    peerId: peer,
    direction: relayed.direction,
    msToFirst: dialStart === undefined ? undefined : openedAt - dialStart,
    ...(trigger ? { trigger } : {}),
  }
  const address = webrtcAddressOf(relayed.remoteAddr.toString(), peer)
  // both sides' NAT types (UDP: the punch is UDP) decide what to try
  if (!trigger || s.nat.remote(peer) === undefined) await s.nat.exchange(relayed)
  // a side still classifying: its type is coming (the remote sends it again), wait for it (bounded)
  const until = openedAt + opts.classificationWait
  while (!ctx.signal.aborted && relayed.status === 'open' && Date.now() < until) {
    if (!s.nat.ownNatType().classifying && s.nat.remote(peer)?.classifying !== true) break
    await s.nat.waitWake(until)
  }
  // our type changed meanwhile: the remote learns it first (its side of a birthday punch reads it)
  if (s.nat.toldKey(peer) !== s.nat.ownKey() && relayed.status === 'open') await s.nat.exchange(relayed)
  if (relayed.status !== 'open')
    // e.g. a duplicate libp2p closed at once (both peers dialled): nothing was decided on it
    return {
      ...base,
      method: 'relayed' as const,
      transport: 'relay',
      attempts: 0,
      remoteAddr: relayed.remoteAddr.toString(),
      connectionId: relayed.id,
      error: 'the relayed connection closed before a decision',
      ...(trigger ? { unchanged: true as const } : {}),
    }
  const remote = s.nat.remote(peer)
  const localNat = s.nat.ownNatType().udp
  const remoteNat = remote?.udp ?? 'unknown'
  const nat = { localNat, remoteNat }
  const decided = s.decided.get(relayed.id) ?? new Set<string>()
  s.decided.set(relayed.id, decided)
  const relayedEvent = { ...base, ...nat, method: 'relayed' as const, transport: 'relay', attempts: 0 }
  /** The pair stays relayed on this connection. */
  const stayRelayed = { ...relayedEvent, remoteAddr: relayed.remoteAddr.toString(), connectionId: relayed.id }
  // both dialled at once: the remote's relayed connection opened after ours (while the types were
  // exchanged), and the side with the lower id upgrades; this one is decided on if that one closes
  if (s.pair.upgraderConnection(peer)?.id !== relayed.id) return stayRelayed
  const key = decisionKey(localNat, remoteNat)
  const retry = trigger === 'retry'
  if (trigger && (s.pair.usable(peer) || (!retry && (decided.has(key) || decided.size >= MAX_DECISIONS))))
    return { ...relayedEvent, remoteAddr: relayed.remoteAddr.toString(), unchanged: true }
  decided.add(key)
  if (s.pair.usable(peer))
    // nothing to do: the peer is reachable another way (this relayed connection is redundant)
    return stayRelayed
  let directAttempts = 0
  let error: string | undefined
  if (remote?.addrs && (remote.udp === 'public' || remote.tcp === 'public')) {
    // the remote is reachable: dial it directly (one bounded try, over its addresses)
    directAttempts = 1
    try {
      const direct = await s.pair.dialDirect(peer, remote.addrs)
      if (!isRelayed(direct))
        return {
          ...base,
          ...nat,
          method: 'direct',
          transport: describeConnection(direct).transport,
          attempts: 0,
          directAttempts,
          msToDirect: Date.now() - from,
          remoteAddr: direct.remoteAddr.toString(),
          connectionId: direct.id,
        }
    } catch (err) {
      error = `direct dial: ${err instanceof Error ? err.message : String(err)}`
    }
  }
  if (localNat === 'public' && remoteNat !== 'public' && remote !== undefined) {
    // we are reachable and told the remote our addresses: it dials us back (connection reversal)
    const until = Date.now() + opts.directTimeout
    let back = s.pair.directConnection(peer)
    while (!back && Date.now() < until && !ctx.signal.aborted) {
      await sleep(50, ctx.signal)
      back = s.pair.directConnection(peer)
    }
    if (back)
      return {
        ...base,
        ...nat,
        method: 'direct',
        transport: describeConnection(back).transport,
        attempts: 0,
        directAttempts: 1,
        msToDirect: Date.now() - from,
        remoteAddr: back.remoteAddr.toString(),
        connectionId: back.id,
      }
    error = 'the remote did not dial back'
  }
  let technique: 'birthday' | 'same-nat' | undefined
  // one NAT for both (the same external IP): the LAN connects them whatever its type (host candidates)
  const ownIp = s.nat.ownNatType().ip
  const sameNat = ownIp !== undefined && ownIp === remote?.ip
  const role = opts.birthday && !sameNat ? birthdayRole(localNat, remoteNat) : undefined
  if (sameNat && !canPunch(localNat, remoteNat)) technique = 'same-nat'
  if (role) {
    // port-restricted cone + symmetric: guess the port first; a failure leaves the pair relayed
    const failure = await s.birthday.punch(relayed, role)
    if (failure)
      return {
        ...stayRelayed,
        attempts: 1,
        directAttempts,
        technique: 'birthday',
        error: `birthday punch: ${failure}`,
      }
    technique = 'birthday'
  } else if (!canPunch(localNat, remoteNat) && !sameNat) {
    // port-restricted cone or symmetric with symmetric: a punch cannot work, do not spend one
    return { ...stayRelayed, directAttempts, skipped: `${localNat} + ${remoteNat} cannot punch`, error }
  }
  // a birthday punch's pin is for its own connection: another upgrade waits until it is taken
  if (technique !== 'birthday')
    for (let i = 0; i < 100 && s.birthday.pinned() && !ctx.signal.aborted; i++) await sleep(50, ctx.signal)
  // with both types known (and able to punch), a failed attempt is worth another (a lost ICE check
  // or DTLS flight on a lossy link); with an unknown type, one
  // (a later attempt is one, of the retry's length)
  const allowed =
    localNat === 'unknown' || remoteNat === 'unknown' || technique === 'same-nat' || retry
      ? Math.min(1, opts.maxAttempts)
      : opts.maxAttempts
  let attempts = 0
  while (attempts < allowed && !ctx.signal.aborted && relayed.status === 'open') {
    attempts++
    // a punchable pair whose attempt failed is most often on a lossy path (an ICE check, a DTLS or
    // SCTP handshake packet lost and sent again seconds later): the retry gets twice the time
    const timeout = opts.upgradeTimeout * (attempts > 1 || retry ? 2 : 1)
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(timeout)])
    try {
      let progress: string[] = []
      let direct: Connection
      for (;;) {
        progress = []
        try {
          direct = await s.dialWebRTC(peer, address, signal, (type) => progress.push(type))
        } catch (err) {
          // joined the previous attempt's dial, still winding down: its failure is not this attempt's
          if (!progress.includes('dial-queue:already-in-dial-queue') || signal.aborted) throw err
          await sleep(50, signal)
          continue
        }
        // while the dial that made the relayed connection is still queued, libp2p joins ours to it
        // (and hands back the relayed connection): wait for it to finish, then dial again
        if (!isRelayed(direct) || !progress.includes('dial-queue:already-in-dial-queue')) break
        await sleep(25, signal)
        signal.throwIfAborted()
      }
      if (!isRelayed(direct)) {
        return {
          ...base,
          ...nat,
          directAttempts,
          ...(technique ? { technique } : {}),
          method: 'hole-punched',
          transport: describeConnection(direct).transport,
          attempts,
          msToDirect: Date.now() - from,
          remoteAddr: direct.remoteAddr.toString(),
          connectionId: direct.id,
        }
      }
      error = `the upgrade gave a relayed connection (${direct.remoteAddr}; ${progress.join(' ')})`
    } catch (err) {
      error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
      ctx.logger.debug(`upgrade to ${address}, attempt ${attempts}: ${error}`)
    }
  }
  return { ...stayRelayed, directAttempts, ...(technique ? { technique } : {}), attempts, error }
}
