/**
 * `stunServer()`: the plugin that serves STUN (RFC 5389 binding requests) on a public node (the server
 * itself is in stun-server.ts), so that NATed peers learn their mapped addresses from the mesh itself,
 * and signs attestations of them for the birthday punch (stun-wire.ts).
 */
import { definePlugin, z } from 'meshkit/plugin'
import { StunServer, type StunServerStats } from './stun-server.js'
import { createAttestation } from './stun-wire.js'

const stunOptions = z
  .strictObject({
    /** UDP port. @default 3478 */
    port: z.number().int().min(0).max(65535).default(3478),
    /** Address to bind. @default '0.0.0.0' */
    host: z.string().default('0.0.0.0'),
    /** Binding requests answered per second to one source IP (sustained). @default 10 */
    perIpRate: z.number().positive().default(10),
    /** Binding requests one source IP may send at once above `perIpRate`. @default 20 */
    perIpBurst: z.number().int().positive().default(20),
    /** Binding requests answered per second in total (burst: twice that). @default 500 */
    globalRate: z.number().positive().default(500),
    /**
     * Sign attestations of mapped addresses with the node's key, for requests that ask for one (a
     * Meshkit peer proving its address for a birthday punch). @default true
     */
    attest: z.boolean().default(true),
  })
  .default({ port: 3478, host: '0.0.0.0', perIpRate: 10, perIpBurst: 20, globalRate: 500, attest: true })

export interface StunServerApi {
  /** The bound address, once started. */
  address(): { address: string; port: number } | undefined
  /** Answers sent, attestations signed, datagrams dropped (malformed, over a rate limit). */
  stats(): StunServerStats | undefined
}

/**
 * A STUN server (RFC 5389 binding requests, XOR-MAPPED-ADDRESS) for the mesh's NATed peers' ICE, which
 * also attests mapped addresses (signed by this node's key) for Meshkit's birthday punch. Answers
 * well-formed binding requests only, rate-limited per source IP and in total; an answer is never larger
 * than the request when it carries an attestation (a plain one is 32 bytes).
 */
export const stunServer = definePlugin({
  name: 'stun-server',
  provides: ['stun-server'],
  options: stunOptions,
  ports: (opts) => [{ protocol: 'udp', port: opts.port, host: opts.host, what: 'STUN' }],
  create: (opts) => {
    let server: StunServer | undefined
    return {
      setup: (): StunServerApi => ({ address: () => server?.address(), stats: () => server?.stats }),
      start: async (ctx) => {
        const key = ctx.privateKey
        const attest = opts.attest
          ? (transactionId: Uint8Array, ip: string, port: number) =>
              createAttestation(key, transactionId, ip, port)
          : undefined
        if (opts.attest && key.type === 'RSA')
          ctx.logger.warn('stun-server: an RSA identity key is too large for attestations; none are signed')
        server = await StunServer.start({
          host: opts.host,
          port: opts.port,
          perIpRate: opts.perIpRate,
          perIpBurst: opts.perIpBurst,
          globalRate: opts.globalRate,
          attest,
          log: (m) => ctx.logger.debug(m),
        })
        ctx.logger.debug(`STUN server on ${opts.host}:${server.address()?.port}`)
      },
      stop: async () => {
        await server?.close()
        server = undefined
      },
    }
  },
})
