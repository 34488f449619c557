import type { PeerDiscovery, PeerInfo } from '@libp2p/interface'
import type { MulticastDNSComponents } from '@libp2p/mdns'
import {
  definePlugin,
  durationSchema,
  meshError,
  type PluginContext,
  type PluginHooks,
  z,
} from 'meshkit/plugin'

/** `@libp2p/mdns` is an optional peer dependency of Meshkit: loaded only when a config has mdns(). */
async function loadMdns(): Promise<typeof import('@libp2p/mdns')> {
  try {
    return await import('@libp2p/mdns')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err
    throw meshError('MESH_ERR_MISSING_PACKAGE', ['mdns()', '@libp2p/mdns'], { cause: err })
  }
}

/**
 * The DNS-SD service Meshkit nodes query for and answer to. Other libp2p nodes (IPFS, go-libp2p) use
 * `_p2p._udp.local`; a name of our own keeps a Meshkit mesh from dialling every libp2p node on the LAN.
 */
export const MDNS_SERVICE_TAG = '_meshkit._udp.local'

/** Dials of discovered peers in flight at once; more discoveries wait for the next query round. */
const MAX_PARALLEL_DIALS = 4
/** Peers remembered (for the one-time event and the retry delay); the oldest are forgotten first. */
const MAX_REMEMBERED = 1024
/** Peers found before `start()` (between libp2p's start and the plugin's), replayed on start. */
const MAX_EARLY = 64

/** A custom issue in the shape Meshkit's config errors read (`expected`, `hint`). */
function issue(ctx: z.RefinementCtx, expected: string, hint: string): void {
  ctx.addIssue({ code: 'custom', message: expected, params: { expected, hint } })
}

const serviceTagSchema = z.string().superRefine((value, ctx) => {
  if (!/^[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.local$/.test(value) || value.length > 255) {
    issue(ctx, "a DNS name ending in '.local'", `write e.g. '${MDNS_SERVICE_TAG}'`)
  }
})

const peerNameSchema = z.string().superRefine((value, ctx) => {
  if (!/^[A-Za-z0-9_-]{1,63}$/.test(value)) {
    issue(ctx, 'a DNS label: 1 to 63 letters, digits, - or _', "write e.g. 'alice-laptop'")
  }
})

const options = z
  .strictObject({
    /** How often to ask the LAN for peers (ms, or a string like '10s'). @default '10s' */
    interval: durationSchema("'10s'")
      .refine((ms) => ms >= 100, {
        params: { expected: 'a duration of at least 100ms', hint: "write e.g. '10s'" },
      })
      .prefault('10s'),
    /**
     * The DNS-SD service name queried and answered. Nodes find each other only with the same tag;
     * `'_p2p._udp.local'` finds every libp2p node on the LAN. @default '_meshkit._udp.local'
     */
    serviceTag: serviceTagSchema.default(MDNS_SERVICE_TAG),
    /**
     * This node's name in mDNS answers. Keep it unique on the LAN and no prefix of another node's name:
     * @libp2p/mdns ignores answers whose name starts with its own. @default a random 63-character name
     */
    peerName: peerNameSchema.optional(),
    /** Answer other nodes' queries. With `false` this node finds others, but they do not find it. @default true */
    broadcast: z.boolean().default(true),
    /** Dial the peers found (libp2p 3 does not dial discovered peers by itself). @default true */
    autoDial: z.boolean().default(true),
  })
  .prefault({})

type MdnsOptions = z.output<typeof options>

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Adds `key` (as the newest entry) to a map that keeps at most {@link MAX_REMEMBERED} entries. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value as string)
}

/** What one started node does with a peer mDNS found: announce it once, and dial it unless connected. */
class Discoveries {
  readonly #seen = new Map<string, true>()
  readonly #retryAt = new Map<string, number>()
  readonly #dials = new Map<string, Promise<void>>()

  constructor(
    private readonly ctx: PluginContext,
    private readonly opts: MdnsOptions,
  ) {}

