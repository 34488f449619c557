import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { Message } from '@libp2p/gossipsub'
import type { RPC } from '@libp2p/gossipsub/message'

/**
 * A message's id as GossipSub computes it by default under StrictSign: the publisher's public key
 * (protobuf) followed by the 8-byte sequence number. Set explicitly so that validators can be told
 * the same id GossipSub uses.
 */
export function messageIdBytes(message: Message): Uint8Array {
  if (message.type !== 'signed') throw new Error('gossip messages are signed (StrictSign)')
  const key = publicKeyToProtobuf(message.from.publicKey ?? message.key)
  const id = new Uint8Array(key.byteLength + 8)
  id.set(key)
  new DataView(id.buffer).setBigUint64(key.byteLength, message.sequenceNumber)
  return id
}

/** A message id as text (base64url): the form handlers, events and the control API show. */
export const messageIdString = (id: Uint8Array): string =>
  Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('base64url')

/**
 * GossipSub's fast id of a raw message, looked up before its signature is verified: publisher and
 * seqno, what the message id is made of. Only messages that passed verification are remembered under
 * it, so a repeat of a verified message (each mesh peer forwards it once) costs no second verification,
 * while a forgery arriving first is verified (and fails) as any message.
 */
export function fastMessageId(message: RPC.Message): string {
  const { from, seqno } = message
  if (!from || !seqno) return ''
  return `${Buffer.from(from.buffer, from.byteOffset, from.byteLength).toString('base64')}.${Buffer.from(seqno.buffer, seqno.byteOffset, seqno.byteLength).toString('base64')}`
}
