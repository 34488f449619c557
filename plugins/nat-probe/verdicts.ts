/**
 * natClassifier()'s verdicts: a probe verdict from the evidence, weighed against identify's and AutoNAT
 * v2's say, and the signatures its watch compares (the quick mapping check, the network interfaces).
 */
import { networkInterfaces } from 'node:os'
import { judge, type ProtocolEvidence, type ProtocolVerdict } from './client.js'
import type { NatReport } from './index.js'
import {
  type AutonatEvidence,
  adjustConfidence,
  autonatCorroboration,
  identifyCorroboration,
  type ObservedAddress,
} from './observed.js'
import { splitAddr } from './wire.js'

/** Nothing answered the UDP probes of `report` (no mapping learnt): the servers were out of reach. */
/** Nothing answered the UDP probes of `report` (no mapping learnt): the servers were out of reach. */
export const reachedNothing = (report: NatReport): boolean =>
  report.udp !== undefined &&
  report.udp.type === 'unknown' &&
  !report.udp.evidence.mappings.some((m) => m.mapped)

/** Re-check reasons that say the network itself may have changed (a kept verdict could be stale then). */
const NETWORK_CHANGE = /^(network interfaces changed|identify: new external IP|UDP mapping check)/

/**
 * A re-check that reached no probe server at all (its server gone, e.g. the relay that served probes
 * died) is no evidence that the NAT changed: the previous known verdict stays, its reason saying so,
 * unless the re-check was asked for because the network itself changed (`reasons`).
 */
export function keepKnown(
  previous: ProtocolVerdict | undefined,
  now: ProtocolVerdict | undefined,
  reasons: readonly string[],
): ProtocolVerdict | undefined {
  if (!now || !previous || previous.type === 'unknown' || now.type !== 'unknown') return now
  if (now.evidence.mappings.some((m) => m.mapped) || reasons.some((r) => NETWORK_CHANGE.test(r))) return now
  const note = 'kept: a re-check reached no probe server'
  return previous.reason.endsWith(`(${note})`)
    ? previous
    : { ...previous, reason: `${previous.reason} (${note})` }
}

/** A probe verdict: the judgement of `e`, with the evidence and how long it took. */
export const verdictOf = (e: ProtocolEvidence, ms: number): ProtocolVerdict => ({
  ...judge(e),
  evidence: e,
  ms,
})

/** Adds identify's and AutoNAT v2's say to a probe verdict (confidence adjusted, probe's kept). */
export function corroborate(
  v: ProtocolVerdict,
  observed: ObservedAddress[],
  autonat: AutonatEvidence,
): ProtocolVerdict {
  const said = [
    identifyCorroboration(v, observed, v.evidence.hostAddresses),
    autonatCorroboration(v, v.evidence.protocol, autonat),
  ]
  const probeConfidence = v.probeConfidence ?? v.confidence
  return {
    ...v,
    probeConfidence,
    confidence: adjustConfidence(probeConfidence, v.type, said),
    corroboration: said,
  }
}

/**
 * What the quick UDP mapping check is compared by: the external IPs seen, and whether two server IPs saw
 * one mapping (`same`) or two (`different`). `none`: no answer.
 */
export function mappingSignature(mapped: Array<string | undefined>): string {
  const got = mapped.filter((m): m is string => m !== undefined)
  if (got.length === 0) return 'none'
  const ips = [...new Set(got.map((m) => splitAddr(m).ip))].sort().join(',')
  const shape = got.length < 2 ? 'single' : new Set(got).size === 1 ? 'same' : 'different'
  return `${ips}/${shape}`
}

/** The two UDP endpoints (different server IPs) of the last verdict's mapping test, and what they saw. */
export function watchedEndpoints(v: ProtocolVerdict | undefined) {
  const probes = v?.evidence.mappings.filter((m) => m.source === 'probe') ?? []
  const first = probes.find((m) => m.mapped) ?? probes[0]
  if (!first) return undefined
  const ip = splitAddr(first.server).ip
  const second = probes.find((m) => m.mapped && splitAddr(m.server).ip !== ip)
  const chosen = second ? [first, second] : [first]
  return { endpoints: chosen.map((m) => m.server), signature: mappingSignature(chosen.map((m) => m.mapped)) }
}

/** This host's non-internal IPv4 addresses, as one comparable string. */
export const interfaceSignature = () =>
  Object.values(networkInterfaces())
    .flat()
    .filter((i) => i?.family === 'IPv4' && !i.internal)
    .map((i) => i!.address)
    .sort()
    .join(' ')
