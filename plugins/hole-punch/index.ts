/**
 * Hole punching that works from Node.js: reach a NATed peer through a circuit relay, then upgrade to a
 * direct WebRTC connection (`@libp2p/webrtc` private-to-private: the SDP offer/answer and ICE candidates
 * travel over the relayed connection; ICE punches UDP with the candidates learnt from the STUN servers
 * given here). DCUtR is not used: in Node it produced no direct connection for any NATed pair (outbound
 * TCP cannot reuse the listening port, QUIC dials from a separate socket).
 *
 * Strategy: the two peers exchange their NAT types (with `classifier: true`, the 'nat-classification'
 * capability's verdict; else 'unknown') over the relayed connection (`/mesh/nat-type/1.0.0`, see
 * nat-type.ts). A public remote that names its direct addresses is dialled directly; a NATed remote
 * reached by a public dialler dials it back (connection reversal); a port-restricted cone with a
 * symmetric NAT first finds a mapping by birthday-paradox port guessing (birthday.ts) and pins the WebRTC
 * upgrade to it; symmetric with symmetric stays relayed without any attempt; every other pair, `unknown`
 * included, gets (bounded) WebRTC upgrade attempts.
 *
 * `holePunch()` classifies every connection as `direct`, `hole-punched` or `relayed`, emits
 * `connection:method` on the node's event bus and keeps counters and timing histograms (`stats()`).
 * `stunServer()` serves STUN (RFC 5389 binding) on a public node, so that NATed peers learn their mapped
 * addresses from the mesh itself, and signs attestations of them (stun-wire.ts).
 *
 * Against hostile peers (docs/nat.md, "Security"): an inbound relayed connection is accepted only through
 * a relay this node holds a reservation on (stop-guard.ts: any other STOP stream is reset unread, its
 * sender penalized); only configured relays are listened on, and only their listens are retried
 * (tolerant-relay-listen.ts); addresses a peer names are dialled only within `network.addressScope`, one
 * dial per peer per `security.peerDialInterval`; a birthday punch sends nothing to an address until a
 * STUN server this node trusts attested that it is the peer's (birthday-run.ts); `/mesh/nat-type` and
 * `/mesh/birthday` have per-peer budgets, and malformed input or a false proof is penalized.
 */
import { networkInterfaces } from 'node:os'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import {
  type Budget,
  type Capability,
  definePlugin,
  describeConnection,
  type Libp2pContribution,
  type MeshPlugin,
  meshError,
  multiaddrSchema,
  type PluginContext,
  sleep,
  z,
} from 'meshkit/plugin'
import { BIRTHDAY_PROTOCOL, BirthdayBudget, encodeBirthdayMessage, isGuessTarget } from './birthday.js'
import { BirthdayChannel, type ProofRefusal, runBirthday } from './birthday-run.js'
import {
  canPunch,
  encodeNatType,
  isNatType,
  MAX_NAT_TYPE_BYTES,
  NAT_TYPE_PROTOCOL,
  type NatTypeMessage,
  type PeerNatType,
  parseNatType,
  readNatTypeLine,
} from './nat-type.js'
import { ConnectionStats, type HolePunchStats } from './stats.js'
import { guardStop, type RelayStanding, relayedConnectionGater, type StopGuardInit } from './stop-guard.js'
import { StunServer, type StunServerStats } from './stun-server.js'
import { createAttestation, verifyAttestation } from './stun-wire.js'
import { tolerantRelayListen } from './tolerant-relay-listen.js'

export {
  BIRTHDAY_PROTOCOL,
  type BirthdayMessage,
  encodeBirthdayMessage,
  MAX_BIRTHDAY_LINE_BYTES,
  parseBirthdayMessage,
} from './birthday.js'
export {
  canPunch,
  encodeNatType,
  MAX_NAT_TYPE_BYTES,
  NAT_TYPE_PROTOCOL,
  type NatTypeMessage,
  type PeerNatType,
  parseNatType,
} from './nat-type.js'
export { ConnectionStats, type HolePunchStats, TIMING_BUCKETS_MS, type TimingSummary } from './stats.js'
export {
  type Attestation,
  createAttestation,
  encodeBindingRequest,
  parseBindingResponse,
  verifyAttestation,
} from './stun-wire.js'

export type ConnectionMethod = 'direct' | 'hole-punched' | 'relayed'

/** What `connection:method` carries, and what {@link HolePunchApi.connect} resolves with. */
export interface ConnectionMethodEvent {
  peerId: string
  method: ConnectionMethod
  /** The transport of the connection in use: tcp, quic, webrtc, or relay (a limited, relayed one). */
  transport: string
  /** Hole-punch (WebRTC upgrade) attempts made; 0 when none was needed. */
  attempts: number
  /** From the dial (connect()) to the first connection; undefined when the dial was not ours. */
  msToFirst?: number
  /** From the dial (or from the relayed connection's opening) to the direct one; undefined if none. */
  msToDirect?: number
  direction: 'inbound' | 'outbound'
  remoteAddr: string
  /** Why the last upgrade attempt failed, when the connection stayed relayed. */
  error?: string
  /** This node's NAT type (UDP) when the strategy decided; 'unknown' without a classifier verdict. */
  localNat?: PeerNatType
  /** The remote's NAT type (UDP) as it told us over /mesh/nat-type/1.0.0; 'unknown' if it did not. */
  remoteNat?: PeerNatType
  /** Why no upgrade was attempted (the pair cannot punch), when the connection stayed relayed. */
  skipped?: string
  /** Direct dials tried because the remote said it is public (0 or 1). */
  directAttempts?: number
  /**
   * How the punch was prepared: `'birthday'` when a port-restricted cone and a symmetric NAT first
   * found a mapping by birthday-paradox port guessing (see birthday.ts); absent for a plain ICE punch.
   */
  technique?: 'birthday'
}

