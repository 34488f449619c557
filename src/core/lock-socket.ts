/**
 * The data dir's abstract unix socket (Linux): bound by the lock's holder, it answers probes with the
 * holder's pid and lock tag; the kernel frees the name when the process dies.
 */
import { connect, createServer, type Server } from 'node:net'
import { sha256 } from './lock-record.js'

/** What the lock socket tells a prober: not the nonce itself, so that nothing of the file is revealed. */
export const tagOf = (nonce: string) => sha256(`meshkit-lock-tag:${nonce}`).slice(0, 32)

/** Binds the abstract socket; 'in-use' when another socket has the name, undefined when unsupported. */
export function bindLockSocket(name: string, tag: string): Promise<Server | 'in-use' | undefined> {
  return new Promise((resolvePromise) => {
    const answer = `${JSON.stringify({ pid: process.pid, tag })}\n`
    const server = createServer((socket) => {
      socket.on('error', () => {})
      socket.end(answer)
    })
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolvePromise(err.code === 'EADDRINUSE' ? 'in-use' : undefined),
    )
    server.listen(name, () => {
      server.removeAllListeners('error')
      server.on('error', () => {})
      server.unref()
      resolvePromise(server)
    })
  })
}

/** What the process on the abstract socket says it is (pid and lock tag), or undefined (no answer in 1 s). */
export function probeLockSocket(name: string): Promise<{ pid: number; tag: string } | undefined> {
  return new Promise((resolvePromise) => {
    let text = ''
    const socket = connect(name)
    const done = (value: { pid: number; tag: string } | undefined) => {
      clearTimeout(timer)
      socket.destroy()
      resolvePromise(value)
    }
    const timer = setTimeout(() => done(undefined), 1_000)
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      text += chunk
      if (text.length > 512) done(undefined)
    })
    socket.on('end', () => {
      try {
        const v = JSON.parse(text) as { pid?: unknown; tag?: unknown }
        if (typeof v.pid === 'number' && typeof v.tag === 'string') done({ pid: v.pid, tag: v.tag })
        else done(undefined)
      } catch {
        done(undefined)
      }
    })
    socket.on('error', () => done(undefined))
  })
}
