import type { ResolvedMeshConfig } from 'meshkit/plugin'
import { InvalidPsk, type PreSharedKey } from './psk.js'

/**
 * Plugins whose transports carry connections libp2p's connection protector never sees (QUIC and WebRTC
 * encrypt and multiplex inside the transport): a node without the key could still connect through them.
 */
export const UNPROTECTABLE_PLUGINS: Readonly<Record<string, string>> = {
  quic: 'QUIC',
  'hole-punch': 'WebRTC',
}
/** Address protocols of transports the connection protector cannot wrap. */
const UNPROTECTABLE_ADDRESS = /\/(quic|quic-v1|webtransport|webrtc|webrtc-direct)(\/|$)/

/** The plugin's options, parsed. */
export interface PrivateNetworkOptions {
  psk?: PreSharedKey | InvalidPsk
  pskFile?: string
}

/** Why a config cannot run a private network: the options, and transports the protector cannot wrap. */
export function configProblems(
  opts: PrivateNetworkOptions,
  config: ResolvedMeshConfig,
): Array<{ message: string; hint?: string }> {
  const out: Array<{ message: string; hint?: string }> = []
  const keygen =
    'make one with `mesh keygen psk --out swarm.key` and set `pskFile: "swarm.key"` on every node'
  if (opts.psk === undefined && opts.pskFile === undefined)
    out.push({ message: 'privateNetwork() needs the network key: set `pskFile` (or `psk`)', hint: keygen })
  if (opts.psk !== undefined && opts.pskFile !== undefined)
    out.push({ message: 'set `psk` or `pskFile`, not both', hint: 'keep `pskFile` and remove `psk`' })
  if (opts.psk instanceof InvalidPsk)
    out.push({ message: `psk is not a pnet pre-shared key: ${opts.psk.reason}`, hint: keygen })
  for (const { plugin } of config.plugins) {
    const what = UNPROTECTABLE_PLUGINS[plugin.name]
    if (what)
      out.push({
        message:
          `private-network cannot protect the ${what} connections of plugin '${plugin.name}': ${what} ` +
          "encrypts inside the transport, where libp2p's connection protector (pnet) never sees the bytes, " +
          'so nodes without the key could connect over it',
        hint: `remove '${plugin.name}' from \`plugins\` (a private network runs over TCP or WebSockets, relays included)`,
      })
  }
  for (const [key, addresses] of [
    ['listen', config.listen],
    ['announce', config.announce],
  ] as const) {
    const bad = (addresses ?? []).filter((a) => UNPROTECTABLE_ADDRESS.test(a))
    if (bad.length > 0)
      out.push({
        message: `private-network cannot protect connections to ${key} address${bad.length > 1 ? 'es' : ''} ${bad.join(', ')} (QUIC, WebTransport and WebRTC encrypt inside the transport)`,
        hint: `remove ${bad.length > 1 ? 'them' : 'it'} from \`${key}\``,
      })
  }
  return out
}
