/**
 * The birthday punch as the strategy runs it (the mechanics are in birthday.ts and birthday-run.ts): for
 * a port-restricted cone + symmetric pair, one punch at a time per node, budgeted, over
 * `/mesh/birthday/1.0.0` on the relayed connection (either side), with proofs checked against the STUN
 * servers this node trusts and aims checked against `network.addressScope`. A punch that worked pins the
 * UDP port of the node's next WebRTC connection ({@link BirthdayPunch.rtcConfiguration}).
 */
import { networkInterfaces } from 'node:os'
import type { Connection, Stream } from '@libp2p/interface'
import { type Budget, sleep } from 'meshkit/plugin'
import { BIRTHDAY_PROTOCOL, BirthdayBudget, encodeBirthdayMessage, isGuessTarget } from './birthday.js'
import { BirthdayChannel, type ProofRefusal, runBirthday } from './birthday-run.js'
import { isRelayed } from './connections.js'
import type { PeerNatType } from './nat-type.js'
import type { NatTypes } from './nat-types.js'
import type { PunchContext } from './punch-context.js'
import { verifyAttestation } from './stun-wire.js'

/** How far an attestation's time may be from this node's clock (its nonce already makes it fresh). */
const ATTESTATION_MAX_SKEW_MS = 5 * 60_000
/**
 * When both peers decide on their own relayed connection at once, both would start a birthday punch and
 * each would refuse the other's (one per peer per 30 s): the side with the higher peer id waits this long
 * for the other's request before it starts one itself.
 */
const BIRTHDAY_YIELD_MS = 1500

/** This side's role in a birthday punch, for a port-restricted cone + symmetric pair; else undefined. */
export function birthdayRole(
  local: PeerNatType,
  remote: PeerNatType | undefined,
): 'cone' | 'random' | undefined {
  if (local === 'port-restricted-cone' && remote === 'symmetric') return 'cone'
  if (local === 'symmetric' && remote === 'port-restricted-cone') return 'random'
  return undefined
}

export class BirthdayPunch {
  /** The local UDP port the next WebRTC connection binds (a birthday punch's), and until when. */
  #pin?: { port: number; until: number }
  /** One birthday punch at a time per node (256 sockets, and one pinned port). */
  #busy = false
  readonly #budget = new BirthdayBudget()
  /** Per-peer budget of /mesh/birthday/1.0.0 (made at start). */
  #streams?: Budget

  constructor(
    readonly hp: PunchContext,
    readonly nat: NatTypes,
  ) {}

