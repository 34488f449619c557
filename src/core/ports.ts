import type { ResolvedMeshConfig } from './config-types.js'
import { meshError } from './errors.js'

/** A fixed port a plugin binds (see `PluginDefinition.ports`). */
export interface PortUse {
  protocol: 'tcp' | 'udp'
  port: number
  /** The address bound; undefined or a wildcard (`0.0.0.0`, `::`) means every address. */
  host?: string
  /** What binds it, for the error (e.g. 'STUN'). */
  what?: string
}

const WILDCARD = new Set([undefined, '0.0.0.0', '::'])

/** The fixed ports of listen multiaddrs (`/ip4/0.0.0.0/tcp/4001`, `/ip4/1.2.3.4/udp/4001/quic-v1`). */
export function portsOfListen(addresses: readonly string[]): PortUse[] {
  const uses: PortUse[] = []
  for (const address of addresses) {
    const m = /^\/(?:ip4|ip6)\/([^/]+)\/(tcp|udp)\/(\d+)/.exec(address)
    if (!m || m[3] === '0') continue
    uses.push({ protocol: m[2] as 'tcp' | 'udp', port: Number(m[3]), host: m[1], what: `listen ${address}` })
  }
  return uses
}

/**
 * Refuses two plugins (or a plugin and the config's `listen`) that bind one fixed port: the second one
 * would fail the node's start with EADDRINUSE. Port 0 (any free port) never clashes; two specific hosts
 * do not clash with each other, a wildcard clashes with every host.
 */
export function checkPortClashes(
  config: ResolvedMeshConfig,
  declared: ReadonlyArray<{ owner: string; uses: readonly PortUse[] }>,
): void {
  const all = [
    ...(config.listen ? [{ owner: 'listen', uses: portsOfListen(config.listen) }] : []),
    ...declared,
  ].flatMap(({ owner, uses }) => uses.filter((u) => u.port !== 0).map((u) => ({ owner, ...u })))
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i]
      const b = all[j]
      if (a.protocol !== b.protocol || a.port !== b.port) continue
      if (!WILDCARD.has(a.host) && !WILDCARD.has(b.host) && a.host !== b.host) continue
      if (a.owner === b.owner && a.what === b.what) continue
      throw meshError('MESH_ERR_PORT_CLASH', [
        `${a.protocol.toUpperCase()} ${a.port}`,
        `${a.owner}${a.what ? ` (${a.what})` : ''}`,
        `${b.owner}${b.what ? ` (${b.what})` : ''}`,
      ])
    }
  }
}
