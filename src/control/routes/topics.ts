/** `GET /api/topics`, `POST /api/topics/join` and `/api/topics/leave`, through the `discovery` slot. */
import { controlError } from '../errors.js'
import { reasonOfError } from '../http.js'
import { discoveryOf, topicsOf } from '../readers.js'
import type { AddRoute } from '../types.js'
import { json, noProvider } from './env.js'

const TOPIC_MAX = 128

const DISCOVERY_HINT =
  "Add a plugin providing the 'discovery' slot to `plugins` (e.g. kadTopics() from 'meshkit/plugins')."

/** `{ topic }` from a join/leave body, checked. */
function topicFrom(body: unknown): string {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['expected a JSON object {"topic": "<name>"}'])
  const topic = (body as { topic?: unknown }).topic
  if (topic === undefined)
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', ['the body has no "topic" field'])
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > TOPIC_MAX)
    throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [
      `"topic" must be a string of 1 to ${TOPIC_MAX} characters, got ${JSON.stringify(topic)?.slice(0, 40)}`,
    ])
  return topic
}

export function addTopicRoutes(addRoute: AddRoute): void {
  addRoute(
    'GET',
    '/api/topics',
    json((node) => {
      const discovery = discoveryOf(node)
      if (!discovery) throw noProvider('discovery', DISCOVERY_HINT)
      return topicsOf(discovery)
    }),
  )
  const topicChange = (action: 'join' | 'leave') =>
    json(async (node, ctx) => {
      const topic = topicFrom(await ctx.json())
      const discovery = discoveryOf(node)
      if (!discovery) throw noProvider('discovery', DISCOVERY_HINT)
      const before = discovery.topics().includes(topic)
      try {
        await discovery[action](topic)
      } catch (err) {
        if (err instanceof TypeError) throw controlError('MESH_ERR_CONTROL_BAD_REQUEST', [reasonOfError(err)])
        throw controlError('MESH_ERR_CONTROL_FAILED', [`${action} topic ${topic}`, reasonOfError(err)], {
          cause: err,
        })
      }
      return {
        topic,
        joined: action === 'join',
        changed: action === 'join' ? !before : before,
        topics: [...discovery.topics()].sort(),
      }
    })
  addRoute('POST', '/api/topics/join', topicChange('join'))
  addRoute('POST', '/api/topics/leave', topicChange('leave'))
}
