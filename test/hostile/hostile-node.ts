/**
 * A hostile libp2p peer: js-libp2p 3 with the transports Meshkit uses (tcp, noise, yamux), dialling from a
 * chosen loopback source address (Linux lets a socket bind any 127/8 address), with a hand-written identify
 * responder whose every field can lie (listen addresses, protocols, observed address) and optional
 * protocol handlers. Each node is one identity: many of them are Sybils.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { Connection, Libp2p, PrivateKey, Stream, StreamHandler } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { type ForgedCircuitOpener, forgedCircuitTransport } from './forged-circuit.js'
import type { Tally } from './report.js'
import { closeSoon, lp, type PbFields, pb, pbStrings, StreamReader, unpb } from './wire.js'

export const IDENTIFY_PROTOCOL = '/ipfs/id/1.0.0'
export const IDENTIFY_PUSH_PROTOCOL = '/ipfs/id/push/1.0.0'

/** What the hostile peer's identify answer says about it (each field may lie). */
export interface HostileIdentity {
  /** Listen addresses it claims (e.g. sentinels, or a victim's address). @default the node's announce list */
  listenAddrs?: string[]
  /** Protocols it claims. @default those it handles */
  protocols?: string[]
  /** The address it claims to see the target at. @default the connection's real address */
  observedAddr?: string | ((connection: Connection) => string)
  /** @default 'hostile/1.0.0' */
  agentVersion?: string
}

export interface HostileNodeOptions {
  /** Loopback source IP its dials leave from. @default '127.0.0.2' */
  sourceIp?: string
  /** A fixed source port for its dials (one connection at a time then). @default an ephemeral port */
  sourcePort?: number
  /** Addresses to listen on (a real listener). @default none */
  listen?: string[]
  /** Addresses it announces (identify) without listening there. @default none */
  announce?: string[]
  /** What its identify answer says. @default the truth about announce/listen and handled protocols */
  identity?: HostileIdentity
  /** Protocol handlers (any protocol, e.g. a forged topics responder). */
  handlers?: Record<string, StreamHandler>
  /** Dials `/p2p-circuit` addresses through STOP streams it opens itself (see forged-circuit.ts). */
  circuit?: ForgedCircuitOpener
  privateKey?: PrivateKey
  /** Longest wait for a dial. @default 5000 */
  dialTimeoutMs?: number
}

/** A started hostile peer. */
export interface HostileNode {
  readonly libp2p: Libp2p
  readonly peerId: string
  readonly sourceIp: string
  /** Dials `address` (bounded); counts the dial in `tally` when given. */
  dial(address: string, tally?: Tally, signal?: AbortSignal): Promise<Connection>
  /** Opens a stream for `protocol` on `connection` (bounded), with a reader attached before any byte. */
  open(
    connection: Connection,
    protocol: string,
    tally?: Tally,
    signal?: AbortSignal,
  ): Promise<{ stream: Stream; reader: StreamReader }>
  stop(): Promise<void>
}

