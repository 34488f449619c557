/**
 * Evidence besides the probe protocol: the addresses other peers observed (identify's `observedAddr`) and
 * AutoNAT v2's verdicts as libp2p's public surface shows them. Both only raise or lower the confidence of
 * the probe's verdict ({@link crossCheck}); neither makes a verdict of its own. Evidence that is absent is
 * reported as absent, with the reason.
 */
import type { Multiaddr } from '@multiformats/multiaddr'
import type { AddressScope } from 'meshkit/plugin'
import type { NatType, ProtocolVerdict } from './client.js'
import { splitAddr } from './wire.js'

/** One peer's view of this node, from its identify message. */
export interface ObservedAddress {
  /** The observer's peer id. */
  observer: string
  /** The observer's address, as this node's connection to it shows it. */
  observerAddr: string
  /** How the observer saw this node (identify's observedAddr). */
  observed: string
  ip?: string
  port?: number
  /** The transport of the connection it was seen on. */
  transport: 'tcp' | 'udp' | 'other'
  /** Who dialled: `outbound` = this node (the observed port is a NAT mapping or an ephemeral port). */
  direction: 'inbound' | 'outbound'
  /** Counted as evidence: the observer is outside this node's network (public in the node's address scope). */
  counted: boolean
  /** Why it is not counted. */
  ignored?: string
  /** When it was seen (ms since the epoch). */
  at: number
}

/** What {@link ObservedAddresses.add} learned. */
export interface ObservationChange {
  /** A counted observation named an external IP not seen before (or no longer the only one). */
  newExternalIp: boolean
  observation: ObservedAddress
}

const ipOf = (ma: Multiaddr) => ma.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
const portOf = (ma: Multiaddr) => {
  const c = ma.getComponents().find((x) => x.name === 'tcp' || x.name === 'udp')
  return c?.value === undefined ? undefined : Number(c.value)
}
const transportOf = (ma: Multiaddr): ObservedAddress['transport'] => {
  const names = ma.getComponents().map((c) => c.name)
  return names.includes('tcp') ? 'tcp' : names.includes('udp') ? 'udp' : 'other'
}

/**
 * The latest observation of each observer (at most `max`, the oldest dropped first). An observation is
 * counted only when it came over a direct (not relayed) connection from an observer whose address is
 * public in the node's address scope: a peer on the same LAN (or loopback) sees the LAN address.
 */
export class ObservedAddresses {
  readonly #byObserver = new Map<string, ObservedAddress>()

  constructor(
    private readonly scope: AddressScope,
    private readonly max = 32,
  ) {}

