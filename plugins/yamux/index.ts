import { yamux as libp2pYamux } from '@chainsafe/libp2p-yamux'
import { definePlugin } from 'meshkit/plugin'

/** Yamux stream multiplexing for stream transports such as TCP. */
export const yamux = definePlugin({
  name: 'yamux',
  provides: ['stream-muxer'],
  create: () => ({ libp2p: () => ({ streamMuxers: [libp2pYamux()] }) }),
})
