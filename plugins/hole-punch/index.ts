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
 * included, gets (bounded) WebRTC upgrade attempts. A side whose classification still runs says so, and
 * the decision waits for it (bounded); whenever either side's type arrives or changes later, it is sent
 * again and the relayed connection's upgrader decides again (a type pair once per connection).
 *
 * Every WebRTC dial is the strategy's: a plain `libp2p.dial(peerId)` that picks a peer's
 * `/p2p-circuit/webrtc` address gets the relayed connection instead (webrtc-gate.ts), which the
 * strategy then upgrades. An inbound WebRTC connection counts only once identify ran over it (a failed
 * ICE run still opens one; it is closed). A pair keeps one connection: the relayed one an upgrade
 * replaced, and duplicates, are closed (dedupe.ts).
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
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import {
  type Budget,
  type Capability,
  coalescePerKey,
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
import { type PairConnection, redundantConnections } from './dedupe.js'
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
import { gateWebRTCDials } from './webrtc-gate.js'

export {
  BIRTHDAY_PROTOCOL,
  type BirthdayMessage,
  encodeBirthdayMessage,
  MAX_BIRTHDAY_LINE_BYTES,
  parseBirthdayMessage,
} from './birthday.js'
export { type PairConnection, redundantConnections } from './dedupe.js'
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

/**
 * Why the strategy decided again on a relayed connection: this node's NAT type arrived or changed, the
 * remote's did, the relayed connection the other side was upgrading closed (a duplicate) and this one
 * is left, or a later retry of a pair that can punch but whose attempts all failed (`laterAttempts`).
 */
export type DecisionTrigger = 'classified' | 'remote-classified' | 'connection-closed' | 'retry'

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
   * found a mapping by birthday-paradox port guessing (see birthday.ts); `'same-nat'` when both sides
   * said the same external IP (one NAT: ICE's host candidates meet on the LAN, whatever the NAT type);
   * absent for a plain ICE punch.
   */
  technique?: 'birthday' | 'same-nat'
  /**
   * Why the strategy decided again on a relayed connection it had already reported (see
   * {@link DecisionTrigger}). The event is then about the direct connection that replaced the relayed
   * one. Absent for a first decision.
   */
  trigger?: DecisionTrigger
  /** The libp2p connection the event is about (`Connection.id`, this node's own id for it). */
  connectionId?: string
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
  /** The newest verdict of one protocol (a running classification's as soon as it is judged). */
  verdict?(
    protocol: 'udp' | 'tcp',
  ): { type: string; evidence?: { mappings?: Array<{ mapped?: string }> } } | undefined
  /** A classification runs (or the first one is about to): a verdict is coming. */
  classifying?(): boolean
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
    /**
     * Upgrade attempts per decision on a relayed connection, when both NAT types are known and can punch
     * (a lost ICE check or DTLS flight can fail an attempt on a lossy link); one when a type is unknown.
     * A decision is taken when the relayed connection opens and again whenever either side's NAT type
     * arrives or changes (at most 4 decisions per connection). `0`: never upgrade. @default 2
     */
    maxAttempts: z.number().int().min(0).default(2),
    /**
     * Attempts made later, in the background, on a relayed connection whose decision spent attempts on a
     * pair that can punch (both NAT types known) and failed: on a lossy path a whole run of ICE checks,
     * DTLS or SCTP handshake packets can be lost. One attempt each (`2 × upgradeTimeout`), the first
     * `retryDelay` after the failure, each next twice as long after the previous one; only while the
     * connection stays relayed; at most 2 such attempts run at once per node. `0`: none. @default 2
     */
    laterAttempts: z.number().int().min(0).max(8).default(2),
    /** ms from a failed decision to its first later attempt (`laterAttempts`), doubling after each. @default 4000 */
    retryDelay: z.number().int().positive().default(4000),
    /**
     * How long an inbound WebRTC connection may take to carry a first round trip (identify over it)
     * before the listener closes it: @libp2p/webrtc opens the listener's side of a failed ICE run too,
     * a connection without a path. Only a connection that carried data counts as hole-punched.
     * @default 5000
     */
    inboundSettleMs: z.number().int().min(0).default(5000),
    /**
     * On a relayed connection, how long the strategy waits for a side whose NAT classification is still
     * running (this node's, or the remote's: it says so and sends its type when known) before deciding
     * without it. It never spends a punch attempt on an unknown type that is about to be known. @default 10000
     */
    classificationWait: z.number().int().min(0).default(10_000),
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
    maxAttempts: 2,
    laterAttempts: 2,
    retryDelay: 4000,
    inboundSettleMs: 5000,
    classificationWait: 10_000,
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

/** Decisions (distinct NAT-type pairs) the strategy takes on one relayed connection, at most. */
const MAX_DECISIONS = 4
/** Later attempts (`laterAttempts`) running at once per node, at most; the others wait their turn. */
const MAX_LATER_AT_ONCE = 2
/** Ids of identified connections remembered (identify may finish before the strategy looks). */
const MAX_IDENTIFIED = 512
/** After a connection opened or closed: the wait before the pair's connections are pruned. */
const PRUNE_DELAY_MS = 1000
/**
 * When both peers decide on their own relayed connection at once, both would start a birthday punch and
 * each would refuse the other's (one per peer per 30 s): the side with the higher peer id waits this long
 * for the other's request before it starts one itself.
 */
const BIRTHDAY_YIELD_MS = 1500

/** A decision's key: both UDP types (what the rules read). */
const decisionKey = (local: PeerNatType, remote: PeerNatType) => `${local}|${remote}`

class Strategy implements HolePunchApi {
  readonly #dialStarts = new Map<string, number>()
  readonly #noUpgrade = new Set<string>()
  /** Relayed connections dialled with `upgrade: false`: never upgraded, not even later. */
  readonly #keepRelayed = new Set<string>()
  readonly #outcomes = new Map<string, Promise<ConnectionMethodEvent>>()
  readonly #upgrading = new Map<string, Promise<ConnectionMethodEvent>>()
  /** NAT-type messages peers sent us last (bounded: the oldest entries go first). */
  readonly #remoteNat = new Map<string, NatTypeMessage>()
  /** What we last told each peer (UDP, TCP, classifying), to tell it again when that changes. */
  readonly #told = new Map<string, string>()
  /** Type pairs decided on, per relayed connection (forgotten when it closes). */
  readonly #decided = new Map<string, Set<string>>()
  /** Peers whose running decision saw their types change meanwhile: decide again after it. */
  readonly #again = new Set<string>()
  /** Later attempts per relayed connection (made so far, and the timer of the next one). */
  readonly #later = new Map<string, { made: number; timer?: ReturnType<typeof setTimeout> }>()
  #laterRunning = 0
  /** Peers the strategy dials over WebRTC right now (see webrtc-gate.ts). */
  readonly #webrtcDials = new Map<string, number>()
  /** Inbound WebRTC connections that carried identify (open ones). */
  readonly #proven = new Set<string>()
  /** Recently identified connection ids, and who waits for one. */
  readonly #identified = new Set<string>()
  readonly #identifyWaiters = new Map<string, () => void>()
  /** Decisions waiting for a classification (ours or a peer's). */
  readonly #waiters = new Set<() => void>()
  readonly #pruneTimers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #stats = new ConnectionStats()
  #classifier?: NatClassification
  #lastOwn?: string
  #off: Array<() => void> = []
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
    const on = <T>(name: string, fn: (evt: CustomEvent<T>) => void) => {
      const listener = fn as unknown as (evt: Event) => void
      ;(this.ctx.libp2p as unknown as EventTarget).addEventListener(name, listener)
      this.#off.push(() => (this.ctx.libp2p as unknown as EventTarget).removeEventListener(name, listener))
    }
    on<Connection>('connection:open', (evt) => {
      void this.#handle(evt.detail).catch((err) => this.ctx.logger.debug(`classify: ${err}`))
      this.#schedulePrune(evt.detail.remotePeer.toString())
    })
    on<Connection>('connection:close', (evt) => {
      const c = evt.detail
      this.#decided.delete(c.id)
      clearTimeout(this.#later.get(c.id)?.timer)
      this.#later.delete(c.id)
      this.#proven.delete(c.id)
      this.#keepRelayed.delete(c.id)
      const peer = c.remotePeer.toString()
      this.#schedulePrune(peer)
      // both dialled and libp2p closed one relayed connection as a duplicate: the one left may be ours to
      // upgrade now (we had left it to the other side)
      if (isRelayed(c)) void this.#reconsider(peer, 'connection-closed')
    })
    on<{ connection: Connection }>('peer:identify', (evt) => {
      const id = evt.detail.connection.id
      this.#identified.add(id)
      if (this.#identified.size > MAX_IDENTIFIED)
        this.#identified.delete(this.#identified.values().next().value!)
      this.#identifyWaiters.get(id)?.()
    })
    // this node's type arrived or changed: tell the peers we are relayed to, and decide again
    this.#lastOwn = this.#ownKey()
    this.#off.push(this.ctx.events.on('nat:verdict', () => this.#ownTypeMaybeChanged()))
    this.#off.push(this.ctx.events.on('nat:classified', () => this.#ownTypeMaybeChanged()))
  }

  async stop(): Promise<void> {
    for (const off of this.#off.splice(0)) off()
    for (const t of this.#pruneTimers.values()) clearTimeout(t)
    this.#pruneTimers.clear()
    for (const l of this.#later.values()) clearTimeout(l.timer)
    this.#later.clear()
    this.#wake()
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
    this.#stats.redirectedDial()
    this.ctx.logger.debug(`a WebRTC dial of ${peer} outside the strategy: served by a relayed connection`)
  }

  /** An open relayed connection to `peer`, if any (the oldest). */
  relayedConnection(peer: string): Connection | undefined {
    return this.#connections(peer)
      .filter(isRelayed)
      .sort((a, b) => a.timeline.open - b.timeline.open)[0]
  }

  async #dialWebRTC(peer: string, address: string, signal: AbortSignal, onProgress: (type: string) => void) {
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

  // --- connections of a pair ---------------------------------------------------------------------------

  /** Open connections to `peer`. */
  #connections(peer: string): Connection[] {
    return this.ctx.libp2p
      .getConnections()
      .filter((c) => c.remotePeer.toString() === peer && c.status === 'open')
  }

  /** A two-way path: direct, an outbound WebRTC connection (ICE connected), or an inbound one that carried identify. */
  #provenPath(c: Connection): boolean {
    if (isRelayed(c)) return false
    if (describeConnection(c).transport !== 'webrtc' || c.direction === 'outbound') return true
    return this.#proven.has(c.id)
  }

  /** An open unlimited connection to `peer` with a proven path, if any. */
  #usable(peer: string): Connection | undefined {
    return this.#connections(peer).find((c) => this.#provenPath(c))
  }

  /**
   * The relayed connection this node upgrades for `peer`: its own outbound one (the oldest). When both
   * dialled (a relayed connection each way), only the side with the lower peer id upgrades.
   */
  #upgraderConnection(peer: string): Connection | undefined {
    const relayed = this.#connections(peer).filter(isRelayed)
    const outbound = relayed
      .filter((c) => c.direction === 'outbound')
      .sort((a, b) => a.timeline.open - b.timeline.open)
    if (outbound.length === 0) return undefined
    const inbound = relayed.some((c) => c.direction === 'inbound')
    if (inbound && this.ctx.peerId.toString() > peer) return undefined
    return outbound[0]
  }

  /** Closes what is redundant among the connections to `peer` (dedupe.ts), soon after they changed. */
  #schedulePrune(peer: string, delay = PRUNE_DELAY_MS): void {
    if (this.ctx.signal.aborted) return
    clearTimeout(this.#pruneTimers.get(peer))
    const timer = setTimeout(() => {
      this.#pruneTimers.delete(peer)
      this.#prune(peer)
    }, delay)
    timer.unref?.()
    this.#pruneTimers.set(peer, timer)
  }

  #prune(peer: string): void {
    // a decision in progress may still need its relayed connection: after it (it prunes when done)
    if (this.ctx.signal.aborted || this.#upgrading.has(peer)) return
    // our relays keep their connections (a reservation lives on one of them)
    if (this.relayIds.has(peer) || this.#relayClient?.reservations().some((r) => r.relay === peer)) return
    const conns = this.#connections(peer)
    if (conns.length < 2) return
    // only the duplicates NAT traversal makes: two direct (TCP, QUIC) connections are not this plugin's
    if (!conns.some((c) => isRelayed(c) || describeConnection(c).transport === 'webrtc')) return
    const view: PairConnection[] = conns.map((c) => ({
      id: c.id,
      direction: c.direction,
      relayed: isRelayed(c),
      transport: describeConnection(c).transport,
      opened: c.timeline.open,
      proven: this.#provenPath(c),
    }))
    const close = new Set(redundantConnections(view, this.ctx.peerId.toString() < peer))
    for (const c of conns) {
      if (!close.has(c.id)) continue
      this.#stats.duplicateClosed()
      const info = describeConnection(c)
      this.ctx.logger.debug(`closing a redundant ${info.transport} connection to ${peer} (${c.id})`)
      this.ctx.events.emit('hole-punch:closed', {
        peerId: peer,
        connectionId: c.id,
        transport: info.transport,
        reason: isRelayed(c) && view.some((v) => v.proven) ? 'replaced' : 'duplicate',
      })
      c.close({ signal: AbortSignal.timeout(2000) }).catch((err: unknown) =>
        c.abort(err instanceof Error ? err : new Error(String(err))),
      )
    }
  }

  // --- NAT types arriving or changing ------------------------------------------------------------------

  /** What we tell peers, as a comparable key. */
  #ownKey(): string {
    const m = this.#ownNatType()
    return `${m.udp}|${m.tcp}|${m.classifying === true}|${m.ip ?? ''}`
  }

  /** Wakes every decision waiting for a classification. */
  #wake(): void {
    for (const wake of [...this.#waiters]) wake()
  }

  /** Resolves at the next wake-up or at `until` (or when the node stops). */
  #waitWake(until: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#waiters.delete(done)
        resolve()
      }
      const timer = setTimeout(done, Math.max(0, until - Date.now()))
      this.#waiters.add(done)
      if (this.ctx.signal.aborted) done()
    })
  }

  #ownTypeMaybeChanged(): void {
    const own = this.#ownKey()
    if (own === this.#lastOwn) return
    this.#lastOwn = own
    this.#wake()
    // every peer we only have relayed connections to learns our new type (the remote's strategy, or
    // ours, then decides again)
    const peers = new Set(
      this.ctx.libp2p
        .getConnections()
        .filter((c) => c.status === 'open' && isRelayed(c))
        .map((c) => c.remotePeer.toString()),
    )
    for (const peer of peers) {
      if (this.#usable(peer) || this.#told.get(peer) === own) continue
      void this.#announce(peer)
    }
  }

  /** Tells `peer` our NAT type again (one exchange at a time per peer), then decides again. */
  readonly #announce = coalescePerKey(
    async (peer: string) => {
      const relayed = this.relayedConnection(peer)
      if (!relayed || this.#told.get(peer) === this.#ownKey() || this.#usable(peer)) return
      await this.#exchange(relayed)
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
    if (this.#usable(peer)) return
    const relayed = this.#upgraderConnection(peer)
    // a connection's first decision comes from its connection:open (#classify)
    const decided = relayed && this.#decided.get(relayed.id)
    if (!relayed || !decided || this.#keepRelayed.has(relayed.id)) return
    const key = decisionKey(this.#ownNatType().udp, this.#remoteNat.get(peer)?.udp ?? 'unknown')
    if (decided?.has(key) || (decided?.size ?? 0) >= MAX_DECISIONS) return
    const event = await this.#upgrade(relayed, relayed.timeline.open, undefined, trigger)
    if (event.unchanged) return
    if (event.method === 'relayed') {
      this.#stats.attemptsFailed(event.attempts)
      this.ctx.logger.debug(
        `decided again on ${peer} (${trigger}): still relayed (${event.skipped ?? event.error ?? 'no attempt'})`,
      )
      return
    }
    const { unchanged: _, ...report } = event
    this.#stats.record(report)
    this.ctx.events.emit('connection:method', { ...report })
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
    // the lower id starts; the higher one starts only if no request came meanwhile (then the punch it
    // answers is the pair's, and this one stands back: 'another birthday punch is running')
    if (this.ctx.peerId.toString() > peer) await sleep(BIRTHDAY_YIELD_MS, this.ctx.signal)
    if (this.ctx.signal.aborted) return 'stopped'
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
    return t ? { udp: t.udp, tcp: t.tcp } : undefined
  }

  /** This node's classification has no UDP verdict yet but one is coming. */
  #classifyingNow(udp: PeerNatType): boolean {
    return udp === 'unknown' && this.#classifier?.classifying?.() === true
  }

  /** This node's NAT-type message: the classifier's last verdict, 'unknown' without one. */
  #ownNatType(): NatTypeMessage {
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

  /** Keeps what `peer` told us; true when its UDP type (or whether it is classifying) changed. */
  #remember(peer: string, m: NatTypeMessage): boolean {
    const before = this.#remoteNat.get(peer)
    this.#remoteNat.delete(peer)
    this.#remoteNat.set(peer, m)
    if (this.#remoteNat.size > 1024) this.#remoteNat.delete(this.#remoteNat.keys().next().value!)
    this.#wake()
    return before === undefined || before.udp !== m.udp || before.classifying !== m.classifying
  }

  /** Notes what we told `peer` (bounded like #remoteNat). */
  #toldPeer(peer: string, m: NatTypeMessage): void {
    this.#told.delete(peer)
    this.#told.set(peer, `${m.udp}|${m.tcp}|${m.classifying === true}|${m.ip ?? ''}`)
    if (this.#told.size > 1024) this.#told.delete(this.#told.keys().next().value!)
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
      const changed = this.#remember(peer, theirs)
      const ours = this.#ownNatType()
      stream.send(encodeNatType(ours))
      this.#toldPeer(peer, ours)
      await stream.close({ signal: AbortSignal.timeout(this.opts.exchangeTimeout) })
      // the remote's type arrived or changed (it tells us again once classified): decide again
      if (changed && isRelayed(connection)) void this.#reconsider(peer, 'remote-classified')
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
      const ours = this.#ownNatType()
      stream.send(encodeNatType(ours))
      this.#toldPeer(connection.remotePeer.toString(), ours)
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
        // @libp2p/webrtc opens the listener's side of a failed ICE run too: only a connection that
        // carried a round trip (identify over it) has a path; one that did not is closed, never counted
        if (!(await this.#carried(connection))) {
          this.#stats.unverifiedClosed()
          connection.abort(new Error('no data went through this WebRTC connection (ICE did not connect)'))
          this.ctx.events.emit('hole-punch:closed', {
            peerId: peer,
            connectionId: connection.id,
            transport: info.transport,
            reason: 'no-path',
          })
          throw new Error(`inbound WebRTC connection from ${peer} carried nothing: closed`)
        }
        this.#proven.add(connection.id)
        this.#schedulePrune(peer)
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
      this.#upgraderConnection(peer)?.id === connection.id
    ) {
      event = await this.#upgrade(connection, openedAt, dialStart)
    } else {
      // inbound (the dialler upgrades), an extra outbound one, or both dialled and the remote (lower
      // id) upgrades its own; an outbound one is ours to decide on later if the remote's goes away
      if (this.#noUpgrade.has(peer)) this.#keepRelayed.add(connection.id)
      else if (connection.direction === 'outbound') this.#decided.set(connection.id, new Set())
      event = { ...base, method: 'relayed', transport: 'relay', attempts: 0, connectionId: connection.id }
    }
    this.#dialStarts.delete(peer)
    this.#noUpgrade.delete(peer)
    const { unchanged: _, ...report } = event as ConnectionMethodEvent & { unchanged?: true }
    this.#stats.record(report)
    this.ctx.events.emit('connection:method', { ...report })
    return report
  }

  /** Whether identify ran over `c` (a two-way path), waiting at most `inboundSettleMs`. */
  #carried(c: Connection): Promise<boolean> {
    if (this.#identified.has(c.id)) return Promise.resolve(true)
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer)
        this.#identifyWaiters.delete(c.id)
        this.ctx.signal.removeEventListener('abort', finish)
        resolve(this.#identified.has(c.id) && c.status === 'open')
      }
      const timer = setTimeout(finish, this.opts.inboundSettleMs)
      this.#identifyWaiters.set(c.id, finish)
      this.ctx.signal.addEventListener('abort', finish, { once: true })
    })
  }

  /**
   * Decides on a relayed connection and acts: a direct dial to a public remote, connection reversal,
   * a birthday punch, a WebRTC upgrade (at most `maxAttempts`, one with an unknown type), or nothing
   * (a pair that cannot punch). It first waits (at most `classificationWait` from the connection's
   * opening) for a side whose classification is running. `trigger`: a later decision (`unchanged` when
   * that type pair was decided on this connection already).
   */
  #upgrade(
    relayed: Connection,
    openedAt: number,
    dialStart?: number,
    trigger?: DecisionTrigger,
  ): Promise<ConnectionMethodEvent & { unchanged?: true }> {
    const peer = relayed.remotePeer.toString()
    const running = this.#upgrading.get(peer)
    if (running) return running
    const run = (async (): Promise<ConnectionMethodEvent & { unchanged?: true }> => {
      const from = dialStart ?? openedAt
      const base = {
        peerId: peer,
        direction: relayed.direction,
        msToFirst: dialStart === undefined ? undefined : openedAt - dialStart,
        ...(trigger ? { trigger } : {}),
      }
      const address = webrtcAddressOf(relayed.remoteAddr.toString(), peer)
      // both sides' NAT types (UDP: the punch is UDP) decide what to try
      if (!trigger || !this.#remoteNat.has(peer)) await this.#exchange(relayed)
      // a side still classifying: its type is coming (the remote sends it again), wait for it (bounded)
      const until = openedAt + this.opts.classificationWait
      while (!this.ctx.signal.aborted && relayed.status === 'open' && Date.now() < until) {
        if (!this.#ownNatType().classifying && this.#remoteNat.get(peer)?.classifying !== true) break
        await this.#waitWake(until)
      }
      // our type changed meanwhile: the remote learns it first (its side of a birthday punch reads it)
      if (this.#told.get(peer) !== this.#ownKey() && relayed.status === 'open') await this.#exchange(relayed)
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
      const remote = this.#remoteNat.get(peer)
      const localNat = this.#ownNatType().udp
      const remoteNat = remote?.udp ?? 'unknown'
      const nat = { localNat, remoteNat }
      const decided = this.#decided.get(relayed.id) ?? new Set<string>()
      this.#decided.set(relayed.id, decided)
      if (this.#upgraderConnection(peer)?.id !== relayed.id)
        // both dialled at once: the remote's relayed connection opened after ours (while the types were
        // exchanged), and the side with the lower id upgrades; this one is decided on if that one closes
        return {
          ...base,
          ...nat,
          method: 'relayed',
          transport: 'relay',
          attempts: 0,
          remoteAddr: relayed.remoteAddr.toString(),
          connectionId: relayed.id,
        }
      const key = decisionKey(localNat, remoteNat)
      const relayedEvent = { ...base, ...nat, method: 'relayed' as const, transport: 'relay', attempts: 0 }
      const retry = trigger === 'retry'
      if (trigger && (this.#usable(peer) || (!retry && (decided.has(key) || decided.size >= MAX_DECISIONS))))
        return { ...relayedEvent, remoteAddr: relayed.remoteAddr.toString(), unchanged: true }
      decided.add(key)
      if (this.#usable(peer))
        // nothing to do: the peer is reachable another way (this relayed connection is redundant)
        return { ...relayedEvent, remoteAddr: relayed.remoteAddr.toString(), connectionId: relayed.id }
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
              connectionId: direct.id,
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
            connectionId: back.id,
          }
        error = 'the remote did not dial back'
      }
      let technique: 'birthday' | 'same-nat' | undefined
      // one NAT for both (the same external IP): the LAN connects them whatever its type (host candidates)
      const ownIp = this.#ownNatType().ip
      const sameNat = ownIp !== undefined && ownIp === remote?.ip
      const role = this.opts.birthday && !sameNat ? birthdayRole(localNat, remoteNat) : undefined
      if (sameNat && !canPunch(localNat, remoteNat)) technique = 'same-nat'
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
            connectionId: relayed.id,
            technique: 'birthday',
            error: `birthday punch: ${failure}`,
          }
        technique = 'birthday'
      } else if (!canPunch(localNat, remoteNat) && !sameNat) {
        // port-restricted cone or symmetric with symmetric: a punch cannot work, do not spend one
        return {
          ...base,
          ...nat,
          method: 'relayed',
          transport: 'relay',
          attempts: 0,
          directAttempts,
          remoteAddr: relayed.remoteAddr.toString(),
          connectionId: relayed.id,
          skipped: `${localNat} + ${remoteNat} cannot punch`,
          error,
        }
      }
      // a birthday punch's pin is for its own connection: another upgrade waits until it is taken
      if (technique !== 'birthday')
        for (let i = 0; i < 100 && this.#pinned() && !this.ctx.signal.aborted; i++)
          await sleep(50, this.ctx.signal)
      // with both types known (and able to punch), a failed attempt is worth another (a lost ICE check
      // or DTLS flight on a lossy link); with an unknown type, one
      // (a later attempt is one, of the retry's length)
      const allowed =
        localNat === 'unknown' || remoteNat === 'unknown' || technique === 'same-nat' || retry
          ? Math.min(1, this.opts.maxAttempts)
          : this.opts.maxAttempts
      let attempts = 0
      while (attempts < allowed && !this.ctx.signal.aborted && relayed.status === 'open') {
        attempts++
        // a punchable pair whose attempt failed is most often on a lossy path (an ICE check, a DTLS or
        // SCTP handshake packet lost and sent again seconds later): the retry gets twice the time
        const timeout = this.opts.upgradeTimeout * (attempts > 1 || retry ? 2 : 1)
        const signal = AbortSignal.any([this.ctx.signal, AbortSignal.timeout(timeout)])
        try {
          let progress: string[] = []
          let direct: Connection
          for (;;) {
            progress = []
            try {
              direct = await this.#dialWebRTC(peer, address, signal, (type) => progress.push(type))
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
        connectionId: relayed.id,
        error,
      }
    })()
    this.#upgrading.set(peer, run)
    const done = (event?: ConnectionMethodEvent & { unchanged?: true }) => {
      this.#upgrading.delete(peer)
      if (event) this.#scheduleLater(relayed, event)
      // the relayed connection an upgrade replaced, and duplicates, go now
      this.#schedulePrune(peer, 0)
      // a type changed while it ran: decide again with the new one
      if (this.#again.delete(peer)) void this.#reconsider(peer, trigger ?? 'classified')
    }
    run.then(done, () => done())
    return run
  }

  /**
   * After a decision that spent attempts on a pair that can punch (both types known) and stayed relayed:
   * the next later attempt on that connection, `retryDelay` × 2^(made) from now, while it stays relayed
   * (at most `laterAttempts` per connection).
   */
  #scheduleLater(relayed: Connection, event: ConnectionMethodEvent & { unchanged?: true }): void {
    if (event.unchanged || event.method !== 'relayed' || event.attempts === 0 || event.skipped) return
    if (event.localNat === undefined || event.localNat === 'unknown') return
    if (event.remoteNat === undefined || event.remoteNat === 'unknown') return
    if (this.ctx.signal.aborted || relayed.status !== 'open') return
    const state = this.#later.get(relayed.id) ?? { made: 0 }
    if (state.made >= this.opts.laterAttempts || state.timer) return
    this.#later.set(relayed.id, state)
    this.#armLater(relayed, state, this.opts.retryDelay * 2 ** state.made)
  }

  #armLater(relayed: Connection, state: { made: number; timer?: ReturnType<typeof setTimeout> }, ms: number) {
    state.timer = setTimeout(() => {
      state.timer = undefined
      void this.#runLater(relayed, state)
    }, ms)
    state.timer.unref?.()
  }

  /** One later attempt on `relayed` (or a wait for its turn: one decision per peer, MAX_LATER_AT_ONCE). */
  async #runLater(relayed: Connection, state: { made: number }): Promise<void> {
    const peer = relayed.remotePeer.toString()
    if (this.ctx.signal.aborted || relayed.status !== 'open' || this.#later.get(relayed.id) !== state) return
    if (this.#usable(peer) || this.#upgraderConnection(peer)?.id !== relayed.id) return
    if (this.#upgrading.has(peer) || this.#laterRunning >= MAX_LATER_AT_ONCE) {
      // a decision on this peer runs, or the node's later attempts are busy: wait a turn, uncounted
      this.#armLater(relayed, state, this.opts.retryDelay)
      return
    }
    state.made++
    this.#laterRunning++
    try {
      const event = await this.#upgrade(relayed, relayed.timeline.open, undefined, 'retry')
      if (event.unchanged) return
      if (event.method === 'relayed') {
        this.#stats.attemptsFailed(event.attempts)
        this.ctx.logger.debug(
          `later attempt ${state.made} on ${peer}: still relayed (${event.skipped ?? event.error ?? 'no attempt'})`,
        )
        return
      }
      const { unchanged: _, ...report } = event
      this.#stats.record(report)
      this.ctx.events.emit('connection:method', { ...report })
    } finally {
      this.#laterRunning--
    }
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
        const stockRtc = webRTC({
          rtcConfiguration: async () =>
            strategy?.rtcConfiguration() ?? {
              iceServers: opts.stunServers.map((url) => ({ urls: [url] })),
            },
        })
        // every WebRTC dial goes through the strategy; any other gets the relayed connection (webrtc-gate.ts)
        const rtc = (components: Parameters<typeof stockRtc>[0]) => {
          const internal = components as unknown as {
            connectionManager: { getConnections(peer?: PeerId): Connection[] }
            transportManager: {
              dial(ma: Multiaddr, o: { signal?: AbortSignal; onProgress?: unknown }): Promise<Connection>
            }
          }
          return gateWebRTCDials(stockRtc(components), {
            allowed: (peer) => strategy?.webrtcAllowed(peer) === true,
            redirect: async (circuit, peer, o) => {
              strategy?.redirected(peer)
              const relayed = internal.connectionManager
                .getConnections()
                .filter((c) => c.remotePeer.toString() === peer && c.status === 'open' && isRelayed(c))
                .sort((a, b) => a.timeline.open - b.timeline.open)[0]
              return relayed ?? internal.transportManager.dial(circuit, o)
            },
          })
        }
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