  /** Records what `observer` (at `observerAddr`) saw; `relayed` connections are recorded, not counted. */
  add(input: {
    observer: string
    observerAddr: Multiaddr
    observed: Multiaddr
    direction: 'inbound' | 'outbound'
    relayed: boolean
    at?: number
  }): ObservationChange {
    const { observerAddr, observed } = input
    const before = new Set(this.externalIps())
    const text = observed.toString()
    const ip = ipOf(observed)
    let ignored: string | undefined
    if (input.relayed || text.includes('/p2p-circuit') || observerAddr.toString().includes('/p2p-circuit'))
      ignored = 'relayed connection'
    else if (ip === undefined) ignored = 'no IP address in it'
    else if (!this.scope.isPublic(observerAddr))
      ignored = 'the observer is not outside this network (its address is private in the address scope)'
    const observation: ObservedAddress = {
      observer: input.observer,
      observerAddr: observerAddr.toString(),
      observed: text,
      ip,
      port: portOf(observed),
      transport: transportOf(observed),
      direction: input.direction,
      counted: ignored === undefined,
      ignored,
      at: input.at ?? Date.now(),
    }
    this.#byObserver.delete(input.observer)
    this.#byObserver.set(input.observer, observation)
    while (this.#byObserver.size > this.max) this.#byObserver.delete(this.#byObserver.keys().next().value!)
    const newExternalIp = observation.counted && ip !== undefined && !before.has(ip)
    return { newExternalIp, observation }
  }

  /** Every observation kept, oldest first. */
  list(): ObservedAddress[] {
    return [...this.#byObserver.values()]
  }

  /** The distinct IPs counted observers saw this node at. */
  externalIps(): string[] {
    return [...new Set(this.list().flatMap((o) => (o.counted && o.ip ? [o.ip] : [])))]
  }
}

/** AutoNAT v2 as libp2p's public surface shows it (see {@link autonatEvidence}). */
export interface AutonatEvidence {
  /** The node handles `/libp2p/autonat/2/dial-back` (it runs the @libp2p/autonat-v2 client). */
  running: boolean
  /**
   * Addresses libp2p itself counts as public that it lists in getMultiaddrs(): libp2p lists such a
   * transport or observed address only once something confirmed it (AutoNAT v2, after 4 successful
   * dial-backs from 4 different /8 networks). Meaningless when `announce` addresses are configured.
   */
  verified: string[]
  /** Why there is nothing to use, when there is nothing. */
  absent?: string
}

/**
 * What AutoNAT v2 says, from public APIs only: whether the node handles AutoNAT v2's dial-back protocol
 * (`getProtocols()`), and which libp2p-public addresses `getMultiaddrs()` lists (the address manager lists
 * a public transport or observed address only once confirmed). The autonat-v2 service itself has no public
 * API or event: it only confirms or removes addresses. It never tests addresses libp2p counts as private
 * (documentation and private ranges, whatever `network.publicCidrs` says).
 */
export function autonatEvidence(input: {
  protocols: string[]
  multiaddrs: Multiaddr[]
  announce: readonly string[]
  libp2pScope: AddressScope
}): AutonatEvidence {
  const running = input.protocols.some((p) => /\/autonat\/2\/dial-back$/.test(p))
  if (!running) return { running, verified: [], absent: 'the node does not run @libp2p/autonat-v2' }
  if (input.announce.length > 0)
    return {
      running,
      verified: [],
      absent: 'announce addresses are configured: libp2p lists them as verified whatever AutoNAT v2 says',
    }
  const candidates = input.multiaddrs.filter(
    (a) => !a.toString().includes('/p2p-circuit') && ipOf(a) !== undefined,
  )
  const verified = candidates.filter((a) => input.libp2pScope.isPublic(a)).map((a) => a.toString())
  if (verified.length > 0) return { running, verified }
  return {
    running,
    verified,
    absent:
      candidates.length > 0 && candidates.every((a) => !input.libp2pScope.isPublic(a))
        ? 'AutoNAT v2 tests only addresses libp2p counts as public; every address of this node is private to libp2p (private, loopback or documentation ranges)'
        : 'no public address confirmed (AutoNAT v2 needs 4 successful dial-backs from 4 different /8 networks)',
  }
}

/** One source's say on a verdict. */
export interface Corroboration {
  source: 'identify' | 'autonat-v2'
  result: 'corroborates' | 'contradicts' | 'neutral' | 'absent'
  detail: string
}

const NAT_TYPES_BEHIND: readonly NatType[] = [
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
]
const round2 = (x: number) => Math.round(x * 100) / 100

/** What identify's observations say about `verdict`. Pure. */
export function identifyCorroboration(
  verdict: Pick<ProtocolVerdict, 'type' | 'evidence'>,
  observations: readonly ObservedAddress[],
  hostAddresses: readonly string[],
): Corroboration {
  const counted = observations.filter((o) => o.counted && o.ip)
  if (counted.length === 0) {
    const reasons = [...new Set(observations.map((o) => o.ignored).filter((r) => r !== undefined))]
    return {
      source: 'identify',
      result: 'absent',
      detail:
        observations.length === 0
          ? 'no peer has identified this node yet'
          : `no observation from a peer outside this network (${observations.length} ignored: ${reasons.join('; ')})`,
    }
  }
  const local = counted.filter((o) => hostAddresses.includes(o.ip!))
  const foreign = counted.filter((o) => !hostAddresses.includes(o.ip!))
  const list = (os: ObservedAddress[]) =>
    `${[...new Set(os.map((o) => o.ip))].join(', ')} (${os.length} peer${os.length > 1 ? 's' : ''})`
  const mappedIps = new Set(
    verdict.evidence.mappings.flatMap((m) => (m.mapped ? [splitAddr(m.mapped).ip] : [])),
  )
  if (verdict.type === 'unknown')
    return {
      source: 'identify',
      result: 'neutral',
      detail:
        foreign.length > 0
          ? `seen at ${list(foreign)}, not an address of this host: behind a NAT`
          : `seen at ${list(local)}, an address of this host: no NAT on those paths`,
    }
  if (verdict.type === 'public')
    return foreign.length === 0
      ? {
          source: 'identify',
          result: 'corroborates',
          detail: `seen at ${list(local)}, an address of this host: no NAT`,
        }
      : {
          source: 'identify',
          result: 'contradicts',
          detail: `seen at ${list(foreign)}, not an address of this host: a NAT on that path`,
        }
  if (NAT_TYPES_BEHIND.includes(verdict.type)) {
    if (local.length > 0)
      return {
        source: 'identify',
        result: 'contradicts',
        detail: `seen at ${list(local)}, an address of this host: no NAT on that path`,
      }
    const other = foreign.filter((o) => !mappedIps.has(o.ip!))
    return other.length === 0
      ? {
          source: 'identify',
          result: 'corroborates',
          detail: `seen at ${list(foreign)}, the probe's mapped IP: behind a NAT`,
        }
      : {
          source: 'identify',
          result: 'contradicts',
          detail: `seen at ${list(other)}, which is neither an address of this host nor the probe's mapped IP (${[...mappedIps].join(', ') || 'none'})`,
        }
  }
  return { source: 'identify', result: 'neutral', detail: 'no rule for this verdict' }
}

/** What AutoNAT v2 says about `verdict` (`protocol`'s addresses only): corroboration at most. Pure. */
export function autonatCorroboration(
  verdict: Pick<ProtocolVerdict, 'type'>,
  protocol: 'udp' | 'tcp',
  autonat: AutonatEvidence,
): Corroboration {
  if (autonat.absent !== undefined && autonat.verified.length === 0)
    return { source: 'autonat-v2', result: 'absent', detail: autonat.absent }
  const mine = autonat.verified.filter((a) => a.includes(`/${protocol}/`))
  if (mine.length === 0)
    return {
      source: 'autonat-v2',
      result: 'absent',
      detail: `no ${protocol.toUpperCase()} address confirmed (confirmed: ${autonat.verified.join(', ')})`,
    }
  if (verdict.type === 'public' || verdict.type === 'full-cone')
    return {
      source: 'autonat-v2',
      result: 'corroborates',
      detail: `dialled back from outside at ${mine.join(', ')}`,
    }
  return {
    source: 'autonat-v2',
    result: 'neutral',
    detail: `dialled back from outside at ${mine.join(', ')} (a port forward or mapping; the probe tests other ports)`,
  }
}

/**
 * The confidence after the other sources: each corroboration halves the remaining doubt, each
 * contradiction halves the confidence; `unknown` stays at 0; never above 0.99. Pure.
 */
export function adjustConfidence(confidence: number, type: NatType, said: readonly Corroboration[]): number {
  if (type === 'unknown') return 0
  let c = confidence
  for (const s of said) {
    if (s.result === 'corroborates') c = c + (1 - c) / 2
    else if (s.result === 'contradicts') c = c / 2
  }
  return Math.min(0.99, round2(c))
}
