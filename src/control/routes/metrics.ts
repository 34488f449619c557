/** `GET /metrics`: the Prometheus text of the plugin providing `metrics`. */
import { controlError } from '../errors.js'
import { reasonOfError } from '../http.js'
import { metricsOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import { noProvider } from './env.js'

const METRICS_HINT =
  "Add metrics() from 'meshkit/plugins' (or another plugin providing 'metrics') to `plugins` to serve /metrics."

export function addMetricsRoute(addRoute: AddRoute): void {
  addRoute('GET', '/metrics', async (_req, res, _url, ctx) => {
    const metrics = metricsOf(ctx.node())
    if (!metrics) throw noProvider('metrics', METRICS_HINT)
    let text: string
    try {
      text = await metrics.render()
    } catch (err) {
      throw controlError('MESH_ERR_CONTROL_FAILED', ['render the metrics', reasonOfError(err)], {
        cause: err,
      })
    }
    res.writeHead(200, {
      'content-type': metrics.contentType || 'text/plain; version=0.0.4; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
    })
    res.end(text)
  })
}
