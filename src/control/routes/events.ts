/** `GET /api/events`: the kernel's event bus as Server-Sent Events, first a `hello` with the status. */
import type { MeshEvent } from 'meshkit'
import { reasonOfError, toJson } from '../http.js'
import { statusOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import type { RoutesEnv } from './env.js'

/** SSE clients that fall this far behind are dropped rather than buffered without bound. */
const SSE_MAX_BUFFER = 1 << 20
const SSE_KEEPALIVE_MS = 15_000

export function addEventsRoute(addRoute: AddRoute, env: RoutesEnv): void {
  const { logger, streams } = env
  addRoute('GET', '/api/events', (_req, res, _url, ctx) => {
    const node = ctx.node()
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    })
    const send = (event: string, data: unknown) => {
      if (res.writableEnded) return
      if (res.writableLength > SSE_MAX_BUFFER) {
        logger.warn('a control API event stream fell behind; closing it')
        res.end()
        return
      }
      res.write(`event: ${event.replace(/[\r\n]/g, ' ')}\ndata: ${toJson(data)}\n\n`)
    }
    send('hello', statusOf(node, env.nodes.startedAtOf(node)))
    const off = env.events.on('*', (e: MeshEvent) => {
      try {
        send(e.event, { ...e, time: Date.now() })
      } catch (err) {
        logger.debug(`an event could not be sent on the event stream: ${reasonOfError(err)}`)
      }
    })
    const keepalive = setInterval(() => {
      if (!res.writableEnded) res.write(': keepalive\n\n')
    }, SSE_KEEPALIVE_MS)
    keepalive.unref()
    streams.add(res)
    const cleanup = () => {
      off()
      clearInterval(keepalive)
      streams.delete(res)
    }
    // the response closes when the client goes away or the server ends the stream
    res.on('close', cleanup)
  })
}
