import { yamux as libp2pYamux } from '@chainsafe/libp2p-yamux'
import { definePlugin } from 'meshkit/plugin'
import { guardMuxerFactory } from './guarded-muxer.js'

/**
 * Yamux stream multiplexing for stream transports such as TCP (@chainsafe/libp2p-yamux, with a guard
 * against its one uncaught exception: see guarded-muxer.ts).
 */
export const yamux = definePlugin({
  name: 'yamux',
  provides: ['stream-muxer'],
  create: () => ({
    libp2p: () => ({
      streamMuxers: [() => guardMuxerFactory(libp2pYamux()())],
    }),
  }),
})
