import { statSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve as resolvePath } from 'node:path'

/** A fresh temp dir, removed by the returned cleanup. */
export async function tempDir(
  prefix = 'meshkit-test-',
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) }
}

/** Resolves when `predicate` holds, polling every `intervalMs`; rejects after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  { timeoutMs = 10_000, intervalMs = 25, what = 'condition' } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return
    await new Promise((r) => setTimeout(r, intervalMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

/** Loopback listen addresses on random ports for test nodes. */
export const LOOPBACK_LISTEN = ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1']

/**
 * A TCP port on 127.0.0.1 that nothing listens on (right now), below Linux's ephemeral range
 * (32768-60999): a port from that range can be taken meanwhile as the source port of an outbound
 * connection (e.g. a node retrying a dial), and a later listen on it fails with EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const server = createServer()
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (ok) {
      await new Promise((resolve) => server.close(resolve))
      return port
    }
  }
  throw new Error('no free TCP port found in 20000-31999')
}

/**
 * Whether another user (such as `nobody`, which root tests switch to) can reach `path`: every directory
 * on the way must be searchable by others. A checkout inside a private (0700) directory is not, and
 * tests that run code as another user from it cannot run there.
 */
export function othersCanReach(path: string): boolean {
  let dir = resolvePath(path)
  for (;;) {
    if ((statSync(dir).mode & 0o001) === 0) return false
    const parent = dirname(dir)
    if (parent === dir) return true
    dir = parent
  }
}
