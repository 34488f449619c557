/** `GET /api/bans`, `POST /api/bans` (ban a peer) and `POST /api/bans/lift`: the node's reputation. */
import { controlError } from '../errors.js'
import { bansOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import { json } from './env.js'

/** `{ "peerId": "...", "reason"?: "...", "durationMs"?: n }` of a ban request, checked. */
function banFrom(body: unknown): { peerId: string; reason: string; durationMs?: number } {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['expected a JSON object {"peerId": "<peer id>"}'])
  const { peerId, reason, durationMs } = body as Record<string, unknown>
  if (typeof peerId !== 'string' || !/^[1-9A-HJ-NP-Za-km-z]{40,100}$/.test(peerId))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      '"peerId" must be a peer id (base58, e.g. 12D3KooW...)',
    ])
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 200))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      '"reason" must be a string of at most 200 characters',
    ])
  if (
    durationMs !== undefined &&
    (typeof durationMs !== 'number' ||
      !Number.isInteger(durationMs) ||
      durationMs < 1000 ||
      durationMs > 86_400_000)
  )
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      '"durationMs" must be a whole number from 1000 to 86400000',
    ])
  return { peerId, reason: reason ?? 'banned by the operator', durationMs: durationMs as number | undefined }
}

export function addBanRoutes(addRoute: AddRoute): void {
  addRoute(
    'GET',
    '/api/bans',
    json((node) => bansOf(node)),
  )
  addRoute(
    'POST',
    '/api/bans',
    json(async (node, ctx) => {
      const { peerId, reason, durationMs } = banFrom(await ctx.json())
      if (peerId === node.peerId.toString())
        throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['a node cannot ban itself'])
      return node.reputation.ban(peerId, reason, durationMs)
    }),
  )
  addRoute(
    'POST',
    '/api/bans/lift',
    json(async (node, ctx) => {
      const { peerId } = banFrom(await ctx.json())
      return { peerId, lifted: node.reputation.unban(peerId) }
    }),
  )
}
