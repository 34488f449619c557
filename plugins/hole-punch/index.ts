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
 * `holePunch()` classifies every connection as `direct`, `hole-punched` or `relayed` (the shared judgement,
 * `connectionMethod()` of `meshkit/plugin`), emits `connection:method` on the node's event bus, keeps
 * counters and timing histograms (`stats()`), and provides the 'connection-methods' capability (`methodOf`).
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
 *
 * Files: strategy.ts (the strategy: classifies connections, decides again when a type changes),
 * decision.ts (one decision on a relayed connection), pair-connections.ts (a pair's connections, pruning),
 * nat-types.ts (both sides' NAT types, `/mesh/nat-type`), birthday-punch.ts (the birthday punch as the
 * strategy runs it; mechanics in birthday*.ts), later-attempts.ts, transports.ts (what holePunch() adds
 * to libp2p), stun-server-plugin.ts (`stunServer()`), and the wire formats and guards beside them.
 */
import type { PeerId } from '@libp2p/interface'
import {
  type Capability,
  CONNECTION_METHODS_CAPABILITY,
  type ConnectionMethod,
  definePlugin,
  type Libp2pContribution,
  type MeshPlugin,
  multiaddrSchema,
  z,
} from 'meshkit/plugin'
import type { PeerNatType } from './nat-type.js'
import type { HolePunchStats } from './stats.js'
import { Strategy } from './strategy.js'
import { holePunchTransports } from './transports.js'

/** How a connection was made: the shared contract's vocabulary (`meshkit/plugin`). */
export type { ConnectionMethod } from 'meshkit/plugin'
export {
  BIRTHDAY_PROTOCOL,
  type BirthdayMessage,
  encodeBirthdayMessage,
  MAX_BIRTHDAY_LINE_BYTES,
  parseBirthdayMessage,
} from './birthday.js'
export { birthdayRole } from './birthday-punch.js'
export { peerIdOf, webrtcAddressOf } from './connections.js'
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
export { type StunServerApi, stunServer } from './stun-server-plugin.js'
export {
  type Attestation,
  createAttestation,
  encodeBindingRequest,
  parseBindingResponse,
  verifyAttestation,
} from './stun-wire.js'

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
     * How long the listener waits for identify over an inbound WebRTC connection before it asks for one
     * ping round trip over it (up to 5 s more); a connection that carried neither is closed:
     * @libp2p/webrtc opens the listener's side of a failed ICE run too, a connection without a path.
     * Only a connection that carried data counts as hole-punched; 0 counts every one unchecked.
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

/** holePunch()'s options, defaults applied. */
export type HolePunchOptions = z.output<typeof options>

/**
 * Circuit relay client + WebRTC (private-to-private) + the upgrade strategy. Listens on `/webrtc` and on
 * each relay's `/p2p-circuit` (as plugin listen addresses: a config with its own `listen` must list them).
 * With relayClient() in the config, its circuit transport (and its reservations) serve both: this plugin
 * then adds WebRTC only, and its `relays` must be empty (relayClient's `relays` instead).
 */
const holePunchPlugin = definePlugin({
  name: 'hole-punch',
  // its API is a connection-method source (`methodOf`) for the tools and metrics()
  provides: ['hole-punch', CONNECTION_METHODS_CAPABILITY],
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
      libp2p: (ctx): Promise<Libp2pContribution> => holePunchTransports(opts, ctx, () => strategy),
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