export interface ConnectOptions {
  signal?: AbortSignal
  /**
   * Try the WebRTC upgrade when the dial gives a relayed connection (the strategy already skips pairs
   * that cannot punch, symmetric with symmetric, when it knows both NAT types). @default true
   */
  upgrade?: boolean
}

export interface HolePunchApi {
  /**
   * Dials `target` (a multiaddr with /p2p/, direct or `<relay>/p2p-circuit/p2p/<peer>`), and when only
   * a relayed connection results, tries to upgrade it to a direct WebRTC one. Resolves with the outcome.
   */
  connect(target: string, options?: ConnectOptions): Promise<ConnectionMethodEvent>
  /** The method of the best connection to `peer` now (undefined: not connected). */
  methodOf(peer: PeerId | string): ConnectionMethod | undefined
  /** Counters by method and transport, punch attempts, and msToFirst / msToDirect histograms. */
  stats(): HolePunchStats
  /** The NAT type (UDP, TCP) a peer told us, if it did. */
  remoteNatOf(peer: PeerId | string): { udp: PeerNatType; tcp: PeerNatType } | undefined
}

/** The part of the 'nat-classification' capability (natClassifier()) this plugin reads. */
interface NatClassification {
  report(): { udp?: { type: string }; tcp?: { type: string } } | undefined
}

/** The part of the 'relay-client' capability (relayClient()) this plugin reads. */
interface RelayClientView {
  reservations(): Array<{ relay: string }>
}

/** How far an attestation's time may be from this node's clock (its nonce already makes it fresh). */
const ATTESTATION_MAX_SKEW_MS = 5 * 60_000
/**
 * STOP streams one relay of ours may hold open per connection (one per relayed connection through it;
 * circuit-relay-v2's default is 300).
 */
const MAX_INBOUND_STOP_STREAMS = 64

/** A STUN URL as RTCIceServer urls take it, e.g. `stun:198.51.100.10:3478`. */
const stunUrl = z.string().regex(/^stuns?:[^\s]+$/, "a STUN URL such as 'stun:198.51.100.10:3478'")

const options = z
  .strictObject({
    /**
     * STUN servers for ICE (served by the mesh's public nodes: see `stunServer()`). Never left to
     * @libp2p/webrtc's defaults (third-party public servers): [] means host candidates only.
     */
    stunServers: z.array(stunUrl).default([]),
    /** Relays to listen on (reserve a slot): multiaddrs ending in /p2p/<relay id>. @default [] */
    relays: z.array(multiaddrSchema("'/ip4/198.51.100.10/tcp/4001/p2p/12D3Koo...'")).default([]),
    /** How long one WebRTC upgrade attempt may take (libjuice reports no ICE failure: only this ends it). */
    upgradeTimeout: z.number().int().positive().default(6000),
    /** Upgrade attempts per relayed connection. @default 1 */
    maxAttempts: z.number().int().min(0).default(1),
    /**
     * How long an inbound WebRTC connection must stay open before the listener counts it as punched (a
     * failed ICE run still surfaces a short-lived inbound connection). @default 1000
     */
    inboundSettleMs: z.number().int().min(0).default(1000),
    /**
     * Read this node's NAT type from the 'nat-classification' capability (natClassifier()) and base the
     * strategy on both sides' types. `'auto'`: when the config has a classifier (an optional
     * dependency). `true` makes it a required dependency: a config without a classifier is rejected at
     * start (MESH_ERR_MISSING_DEPENDENCY). `false`: this node says 'unknown', and only the remote's type
     * (if it has a classifier) steers the strategy. @default 'auto'
     */
    classifier: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** Longest wait for the NAT-type exchange over the relayed connection. @default 3000 */
    exchangeTimeout: z.number().int().positive().default(3000),
    /** Longest direct dial to a remote that says it is public. @default 3000 */
    directTimeout: z.number().int().positive().default(3000),
    /**
     * Port-restricted cone + symmetric (which a plain punch cannot open): punch by birthday-paradox port
     * guessing over UDP (`/mesh/birthday/1.0.0` over the relayed connection; needs both sides' NAT types
     * and a `stun:<IPv4>:<port>` entry that is a Meshkit `stunServer()`: its signed attestations prove
     * each side's address to the other, and nothing is sent to an unproven one), then hand the punched
     * ports to WebRTC. `false`: such pairs stay relayed without an attempt. @default true
     */
    birthday: z.boolean().default(true),
    /** Sockets the symmetric side opens for a birthday punch. @default 256 */
    birthdaySockets: z.number().int().min(16).max(1024).default(256),
    /** Most ports the cone side guesses in a birthday punch (about 2,400 per second). @default 4000 */
    birthdayGuesses: z.number().int().min(100).max(20_000).default(4000),
  })
  .default({
    stunServers: [],
    relays: [],
    upgradeTimeout: 6000,
    maxAttempts: 1,
    inboundSettleMs: 1000,
    classifier: 'auto',
    exchangeTimeout: 3000,
    directTimeout: 3000,
    birthday: true,
    birthdaySockets: 256,
    birthdayGuesses: 4000,
  })

