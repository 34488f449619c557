import { isAbsolute, resolve } from 'node:path'
import { preSharedKey } from '@libp2p/pnet'
import { definePlugin, MeshError, z } from 'meshkit/plugin'
import { configProblems } from './config-check.js'
import { InvalidPsk, PreSharedKey, PskFileError, PskFormatError, parsePsk, readPskFile } from './psk.js'

export { UNPROTECTABLE_PLUGINS } from './config-check.js'
export {
  generatePsk,
  PreSharedKey,
  PSK_FILE_MAX_BYTES,
  PskFileError,
  PskFormatError,
  parsePsk,
  readPskFile,
} from './psk.js'

const options = z
  .strictObject({
    /**
     * The network's pre-shared key: the text of a pnet key file (`/key/swarm/psk/1.0.0/`, `/base16/`, 64
     * hex digits, one per line) or its bytes. Prefer `pskFile`: a key in the config ends up wherever the
     * config goes. Never printed (a config diff shows its fingerprint).
     */
    psk: z
      .union([z.string(), z.instanceof(Uint8Array)])
      .transform((value): PreSharedKey | InvalidPsk => {
        try {
          return parsePsk(value)
        } catch (err) {
          return new InvalidPsk(err instanceof PskFormatError ? err.message : 'unreadable')
        }
      })
      .optional(),
    /**
     * A file holding the key (`mesh keygen psk` writes one), relative to the config file's directory. Read
     * when the node is built; keep it `chmod 600`.
     */
    pskFile: z.string().min(1).optional(),
  })
  .prefault({})

/** What `node.api('private-network')` tells: which key protects the node (its fingerprint, never the key). */
export interface PrivateNetworkApi {
  /** The first 8 bytes of the key's SHA-256, in hex. */
  readonly fingerprint: string
  /** Where the key came from: `'config'` (`psk`) or the key file's absolute path. */
  readonly source: string
}

/** A coded, user-facing error from setup (printed without a stack trace; never with the key). */
function keyFileError(err: PskFileError): MeshError {
  const fix: Record<PskFileError['code'], string> = {
    missing:
      'copy the network key file there (or fix `pskFile`); `mesh keygen psk --out <file>` makes a new network key',
    unreadable:
      'check the path and its permissions: the node must be able to read it (`chmod 600` for its owner)',
    malformed:
      'use the file `mesh keygen psk` wrote, unchanged (3 lines: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)',
  }
  return new MeshError(
    'MESH_ERR_PLUGIN_HOOK_FAILED',
    `Plugin 'private-network' failed in setup(): ${err.message}.`,
    { hint: fix[err.code], userError: true },
  )
}

/**
 * A private network: every connection is wrapped by libp2p's pre-shared-key connection protector
 * (@libp2p/pnet, XSalsa20 with the network key) before encryption, so only nodes holding the same key
 * can connect at all; anyone else's handshake fails on garbage. Give every node the same `pskFile`
 * (`mesh keygen psk` writes one, mode 0600).
 *
 * QUIC and WebRTC (`quic()`, `holePunch()`) cannot be protected this way: a config with them and
 * `privateNetwork()` is refused (MESH_ERR_CONFIG_INVALID), as are QUIC/WebTransport/WebRTC listen or
 * announce addresses. Relayed connections (circuit relay over TCP) are protected end to end.
 * Changing the key needs a new node (`mesh dev` rebuilds it); a key file that changed on disk is read at
 * the next build or start.
 */
export const privateNetwork = definePlugin({
  name: 'private-network',
  provides: ['connection-protector'],
  options,
  libp2pOptions: ['psk', 'pskFile'],
  validate: (opts, config) => configProblems(opts, config),
  create: (opts) => {
    let key: PreSharedKey | undefined
    return {
      setup: async (ctx): Promise<PrivateNetworkApi> => {
        if (opts.psk instanceof PreSharedKey) {
          key = opts.psk
          return { fingerprint: key.fingerprint, source: 'config' }
        }
        if (opts.pskFile === undefined)
          throw new Error('no pre-shared key (the config check should have said so)')
        const file = isAbsolute(opts.pskFile) ? opts.pskFile : resolve(ctx.config.root, opts.pskFile)
        try {
          const read = await readPskFile(file)
          key = read.psk
          if ((read.mode & 0o077) !== 0)
            ctx.logger.warn(
              `the pre-shared key file ${file} can be read by other users (mode ${read.mode.toString(8)}): chmod 600 ${file}`,
            )
        } catch (err) {
          if (err instanceof PskFileError) throw keyFileError(err)
          throw err
        }
        ctx.logger.info(`private network: key ${key.fingerprint} from ${file}`)
        return { fingerprint: key.fingerprint, source: file }
      },
      libp2p: () => {
        if (!key) throw new Error('private-network: no key (setup did not run)')
        return { connectionProtector: preSharedKey({ psk: key.fileBytes() }) }
      },
    }
  },
})
