/**
 * What the control server follows of the kernel's nodes on its event bus: the current node (a 503
 * while none is started), when each node started, and how each peer's connection was made.
 */
import type { ConnectionMethod, MeshNode } from 'meshkit'
import { controlError } from './errors.js'
import type { MethodEvents } from './readers.js'
import type { ControlKernel } from './types.js'

export interface NodeWatch {
  /** The current node; throws MESH_ERR_CONTROL_NO_NODE when none is started. */
  currentNode(): MeshNode
  /** When `node` started (ms since the epoch; the server's start when unknown). */
  startedAtOf(node: MeshNode): number
  /** The last `connection:method` event per peer, from whatever plugin emits them. */
  readonly methods: MethodEvents
  /** When the server started (ms since the epoch). */
  readonly serverStartedAt: number
  /** Stops listening to the bus. */
  close(): void
}

export function watchNodes(kernel: ControlKernel): NodeWatch {
  const methods = new Map<string, { method: ConnectionMethod; transport?: string }>()
  /** When each node became started (node:started on the bus), keyed by the node object. */
  const startedAt = new WeakMap<MeshNode, number>()
  let lastStartedEvent: number | undefined
  const offs: Array<() => void> = [
    kernel.events.on('connection:method', (e) => {
      if (typeof e.peerId !== 'string') return
      const method = e.method
      if (method !== 'direct' && method !== 'hole-punched' && method !== 'relayed') return
      methods.set(e.peerId, { method, transport: typeof e.transport === 'string' ? e.transport : undefined })
    }),
    kernel.events.on('peer:disconnect', (e) => {
      if (typeof e.peerId === 'string') methods.delete(e.peerId)
    }),
    kernel.events.on('node:started', () => {
      lastStartedEvent = Date.now()
    }),
  ]
  const serverStartedAt = Date.now()
  return {
    currentNode: (): MeshNode => {
      const node = kernel.current
      if (node?.state !== 'started') throw controlError('MESH_ERR_CONTROL_NO_NODE', [])
      if (!startedAt.has(node)) startedAt.set(node, lastStartedEvent ?? serverStartedAt)
      return node
    },
    startedAtOf: (node) => startedAt.get(node) ?? serverStartedAt,
    methods,
    serverStartedAt,
    close: () => {
      for (const off of offs) off()
    },
  }
}