type Options = z.output<typeof options>

/** This side's role in a birthday punch, for a port-restricted cone + symmetric pair; else undefined. */
export function birthdayRole(
  local: PeerNatType,
  remote: PeerNatType | undefined,
): 'cone' | 'random' | undefined {
  if (local === 'port-restricted-cone' && remote === 'symmetric') return 'cone'
  if (local === 'symmetric' && remote === 'port-restricted-cone') return 'random'
  return undefined
}

/**
 * Relayed = the connection has limits, or is a circuit (a relay may grant one without limits); a WebRTC
 * connection signalled through a relay still names /p2p-circuit in its address, and is direct.
 */
const isRelayed = (c: Connection) => c.limits !== undefined || describeConnection(c).transport === 'relay'

function methodOfConnection(c: Connection): ConnectionMethod {
  if (isRelayed(c)) return 'relayed'
  return describeConnection(c).transport === 'webrtc' ? 'hole-punched' : 'direct'
}

/** The last /p2p/<id> of an address (the target peer), or undefined. */
export function peerIdOf(address: string): string | undefined {
  return /\/p2p\/([^/]+)\/?$/.exec(address)?.[1]
}

/** `<relay>/p2p-circuit/p2p/<peer>` -> `<relay>/p2p-circuit/webrtc/p2p/<peer>`. */
export function webrtcAddressOf(relayed: string, peer: string): string {
  const circuit = relayed.indexOf('/p2p-circuit')
  if (circuit < 0) throw new Error(`not a relayed address: ${relayed}`)
  return `${relayed.slice(0, circuit)}/p2p-circuit/webrtc/p2p/${peer}`
}

class Strategy implements HolePunchApi {
  readonly #dialStarts = new Map<string, number>()
  readonly #noUpgrade = new Set<string>()
  readonly #outcomes = new Map<string, Promise<ConnectionMethodEvent>>()
  readonly #upgrading = new Map<string, Promise<ConnectionMethodEvent>>()
  /** NAT types peers told us (bounded: the oldest entries go first). */
  readonly #remoteNat = new Map<string, { udp: PeerNatType; tcp: PeerNatType }>()
  readonly #stats = new ConnectionStats()
  #classifier?: NatClassification
  #off?: () => void
  /** The local UDP port the next WebRTC connection binds (a birthday punch's), and until when. */
  #pin?: { port: number; until: number }
  /** One birthday punch at a time per node (256 sockets, and one pinned port). */
  #birthdayBusy = false
  readonly #birthdayBudget = new BirthdayBudget()
  /** Per-peer budgets of the two protocols this plugin serves (made at start). */
  #natTypeStreams?: Budget
  #birthdayStreams?: Budget
  #relayClient?: RelayClientView
  /** Peer ids of the relays in this plugin's options. */
  readonly relayIds: ReadonlySet<string>

  constructor(
    readonly opts: Options,
    readonly ctx: PluginContext,
  ) {
    this.relayIds = new Set(opts.relays.map(peerIdOf).filter((p): p is string => p !== undefined))
  }

