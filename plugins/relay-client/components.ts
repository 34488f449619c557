/**
 * The two things the relay client needs of libp2p beyond its public API, taken from the components libp2p
 * hands every transport module, each feature-checked ({@link capture}), and the listener that advertises
 * the reservations held.
 */
import type { Multiaddr } from '@multiformats/multiaddr'

/** The address this plugin's listener is created for (`/p2p-circuit`: any relay). */
export const LISTEN_ADDR = '/p2p-circuit'

/**
 * The node's circuit listener. libp2p's own listener (one per relay address) forgets its relay when the
 * reservation is lost and never takes it back; this one advertises whatever reservations the manager holds.
 */
export class CircuitListener extends EventTarget {
  addrs: () => Multiaddr[] = () => []
  async listen(): Promise<void> {}
  getAddrs(): Multiaddr[] {
    return this.addrs()
  }
  updateAnnounceAddrs(): void {}
  async close(): Promise<void> {
    this.addrs = () => []
    queueMicrotask(() => this.dispatchEvent(new CustomEvent('close')))
  }
  changed(): void {
    this.dispatchEvent(new CustomEvent('listening'))
  }
}

/**
 * What this plugin needs of libp2p beyond its public API (feature-checked, see {@link capture}): libp2p 3
 * has no public way to add a listen address to a running node, nor to mark an address as reachable. Both
 * come from the components libp2p hands every transport module (the `AddressManager` and
 * `TransportManager` interfaces of @libp2p/interface-internal, the same ones libp2p's own circuit
 * transport uses).
 */
export interface Captured {
  addressManager?: {
    confirmObservedAddr(addr: Multiaddr, options?: { type?: string }): void
    removeObservedAddr(addr: Multiaddr): void
  }
  transportManager?: { listen(addrs: Multiaddr[]): Promise<void> }
  listener: CircuitListener
  /** Why circuit addresses cannot be advertised, when they cannot. */
  degraded?: string
}

/** Takes what the plugin needs from the transport's components, checking each part is there. */
export function capture(components: Record<string, unknown>, listener: CircuitListener): Captured {
  // libp2p's components object throws for a component it does not have
  const get = (name: string): unknown => {
    try {
      return components[name]
    } catch {
      return undefined
    }
  }
  const am = get('addressManager') as Partial<NonNullable<Captured['addressManager']>> | undefined
  const tm = get('transportManager') as Partial<NonNullable<Captured['transportManager']>> | undefined
  const missing: string[] = []
  const hasAm = typeof am?.confirmObservedAddr === 'function' && typeof am?.removeObservedAddr === 'function'
  const hasTm = typeof tm?.listen === 'function'
  if (!hasAm) missing.push('addressManager.confirmObservedAddr/removeObservedAddr')
  if (!hasTm) missing.push('transportManager.listen')
  return {
    addressManager: hasAm ? (am as Captured['addressManager']) : undefined,
    transportManager: hasTm ? (tm as Captured['transportManager']) : undefined,
    listener,
    degraded: missing.length > 0 ? `libp2p's transport components lack ${missing.join(' and ')}` : undefined,
  }
}
