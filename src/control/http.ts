/** HTTP plumbing of the control server: JSON answers, coded error answers, bounded request bodies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { MeshError } from 'meshkit'
import { controlError } from './errors.js'

/** A short reason text for any thrown value. */
export function reasonOfError(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** HTTP status of a coded error. */
export function httpStatusOf(code: string): number {
  switch (code) {
    case 'MESH_ERR_CONTROL_UNAUTHORIZED':
      return 401
    case 'MESH_ERR_CONTROL_FORBIDDEN':
      return 403
    case 'MESH_ERR_CONTROL_CONTENT_TYPE':
      return 415
    case 'MESH_ERR_CONTROL_NOT_FOUND':
    case 'MESH_ERR_CONTROL_NO_PROVIDER':
      return 404
    case 'MESH_ERR_CONTROL_TOO_LARGE':
      return 413
    case 'MESH_ERR_CONTROL_NO_NODE':
      return 503
    case 'MESH_ERR_CONTROL_BAD_REQUEST':
    case 'MESH_ERR_INVALID_ARGUMENT':
      return 400
    default:
      return 500
  }
}

/** JSON text of any value: bigint as string, objects with toString-only identity (PeerId) as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString()
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64')
    if (v instanceof Map) return Object.fromEntries(v)
    if (v instanceof Set) return [...v]
    if (v instanceof Error) return { message: v.message }
    return v
  })
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = toJson(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  })
  res.end(text)
}

export function sendError(res: ServerResponse, err: MeshError): void {
  sendJson(res, httpStatusOf(err.code), { error: { code: err.code, message: err.message, hint: err.hint } })
}

/** Reads a body up to `limit` bytes; a longer one throws MESH_ERR_CONTROL_TOO_LARGE. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      reject(controlError('MESH_ERR_CONTROL_TOO_LARGE', [limit]))
      req.resume()
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (chunk: Buffer) => {
      if (failed) return
      size += chunk.length
      if (size > limit) {
        failed = true
        reject(controlError('MESH_ERR_CONTROL_TOO_LARGE', [limit]))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks))
    })
    req.on('error', (err) => {
      if (!failed) reject(err)
      failed = true
    })
  })
}

export function parseJson(body: Buffer): unknown {
  if (body.length === 0)
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['the request has no body; send JSON'])
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (err) {
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [`the body is not valid JSON (${reasonOfError(err)})`])
  }
}
