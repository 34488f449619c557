/**
 * What a request must pass before any route sees it: a loopback Host (DNS rebinding), a same-origin
 * JSON request for state changes (cross-site requests), and a credential (the data dir's token or a
 * dashboard session) unless the route is public.
 */
import type { IncomingMessage } from 'node:http'
import type { MeshError } from 'meshkit'
import { controlError } from './errors.js'
import type { LoginCodes } from './login-codes.js'
import { tokenMatches } from './token.js'
import type { ControlRouteContext } from './types.js'

/** Methods that change the node: they need a same-origin (or non-browser) request with a JSON body. */
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/**
 * The credential a request presents: `Authorization: Bearer <token or session>` only. Never a URL
 * query (it would land in browser history, logs and Referer headers) and never a cookie (a browser
 * sends cookies for 127.0.0.1 to every port of it: to other local servers, and with cross-site requests).
 */
function presentedToken(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization
  if (typeof auth !== 'string') return undefined
  return /^Bearer\s+(\S+)\s*$/i.exec(auth)?.[1] ?? ''
}

/**
 * Why a state-changing request must be refused as a possible cross-site request, or undefined. A
 * browser marks what a page sends: `Origin` (the page's origin; a page on another port of 127.0.0.1 is
 * another origin) and `Sec-Fetch-Site`; a JSON content type cannot be sent cross-origin without a CORS
 * preflight, which this server never grants. Clients that are not browsers send neither header.
 */
function crossSiteReason(req: IncomingMessage): MeshError | undefined {
  const origin = req.headers.origin
  const own = `http://${req.headers.host ?? ''}`
  if (origin !== undefined && origin !== own)
    return controlError('MESH_ERR_CONTROL_FORBIDDEN', [
      `it comes from ${origin.slice(0, 100)}, not from ${own}`,
    ])
  const site = req.headers['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    return controlError('MESH_ERR_CONTROL_FORBIDDEN', [
      `the browser marks it as sent from a ${String(site).slice(0, 20)} page`,
    ])
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
  if (type !== 'application/json')
    return controlError('MESH_ERR_CONTROL_CONTENT_TYPE', [type ? type.slice(0, 60) : 'no content type'])
  return undefined
}

/**
 * Why a request must be refused before routing, or undefined: a page on another origin that resolves
 * to loopback (DNS rebinding) has a foreign Host header; a state change must not come from another site.
 */
export function refuseRequest(req: IncomingMessage, method: string): MeshError | undefined {
  const hostHeader = (req.headers.host ?? '').replace(/:\d+$/, '')
  if (!['localhost', '127.0.0.1', '[::1]', ''].includes(hostHeader))
    return controlError('MESH_ERR_CONTROL_FORBIDDEN', [
      `it is addressed to ${hostHeader.slice(0, 100)}, not to localhost`,
    ])
  if (STATE_CHANGING.has(method)) return crossSiteReason(req)
  return undefined
}

/** How a request authenticates (the data dir's token, or a dashboard session), or why it does not. */
export function authenticate(
  req: IncomingMessage,
  token: string,
  logins: LoginCodes,
): Exclude<ControlRouteContext['auth'], 'none'> | MeshError {
  const presented = presentedToken(req)
  if (tokenMatches(token, presented)) return 'token'
  if (presented && logins.hasSession(presented)) return 'session'
  return controlError('MESH_ERR_CONTROL_UNAUTHORIZED', [
    presented === undefined ? 'no token was given' : 'the token is wrong',
  ])
}