  async start(): Promise<void> {
    if (this.opts.classifier === true)
      this.#classifier = this.ctx.use<NatClassification>('nat-classification')
    else if (this.opts.classifier === 'auto')
      this.#classifier = this.ctx.useOptional<NatClassification>('nat-classification')
    this.#relayClient = this.ctx.useOptional<RelayClientView>('relay-client')
    // one exchange per relayed connection; a birthday punch at most every 30 s per peer (BirthdayBudget)
    this.#natTypeStreams = this.ctx.budget('nat-type', {
      ratePerSecond: 1,
      burst: 10,
      concurrency: 2,
      bytesPerMinute: 64 * 1024,
    })
    this.#birthdayStreams = this.ctx.budget('birthday', {
      ratePerSecond: 0.2,
      burst: 3,
      concurrency: 1,
      globalConcurrency: 8,
    })
    await this.ctx.libp2p.handle(
      NAT_TYPE_PROTOCOL,
      (stream, connection) => this.#answer(stream, connection),
      {
        runOnLimitedConnection: true,
        maxInboundStreams: 4,
        maxOutboundStreams: 4,
      },
    )
    await this.ctx.libp2p.handle(
      BIRTHDAY_PROTOCOL,
      (stream, connection) => this.#answerBirthday(stream, connection),
      { runOnLimitedConnection: true, maxInboundStreams: 2, maxOutboundStreams: 2 },
    )
    const listener = (evt: CustomEvent<Connection>) => {
      void this.#handle(evt.detail).catch((err) => this.ctx.logger.debug(`classify: ${err}`))
    }
    this.ctx.libp2p.addEventListener('connection:open', listener)
    this.#off = () => this.ctx.libp2p.removeEventListener('connection:open', listener)
  }

  async stop(): Promise<void> {
    this.#off?.()
    await this.ctx.libp2p.unhandle(NAT_TYPE_PROTOCOL).catch(() => {})
    await this.ctx.libp2p.unhandle(BIRTHDAY_PROTOCOL).catch(() => {})
  }

  /** The RTCConfiguration of the next WebRTC connection: the STUN servers, and a pinned port if any. */
  rtcConfiguration(): Record<string, unknown> {
    const config: Record<string, unknown> = {
      iceServers: this.opts.stunServers.map((url) => ({ urls: [url] })),
    }
    const pin = this.#pinned()
    this.#pin = undefined
    if (pin) Object.assign(config, { portRangeBegin: pin.port, portRangeEnd: pin.port })
    return config
  }

  /** The pin of a birthday punch that no WebRTC connection has taken yet (it expires after `exchangeTimeout`). */
  #pinned(): { port: number; until: number } | undefined {
    if (this.#pin && this.#pin.until <= Date.now()) this.#pin = undefined
    return this.#pin
  }

  /** A birthday punch runs, or its pin waits for its WebRTC connection. */
  #birthdayBusyNow(): boolean {
    return this.#birthdayBusy || this.#pinned() !== undefined
  }

  /** The first STUN server given as `stun:<IPv4>:<port>` (the birthday punch needs no DNS), as ip:port. */
  #stunEndpoint(): string | undefined {
    for (const url of this.opts.stunServers) {
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
    const scope = this.ctx.peerAddresses.refuse(ip)
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
    const ids = new Set(this.relayIds)
    ids.add(this.ctx.peerId.toString())
    for (const r of this.#relayClient?.reservations() ?? []) ids.add(r.relay)
    const stunIps = new Set(
      this.opts.stunServers
        .map((url) => /^stuns?:(\d{1,3}(?:\.\d{1,3}){3})(?::\d+)?$/.exec(url)?.[1])
        .filter((ip) => ip !== undefined),
    )
    if (stunIps.size > 0)
      for (const c of this.ctx.libp2p.getConnections()) {
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
  async #birthdayRun(
    stream: Stream,
    role: 'cone' | 'random',
    stunServer: string,
    peer: string,
  ): Promise<string | undefined> {
    const penalize = (offence: 'malformed' | 'forged', detail: string) =>
      this.ctx.reputation.penalize(peer, offence, detail)
    const channel = new BirthdayChannel(stream, penalize)
    const step = this.opts.exchangeTimeout
    const result = await runBirthday(
      {
        stream,
        role,
        stunServer,
        step,
        sockets: this.opts.birthdaySockets,
        guesses: this.opts.birthdayGuesses,
        signal: this.ctx.signal,
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
  #birthdayRefusal(
    peer: string,
    role: 'cone' | 'random' | undefined,
    pair: string,
  ): { refusal: string; stunServer?: undefined } | { refusal?: undefined; stunServer: string } {
    const stunServer = this.#stunEndpoint()
    if (!this.opts.birthday) return { refusal: 'birthday punching is off' }
    if (!role) return { refusal: `not for ${pair}` }
    if (!stunServer) return { refusal: 'no stun:<IPv4>:<port> in stunServers' }
    if (this.#birthdayBusyNow()) return { refusal: 'another birthday punch is running' }
    if (!this.#birthdayBudget.take(peer))
      return { refusal: 'over the birthday punch budget (10 a minute, 1 per peer per 30 s)' }
    this.#birthdayBusy = true
    return { stunServer }
  }

  /** Listener side of /mesh/birthday/1.0.0: only for a pair that needs it, one at a time, budgeted. */
  async #answerBirthday(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const ticket = this.#birthdayStreams?.admit(peer)
    if (!ticket?.ok) {
      stream.abort(new Error(`birthday: refused (${ticket?.reason ?? 'not started'})`))
      return
    }
    try {
      await this.#answerBirthdayAdmitted(stream, peer)
    } finally {
      ticket.release()
    }
  }

  async #answerBirthdayAdmitted(stream: Stream, peer: string): Promise<void> {
    const local = this.#ownNatType().udp
    const remote = this.#remoteNat.get(peer)?.udp
    const role = birthdayRole(local, remote)
    const { refusal, stunServer } = this.#birthdayRefusal(
      peer,
      role,
      `${local} + ${remote ?? 'an unknown NAT type'}`,
    )
    try {
      if (refusal !== undefined || !role) {
        stream.send(encodeBirthdayMessage({ v: 1, t: 'miss', reason: refusal ?? 'no role' }))
        await stream.close({ signal: AbortSignal.timeout(this.opts.exchangeTimeout) })
        return
      }
      const failure = await this.#birthdayRun(stream, role, stunServer, peer)
      if (failure) this.ctx.logger.debug(`birthday punch with ${peer}: ${failure}`)
      await stream.close({ signal: AbortSignal.timeout(this.opts.exchangeTimeout) })
    } catch (err) {
      this.ctx.logger.debug(`birthday punch with ${peer}: ${err}`)
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      if (refusal === undefined) this.#birthdayBusy = false
    }
  }

  /** Dialer side: a birthday punch over the relayed connection; undefined when both sides pinned. */
  async #birthday(relayed: Connection, role: 'cone' | 'random'): Promise<string | undefined> {
    const peer = relayed.remotePeer.toString()
    const { refusal, stunServer } = this.#birthdayRefusal(peer, role, role)
    if (refusal !== undefined) return refusal
    let stream: Stream | undefined
    try {
      stream = await relayed.newStream(BIRTHDAY_PROTOCOL, {
        signal: AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.opts.exchangeTimeout)]),
        runOnLimitedConnection: true,
      })
      const failure = await this.#birthdayRun(stream, role, stunServer, peer)
      await stream.close({ signal: AbortSignal.timeout(this.opts.exchangeTimeout) }).catch(() => {})
      return failure
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      return err instanceof Error ? err.message : String(err)
    } finally {
      this.#birthdayBusy = false
    }
  }

  stats(): HolePunchStats {
    return this.#stats.snapshot()
  }

  remoteNatOf(peer: PeerId | string) {
    const t = this.#remoteNat.get(peer.toString())
    return t ? { ...t } : undefined
  }

  /** This node's NAT-type message: the classifier's last verdict, 'unknown' without one. */
  #ownNatType(): NatTypeMessage {
    const report = this.#classifier?.report()
    const known = (t: string | undefined): PeerNatType => (isNatType(t) ? t : 'unknown')
    const udp = known(report?.udp?.type)
    const tcp = known(report?.tcp?.type)
    const message: NatTypeMessage = { v: 1, udp, tcp }
    if (udp === 'public' || tcp === 'public') {
      const addrs = this.ctx.libp2p
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

  #remember(peer: string, m: NatTypeMessage): void {
    this.#remoteNat.delete(peer)
    this.#remoteNat.set(peer, { udp: m.udp, tcp: m.tcp })
    if (this.#remoteNat.size > 1024) this.#remoteNat.delete(this.#remoteNat.keys().next().value!)
  }

  /**
   * Listener side of /mesh/nat-type/1.0.0: read the dialer's line, answer ours; malformed: reset and
   * penalized. Budgeted per peer.
   */
  async #answer(stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const ticket = this.#natTypeStreams?.admit(peer)
    if (!ticket?.ok) {
      stream.abort(new Error(`nat-type: refused (${ticket?.reason ?? 'not started'})`))
      return
    }
    try {
      const read = await readNatTypeLine(stream, this.opts.exchangeTimeout)
      // over its bytes budget: refused (the budget penalizes it)
      if ('line' in read && !ticket.spend(read.line.length + 1)) {
        stream.abort(new Error('nat-type: over the bytes budget'))
        return
      }
      const theirs = 'line' in read ? parseNatType(read.line) : undefined
      if (!theirs) {
        if ('line' in read || read.why === 'oversized')
          this.ctx.reputation.penalize(peer, 'malformed', 'a malformed /mesh/nat-type line')
        stream.abort(new Error('malformed nat-type message'))
        return
      }
      this.#remember(peer, theirs)
      const ours = this.#ownNatType()
      stream.send(encodeNatType(ours))
      await stream.close({ signal: AbortSignal.timeout(this.opts.exchangeTimeout) })
      // connection reversal: a public dialer reached us through a relay; we can reach it directly
      if (isRelayed(connection) && theirs.addrs && ours.udp !== 'public' && ours.tcp !== 'public')
        void this.#dialDirect(peer, theirs.addrs).catch((err) =>
          this.ctx.logger.debug(`reversal to ${peer}: ${err instanceof Error ? err.message : String(err)}`),
        )
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      ticket.release()
    }
  }

  /**
   * One bounded direct dial to the addresses a peer says it is public at: only those within
   * `network.addressScope`, and only one dial per peer per `security.peerDialInterval`.
   */
  #dialDirect(peer: string, addrs: string[]): Promise<Connection> {
    const allowed = this.ctx.peerAddresses.filter(addrs)
    if (allowed.length === 0)
      return Promise.reject(
        new Error(`none of its addresses is in this node's address scope (${addrs.join(' ')})`),
      )
    if (!this.ctx.peerAddresses.takeDial(peer))
      return Promise.reject(new Error('already dialled on its word within security.peerDialInterval'))
    return this.ctx.libp2p.dial(
      allowed.map((a) => multiaddr(`${a}/p2p/${peer}`)),
      {
        signal: AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.opts.directTimeout)]),
        force: true,
      },
    )
  }

  /** An open, unlimited, non-WebRTC connection to `peer` (e.g. one it dialled back), if any. */
  #directConnection(peer: string): Connection | undefined {
    return this.ctx.libp2p
      .getConnections()
      .find(
        (c) => c.remotePeer.toString() === peer && c.status === 'open' && methodOfConnection(c) === 'direct',
      )
  }

  /** Dialer side: sends ours, reads theirs (bounded); undefined when the peer does not answer properly. */
  async #exchange(connection: Connection): Promise<NatTypeMessage | undefined> {
    const signal = AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.opts.exchangeTimeout)])
    let stream: Stream | undefined
    try {
      stream = await connection.newStream(NAT_TYPE_PROTOCOL, { signal, runOnLimitedConnection: true })
      stream.send(encodeNatType(this.#ownNatType()))
      const read = await readNatTypeLine(stream, this.opts.exchangeTimeout)
      const theirs = 'line' in read ? parseNatType(read.line) : undefined
      if (!theirs) {
        if ('line' in read || read.why === 'oversized')
          this.ctx.reputation.penalize(
            connection.remotePeer,
            'malformed',
            'a malformed /mesh/nat-type answer',
          )
        stream.abort(new Error('malformed nat-type answer'))
        return undefined
      }
      await stream.close({ signal }).catch(() => stream?.abort(new Error('close failed')))
      this.#remember(connection.remotePeer.toString(), theirs)
      return theirs
    } catch (err) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      this.ctx.logger.debug(`nat-type exchange with ${connection.remotePeer}: ${err}`)
      return undefined
    }
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
        // a failed ICE run still opens an inbound connection for a few ms: only a lasting one counts
        await sleep(this.opts.inboundSettleMs, this.ctx.signal)
        if (connection.status !== 'open') throw new Error('inbound WebRTC connection closed at once')
      }
      event = {
        ...base,
        method,
        transport: info.transport,
        attempts: 0,
        msToDirect: dialStart === undefined ? undefined : openedAt - dialStart,
      }
      // a WebRTC connection we dialled is reported by the upgrade that made it
      if (method === 'hole-punched' && connection.direction === 'outbound') return event
    } else if (
      connection.direction === 'outbound' &&
      this.opts.maxAttempts > 0 &&
      !this.#noUpgrade.has(peer)
    ) {
      event = await this.#upgrade(connection, openedAt, dialStart)
    } else {
      event = { ...base, method: 'relayed', transport: 'relay', attempts: 0 }
    }
    this.#dialStarts.delete(peer)
    this.#noUpgrade.delete(peer)
    this.#stats.record(event)
    this.ctx.events.emit('connection:method', { ...event })
    return event
  }

  /** Tries to replace a relayed connection by a direct WebRTC one, at most maxAttempts times. */
  #upgrade(relayed: Connection, openedAt: number, dialStart?: number): Promise<ConnectionMethodEvent> {
    const peer = relayed.remotePeer.toString()
    const running = this.#upgrading.get(peer)
    if (running) return running
    const run = (async (): Promise<ConnectionMethodEvent> => {
      const from = dialStart ?? openedAt
      const base = {
        peerId: peer,
        direction: relayed.direction,
        msToFirst: dialStart === undefined ? undefined : openedAt - dialStart,
      }
      const address = webrtcAddressOf(relayed.remoteAddr.toString(), peer)
      // both sides' NAT types (UDP: the punch is UDP) decide what to try
      const localNat = this.#ownNatType().udp
      const remote = await this.#exchange(relayed)
      const remoteNat = remote?.udp ?? 'unknown'
      const nat = { localNat, remoteNat }
      let directAttempts = 0
      let error: string | undefined
      if (remote?.addrs && (remote.udp === 'public' || remote.tcp === 'public')) {
        // the remote is reachable: dial it directly (one bounded try, over its addresses)
        directAttempts = 1
        try {
          const direct = await this.#dialDirect(peer, remote.addrs)
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
            }
        } catch (err) {
          error = `direct dial: ${err instanceof Error ? err.message : String(err)}`
        }
      }
      if (localNat === 'public' && remoteNat !== 'public' && remote !== undefined) {
        // we are reachable and told the remote our addresses: it dials us back (connection reversal)
        const until = Date.now() + this.opts.directTimeout
        let back = this.#directConnection(peer)
        while (!back && Date.now() < until && !this.ctx.signal.aborted) {
          await sleep(50, this.ctx.signal)
          back = this.#directConnection(peer)
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
          }
        error = 'the remote did not dial back'
      }
      let technique: 'birthday' | undefined
      const role = this.opts.birthday ? birthdayRole(localNat, remoteNat) : undefined
      if (role) {
        // port-restricted cone + symmetric: guess the port first; a failure leaves the pair relayed
        const failure = await this.#birthday(relayed, role)
        if (failure)
          return {
            ...base,
            ...nat,
            method: 'relayed',
            transport: 'relay',
            attempts: 1,
            directAttempts,
            remoteAddr: relayed.remoteAddr.toString(),
            technique: 'birthday',
            error: `birthday punch: ${failure}`,
          }
        technique = 'birthday'
      } else if (!canPunch(localNat, remoteNat)) {
        // port-restricted cone or symmetric with symmetric: a punch cannot work, do not spend one
        return {
          ...base,
          ...nat,
          method: 'relayed',
          transport: 'relay',
          attempts: 0,
          directAttempts,
          remoteAddr: relayed.remoteAddr.toString(),
          skipped: `${localNat} + ${remoteNat} cannot punch`,
          error,
        }
      }
      // a birthday punch's pin is for its own connection: another upgrade waits until it is taken
      if (!technique)
        for (let i = 0; i < 100 && this.#pinned() && !this.ctx.signal.aborted; i++)
          await sleep(50, this.ctx.signal)
      let attempts = 0
      while (attempts < this.opts.maxAttempts && !this.ctx.signal.aborted) {
        attempts++
        const signal = AbortSignal.any([this.ctx.signal, AbortSignal.timeout(this.opts.upgradeTimeout)])
        try {
          let progress: string[] = []
          let direct: Connection
          for (;;) {
            progress = []
            direct = await this.ctx.libp2p.dial(multiaddr(address), {
              signal,
              force: true,
              onProgress: (e) => progress.push(e.type),
            })
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
            }
          }
          error = `the upgrade gave a relayed connection (${direct.remoteAddr}; ${progress.join(' ')})`
        } catch (err) {
          error = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
          this.ctx.logger.debug(`upgrade to ${address}, attempt ${attempts}: ${error}`)
        }
      }
      return {
        ...base,
        ...nat,
        directAttempts,
        ...(technique ? { technique } : {}),
        method: 'relayed',
        transport: 'relay',
        attempts,
        remoteAddr: relayed.remoteAddr.toString(),
        error,
      }
    })()
    this.#upgrading.set(peer, run)
    const done = () => this.#upgrading.delete(peer)
    run.then(done, done)
    return run
  }
}

