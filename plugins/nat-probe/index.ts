/**
 * NAT type classification (issue 4, part 2).
 *
 * - `natProbeServer()`, run by public nodes: an RFC 5780-style probe on two UDP ports and two TCP ports of
 *   one or two IPs (see wire.ts and server.ts), and the libp2p protocol `/mesh/nat-probe/1.0.0` that tells
 *   a connected peer where the probe is.
 * - `natClassifier()`: classifies this node's NAT for UDP and TCP separately (client.ts), with the evidence
 *   and a confidence, weighed against identify's observed addresses and AutoNAT v2 (observed.ts); at
 *   start, when the node's addresses change (coalesced, rate limited), and on demand (`classify()`). Each
 *   verdict is emitted as `nat:classified`, a change of type as `nat:changed`.
 *
 * Files: probe-server-plugin.ts (natProbeServer()'s hooks) over server.ts; classifier.ts
 * (natClassifier()'s hooks: classifications, events, re-checks) over client.ts (the tests), verdicts.ts,
 * probe-endpoints.ts and observed.ts; wire.ts and protocol.ts (the probe and libp2p protocols).
 */
import { definePlugin, durationSchema, multiaddrSchema, z } from 'meshkit/plugin'
import { createClassifier } from './classifier.js'
import type { ProtocolVerdict } from './client.js'
import type { AutonatEvidence, ObservedAddress } from './observed.js'
import { isPeerAddress } from './probe-endpoints.js'
import { createProbeServer } from './probe-server-plugin.js'
import type { ProbeServer } from './server.js'
import { DEFAULT_PROBE_PORTS, isIpv4, parseServerAddress } from './wire.js'

export type {
  FilteringObservation,
  MappingObservation,
  NatType,
  ProtocolEvidence,
  ProtocolVerdict,
} from './client.js'
export { judge } from './client.js'
export {
  type AutonatEvidence,
  adjustConfidence,
  autonatCorroboration,
  autonatEvidence,
  type Corroboration,
  identifyCorroboration,
  type ObservedAddress,
  ObservedAddresses,
} from './observed.js'
export { ProbeServer, type ProbeServerOptions } from './server.js'
export { DEFAULT_PROBE_PORTS, NAT_PROBE_PROTOCOL, parseMessage, RateLimiter } from './wire.js'

const port = z.number().int().min(1).max(65535)
const ipv4 = z.string().refine(isIpv4, { message: 'expected an IPv4 address such as 198.51.100.10' })
const serverAddress = z.string().refine((s) => isPeerAddress(s) || parseServerAddress(s) !== undefined, {
  message:
    "expected a probe address 'ip:port' or '/ip4/<ip>/udp/<port>', or a probe server's peer address '/ip4/<ip>/tcp/<port>/p2p/<id>'",
})

const serverOptions = z
  .strictObject({
    /** The two UDP ports (the second answers "reply from the other port"). @default [3478, 3479] */
    udpPorts: z.tuple([port, port]).default([...DEFAULT_PROBE_PORTS] as [number, number]),
    /** The TCP ports. @default the UDP ports */
    tcpPorts: z.array(port).min(1).max(2).optional(),
    /** The (one or two) IPv4 addresses to serve on. @default this host's first two non-internal IPv4 addresses */
    addresses: z.array(ipv4).min(1).max(2).optional(),
    /** Serve TCP too. @default true */
    tcp: z.boolean().default(true),
    /**
     * Other probe servers' libp2p addresses ('/ip4/<ip>/tcp/<port>[/p2p/<id>]'): they answer "from another
     * IP" for this one when its host has one IP, and this one for them (list each other). @default []
     */
    partners: z.array(multiaddrSchema("'/ip4/198.51.100.11/tcp/4001'")).max(4).default([]),
  })
  .default({ udpPorts: [...DEFAULT_PROBE_PORTS] as [number, number], tcp: true, partners: [] })

/** natProbeServer()'s options, defaults applied. */
export type ProbeServerPluginOptions = z.output<typeof serverOptions>

/** What `natProbeServer()` offers (`node.api('nat-probe-server')`). */
export interface NatProbeServerApi {
  /** The probe endpoints served (ip:port). */
  endpoints(): { udp: string[]; tcp: string[] }
  stats(): ProbeServer['stats'] | undefined
}

/**
 * A NAT probe server for the mesh's classifiers (run it on public nodes): the probe on its UDP and TCP
 * ports, and `/mesh/nat-probe/1.0.0` for its endpoints and its partners' "from another IP" requests.
 */
export const natProbeServer = definePlugin({
  name: 'nat-probe-server',
  provides: ['nat-probe-server'],
  options: serverOptions,
  // its UDP ports, and its TCP ports (the UDP ones unless set), on each address it serves
  ports: (opts) => {
    const tcpPorts = opts.tcp ? (opts.tcpPorts ?? opts.udpPorts) : []
    const hosts: Array<string | undefined> = opts.addresses ?? [undefined]
    return hosts.flatMap((host) => [
      ...opts.udpPorts.map((port) => ({ protocol: 'udp' as const, port, host, what: 'NAT probe' })),
      ...tcpPorts.map((port) => ({ protocol: 'tcp' as const, port, host, what: 'NAT probe' })),
    ])
  },
  create: createProbeServer,
})

