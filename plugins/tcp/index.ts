import { tcp as libp2pTcp } from '@libp2p/tcp'
import { definePlugin, multiaddrSchema, portsOfListen, z } from 'meshkit/plugin'

const options = z
  .strictObject({
    /** Listen addresses used when the config sets no `listen`. @default ['/ip4/0.0.0.0/tcp/0'] */
    listen: z.array(multiaddrSchema("'/ip4/0.0.0.0/tcp/4001'")).default(['/ip4/0.0.0.0/tcp/0']),
    /** Close inbound sockets idle for this long (ms). @default 30000 */
    inboundSocketInactivityTimeout: z.number().int().positive().default(30_000),
    /** Close outbound sockets idle for this long (ms). @default 30000 */
    outboundSocketInactivityTimeout: z.number().int().positive().default(30_000),
  })
  .prefault({})

/** TCP transport. Connections are secured and multiplexed by the `connection-encrypter`/`stream-muxer` plugins. */
export const tcp = definePlugin({
  name: 'tcp',
  provides: ['transport'],
  dependencies: ['connection-encrypter', 'stream-muxer'],
  options,
  // its listen addresses count only when the config has no `listen` of its own
  ports: (opts, config) => (config.listen ? [] : portsOfListen(opts.listen)),
  create: (opts) => ({
    libp2p: () => ({
      transports: [
        libp2pTcp({
          inboundSocketInactivityTimeout: opts.inboundSocketInactivityTimeout,
          outboundSocketInactivityTimeout: opts.outboundSocketInactivityTimeout,
        }),
      ],
      addresses: { listen: opts.listen },
    }),
  }),
})