/** `@libp2p/webrtc`, or a coded error saying which package to install. */
async function loadWebRTC(): Promise<typeof import('@libp2p/webrtc')> {
  try {
    return await import('@libp2p/webrtc')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err
    throw meshError('MESH_ERR_MISSING_PACKAGE', ['holePunch()', '@libp2p/webrtc'], { cause: err })
  }
}

/**
 * Circuit relay client + WebRTC (private-to-private) + the upgrade strategy. Listens on `/webrtc` and on
 * each relay's `/p2p-circuit` (as plugin listen addresses: a config with its own `listen` must list them).
 * With relayClient() in the config, its circuit transport (and its reservations) serve both: this plugin
 * then adds WebRTC only, and its `relays` must be empty (relayClient's `relays` instead).
 */
const holePunchPlugin = definePlugin({
  name: 'hole-punch',
  provides: ['hole-punch'],
  dependencies: ['transport', 'identify'],
  optionalDependencies: ['nat-classification', 'relay-client'],
  options,
  validate: (opts, config) => {
    const relayClient = config.plugins.find((p) => p.plugin.provides.includes('relay-client'))
    if (!relayClient || opts.relays.length === 0) return []
    return [
      {
        message: `holePunch({ relays }) and relayClient() (plugins[${relayClient.index}]) both reserve on relays; with relayClient() in the config, its circuit transport and reservations serve holePunch() too`,
        hint: 'Move the relay addresses to relayClient({ relays: [...] }) and leave holePunch() without relays.',
      },
    ]
  },
  create: (opts) => {
    let strategy: Strategy | undefined
    return {
      setup: (ctx): HolePunchApi => {
        // configured relays are dialled whatever network.addressScope says
        for (const relay of opts.relays) ctx.peerAddresses.trust(relay)
        strategy = new Strategy(opts, ctx)
        return {
          connect: (target, o) => strategy!.connect(target, o),
          methodOf: (peer) => strategy!.methodOf(peer),
          stats: () => strategy!.stats(),
          remoteNatOf: (peer) => strategy!.remoteNatOf(peer),
        }
      },
      libp2p: async (ctx): Promise<Libp2pContribution> => {
        // @libp2p/webrtc (with its native ICE library) is an optional peer dependency of Meshkit:
        // loaded only when a config has holePunch(), so that other nodes install without it
        const { webRTC } = await loadWebRTC()
        // per connection: a birthday punch pins the next connection's UDP port
        const rtc = webRTC({
          rtcConfiguration: async () =>
            strategy?.rtcConfiguration() ?? {
              iceServers: opts.stunServers.map((url) => ({ urls: [url] })),
            },
        })
        // relayClient() has the circuit transport (one per node), guards its STOP streams and keeps the
        // reservations: WebRTC signals over its relayed connections
        if (ctx.useOptional('relay-client') !== undefined)
          return { transports: [rtc], addresses: { listen: ['/webrtc'] } }
        const relayIds = strategy!.relayIds
        let standing = (peer: PeerId): RelayStanding =>
          relayIds.has(peer.toString()) ? 'configured' : undefined
        const guard: StopGuardInit = {
          standing: (peer) => standing(peer),
          onRefused: (peer, configured) => {
            if (configured)
              ctx.logger.debug(`STOP from relay ${peer}, which holds no reservation for us: refused`)
            else
              ctx.reputation.penalize(
                peer,
                'forged',
                'a relayed connection (STOP) from a peer that is no relay of ours',
              )
          },
        }
        return {
          // WebRTC first: the circuit relay transport's dial filter also accepts `/p2p-circuit/webrtc` addresses
          transports: [
            rtc,
            (components: Parameters<ReturnType<typeof circuitRelayTransport>>[0]) => {
              const transport = circuitRelayTransport({ maxInboundStopStreams: MAX_INBOUND_STOP_STREAMS })(
                components,
              )
              const store = (transport as { reservationStore?: { hasReservation?(p: PeerId): boolean } })
                .reservationStore
              if (typeof store?.hasReservation === 'function')
                standing = (peer) =>
                  store.hasReservation!(peer)
                    ? 'reserved'
                    : relayIds.has(peer.toString())
                      ? 'configured'
                      : undefined
              else {
                // without the transport's reservation store, a configured relay is taken for reserved
                ctx.logger.warn(
                  "hole-punch: the circuit relay transport's reservations are not readable; configured relays are trusted as reserved",
                )
                standing = (peer) => (relayIds.has(peer.toString()) ? 'reserved' : undefined)
              }
              if (!guardStop(transport, guard))
                ctx.logger.warn(
                  "hole-punch: the circuit relay transport's STOP handler could not be guarded; only the connection gater refuses relayed connections from peers that are no relay of ours",
                )
              // a relay that is down (or slow) must not stop the node from starting: its listen is retried
              return tolerantRelayListen(transport, {
                logger: ctx.logger,
                relays: relayIds,
                onFailure: (address, err, attempt) =>
                  ctx.events.emit('hole-punch:relay-unreachable', {
                    address,
                    attempt,
                    error: err instanceof Error ? err.message : String(err),
                  }),
              })
            },
          ] as NonNullable<Libp2pContribution['transports']>,
          connectionGater: relayedConnectionGater(guard),
          addresses: { listen: ['/webrtc', ...opts.relays.map((r) => `${r}/p2p-circuit`)] },
        }
      },
      start: () => strategy!.start(),
      stop: () => strategy!.stop(),
    }
  },
})

