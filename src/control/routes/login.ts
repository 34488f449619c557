/**
 * The dashboard's login: `POST /api/login` trades a one-time code (from loginUrl(), i.e. from the
 * holder of the token) for a session; public, since the page has no credential yet (the code is one).
 * `POST /api/login-code` mints a code for the holder of the data dir's token (never for a session).
 */
import { controlError } from '../errors.js'
import { LOGIN_CODE_TTL_MS } from '../login-codes.js'
import type { AddRoute } from '../types.js'
import { noProvider, type RoutesEnv } from './env.js'

export function addLoginRoutes(addRoute: AddRoute, env: RoutesEnv): void {
  addRoute(
    'POST',
    '/api/login',
    async (_req, _res, _url, ctx) => {
      const body = await ctx.json()
      const code = (body as { code?: unknown } | null)?.code
      if (typeof code !== 'string' || code.length === 0 || code.length > 100)
        throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
          'expected a JSON object {"code": "<login code>"}',
        ])
      return { session: env.logins.login(code) }
    },
    { public: true },
  )
  addRoute('POST', '/api/login-code', (_req, _res, _url, ctx) => {
    // a session may not mint codes: only whoever can read the data dir's token
    if (!env.dashboard)
      throw noProvider('dashboard', 'Start the node with --dashboard (`mesh dev` always serves it).')
    if (ctx.auth !== 'token')
      throw controlError('MESH_ERR_CONTROL_UNAUTHORIZED', [
        "login codes are given for the data dir's token only",
      ])
    const code = env.logins.newCode()
    return { url: `${env.url()}/#code=${code}`, code, expiresAt: Date.now() + LOGIN_CODE_TTL_MS }
  })
}
