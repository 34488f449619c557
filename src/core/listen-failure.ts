import { reasonOf } from './errors.js'

const SOCKET_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the port is in use by another process',
  EADDRNOTAVAIL: 'this host has no such address',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  ECONNREFUSED: 'connection refused',
}

/**
 * A listen failure in one line per address (`/ip4/127.0.0.1/tcp/4001: the port is in use by another
 * process (EADDRINUSE)`), from libp2p's multi-line error with stack traces and advice about libp2p
 * settings that a Meshkit config does not have.
 */
export function listenFailure(err: unknown): string {
  const text = reasonOf(err)
  const entries = [...text.matchAll(/^\s+(\/\S+): (.+)$/gm)].map(([, addr, line]) => {
    const code = /\b(E[A-Z]+)\b/.exec(line)?.[1]
    const why =
      code && SOCKET_ERRORS[code] ? `${SOCKET_ERRORS[code]} (${code})` : line.replace(/^Error: /, '')
    return `${addr}: ${why}`
  })
  if (entries.length > 0) return entries.join('; ')
  return text.split('\n')[0]
}
