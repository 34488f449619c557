/**
 * The probe endpoints natClassifier() tests against: a server given as a probe address is one; a server
 * given as its peer address is asked for its endpoints over `/mesh/nat-probe/1.0.0` (twice, the second
 * on a new connection), else the ones it gave last time are used.
 */
import type { PluginContext } from 'meshkit/plugin'
import { fetchEndpoints } from './protocol.js'
import { NAT_PROBE_PROTOCOL, parseServerAddress } from './wire.js'

/** A probe server's libp2p address: its probe endpoints are asked over /mesh/nat-probe/1.0.0. */
export const isPeerAddress = (s: string) => /^\/ip4\/[^/]+\/tcp\/\d+\/p2p\/[A-Za-z0-9]+$/.test(s)

export class ProbeEndpoints {
  /** The probe endpoints each peer-address server gave last. */
  readonly #known = new Map<string, { udp?: string; tcp?: string }>()

  constructor(readonly opts: { readonly servers: readonly string[]; readonly timeout: number }) {}

  /** The endpoints `server` (a peer address) gave last, if it did. */
  known(server: string): { udp?: string; tcp?: string } | undefined {
    return this.#known.get(server)
  }

  /** Each server's main UDP and TCP probe endpoint; peer addresses are asked for theirs. */
  async resolve(ctx: PluginContext) {
    const udp: string[] = []
    const tcp: string[] = []
    const notes: string[] = []
    await Promise.all(
      this.opts.servers.map(async (s) => {
        if (!isPeerAddress(s)) {
          udp.push(parseServerAddress(s)!)
          tcp.push(parseServerAddress(s)!)
          return
        }
        // a connection that died unnoticed (e.g. the NAT's WAN address changed) fails the first ask: the
        // second dials a new connection. Then the endpoints learnt last time, if any.
        let failure: unknown
        for (let attempt = 0; attempt < 2 && !ctx.signal.aborted; attempt++) {
          try {
            const e = await fetchEndpoints(
              ctx.libp2p,
              s,
              NAT_PROBE_PROTOCOL,
              Math.max(3000, this.opts.timeout * 2),
              attempt > 0,
            )
            const found = { udp: e.udp[0], tcp: e.tcp[0] }
            this.#known.set(s, found)
            if (found.udp) udp.push(found.udp)
            if (found.tcp) tcp.push(found.tcp)
            return
          } catch (err) {
            failure = err
          }
        }
        const reason = failure instanceof Error ? failure.message : String(failure)
        const cached = this.#known.get(s)
        if (cached) {
          if (cached.udp) udp.push(cached.udp)
          if (cached.tcp) tcp.push(cached.tcp)
        }
        notes.push(
          `${s}: could not get its probe endpoints (${reason})${cached ? '; used the ones it gave last time' : ''}`,
        )
      }),
    )
    return { udp, tcp, notes }
  }
}