/**
 * `holePunch(options)`. 'nat-classification' is an optional dependency; with `classifier: true` the
 * factory makes it a required one (dependencies are declared statically, per plugin definition), so a
 * config that asks for the classifier and has none is rejected with MESH_ERR_MISSING_DEPENDENCY.
 */
export const holePunch = Object.assign(
  (...args: Parameters<typeof holePunchPlugin>): MeshPlugin<HolePunchApi> => {
    const plugin = holePunchPlugin(...args)
    const wantsClassifier = (args[0] as { classifier?: unknown } | undefined)?.classifier === true
    if (!wantsClassifier) return plugin
    const dependencies: readonly Capability[] = [...plugin.dependencies, 'nat-classification']
    return { ...plugin, dependencies }
  },
  {
    pluginName: holePunchPlugin.pluginName,
    provides: holePunchPlugin.provides,
    definition: holePunchPlugin.definition,
  },
) as typeof holePunchPlugin

const stunOptions = z
  .strictObject({
    /** UDP port. @default 3478 */
    port: z.number().int().min(0).max(65535).default(3478),
    /** Address to bind. @default '0.0.0.0' */
    host: z.string().default('0.0.0.0'),
    /** Binding requests answered per second to one source IP (sustained). @default 10 */
    perIpRate: z.number().positive().default(10),
    /** Binding requests one source IP may send at once above `perIpRate`. @default 20 */
    perIpBurst: z.number().int().positive().default(20),
    /** Binding requests answered per second in total (burst: twice that). @default 500 */
    globalRate: z.number().positive().default(500),
    /**
     * Sign attestations of mapped addresses with the node's key, for requests that ask for one (a
     * Meshkit peer proving its address for a birthday punch). @default true
     */
    attest: z.boolean().default(true),
  })
  .default({ port: 3478, host: '0.0.0.0', perIpRate: 10, perIpBurst: 20, globalRate: 500, attest: true })

