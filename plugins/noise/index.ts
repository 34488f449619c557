import { noise as libp2pNoise } from '@chainsafe/libp2p-noise'
import { definePlugin } from 'meshkit/plugin'

/** Noise connection encryption for stream transports such as TCP. */
export const noise = definePlugin({
  name: 'noise',
  provides: ['connection-encrypter'],
  create: () => ({ libp2p: () => ({ connectionEncrypters: [libp2pNoise()] }) }),
})
