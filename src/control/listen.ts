/** Binding the control server: loopback TCP, or a unix socket made 0600 from the start. */
import { chmod, lstat, rm } from 'node:fs/promises'
import type { Server } from 'node:http'
import { connect } from 'node:net'
import { MeshError } from 'meshkit'

/** Removes a unix socket file that nothing listens on any more (left by a process that crashed). */
async function removeStaleSocket(path: string): Promise<void> {
  const info = await lstat(path).catch(() => undefined)
  if (!info?.isSocket()) return
  const alive = await new Promise<boolean>((resolve) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
  if (!alive) await rm(path, { force: true })
}

/**
 * Listens on `socketPath` (a stale socket file is removed first; the socket is mode 0600) or on
 * `host:port`. A taken port or a bad socket path is a user error (MESH_ERR_CONTROL_FAILED with a hint).
 */
export async function listen(
  server: Server,
  where: { socketPath?: string; host: string; port: number },
): Promise<void> {
  const { socketPath, host, port } = where
  if (socketPath) await removeStaleSocket(socketPath)
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening)
      // a taken port or a bad socket path is the user's to fix (exit 2 in the CLI)
      reject(
        new MeshError(
          'MESH_ERR_CONTROL_FAILED',
          `The control API could not listen on ${socketPath ?? `${host}:${port}`}: ${err.code ?? err.message}`,
          {
            cause: err,
            userError: true,
            hint: socketPath
              ? 'Pass a socket path in a writable directory, with no other server on it.'
              : 'Pick another --control-port (0 picks a free one), stop the process that holds it, or pass --no-control.',
          },
        ),
      )
    }
    const onListening = () => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError)
    server.once('listening', onListening)
    if (socketPath) {
      // the socket file is made while binding (synchronously, in listen()): with umask 0177 it is 0600
      // from the start, not only after the chmod below
      let umask: number | undefined
      try {
        umask = process.umask(0o177)
      } catch {
        // worker threads cannot change the umask: the chmod below still applies
      }
      try {
        server.listen(socketPath)
      } finally {
        if (umask !== undefined) process.umask(umask)
      }
    } else server.listen(port, host)
  })
}

/** After {@link listen} on a unix socket: makes sure the socket file is 0600. */
export async function restrictSocket(socketPath: string | undefined): Promise<void> {
  if (socketPath) await chmod(socketPath, 0o600)
}
