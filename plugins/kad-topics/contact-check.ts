/**
 * How kad-dht checks a peer before it enters the routing table, as Meshkit gives it: the `ping` service
 * kad-dht sees (it uses nothing else of it).
 *
 * kad-dht 16 pings every "new contact" before adding it, and it takes as new contacts every closer
 * peer and every provider named in any DHT response. A topic's members are providers of its key, so a
 * member that looked its topic up pinged every provider it was told of: a full connection (transport,
 * noise, yamux, identify) to each, to peers that are often DHT clients which never belonged in a routing
 * table. Measured in bench:rendezvous (50 members, k = 5): 383 of the members' ~1,000 connection attempts
 * were such pings to members they had no connection with, and each member ended with ~11 outbound member
 * connections for its 5 topic peers.
 *
 * Here, as go-libp2p's DHT does, a new contact enters only over a connection this node already has:
 * - connected, and identify said it speaks the DHT protocol: it answered a moment ago (no stream);
 * - connected, identify said it does not speak the DHT protocol: refused (a client, or not a DHT peer);
 * - connected, protocols not known yet (identify under way): refused, unless already in the routing table
 *   (then a real ping over that connection); a DHT server enters through kad-dht's topology as soon as
 *   identify says it speaks the protocol (as go-libp2p's DHT, which tables only peers whose protocols
 *   the peer store confirms). A ping here had let DHT clients in: a member connected to another whose
 *   identify was still running, named in a DHT response at that moment, entered the table (a CI flake);
 * - not connected and not in the routing table: refused without dialling (a peer met later over a
 *   connection, e.g. the query that dials it, is added then, through kad-dht's topology);
 * - already in the routing table (kad-dht checking whether an old contact is still alive): a real ping,
 *   dialling if need be, as before.
 * A dial on a name in someone's DHT response is a dial on a peer's word: this also takes away the
 * amplification of one response naming 20 peers to be dialled.
 */
import { type AbortOptions, type Connection, isPeerId, type PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

/** The part of the ping service kad-dht uses. */
export interface PingLike {
  ping(peer: PeerId | Multiaddr | Multiaddr[], options?: AbortOptions): Promise<number>
}

export interface ContactCheckDeps {
  /** The DHT protocol id. */
  protocol: string
  /** Open connections to a peer. */
  connections(peer: PeerId): Connection[]
  /** The protocols identify stored for a peer ([] when unknown). */
  protocols(peer: PeerId): Promise<string[]>
  /** Whether the peer is in the DHT's routing table already. */
  inRoutingTable(peer: PeerId): Promise<boolean>
}

/** Why a contact was not added: kad-dht only logs it (and does not add the peer). */
export class ContactRefusedError extends Error {
  override name = 'ContactRefusedError'
}

/** The ping kad-dht gets: see the module comment. */
export function contactCheckPing(inner: PingLike, deps: ContactCheckDeps): PingLike {
  return {
    async ping(peer, options) {
      if (Array.isArray(peer) || !isPeerId(peer)) return inner.ping(peer, options)
      const open = deps.connections(peer).filter((c) => c.status === 'open' && c.limits == null)
      if (open.length > 0) {
        const protocols = await deps.protocols(peer).catch(() => [] as string[])
        // kad-dht awaits the answer and uses no figure of it: the connection's last measured round trip
        if (protocols.includes(deps.protocol)) return open[0].rtt ?? 0
        if (protocols.length > 0) throw new ContactRefusedError(`the peer does not speak ${deps.protocol}`)
      }
      // not connected, or identify has not said yet: an old contact is pinged (kad-dht checking it is
      // alive); a new one is refused, and enters through kad-dht's topology once identify, over a
      // connection this node has, says it speaks the protocol
      if (await deps.inRoutingTable(peer)) return inner.ping(peer, options)
      throw new ContactRefusedError(
        open.length === 0
          ? 'a new DHT contact is checked only over an open connection'
          : 'a new DHT contact is added once identify says it speaks the protocol',
      )
    },
  }
}

/**
 * contactCheckPing over a libp2p node's components (the ones kad-dht is built with); `dht` gives the
 * DHT once built (its routing table tells old contacts from new ones).
 */
export function dhtContactCheck(components: unknown, protocol: string, dht: () => unknown): PingLike {
  const c = components as {
    ping: PingLike
    peerStore: { get(peer: PeerId): Promise<{ protocols: string[] }> }
    connectionManager: { getConnections(peer?: PeerId): Connection[] }
  }
  // read at each call: the ping service may be built after the DHT
  const inner: PingLike = { ping: (peer, options) => c.ping.ping(peer, options) }
  return contactCheckPing(inner, {
    protocol,
    connections: (peer) => c.connectionManager.getConnections(peer),
    protocols: async (peer) => (await c.peerStore.get(peer)).protocols,
    inRoutingTable: async (peer) => {
      const table = (dht() as { routingTable?: { find(peer: PeerId): Promise<PeerId | undefined> } })
        ?.routingTable
      return (await table?.find(peer)) != null
    },
  })
}
