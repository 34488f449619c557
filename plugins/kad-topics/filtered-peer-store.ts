import type { PeerStore } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerAddressPolicy } from 'meshkit/plugin'
import { LIMITS } from './wire.js'

/** A peer store whose `merge` keeps only addresses `policy` allows (at most 16): what kad-dht stores. */
export function filteredPeerStore(peerStore: PeerStore, policy: PeerAddressPolicy): PeerStore {
  return new Proxy(peerStore, {
    get(target, prop) {
      if (prop === 'merge') {
        return (id: Parameters<PeerStore['merge']>[0], data: Parameters<PeerStore['merge']>[1], o?: never) =>
          target.merge(
            id,
            data.multiaddrs
              ? {
                  ...data,
                  multiaddrs: policy.filter(data.multiaddrs as Multiaddr[]).slice(0, LIMITS.maxAddrs),
                }
              : data,
            o,
          )
      }
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
