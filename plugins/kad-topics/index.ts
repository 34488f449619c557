import type { PeerInfo, PeerStore } from '@libp2p/interface'
import { type KadDHT, kadDHT } from '@libp2p/kad-dht'
import { MemoryDatastore } from 'datastore-core'
import type { Datastore } from 'interface-datastore'
import {
  type AddressScope,
  type Budget,
  createPeerAddressPolicy,
  definePlugin,
  durationSchema,
  type Libp2pContribution,
  type PeerAddressPolicy,
  type PluginContext,
  z,
} from 'meshkit/plugin'
import type { CID } from 'multiformats/cid'
import { dhtContactCheck } from './contact-check.js'
import type { DialGuard } from './dial-guard.js'
import { TOPICS_ERRORS } from './errors.js'
import { filteredPeerStore } from './filtered-peer-store.js'
import { KAD_LIMITS, KadGuard } from './kad-guard.js'
import type { MemberRegistry } from './member-registry.js'
import { limitProviderStore } from './provider-store.js'
import { TopicPeerDiscovery } from './topic-discovery.js'
import { TOPICS_BUDGET, TopicManager, type TopicManagerSettings } from './topic-manager.js'
import type { KnownTopicMember } from './topic-state.js'

export { KAD_LIMITS } from './kad-guard.js'
export { memberPayload, signMember } from './member-record.js'
export { PROVIDER_STORE_LIMITS } from './provider-store.js'
export { topicKey } from './topic-key.js'
export { TOPICS_BUDGET } from './topic-manager.js'
export type { KnownTopicMember } from './topic-state.js'
export { TOPICS_PROTOCOL, TOPICS_PROTOCOL_V1 } from './wire.js'

/** Options the DHT service is built from: a change to one of them needs a new libp2p node. */
export const DHT_OPTIONS = [
  'mode',
  'protocol',
  'kBucketSize',
  'dhtMode',
  'addressScope',
  'records',
  'recordTtl',
] as const

/** A kad-dht peer-info mapper keeping the addresses `scope` calls public. */
export function keepPublicAddresses(scope: AddressScope) {
  return (peer: PeerInfo): PeerInfo => ({
    ...peer,
    multiaddrs: peer.multiaddrs.filter((ma) => scope.isPublic(ma)),
  })
}

/** The private-mesh DHT protocol Meshkit uses unless told otherwise. */
export const MESH_KAD_PROTOCOL = '/mesh/kad/1.0.0'
/** The public IPFS ("amino") DHT protocol. */
export const AMINO_KAD_PROTOCOL = '/ipfs/kad/1.0.0'

const topicName = z.string().min(1).max(128)

const options = z
  .strictObject({
    /** Topics joined at start. @default [] */
    topics: z.array(topicName).default([]),
    /** Namespace mixed into every topic key, so separate meshes on one DHT don't meet. @default 'meshkit' */
    namespace: z.string().min(1).max(64).default('meshkit'),
    /** Topic members to keep connected per joined topic. @default 8 */
    connectionsPerTopic: z.number().int().positive().max(256).default(8),
    /** `private` uses /mesh/kad/1.0.0; `amino` joins the public IPFS DHT (/ipfs/kad/1.0.0). @default 'private' */
    mode: z.enum(['private', 'amino']).default('private'),
    /** Overrides the DHT protocol id. @default per `mode` */
    protocol: z.string().startsWith('/').optional(),
    /** Longest a DHT query may run. @default '60s' */
    queryTimeout: durationSchema("'60s'").default(60_000),
    /** Kademlia k (bucket size, replication factor). @default 20 */
    kBucketSize: z.number().int().min(2).max(200).default(20),
    /**
     * DHT server or client. `auto`: server when peers' private addresses count (`addressScope: 'all'`,
     * a LAN or test mesh), else kad-dht decides from the node's public addresses. @default 'auto'
     */
    dhtMode: z.enum(['auto', 'client', 'server']).default('auto'),
    /**
     * Which peer addresses kad-topics keeps (DHT peers and providers, topic members): `public` only
     * globally routable ones (and `network.publicCidrs`), `private` LAN ranges too, `all` loopback too.
     * Never wider than the node dials: the core's `network.addressScope` applies as well.
     * @default the core's `network.addressScope`
     */
    addressScope: z.enum(['public', 'private', 'all']).optional(),
    /** Provider records in the node's datastore (kept across restarts when it is persistent) or in memory. @default 'datastore' */
    records: z.enum(['datastore', 'memory']).default('datastore'),
    /** Lifetime of a topic announcement; re-announced before it expires. @default '48h' */
    recordTtl: durationSchema("'48h'").default(48 * 3_600_000),
    /** Exchange topic members with connected peers (fast rendezvous). @default true */
    memberExchange: z.boolean().default(true),
    /** Delay between DHT lookups while a topic is short of peers (doubles up to `lookupMax`). @default '250ms' */
    lookupInitial: durationSchema("'250ms'").default(250),
    /** @default '30s' */
    lookupMax: durationSchema("'30s'").default(30_000),
    /** Lookup interval once a topic has its peers, and of a short one's fruitless DHT query while it has some. @default '5m' */
    refreshInterval: durationSchema("'5m'").default(300_000),
    /**
     * How long a member learned from others stays known without news; also the longest a signed member
     * record is passed on (members sign theirs again every third of it). @default '15m'
     */
    memberTtl: durationSchema("'15m'").default(900_000),
    /**
     * Topic peers of one topic from one network (an IPv4 /24, an IPv6 /48) while members from other
     * networks can be had: Sybils from one network cannot fill a topic. @default ceil(connectionsPerTopic / 4)
     */
    maxPeersPerNetwork: z.number().int().positive().max(256).optional(),
  })
  .prefault({})

