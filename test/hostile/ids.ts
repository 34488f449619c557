/** Forged identities and addresses: valid peer ids nobody runs, long valid multiaddrs, random CIDs. */
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { hex, noise } from './wire.js'

/** A fresh valid Ed25519 peer id (nobody runs it: a forged member, provider or relay target). */
export async function forgedPeerId(): Promise<PeerId> {
  return peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
}

/** `n` fresh forged peer ids. */
export async function forgedPeerIds(n: number): Promise<PeerId[]> {
  return Promise.all(Array.from({ length: n }, () => forgedPeerId()))
}

/**
 * A valid multiaddr of about `length` characters, for stuffing member or provider lists up to a
 * protocol's string limit. It stays on loopback and needs no DNS: `/ip4/127.0.0.1/tcp/<port>/tls/sni/
 * <long name>.invalid/ws` (a node without a WebSocket transport cannot even dial it; one with it would
 * reach 127.0.0.1:<port>, the discard port by default).
 */
export function longAddr(length = 250, port = 9): string {
  const head = `/ip4/127.0.0.1/tcp/${port}/tls/sni/`
  const tail = '.invalid/ws'
  return `${head}${hex(8)}${'a'.repeat(Math.max(1, length - head.length - tail.length - 8))}${tail}`
}

/** A random raw CID (what kad-dht keys provider records by, and what topic keys are). */
export async function randomCid(): Promise<CID> {
  return CID.createV1(0x55, await sha256.digest(noise(32)))
}

/** A string that looks like a topic key (a CID string) but names no topic. */
export async function randomTopicKey(): Promise<string> {
  return (await randomCid()).toString()
}
