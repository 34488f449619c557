/**
 * The NAT contract: the NAT-type vocabulary that NAT plugins report and exchange with peers, and the
 * `nat-classification` capability the tools read (`mesh nat`, `/api/nat`, the status). Built-in
 * provider: `natClassifier()`; hole punching reads peers' NAT types with the same words.
 */

/** A NAT type, as the `nat-classification` capability names it (and peers exchange it). */
export type NatType =
  | 'public'
  | 'full-cone'
  | 'restricted-cone'
  | 'port-restricted-cone'
  | 'symmetric'
  | 'unknown'

/** The NAT types, most open first. */
export const NAT_TYPES: readonly NatType[] = [
  'public',
  'full-cone',
  'restricted-cone',
  'port-restricted-cone',
  'symmetric',
  'unknown',
]

/** Whether `t` is one of the {@link NAT_TYPES}. */
export const isNatType = (t: unknown): t is NatType =>
  typeof t === 'string' && (NAT_TYPES as string[]).includes(t)

/** A NAT verdict for one protocol, as the `nat-classification` capability reports it. */
export interface NatProtocolVerdictView {
  /** public, full-cone, restricted-cone, port-restricted-cone, symmetric or unknown. */
  type: string
  confidence?: number
  reason?: string
  [field: string]: unknown
}

/** The last NAT classification of the `nat-classification` capability. */
export interface NatReportView {
  udp?: NatProtocolVerdictView
  tcp?: NatProtocolVerdictView
  /** When the classification finished (ISO 8601). */
  at?: string
  [field: string]: unknown
}

/** The `nat-classification` capability (built-in provider: `natClassifier()`). */
export interface NatClassificationSlotApi {
  /** The last verdict, undefined before the first classification finished. */
  report(): NatReportView | undefined
  /** Classifies now (joins a run in progress). */
  classify?(): Promise<NatReportView>
}
