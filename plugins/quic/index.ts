import { quic as libp2pQuic } from '@chainsafe/libp2p-quic'
import { definePlugin, multiaddrSchema, portsOfListen, z } from 'meshkit/plugin'

const options = z
  .strictObject({
    /** Listen addresses used when the config sets no `listen`. @default ['/ip4/0.0.0.0/udp/0/quic-v1'] */
    listen: z
      .array(multiaddrSchema("'/ip4/0.0.0.0/udp/4001/quic-v1'"))
      .default(['/ip4/0.0.0.0/udp/0/quic-v1']),
    /**
     * Time (ms) without a packet from the peer after which a QUIC connection closes (both sides' lower
     * value applies). This is how a node notices a peer that died without a goodbye (SIGKILL, power or
     * network loss): QUIC has no reset a dead peer's kernel sends, as TCP has. With `keepAliveInterval`
     * a live peer is never that long silent; a dead one's connections close 4 to 5 s after its death
     * (30 s before: dead topic peers stayed until libp2p's connection monitor missed a ping, 5 to 15 s).
     * A live connection closes only when every packet from the peer (at least its four keep-alives) is
     * lost for 4 s: with 10 % independent loss about one 4 s window in 10,000; an outage that long (a
     * phone changing networks) closes it and it is dialled again. Raise it on links known to stall.
     * @default 4000
     */
    maxIdleTimeout: z.number().int().positive().default(4_000),
    /**
     * Keep-alive interval (ms): a PING frame when nothing else was sent, answered by QUIC itself (the
     * native transport, not the event loop: a busy or stalled node does not miss it). Costs 2.3-2.6
     * packets / 140-160 bytes per second per idle connection (both directions, IP headers included) more than
     * at 5000 (measured: bench/churn/quic-traffic.ts). Keep it under a third of `maxIdleTimeout`.
     * @default 1000
     */
    keepAliveInterval: z.number().int().positive().default(1_000),
  })
  .prefault({})

/** QUIC transport (@chainsafe/libp2p-quic): encryption and multiplexing are built into QUIC. */
export const quic = definePlugin({
  name: 'quic',
  provides: ['transport'],
  options,
  // a keep-alive as long as the idle timeout closes every idle connection (e.g. an old config that set
  // keepAliveInterval: 5000 and kept the default maxIdleTimeout)
  validate: (opts) =>
    opts.keepAliveInterval < opts.maxIdleTimeout
      ? []
      : [
          {
            message: `quic keepAliveInterval (${opts.keepAliveInterval} ms) is not shorter than maxIdleTimeout (${opts.maxIdleTimeout} ms): idle connections would close`,
            hint: 'Keep keepAliveInterval under a third of maxIdleTimeout, e.g. { maxIdleTimeout: 4000, keepAliveInterval: 1000 }.',
          },
        ],
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
