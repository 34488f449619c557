import { identify as libp2pIdentify } from '@libp2p/identify'
import { definePlugin, z } from 'meshkit/plugin'

const options = z
  .strictObject({
    /** Protocol prefix, e.g. 'mesh' gives /mesh/id/1.0.0. @default 'ipfs' (interoperable) */
    protocolPrefix: z.string().min(1).default('ipfs'),
  })
  .prefault({})

/** The identify protocol: peers learn each other's addresses, protocols and observed address. */
export const identify = definePlugin({
  name: 'identify',
  options,
  services: ['identify'],
  create: (opts) => ({
    libp2p: () => ({ services: { identify: libp2pIdentify({ protocolPrefix: opts.protocolPrefix }) } }),
  }),
})
