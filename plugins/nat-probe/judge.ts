/** Judging one protocol's evidence (client.ts gathers it): the NAT type, how sure, and why. Pure. */
import type { FilteringObservation, ProtocolEvidence, ProtocolVerdict } from './client.js'
import { splitAddr } from './wire.js'

const round2 = (x: number) => Math.round(x * 100) / 100

/** Judges one protocol's evidence: the NAT type, its confidence and why. Pure. */
export function judge(e: ProtocolEvidence): Omit<ProtocolVerdict, 'ms' | 'evidence'> {
  const answered = e.mappings.filter((m) => m.mapped !== undefined)
  const unknown = (reason: string, mapping: ProtocolVerdict['mapping'] = 'unknown') => ({
    type: 'unknown' as const,
    confidence: 0,
    reason,
    mapping,
    filtering: 'unknown' as const,
  })
  if (answered.length === 0) return unknown('no probe server answered')
  const mappedSet = new Set(answered.map((m) => m.mapped))
  const serverIps = new Set(answered.map((m) => splitAddr(m.server).ip))
  // loss estimate over every request that expected an answer (Laplace-smoothed)
  const sent = e.mappings.reduce((n, m) => n + m.sent, 0)
  const got = e.mappings.reduce((n, m) => n + m.answered, 0)
  const loss = Math.min(0.9, (sent - got + 1) / (sent + 2))
  if (mappedSet.size > 1) {
    // different mapped addresses for different destinations: definitive, whatever the filtering
    return {
      type: 'symmetric',
      confidence: round2(answered.length >= 3 ? 0.99 : 0.95),
      reason: `${mappedSet.size} different mapped addresses for ${answered.length} server endpoints`,
      mapping: 'endpoint-dependent',
      filtering: 'unknown',
    }
  }
  if (serverIps.size < 2)
    return unknown(
      `the same mapping from ${answered.length} endpoint(s) of only one server IP: endpoint-independent mapping is not shown`,
    )
  const mapped = [...mappedSet][0]!
  const { ip: mIp } = splitAddr(mapped)
  const noNat =
    e.hostAddresses.includes(mIp) &&
    e.local !== undefined &&
    splitAddr(e.local).port === splitAddr(mapped).port &&
    (splitAddr(e.local).ip === mIp || splitAddr(e.local).ip === '0.0.0.0')
  const mapping = noNat ? ('none' as const) : ('endpoint-independent' as const)
  let confidence = answered.length >= 3 ? 0.99 : 0.95
  const { otherPort, otherIp } = e.filtering
  const valid = (f?: FilteringObservation) => f !== undefined && f.mapped !== undefined && !f.error
  // an unsolicited packet that got in is proof; one that did not is evidence as strong as the tries
  const outFactor = (f: FilteringObservation) =>
    e.protocol === 'udp' ? 1 - loss ** Math.max(1, f.attempts) : 1 - 0.2 ** Math.max(1, f.attempts)
  if (!valid(otherIp))
    return unknown(
      `mapping ${mapping}; the other-IP filtering test did not run (${otherIp?.error ?? 'no answer'})`,
      mapping,
    )
  const what = noNat
    ? 'no NAT (mapped = local address)'
    : `one mapping ${mapped} for ${answered.length} endpoints`
  if (otherIp!.in) {
    if (valid(otherPort) && !otherPort!.in)
      return unknown(`inconsistent filtering: other IP got in, other port did not (${what})`, mapping)
    return {
      type: noNat ? 'public' : 'full-cone',
      confidence: round2(confidence),
      reason: `${what}; unsolicited traffic from another server IP got in`,
      mapping,
      filtering: 'endpoint-independent',
    }
  }
  confidence *= outFactor(otherIp!)
  if (!valid(otherPort))
    return unknown(`${what}; other IP filtered, but the other-port test did not run`, mapping)
  if (otherPort!.in)
    return {
      type: 'restricted-cone',
      confidence: round2(confidence),
      reason: `${what}; the server's other port got in, its other IP did not${noNat ? ' (a firewall, no NAT)' : ''}`,
      mapping,
      filtering: 'address-dependent',
    }
  confidence *= outFactor(otherPort!)
  return {
    type: 'port-restricted-cone',
    confidence: round2(confidence),
    reason: `${what}; neither the server's other port nor its other IP got in${noNat ? ' (a firewall, no NAT)' : ''}`,
    mapping,
    filtering: 'address-and-port-dependent',
  }
}

/**
 * Whether a test lacks answers: a probe server endpoint that never answered the mapping test, a filtering
 * test that could not run (its control probe or callback request got no answer), or none at all. Such a
 * gap is not evidence about the NAT; the classifier tries once more before it settles on `unknown`.
 */
export function lackedAnswers(e: ProtocolEvidence): boolean {
  const probes = e.mappings.filter((m) => m.source === 'probe')
  if (probes.length === 0 || probes.some((m) => m.mapped === undefined)) return true
  const { otherPort, otherIp } = e.filtering
  // a refusal by the server (its rate limit) is an answer: trying again at once would be refused too
  return [otherPort, otherIp].some(
    (f) => f === undefined || (!f.serverRefused && (f.error !== undefined || f.mapped === undefined)),
  )
}