  /** Makes the protocol's budget: a birthday punch at most every 30 s per peer (BirthdayBudget). */
  start(): void {
    this.#streams = this.hp.ctx.budget('birthday', {
      ratePerSecond: 0.2,
      burst: 3,
      concurrency: 1,
      globalConcurrency: 8,
    })
  }

  /** The RTCConfiguration of the next WebRTC connection: the STUN servers, and a pinned port if any. */
  rtcConfiguration(): Record<string, unknown> {
    const config: Record<string, unknown> = {
      iceServers: this.hp.opts.stunServers.map((url) => ({ urls: [url] })),
    }
    const pin = this.pinned()
    this.#pin = undefined
    if (pin) Object.assign(config, { portRangeBegin: pin.port, portRangeEnd: pin.port })
    return config
  }

  /** The pin of a birthday punch that no WebRTC connection has taken yet (it expires after `exchangeTimeout`). */
  pinned(): { port: number; until: number } | undefined {
    if (this.#pin && this.#pin.until <= Date.now()) this.#pin = undefined
    return this.#pin
  }

  /** A birthday punch runs, or its pin waits for its WebRTC connection. */
  #busyNow(): boolean {
    return this.#busy || this.pinned() !== undefined
  }

  /** The first STUN server given as `stun:<IPv4>:<port>` (the birthday punch needs no DNS), as ip:port. */
  #stunEndpoint(): string | undefined {
    for (const url of this.hp.opts.stunServers) {
      const m = /^stun:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(url)
      if (m) return `${m[1]}:${m[2]}`
    }
    return undefined
  }

  /**
   * Why this node must not send birthday traffic to `ip`, which the remote named (undefined: it may):
   * outside `network.addressScope` (`network.publicCidrs` adds ranges), one of this host's addresses,
   * or 0/8, 127/8, 224/3 whatever the scope.
   */
  #refuseAim(ip: string): string | undefined {
    if (!isGuessTarget(ip)) return `${ip} is this host, multicast or reserved`
    const scope = this.hp.ctx.peerAddresses.refuse(ip)
    if (scope !== undefined) return scope
    const own = Object.values(networkInterfaces())
      .flat()
      .some((i) => i?.address === ip)
    return own ? `${ip} is an address of this host` : undefined
  }

  /**
   * STUN servers whose attestations this node accepts: the relays it configured (this plugin's, or those
   * relayClient() holds reservations on), itself, and any peer it is directly connected to at the IP of
   * one of its own `stunServers`.
   */
  trustedAttesters(): Set<string> {
    const ids = new Set(this.hp.relayIds)
    ids.add(this.hp.ctx.peerId.toString())
    for (const r of this.hp.relayClient?.reservations() ?? []) ids.add(r.relay)
    const stunIps = new Set(
      this.hp.opts.stunServers
        .map((url) => /^stuns?:(\d{1,3}(?:\.\d{1,3}){3})(?::\d+)?$/.exec(url)?.[1])
        .filter((ip) => ip !== undefined),
    )
    if (stunIps.size > 0)
      for (const c of this.hp.ctx.libp2p.getConnections()) {
        if (c.status !== 'open' || isRelayed(c)) continue
        const ip = /^\/ip4\/([^/]+)/.exec(c.remoteAddr.toString())?.[1]
        if (ip !== undefined && stunIps.has(ip)) ids.add(c.remotePeer.toString())
      }
    return ids
  }

  /**
   * Checks a remote's proof of its address: an attestation by a STUN server this node trusts, for
   * `nonce` (this node's), of the claimed address, not too far from this node's clock.
   */
  async #verifyProof(
    proof: Uint8Array,
    nonce: Uint8Array,
    claim: { ip: string; port?: number },
  ): Promise<ProofRefusal | undefined> {
    const a = await verifyAttestation(proof, nonce)
    if ('error' in a) return { reason: a.error, forged: true }
    if (a.ip !== claim.ip || (claim.port !== undefined && a.port !== claim.port))
      return { reason: `it attests ${a.ip}:${a.port}, not the address claimed`, forged: true }
    if (Math.abs(Date.now() - a.time) > ATTESTATION_MAX_SKEW_MS)
      return { reason: "its time is more than 5 minutes from this node's clock", forged: false }
    if (!this.trustedAttesters().has(a.signer))
      return { reason: `signed by ${a.signer}, not a STUN server this node trusts`, forged: false }
    return undefined
  }

  /**
   * One birthday punch over `stream` (either side): this node's role comes from its own NAT type.
   * Resolves with undefined once both sides pinned their next WebRTC connection to the punched ports, or
   * with why it did not work.
   */
  async #run(
    stream: Stream,
    role: 'cone' | 'random',
    stunServer: string,
    peer: string,
  ): Promise<string | undefined> {
    const penalize = (offence: 'malformed' | 'forged', detail: string) =>
      this.hp.ctx.reputation.penalize(peer, offence, detail)
    const channel = new BirthdayChannel(stream, penalize)
    const step = this.hp.opts.exchangeTimeout
    const result = await runBirthday(
      {
        stream,
        role,
        stunServer,
        step,
        sockets: this.hp.opts.birthdaySockets,
        guesses: this.hp.opts.birthdayGuesses,
        signal: this.hp.ctx.signal,
        verify: (proof, nonce, claim) => this.#verifyProof(proof, nonce, claim),
        refuseAim: (ip) => this.#refuseAim(ip),
        penalize,
      },
      channel,
    )
    if ('failure' in result) return result.failure
    this.#pin = { port: result.port, until: Date.now() + step }
    try {
      channel.send({ v: 1, t: 'pinned' })
      await channel.expect('pinned', step)
    } catch (err) {
      this.#pin = undefined
      throw err
    }
    return undefined
  }

  /**
   * Why this node will not take part in a birthday punch with `peer` now; undefined: it will (and is
   * now busy). The STUN server it needs is returned too.
   */
  #refusal(
    peer: string,
    role: 'cone' | 'random' | undefined,
    pair: string,
  ): { refusal: string; stunServer?: undefined } | { refusal?: undefined; stunServer: string } {
    const stunServer = this.#stunEndpoint()
    if (!this.hp.opts.birthday) return { refusal: 'birthday punching is off' }
    if (!role) return { refusal: `not for ${pair}` }
    if (!stunServer) return { refusal: 'no stun:<IPv4>:<port> in stunServers' }
    if (this.#busyNow()) return { refusal: 'another birthday punch is running' }
    if (!this.#budget.take(peer))
      return { refusal: 'over the birthday punch budget (10 a minute, 1 per peer per 30 s)' }
    this.#busy = true
    return { stunServer }
  }

  /** Listener side of /mesh/birthday/1.0.0: only for a pair that needs it, one at a time, budgeted. */
  async answer(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const ticket = this.#streams?.admit(peer)
    if (!ticket?.ok) {
      stream.abort(new Error(`birthday: refused (${ticket?.reason ?? 'not started'})`))
      return
    }
    try {
      await this.#answerAdmitted(stream, peer)
    } finally {
      ticket.release()
    }
  }

  async #answerAdmitted(stream: Stream, peer: string): Promise<void> {
    const local = this.nat.ownNatType().udp
    const remote = this.nat.remote(peer)?.udp
    const role = birthdayRole(local, remote)
    const { refusal, stunServer } = this.#refusal(peer, role, `${local} + ${remote ?? 'an unknown NAT type'}`)
    try {
      if (refusal !== undefined || !role) {
        stream.send(encodeBirthdayMessage({ v: 1, t: 'miss', reason: refusal ?? 'no role' }))
        await stream.close({ signal: AbortSignal.timeout(this.hp.opts.exchangeTimeout) })
        return
      }
      const failure = await this.#run(stream, role, stunServer, peer)
      if (failure) this.hp.ctx.logger.debug(`birthday punch with ${peer}: ${failure}`)
      await stream.close({ signal: AbortSignal.timeout(this.hp.opts.exchangeTimeout) })
    } catch (err) {
      this.hp.ctx.logger.debug(`birthday punch with ${peer}: ${err}`)
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      if (refusal === undefined) this.#busy = false
    }
  }

  /** Dialer side: a birthday punch over the relayed connection; undefined when both sides pinned. */
  async punch(relayed: Connection, role: 'cone' | 'random'): Promise<string | undefined> {
    const peer = relayed.remotePeer.toString()
    // the lower id starts; the higher one starts only if no request came meanwhile (then the punch it
    // answers is the pair's, and this one stands back: 'another birthday punch is running')
    if (this.hp.ctx.peerId.toString() > peer) await sleep(BIRTHDAY_YIELD_MS, this.hp.ctx.signal)
    if (this.hp.ctx.signal.aborted) return 'stopped'
    const { refusal, stunServer } = this.#refusal(peer, role, role)
    if (refusal !== undefined) return refusal
    let stream: Stream | undefined
    try {
      stream = await relayed.newStream(BIRTHDAY_PROTOCOL, {
        signal: AbortSignal.any([this.hp.ctx.signal, AbortSignal.timeout(this.hp.opts.exchangeTimeout)]),
        runOnLimitedConnection: true,
      })
      const failure = await this.#run(stream, role, stunServer, peer)
      await stream.close({ signal: AbortSignal.timeout(this.hp.opts.exchangeTimeout) }).catch(() => {})
      return failure
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      return err instanceof Error ? err.message : String(err)
    } finally {
      this.#busy = false
    }
  }
}