/** What `kadTopics()` offers other plugins (`ctx.use('discovery')`) and apps (`node.api('discovery')`). */
export interface TopicDiscovery {
  /** Joins a topic: announce it, find its members, keep `connectionsPerTopic` of them connected. */
  join(topic: string): Promise<void>
  /** Leaves a topic: stops announcing it and drops it from exchanges; its peers are `topic:peer:lost`. */
  leave(topic: string): Promise<void>
  /** Joined topics. */
  topics(): string[]
  /** Connected members of a joined topic (peer ids). */
  peers(topic: string): string[]
  /**
   * Members of a joined topic this node knows of and heard from within `memberTtl`, connected or not,
   * each with what this node does with it (see {@link KnownTopicMember}): told by themselves first.
   * Why a topic stays short shows here: too few members known (discovery), or known ones backed off,
   * unconfirmed or held back (connections).
   */
  knownMembers(topic: string): KnownTopicMember[]
  /** Announces a topic on the DHT once, without joining it. */
  announceTopic(topic: string, options?: { signal?: AbortSignal }): Promise<void>
  /** Members of a topic (known ones first, then a DHT lookup), with addresses. Abort with `signal`. */
  findPeersForTopic(topic: string, options?: { signal?: AbortSignal }): AsyncIterable<PeerInfo>
  /** The DHT peers closest to a key (bytes, or a string hashed as UTF-8 bytes by kad-dht). */
  getClosestPeers(key: Uint8Array | string, options?: { signal?: AbortSignal }): AsyncIterable<PeerInfo>
  /** The DHT key (CID) of a topic; see topicKey(). */
  topicKey(topic: string): Promise<CID>
}

type KadTopicsOptions = z.output<typeof options>

function managerSettings(opts: KadTopicsOptions): TopicManagerSettings {
  return {
    namespace: opts.namespace,
    connectionsPerTopic: opts.connectionsPerTopic,
    queryTimeout: opts.queryTimeout,
    memberExchange: opts.memberExchange,
    lookupBackoff: { initial: opts.lookupInitial, max: opts.lookupMax },
    refreshInterval: opts.refreshInterval,
    memberTtl: opts.memberTtl,
    maxPeersPerNetwork: opts.maxPeersPerNetwork ?? Math.ceil(opts.connectionsPerTopic / 4),
  }
}

/**
 * The addresses kad-topics keeps: those the core allows (`ctx.peerAddresses`), narrowed to the plugin's
 * own `addressScope` when it sets one.
 */
function addressPolicy(ctx: PluginContext, scope: KadTopicsOptions['addressScope']): PeerAddressPolicy {
  const core = ctx.peerAddresses
  if (scope === undefined) return core
  const own = createPeerAddressPolicy({
    scope,
    publicCidrs: ctx.config.network.publicCidrs,
    dialInterval: () => ctx.config.security.peerDialInterval,
  })
  return {
    ...own,
    refuse: (address) => own.refuse(address) ?? core.refuse(address),
    filter: (addresses) => core.filter(own.filter(addresses)),
  }
}