export interface StunServerApi {
  /** The bound address, once started. */
  address(): { address: string; port: number } | undefined
  /** Answers sent, attestations signed, datagrams dropped (malformed, over a rate limit). */
  stats(): StunServerStats | undefined
}

/**
 * A STUN server (RFC 5389 binding requests, XOR-MAPPED-ADDRESS) for the mesh's NATed peers' ICE, which
 * also attests mapped addresses (signed by this node's key) for Meshkit's birthday punch. Answers
 * well-formed binding requests only, rate-limited per source IP and in total; an answer is never larger
 * than the request when it carries an attestation (a plain one is 32 bytes).
 */
export const stunServer = definePlugin({
  name: 'stun-server',
  provides: ['stun-server'],
  options: stunOptions,
  ports: (opts) => [{ protocol: 'udp', port: opts.port, host: opts.host, what: 'STUN' }],
  create: (opts) => {
    let server: StunServer | undefined
    return {
      setup: (): StunServerApi => ({ address: () => server?.address(), stats: () => server?.stats }),
      start: async (ctx) => {
        const key = ctx.privateKey
        const attest = opts.attest
          ? (transactionId: Uint8Array, ip: string, port: number) =>
              createAttestation(key, transactionId, ip, port)
          : undefined
        if (opts.attest && key.type === 'RSA')
          ctx.logger.warn('stun-server: an RSA identity key is too large for attestations; none are signed')
        server = await StunServer.start({
          host: opts.host,
          port: opts.port,
          perIpRate: opts.perIpRate,
          perIpBurst: opts.perIpBurst,
          globalRate: opts.globalRate,
          attest,
          log: (m) => ctx.logger.debug(m),
        })
        ctx.logger.debug(`STUN server on ${opts.host}:${server.address()?.port}`)
      },
      stop: async () => {
        await server?.close()
        server = undefined
      },
    }
  },
})
