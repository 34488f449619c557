/**
 * The escape hatch: hand the libp2p node any service, transport, stream muxer, connection encrypter,
 * peer discovery or connection gater that Meshkit does not wrap, as you would pass it to
 * `createLibp2p()`. Meshkit merges it with its plugins' contributions like any other plugin's.
 *
 * @example
 * import { libp2pModule } from 'meshkit/plugins'
 * import { autoNATv2 } from '@libp2p/autonat-v2'
 *
 * export default defineConfig({
 *   plugins: [...defaults, libp2pModule({ services: { autoNAT: autoNATv2() } })],
 * })
 */
import { type Capability, definePlugin, type Libp2pContribution, type MeshPlugin, z } from 'meshkit/plugin'

/** A component factory as libp2p takes it: `(components) => component`. */
const factory = z.custom<(components: never) => unknown>((v) => typeof v === 'function', {
  message: 'expected a libp2p component factory, e.g. tcp() or identify(), called: a function of components',
})
const factories = z.array(factory)

const options = z.strictObject({
  /** libp2p services by key, e.g. `{ autoNAT: autoNATv2() }`. @default {} */
  services: z.record(z.string().min(1), factory).default({}),
  /** Transports, e.g. `[webSockets()]`. @default [] */
  transports: factories.default([]),
  /** Stream muxers, e.g. `[mplex()]`. @default [] */
  streamMuxers: factories.default([]),
  /** Connection encrypters, e.g. `[tls()]`. @default [] */
  connectionEncrypters: factories.default([]),
  /** Peer discovery modules, e.g. `[bootstrap({ list })]`. @default [] */
  peerDiscovery: factories.default([]),
  /** A connection gater (combined with every other plugin's: a connection is denied when any denies it). */
  connectionGater: z
    .custom<NonNullable<Libp2pContribution['connectionGater']>>(
      (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
      { message: 'expected a connection gater object, e.g. { denyDialPeer: (peer) => false }' },
    )
    .optional(),
})

type Options = z.output<typeof options>

const definition = definePlugin({
  name: 'libp2p-module',
  options,
  // a key another plugin's contribution also adds would make libp2p fail when the node is built
  validate: (opts, config) =>
    Object.keys(opts.services).flatMap((key) => {
      const owner = config.plugins.find(
        (p) => p.plugin.name !== 'libp2p-module' && p.plugin.definition.services?.includes(key),
      )
      return owner
        ? [
            {
              message: `its service '${key}' is the one plugin '${owner.plugin.name}' adds`,
              hint: `give your service another key, or remove ${owner.plugin.name}() from \`plugins\` if yours replaces it`,
            },
          ]
        : []
    }),
  create: (opts: Options) => ({
    libp2p: (): Libp2pContribution =>
      ({
        services: opts.services,
        transports: opts.transports,
        streamMuxers: opts.streamMuxers,
        connectionEncrypters: opts.connectionEncrypters,
        peerDiscovery: opts.peerDiscovery,
        ...(opts.connectionGater ? { connectionGater: opts.connectionGater } : {}),
      }) as unknown as Libp2pContribution,
  }),
})

/**
 * `libp2pModule(options)`: the slots it fills follow from what it is given (transports fill
 * 'transport', and so on), so a config whose only transport comes through it is valid.
 */
export const libp2pModule = Object.assign(
  (...args: Parameters<typeof definition>): MeshPlugin => {
    const plugin = definition(...args)
    const o = (args[0] ?? {}) as Partial<Record<keyof Options, unknown[]>>
    const provides: Capability[] = [
      ...((o.transports?.length ?? 0) > 0 ? ['transport'] : []),
      ...((o.streamMuxers?.length ?? 0) > 0 ? ['stream-muxer'] : []),
      ...((o.connectionEncrypters?.length ?? 0) > 0 ? ['connection-encrypter'] : []),
      ...((o.peerDiscovery?.length ?? 0) > 0 ? ['peer-discovery'] : []),
    ]
    return { ...plugin, provides }
  },
  { pluginName: definition.pluginName, provides: definition.provides, definition: definition.definition },
) as typeof definition
