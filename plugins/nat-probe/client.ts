/**
 * The classifier's side: gathers evidence against probe servers (and STUN servers), then judges it.
 *
 * Per protocol, the RFC 5780 tests:
 * - mapping: one local port contacts every server endpoint (two ports, two IPs) and notes the address
 *   each saw; the same mapped address everywhere is endpoint-independent mapping, different ones are
 *   symmetric; equal to the local address (an address of this host) is no NAT at all.
 * - filtering: a fresh local port contacts the server's main endpoint only, then asks for an unsolicited
 *   packet (UDP) or connection (TCP) from the server's other port, and from its other IP: which get in.
 *
 * The verdict ({@link judge}) is never a guess: without two server IPs answering, or without a filtering
 * test whose control probe was answered, it is `unknown`.
 *
 * Here: the evidence's types. The tests are in udp-probe.ts and tcp-probe.ts (local ports from
 * probe-sockets.ts, waits from active-deadline.ts), the verdict in judge.ts.
 */
import type { NatType } from 'meshkit/plugin'
import type { Corroboration } from './observed.js'

export { activeDeadline } from './active-deadline.js'
export { judge, lackedAnswers } from './judge.js'
export { hostAddresses } from './probe-sockets.js'
export { gatherTcp } from './tcp-probe.js'
export { gatherUdp, probeMapping } from './udp-probe.js'

export type { NatType }

export interface MappingObservation {
  /** The server endpoint contacted (ip:port). */
  server: string
  source: 'probe' | 'stun'
  /** The address it saw us at; undefined when it never answered. */
  mapped?: string
  /** Requests sent / answers received (loss estimate). */
  sent: number
  answered: number
}

export interface FilteringObservation {
  /** The server endpoint contacted first (the only one this local port ever talked to). */
  server: string
  /** The local port's mapped address, from the control probe; undefined: the control got no answer. */
  mapped?: string
  /** Did the unsolicited packet / connection get in? */
  in: boolean
  /** Where it came from, when it got in. */
  from?: string
  /** Requests for it (UDP) or callback attempts the server makes (TCP). */
  attempts: number
  error?: string
  /** The server answered the request with a refusal (e.g. its rate limit): an answer, not a gap. */
  serverRefused?: boolean
}

export interface ProtocolEvidence {
  protocol: 'udp' | 'tcp'
  /** The local address of the mapping test (0.0.0.0 when bound to every interface). */
  local?: string
  /** This host's own IPv4 addresses (to recognise "no NAT"). */
  hostAddresses: string[]
  mappings: MappingObservation[]
  filtering: { otherPort?: FilteringObservation; otherIp?: FilteringObservation }
  /** Why a test could not run. */
  notes: string[]
}

export interface ProtocolVerdict {
  type: NatType
  /** 0..1: how sure, from how much evidence and the loss seen; 0 for unknown. */
  confidence: number
  /** The reasoning in one line. */
  reason: string
  mapping: 'none' | 'endpoint-independent' | 'endpoint-dependent' | 'unknown'
  filtering: 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent' | 'unknown'
  evidence: ProtocolEvidence
  ms: number
  /** The probe's own confidence, before the other sources ({@link Corroboration}) adjusted it. */
  probeConfidence?: number
  /** What identify's observed addresses and AutoNAT v2 say about this verdict (absent ones included). */
  corroboration?: Corroboration[]
}

export interface ProbeOptions {
  /** The probe servers' main UDP endpoints (ip:port); the TCP ones too unless `tcpServers` is given. */
  servers: string[]
  /** The probe servers' main TCP endpoints. @default servers */
  tcpServers?: string[]
  /** STUN servers (ip:port), extra UDP mapping evidence. */
  stun: string[]
  /** Local IP to bind (default: every interface). */
  localAddress?: string
  /** Longest wait for one answer (ms). */
  timeoutMs: number
  /** Interval between UDP retransmissions (ms). */
  retransmitMs: number
  signal?: AbortSignal
}
