/**
 * Dashboard logins: one-time login codes (from `loginUrl()`, i.e. from the holder of the data dir's
 * token) traded for sessions. Only digests are kept; both sets are bounded (the oldest go first).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Logger } from 'meshkit'
import { controlError } from './errors.js'

/** How long a dashboard login code (`/#code=...`, see {@link ControlServer.loginUrl}) can be used, ms. */
export const LOGIN_CODE_TTL_MS = 60_000
/** Login codes waiting to be used, and dashboard sessions, kept at most (the oldest go first). */
const MAX_LOGIN_CODES = 32
const MAX_SESSIONS = 64

/** The digest under which a secret (login code or session) is kept. */
export const digest = (secret: string) => createHash('sha256').update(secret).digest('hex')

export interface LoginCodes {
  /** A new single-use login code, valid for {@link LOGIN_CODE_TTL_MS}. */
  newCode(): string
  /** Trades a login code for a new session; a code is good once, and a second use ends that session. */
  login(code: string): string
  /** Whether `presented` is an open session. */
  hasSession(presented: string): boolean
}

/** The login codes and sessions of one server (sessions end with the server). */
export function createLoginCodes(logger: Logger): LoginCodes {
  /** Login codes by their digest: when each expires, and the session it opened once used. */
  const codes = new Map<string, { expires: number; session?: string }>()
  /** Dashboard sessions by their digest (they end with the server). */
  const sessions = new Set<string>()
  const pruneCodes = (now: number) => {
    for (const [key, entry] of codes) if (entry.expires <= now) codes.delete(key)
  }
  return {
    newCode: (): string => {
      const now = Date.now()
      pruneCodes(now)
      while (codes.size >= MAX_LOGIN_CODES) codes.delete(codes.keys().next().value as string)
      const code = randomBytes(24).toString('base64url')
      codes.set(digest(code), { expires: now + LOGIN_CODE_TTL_MS })
      return code
    },
    login: (code: string): string => {
      const now = Date.now()
      pruneCodes(now)
      const key = digest(code)
      const entry = codes.get(key)
      if (!entry)
        throw controlError('MESH_ERR_CONTROL_UNAUTHORIZED', ['the login code is unknown or has expired'], {
          hint: "Login links work once, within a minute: run `mesh dashboard` (with the node's --data-dir) for a new one.",
        })
      if (entry.session !== undefined) {
        sessions.delete(entry.session)
        logger.warn('a dashboard login link was used twice: the session it had opened is ended')
        throw controlError(
          'MESH_ERR_CONTROL_UNAUTHORIZED',
          [
            'this login link was used already; the session it opened has been ended, in case someone else used it',
          ],
          {
            hint: "Run `mesh dashboard` (with the node's --data-dir) for a new link, and open it only once.",
          },
        )
      }
      const session = randomBytes(32).toString('base64url')
      while (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.values().next().value as string)
      entry.session = digest(session)
      sessions.add(entry.session)
      return session
    },
    hasSession: (presented: string): boolean => sessions.has(digest(presented)),
  }
}
