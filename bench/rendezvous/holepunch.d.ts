/**
 * Just enough types for the untyped holepunch packages the rendezvous benchmark uses (hyperswarm 4,
 * @hyperswarm/testnet 3 = hyperdht/testnet). Only what bench/rendezvous/hyperswarm.ts touches.
 */
declare module 'hyperswarm' {
  import type { EventEmitter } from 'node:events'
  import type { HyperDHTNode } from '@hyperswarm/testnet'

  export interface SwarmConnection extends EventEmitter {
    remotePublicKey: Buffer
    destroy(err?: Error): void
  }

  export interface SwarmPeerInfo {
    publicKey: Buffer
  }

  export interface PeerDiscovery {
    /** Re-announces and looks the topic up again now (joins into a refresh already under way). */
    refresh(options?: { server?: boolean; client?: boolean }): Promise<boolean>
    flushed(): Promise<boolean>
    destroy(): Promise<void>
  }

  export interface HyperswarmOptions {
    /** A ready DHT node; without it hyperswarm creates one with the PUBLIC bootstrap nodes on 0.0.0.0. */
    dht?: HyperDHTNode
    maxPeers?: number
  }

  export default class Hyperswarm extends EventEmitter {
    constructor(options?: HyperswarmOptions)
    readonly keyPair: { publicKey: Buffer }
    readonly connections: Set<SwarmConnection>
    readonly dht: HyperDHTNode
    join(topic: Buffer, options?: { server?: boolean; client?: boolean }): PeerDiscovery
    /** Starts the swarm's server (announces nothing; peers reach it by public key). */
    listen(): Promise<void>
    /** Keeps a connection to this public key (through the DHT). */
    joinPeer(publicKey: Buffer): void
    destroy(options?: { force?: boolean }): Promise<void>
    on(event: 'connection', listener: (conn: SwarmConnection, info: SwarmPeerInfo) => void): this
    on(event: string, listener: (...args: unknown[]) => void): this
  }
}

declare module '@hyperswarm/testnet' {
  export interface HostPort {
    host: string
    port: number
  }

  export interface HyperDHTNode {
    address(): (HostPort & { family?: number }) | null
    destroy(options?: { force?: boolean }): Promise<void>
    fullyBootstrapped(): Promise<void>
  }

  export interface Testnet {
    nodes: HyperDHTNode[]
    bootstrap: HostPort[]
    /** An ephemeral DHT node bound to 127.0.0.1 that bootstraps from this testnet only. */
    createNode(options?: Record<string, unknown>): HyperDHTNode
    destroy(): Promise<void>
  }

  export default function createTestnet(
    size?: number,
    options?: { host?: string; port?: number; bootstrap?: HostPort[] },
  ): Promise<Testnet>
}
