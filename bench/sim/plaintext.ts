/**
 * A connection "encrypter" for the simulator only: no encryption. Each side sends its public key
 * (protobuf, length-prefixed); the peer id is derived from it and checked against the one dialled. It
 * stands in for Noise where Noise's handshake (X25519, ChaCha20-Poly1305 on every frame) would be most
 * of the CPU of a 1,000-node process and is not what the simulation studies. The simulator says so in
 * its output. Never use it outside the simulator: anyone can claim any key.
 */
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import {
  type ConnectionEncrypter,
  InvalidCryptoExchangeError,
  type MessageStream,
  type PrivateKey,
  type SecureConnectionOptions,
  type SecuredConnection,
  serviceCapabilities,
  UnexpectedPeerError,
} from '@libp2p/interface'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { lpStream } from '@libp2p/utils'
import { definePlugin } from 'meshkit/plugin'

export const SIM_PLAINTEXT_PROTOCOL = '/meshkit-sim/plaintext/1.0.0'

class SimPlaintext implements ConnectionEncrypter {
  readonly protocol = SIM_PLAINTEXT_PROTOCOL
  readonly [Symbol.toStringTag] = '@meshkit/sim-plaintext'
  readonly [serviceCapabilities] = ['@libp2p/connection-encryption']

  constructor(private readonly privateKey: PrivateKey) {}

  secureInbound(connection: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    return this.#exchange(connection, options)
  }

  secureOutbound(connection: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    return this.#exchange(connection, options)
  }

  async #exchange(connection: MessageStream, options?: SecureConnectionOptions): Promise<SecuredConnection> {
    const lp = lpStream(connection, { maxDataLength: 1024 })
    await lp.write(publicKeyToProtobuf(this.privateKey.publicKey), options)
    const bytes = await lp.read(options)
    let remotePeer: ReturnType<typeof peerIdFromPublicKey>
    try {
      remotePeer = peerIdFromPublicKey(publicKeyFromProtobuf(bytes.subarray()))
    } catch (err) {
      throw new InvalidCryptoExchangeError(`bad public key: ${(err as Error).message}`)
    }
    if (options?.remotePeer && !remotePeer.equals(options.remotePeer)) throw new UnexpectedPeerError()
    return { connection: lp.unwrap(), remotePeer }
  }
}

/** The simulator's plaintext encrypter as a Meshkit plugin (the `connection-encrypter` slot). */
export const simPlaintext = definePlugin({
  name: 'sim-plaintext',
  provides: ['connection-encrypter'],
  create: () => ({
    libp2p: () => ({
      connectionEncrypters: [
        (components: { privateKey: PrivateKey }) => new SimPlaintext(components.privateKey),
      ],
    }),
  }),
})