/** In a private mesh nobody stores DHT values here (Meshkit uses provider records only). */
const refuseRecords = async (): Promise<void> => {
  throw new Error('this mesh stores no DHT records (kadTopics mode: private)')
}

/**
 * Topic discovery on the Kademlia DHT (@libp2p/kad-dht): topics are provider records under a CID
 * derived from the topic name, plus a member exchange between connected peers for fast rendezvous
 * (`/mesh/topics/2.0.0`, member records signed by the members; 1.0.0 still served).
 *
 * Hostile peers (docs/discovery.md): the exchange has a per-peer and global budget, penalizes malformed
 * and forged messages, answers within 64 KiB; addresses pass the address scope (`addressScope`, by default
 * the core's `network.addressScope`) before they are kept or dialled, dials on peers' words are bounded,
 * a topic's peers are spread across networks (`maxPeersPerNetwork`); the DHT's inbound streams, messages
 * and provider records are bounded through the registrar, datastore and peer store kad-dht is given.
 *
 * On a config reload (`mesh dev`), options other than the DHT's ({@link DHT_OPTIONS}) are applied in
 * place: `topics` joins the added and leaves the removed config topics (topics joined at runtime
 * stay), `connectionsPerTopic`, `queryTimeout`, `lookupInitial`/`lookupMax`, `refreshInterval`,
 * `memberTtl` and `maxPeersPerNetwork` take effect at once; a new `namespace` (new topic keys) or
 * `memberExchange` leaves and re-joins every topic with a new topic manager, connections kept. A DHT
 * option needs a new node.
 */
