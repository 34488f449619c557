import { quic as libp2pQuic } from '@chainsafe/libp2p-quic'
import { definePlugin, multiaddrSchema, portsOfListen, z } from 'meshkit/plugin'

const options = z
  .strictObject({
    /** Listen addresses used when the config sets no `listen`. @default ['/ip4/0.0.0.0/udp/0/quic-v1'] */
    listen: z
      .array(multiaddrSchema("'/ip4/0.0.0.0/udp/4001/quic-v1'"))
      .default(['/ip4/0.0.0.0/udp/0/quic-v1']),
    /** Idle time (ms) after which a QUIC connection closes. @default 30000 */
    maxIdleTimeout: z.number().int().positive().default(30_000),
    /** Keep-alive interval (ms). @default 5000 */
    keepAliveInterval: z.number().int().positive().default(5_000),
  })
  .prefault({})

/** QUIC transport (@chainsafe/libp2p-quic): encryption and multiplexing are built into QUIC. */
export const quic = definePlugin({
  name: 'quic',
  provides: ['transport'],
  options,
  // its listen addresses count only when the config has no `listen` of its own
  ports: (opts, config) => (config.listen ? [] : portsOfListen(opts.listen)),
  create: (opts) => ({
    libp2p: () => ({
      transports: [
        libp2pQuic({ maxIdleTimeout: opts.maxIdleTimeout, keepAliveInterval: opts.keepAliveInterval }),
      ],
      addresses: { listen: opts.listen },
    }),
  }),
})