const classifierOptions = z
  .strictObject({
    /**
     * Probe servers (natProbeServer()): a probe address ('ip:port' or '/ip4/<ip>/udp/<port>', UDP and TCP on
     * that port), or a server's peer address ('/ip4/<ip>/tcp/<port>/p2p/<id>'), asked for its probe
     * endpoints over /mesh/nat-probe/1.0.0. Each server's answers name its other endpoints (and its
     * partners'): one server with two IPs (or one partner) is enough.
     */
    servers: z.array(serverAddress).min(1).max(4),
    /** STUN servers ('ip:port' or '/ip4/<ip>/udp/<port>'): extra UDP mapping evidence. @default [] */
    stun: z
      .array(
        z.string().refine((s) => !isPeerAddress(s) && parseServerAddress(s) !== undefined, {
          message: "expected a STUN server as 'ip:port'",
        }),
      )
      .max(4)
      .default([]),
    /** Classify UDP. @default true */
    udp: z.boolean().default(true),
    /** Classify TCP. @default true */
    tcp: z.boolean().default(true),
    /** Classify at start and again when the node's addresses change (see `minRecheckInterval`). @default true */
    auto: z.boolean().default(true),
    /** Local IPv4 address to probe from. @default every interface */
    localAddress: ipv4.optional(),
    /**
     * Longest wait for one answer, counted in time this process could run (a stalled event loop does not
     * eat it up). A protocol's test left without answers is tried once more with twice this wait.
     * @default '1500ms'
     */
    timeout: durationSchema("'1500ms'").default(1500),
    /**
     * With `auto`: the shortest time between two automatic re-checks (triggers are coalesced meanwhile),
     * and how often the node looks for a change: its network interfaces, and a quick UDP mapping check
     * (one fresh socket, one probe to each of two server IPs) whose new external IP, or mapping turned
     * endpoint-dependent (or back), triggers a re-check. A full re-check also runs every 30 times this
     * long (15 min by default), for changes of filtering only. @default '30s'
     */
    minRecheckInterval: durationSchema("'30s'").default(30_000),
  })
  .refine((o) => o.udp || o.tcp, { message: 'at least one of udp and tcp must be true' })

/** natClassifier()'s options, defaults applied. */
export type ClassifierOptions = z.output<typeof classifierOptions>

/** The verdict for both protocols. */
export interface NatReport {
  udp?: ProtocolVerdict
  tcp?: ProtocolVerdict
  /** What started this classification. */
  trigger: 'start' | 'address-change' | 'periodic' | 'demand'
  /** The changes that led to an automatic re-check, coalesced (e.g. `self:peer:update`, `new external IP ...`). */
  reasons: string[]
  /** Identify's observed addresses of this node (the latest per peer), counted or not, with why. */
  observed: ObservedAddress[]
  /** AutoNAT v2 as libp2p's public surface shows it. */
  autonat: AutonatEvidence
  /** When it finished (ISO). */
  at: string
  ms: number
}

/** What `natClassifier()` offers (`node.api('nat-classification')`). */
export interface NatClassificationApi {
  /** Runs the tests now (joins one already running) and returns the verdict. */
  classify(): Promise<NatReport>
  /** The last verdict, if any. */
  report(): NatReport | undefined
  /**
   * The newest verdict for one protocol: a running classification's as soon as that protocol is judged
   * (`nat:verdict {protocol, type, confidence, trigger}` says so; UDP's usually comes seconds before
   * TCP's), else the last report's.
   */
  verdict(protocol: 'udp' | 'tcp'): ProtocolVerdict | undefined
  /**
   * A classification runs now, or the first one is about to (with `auto`, from start until it ends): a
   * verdict (or a new one) is coming soon. holePunch() waits for it before it decides on a connection.
   */
  classifying(): boolean
  /** Identify's observed addresses of this node so far (the latest per peer). */
  observed(): ObservedAddress[]
}
/**
 * Classifies this node's NAT for UDP and TCP (the probe protocol, plus STUN mappings when configured),
 * then weighs the verdict against identify's observed addresses and AutoNAT v2 (corroboration only).
 *
 * With `auto`, it classifies at start and re-checks when something suggests a change: the node's own
 * addresses (`self:peer:update`), a network interface address, an external IP that identify reports and
 * the last verdict did not see, or the quick mapping check (every `minRecheckInterval`); plus a full
 * re-check every 30 × `minRecheckInterval`. Triggers are coalesced and rate limited (`minRecheckInterval`).
 *
 * Events: `nat:verdict {protocol, type, confidence, trigger}` as soon as one protocol is judged (UDP's
 * usually seconds before TCP's: hole punching needs only UDP's); `nat:classified {udp, tcp, udpConfidence,
 * tcpConfidence, trigger, reasons, ms, report}` after every classification; `nat:changed {udp: {from, to}, tcp: {from, to}, trigger, reasons}` when the type
 * changed for either protocol (not after the first one); `nat:evidence {udp, tcp, udpConfidence,
 * tcpConfidence, report}` when a later identify observation changes what corroborates the last verdict.
 */
export const natClassifier = definePlugin({
  name: 'nat-classifier',
  provides: ['nat-classification'],
  options: classifierOptions,
  create: createClassifier,
})

/** The NAT types, most open first (the `nat-classification` vocabulary, from core). */
export { NAT_TYPES } from 'meshkit/plugin'