export const kadTopics = definePlugin({
  name: 'kad-topics',
  provides: ['discovery', 'peer-discovery'],
  dependencies: ['transport', 'identify', 'ping'],
  options,
  libp2pOptions: DHT_OPTIONS,
  create: (initial) => {
    let opts = initial
    const discovery = new TopicPeerDiscovery()
    let manager: TopicManager | undefined
    const need = (): TopicManager => {
      if (!manager) throw TOPICS_ERRORS.create('MESH_ERR_TOPICS_NOT_STARTED', [])
      return manager
    }
    const validTopic = (topic: string) => {
      const parsed = topicName.safeParse(topic)
      if (!parsed.success) throw new TypeError(`invalid topic ${JSON.stringify(topic)}: 1 to 128 characters`)
      return parsed.data
    }
    const dhtService = (ctx: { libp2p: { services: Record<string, unknown> } }) =>
      ctx.libp2p.services.dht as KadDHT
    /** The member exchange's budget: one per plugin start, shared by the managers a reload makes. */
    let budget: Budget | undefined
    const makeManager = (
      ctx: PluginContext,
      o: KadTopicsOptions,
      registry?: MemberRegistry,
      dials?: DialGuard,
    ) => {
      budget ??= ctx.budget('topics', TOPICS_BUDGET)
      return new TopicManager(
        ctx.libp2p,
        dhtService(ctx),
        managerSettings(o),
        ctx.logger,
        ctx.events,
        ctx.signal,
        (peer) => discovery.discovered(peer),
        {
          privateKey: ctx.privateKey,
          reputation: ctx.reputation,
          addresses: addressPolicy(ctx, o.addressScope),
          budget,
          isSeed: (peer) => ctx.isSeed(peer),
        },
        registry,
        dials,
      )
    }
    const api: TopicDiscovery = {
      join: (topic) => need().join(validTopic(topic)),
      leave: (topic) => need().leave(validTopic(topic)),
      topics: () => manager?.topics() ?? [],
      peers: (topic) => manager?.peers(topic) ?? [],
      knownMembers: (topic) => manager?.knownMembers(topic) ?? [],
      announceTopic: async (topic, o) => {
        const m = need()
        await m.announce(await m.keyOf(validTopic(topic)), o?.signal)
      },
      findPeersForTopic: (topic, o) => need().find(validTopic(topic), o?.signal),
      getClosestPeers: async function* (key, o) {
        const m = need()
        const bytes = typeof key === 'string' ? new TextEncoder().encode(key) : key
        for await (const event of m.dht.getClosestPeers(bytes, { signal: o?.signal })) {
          if (event.name === 'FINAL_PEER') yield event.peer
        }
      },
      topicKey: (topic) => need().keyOf(validTopic(topic)),
    }
    return {
      setup: () => api,
      libp2p: (ctx) => {
        const scope = opts.addressScope ?? ctx.config.network.addressScope
        // a LAN or a mesh on one host: a DHT server; on the internet kad-dht decides from its addresses
        const serverMode =
          opts.dhtMode === 'server'
            ? true
            : opts.dhtMode === 'client'
              ? false
              : scope !== 'public' || undefined
        const policy = addressPolicy(ctx, opts.addressScope)
        const protocol = opts.protocol ?? (opts.mode === 'amino' ? AMINO_KAD_PROTOCOL : MESH_KAD_PROTOCOL)
        const guard = new KadGuard({
          streams: ctx.budget('kad-streams', KAD_LIMITS.streams),
          messages: ctx.budget('kad-messages', KAD_LIMITS.messages),
          reputation: ctx.reputation,
        })
        return {
          services: {
            dht: (components: Parameters<ReturnType<typeof kadDHT>>[0]) => {
              const c = components as unknown as {
                datastore: Datastore
                registrar: Parameters<KadGuard['registrar']>[0]
                peerStore: PeerStore
              }
              let dht: KadDHT | undefined
              const ping = dhtContactCheck(components, protocol, () => dht)
              // kad-dht sees: a provider store with bounds, a registrar whose DHT handler is guarded,
              // a peer store that keeps only addresses in scope
              const datastore = limitProviderStore(
                opts.records === 'memory' ? new MemoryDatastore() : c.datastore,
                ctx.peerId.toString(),
              )
              dht = kadDHT({
                protocol,
                clientMode: serverMode === undefined ? undefined : !serverMode,
                peerInfoMapper: (peer: PeerInfo) => ({ ...peer, multiaddrs: policy.filter(peer.multiaddrs) }),
                kBucketSize: opts.kBucketSize,
                initialQuerySelfInterval: 1000,
                providers: { provideValidity: Math.ceil(opts.recordTtl / 1000) },
                reprovide: {
                  validity: opts.recordTtl,
                  threshold: Math.floor(opts.recordTtl / 2),
                  interval: Math.min(3_600_000, Math.floor(opts.recordTtl / 4)),
                },
                ...(opts.mode === 'private' ? { validators: { pk: refuseRecords } } : {}),
              })(
                Object.create(components, {
                  datastore: { value: datastore },
                  registrar: { value: guard.registrar(c.registrar, protocol) },
                  peerStore: { value: filteredPeerStore(c.peerStore, policy) },
                  // new contacts enter the routing table over a connection this node has (contact-check.ts)
                  ping: { value: ping },
                }),
              )
              return dht
            },
          } as unknown as Libp2pContribution['services'],
          peerDiscovery: [() => discovery],
        }
      },
      start: async (ctx) => {
        budget = undefined
        manager = makeManager(ctx, opts)
        await manager.start()
        await Promise.all(opts.topics.map((topic) => manager!.join(topic)))
      },
      stop: async () => {
        await manager?.stop()
        manager = undefined
      },
      reconfigure: async (next, ctx) => {
        if (DHT_OPTIONS.some((key) => JSON.stringify(opts[key]) !== JSON.stringify(next[key]))) return false
        const current = manager
        if (!current) {
          opts = next
          return true
        }
        const previous = opts
        const runtime = current.topics().filter((t) => !previous.topics.includes(t))
        if (next.namespace !== previous.namespace || next.memberExchange !== previous.memberExchange) {
          // new topic keys (or a protocol handler to add/remove): leave everything, join again
          if (next.namespace !== previous.namespace) for (const t of current.topics()) await current.leave(t)
          await current.stop()
          const fresh = makeManager(
            ctx,
            next,
            next.namespace === previous.namespace ? current.registry : undefined,
            current.dials,
          )
          try {
            await fresh.start()
          } catch (err) {
            // back to the previous options, with the topics it had
            await fresh.stop().catch(() => {})
            manager = makeManager(ctx, previous, current.registry, current.dials)
            await manager.start()
            await Promise.all([...previous.topics, ...runtime].map((t) => manager!.join(t)))
            throw err
          }
          manager = fresh
          opts = next
          await Promise.all([...new Set([...next.topics, ...runtime])].map((t) => fresh.join(t)))
          return true
        }
        current.update(managerSettings(next))
        opts = next
        for (const t of previous.topics) if (!next.topics.includes(t)) await current.leave(t)
        await Promise.all(next.topics.map((t) => current.join(t)))
        return true
      },
    }
  },
})
