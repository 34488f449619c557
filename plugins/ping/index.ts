import { ping as libp2pPing } from '@libp2p/ping'
import { definePlugin } from 'meshkit'

/** The ping protocol: round-trip times to peers. */
export const ping = definePlugin({
  name: 'ping',
  create: () => ({ libp2p: () => ({ services: { ping: libp2pPing() } }) }),
})