  found(info: PeerInfo): void {
    const { ctx } = this
    if (ctx.signal.aborted) return
    const peerId = info.id.toString()
    if (peerId === ctx.peerId.toString()) return
    if (!this.#seen.has(peerId)) {
      remember(this.#seen, peerId, true)
      const addresses = info.multiaddrs.map(String)
      ctx.logger.debug(`found ${peerId} on the LAN at ${addresses.join(', ')}`)
      ctx.events.emit('mdns:peer', { peerId, addresses })
    }
    if (this.opts.autoDial) this.#dial(info, peerId)
  }

  #dial(info: PeerInfo, peerId: string): void {
    const { ctx } = this
    const libp2p = ctx.libp2p
    if (this.#dials.has(peerId) || this.#dials.size >= MAX_PARALLEL_DIALS) return
    if ((this.#retryAt.get(peerId) ?? 0) > Date.now()) return
    if (libp2p.getConnections(info.id).length > 0) return
    if (libp2p.getConnections().length >= ctx.config.connections.maxConnections) return
    const targets = info.multiaddrs.map((a) => a.encapsulate(`/p2p/${peerId}`))
    if (targets.length === 0) return
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(ctx.config.connections.dialTimeout)])
    const dial = libp2p
      .dial(targets, { signal })
      .then(
        () => {
          this.#retryAt.delete(peerId)
          ctx.logger.debug(`connected to ${peerId}, found by mDNS`)
        },
        (err: unknown) => {
          if (ctx.signal.aborted) return
          // answers come every query round from every node: wait a round before trying this peer again
          remember(this.#retryAt, peerId, Date.now() + this.opts.interval)
          ctx.logger.debug(`could not dial ${peerId}, found by mDNS: ${reason(err)}`)
        },
      )
      .finally(() => this.#dials.delete(peerId))
    this.#dials.set(peerId, dial)
  }

  /** Waits for the dials in flight (ctx.signal, aborted on stop, ends them). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#dials.values()])
  }
}

/**
 * LAN discovery with multicast DNS (@libp2p/mdns): the node asks the LAN for peers every `interval` and
 * answers others' queries with its private and loopback addresses, then dials the peers it finds (and
 * redials a lost peer when it answers again). Each peer found is reported once per start as an
 * `mdns:peer` event (`{ peerId, addresses }`).
 */
export const mdns = definePlugin({
  name: 'mdns',
  provides: ['peer-discovery'],
  options,
  // mDNS finds LAN (private) addresses: a node that dials only public ones could never reach them
  validate: (_opts, config) =>
    config.network.addressScope === 'public'
      ? [
          {
            message:
              "mdns finds peers at LAN addresses, which a node with network.addressScope 'public' does not dial",
            hint: "set network: { addressScope: 'private' } (a LAN mesh), or 'all' on one machine",
          },
        ]
      : [],
  create: (opts): PluginHooks => {
    let running: Discoveries | undefined
    const early = new Map<string, PeerInfo>()
    const onPeer = (evt: CustomEvent<PeerInfo>) => {
      if (running) running.found(evt.detail)
      else if (early.size < MAX_EARLY) early.set(evt.detail.id.toString(), evt.detail)
    }
    return {
      libp2p: async () => {
        const { mdns: libp2pMdns } = await loadMdns()
        return {
          peerDiscovery: [
            (components: MulticastDNSComponents): PeerDiscovery => {
              const discovery = libp2pMdns({
                interval: opts.interval,
                serviceTag: opts.serviceTag,
                peerName: opts.peerName,
                broadcast: opts.broadcast,
              })(components)
              discovery.addEventListener('peer', onPeer)
              return discovery
            },
          ],
        }
      },
      start: (ctx) => {
        running = new Discoveries(ctx, opts)
        for (const info of early.values()) running.found(info)
        early.clear()
      },
      stop: async () => {
        const current = running
        running = undefined
        early.clear()
        await current?.close()
      },
    }
  },
})