/** Starts a hostile peer. Stop it (or pass it to a {@link HostilePool}) when done. */
export async function createHostileNode(options: HostileNodeOptions = {}): Promise<HostileNode> {
  const sourceIp = options.sourceIp ?? '127.0.0.2'
  const dialOpts = {
    localAddress: sourceIp,
    ...(options.sourcePort ? { localPort: options.sourcePort } : {}),
  } as Record<string, unknown>
  const libp2p = await createLibp2p({
    ...(options.privateKey ? { privateKey: options.privateKey } : {}),
    addresses: { listen: options.listen ?? [], announce: options.announce ?? [] },
    transports: [
      // net.connect takes localAddress/localPort; @libp2p/tcp passes dialOpts through to it
      tcp({ dialOpts: dialOpts as never, inboundSocketInactivityTimeout: 60_000 }),
      ...(options.circuit ? [forgedCircuitTransport(options.circuit)] : []),
    ],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: {
      maxConnections: 64,
      dialTimeout: options.dialTimeoutMs ?? 5000,
      inboundConnectionThreshold: 10_000,
      maxIncomingPendingConnections: 1000,
    },
  })
  const handled = Object.keys(options.handlers ?? {})
  const identity = options.identity ?? {}
  await libp2p.handle(
    IDENTIFY_PROTOCOL,
    async (stream, connection) => {
      const listen = identity.listenAddrs ?? [...(options.announce ?? []), ...(options.listen ?? [])]
      const observed =
        typeof identity.observedAddr === 'function'
          ? identity.observedAddr(connection)
          : (identity.observedAddr ?? connection.remoteAddr.toString())
      const message = pb([
        [5, 'ipfs/0.1.0'],
        [6, identity.agentVersion ?? 'hostile/1.0.0'],
        [1, publicKeyToProtobuf(libp2p.peerId.publicKey!)],
        ...listen.map((a) => [2, safeMultiaddrBytes(a)] as const),
        [4, safeMultiaddrBytes(observed)],
        ...(identity.protocols ?? [IDENTIFY_PROTOCOL, ...handled]).map((p) => [3, p] as const),
      ])
      try {
        stream.send(lp(message))
        await closeSoon(stream)
      } catch {
        stream.abort(new Error('identify answer failed'))
      }
    },
    { runOnLimitedConnection: true, maxInboundStreams: 32 },
  )
  for (const [protocol, handler] of Object.entries(options.handlers ?? {}))
    await libp2p.handle(protocol, handler, { runOnLimitedConnection: true, maxInboundStreams: 256 })
  await libp2p.start()
  const dialTimeout = options.dialTimeoutMs ?? 5000
  return {
    libp2p,
    peerId: libp2p.peerId.toString(),
    sourceIp,
    async dial(address, tally, signal) {
      tally?.inc('dials')
      const s = AbortSignal.any([AbortSignal.timeout(dialTimeout), ...(signal ? [signal] : [])])
      try {
        const connection = await libp2p.dial(multiaddr(address), { signal: s })
        tally?.inc('connections')
        if (tally)
          connection.addEventListener('close', (evt) => {
            // a reset or abort that did not come from us (a graceful close is not told apart here)
            if (evt.local || !evt.error) return
            tally.inc('connections_reset_by_target')
            tally.note(`the target reset a connection: ${evt.error.message}`, 'reset')
          })
        return connection
      } catch (err) {
        tally?.inc('dials_failed')
        tally?.error(err)
        throw err
      }
    },
    async open(connection, protocol, tally, signal) {
      const s = AbortSignal.any([AbortSignal.timeout(dialTimeout), ...(signal ? [signal] : [])])
      tally?.inc('streams_opened')
      try {
        const stream = await connection.newStream(protocol, { signal: s, runOnLimitedConnection: true })
        return { stream, reader: new StreamReader(stream, tally) }
      } catch (err) {
        tally?.inc('streams_refused')
        tally?.error(err)
        throw err
      }
    },
    stop: async () => {
      await libp2p.stop()
    },
  }
}

/** Multiaddr bytes of `a`; a string that is no multiaddr is sent as raw UTF-8 (a lie the target must survive). */
function safeMultiaddrBytes(a: string): Uint8Array {
  try {
    return multiaddr(a).bytes
  } catch {
    return new TextEncoder().encode(a)
  }
}

/** What the target says about itself over identify. */
export interface TargetIdentify {
  protocols: string[]
  listenAddrs: string[]
  observedAddr?: string
  agentVersion?: string
  raw: PbFields
}

/** Asks the target's identify on `connection` (bounded): its protocols, listen addresses, agent. */
export async function identifyTarget(
  node: HostileNode,
  connection: Connection,
  timeoutMs = 5000,
): Promise<TargetIdentify> {
  const { stream, reader } = await node.open(connection, IDENTIFY_PROTOCOL)
  try {
    const message = await reader.readLp(timeoutMs)
    if (!message) throw new Error(`no identify answer within ${timeoutMs} ms`)
    const fields = unpb(message)
    const addr = (b: number | Uint8Array) => {
      try {
        return multiaddr(b as Uint8Array).toString()
      } catch {
        return '(unparsable)'
      }
    }
    return {
      protocols: pbStrings(fields, 3),
      listenAddrs: (fields.get(2) ?? []).map(addr),
      observedAddr: fields.get(4)?.map(addr)[0],
      agentVersion: pbStrings(fields, 6)[0],
      raw: fields,
    }
  } finally {
    await closeSoon(stream)
  }
}

/**
 * Hostile peers made in waves: `spawn()` starts one (source IPs taken in turn from `sourceIps`),
 * `stopAll()` stops every node still running. Keeps an attack's Sybils bounded and cleaned up.
 */
export class HostilePool {
  readonly #nodes = new Set<HostileNode>()
  #next = 0

  constructor(readonly sourceIps: readonly string[]) {}

  get size(): number {
    return this.#nodes.size
  }

  /** The next source IP in turn. */
  nextIp(): string {
    return this.sourceIps[this.#next++ % this.sourceIps.length]
  }

  async spawn(options: HostileNodeOptions = {}): Promise<HostileNode> {
    const node = await createHostileNode({ sourceIp: this.nextIp(), ...options })
    this.#nodes.add(node)
    return node
  }

  async stop(node: HostileNode): Promise<void> {
    this.#nodes.delete(node)
    await node.stop().catch(() => {})
  }

  async stopAll(): Promise<void> {
    const nodes = [...this.#nodes]
    this.#nodes.clear()
    await Promise.all(nodes.map((n) => n.stop().catch(() => {})))
  }
}
